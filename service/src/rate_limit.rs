//! A keyed rate limiter with bounded memory (GCRA, the algorithm `governor`
//! uses): per key, `burst` requests at once and then `per_minute` spread
//! out, refilling smoothly. Every limiter in taskstream is one of these:
//! command-api's writes per user, auth's login and registration attempts
//! per address and per email.
//!
//! # Bounded memory
//!
//! Keys come from clients, so the state is bounded by count and age:
//! a key is held only while its theoretical arrival time (TAT) lies in the
//! future (a key whose TAT has passed behaves exactly like an absent one),
//! expired keys are removed on every check and by a timer
//! ([`KeyedLimiter::prune_every`]), and at most `capacity` keys are held: a
//! new key arriving at a full limiter evicts the key closest to expiry, the
//! one with the least budget debt left, so a key under active attack
//! (far-future TAT) is the last to go. Callers keep keys fixed-size (an id,
//! an address, a hash), never client strings.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::Problem;

/// A rate: `burst` at once, `per_minute` sustained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Quota {
    /// `n` a minute, all of them at once if the client likes.
    pub fn per_minute(n: NonZeroU32) -> Self {
        Quota {
            per_minute: n,
            burst: n,
        }
    }
}

/// A request let through, with what is left of its key's burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub remaining: u32,
}

/// A request refused; the client may retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, rounded up, at least 1.
    pub fn seconds(self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// Per key: the theoretical arrival time of its next request, and the same
/// pairs ordered by that time (oldest first), for pruning and eviction.
#[derive(Debug)]
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

#[derive(Debug)]
pub struct KeyedLimiter<K> {
    quota: Quota,
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far a key's TAT may run ahead of now (the burst).
    tolerance: Duration,
    capacity: usize,
    state: Mutex<State<K>>,
}

impl<K: Hash + Ord + Clone> KeyedLimiter<K> {
    pub fn new(quota: Quota, capacity: usize) -> Self {
        let interval = Duration::from_secs(60) / quota.per_minute.get();
        KeyedLimiter {
            quota,
            interval,
            tolerance: interval * (quota.burst.get() - 1),
            capacity: capacity.max(1),
            state: Mutex::new(State {
                tat: HashMap::new(),
                by_tat: BTreeSet::new(),
            }),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A poisoned lock only means a panic elsewhere; both maps are
        // updated together before anything that can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request for `key`, or says how long until one would pass.
    pub fn check(&self, key: &K) -> Result<Admitted, Limited> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &K, now: Instant) -> Result<Admitted, Limited> {
        let mut state = self.state();
        state.remove_expired(now);
        let held = state.tat.get(key).copied();
        let tat = held.unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_from > now {
            return Err(Limited {
                retry_after: allowed_from - now,
            });
        }
        match held {
            Some(old) => {
                state.by_tat.remove(&(old, key.clone()));
            }
            None if state.tat.len() >= self.capacity => {
                state.evict_oldest();
                metrics::counter!("rate_limiter_evictions_total").increment(1);
            }
            None => {}
        }
        let next = tat + self.interval;
        state.by_tat.insert((next, key.clone()));
        state.tat.insert(key.clone(), next);
        let used = (next - now)
            .as_nanos()
            .div_ceil(self.interval.as_nanos().max(1));
        let remaining = u128::from(self.quota.burst.get()).saturating_sub(used) as u32;
        Ok(Admitted { remaining })
    }

    /// Forgets every key whose budget is whole again; returns how many are held.
    pub fn prune(&self) -> usize {
        self.prune_at(Instant::now())
    }

    pub fn prune_at(&self, now: Instant) -> usize {
        let mut state = self.state();
        state.remove_expired(now);
        state.tat.len()
    }

    /// How many keys are held now.
    pub fn len(&self) -> usize {
        self.state().tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Prunes every `period` until `stop` is cancelled.
    pub fn prune_every(self: Arc<Self>, period: Duration, stop: CancellationToken)
    where
        K: Send + 'static,
    {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => { self.prune(); }
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

/// `RateLimit-Limit` / `RateLimit-Remaining` headers for an admitted request.
pub fn headers(quota: Quota, admitted: Admitted) -> [(HeaderName, HeaderValue); 2] {
    [
        (LIMIT.clone(), HeaderValue::from(quota.burst.get())),
        (REMAINING.clone(), HeaderValue::from(admitted.remaining)),
    ]
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The 429 problem for a refused request: `Retry-After`, the limit and
/// the policy in headers, and `what` in the detail.
pub fn too_many(quota: Quota, limited: Limited, what: &str) -> Problem {
    let seconds = limited.seconds();
    Problem::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!(
            "{what} are limited to {} per minute (bursts of {}); retry after {seconds} s",
            quota.per_minute, quota.burst
        ),
    )
    .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds))
    .with_header(LIMIT.clone(), HeaderValue::from(quota.burst.get()))
    .with_header(REMAINING.clone(), HeaderValue::from(0u32))
    .with_header(RESET.clone(), HeaderValue::from(seconds))
    .with_header(
        POLICY.clone(),
        HeaderValue::from_str(&format!("{};w=60", quota.per_minute))
            .unwrap_or(HeaderValue::from_static("0")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_minute: u32, burst: u32) -> Quota {
        Quota {
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn a_burst_passes_then_the_steady_rate() {
        let l = KeyedLimiter::new(quota(60, 3), 10);
        let t0 = Instant::now();
        let remaining: Vec<u32> = (0..3)
            .map(|_| l.check_at(&"a", t0).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = l.check_at(&"a", t0).unwrap_err();
        assert_eq!(refused.seconds(), 1);
        assert!(l.check_at(&"b", t0).is_ok(), "keys are independent");
        assert!(l.check_at(&"a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_quota_without_a_separate_burst_allows_its_whole_minute_at_once() {
        let l = KeyedLimiter::new(Quota::per_minute(NonZeroU32::new(3).unwrap()), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(&"a", t0).is_ok());
        }
        assert_eq!(
            l.check_at(&"a", t0).unwrap_err().retry_after,
            Duration::from_secs(20)
        );
        let t1 = t0 + Duration::from_secs(20);
        assert!(l.check_at(&"a", t1).is_ok());
        assert!(l.check_at(&"a", t1).is_err());
    }

    #[test]
    fn a_full_limiter_evicts_the_key_closest_to_expiry_never_the_one_under_attack() {
        let l = KeyedLimiter::new(quota(2, 2), 3);
        let t0 = Instant::now();
        // Key 0's budget is spent (TAT a minute ahead).
        assert!(l.check_at(&0, t0).is_ok());
        assert!(l.check_at(&0, t0).is_ok());
        assert!(l.check_at(&0, t0).is_err());
        for (i, key) in (1..1000).enumerate() {
            let t = t0 + Duration::from_millis(i as u64);
            assert!(l.check_at(&key, t).is_ok());
            assert!(l.len() <= 3);
        }
        assert!(l.check_at(&0, t0 + Duration::from_secs(1)).is_err());
        // Once every budget is whole again nothing is held.
        assert_eq!(l.prune_at(t0 + Duration::from_secs(61)), 0);
        assert!(l.is_empty());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let s = |ms| {
            Limited {
                retry_after: Duration::from_millis(ms),
            }
            .seconds()
        };
        assert_eq!((s(1), s(20_001), s(20_000), s(0)), (1, 21, 20, 1));
    }
}
