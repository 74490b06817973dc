//! `/echo`: every text or binary message back, unchanged and of the same type. It runs on the
//! same driver as `/ws` (so conformance suites test our real framing and close handling).

use switchboard_hub::{CloseFrame, Outbound, Outbox, PushError};
use tokio::time::Instant;

use super::codec::{self, Incoming};
use super::driver::Handler;

#[derive(Debug)]
pub(crate) struct EchoHandler<'a> {
    outbox: &'a Outbox,
}

impl<'a> EchoHandler<'a> {
    pub(crate) fn new(outbox: &'a Outbox) -> Self {
        Self { outbox }
    }
}

impl Handler for EchoHandler<'_> {
    async fn on_message(&mut self, message: Incoming, _now: Instant) -> Option<CloseFrame> {
        let frame = match message {
            Incoming::Text(m) => Outbound::Text(codec::bytes_of(m)),
            Incoming::Binary(m) => Outbound::Binary(codec::bytes_of(m)),
            Incoming::Close(..)
            | Incoming::Control
            | Incoming::Ping(_)
            | Incoming::FragmentStart => return None,
        };
        match self.outbox.push(frame) {
            // An overflow has already aborted the outbox with 1013; the driver ends.
            Ok(()) | Err(PushError::Overflow | PushError::Closed) => None,
        }
    }
}
