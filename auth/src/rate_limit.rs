//! A small in-memory keyed rate limiter (GCRA, the algorithm `governor` uses):
//! `limit` requests per minute per key, as a burst or spread out, refilling
//! smoothly. State is per auth process; it protects the argon2 work and
//! slows password guessing, it is not a quota system.
//!
//! # Bounded memory
//!
//! Every key comes from a client, so the state is bounded twice over:
//!
//! - by **size per key**: keys are fixed-size values (an IP bucket, or a
//!   salted 128-bit hash of a normalised, length-checked email, see
//!   [`EmailKey`]), never client strings;
//! - by **count and age**: a key is held only while its theoretical arrival
//!   time (TAT) lies in the future (a key whose TAT has passed behaves
//!   exactly like an absent one), expired keys are removed on every check
//!   and by a timer ([`AttemptLimits::run_pruning`]), and at most
//!   `capacity` keys are held: a new key arriving at a full limiter evicts
//!   the key closest to expiry, the one that has the least budget
//!   debt left, so a key under active attack (far-future TAT) is the last to go.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const PERIOD: Duration = Duration::from_secs(60);

/// How often the timer removes keys whose budget is whole again.
pub const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Per key: the theoretical arrival time of its next request, and the same
/// pairs ordered by that time (oldest first), for pruning and eviction.
struct State<K> {
    tat: HashMap<K, Instant>,
    by_tat: BTreeSet<(Instant, K)>,
}

impl<K: Hash + Ord + Clone> State<K> {
    fn remove_expired(&mut self, now: Instant) {
        while let Some((tat, _)) = self.by_tat.first() {
            if *tat > now {
                break;
            }
            if let Some((_, key)) = self.by_tat.pop_first() {
                self.tat.remove(&key);
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.by_tat.pop_first() {
            self.tat.remove(&key);
        }
    }
}

pub struct KeyedRateLimiter<K> {
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far the theoretical arrival time may run ahead of now (the burst).
    tolerance: Duration,
    /// Most keys held at once.
    capacity: usize,
    state: Mutex<State<K>>,
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

impl<K: Hash + Ord + Clone> KeyedRateLimiter<K> {
    pub fn per_minute(limit: NonZeroU32, capacity: NonZeroUsize) -> Self {
        let interval = PERIOD / limit.get();
        KeyedRateLimiter {
            interval,
            tolerance: interval * (limit.get() - 1),
            capacity: capacity.get(),
            state: Mutex::new(State {
                tat: HashMap::new(),
                by_tat: BTreeSet::new(),
            }),
        }
    }

    /// Counts one request for `key`, or says how long until one would pass.
    pub fn check(&self, key: K) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A poisoned lock only means another request panicked mid-update;
        // the maps are updated together before any call that can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_at(&self, key: K, now: Instant) -> Result<(), RetryAfter> {
        let mut state = self.state();
        state.remove_expired(now);
        let held = state.tat.get(&key).copied();
        let tat = held.unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_from > now {
            return Err(RetryAfter(allowed_from - now));
        }
        match held {
            Some(old) => {
                state.by_tat.remove(&(old, key.clone()));
            }
            None if state.tat.len() >= self.capacity => {
                state.evict_oldest();
                metrics::counter!("auth_rate_limit_evictions_total").increment(1);
            }
            None => {}
        }
        let next = tat + self.interval;
        state.by_tat.insert((next, key.clone()));
        state.tat.insert(key, next);
        Ok(())
    }

    /// Removes the keys whose budget is whole again; returns how many are held.
    pub fn prune(&self) -> usize {
        self.prune_at(Instant::now())
    }

    fn prune_at(&self, now: Instant) -> usize {
        let mut state = self.state();
        state.remove_expired(now);
        state.tat.len()
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.state().tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a client is attempting; each has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attempt {
    Login,
    Register,
}

/// The per-email key: a 128-bit SHA-256 of the normalised email, salted
/// with a secret drawn at start so that nobody can aim collisions at
/// another account's budget. Fixed size whatever the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailKey([u8; 16]);

/// The limits on login and registration: per client IP and per email.
pub struct AttemptLimits {
    per_ip: KeyedRateLimiter<(Attempt, IpAddr)>,
    per_email: KeyedRateLimiter<(Attempt, EmailKey)>,
    salt: [u8; 32],
}

impl AttemptLimits {
    /// `capacity` bounds the keys each of the two limiters holds.
    pub fn new(
        per_ip_per_minute: NonZeroU32,
        per_email_per_minute: NonZeroU32,
        capacity: NonZeroUsize,
    ) -> Self {
        use rand::RngCore;
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        AttemptLimits {
            per_ip: KeyedRateLimiter::per_minute(per_ip_per_minute, capacity),
            per_email: KeyedRateLimiter::per_minute(per_email_per_minute, capacity),
            salt,
        }
    }

    /// Counts one attempt from `ip`.
    pub fn check_ip(&self, attempt: Attempt, ip: IpAddr) -> Result<(), RetryAfter> {
        self.per_ip.check((attempt, client_bucket(ip)))
    }

    /// Counts one attempt naming `email`. The caller passes an email already
    /// normalised (so letter case and compatibility forms cannot dodge the
    /// limit) and within the length an address may have.
    pub fn check_email(&self, attempt: Attempt, email: &str) -> Result<(), RetryAfter> {
        self.per_email.check((attempt, self.email_key(email)))
    }

    fn email_key(&self, email: &str) -> EmailKey {
        let digest = Sha256::new()
            .chain_update(self.salt)
            .chain_update(email.as_bytes())
            .finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        EmailKey(key)
    }

    /// Removes expired keys and publishes how many each limiter holds
    /// (`auth_rate_limit_keys{limiter="ip"|"email"}`).
    pub fn prune(&self) {
        let ip = self.per_ip.prune();
        let email = self.per_email.prune();
        metrics::gauge!("auth_rate_limit_keys", "limiter" => "ip").set(ip as f64);
        metrics::gauge!("auth_rate_limit_keys", "limiter" => "email").set(email as f64);
    }

    /// Prunes every [`PRUNE_EVERY`] until `stop` is cancelled or the limits
    /// are dropped.
    pub async fn run_pruning(limits: Weak<AttemptLimits>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(limits) = limits.upgrade() else {
                return;
            };
            limits.prune();
        }
    }
}

/// Spawns [`AttemptLimits::run_pruning`] for `limits`.
pub fn spawn_pruning(limits: &Arc<AttemptLimits>, stop: CancellationToken) {
    tokio::spawn(AttemptLimits::run_pruning(Arc::downgrade(limits), stop));
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
        KeyedRateLimiter::per_minute(NonZeroU32::new(n).unwrap(), NonZeroUsize::MAX)
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
        let limits = AttemptLimits::new(NonZeroU32::MIN, NonZeroU32::MAX, NonZeroUsize::MAX);
        assert!(limits.check_ip(Attempt::Login, ip("2001:db8::1")).is_ok());
        assert!(limits.check_ip(Attempt::Login, ip("2001:db8::2")).is_err());
        assert!(limits
            .check_ip(Attempt::Register, ip("2001:db8::2"))
            .is_ok());
    }

    #[test]
    fn expired_keys_are_pruned_and_a_full_limiter_evicts_the_key_closest_to_expiry() {
        let l: KeyedRateLimiter<u32> = KeyedRateLimiter::per_minute(
            NonZeroU32::new(2).unwrap(),
            NonZeroUsize::new(3).unwrap(),
        );
        let t0 = Instant::now();
        // Key 0 is under attack: its budget is spent (TAT one minute ahead).
        assert!(l.check_at(0, t0).is_ok());
        assert!(l.check_at(0, t0).is_ok());
        assert!(l.check_at(0, t0).is_err());
        // A spray of new keys never grows the limiter beyond its capacity,
        // and never evicts the exhausted key.
        for (i, key) in (1..1000).enumerate() {
            let t = t0 + Duration::from_millis(i as u64);
            assert!(l.check_at(key, t).is_ok());
            assert!(l.len() <= 3);
        }
        assert!(l.check_at(0, t0 + Duration::from_secs(1)).is_err());
        // Once every budget is whole again nothing is held.
        assert_eq!(l.prune_at(t0 + Duration::from_secs(61)), 0);
        assert!(l.is_empty());
    }

    #[test]
    fn email_keys_are_fixed_size_and_salted_per_process() {
        let a = AttemptLimits::new(NonZeroU32::MAX, NonZeroU32::MAX, NonZeroUsize::MAX);
        let b = AttemptLimits::new(NonZeroU32::MAX, NonZeroU32::MAX, NonZeroUsize::MAX);
        let long = "x".repeat(65_536);
        assert_eq!(a.email_key(&long), a.email_key(&long));
        assert_ne!(
            a.email_key("ada@example.test"),
            a.email_key("bob@example.test")
        );
        assert_ne!(
            a.email_key("ada@example.test"),
            b.email_key("ada@example.test")
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(20_001)).seconds(), 21);
        assert_eq!(RetryAfter(Duration::from_secs(20)).seconds(), 20);
        assert_eq!(RetryAfter(Duration::ZERO).seconds(), 1);
    }
}
