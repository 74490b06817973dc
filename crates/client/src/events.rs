//! What the SDK hands to the application: [`Event`]s through [`Events`], and the replies of
//! [`Client`](crate::Client) requests ([`JoinInfo`], [`History`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// Everything that happens on a client, in the order it happened.
///
/// Room messages ([`Event::Message`], [`Event::Binary`]) of one room arrive in `seq` order,
/// each exactly once, across reconnects: the SDK drops any message whose `seq` it already
/// delivered. When the server cannot replay what was missed while disconnected, the SDK says
/// so with [`Event::Resync`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connection to the server is up. Sent for the first connection and after every
    /// reconnect (rooms are re-joined right after; see [`Event::Joined`]).
    Connected,
    /// The connection went down. `code` is the close code when the server (or the client, on
    /// [`Client::close`](crate::Client::close)) sent a close frame, `None` when the
    /// connection broke without one (network error, heartbeat timeout). Followed by
    /// [`Event::Reconnecting`], or by [`Event::Closed`] if the client will not reconnect.
    Disconnected {
        /// The WebSocket close code, if a close frame was received.
        code: Option<u16>,
        /// The close reason, or a description of the failure.
        reason: String,
    },
    /// The client waits `delay`, then makes reconnection attempt number `attempt` (1-based;
    /// it counts failed attempts and resets once a connection is stable or a join succeeds).
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// How long the client waits before making it.
        delay: Duration,
    },
    /// The server confirmed a join: one the application asked for, or the automatic re-join
    /// after a reconnect.
    Joined {
        /// The room.
        room: String,
        /// The users in the room, each once, this client's user included — at most the
        /// server's list limit of them (the count is in [`JoinInfo::member_count`]; page
        /// with [`Client::members`](crate::Client::members)).
        members: Vec<String>,
        /// The room's current sequence number.
        seq: u64,
        /// The room's epoch (`None` from a server without recovery support).
        epoch: Option<String>,
        /// For a re-join that asked for recovery: whether the server replays what was missed
        /// (`Some(true)`; the missed messages follow as normal events) or cannot
        /// (`Some(false)`; an [`Event::Resync`] follows). `None` otherwise.
        recovered: Option<bool>,
    },
    /// A JSON message published in a room this client is in.
    Message {
        /// The room.
        room: String,
        /// The publisher's user name.
        from: String,
        /// The payload.
        data: Value,
        /// The message's sequence number in the room.
        seq: u64,
        /// The server's clock when the message was sequenced, in ms since the Unix epoch.
        ts: u64,
    },
    /// A binary message published in a room this client is in.
    Binary {
        /// The room.
        room: String,
        /// The publisher's user name.
        from: String,
        /// The payload, byte for byte.
        payload: Bytes,
        /// The message's sequence number in the room (shared with JSON messages).
        seq: u64,
        /// The server's clock when the message was sequenced, in ms since the Unix epoch.
        ts: u64,
    },
    /// A user arrived in or left a room this client is in. A coalesced server frame (several
    /// changes at once) becomes one such event per user, in the frame's order.
    Presence {
        /// The room.
        room: String,
        /// Arrived or left.
        event: PresenceEvent,
        /// The user.
        user: String,
    },
    /// The number of distinct users in a room, with each presence frame of the server (the
    /// count at join time is in [`JoinInfo::member_count`]). `truncated`: the member lists this client got do not name
    /// everyone (the room is larger than the server's list limit, or presence frames carry only
    /// the count); page through the room with [`Client::members`](crate::Client::members).
    MemberCount {
        /// The room.
        room: String,
        /// Distinct users in the room, this client's included.
        member_count: u64,
        /// The names this client was told are only part of the room.
        truncated: bool,
    },
    /// Another connection in the room is typing.
    Typing {
        /// The room.
        room: String,
        /// The typing user.
        from: String,
    },
    /// Messages of `room` were missed and cannot be replayed (the room's history was reset,
    /// e.g. by a server restart, or the missed messages have expired). The application should
    /// re-sync, for example with [`Client::history`](crate::Client::history); the SDK now
    /// counts from `seq`.
    Resync {
        /// The room.
        room: String,
        /// The room's current sequence number, the new position.
        seq: u64,
        /// The room's epoch, if the server sent one.
        epoch: Option<String>,
    },
    /// An error that no pending request was waiting for: an `error` frame without a known id
    /// (e.g. for [`Client::typing`](crate::Client::typing) or
    /// [`Client::publish_binary`](crate::Client::publish_binary)), a failed automatic re-join,
    /// or a client-side failure. Errors of requests are returned by the request instead.
    ///
    /// `code` is one of the server's error codes (`not_joined`, `forbidden`, `rate_limited`,
    /// ... see `docs/protocol.md`; treat unknown ones like `internal`) or, for a reconnection
    /// refused by the server's HTTP layer (401/403: the client stops), [`CONNECT_REFUSED`].
    Error {
        /// The id of the failed request, if any.
        id: Option<u64>,
        /// Machine-readable code.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// The client has stopped for good (after [`Client::close`](crate::Client::close), a
    /// close the client does not recover from, or when every `Client` handle was dropped).
    /// Always the last event.
    Closed,
}

/// The [`Event::Error`] code for a reconnection the server refused before the WebSocket
/// upgrade (HTTP 401 or 403).
pub const CONNECT_REFUSED: &str = "connect_refused";

/// A presence change: a user's first connection joined the room, or its last one left.
pub use switchboard_protocol::server::PresenceEvent;

/// The reply to [`Client::join`](crate::Client::join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    /// The room.
    pub room: String,
    /// The users in the room, each once, this client's user included — at most the server's
    /// list limit of them (see `members_truncated`).
    pub members: Vec<String>,
    /// Distinct users in the room, this client's included.
    pub member_count: u64,
    /// `members` names only part of the room: page through it with
    /// [`Client::members`](crate::Client::members).
    pub members_truncated: bool,
    /// The room's current sequence number (that of its last message; 0 if none).
    pub seq: u64,
    /// The room's epoch (`None` from a server without recovery support).
    pub epoch: Option<String>,
}

/// The reply to [`Client::history`](crate::Client::history): the latest messages the server
/// keeps for a room.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The room.
    pub room: String,
    /// The room's current sequence number.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The messages, oldest first.
    pub messages: Vec<HistoryMessage>,
}

/// One message of a [`History`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMessage {
    /// The publisher's user name.
    pub from: String,
    /// The message's sequence number in the room.
    pub seq: u64,
    /// The server's clock when the message was sequenced, in ms since the Unix epoch.
    pub ts: u64,
    /// The payload.
    pub body: Body,
}

/// The payload of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A JSON message.
    Json(Value),
    /// A binary message.
    Binary(Bytes),
}

/// The stream of [`Event`]s of one client. Read it with [`Events::next`] or as a
/// [`Stream`](futures_util::Stream).
///
/// The channel behind it is bounded: when the application does not read, the client stops
/// reading from the server (which, if it goes on long enough, makes the server drop the
/// connection as a slow consumer). Read events in their own task, not in the one that awaits
/// [`Client`](crate::Client) requests. The stream ends after [`Event::Closed`].
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    /// `Closed` was handed out (or the stream ended): return `None` from now on.
    done: bool,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Event>) -> Self {
        Self { rx, done: false }
    }

    /// The next event; `None` after [`Event::Closed`].
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                if event == Event::Closed {
                    self.done = true;
                    self.rx.close();
                }
                Poll::Ready(Some(event))
            }
            // The connection task ended without getting its `Closed` through (the channel
            // was full): it is still the last event.
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Event::Closed))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn closed_is_last_even_if_the_task_could_not_send_it() {
        let (tx, rx) = mpsc::channel(4);
        let mut events = Events::new(rx);
        tx.send(Event::Connected).await.ok();
        drop(tx);
        assert_eq!(events.next().await, Some(Event::Connected));
        assert_eq!(events.next().await, Some(Event::Closed));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn stream_ends_after_closed() {
        let (tx, rx) = mpsc::channel(4);
        let mut events = Events::new(rx);
        tx.send(Event::Closed).await.ok();
        assert_eq!(events.next().await, Some(Event::Closed));
        assert_eq!(StreamExt::next(&mut events).await, None);
        // The sender sees the channel closed.
        assert!(tx.send(Event::Connected).await.is_err());
    }
}

/// One page of a room's users, the reply to [`Client::members`](crate::Client::members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersPage {
    /// The room.
    pub room: String,
    /// Users in byte order of their names.
    pub members: Vec<String>,
    /// Distinct users in the room.
    pub member_count: u64,
    /// More follow: pass it as `after` for the next page.
    pub next: Option<String>,
}
