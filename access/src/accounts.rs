//! What each API knows of accounts beyond a token's claims: whether the
//! account is still active and which role it has now. An access token lives
//! up to 15 minutes; without this, a deactivated user or a demoted admin
//! would keep their access at the APIs for that long.
//!
//! The directory folds the user streams of the event store (the source of
//! truth every API already reads) into `user id → (active, role)`: all of
//! them once before the service answers its first request, then the new
//! ones every [`POLL_INTERVAL`]. So a deactivation or role change that auth
//! has answered reaches every API within about that interval (well under
//! the 2 seconds promised), and no request ever calls auth.
//!
//! Each poll re-reads the user events recorded in the last [`OVERLAP`], not
//! just those after the last position seen: positions are taken when a
//! transaction inserts, not when it commits, so a later position can become
//! visible first. Applying an event is idempotent (by stream version), and
//! one user's events commit in version order (auth writes them under the
//! user's row lock).
//!
//! Memory: one small entry per account that exists, nothing per request.
//! A failed or slow poll keeps the last state, logs, and counts
//! `account_directory_poll_errors_total`; `account_directory_age_seconds`
//! says how long ago the last poll succeeded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::{Event, EventEnvelope, Role, UserEvent};
use sqlx::PgPool;
use uuid::Uuid;

/// How often the directory reads new user events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How far back each poll looks (see the module docs). A user change whose
/// transaction commits later than this after it started would be missed
/// until the service restarts; auth's account transactions last
/// milliseconds.
pub const OVERLAP: Duration = Duration::from_secs(30);

/// A poll that takes longer is abandoned (and counted); the next one
/// re-reads the same window.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Account {
    version: u64,
    active: bool,
    role: Role,
}

/// What the directory says of a token's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Active, with this role now (it may differ from the token's).
    Active(Role),
    /// Deactivated: every token of the account is refused.
    Deactivated,
    /// No user event seen yet (registered moments ago): the token's claims stand.
    Unknown,
}

#[derive(Default)]
pub struct AccountDirectory {
    accounts: RwLock<HashMap<Uuid, Account>>,
}

impl AccountDirectory {
    /// Loads every user stream, then follows new events for as long as the
    /// directory is in use (the follower holds it weakly and stops once the
    /// last service holding it is gone).
    pub async fn follow(pool: PgPool) -> Result<Arc<Self>, sqlx::Error> {
        let dir = Arc::new(AccountDirectory::default());
        let mut since = dir.poll(&pool, None).await?;
        let weak = Arc::downgrade(&dir);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_success = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                let polled = tokio::time::timeout(POLL_TIMEOUT, d.poll(&pool, Some(since))).await;
                match polled {
                    Ok(Ok(now)) => {
                        since = now;
                        last_success = tokio::time::Instant::now();
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("account_directory_poll_errors_total").increment(1);
                        tracing::warn!(error = %e, "reading account changes failed; keeping the last view");
                    }
                    Err(_) => {
                        metrics::counter!("account_directory_poll_errors_total").increment(1);
                        tracing::warn!("reading account changes took over {POLL_TIMEOUT:?}; keeping the last view");
                    }
                }
                metrics::gauge!("account_directory_age_seconds")
                    .set(last_success.elapsed().as_secs_f64());
            }
        });
        Ok(dir)
    }

    /// Applies the user events recorded since `since` (minus the overlap;
    /// all of them when `None`); returns the database's clock at the read.
    async fn poll(
        &self,
        pool: &PgPool,
        since: Option<DateTime<Utc>>,
    ) -> Result<DateTime<Utc>, sqlx::Error> {
        let from = since
            .map(|s| s - chrono::Duration::from_std(OVERLAP).unwrap_or_default())
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let mut tx = pool.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let envelopes = events::store::load_user_events_since(&mut *tx, from).await?;
        tx.commit().await?;
        self.apply(&envelopes);
        Ok(now)
    }

    fn apply(&self, envelopes: &[EventEnvelope]) {
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        for env in envelopes {
            let Ok(Event::User(event)) = env.decode() else {
                continue;
            };
            let known = accounts.get(&env.stream_id).copied();
            if known.is_some_and(|a| a.version >= env.version) {
                continue;
            }
            let next = match (known, event) {
                (_, UserEvent::Registered(r)) => Account {
                    version: env.version,
                    active: true,
                    role: r.role,
                },
                (Some(a), UserEvent::RoleChanged(r)) => Account {
                    version: env.version,
                    role: r.to,
                    ..a
                },
                (Some(a), UserEvent::Deactivated(_)) => Account {
                    version: env.version,
                    active: false,
                    ..a
                },
                (Some(a), UserEvent::Reactivated(_)) => Account {
                    version: env.version,
                    active: true,
                    ..a
                },
                // A change to an account whose registration this process
                // has not seen cannot be folded; the next poll re-reads it.
                (None, _) => continue,
            };
            accounts.insert(env.stream_id, next);
        }
    }

    /// `verifier`, checking every caller against a directory that follows
    /// `pool`'s event store: what each API does before it serves.
    pub async fn attach(
        verifier: crate::TokenVerifier,
        pool: &PgPool,
    ) -> Result<crate::TokenVerifier, sqlx::Error> {
        Ok(verifier.with_accounts(Self::follow(pool.clone()).await?))
    }

    /// The account's standing now.
    pub fn standing(&self, user: Uuid) -> Standing {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        match accounts.get(&user) {
            None => Standing::Unknown,
            Some(a) if !a.active => Standing::Deactivated,
            Some(a) => Standing::Active(a.role),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventMeta, UserDeactivated, UserReactivated, UserRegistered, UserRoleChanged};

    fn env(stream: Uuid, version: u64, event: UserEvent) -> EventEnvelope {
        EventEnvelope::new(
            stream,
            version,
            &Event::User(event),
            EventMeta {
                actor: stream,
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                occurred_at: Utc::now(),
            },
        )
    }

    #[test]
    fn folds_role_changes_deactivation_and_reactivation_once_each() {
        let dir = AccountDirectory::default();
        let id = Uuid::now_v7();
        let registered = env(
            id,
            1,
            UserEvent::Registered(UserRegistered {
                email: "a@example.test".into(),
                display_name: "A".into(),
                role: Role::Admin,
            }),
        );
        let demoted = env(
            id,
            2,
            UserEvent::RoleChanged(UserRoleChanged {
                from: Role::Admin,
                to: Role::User,
            }),
        );
        let deactivated = env(id, 3, UserEvent::Deactivated(UserDeactivated {}));
        assert_eq!(dir.standing(id), Standing::Unknown);
        dir.apply(std::slice::from_ref(&registered));
        assert_eq!(dir.standing(id), Standing::Active(Role::Admin));
        dir.apply(&[registered.clone(), demoted.clone()]);
        assert_eq!(dir.standing(id), Standing::Active(Role::User));
        dir.apply(&[demoted, deactivated.clone()]);
        assert_eq!(dir.standing(id), Standing::Deactivated);
        // Re-reading the overlap changes nothing.
        dir.apply(&[registered, deactivated]);
        assert_eq!(dir.standing(id), Standing::Deactivated);
        dir.apply(&[env(id, 4, UserEvent::Reactivated(UserReactivated {}))]);
        assert_eq!(dir.standing(id), Standing::Active(Role::User));
    }
}
