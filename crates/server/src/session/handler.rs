//! The protocol-v1 request handler of one connection, whatever carries it: decodes each
//! message, checks it against the connection's rights and limits, applies it to the broker,
//! answers with replies or `error`s on the session's outbox, and counts violations.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use switchboard_hub::{
    CloseFrame, HubError, JoinRequest, Outbound, Position, PublishRequest, Published, Session,
    deadline,
};
use switchboard_protocol::binary;
use switchboard_protocol::client::{self, ClientMessage, RequestId};
use switchboard_protocol::codes::close;
use switchboard_protocol::names::validate_room;
use switchboard_protocol::{ErrorCode, ServerMessage};
use tokio::time::Instant;
use tracing::info;

use super::pipeline::{Completion, InFlight, Pipeline};
use super::violations::Violations;
use super::{Message, SessionContext, instant_of};
use crate::auth::Identity;
use crate::auth::grants::{Grants, Rights};
use crate::limits::TokenBucket;
use crate::metrics::conn::Source;

/// A refused request: what the `error` reply says.
#[derive(Debug)]
struct Rejection {
    id: Option<RequestId>,
    code: ErrorCode,
    message: String,
}

impl Rejection {
    fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }

    fn hub(id: Option<RequestId>, err: &HubError) -> Self {
        Self::new(id, err.code(), err.to_string())
    }
}

/// A right a request needs.
#[derive(Debug, Clone, Copy)]
enum Need {
    Join,
    Publish,
}

/// Protocol v1 on one connection (see the module docs).
pub struct SessionHandler {
    state: Arc<dyn SessionContext>,
    session: Arc<Session>,
    grants: Grants,
    /// When the token expires (plus the configured leeway); the connection closes with 4001
    /// then unless refreshed.
    expires_at: Option<Instant>,
    rate: TokenBucket,
    violations: Violations,
    /// Publishes sent to the broker, answered (acks, errors) in the order they were sent.
    /// Every other request waits until they are answered, so replies keep the request order.
    in_flight: Pipeline,
}

impl std::fmt::Debug for SessionHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandler")
            .field("session", &self.session.id())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl SessionHandler {
    /// The handler of `session`, whose connection authenticated as `identity`.
    pub fn new(state: Arc<dyn SessionContext>, session: Arc<Session>, identity: Identity) -> Self {
        let limits = &state.config().limits;
        let leeway = state.config().auth.leeway.as_secs();
        Self {
            rate: TokenBucket::new(
                limits.messages_per_second,
                limits.message_burst,
                Instant::now(),
            ),
            violations: Violations::new(state.config().max_violations),
            expires_at: identity
                .expires_at
                .and_then(|exp| instant_of(exp.saturating_add(leeway))),
            grants: identity.grants,
            session,
            state,
            in_flight: Pipeline::default(),
        }
    }

    /// When the answer to a request read at `now` is due: `redis_timeout` later (a broker
    /// that does not wait on the network answers at once anyway).
    fn deadline(&self, now: Instant) -> Instant {
        now + self.state.config().cluster.redis_timeout
    }

    /// Validates the room name, then checks the right.
    fn check(&self, id: Option<RequestId>, room: &str, need: Need) -> Result<Rights, Rejection> {
        validate_room(room).map_err(|err| Rejection::hub(id, &err.into()))?;
        let rights = self.grants.rights(room);
        let (allowed, what) = match need {
            Need::Join => (rights.join, "join"),
            Need::Publish => (rights.publish, "publish"),
        };
        if allowed {
            Ok(rights)
        } else {
            Err(Rejection::new(
                id,
                ErrorCode::Forbidden,
                format!("your token does not allow you to {what} in room {room:?}"),
            ))
        }
    }

    async fn on_text(&mut self, text: &str, now: Instant) -> Result<Option<CloseFrame>, Rejection> {
        let message =
            client::decode(text).map_err(|err| Rejection::new(err.id, err.code, err.message))?;
        if let ClientMessage::Publish {
            room,
            data,
            id,
            echo,
            msg_id,
        } = message
        {
            self.check(id, &room, Need::Publish)?;
            let bytes = text.len();
            if let Some(close) = self.make_room(bytes).await {
                return Ok(Some(close));
            }
            let due = self.deadline(now);
            let request = PublishRequest {
                room: &room,
                data,
                echo,
                ts: self.state.now_ms(),
                msg_id: msg_id.as_deref(),
            };
            // Ordered now; answered later (by `deadline` at the latest).
            let published =
                deadline::within_sync(due, || self.state.broker().publish(&self.session, request));
            let publishing = async move {
                Completion {
                    id,
                    bytes,
                    binary: false,
                    result: published.await,
                }
            };
            return Ok(self.pipeline(Box::pin(publishing), bytes, now));
        }
        // Any other request: first answer the publishes before it.
        if let Some(close) = self.drain(now).await {
            return Ok(Some(close));
        }
        let id = message.id();
        let hub_err = |err: HubError| Rejection::hub(id, &err);
        let state = self.state.clone();
        let broker = state.broker();
        // Due `redis_timeout` after it was read, the wait for the publishes before it included.
        let due = self.deadline(now);
        match message {
            ClientMessage::Join { room, id, since } => {
                let rights = self.check(id, &room, Need::Join)?;
                let max = self.state.config().limits.max_rooms_per_connection;
                if !self.session.is_member(&room) && self.session.room_count() >= max {
                    return Err(Rejection::new(
                        id,
                        ErrorCode::TooManyRooms,
                        format!("a connection may be in at most {max} rooms"),
                    ));
                }
                let since = since.as_ref().map(|since| Position {
                    seq: since.seq,
                    epoch: &since.epoch,
                });
                let request = JoinRequest {
                    room: &room,
                    id,
                    since,
                    presence: rights.presence,
                    now_ms: self.state.now_ms(),
                };
                let was_member = self.session.is_member(&room);
                deadline::within(due, broker.join(&self.session, request))
                    .await
                    .map_err(hub_err)?;
                if !was_member {
                    crate::metrics::conn::memberships(1.0);
                }
            }
            ClientMessage::Leave { room, id } => {
                deadline::within(due, broker.leave(&self.session, &room, id))
                    .await
                    .map_err(hub_err)?;
                crate::metrics::conn::memberships(-1.0);
            }
            ClientMessage::Publish { .. } => {} // pipelined above
            ClientMessage::History { room, limit, id } => {
                self.check(id, &room, Need::Join)?;
                let history = broker.history(&self.session, &room, id, limit, self.state.now_ms());
                deadline::within(due, history).await.map_err(hub_err)?;
            }
            ClientMessage::Members {
                room,
                id,
                after,
                limit,
            } => {
                let rights = self.check(id, &room, Need::Join)?;
                if !rights.presence {
                    return Err(Rejection::new(
                        id,
                        ErrorCode::Forbidden,
                        format!("your token does not allow you to see who is in room {room:?}"),
                    ));
                }
                let members = broker.members(&self.session, &room, id, after.as_deref(), limit);
                deadline::within(due, members).await.map_err(hub_err)?;
            }
            ClientMessage::Typing { room } => {
                self.check(None, &room, Need::Publish)?;
                deadline::within(due, broker.typing(&self.session, &room))
                    .await
                    .map_err(hub_err)?;
            }
            ClientMessage::Refresh { token, id } => return self.refresh(&token, id),
            ClientMessage::Ping { id } => self.reply(&ServerMessage::Pong { id }),
        }
        Ok(None)
    }

    /// A new token for the same user: new expiry, new rights (for later requests).
    fn refresh(
        &mut self,
        token: &str,
        id: Option<RequestId>,
    ) -> Result<Option<CloseFrame>, Rejection> {
        let identity = self
            .state
            .verify(token)
            .map_err(|err| Rejection::new(id, ErrorCode::InvalidToken, err.to_string()))?;
        if self
            .state
            .broker()
            .users()
            .is_denied(&identity.user, self.state.now_ms())
        {
            info!(session = self.session.id().0, user = %self.session.user(), "refresh of a denied user; closing");
            self.reply(&ServerMessage::Error {
                id,
                code: ErrorCode::Forbidden,
                message: "this user is refused for now",
            });
            return Ok(Some(CloseFrame::new(close::FORBIDDEN, "denied")));
        }
        if identity.user != *self.session.user() {
            info!(session = self.session.id().0, user = %self.session.user(), new_user = %identity.user, "refresh names another user; closing");
            self.reply(&ServerMessage::Error {
                id,
                code: ErrorCode::Forbidden,
                message: "a refresh token must name the same user",
            });
            return Ok(Some(CloseFrame::new(
                close::FORBIDDEN,
                "identity change not allowed",
            )));
        }
        let leeway = self.state.config().auth.leeway.as_secs();
        self.expires_at = identity
            .expires_at
            .and_then(|exp| instant_of(exp.saturating_add(leeway)));
        self.grants = identity.grants;
        self.reply(&ServerMessage::Refreshed {
            id,
            exp: identity.expires_at.unwrap_or(0),
        });
        Ok(None)
    }

    async fn on_binary(
        &mut self,
        frame: &[u8],
        now: Instant,
    ) -> Result<Option<CloseFrame>, Rejection> {
        let envelope = binary::decode_client(frame)
            .map_err(|err| Rejection::new(None, ErrorCode::InvalidMessage, err.to_string()))?;
        self.check(None, envelope.room, Need::Publish)?;
        let bytes = frame.len();
        if let Some(close) = self.make_room(bytes).await {
            return Ok(Some(close));
        }
        let due = self.deadline(now);
        let published = deadline::within_sync(due, || {
            self.state.broker().publish_binary(
                &self.session,
                envelope.room,
                envelope.payload,
                self.state.now_ms(),
            )
        });
        let publishing = async move {
            let result = published.await.map(|seq| Published {
                seq,
                duplicate: false,
            });
            Completion {
                id: None,
                bytes,
                binary: true,
                result,
            }
        };
        Ok(self.pipeline(Box::pin(publishing), bytes, now))
    }

    /// Waits for the oldest publishes while this connection has as many (or as many bytes)
    /// on their way as it may.
    async fn make_room(&mut self, bytes: usize) -> Option<CloseFrame> {
        while self.in_flight.is_full(bytes) {
            let done = self.in_flight.next().await?;
            if let Some(close) = self.finish(done, Instant::now()) {
                return Some(close);
            }
        }
        None
    }

    /// Keeps a publish's outcome for answering in order. An in-process broker has answered
    /// already: then, with nothing before it, the reply goes out at once.
    fn pipeline(
        &mut self,
        mut publishing: InFlight,
        bytes: usize,
        now: Instant,
    ) -> Option<CloseFrame> {
        match publishing
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(done) if self.in_flight.is_empty() => self.finish(done, now),
            Poll::Ready(done) => {
                self.in_flight
                    .push_back(Box::pin(std::future::ready(done)), bytes);
                None
            }
            Poll::Pending => {
                self.in_flight.push_back(publishing, bytes);
                None
            }
        }
    }

    /// Answers every publish still on its way.
    async fn drain(&mut self, now: Instant) -> Option<CloseFrame> {
        while let Some(done) = self.in_flight.next().await {
            if let Some(close) = self.finish(done, now) {
                return Some(close);
            }
        }
        None
    }

    /// The `ack` (or `error`) of an answered publish.
    fn finish(&mut self, done: Completion, now: Instant) -> Option<CloseFrame> {
        match done.result {
            Ok(published) => {
                if !published.duplicate {
                    crate::metrics::conn::published(if done.binary {
                        Source::Binary
                    } else {
                        Source::Ws
                    });
                }
                if let Some(id) = done.id {
                    self.reply(&ServerMessage::Ack {
                        id,
                        seq: Some(published.seq),
                        duplicate: published.duplicate,
                    });
                }
                None
            }
            Err(err) => self.reject(Rejection::hub(done.id, &err), now),
        }
    }

    /// Answers a refused request with `error` and counts the violation (the connection closes
    /// with 1008 at too many). A broker outage (`unavailable`) is not the client's fault and
    /// does not count.
    fn reject(&mut self, rejection: Rejection, now: Instant) -> Option<CloseFrame> {
        info!(
            session = self.session.id().0,
            user = %self.session.user(),
            code = %rejection.code,
            id = rejection.id,
            reason = %rejection.message,
            "request rejected"
        );
        self.reply(&ServerMessage::Error {
            id: rejection.id,
            code: rejection.code.clone(),
            message: &rejection.message,
        });
        crate::metrics::conn::error(&rejection.code);
        if rejection.code == ErrorCode::Unavailable {
            return None;
        }
        self.violations.record(now).then(|| {
            info!(session = self.session.id().0, user = %self.session.user(), "too many protocol errors; closing");
            CloseFrame::new(close::POLICY_VIOLATION, "too many protocol errors")
        })
    }

    fn reply(&self, message: &ServerMessage<'_>) {
        // A full outbox has already aborted the connection (slow consumer).
        let _ = self.session.outbox().push(Outbound::Text(message.encode()));
    }

    /// Handles one text or binary message; `Some` closes the connection with that frame. The
    /// transport waits for it (a broker round trip, at most its timeout): requests of one
    /// connection are applied in order.
    pub async fn on_message(&mut self, message: Message<'_>, now: Instant) -> Option<CloseFrame> {
        let result = if self.rate.take(now).is_err() {
            let limit = self.state.config().limits.messages_per_second;
            Err(Rejection::new(
                None,
                ErrorCode::RateLimited,
                format!("rate limit of {limit} messages/s exceeded; message dropped"),
            ))
        } else {
            match message {
                Message::Text(text) => self.on_text(text, now).await,
                Message::Binary(frame) => self.on_binary(frame, now).await,
            }
        };
        let close = match result {
            Ok(close) => close,
            Err(rejection) => match self.drain(now).await {
                Some(close) => Some(close),
                None => self.reject(rejection, now),
            },
        };
        // The transport waits for this call: while it waited for the broker (a Redis round
        // trip, a stall up to `redis_timeout`), the client's next messages queued in the
        // socket. They are charged as sent then, not as one burst when read (F5).
        self.rate.paused(now, Instant::now());
        close
    }

    /// Another message that counts toward the rate limit without being a request (a
    /// WebSocket ping or pong): past the limit it is dropped (a ping is not answered) and
    /// answered with `rate_limited`, a violation like any other. `Err(None)`: drop it;
    /// `Err(Some(frame))`: close with that frame.
    pub fn on_control(&mut self, now: Instant) -> Result<(), Option<CloseFrame>> {
        if self.rate.take(now).is_ok() {
            return Ok(());
        }
        let limit = self.state.config().limits.messages_per_second;
        let rejection = Rejection::new(
            None,
            ErrorCode::RateLimited,
            format!(
                "rate limit of {limit} messages/s exceeded (pings and pongs count); frame dropped"
            ),
        );
        Err(self.reject(rejection, now))
    }

    /// Whether publishes are still on their way (answered by [`Self::next_completion`]).
    pub fn has_pending(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Answers the next publish on its way (queuing its `ack` or `error`); `Some` closes the
    /// connection. Only poll it while [`Self::has_pending`].
    pub async fn next_completion(&mut self) -> Option<CloseFrame> {
        let done = self.in_flight.next().await?;
        self.finish(done, Instant::now())
    }

    /// When the token expires (plus the leeway): call [`Self::on_expiry`] then.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// The token expired without a refresh: the close frame (4001).
    pub fn on_expiry(&mut self) -> CloseFrame {
        info!(session = self.session.id().0, user = %self.session.user(), "token expired without refresh; closing");
        self.expires_at = None;
        CloseFrame::new(close::TOKEN_EXPIRED, "token expired")
    }
}
