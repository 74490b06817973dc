//! The writer's accounting, once per written batch: message frames delivered, bytes written,
//! and now and then the publish → socket latency of the batch's oldest live message.

use std::cell::Cell;
use std::sync::OnceLock;

use switchboard_hub::{BatchDone, Sequenced};

use super::counters::{self, Counter};
use super::enabled;

/// Of the written batches that carry a live message, each thread times one in this many. A
/// histogram record is a push onto a buffer every thread shares; at one in 16 a fan-out to
/// 10,000 connections records ~600 samples instead of 10,000 — still thousands per second
/// on a busy node, and every batch on a quiet one gets its turn (the first of each thread's
/// 16 is timed).
const SAMPLE_EVERY: u32 = 16;

thread_local! {
    static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}

static LATENCY: OnceLock<metrics::Histogram> = OnceLock::new();

/// A batch of `done.messages` messages and `bytes` bytes was handed to the socket: counts
/// them on this thread, and samples the latency of its oldest live message.
#[inline]
pub(crate) fn batch_written(done: &BatchDone, bytes: u64) {
    if !enabled() {
        return;
    }
    if done.messages > 0 {
        counters::add(Counter::Deliveries, u64::from(done.messages));
    }
    if bytes > 0 {
        counters::add(Counter::BytesSent, bytes);
    }
    if let Some(sequenced) = done.oldest
        && due()
    {
        let micros = sequenced.micros_until(Sequenced::now());
        #[allow(clippy::cast_precision_loss, reason = "microseconds: exact below 2^53")]
        let seconds = micros as f64 / 1e6;
        LATENCY
            .get_or_init(|| metrics::histogram!(super::DELIVERY_LATENCY))
            .record(seconds);
    }
}

/// Whether this thread times this batch (one in [`SAMPLE_EVERY`]).
fn due() -> bool {
    COUNTDOWN.with(|countdown| {
        let left = countdown.get();
        if left == 0 {
            countdown.set(SAMPLE_EVERY - 1);
            true
        } else {
            countdown.set(left - 1);
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_in_sample_every_is_timed_starting_with_the_first() {
        let timed: Vec<bool> = (0..SAMPLE_EVERY * 2).map(|_| due()).collect();
        assert_eq!(timed.iter().filter(|t| **t).count(), 2);
        assert_eq!(timed.first(), Some(&true));
    }
}
