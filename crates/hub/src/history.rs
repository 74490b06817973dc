//! A room's bounded history: the encoded frames of its latest messages, for recovery and
//! `history` requests. The same shared bytes that went to the members are kept (no copy).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::outbox::Outbound;
use crate::policy::HistoryPolicy;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// When the message was sequenced (ms since the Unix epoch).
    pub(crate) ts: u64,
    /// The frame as delivered (text or binary).
    pub(crate) frame: Outbound,
}

/// The server-wide budget of bytes kept in history, across rooms (empty rooms included).
/// Past it, the oldest entries of any room are evicted first ([`crate::Hub`] does it after a
/// publish); a recovery that needed them then answers `recovered: false`.
#[derive(Debug)]
pub struct HistoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Idempotency ids remembered across rooms, and their cap (see `RecentIds`).
    ids: AtomicUsize,
    max_ids: usize,
    /// One eviction pass at a time; publishers that find one running go on.
    evicting: AtomicBool,
}

impl HistoryBudget {
    /// A budget of `limit` bytes (payloads plus per-entry overhead) and `max_ids`
    /// idempotency ids.
    pub fn new(limit: usize, max_ids: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            ids: AtomicUsize::new(0),
            max_ids,
            evicting: AtomicBool::new(false),
        })
    }

    /// Bytes currently kept.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Idempotency ids currently remembered, across rooms.
    pub fn ids(&self) -> usize {
        self.ids.load(Ordering::Relaxed)
    }

    pub(crate) fn take_id(&self) -> bool {
        self.ids
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_ids).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release_id(&self) {
        self.ids.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn over(&self) -> bool {
        self.used() > self.limit
    }

    /// Eviction frees down to 7/8 of the budget, so that passes (each a scan of the rooms)
    /// are one per eighth of the budget published, not one per message.
    pub(crate) fn low_water(&self) -> usize {
        self.limit - self.limit / 8
    }

    /// Claims the eviction pass; `None` when another caller runs one.
    pub(crate) fn start_eviction(&self) -> Option<EvictionGuard<'_>> {
        (!self.evicting.swap(true, Ordering::Acquire)).then_some(EvictionGuard(self))
    }
}

pub(crate) struct EvictionGuard<'a>(&'a HistoryBudget);

impl Drop for EvictionGuard<'_> {
    fn drop(&mut self) {
        self.0.evicting.store(false, Ordering::Release);
    }
}

/// Consecutive messages, oldest first: entries leave only from the front, so whatever is
/// kept has no gap.
#[derive(Debug)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    policy: HistoryPolicy,
    budget: Arc<HistoryBudget>,
}

impl History {
    pub(crate) fn new(policy: HistoryPolicy, budget: Arc<HistoryBudget>) -> Self {
        Self {
            entries: VecDeque::new(),
            policy,
            budget,
        }
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        self.budget
            .used
            .fetch_sub(entry.frame.cost(), Ordering::Relaxed);
        Some(entry)
    }

    /// The time of the oldest entry kept.
    pub(crate) fn oldest_ts(&self) -> Option<u64> {
        self.entries.front().map(|e| e.ts)
    }

    /// Evicts the oldest entry (the budget is spent); returns the bytes freed.
    pub(crate) fn evict_oldest(&mut self) -> usize {
        let freed = self.pop_front().map_or(0, |e| e.frame.cost());
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
        freed
    }

    pub(crate) fn size(&self) -> usize {
        self.policy.size
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        if self.policy.size == 0 {
            return;
        }
        if self.entries.len() >= self.policy.size {
            self.pop_front();
        }
        self.budget
            .used
            .fetch_add(entry.frame.cost(), Ordering::Relaxed);
        self.entries.push_back(entry);
    }

    /// Drops the entries older than the policy's time-to-live.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        let ttl = u64::try_from(self.policy.ttl.as_millis()).unwrap_or(u64::MAX);
        while self
            .entries
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.ts) > ttl)
        {
            self.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries after `seq`, if history still holds every one of them up to `last`
    /// (the room's current seq). `None` when some were dropped.
    pub(crate) fn after(&self, seq: u64, last: u64) -> Option<impl Iterator<Item = &Entry>> {
        if seq > last {
            return None;
        }
        if seq < last {
            let oldest = self.entries.front()?.seq;
            if oldest > seq + 1 {
                return None;
            }
        }
        Some(self.entries.iter().filter(move |e| e.seq > seq))
    }

    /// The latest `limit` entries, oldest first.
    pub(crate) fn latest(&self, limit: usize) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries
            .iter()
            .skip(self.entries.len().saturating_sub(limit))
    }
}

impl Drop for History {
    fn drop(&mut self) {
        let bytes: usize = self.entries.iter().map(|e| e.frame.cost()).sum();
        self.budget.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn history(size: usize, ttl_ms: u64, seqs: std::ops::RangeInclusive<u64>) -> History {
        let mut h = History::new(
            HistoryPolicy {
                size,
                ttl: Duration::from_millis(ttl_ms),
            },
            HistoryBudget::new(usize::MAX, 0),
        );
        for seq in seqs {
            h.push(Entry {
                seq,
                ts: seq * 10,
                frame: Outbound::Text(Bytes::from(seq.to_string())),
            });
        }
        h
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a Entry>) -> Vec<u64> {
        it.map(|e| e.seq).collect()
    }

    #[test]
    fn keeps_the_latest_size_entries() {
        let h = history(3, 1_000_000, 1..=5);
        assert_eq!(seqs(h.latest(10)), vec![3, 4, 5]);
        assert_eq!(seqs(h.latest(2)), vec![4, 5]);
    }

    #[test]
    fn recovers_only_without_a_gap() {
        let h = history(3, 1_000_000, 1..=5);
        assert_eq!(h.after(2, 5).map(seqs), Some(vec![3, 4, 5]));
        assert_eq!(h.after(4, 5).map(seqs), Some(vec![5]));
        assert_eq!(h.after(5, 5).map(seqs), Some(vec![]));
        assert!(h.after(1, 5).is_none(), "message 2 was dropped");
        assert!(h.after(6, 5).is_none(), "a position from the future");
        let empty = history(0, 1_000_000, 1..=5);
        assert!(empty.after(4, 5).is_none());
        assert_eq!(empty.after(5, 5).map(seqs), Some(vec![]));
    }

    #[test]
    fn expires_by_age() {
        let mut h = history(10, 25, 1..=5); // ts = seq * 10
        h.expire(50);
        assert_eq!(seqs(h.latest(10)), vec![3, 4, 5]);
        h.expire(1_000);
        assert!(h.is_empty());
    }

    #[test]
    fn the_budget_counts_what_is_kept() {
        let budget = HistoryBudget::new(usize::MAX, 0);
        let cost = |seq: u64| Outbound::Text(Bytes::from(seq.to_string())).cost();
        {
            let mut h = History::new(
                HistoryPolicy {
                    size: 3,
                    ttl: Duration::from_millis(1_000),
                },
                budget.clone(),
            );
            for seq in 1..=5 {
                h.push(Entry {
                    seq,
                    ts: seq,
                    frame: Outbound::Text(Bytes::from(seq.to_string())),
                });
            }
            assert_eq!(budget.used(), cost(3) + cost(4) + cost(5));
            assert_eq!(h.evict_oldest(), cost(3));
            assert!(
                h.after(2, 5).is_none(),
                "message 3 was evicted and is needed"
            );
            assert!(h.after(3, 5).is_some());
            assert_eq!(h.oldest_ts(), Some(4));
        }
        assert_eq!(budget.used(), 0, "a dropped history returns its bytes");
    }
}
