//! Switchboard's server: the transports, the WebSocket upgrade, the HTTP endpoints,
//! configuration and lifecycle. The rooms themselves live in `switchboard-hub`.
//!
//! - [`Config`]: every setting, with its default.
//! - [`auth`]: JWT verification at the upgrade, room grants, token minting.
//! - [`Server`]: bind, then [`Server::run`] until a cancellation token fires.
//!
//! Layout: `http/` (router, embedded demo page), `ws/` (upgrade handshake, codec seam,
//! per-connection driver, the `/ws` protocol handler and the `/echo` handler).

pub mod auth;
pub mod config;
mod http;
mod limits;
mod metrics;
mod server;
mod state;
mod tls;
mod ws;

pub use config::{CompressionMode, Config, ConfigError, LogFormat};
pub use server::{Server, ServerError};
pub use tokio_util::sync::CancellationToken;
