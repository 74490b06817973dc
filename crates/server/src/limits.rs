//! Rate limits: a token bucket (pure: time is passed in) and the per-IP limiter of new
//! connections built on it; the per-IP cap on connections open at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// `rate` tokens per second, holding at most `burst`; each event takes one.
///
/// Time the server spent not reading the connection ([`TokenBucket::paused`]) is credited
/// beyond `burst`: what the client sent meanwhile waited in the socket and is read in one
/// go afterwards, so it is charged as if read when it was sent.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
    /// While a pause's credit lasts: the most the bucket may hold (above `burst`), and until
    /// when.
    surplus: Option<(f64, Instant)>,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            last: now,
            rate: f64::from(rate.max(1)),
            burst,
            surplus: None,
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

    /// The server did not read this connection from `from` to `to` (it waited for the
    /// broker on the connection's behalf, e.g. through a Redis stall): the client may have
    /// sent `rate` messages a second meanwhile, which are read back to back once reading
    /// resumes. They get the tokens that accrued during the pause even past `burst`, for as
    /// long again as the pause lasted (long enough to read what queued up, not long enough to
    /// hoard). Over any interval that contains the pause the client is still held to `rate`
    /// on average plus one `burst`: the credit is only the time the server took.
    pub(crate) fn paused(&mut self, from: Instant, to: Instant) {
        let pause = to.saturating_duration_since(from);
        if pause.is_zero() {
            return;
        }
        self.refill(from);
        self.tokens += pause.as_secs_f64() * self.rate;
        self.last = self.last.max(to);
        let ceiling = self.tokens.max(self.burst);
        self.surplus = Some((ceiling, to + pause));
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let cap = match self.surplus {
            Some((ceiling, until)) if now < until => ceiling,
            Some(_) => {
                self.surplus = None;
                self.burst
            }
            None => self.burst,
        };
        // Tokens above the cap (an expired credit) are dropped; below it they accrue.
        self.tokens = (self.tokens + elapsed * self.rate).min(cap);
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
            .entry(ip_key(ip))
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .take(now)
    }

    /// Forgets addresses whose bucket has refilled.
    pub(crate) fn sweep(&self, now: Instant) {
        self.buckets.lock().retain(|_, bucket| !bucket.is_full(now));
    }
}

/// The address a per-IP limit counts: an IPv4 address (an IPv4-mapped IPv6 one counted as
/// its IPv4 form), or an IPv6 address's /64. One IPv6 subscriber usually gets a whole /64 (at
/// least), so counting each /128 would let one client be 2^64 clients (F8).
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// How many connections each address (see [`ip_key`]) holds open at once, capped: the
/// concurrent counterpart of [`IpLimiter`]'s rate (F8). Only addresses with an open
/// connection are in the map; the last guard to go removes its entry.
#[derive(Debug)]
pub(crate) struct IpSlots {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`IpSlots`]; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct IpSlot {
    slots: Arc<IpSlots>,
    key: IpAddr,
}

impl IpSlots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for `ip`, or `None` when its address already holds `max`.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = ip_key(ip);
        let mut open = self.open.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections `ip`'s address holds now.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip_key(ip)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one connection.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.open.lock().len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
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
    fn a_pause_credits_what_the_client_sent_meanwhile_beyond_the_burst() {
        // 20 msg/s against a limit of 30/s with a burst of 5: a 4 s pause queues 80 messages,
        // all read at once afterwards. Without the credit 75 of them would be refused.
        let start = Instant::now();
        let mut bucket = TokenBucket::new(30, 5, start);
        let resumed = start + Duration::from_secs(4);
        bucket.paused(start, resumed);
        for n in 0..80 {
            assert!(bucket.take(resumed).is_ok(), "message {n} of the queued 80");
        }
        // The credit is the pause's time only: 5 + 120 tokens, no more.
        let mut granted = 80;
        while bucket.take(resumed).is_ok() {
            granted += 1;
        }
        assert_eq!(granted, 125);
    }

    #[test]
    fn an_unused_pause_credit_expires_back_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        bucket.paused(start, start + Duration::from_secs(2));
        // Four seconds after the pause began (two after it ended) the credit is gone.
        let later = start + Duration::from_secs(4) + Duration::from_millis(1);
        for _ in 0..3 {
            bucket.take(later).unwrap();
        }
        assert!(bucket.take(later).is_err());
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

    #[test]
    fn f8_ipv6_is_counted_per_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            ip_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(ip_key(ip("2001:db8:1:3::1")), ip_key(ip("2001:db8:1:2::1")));
        assert_eq!(ip_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(ip_key(ip("10.0.0.1")), ip("10.0.0.1"));
        // The rate limit shares the bucket across the /64.
        let start = Instant::now();
        let limiter = IpLimiter::new(1, 2);
        limiter.admit(ip("2001:db8::1"), start).unwrap();
        limiter.admit(ip("2001:db8::2"), start).unwrap();
        assert!(limiter.admit(ip("2001:db8::3"), start).is_err());
        limiter.admit(ip("2001:db8:0:1::1"), start).unwrap();
    }

    #[test]
    fn f8_one_address_holds_at_most_max_connections() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let slots = IpSlots::new(2);
        let a = slots.try_acquire(ip("192.0.2.1")).unwrap();
        let b = slots.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(slots.try_acquire(ip("192.0.2.1")).is_none());
        let c = slots.try_acquire(ip("2001:db8::1")).unwrap();
        let e = slots.try_acquire(ip("2001:db8::2")).unwrap();
        assert!(
            slots.try_acquire(ip("2001:db8::ffff")).is_none(),
            "same /64"
        );
        assert_eq!(slots.count(ip("192.0.2.1")), 2);
        drop(a);
        let d = slots.try_acquire(ip("192.0.2.1")).unwrap();
        drop((b, c, d, e));
        assert_eq!(
            slots.addresses(),
            0,
            "entries go with their last connection"
        );
    }
}
