//! When to ping and when to give up on a silent peer. Pure: time is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// What the connection must do when [`Heartbeat::deadline`] passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Send a ping now.
    Ping,
    /// Nothing arrived within the timeout after the last ping.
    TimedOut,
}

#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    deadline: Instant,
    awaiting: bool,
}

impl Heartbeat {
    pub(crate) fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            deadline: now + interval,
            awaiting: false,
        }
    }

    /// The next instant at which [`Heartbeat::on_deadline`] must be called.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn on_deadline(&mut self, now: Instant) -> Beat {
        if self.awaiting {
            Beat::TimedOut
        } else {
            self.awaiting = true;
            self.deadline = now + self.timeout;
            Beat::Ping
        }
    }

    /// Any frame from the peer (a pong, or anything else) proves it is alive.
    pub(crate) fn on_activity(&mut self, now: Instant) {
        if self.awaiting {
            self.awaiting = false;
            self.deadline = now + self.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_then_times_out_without_activity() {
        let start = Instant::now();
        let (interval, timeout) = (Duration::from_secs(25), Duration::from_secs(20));
        let mut beat = Heartbeat::new(start, interval, timeout);
        assert_eq!(beat.deadline(), start + interval);
        assert_eq!(beat.on_deadline(start + interval), Beat::Ping);
        assert_eq!(beat.deadline(), start + interval + timeout);
        assert_eq!(beat.on_deadline(beat.deadline()), Beat::TimedOut);
    }

    #[test]
    fn activity_after_a_ping_rearms_the_interval() {
        let start = Instant::now();
        let mut beat = Heartbeat::new(start, Duration::from_secs(10), Duration::from_secs(5));
        let pinged = start + Duration::from_secs(10);
        assert_eq!(beat.on_deadline(pinged), Beat::Ping);
        let pong = pinged + Duration::from_secs(1);
        beat.on_activity(pong);
        assert_eq!(beat.deadline(), pong + Duration::from_secs(10));
        assert_eq!(beat.on_deadline(beat.deadline()), Beat::Ping);
    }

    #[test]
    fn activity_without_a_ping_keeps_the_schedule() {
        let start = Instant::now();
        let mut beat = Heartbeat::new(start, Duration::from_secs(10), Duration::from_secs(5));
        beat.on_activity(start + Duration::from_secs(3));
        assert_eq!(beat.deadline(), start + Duration::from_secs(10));
    }
}
