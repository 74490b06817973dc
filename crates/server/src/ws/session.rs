//! The WebSocket adapter of the protocol-v1 session (`crate::session`): hands text and binary
//! messages to the transport-neutral handler, and pings and pongs to its rate limit.

use switchboard_hub::CloseFrame;
use tokio::time::Instant;

use super::codec::{self, Incoming};
use super::driver::Handler;
use crate::session::{Message, SessionHandler};

impl Handler for SessionHandler {
    async fn on_message(&mut self, message: Incoming, now: Instant) -> Option<CloseFrame> {
        let message = match &message {
            Incoming::Text(m) => Message::Text(codec::text_of(m)),
            Incoming::Binary(m) => Message::Binary(m.as_payload()),
            Incoming::Close(..)
            | Incoming::Control
            | Incoming::Ping(_)
            | Incoming::FragmentStart => {
                return None;
            }
        };
        SessionHandler::on_message(self, message, now).await
    }

    fn has_pending(&self) -> bool {
        SessionHandler::has_pending(self)
    }

    /// Pings and pongs count toward the message rate.
    fn on_control(&mut self, now: Instant) -> Result<(), Option<CloseFrame>> {
        SessionHandler::on_control(self, now)
    }

    async fn next_completion(&mut self) -> Option<CloseFrame> {
        SessionHandler::next_completion(self).await
    }

    fn deadline(&self) -> Option<Instant> {
        self.expires_at()
    }

    fn on_deadline(&mut self, _now: Instant) -> Option<CloseFrame> {
        Some(self.on_expiry())
    }
}
