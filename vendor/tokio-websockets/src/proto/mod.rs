//! This module contains a correct and complete implementation of [RFC6455](https://datatracker.ietf.org/doc/html/rfc6455).
//!
//! Any extensions are currently not implemented.
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) use self::types::Role;
pub use self::{
    error::ProtocolError,
    stream::WebSocketStream,
    types::{CloseCode, Config, Limits, Message, Payload},
};

mod codec;
// Switchboard patch: RSV1 for permessage-deflate (see PATCHED.md).
mod compressed;
mod error;
mod reader;
mod stream;
mod types;
