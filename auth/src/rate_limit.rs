//! Login and registration limits: per client address and per email, each
//! a [`service::rate_limit::KeyedLimiter`] (GCRA, bounded memory: see that
//! module). State is per auth process; it protects the argon2 work and
//! slows password guessing, it is not a quota system.
//!
//! Keys are fixed-size values whatever the client sent: an address bucket
//! ([`client_bucket`]), or a salted 128-bit hash of a normalised,
//! length-checked email ([`EmailKey`]).

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Weak};
use std::time::Duration;

use service::rate_limit::{KeyedLimiter, Limited, Quota};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// How often the timer removes keys whose budget is whole again.
pub const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The request is refused; `seconds()` is its `Retry-After`.
pub type RetryAfter = Limited;

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
    per_ip: KeyedLimiter<(Attempt, IpAddr)>,
    per_email: KeyedLimiter<(Attempt, EmailKey)>,
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
            per_ip: KeyedLimiter::new(Quota::per_minute(per_ip_per_minute), capacity.get()),
            per_email: KeyedLimiter::new(Quota::per_minute(per_email_per_minute), capacity.get()),
            salt,
        }
    }

    /// Counts one attempt from `ip`.
    pub fn check_ip(&self, attempt: Attempt, ip: IpAddr) -> Result<(), RetryAfter> {
        self.per_ip.check(&(attempt, client_bucket(ip))).map(drop)
    }

    /// Counts one attempt naming `email`. The caller passes an email already
    /// normalised (so letter case and compatibility forms cannot dodge the
    /// limit) and within the length an address may have.
    pub fn check_email(&self, attempt: Attempt, email: &str) -> Result<(), RetryAfter> {
        self.per_email
            .check(&(attempt, self.email_key(email)))
            .map(drop)
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
}
