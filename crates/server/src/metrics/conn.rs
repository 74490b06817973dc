//! Connections as metrics and logs: the open-connection gauge, opened and closed counters
//! (closed by reason), handshake refusals, protocol errors, room memberships, and the one
//! `info` line per closed connection. Every connection gets an id, carried by a `conn` span
//! that each of its log lines shows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use switchboard_hub::BatchDone;
use switchboard_protocol::ErrorCode;
use switchboard_protocol::codes::close;
use tokio::time::Instant;
use tracing::{Span, info, info_span};

use super::counters::{self, Counter};
use super::{
    CONNECTIONS, CONNECTIONS_CLOSED, CONNECTIONS_OPENED, ERRORS, HANDSHAKES_REJECTED, RATE_LIMITED,
    ROOM_MEMBERS, enabled,
};
use crate::ws::codec::Incoming;
use crate::ws::driver::Ending;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The span of a new connection: `conn{id=N}` on each of its log lines. Created before its
/// task is spawned (the task is instrumented with it).
pub(crate) fn span(transport: &'static str) -> Span {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    info_span!("conn", id, transport)
}

/// Every value of the `reason` label of `switchboard_connections_closed_total`.
pub(crate) const CLOSE_REASONS: &[&str] = &[
    "normal",
    "going_away",
    "policy",
    "slow_consumer",
    "ping_timeout",
    "token_expired",
    "too_big",
    "protocol_error",
    "error",
    "shutdown",
    "kicked",
];

/// Why a connection ended, as the `reason` label.
pub(crate) fn close_reason(ending: &Ending) -> &'static str {
    match ending {
        Ending::PeerClosed(Some(close::GOING_AWAY), _) => "going_away",
        Ending::PeerClosed(..) => "normal",
        Ending::PeerGone(None) => "going_away",
        Ending::PeerGone(Some(_)) => "error",
        Ending::ProtocolError(_) => "protocol_error",
        Ending::PingTimeout => "ping_timeout",
        Ending::SlowConsumer | Ending::WriteTimeout => "slow_consumer",
        Ending::ServerClosed(frame) => match frame.code {
            close::NORMAL => "normal",
            close::GOING_AWAY => "shutdown",
            close::POLICY_VIOLATION | close::FORBIDDEN => "policy",
            close::MESSAGE_TOO_BIG => "too_big",
            close::PROTOCOL_ERROR | close::INVALID_PAYLOAD | close::UNSUPPORTED_DATA => {
                "protocol_error"
            }
            close::TRY_AGAIN_LATER => "slow_consumer",
            close::TOKEN_EXPIRED => "token_expired",
            4000..=4999 => "kicked",
            _ => "error",
        },
    }
}

/// What one connection did, for its closing log line (its own counters: uncontended).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counts {
    /// A text or binary message was read.
    #[inline]
    pub(crate) fn received(&self, message: &Incoming) {
        let bytes = match message {
            Incoming::Text(m) | Incoming::Binary(m) => m.as_payload().len(),
            _ => return,
        };
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        bump(&self.messages_in, 1);
        bump(&self.bytes_in, bytes);
        if enabled() {
            counters::add(Counter::BytesReceived, bytes);
        }
    }

    /// The writer handed a batch to the socket (`bytes` on the wire).
    #[inline]
    pub(crate) fn written(&self, done: &BatchDone, bytes: u64) {
        bump(&self.messages_out, u64::from(done.messages));
        bump(&self.bytes_out, bytes);
        super::delivery::batch_written(done, bytes);
    }
}

/// Only this connection's task touches its counts: a load and a store, no locked add.
fn bump(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// What carries a connection: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `/ws`: protocol v1.
    Ws,
    /// `/echo`.
    Echo,
}

impl Transport {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Echo => "echo",
        }
    }
}

/// An open connection: counted in `switchboard_connections` while it lives. Held by every
/// connection's task for its whole life, so kept small: the transport as a one-byte enum
/// rather than a `&str` (56 bytes in all instead of 64).
#[derive(Debug)]
pub(crate) struct Connection {
    transport: Transport,
    opened: Instant,
    pub(crate) counts: Counts,
}

impl Connection {
    /// A connection of `transport` has been upgraded.
    pub(crate) fn open(transport: Transport) -> Self {
        let transport_label = transport.as_str();
        if enabled() {
            metrics::gauge!(CONNECTIONS, "transport" => transport_label).increment(1.0);
            metrics::counter!(CONNECTIONS_OPENED, "transport" => transport_label).increment(1);
        }
        Self {
            transport,
            opened: Instant::now(),
            counts: Counts::default(),
        }
    }

    /// The connection ended: counts it by reason and writes its one `info` line (duration,
    /// messages and bytes each way, how it ended).
    pub(crate) fn closed(&self, ending: &Ending, peer: SocketAddr, user: &str) {
        let reason = close_reason(ending);
        if enabled() {
            metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
        }
        let duration_ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let load = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        let counts = &self.counts;
        let (code, detail) = match ending {
            Ending::PeerClosed(code, text) => (*code, text.clone()),
            Ending::ServerClosed(frame) => (Some(frame.code), frame.reason.to_string()),
            Ending::PeerGone(cause) => (None, cause.clone().unwrap_or_default()),
            Ending::ProtocolError(err) => (None, err.clone()),
            Ending::PingTimeout | Ending::SlowConsumer | Ending::WriteTimeout => {
                (None, String::new())
            }
        };
        info!(
            %peer,
            user,
            transport = self.transport.as_str(),
            duration_ms,
            messages_in = load(&counts.messages_in),
            messages_out = load(&counts.messages_out),
            bytes_in = load(&counts.bytes_in),
            bytes_out = load(&counts.bytes_out),
            reason,
            how = ending.label(),
            code,
            detail = %detail,
            "connection closed"
        );
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if enabled() {
            metrics::gauge!(CONNECTIONS, "transport" => self.transport.as_str()).decrement(1.0);
        }
    }
}

/// An upgrade was refused with `status`.
pub(crate) fn rejected(status: StatusCode) {
    if enabled() {
        metrics::counter!(HANDSHAKES_REJECTED, "status" => status.as_str().to_owned()).increment(1);
    }
}

/// Every error code of protocol v1: the `code` label's values (a code this version does not
/// know is `other`; the server never sends one).
pub(crate) static ERROR_CODES: [ErrorCode; ErrorCode::ALL.len()] = ErrorCode::ALL;

fn code_label(code: &ErrorCode) -> &'static str {
    ERROR_CODES
        .iter()
        .find(|known| *known == code)
        .map_or("other", ErrorCode::as_str)
}

/// A request was answered with `error` `code`.
pub(crate) fn error(code: &ErrorCode) {
    if enabled() {
        metrics::counter!(ERRORS, "code" => code_label(code)).increment(1);
        if *code == ErrorCode::RateLimited {
            metrics::counter!(RATE_LIMITED).increment(1);
        }
    }
}

/// Where a publish came from (`switchboard_messages_published_total{source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A JSON `publish` on a connection.
    Ws,
    /// A binary frame on a connection.
    Binary,
    /// The HTTP API (`publish`, and each room of a `broadcast`).
    Api,
}

/// A publish from `source` was sequenced (not a duplicate).
#[inline]
pub(crate) fn published(source: Source) {
    if enabled() {
        let counter = match source {
            Source::Ws => Counter::PublishedWs,
            Source::Binary => Counter::PublishedBinary,
            Source::Api => Counter::PublishedApi,
        };
        counters::add(counter, 1);
    }
}

/// A connection joined a room it was not in (`+1`) or left `n` rooms.
pub(crate) fn memberships(change: f64) {
    if enabled() {
        metrics::gauge!(ROOM_MEMBERS).increment(change);
    }
}

#[cfg(test)]
mod tests {
    use switchboard_hub::CloseFrame;

    use super::*;

    #[test]
    fn every_ending_maps_to_a_listed_reason() {
        let endings = [
            Ending::PeerClosed(Some(1000), String::new()),
            Ending::PeerClosed(Some(1001), String::new()),
            Ending::PeerGone(None),
            Ending::PeerGone(Some("reset".into())),
            Ending::ProtocolError("bad".into()),
            Ending::PingTimeout,
            Ending::SlowConsumer,
            Ending::WriteTimeout,
            Ending::ServerClosed(CloseFrame::new(1001, "server shutting down")),
            Ending::ServerClosed(CloseFrame::new(1008, "too many protocol errors")),
            Ending::ServerClosed(CloseFrame::new(1009, "message too big")),
            Ending::ServerClosed(CloseFrame::new(1013, "slow consumer")),
            Ending::ServerClosed(CloseFrame::new(4001, "token expired")),
            Ending::ServerClosed(CloseFrame::new(4003, "identity change not allowed")),
            Ending::ServerClosed(CloseFrame::new(4010, "disconnected by the operator")),
            Ending::ServerClosed(CloseFrame::new(1011, "internal")),
        ];
        let reasons: Vec<&str> = endings.iter().map(close_reason).collect();
        for reason in &reasons {
            assert!(CLOSE_REASONS.contains(reason), "{reason}");
        }
        assert_eq!(
            reasons,
            [
                "normal",
                "going_away",
                "going_away",
                "error",
                "protocol_error",
                "ping_timeout",
                "slow_consumer",
                "slow_consumer",
                "shutdown",
                "policy",
                "too_big",
                "slow_consumer",
                "token_expired",
                "policy",
                "kicked",
                "error"
            ]
        );
    }
}
