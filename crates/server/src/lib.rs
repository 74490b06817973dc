//! Switchboard's server: the transports, the WebSocket upgrade, the HTTP endpoints,
//! configuration and lifecycle. The rooms themselves live in `switchboard-hub`.
//!
//! - [`Config`]: every setting, with its default; [`Settings`]: a `Config` validated once,
//!   which is what the server takes.
//! - [`auth`]: JWT verification at the upgrade, room grants, token minting.
//! - [`Server`]: bind (with the engine the caller built: [`Settings::memory_engine`], or
//!   another [`Broker`] such as `switchboard-broker-redis`), then [`Server::run`] until a
//!   cancellation token fires.
//!
//! Layout: `http/` (router, embedded demo page), `session/` (protocol v1 on a connection,
//! transport-neutral: fed text and binary messages, answering on the session's outbox), `ws/`
//! (upgrade handshake, codec seam, per-connection driver, the WebSocket adapter of `session/`
//! and the `/echo` handler).

mod admin;
pub mod auth;
pub mod config;
mod http;
mod limits;
mod metrics;
mod server;
pub mod session;
mod settings;
mod state;
mod tls;
pub mod webhooks;
mod ws;

pub use config::{CompressionMode, Config, ConfigError, LogFormat};
pub use server::{Server, ServerError};
pub use session::MAX_PIPELINED;
pub use settings::{Engine, Settings};
pub use switchboard_hub::{Broker, Events};
pub use tokio_util::sync::CancellationToken;
