//! Protocol v1 on a connection, independent of the transport that carries it.
//!
//! A transport (the WebSocket adapter in `ws/session.rs` today; SSE, long-polling later) hands
//! each client message to [`SessionHandler::on_message`] as a [`Message`] and writes out what
//! the session's outbox ([`switchboard_hub::Outbox`]) holds: replies, errors and the rooms'
//! frames all go there. The transport also forwards the few other things it sees
//! ([`SessionHandler::on_control`] for messages that count toward the rate limit, the token's
//! expiry at [`SessionHandler::expires_at`], pipelined publishes completing while
//! [`SessionHandler::has_pending`]).
//!
//! The handler reaches the server through [`SessionContext`] (the broker, the settings, token
//! verification, the wall clock), which the server's shared state implements; the fuzz target
//! (`fuzz/`) implements it over an in-process hub and a clock of its own.
//!
//! - `handler`: decode, rights, limits, broker calls, replies.
//! - `pipeline`: publishes on their way, answered in order, and their bounds.
//! - `violations`: a few mistakes get `error`s, a stream of them closes the connection.

mod handler;
mod pipeline;
mod violations;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_hub::Broker;
use tokio::time::Instant;

use crate::auth::{AuthError, Identity, unix_now};
use crate::config::Config;
use crate::state::AppState;

pub use handler::SessionHandler;
pub use pipeline::MAX_PIPELINED;

/// What a session needs of the server.
pub trait SessionContext: Send + Sync + 'static {
    /// Where rooms live.
    fn broker(&self) -> &dyn Broker;
    /// The settings (limits, rights leeway, `redis_timeout`).
    fn config(&self) -> &Config;
    /// Verifies a `refresh` request's token.
    fn verify(&self, token: &str) -> Result<Identity, AuthError>;
    /// The wall clock, in milliseconds since the Unix epoch (the `ts` of messages, history
    /// expiry).
    fn now_ms(&self) -> u64 {
        now_millis()
    }
}

impl SessionContext for AppState {
    fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.auth.verify(token)
    }
}

/// One client message, as the transport received it.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// A text message: one JSON request.
    Text(&'a str),
    /// A binary message: a binary publish envelope.
    Binary(&'a [u8]),
}

/// The monotonic instant of a Unix time in seconds (now, if it has passed); `None` when it
/// is too far away to represent (such a token never expires in practice).
fn instant_of(unix_secs: u64) -> Option<Instant> {
    Instant::now().checked_add(Duration::from_secs(unix_secs.saturating_sub(unix_now())))
}

/// The server clock, in milliseconds since the Unix epoch (the `ts` of messages).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
