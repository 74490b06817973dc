//! Switchboard wire protocol, version 1.
//!
//! This crate is the contract between Switchboard and its clients, as written up in
//! `docs/protocol.md`. It holds only pure code: no IO, no clock (timestamps are passed in).
//!
//! - [`client`]: what a client sends, decoded by [`client::decode`] into a [`ClientMessage`],
//!   or rejected with a [`DecodeError`] that carries the machine-readable [`ErrorCode`] and the
//!   request id when one could be read.
//!   [`ClientMessage::encode`] gives a client the text of a request.
//! - [`server`]: what the server sends, as [`ServerMessage`], encoded once into shared [`bytes::Bytes`].
//! - [`owned`]: the same messages as a client reads them, [`OwnedServerMessage`] (owned, decoded
//!   by [`owned::decode`]).
//! - [`position`]: [`StreamPosition`], a place in a room's stream (`seq` under an `epoch`).
//! - [`binary`]: the small envelope (room + payload) of binary frames, in both directions.
//! - [`names`]: validation of room and user names.
//! - [`codes`]: error codes and WebSocket close codes.

pub mod binary;
pub mod client;
pub mod codes;
pub mod names;
pub mod owned;
pub mod position;
pub mod server;

pub use client::{ClientMessage, DecodeError};
pub use codes::ErrorCode;
pub use owned::OwnedServerMessage;
pub use position::StreamPosition;
pub use server::ServerMessage;

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;
