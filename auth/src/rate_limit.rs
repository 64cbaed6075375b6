//! A small in-memory keyed rate limiter (GCRA, the algorithm `governor` uses):
//! `limit` requests per minute per key, as a burst or spread out, refilling
//! smoothly. State is per auth process; it protects the argon2 work and
//! slows password guessing, it is not a quota system.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_secs(60);

/// Forget idle keys once this many are held, so a spray of distinct emails
/// cannot grow the map without bound (an idle key and a missing key behave alike).
const PRUNE_AT: usize = 10_000;

pub struct KeyedRateLimiter<K> {
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far the theoretical arrival time may run ahead of now (the burst).
    tolerance: Duration,
    /// Per key: the theoretical arrival time of its next request.
    state: Mutex<HashMap<K, Instant>>,
}

/// The request is refused; the client may retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, rounded up, at least 1.
    pub fn seconds(self) -> u64 {
        let s = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        s.max(1)
    }
}

impl<K: Hash + Eq> KeyedRateLimiter<K> {
    pub fn per_minute(limit: NonZeroU32) -> Self {
        let interval = PERIOD / limit.get();
        KeyedRateLimiter {
            interval,
            tolerance: interval * (limit.get() - 1),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key`, or says how long until one would pass.
    pub fn check(&self, key: K) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: K, now: Instant) -> Result<(), RetryAfter> {
        // A poisoned lock only means another request panicked mid-update;
        // the map is still a valid map, so keep limiting.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= PRUNE_AT {
            state.retain(|_, tat| *tat > now);
        }
        let tat = state.get(&key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_from > now {
            return Err(RetryAfter(allowed_from - now));
        }
        state.insert(key, tat + self.interval);
        Ok(())
    }
}

/// What a client is attempting; each has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attempt {
    Login,
    Register,
}

/// The limits on login and registration: per client IP and per email.
pub struct AttemptLimits {
    per_ip: KeyedRateLimiter<(Attempt, IpAddr)>,
    per_email: KeyedRateLimiter<(Attempt, String)>,
}

impl AttemptLimits {
    pub fn new(per_ip_per_minute: NonZeroU32, per_email_per_minute: NonZeroU32) -> Self {
        AttemptLimits {
            per_ip: KeyedRateLimiter::per_minute(per_ip_per_minute),
            per_email: KeyedRateLimiter::per_minute(per_email_per_minute),
        }
    }

    /// Counts one attempt from `ip` naming `email` (already normalised, so
    /// letter case cannot dodge the limit).
    pub fn check(&self, attempt: Attempt, ip: IpAddr, email: &str) -> Result<(), RetryAfter> {
        self.per_ip.check((attempt, client_bucket(ip)))?;
        self.per_email.check((attempt, email.to_owned()))
    }
}

/// The key one client is limited under. An IPv6 client usually holds a whole
/// /64, so it is limited as one; an IPv4-mapped address counts as the IPv4 one.
fn client_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(n: u32) -> KeyedRateLimiter<&'static str> {
        KeyedRateLimiter::per_minute(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn allows_a_burst_of_limit_then_refuses_with_the_wait() {
        let l = limiter(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("a", t0), Ok(()));
        }
        assert_eq!(
            l.check_at("a", t0),
            Err(RetryAfter(Duration::from_secs(20)))
        );
        // Another key has its own budget.
        assert_eq!(l.check_at("b", t0), Ok(()));
        // One interval later, exactly one more passes.
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(l.check_at("a", t1), Ok(()));
        assert!(l.check_at("a", t1).is_err());
        // A full minute idle restores the whole burst.
        let t2 = t1 + PERIOD;
        for _ in 0..3 {
            assert_eq!(l.check_at("a", t2), Ok(()));
        }
    }

    #[test]
    fn limit_of_one_allows_one_per_minute() {
        let l = limiter(1);
        let t0 = Instant::now();
        assert_eq!(l.check_at("a", t0), Ok(()));
        assert_eq!(l.check_at("a", t0), Err(RetryAfter(PERIOD)));
        assert_eq!(l.check_at("a", t0 + PERIOD), Ok(()));
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_bucket(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_bucket(ip("192.0.2.7")), ip("192.0.2.7"));
        let limits = AttemptLimits::new(NonZeroU32::MIN, NonZeroU32::MAX);
        assert!(limits.check(Attempt::Login, ip("2001:db8::1"), "a").is_ok());
        assert!(limits
            .check(Attempt::Login, ip("2001:db8::2"), "b")
            .is_err());
        assert!(limits
            .check(Attempt::Register, ip("2001:db8::2"), "b")
            .is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(20_001)).seconds(), 21);
        assert_eq!(RetryAfter(Duration::from_secs(20)).seconds(), 20);
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
    }
}
