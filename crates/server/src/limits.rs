//! Rate limits: a token bucket (pure: time is passed in) and the per-IP limiter of new
//! connections built on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// `rate` tokens per second, holding at most `burst`; each event takes one.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            last: now,
            rate: f64::from(rate.max(1)),
            burst,
        }
    }

    /// Takes a token; `Err` carries how long until one is available.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Whether the bucket is full again (so forgetting it changes nothing).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// New connections per IP address. Buckets of quiet addresses are dropped by `sweep`, so
/// the map holds only addresses active in the last few seconds.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    rate: u32,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl IpLimiter {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a new connection from `ip`, or says how long to wait.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.buckets
            .lock()
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .take(now)
    }

    /// Forgets addresses whose bucket has refilled.
    pub(crate) fn sweep(&self, now: Instant) {
        self.buckets.lock().retain(|_, bucket| !bucket.is_full(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        let wait = bucket.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        bucket.take(start + Duration::from_millis(100)).unwrap();
        assert!(bucket.take(start + Duration::from_millis(150)).is_err());
    }

    #[test]
    fn ip_limiter_is_per_address_and_forgets() {
        let start = Instant::now();
        let limiter = IpLimiter::new(1, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        limiter.admit(a, start).unwrap();
        limiter.admit(a, start).unwrap();
        assert!(limiter.admit(a, start).is_err());
        limiter.admit(b, start).unwrap();
        limiter.sweep(start + Duration::from_secs(5));
        assert!(limiter.buckets.lock().is_empty());
    }
}
