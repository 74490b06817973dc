//! What a transport needs to account for deliveries without touching a shared counter per
//! delivery: when each message was sequenced (for the publish → socket latency) and how many
//! messages a written batch carried. The outbox keeps both under the lock it already takes
//! per push, and hands them to the writer once per batch ([`crate::Outbox::batch_written`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// When a message was sequenced, in microseconds since the Unix epoch. A wall clock, not a
/// monotonic one, so that a stamp taken on the node that sequenced a message means the same
/// on the node that delivers it (to within the two clocks' skew: NTP keeps it near 1 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequenced(pub u64);

impl Sequenced {
    /// Now (one `clock_gettime`, ~20 ns through the vDSO: taken once per publish, never per
    /// recipient).
    pub fn now() -> Self {
        Self(unix_micros(SystemTime::now()))
    }

    /// Microseconds from this stamp to `now` (0 when `now` is earlier: clock skew between
    /// nodes).
    pub fn micros_until(self, now: Self) -> u64 {
        now.0.saturating_sub(self.0)
    }
}

fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What the writer learns when it has written a batch ([`crate::Outbox::batch_written`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchDone {
    /// Nothing is queued behind the batch.
    pub idle: bool,
    /// Message frames the batch carried (live or replayed; not replies, presence or pings).
    pub messages: u32,
    /// When the oldest live message of the batch was sequenced (replayed and buffered
    /// messages carry no stamp: their wait is not delivery latency).
    pub oldest: Option<Sequenced>,
}

/// Messages queued since the writer last took a batch (kept inside the outbox's state).
///
/// The oldest stamp is kept as its microseconds, 0 for none: 16 bytes instead of the 24 of
/// an `Option<Sequenced>` beside a `u32`, and every connection's outbox holds two (an idle
/// connection's session is 16 bytes smaller). A stamp of 0 (a clock before 1970) is no stamp:
/// its latency would be meaningless anyway.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) messages: u32,
    oldest_micros: u64,
}

impl Tally {
    /// One more message queued.
    pub(crate) fn add(&mut self, sequenced: Option<Sequenced>) {
        self.messages = self.messages.saturating_add(1);
        if self.oldest_micros == 0 {
            self.oldest_micros = sequenced.map_or(0, |s| s.0);
        }
    }

    /// Adds what `other` counted (it was queued after `self`'s messages).
    pub(crate) fn merge(&mut self, other: Self) {
        self.messages = self.messages.saturating_add(other.messages);
        if self.oldest_micros == 0 {
            self.oldest_micros = other.oldest_micros;
        }
    }

    /// When the oldest live message counted was sequenced.
    pub(crate) fn oldest(&self) -> Option<Sequenced> {
        (self.oldest_micros != 0).then_some(Sequenced(self.oldest_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_is_16_bytes() {
        // Every outbox holds two: 16 bytes each, not the 24 of a `u32` beside an
        // `Option<Sequenced>`.
        assert_eq!(size_of::<Tally>(), 16);
    }

    #[test]
    fn the_oldest_stamp_is_the_first_and_counts_add_up() {
        let mut tally = Tally::default();
        tally.add(None);
        tally.add(Some(Sequenced(5)));
        tally.add(Some(Sequenced(3)));
        assert_eq!(tally.messages, 3);
        assert_eq!(tally.oldest(), Some(Sequenced(5)));
        let mut earlier = Tally::default();
        earlier.add(Some(Sequenced(1)));
        earlier.merge(tally);
        assert_eq!(earlier.messages, 4);
        assert_eq!(earlier.oldest(), Some(Sequenced(1)));
        assert_eq!(
            Sequenced(10).micros_until(Sequenced(4)),
            0,
            "skew: never negative"
        );
        assert_eq!(Sequenced(4).micros_until(Sequenced(10)), 6);
    }
}
