//! Counters that every delivery or received message touches, kept per thread: each thread
//! adds to its own cache line (64 slots, 128-byte aligned), and a scrape sums the slots into
//! the exported counters ([`publish`]). A fan-out to 10,000 connections then costs 10,000
//! uncontended adds spread over the worker threads, not 10,000 adds on one shared line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What is counted per thread.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    /// Message frames written to sockets.
    Deliveries = 0,
    /// Bytes written to sockets (WebSocket framing and compression included).
    BytesSent = 1,
    /// Bytes of messages received (after reassembly and inflation).
    BytesReceived = 2,
    /// JSON publishes sequenced.
    PublishedWs = 3,
    /// Binary publishes sequenced.
    PublishedBinary = 4,
    /// Publishes of the HTTP API sequenced (JSON or binary).
    PublishedApi = 5,
}

const COUNTERS: usize = 6;

/// More slots than worker threads on most machines; threads beyond share slots (still
/// correct: the adds are atomic).
const SLOTS: usize = 64;

/// One thread's counters, alone on its cache lines (128 bytes: adjacent-line prefetch too).
#[repr(align(128))]
struct Slot([AtomicU64; COUNTERS]);

static SLOT_TABLE: [Slot; SLOTS] = [const { Slot([const { AtomicU64::new(0) }; COUNTERS]) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_slot() -> Option<&'static Slot> {
    let index = MY_SLOT.with(|mine| {
        let mut index = mine.get();
        if index == usize::MAX {
            index = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
            mine.set(index);
        }
        index
    });
    SLOT_TABLE.get(index)
}

/// Adds `n` to this thread's `counter`.
#[inline]
pub(crate) fn add(counter: Counter, n: u64) {
    if let Some(cell) = my_slot().and_then(|slot| slot.0.get(counter as usize)) {
        cell.fetch_add(n, Ordering::Relaxed);
    }
}

/// The sum over every thread.
pub(crate) fn total(counter: Counter) -> u64 {
    SLOT_TABLE
        .iter()
        .filter_map(|slot| slot.0.get(counter as usize))
        .fold(0u64, |sum, cell| {
            sum.wrapping_add(cell.load(Ordering::Relaxed))
        })
}

/// Copies the totals into the exported counters (before a scrape renders them).
pub(crate) fn publish() {
    use super::{BYTES_RECEIVED, BYTES_SENT, DELIVERIES, MESSAGES_PUBLISHED};
    metrics::counter!(DELIVERIES).absolute(total(Counter::Deliveries));
    metrics::counter!(BYTES_SENT).absolute(total(Counter::BytesSent));
    metrics::counter!(BYTES_RECEIVED).absolute(total(Counter::BytesReceived));
    metrics::counter!(MESSAGES_PUBLISHED, "source" => "ws").absolute(total(Counter::PublishedWs));
    metrics::counter!(MESSAGES_PUBLISHED, "source" => "binary")
        .absolute(total(Counter::PublishedBinary));
    metrics::counter!(MESSAGES_PUBLISHED, "source" => "api").absolute(total(Counter::PublishedApi));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_sum_up() {
        let before = total(Counter::PublishedBinary);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        add(Counter::PublishedBinary, 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().ok();
        }
        assert_eq!(total(Counter::PublishedBinary) - before, 16_000);
    }
}
