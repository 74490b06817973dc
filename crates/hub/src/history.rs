//! A room's bounded history: the encoded frames of its latest messages, for recovery and
//! `history` requests. The same shared bytes that went to the members are kept (no copy).

use std::collections::VecDeque;

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

/// Consecutive messages, oldest first: entries leave only from the front, so whatever is
/// kept has no gap.
#[derive(Debug)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    policy: HistoryPolicy,
}

impl History {
    pub(crate) fn new(policy: HistoryPolicy) -> Self {
        Self {
            entries: VecDeque::new(),
            policy,
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.policy.size
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        if self.policy.size == 0 {
            return;
        }
        if self.entries.len() >= self.policy.size {
            self.entries.pop_front();
        }
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
            self.entries.pop_front();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn history(size: usize, ttl_ms: u64, seqs: std::ops::RangeInclusive<u64>) -> History {
        let mut h = History::new(HistoryPolicy {
            size,
            ttl: Duration::from_millis(ttl_ms),
        });
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
}
