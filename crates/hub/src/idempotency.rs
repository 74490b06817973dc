//! Remembers recently accepted `(user, msg_id)` pairs of a room, so that a retried publish is
//! acknowledged with its original `seq` instead of being delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::history::HistoryBudget;

/// Most ids remembered per room; beyond it the oldest are forgotten early.
const MAX_IDS: usize = 10_000;

type Key = (Arc<str>, Box<str>);

#[derive(Debug)]
pub(crate) struct RecentIds {
    seqs: HashMap<Key, u64>,
    /// Insertion order with the time of acceptance, for expiry.
    order: VecDeque<(u64, Key)>,
    /// Counts the ids of every room against the server-wide cap.
    budget: Arc<HistoryBudget>,
}

impl RecentIds {
    pub(crate) fn new(budget: Arc<HistoryBudget>) -> Self {
        Self {
            seqs: HashMap::new(),
            order: VecDeque::new(),
            budget,
        }
    }

    fn forget_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else {
            return false;
        };
        self.seqs.remove(&key);
        self.budget.release_id();
        true
    }

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

    /// Remembers an accepted id. At the server-wide cap the room forgets its own oldest id
    /// to make room; a room with none to forget does not remember this one (a retry of it
    /// may then be delivered twice: the cap is sized so that only an attack reaches it).
    pub(crate) fn insert(&mut self, user: &Arc<str>, msg_id: &str, seq: u64, now_ms: u64) {
        if self.order.len() >= MAX_IDS {
            self.forget_oldest();
        }
        let counted = self.budget.take_id() || (self.forget_oldest() && self.budget.take_id());
        if !counted {
            return;
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
            self.forget_oldest();
        }
        if self.order.is_empty() && self.order.capacity() > 0 {
            self.seqs = HashMap::new();
            self.order = VecDeque::new();
        }
    }
}

impl Drop for RecentIds {
    fn drop(&mut self) {
        for _ in 0..self.order.len() {
            self.budget.release_id();
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
        let mut ids = RecentIds::new(HistoryBudget::new(usize::MAX, 100));
        ids.insert(&alice, "m1", 7, 1_000);
        assert_eq!(ids.get(&alice, "m1", 1_050, window), Some(7));
        assert_eq!(ids.get(&bob, "m1", 1_050, window), None);
        assert_eq!(ids.get(&alice, "m2", 1_050, window), None);
        assert_eq!(ids.get(&alice, "m1", 1_101, window), None);
    }

    #[test]
    fn ids_are_capped_server_wide() {
        let budget = HistoryBudget::new(usize::MAX, 3);
        let user: Arc<str> = "u".into();
        let window = Duration::from_secs(60);
        let mut a = RecentIds::new(budget.clone());
        let mut b = RecentIds::new(budget.clone());
        for (i, id) in ["a1", "a2", "a3"].into_iter().enumerate() {
            a.insert(&user, id, i as u64, 0);
        }
        assert_eq!(budget.ids(), 3);
        // At the cap, a room with nothing to forget does not remember.
        b.insert(&user, "b1", 9, 0);
        assert_eq!(b.get(&user, "b1", 0, window), None);
        // A room at the cap forgets its own oldest.
        a.insert(&user, "a4", 4, 0);
        assert_eq!(a.get(&user, "a1", 0, window), None);
        assert_eq!(a.get(&user, "a4", 0, window), Some(4));
        assert_eq!(budget.ids(), 3);
        drop(a);
        assert_eq!(budget.ids(), 0);
    }
}
