//! Outgoing channels: the delivery rows every notification gets (one per
//! channel and endpoint), and the dispatcher that sends them.
//!
//! - **Enqueued with the notification.** [`enqueue`] runs in the
//!   transaction that inserts a new notification, so a notification that
//!   exists has its deliveries, and a cause (whose notification id is
//!   deterministic) can never make a second one.
//! - **Claimed with a lease.** [`claim`] moves due rows to `sending` and
//!   pushes `next_attempt_at` to the end of a lease. A notifier killed
//!   mid-send leaves the row to be claimed again when the lease ends: the
//!   resend carries the same `Message-ID` or `webhook-id`, which is how a
//!   receiver recognises it. At most `per_target` rows of one endpoint (or
//!   of the SMTP server) are in flight, so a slow or dead endpoint holds
//!   only its own slots.
//! - **Recorded.** [`record`] writes the outcome only if the row is still
//!   the attempt this sender claimed. A failure is retried with exponential
//!   backoff and jitter until the channel's retry window has passed since
//!   the first attempt; then the row is `failed`, and a webhook endpoint is
//!   disabled and its owner told in the inbox. Every outcome is a metric
//!   (`notifier_deliveries_total{channel, outcome}`) and a failure is a
//!   WARN line with the reason.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::schedule::derived_id;
use crate::store::NewNotification;

/// A way a notification leaves the notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

/// The kinds a webhook may subscribe to. A `webhook_disabled` notice is
/// not among them: it is about the webhooks themselves.
pub const WEBHOOK_KINDS: [&str; 5] = [
    "reminder",
    "overdue",
    "assigned",
    "project_member_added",
    "project_role_changed",
];

/// When a delivery's next attempt is due, as the API shows it: only while
/// there will be one (`pending`, or `sending` and so retried if it fails).
pub fn next_attempt(state: &str, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    matches!(state, "pending" | "sending").then_some(at)
}

/// The e-mail delivery's id for a notification.
pub fn email_delivery_id(notification: Uuid) -> Uuid {
    derived_id(&format!("delivery/email/{notification}"))
}

/// The webhook delivery's id (its `webhook-id`) for a notification and an
/// endpoint.
pub fn webhook_delivery_id(notification: Uuid, endpoint: Uuid) -> Uuid {
    derived_id(&format!("delivery/webhook/{notification}/{endpoint}"))
}

/// Writes the deliveries of the notifications `new`, just inserted: each
/// one's e-mail (`skipped` when its user opted out of its kind), and one
/// per enabled webhook endpoint subscribed to its kind: its user's own, and
/// their project's while whoever created that endpoint still manages the
/// project (someone demoted or gone no longer hears its members' news).
/// Set-based: a scheduler round of hundreds costs three statements.
pub async fn enqueue(conn: &mut PgConnection, new: &[&NewNotification]) -> Result<(), sqlx::Error> {
    if new.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = new.iter().map(|n| n.id).collect();
    let users: Vec<Uuid> = new.iter().map(|n| n.user_id).collect();
    let kinds: Vec<&str> = new.iter().map(|n| n.kind).collect();
    let email_ids: Vec<Uuid> = ids.iter().map(|id| email_delivery_id(*id)).collect();
    sqlx::query(
        "INSERT INTO notifier_deliveries (id, notification_id, channel, state, last_error)
         SELECT x.did, x.nid, 'email',
                CASE WHEN o.opted THEN 'skipped' ELSE 'pending' END,
                CASE WHEN o.opted THEN 'opted out of this kind of e-mail' END
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) AS x(did, nid, uid, kind)
           CROSS JOIN LATERAL (
               SELECT EXISTS (SELECT 1 FROM notifier_settings s
                               WHERE s.user_id = x.uid AND x.kind = ANY(s.email_opt_out)) AS opted) o
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&email_ids)
    .bind(&ids)
    .bind(&users)
    .bind(&kinds)
    .execute(&mut *conn)
    .await?;

    let hooked: Vec<&&NewNotification> = new
        .iter()
        .filter(|n| WEBHOOK_KINDS.contains(&n.kind))
        .collect();
    if hooked.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT x.nid, w.id
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[]) AS x(nid, uid, kind, pid)
           JOIN notifier_webhooks w
             ON w.enabled AND x.kind = ANY(w.events)
            AND ((w.project_id IS NULL AND w.owner_id = x.uid)
                 OR (w.project_id IS NOT NULL AND w.project_id = x.pid
                     AND EXISTS (SELECT 1 FROM project_members m
                                  WHERE m.project_id = w.project_id AND m.user_id = w.owner_id
                                    AND m.role IN ('owner', 'admin'))))",
    )
    .bind(hooked.iter().map(|n| n.id).collect::<Vec<_>>())
    .bind(hooked.iter().map(|n| n.user_id).collect::<Vec<_>>())
    .bind(hooked.iter().map(|n| n.kind).collect::<Vec<_>>())
    .bind(hooked.iter().map(|n| n.project_id).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    if pairs.is_empty() {
        return Ok(());
    }
    let delivery_ids: Vec<Uuid> = pairs
        .iter()
        .map(|(n, w)| webhook_delivery_id(*n, *w))
        .collect();
    let (notifications, endpoints): (Vec<Uuid>, Vec<Uuid>) = pairs.into_iter().unzip();
    sqlx::query(
        "INSERT INTO notifier_deliveries (id, notification_id, channel, webhook_id)
         SELECT d, n, 'webhook', w FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS x(d, n, w)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&delivery_ids)
    .bind(&notifications)
    .bind(&endpoints)
    .execute(conn)
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ claims

/// The notification a delivery carries.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub task_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub late: bool,
    pub created_at: DateTime<Utc>,
}

/// Where a delivery goes, as known when it was claimed.
#[derive(Debug, Clone)]
pub enum Target {
    Email {
        address: String,
        display_name: String,
    },
    Webhook {
        endpoint: Uuid,
        url: String,
        secret: String,
    },
}

/// One claimed delivery: this sender's attempt `attempt` of row `id`.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub attempt: i32,
    pub notification: Notification,
    pub target: Target,
}

/// A claimed row that must not be sent now, and why.
#[derive(Debug, Clone)]
pub struct Void {
    pub id: Uuid,
    pub attempt: i32,
    pub reason: &'static str,
    /// Not yet (the row is retried later, like a failed attempt) rather
    /// than never (`skipped`).
    pub later: bool,
}

/// Claims up to `limit` due deliveries of `channel`, at most `per_target`
/// in flight per endpoint (e-mail counts as one target), leased for
/// `lease`. Rows whose target no longer wants them (a deactivated user, an
/// opt-out made since, a disabled endpoint) or cannot take them yet (a
/// user whose address the notifier has not read) come back as [`Void`]s.
pub async fn claim(
    pool: &PgPool,
    channel: Channel,
    limit: i64,
    per_target: i64,
    lease: Duration,
) -> Result<(Vec<Job>, Vec<Void>), sqlx::Error> {
    // Endpoints already at their cap are left out before the candidates
    // are cut to a window, so one endpoint's backlog cannot fill it; an
    // endpoint with a delivery waiting for its retry (it failed last) gets
    // one slot, so dead endpoints hold few. Both are read from the rows not
    // yet due (in flight, or waiting), one range of the index. Candidates
    // are locked `SKIP LOCKED`, so two notifiers claiming at once take
    // different rows.
    let claimed: Vec<(Uuid, i32)> = sqlx::query_as(
        "WITH waiting AS (
             SELECT webhook_id,
                    count(*) FILTER (WHERE state = 'sending') AS n,
                    bool_or(state = 'pending' AND attempts > 0) AS failed
               FROM notifier_deliveries
              WHERE channel = $1 AND state IN ('pending', 'sending') AND next_attempt_at > now()
              GROUP BY webhook_id),
         failing AS (
             SELECT webhook_id FROM waiting WHERE failed AND webhook_id IS NOT NULL),
         caps AS (
             SELECT webhook_id, CASE WHEN failed AND webhook_id IS NOT NULL THEN 1 ELSE $3 END - n AS room
               FROM waiting),
         due AS (
             SELECT d.id, d.webhook_id, d.next_attempt_at FROM notifier_deliveries d
              WHERE d.channel = $1 AND d.state IN ('pending', 'sending')
                AND d.next_attempt_at <= now()
                AND NOT EXISTS (SELECT 1 FROM caps c
                                 WHERE c.webhook_id IS NOT DISTINCT FROM d.webhook_id
                                   AND c.room <= 0)
              ORDER BY d.next_attempt_at LIMIT $2 * 8
              FOR UPDATE OF d SKIP LOCKED),
         ranked AS (
             SELECT id, webhook_id, next_attempt_at,
                    row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS rn
               FROM due),
         picked AS (
             SELECT r.id FROM ranked r
               LEFT JOIN caps c ON c.webhook_id IS NOT DISTINCT FROM r.webhook_id
               LEFT JOIN failing x ON x.webhook_id = r.webhook_id
              WHERE r.rn <= COALESCE(c.room, CASE WHEN x.webhook_id IS NULL THEN $3 ELSE 1 END)
              ORDER BY r.next_attempt_at LIMIT $2)
         UPDATE notifier_deliveries d
            SET state = 'sending', attempts = d.attempts + 1,
                next_attempt_at = now() + make_interval(secs => $4),
                first_attempt_at = COALESCE(d.first_attempt_at, now()),
                last_attempt_at = now()
           FROM picked
          WHERE d.id = picked.id
         RETURNING d.id, d.attempts",
    )
    .bind(channel.as_str())
    .bind(limit)
    .bind(per_target)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    if claimed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids: Vec<Uuid> = claimed.iter().map(|(id, _)| *id).collect();
    let rows = sqlx::query(
        "SELECT d.id, n.id AS notification_id, n.user_id, n.kind, n.task_id, n.project_id,
                n.title, n.body, n.data, n.late, n.created_at,
                u.email, u.display_name, COALESCE(u.active, FALSE) AS active,
                u.active AS active_user,
                EXISTS (SELECT 1 FROM notifier_settings s
                         WHERE s.user_id = n.user_id AND n.kind = ANY(s.email_opt_out)) AS opted_out,
                w.id AS endpoint, w.url, w.secret, COALESCE(w.enabled, FALSE) AS enabled,
                COALESCE(n.kind = ANY(w.events), FALSE) AS subscribed,
                (w.project_id IS NULL OR EXISTS (
                     SELECT 1 FROM project_members m
                      WHERE m.project_id = w.project_id AND m.user_id = w.owner_id
                        AND m.role IN ('owner', 'admin'))) AS managed
           FROM notifier_deliveries d
           JOIN notifier_notifications n ON n.id = d.notification_id
           LEFT JOIN notifier_users u ON u.user_id = n.user_id
           LEFT JOIN notifier_webhooks w ON w.id = d.webhook_id
          WHERE d.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    let mut voids = Vec::new();
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let attempt = claimed
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, a)| *a)
            .unwrap_or_default();
        let void = |reason| Void {
            id,
            attempt,
            reason,
            later: false,
        };
        let target = match channel {
            Channel::Email => {
                let address: Option<String> = row.try_get("email")?;
                if address.is_none() {
                    // The user's events are on another topic than the
                    // cause's, and may not have been read yet.
                    voids.push(Void {
                        later: true,
                        ..void("the user's address is not known yet")
                    });
                    continue;
                }
                if !row.try_get::<bool, _>("active")? {
                    voids.push(void("the user is not active"));
                    continue;
                }
                if row.try_get::<bool, _>("opted_out")? {
                    voids.push(void("opted out of this kind of e-mail"));
                    continue;
                }
                let Some(address) = address.filter(|a| !a.is_empty()) else {
                    voids.push(void("the user has no e-mail address"));
                    continue;
                };
                Target::Email {
                    address,
                    display_name: row
                        .try_get::<Option<String>, _>("display_name")?
                        .unwrap_or_default(),
                }
            }
            Channel::Webhook => {
                let reason = if !row.try_get::<bool, _>("enabled")? {
                    Some("the endpoint is disabled")
                } else if !row.try_get::<bool, _>("subscribed")? {
                    Some("the endpoint no longer subscribes to this kind")
                } else if !row.try_get::<Option<bool>, _>("managed")?.unwrap_or(false) {
                    Some("the endpoint's owner no longer manages its project")
                } else if matches!(row.try_get::<Option<bool>, _>("active_user")?, Some(false)) {
                    Some("the user is not active")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    voids.push(void(reason));
                    continue;
                }
                Target::Webhook {
                    endpoint: row.try_get("endpoint")?,
                    url: row.try_get("url")?,
                    secret: row.try_get("secret")?,
                }
            }
        };
        jobs.push(Job {
            id,
            attempt,
            notification: Notification {
                id: row.try_get("notification_id")?,
                user_id: row.try_get("user_id")?,
                kind: row.try_get("kind")?,
                task_id: row.try_get("task_id")?,
                project_id: row.try_get("project_id")?,
                title: row.try_get("title")?,
                body: row.try_get("body")?,
                data: row.try_get("data")?,
                late: row.try_get("late")?,
                created_at: row.try_get("created_at")?,
            },
            target,
        });
    }
    Ok((jobs, voids))
}

// ---------------------------------------------------------------- outcomes

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted by the receiver (`status`: its HTTP status or SMTP reply).
    Delivered { status: Option<i32> },
    /// Not accepted. `permanent` failures are not retried.
    Failed {
        status: Option<i32>,
        reason: String,
        permanent: bool,
    },
}

/// How a channel retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first retry waits about this long; each next one twice as long.
    pub base: Duration,
    /// No wait is longer.
    pub max_delay: Duration,
    /// Retries stop once this much time has passed since the first attempt.
    pub window: Duration,
}

impl RetryPolicy {
    /// The wait before the attempt after attempt `attempt` (1-based):
    /// `base · 2^(attempt-1)`, capped, then a uniformly random point in its
    /// upper half, so that receivers that failed together are not retried
    /// together.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        let full = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
            .max(Duration::from_millis(1));
        let half = full / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=full - half)
    }
}

/// What [`record`] did with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Delivered,
    Retry,
    Failed,
    Skipped,
    /// The row is no longer this attempt's (its lease ended and another
    /// sender claimed it, or it was deleted): nothing written.
    Stale,
}

impl Recorded {
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Delivered => "delivered",
            Recorded::Retry => "retry",
            Recorded::Failed => "failed",
            Recorded::Skipped => "skipped",
            Recorded::Stale => "stale",
        }
    }
}

/// Bounded for the column and the log.
fn bounded(reason: &str) -> String {
    const MAX: usize = 1000;
    if reason.len() <= MAX {
        return reason.to_owned();
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

/// Marks a claimed row `skipped`, or, for a [`Void::later`], retries it
/// like a failed attempt.
pub async fn set_aside(
    pool: &PgPool,
    void: &Void,
    policy: &RetryPolicy,
) -> Result<Recorded, sqlx::Error> {
    if void.later {
        let mut conn = pool.acquire().await?;
        return retry_or_fail(
            &mut conn,
            void.id,
            void.attempt,
            None,
            void.reason,
            false,
            policy,
        )
        .await;
    }
    let done = sqlx::query(
        "UPDATE notifier_deliveries SET state = 'skipped', last_error = $3
          WHERE id = $1 AND attempts = $2 AND state = 'sending'",
    )
    .bind(void.id)
    .bind(void.attempt)
    .bind(void.reason)
    .execute(pool)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Recorded::Skipped
    } else {
        Recorded::Stale
    })
}

/// The one place a failed attempt is decided: `pending` again after the
/// backoff, or `failed` when it is `permanent` or the retry window since
/// the first attempt is over. Written only if the row is still attempt
/// `attempt` of `id`.
async fn retry_or_fail(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    status: Option<i32>,
    reason: &str,
    permanent: bool,
    policy: &RetryPolicy,
) -> Result<Recorded, sqlx::Error> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE notifier_deliveries
            SET state = CASE WHEN $5 OR now() - first_attempt_at >= make_interval(secs => $6)
                             THEN 'failed' ELSE 'pending' END,
                last_status = $3, last_error = $4,
                next_attempt_at = now() + make_interval(secs => $7)
          WHERE id = $1 AND attempts = $2 AND state = 'sending'
         RETURNING state",
    )
    .bind(id)
    .bind(attempt)
    .bind(status)
    .bind(bounded(reason))
    .bind(permanent)
    .bind(policy.window.as_secs_f64())
    .bind(policy.delay(attempt).as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(match state.as_deref() {
        None => Recorded::Stale,
        Some("failed") => Recorded::Failed,
        Some(_) => Recorded::Retry,
    })
}

/// Writes the outcome of `job`'s attempt, if the row is still that attempt
/// (one statement). A webhook delivery given up on disables its endpoint
/// ([`crate::webhooks::disable`], idempotent) in the same transaction.
pub async fn record(
    pool: &PgPool,
    job: &Job,
    outcome: &Outcome,
    policy: &RetryPolicy,
) -> Result<Recorded, sqlx::Error> {
    let recorded = match outcome {
        Outcome::Delivered { status } => {
            let done = sqlx::query(
                "UPDATE notifier_deliveries
                    SET state = 'delivered', delivered_at = now(), last_status = $3,
                        last_error = NULL
                  WHERE id = $1 AND attempts = $2 AND state = 'sending'",
            )
            .bind(job.id)
            .bind(job.attempt)
            .bind(status)
            .execute(pool)
            .await?;
            if done.rows_affected() == 1 {
                Recorded::Delivered
            } else {
                Recorded::Stale
            }
        }
        Outcome::Failed {
            status,
            reason,
            permanent,
        } => {
            // With the endpoint's disabling, when it comes to that, in one
            // transaction: a failed delivery always has a disabled endpoint.
            let mut tx = pool.begin().await?;
            let recorded = retry_or_fail(
                &mut tx,
                job.id,
                job.attempt,
                *status,
                reason,
                *permanent,
                policy,
            )
            .await?;
            if let (Recorded::Failed, Target::Webhook { endpoint, .. }) = (recorded, &job.target) {
                let why = if *permanent {
                    format!("a delivery failed in a way no retry can mend: {reason}")
                } else {
                    format!("deliveries failed for longer than the retry window: {reason}")
                };
                crate::webhooks::disable(&mut tx, *endpoint, &why).await?;
            }
            tx.commit().await?;
            recorded
        }
    };
    Ok(recorded)
}

// -------------------------------------------------------------- dispatcher

/// A channel's way of sending one delivery.
pub trait Sender: Send + Sync + 'static {
    fn channel(&self) -> Channel;
    fn send(&self, job: &Job) -> impl Future<Output = Outcome> + Send;
}

/// How a dispatcher runs.
#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// Deliveries of this channel in flight at once, in this process.
    pub concurrency: usize,
    /// Deliveries to one endpoint (or to the SMTP server) in flight at once.
    pub per_target: usize,
    /// A claim lasts this long; an attempt is abandoned before it ends.
    pub lease: Duration,
    /// How often to look for due rows when none were found.
    pub tick: Duration,
    pub retry: RetryPolicy,
}

/// Claims and sends one channel's due deliveries until stopped.
pub struct Dispatcher<S> {
    pub pool: PgPool,
    pub sender: Arc<S>,
    pub settings: DispatchSettings,
}

impl<S: Sender> Dispatcher<S> {
    pub async fn run(self, shutdown: CancellationToken) {
        let channel = self.sender.channel().as_str();
        let settings = self.settings;
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        // An attempt ends well before its lease does, so it is recorded
        // before any other sender may claim the row again.
        let attempt_limit = settings.lease.mul_f64(0.8);
        // Under load, claim in batches of at least a quarter of the slots:
        // a claim per freed slot would cost a claim per delivery.
        let min_claim = (settings.concurrency / 4).max(1);
        loop {
            while let Some(done) = in_flight.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(channel, error = %e, "a delivery task panicked");
                }
            }
            let free = permits.available_permits();
            if free < min_claim && !in_flight.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    done = in_flight.join_next() => if let Some(Err(e)) = done {
                        tracing::error!(channel, error = %e, "a delivery task panicked");
                    },
                }
                continue;
            }
            let mut busy = false;
            if free > 0 {
                match claim(
                    &self.pool,
                    self.sender.channel(),
                    free as i64,
                    settings.per_target as i64,
                    settings.lease,
                )
                .await
                {
                    Ok((jobs, voids)) => {
                        busy = jobs.len() + voids.len() >= free;
                        for void in voids {
                            match set_aside(&self.pool, &void, &settings.retry).await {
                                Ok(r) => count(channel, r),
                                Err(e) => tracing::warn!(channel, error = %e,
                                    delivery = %void.id, "cannot record a skipped delivery"),
                            }
                        }
                        for job in jobs {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                break;
                            };
                            let pool = self.pool.clone();
                            let sender = self.sender.clone();
                            in_flight.spawn(async move {
                                attempt(&pool, &*sender, &job, attempt_limit, &settings.retry)
                                    .await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        metrics::counter!("notifier_delivery_errors_total", "channel" => channel)
                            .increment(1);
                        tracing::warn!(channel, error = %e, "cannot claim deliveries; retrying");
                    }
                }
            }
            if busy && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(settings.tick) => {}
            }
        }
        // Attempts in hand finish (each within its limit) and are recorded.
        while in_flight.join_next().await.is_some() {}
        tracing::info!(channel, "dispatcher stopped");
    }
}

/// Sends one job (abandoned after `limit`) and records the outcome.
async fn attempt<S: Sender>(
    pool: &PgPool,
    sender: &S,
    job: &Job,
    limit: Duration,
    retry: &RetryPolicy,
) {
    let channel = sender.channel().as_str();
    let started = Instant::now();
    let outcome = match tokio::time::timeout(limit, sender.send(job)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed {
            status: None,
            reason: format!("no answer within {} ms", limit.as_millis()),
            permanent: false,
        },
    };
    metrics::histogram!("notifier_delivery_seconds", "channel" => channel)
        .record(started.elapsed().as_secs_f64());
    let recorded = match record(pool, job, &outcome, retry).await {
        Ok(r) => r,
        Err(e) => {
            // The row stays `sending` until its lease ends, then is sent
            // again with the same id: the receiver can tell.
            metrics::counter!("notifier_delivery_errors_total", "channel" => channel).increment(1);
            tracing::warn!(channel, delivery = %job.id, error = %e,
                "cannot record a delivery's outcome; it will be retried after its lease");
            return;
        }
    };
    count(channel, recorded);
    let endpoint = match &job.target {
        Target::Webhook { endpoint, .. } => Some(endpoint.to_string()),
        Target::Email { .. } => None,
    };
    match &outcome {
        Outcome::Delivered { .. } => tracing::debug!(channel, delivery = %job.id,
            notification = %job.notification.id, attempt = job.attempt, "delivered"),
        Outcome::Failed { status, reason, .. } => tracing::warn!(
            channel,
            delivery = %job.id,
            notification = %job.notification.id,
            endpoint,
            attempt = job.attempt,
            status,
            reason = %bounded(reason),
            outcome = recorded.as_str(),
            "delivery failed"
        ),
    }
}

fn count(channel: &'static str, recorded: Recorded) {
    metrics::counter!("notifier_deliveries_total", "channel" => channel,
        "outcome" => recorded.as_str())
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_jitter_and_stop_at_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(3600),
            window: Duration::from_secs(86_400),
        };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_secs(5) && d1 <= Duration::from_secs(10));
            let d4 = p.delay(4);
            assert!(d4 >= Duration::from_secs(40) && d4 <= Duration::from_secs(80));
            let d40 = p.delay(40);
            assert!(d40 >= Duration::from_secs(1800) && d40 <= Duration::from_secs(3600));
        }
        assert!(p.delay(0) <= Duration::from_secs(10));
        assert!(p.delay(i32::MIN) <= Duration::from_secs(10));
    }

    #[test]
    fn ids_differ_by_channel_and_endpoint() {
        let n = Uuid::from_u128(1);
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(email_delivery_id(n), email_delivery_id(n));
        assert_ne!(email_delivery_id(n), webhook_delivery_id(n, a));
        assert_ne!(webhook_delivery_id(n, a), webhook_delivery_id(n, b));
    }

    #[test]
    fn reasons_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(800);
        let b = bounded(&long);
        assert!(b.len() <= 1004);
        assert!(b.ends_with('…'));
        assert_eq!(bounded("short"), "short");
    }
}
