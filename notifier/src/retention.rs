//! Retention: the inbox, its deliveries and the finished schedule are kept
//! for `NOTIFIER_RETENTION_DAYS`, then deleted, so that the notifier's
//! tables stay bounded however long it runs.
//!
//! Deleting cannot make anything be sent again. A notification's id comes
//! from its cause, and a deleted one could only come back if its cause
//! were applied again (a redelivery, a rebuild); but a cause older than the
//! catch-up window notifies nobody (`fold::is_news`, `schedule::worth_inserting`),
//! and the configuration keeps the retention longer than that window plus
//! the longest retry window. A notification with a delivery still pending
//! or being sent is kept until it is done.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement, so that no sweep holds long locks.
const BATCH: i64 = 1000;

pub struct Retention {
    pub pool: PgPool,
    /// How long a notification and a finished schedule row are kept.
    pub keep: Duration,
    /// How often the sweep runs.
    pub every: Duration,
}

/// What one sweep deleted.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    /// Notifications (their deliveries go with them).
    pub notifications: u64,
    /// Schedule rows sent or cancelled.
    pub schedule: u64,
}

impl Retention {
    /// Sweeps every `every` until `shutdown`; a failure is counted, logged
    /// and retried on the next round.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.every) => {}
            }
            match sweep(&self.pool, self.keep, &shutdown).await {
                Ok(swept) => {
                    metrics::counter!("notifier_retention_deleted_total", "table" => "notifications")
                        .increment(swept.notifications);
                    metrics::counter!("notifier_retention_deleted_total", "table" => "schedule")
                        .increment(swept.schedule);
                    if swept != Swept::default() {
                        tracing::info!(
                            notifications = swept.notifications,
                            schedule = swept.schedule,
                            "retention: deleted what is older than the retention"
                        );
                    }
                }
                Err(e) => {
                    metrics::counter!("notifier_retention_errors_total").increment(1);
                    tracing::warn!(error = %e, "retention sweep failed; retrying next round");
                }
            }
        }
    }
}

/// Deletes, in batches, the notifications older than `keep` whose
/// deliveries are all finished, and the sent or cancelled schedule rows
/// whose time is older than `keep`; stops early on `shutdown`.
///
/// A notification is locked before it is deleted (skipping any a webhook
/// retry holds), and its deliveries are checked again after the lock: a
/// delivery made pending by a retry that committed meanwhile keeps it.
pub async fn sweep(
    pool: &PgPool,
    keep: Duration,
    shutdown: &CancellationToken,
) -> Result<Swept, sqlx::Error> {
    let keep = keep.as_secs_f64();
    let mut swept = Swept::default();
    while !shutdown.is_cancelled() {
        let mut tx = pool.begin().await?;
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT n.id FROM notifier_notifications n
              WHERE n.created_at < now() - make_interval(secs => $1)
                AND NOT EXISTS (SELECT 1 FROM notifier_deliveries d
                                 WHERE d.notification_id = n.id
                                   AND d.state IN ('pending', 'sending'))
              LIMIT $2
              FOR UPDATE OF n SKIP LOCKED",
        )
        .bind(keep)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query(
            "DELETE FROM notifier_notifications n
              WHERE n.id = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM notifier_deliveries d
                                 WHERE d.notification_id = n.id
                                   AND d.state IN ('pending', 'sending'))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        swept.notifications += deleted;
        if (ids.len() as i64) < BATCH {
            break;
        }
    }
    while !shutdown.is_cancelled() {
        let n = sqlx::query(
            "DELETE FROM notifier_schedule WHERE id IN (
                 SELECT id FROM notifier_schedule
                  WHERE state <> 'pending' AND fire_at < now() - make_interval(secs => $1)
                  LIMIT $2)",
        )
        .bind(keep)
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        swept.schedule += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(swept)
}
