//! Switchboard's test kit (dev-only, never published): what the integration tests of every
//! crate share, in one place.
//!
//! - [`TestServer`]: an in-process server on `127.0.0.1:0`, built as `switchboard serve`
//!   builds it (settings validated once, the engine chosen by the binary's code), on the
//!   memory engine or on Redis ([`Engine`] runs one test on either).
//! - [`Client`]: a JSON protocol client over a real WebSocket, every wait bounded.
//! - raw sockets ([`raw_upgrade`], [`masked_frame`], [`parse_frames`], [`http_get`], ...) for
//!   what a normal client cannot do.
//! - tokens and upgrades with chosen headers ([`token`], [`upgrade`], [`TempDir`], ...).
//! - [`service`]: Redis and nginx processes on free ports, stopped on drop.
//! - [`Serve`]: a real `switchboard serve` process.
//! - [`sdk`]: a cutting proxy and event waits for the Rust SDK's tests.
//!
//! Synchronisation rule: never sleep to wait for the server. Replies are ordered per
//! connection, so a `ping` with an id followed by its `pong` proves that everything the server
//! queued for this connection before it has arrived. The only time windows are
//! [`Client::assert_silent`] (asserting that nothing arrives) and the few bounded waits for a
//! server-side effect that no frame reports ([`TestServer::wait_for_sessions`]).

// Tests fail loudly by design: unwrapping, indexing and panicking are the assertions here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_debug_implementations
)]

mod client;
mod engine;
mod raw;
pub mod sdk;
mod security;
mod serve;
mod server;
pub mod service;

use std::time::Duration;

pub use client::{Client, Ws, assert_fields, members, now_millis, ws_connect};
pub use engine::Engine;
pub use raw::*;
pub use security::*;
pub use serve::Serve;
pub use server::{TestServer, unthrottled};
pub use service::{Nginx, RedisServer};

/// How long a test waits for a frame it expects before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
