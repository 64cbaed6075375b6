//! The scheduler: every tick, fires what is due (see
//! [`crate::store::fire_due`]). The clock is Postgres's `now()`, so every
//! notifier instance agrees on it, and the schedule lives in Postgres, so a
//! restarted notifier fires what fell due while it was down, once (marked
//! late when it is more than `late_after` past its time), unless it is older
//! than `catch_up`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows claimed per transaction.
pub const BATCH: i64 = 500;

pub struct Scheduler {
    pub pool: PgPool,
    pub tick: Duration,
    pub late_after: Duration,
    pub catch_up: Duration,
}

impl Scheduler {
    /// Fires due rows until `shutdown`. A full batch is followed at once by
    /// the next; a failure is logged and retried on the next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let full =
                match crate::store::fire_due(&self.pool, BATCH, self.late_after, self.catch_up)
                    .await
                {
                    Ok(fired) => {
                        for kind in &fired.sent {
                            metrics::counter!("notifications_created_total", "kind" => *kind)
                                .increment(1);
                        }
                        metrics::counter!("notifier_schedule_cancelled_total")
                            .increment(fired.cancelled);
                        metrics::gauge!("notifier_schedule_lag_seconds").set(fired.lag_seconds);
                        if fired.claimed > 0 {
                            tracing::debug!(
                                sent = fired.sent.len(),
                                cancelled = fired.cancelled,
                                "scheduler round"
                            );
                        }
                        metrics::gauge!("notifier_schedule_behind").set(fired.behind as f64);
                        // A batch of rows left pending is not a reason to spin.
                        fired.claimed as i64 >= BATCH && fired.behind == 0
                    }
                    Err(e) => {
                        metrics::counter!("notifier_scheduler_errors_total").increment(1);
                        tracing::warn!(error = %e, "scheduler round failed; retrying next tick");
                        false
                    }
                };
            if full {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
        tracing::info!("scheduler stopped");
    }
}
