//! A keyed rate limiter with bounded memory (GCRA, the algorithm `governor`
//! uses): per key, `burst` requests at once and then one per `interval`,
//! refilling smoothly.
//!
//! Memory stays bounded whatever the keys: at most `capacity` keys are held,
//! a key whose budget has refilled is forgotten (an idle key and a missing
//! key behave alike), a timer ([`KeyedLimiter::prune_every`]) forgets them by
//! age, and when every slot is taken by a key still limited, a new key is
//! refused rather than stored.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::Problem;

#[derive(Debug)]
pub struct KeyedLimiter<K> {
    quota: Quota,
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far a key's theoretical arrival time may run ahead of now.
    tolerance: Duration,
    capacity: usize,
    /// Per key: the theoretical arrival time of its next request.
    state: Mutex<HashMap<K, Instant>>,
}

/// A rate: `burst` at once, `per_minute` sustained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
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

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(quota: Quota, capacity: usize) -> Self {
        let interval = Duration::from_secs(60) / quota.per_minute.get();
        KeyedLimiter {
            quota,
            interval,
            tolerance: interval * (quota.burst.get() - 1),
            capacity: capacity.max(1),
            state: Mutex::new(HashMap::new()),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Counts one request for `key`, or says how long until one would pass.
    pub fn check(&self, key: &K) -> Result<Admitted, Limited> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<Admitted, Limited> {
        // A poisoned lock only means a panic mid-update elsewhere; the map
        // is still a valid map, so keep limiting.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let known = state.get(key).copied();
        if known.is_none() && state.len() >= self.capacity {
            state.retain(|_, tat| *tat > now);
            if state.len() >= self.capacity {
                metrics::counter!("rate_limiter_full_total").increment(1);
                return Err(Limited {
                    retry_after: self.interval,
                });
            }
        }
        let tat = known.unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_from > now {
            return Err(Limited {
                retry_after: allowed_from - now,
            });
        }
        let next = tat + self.interval;
        state.insert(key.clone(), next);
        let used = (next - now)
            .as_nanos()
            .div_ceil(self.interval.as_nanos().max(1));
        let remaining = u128::from(self.quota.burst.get()).saturating_sub(used) as u32;
        Ok(Admitted { remaining })
    }

    /// Forgets every key whose budget has refilled.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.retain(|_, tat| *tat > now);
    }

    /// How many keys are held now.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).len()
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
                    _ = tick.tick() => self.prune(),
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
    fn memory_is_bounded_by_capacity_and_refilled_keys_are_forgotten() {
        let l = KeyedLimiter::new(quota(60, 2), 100);
        let t0 = Instant::now();
        for i in 0..100 {
            l.check_at(&i, t0).unwrap();
        }
        assert_eq!(l.len(), 100);
        // Full of keys still limited: a new key is refused, not stored.
        assert!(l.check_at(&1000, t0).is_err());
        assert_eq!(l.len(), 100);
        // Once their budgets refilled, the old keys make room.
        assert!(l.check_at(&1001, t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(l.len(), 1);
    }
}
