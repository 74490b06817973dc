//! Counting protocol violations: a few mistakes get `error` replies, a stream of them closes
//! the connection. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window over which violations are counted.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Violations {
    max: u32,
    /// Times of the most recent violations (at most `max`); `None` for well-behaved clients.
    /// Boxed: every connection's task holds this struct, and a `VecDeque` is 32 bytes inline
    /// even when empty (16 bytes in all so, instead of 40).
    #[expect(
        clippy::box_collection,
        reason = "the box keeps the empty queue out of every connection's task"
    )]
    recent: Option<Box<VecDeque<Instant>>>,
}

impl Violations {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            recent: None,
        }
    }

    /// Records one violation; true when it is the `max`-th within [`WINDOW`].
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        let max = usize::try_from(self.max).unwrap_or(usize::MAX);
        let recent = self.recent.get_or_insert_with(Box::default);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        if recent.len() > max {
            recent.pop_front();
        }
        recent.len() >= max
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
