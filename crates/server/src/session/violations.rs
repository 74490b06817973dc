//! Counting protocol violations: a few mistakes get `error` replies, a stream of them closes
//! the connection. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window over which violations are counted.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Violations {
    max: usize,
    /// Times of the most recent violations (at most `max`); empty, and unallocated, for
    /// well-behaved clients.
    recent: VecDeque<Instant>,
}

impl Violations {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max: usize::try_from(max).unwrap_or(usize::MAX).max(1),
            recent: VecDeque::new(),
        }
    }

    /// Records one violation; true when it is the `max`-th within [`WINDOW`].
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() > self.max {
            self.recent.pop_front();
        }
        self.recent.len() >= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_th_violation_in_the_window_trips() {
        let start = Instant::now();
        let mut v = Violations::new(3);
        assert!(!v.record(start));
        assert!(!v.record(start + Duration::from_secs(1)));
        assert!(v.record(start + Duration::from_secs(2)));
    }

    #[test]
    fn old_violations_expire() {
        let start = Instant::now();
        let mut v = Violations::new(2);
        assert!(!v.record(start));
        assert!(!v.record(start + WINDOW));
        assert!(!v.record(start + WINDOW * 2 + Duration::from_secs(1)));
    }
}
