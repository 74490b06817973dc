//! Reconnection delays: exponential backoff with full jitter.
//!
//! Pure code (no clock, no randomness of its own): the caller passes the random number and the
//! connection's uptime, which keeps every rule here unit-testable.

use std::time::Duration;

/// A connection that stayed up at least this long resets the attempt counter.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How long to wait before each reconnection attempt.
///
/// Attempt `n` (counting from 1) waits a random time, uniformly distributed in
/// `[0, min(cap, base · factor^(n-1))]` ("full jitter"): clients that lost their connection at
/// the same moment, for example when a server restarts, do not all come back at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Upper bound of the first delay. Default 0.5 s.
    pub base: Duration,
    /// Growth of the upper bound per attempt. Default 2. Values below 1 are treated as 1.
    pub factor: f64,
    /// Largest upper bound. Default 30 s.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            factor: 2.0,
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before attempt `attempt` (1-based; 0 is treated as 1):
    /// `min(cap, base · factor^(attempt-1))`.
    pub fn max_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = if self.factor.is_finite() {
            self.factor.max(1.0)
        } else {
            1.0
        };
        let bound = self.base.as_secs_f64() * factor.powi(exponent);
        let cap = self.cap.as_secs_f64();
        // NaN and infinity (huge exponents) end up at the cap.
        if bound.is_finite() && bound < cap {
            Duration::from_secs_f64(bound.max(0.0))
        } else {
            self.cap
        }
    }

    /// The delay before attempt `attempt` for a random `unit` in `[0, 1)`:
    /// `unit · max_delay(attempt)`. `unit` is clamped into `[0, 1]`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.max_delay(attempt).mul_f64(unit)
    }
}

/// The attempt counter of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Attempts made since the last reset.
    made: u32,
}

impl Attempts {
    /// Counts one more attempt and returns its number (1-based).
    pub(crate) fn next(&mut self) -> u32 {
        self.made = self.made.saturating_add(1);
        self.made
    }

    /// Starts counting from 1 again (after a successful join).
    pub(crate) fn reset(&mut self) {
        self.made = 0;
    }

    /// A connection ended after being up for `uptime`: a stable one resets the counter.
    pub(crate) fn disconnected_after(&mut self, uptime: Duration) {
        if uptime >= STABLE_AFTER {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn defaults() {
        let b = Backoff::default();
        assert_eq!((b.base, b.factor, b.cap), (MS(500), 2.0, MS(30_000)));
    }

    #[test]
    fn upper_bound_grows_then_caps() {
        let b = Backoff::default();
        let table = [
            (0, 500),
            (1, 500),
            (2, 1000),
            (3, 2000),
            (4, 4000),
            (6, 16_000),
            (7, 30_000),
            (8, 30_000),
            (1000, 30_000),
            (u32::MAX, 30_000),
        ];
        for (attempt, ms) in table {
            assert_eq!(b.max_delay(attempt), MS(ms), "attempt {attempt}");
        }
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_bound() {
        let b = Backoff::default();
        for attempt in 1..=12 {
            let bound = b.max_delay(attempt);
            assert_eq!(b.delay(attempt, 0.0), Duration::ZERO);
            assert_eq!(b.delay(attempt, 1.0), bound);
            assert_eq!(b.delay(attempt, 0.5), bound / 2);
            for _ in 0..200 {
                let d = b.delay(attempt, fastrand::f64());
                assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
            }
        }
    }

    #[test]
    fn jitter_input_out_of_range_is_clamped() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, -3.0), Duration::ZERO);
        assert_eq!(b.delay(1, 7.0), MS(500));
        assert_eq!(b.delay(1, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn odd_settings_do_not_panic() {
        let table = [
            (
                Backoff {
                    factor: 0.5,
                    ..Backoff::default()
                },
                5,
                MS(500),
            ),
            (
                Backoff {
                    factor: f64::NAN,
                    ..Backoff::default()
                },
                5,
                MS(500),
            ),
            (
                Backoff {
                    factor: f64::INFINITY,
                    ..Backoff::default()
                },
                5,
                MS(500),
            ),
            (
                Backoff {
                    base: Duration::ZERO,
                    ..Backoff::default()
                },
                5,
                Duration::ZERO,
            ),
            (
                Backoff {
                    cap: MS(100),
                    ..Backoff::default()
                },
                1,
                MS(100),
            ),
            (
                Backoff {
                    base: Duration::MAX,
                    ..Backoff::default()
                },
                3,
                MS(30_000),
            ),
        ];
        for (b, attempt, expected) in table {
            assert_eq!(b.max_delay(attempt), expected, "{b:?}");
        }
    }

    #[test]
    fn attempts_count_and_reset() {
        let mut a = Attempts::default();
        assert_eq!((a.next(), a.next(), a.next()), (1, 2, 3));
        a.disconnected_after(STABLE_AFTER - MS(1));
        assert_eq!(a.next(), 4, "a short-lived connection keeps counting");
        a.disconnected_after(STABLE_AFTER);
        assert_eq!(a.next(), 1, "a stable connection resets");
        a.next();
        a.reset();
        assert_eq!(a.next(), 1, "a successful join resets");
    }
}
