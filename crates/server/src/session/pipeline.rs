//! Publishes of one connection on their way through the broker, answered in the order they
//! were sent, and the bounds on how many (and how many bytes) may be.

use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use switchboard_hub::{HubError, Published};
use switchboard_protocol::client::RequestId;

/// Publishes of one connection on their way through the broker at once, at most. A remote
/// broker (Redis) answers after a round trip; pipelining lets one connection publish faster
/// than one message per round trip.
pub const MAX_PIPELINED: usize = 64;

/// Bytes of publishes (as received) of one connection on their way through the broker at
/// once, at most: while Redis hangs, each waits up to `redis_timeout` holding its payload
/// (and its copy in the node's publish queue). 1 MiB is 16 maximum-size (64 KiB) messages or
/// all 64 pipelined ones up to 16 KiB each: a client within the rate limit (30/s) keeps
/// flowing during a 2 s hang with messages up to ~17 KiB; larger ones wait for earlier
/// answers (the reader pauses, which the rate limit credits: `TokenBucket::paused`).
pub(crate) const MAX_PIPELINED_BYTES: usize = 1024 * 1024;

/// A publish on its way: its request id, its size, whether it is binary, and the broker's
/// answer.
pub(super) struct Completion {
    pub(super) id: Option<RequestId>,
    pub(super) bytes: usize,
    pub(super) binary: bool,
    pub(super) result: Result<Published, HubError>,
}

pub(super) type InFlight = Pin<Box<dyn Future<Output = Completion> + Send>>;

/// Publishes on their way, answered in order, and their bytes; allocated by the first
/// publish, so that an idle connection pays nothing for it. Boxed: a `FuturesOrdered` is 64
/// bytes inline, and this struct lives in every connection's task (16 bytes so).
#[derive(Default)]
pub(super) struct Pipeline(Option<Box<FuturesOrdered<InFlight>>>, usize);

impl Pipeline {
    pub(super) fn len(&self) -> usize {
        self.0.as_deref().map_or(0, FuturesOrdered::len)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether one more publish of `bytes` must wait for earlier ones (never the first: one
    /// publish may always be on its way).
    pub(super) fn is_full(&self, bytes: usize) -> bool {
        !self.is_empty()
            && (self.len() >= MAX_PIPELINED || self.1.saturating_add(bytes) > MAX_PIPELINED_BYTES)
    }

    pub(super) fn push_back(&mut self, publishing: InFlight, bytes: usize) {
        self.1 = self.1.saturating_add(bytes);
        self.0
            .get_or_insert_with(Box::default)
            .push_back(publishing);
    }

    /// The next answer in order; `None` when nothing is on its way.
    pub(super) async fn next(&mut self) -> Option<Completion> {
        let done = match &mut self.0 {
            Some(in_flight) => in_flight.next().await,
            None => None,
        }?;
        self.1 = self.1.saturating_sub(done.bytes);
        Some(done)
    }
}
