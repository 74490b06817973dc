//! Protocol v1 on a connection: decodes each message, applies it to the hub, answers with
//! replies or `error`s, and counts violations.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_hub::{CloseFrame, Hub, HubError, Outbound, Position, Session};
use switchboard_protocol::binary;
use switchboard_protocol::client::{self, ClientMessage, RequestId};
use switchboard_protocol::codes::close;
use switchboard_protocol::names::validate_room;
use switchboard_protocol::{ErrorCode, ServerMessage};
use tokio::time::Instant;
use tracing::info;

use super::codec::{self, Incoming};
use super::driver::Handler;
use super::violations::Violations;

/// A refused request: what the `error` reply says.
#[derive(Debug)]
struct Rejection {
    id: Option<RequestId>,
    code: ErrorCode,
    message: String,
}

impl Rejection {
    fn hub(id: Option<RequestId>, err: &HubError) -> Self {
        Self {
            id,
            code: err.code(),
            message: err.to_string(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct SessionHandler {
    hub: Arc<Hub>,
    session: Arc<Session>,
    violations: Violations,
}

impl SessionHandler {
    pub(crate) fn new(hub: Arc<Hub>, session: Arc<Session>, max_violations: u32) -> Self {
        Self {
            hub,
            session,
            violations: Violations::new(max_violations),
        }
    }

    fn on_text(&self, text: &str) -> Result<(), Rejection> {
        let message = client::decode(text).map_err(|err| Rejection {
            id: err.id,
            code: err.code,
            message: err.message,
        })?;
        let id = message.id();
        let hub_err = |err: HubError| Rejection::hub(id, &err);
        match message {
            ClientMessage::Join { room, id, since } => {
                let since = since.as_ref().map(|since| Position {
                    seq: since.seq,
                    epoch: &since.epoch,
                });
                self.hub
                    .join(&self.session, &room, id, since, now_millis())
                    .map_err(hub_err)
            }
            ClientMessage::Leave { room, id } => {
                self.hub.leave(&self.session, &room, id).map_err(hub_err)
            }
            ClientMessage::Publish {
                room,
                data,
                id,
                echo,
                msg_id,
            } => {
                let published = self
                    .hub
                    .publish(
                        &self.session,
                        &room,
                        data,
                        echo,
                        now_millis(),
                        msg_id.as_deref(),
                    )
                    .map_err(hub_err)?;
                if let Some(id) = id {
                    self.reply(&ServerMessage::Ack {
                        id,
                        seq: Some(published.seq),
                        duplicate: published.duplicate,
                    });
                }
                Ok(())
            }
            ClientMessage::History { room, limit, id } => self
                .hub
                .history(&self.session, &room, id, limit, now_millis())
                .map_err(hub_err),
            ClientMessage::Typing { room } => {
                self.hub.typing(&self.session, &room).map_err(hub_err)
            }
            ClientMessage::Ping { id } => {
                self.reply(&ServerMessage::Pong { id });
                Ok(())
            }
        }
    }

    fn on_binary(&self, frame: &[u8]) -> Result<(), Rejection> {
        let envelope = binary::decode_client(frame).map_err(|err| Rejection {
            id: None,
            code: ErrorCode::InvalidMessage,
            message: err.to_string(),
        })?;
        validate_room(envelope.room).map_err(|err| Rejection::hub(None, &err.into()))?;
        self.hub
            .publish_binary(&self.session, envelope.room, envelope.payload, now_millis())
            .map(|_| ())
            .map_err(|err| Rejection::hub(None, &err))
    }

    fn reply(&self, message: &ServerMessage<'_>) {
        // A full outbox has already aborted the connection (slow consumer).
        let _ = self.session.outbox().push(Outbound::Text(message.encode()));
    }
}

impl Handler for SessionHandler {
    fn on_message(&mut self, message: Incoming, now: Instant) -> Option<CloseFrame> {
        let result = match &message {
            Incoming::Text(m) => self.on_text(codec::text_of(m)),
            Incoming::Binary(m) => self.on_binary(m.as_payload()),
            Incoming::Close(..) | Incoming::Control => Ok(()),
        };
        let rejection = result.err()?;
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
            code: rejection.code,
            message: &rejection.message,
        });
        self.violations.record(now).then(|| {
            info!(session = self.session.id().0, user = %self.session.user(), "too many protocol errors; closing");
            CloseFrame::new(close::POLICY_VIOLATION, "too many protocol errors")
        })
    }
}

/// The server clock, in milliseconds since the Unix epoch (the `ts` of messages).
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
