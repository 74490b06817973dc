//! Remembers recently accepted `(user, msg_id)` pairs of a room, so that a retried publish is
//! acknowledged with its original `seq` instead of being delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Most ids remembered per room; beyond it the oldest are forgotten early.
const MAX_IDS: usize = 10_000;

type Key = (Arc<str>, Box<str>);

#[derive(Debug, Default)]
pub(crate) struct RecentIds {
    seqs: HashMap<Key, u64>,
    /// Insertion order with the time of acceptance, for expiry.
    order: VecDeque<(u64, Key)>,
}

impl RecentIds {
    /// The seq of an earlier publish with this id, if within `window`.
    pub(crate) fn get(
        &mut self,
        user: &Arc<str>,
        msg_id: &str,
        now_ms: u64,
        window: Duration,
    ) -> Option<u64> {
        self.expire(now_ms, window);
        if self.seqs.is_empty() {
            return None;
        }
        self.seqs.get(&(user.clone(), Box::from(msg_id))).copied()
    }

    pub(crate) fn insert(&mut self, user: &Arc<str>, msg_id: &str, seq: u64, now_ms: u64) {
        if self.order.len() >= MAX_IDS
            && let Some((_, key)) = self.order.pop_front()
        {
            self.seqs.remove(&key);
        }
        let key: Key = (user.clone(), Box::from(msg_id));
        self.seqs.insert(key.clone(), seq);
        self.order.push_back((now_ms, key));
    }

    fn expire(&mut self, now_ms: u64, window: Duration) {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) <= window {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.seqs.remove(&key);
            }
        }
        if self.order.is_empty() && self.order.capacity() > 0 {
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_per_user() {
        let window = Duration::from_millis(100);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let mut ids = RecentIds::default();
        ids.insert(&alice, "m1", 7, 1_000);
        assert_eq!(ids.get(&alice, "m1", 1_050, window), Some(7));
        assert_eq!(ids.get(&bob, "m1", 1_050, window), None);
        assert_eq!(ids.get(&alice, "m2", 1_050, window), None);
        assert_eq!(ids.get(&alice, "m1", 1_101, window), None);
    }
}
