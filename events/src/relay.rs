//! The outbox relay: publishes committed events to Kafka, in order.
//!
//! Delivery contract: at-least-once, in per-stream order. A crash between
//! commit and publish publishes on restart (the outbox row is still there); a
//! crash after Kafka acked but before the outbox row was deleted publishes
//! that event again, so consumers deduplicate by `(stream_id, version)`.
//!
//! Any number of relays may run (auth and command-api both run one); a
//! Postgres advisory lock lets exactly one publish at a time, and another
//! takes over within a lock retry interval when the holder's connection dies.
//!
//! Wake-up: a round follows straight after any round that published; an
//! idle relay polls every `poll_interval` (10 ms), or wakes at once on a
//! `NOTIFY` on [`NOTIFY_CHANNEL`] (appends do not send one; see there).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::EventEnvelope;
use crate::kafka::EnvelopeRecord;
use crate::store::{envelope_from_row, ENVELOPE_COLUMNS, NOTIFY_CHANNEL};
use crate::topics::Topics;

/// Advisory lock key held by the publishing relay ("taskstrm" in ASCII).
pub const RELAY_LOCK_KEY: i64 = 0x7461_736b_7374_726d;

/// The publishing relay vacuums `event_outbox` after deleting this many rows.
///
/// Every event inserts one outbox row and the relay deletes it moments
/// later; autovacuum (once a minute at best) leaves tens of thousands of dead
/// rows behind under load. The outbox's statistics say it is tiny, so the
/// planner reads it whole and sorts it on every fetch: measured at 3,500
/// creates/s, 75 ms a fetch and publication lag of a third of a second.
/// A `VACUUM` of a few thousand dead rows takes milliseconds.
pub const VACUUM_AFTER_DELETES: usize = 5_000;
/// ... or this long after the last vacuum, once anything was deleted.
pub const VACUUM_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events fetched and published per round.
    pub batch_size: i64,
    /// How long to sleep when idle if no notification arrives.
    pub poll_interval: Duration,
    /// How often a standby relay tries to take the publishing lock.
    pub lock_retry_interval: Duration,
    /// Pause after a failed round (Kafka or Postgres down).
    pub error_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 500,
            // Short: the idle wake-up does not depend on a notification
            // arriving, and an empty outbox costs one index probe.
            poll_interval: Duration::from_millis(10),
            lock_retry_interval: Duration::from_millis(500),
            error_backoff: Duration::from_secs(1),
        }
    }
}

pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    topics: Topics,
    config: RelayConfig,
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        producer: FutureProducer,
        topics: Topics,
        config: RelayConfig,
    ) -> Self {
        OutboxRelay {
            pool,
            producer,
            topics,
            config,
        }
    }

    /// Runs until `shutdown` is cancelled; never returns an error: failures
    /// are logged, counted and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => {}
                Err(e) => {
                    metrics::counter!("relay_errors_total").increment(1);
                    tracing::warn!(error = %e, "outbox relay round failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(self.config.error_backoff) => {}
                    }
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Waits to become the publishing relay, then publishes until shutdown.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), RoundError> {
        let mut lock_conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut lock_conn)
                .await?;
            if got {
                break;
            }
            metrics::gauge!("relay_leader").set(0.0);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.lock_retry_interval) => {}
            }
        }
        metrics::gauge!("relay_leader").set(1.0);
        tracing::info!("outbox relay is publishing");
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let result = self
            .publish_until_shutdown(&mut listener, &mut lock_conn, shutdown)
            .await;
        metrics::gauge!("relay_leader").set(0.0);
        // Closing the connection releases the advisory lock.
        let _ = lock_conn.close().await;
        result
    }

    async fn publish_until_shutdown(
        &self,
        listener: &mut PgListener,
        lock_conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), RoundError> {
        let mut last_lock_check = Instant::now();
        let mut deleted_since_vacuum = 0;
        let mut last_vacuum = Instant::now();
        let mut vacuum: Option<tokio::task::JoinHandle<()>> = None;
        // The previous round's delete runs while this round fetches and
        // publishes (a round is then fetch + Kafka acks instead of fetch +
        // acks + delete); this round's fetch skips the rows it is deleting.
        let mut marking: Option<Marking> = None;
        loop {
            if shutdown.is_cancelled() {
                if let Some(m) = marking.take() {
                    m.finish().await?;
                }
                return Ok(());
            }
            // Prove the lock connection is alive now and then, busy or not:
            // if it died, another relay may hold the lock and this one must stop.
            if last_lock_check.elapsed() > self.config.lock_retry_interval {
                sqlx::query("SELECT 1").execute(&mut *lock_conn).await?;
                last_lock_check = Instant::now();
            }
            // Under load, go straight on to what committed during this
            // round: waiting here would add a whole interval to the lag.
            let excluded = marking.as_ref().map_or(&[][..], |m| &m.positions[..]);
            let round = self.publish_batch(excluded).await;
            // At most one delete in flight: the next fetch excludes only its rows.
            if let Some(m) = marking.take() {
                m.finish().await?;
            }
            let acked = round?;
            let published = acked.len();
            if published > 0 {
                marking = Some(Marking::start(self.pool.clone(), acked));
            }
            deleted_since_vacuum += published;
            let due = deleted_since_vacuum >= VACUUM_AFTER_DELETES
                || (deleted_since_vacuum > 0 && last_vacuum.elapsed() >= VACUUM_INTERVAL);
            // In the background (it takes tens of milliseconds on a busy
            // box, which publication should not wait for), one at a time.
            if due && vacuum.as_ref().is_none_or(|v| v.is_finished()) {
                vacuum = Some(tokio::spawn(vacuum_outbox(self.pool.clone())));
                deleted_since_vacuum = 0;
                last_vacuum = Instant::now();
            }
            if published > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => { n?; }
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Publishes one batch of unpublished events, leaving out the outbox
    /// rows at `excluded` (published, being deleted); returns the positions
    /// Kafka acknowledged, for the caller to delete.
    async fn publish_batch(&self, excluded: &[i64]) -> Result<Vec<i64>, RoundError> {
        let round_start = Instant::now();
        let rows = sqlx::query(&format!(
            // The oldest outbox positions first (bounded by the LIMIT), then
            // their events by primary key: the plan stays two index walks
            // however large `events` grows or however stale the outbox's
            // statistics are under constant insert/delete churn.
            "SELECT global_position, {ENVELOPE_COLUMNS}
               FROM events
              WHERE global_position = ANY (ARRAY(
                    SELECT global_position FROM event_outbox
                     WHERE global_position <> ALL ($2)
                     ORDER BY global_position
                     LIMIT $1))
              ORDER BY global_position"
        ))
        .bind(self.config.batch_size)
        .bind(excluded)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Where a busy round's time goes: fetch, Kafka acks (the delete of
        // the previous round's rows runs meanwhile).
        let fetched_at = Instant::now();
        metrics::histogram!("relay_round_phase_seconds", "phase" => "fetch")
            .record(round_start.elapsed().as_secs_f64());
        let mut batch: Vec<(i64, EventEnvelope)> = Vec::with_capacity(rows.len());
        for row in &rows {
            use sqlx::Row;
            batch.push((row.try_get("global_position")?, envelope_from_row(row)?));
        }
        let records: Vec<EnvelopeRecord> = batch
            .iter()
            .map(|(_, e)| EnvelopeRecord::new(&self.topics, e))
            .collect();
        // Send the whole batch, then await acks in order: the idempotent
        // producer keeps per-partition order for in-flight messages.
        let deliveries: Vec<_> = records
            .iter()
            .map(|r| self.producer.send_result(r.as_future_record()))
            .collect();
        let mut acked = Vec::with_capacity(batch.len());
        let mut failed_streams: HashSet<Uuid> = HashSet::new();
        for ((position, env), delivery) in batch.iter().zip(deliveries) {
            let ok = match delivery {
                Ok(fut) => match fut.await {
                    Ok(Ok(_)) => true,
                    Ok(Err((e, _))) => {
                        tracing::warn!(error = %e, stream_id = %env.stream_id, version = env.version, "publish failed");
                        false
                    }
                    Err(_) => false,
                },
                Err((e, _)) => {
                    tracing::warn!(error = %e, stream_id = %env.stream_id, version = env.version, "enqueue failed");
                    false
                }
            };
            // Once a stream had a failure in this batch, its later events stay
            // in the outbox too, so it is republished from the gap in order.
            if ok && !failed_streams.contains(&env.stream_id) {
                acked.push(*position);
                let lag = chrono::Utc::now() - env.occurred_at;
                metrics::histogram!("relay_commit_to_publish_seconds")
                    .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
            } else {
                failed_streams.insert(env.stream_id);
            }
        }
        metrics::histogram!("relay_round_phase_seconds", "phase" => "publish")
            .record(fetched_at.elapsed().as_secs_f64());
        metrics::histogram!("relay_batch_size").record(batch.len() as f64);
        if !failed_streams.is_empty() {
            metrics::counter!("relay_errors_total").increment(1);
            tokio::time::sleep(self.config.error_backoff).await;
        }
        Ok(acked)
    }
}

/// The delete of one round's published outbox rows, in the background.
struct Marking {
    positions: Vec<i64>,
    task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
}

impl Marking {
    fn start(pool: PgPool, positions: Vec<i64>) -> Self {
        let task = tokio::spawn({
            let positions = positions.clone();
            async move {
                let start = Instant::now();
                sqlx::query("DELETE FROM event_outbox WHERE global_position = ANY($1)")
                    .bind(&positions)
                    .execute(&pool)
                    .await?;
                metrics::counter!("relay_published_total").increment(positions.len() as u64);
                metrics::histogram!("relay_round_phase_seconds", "phase" => "mark")
                    .record(start.elapsed().as_secs_f64());
                Ok(())
            }
        });
        Marking { positions, task }
    }

    /// Waits for the delete. If it failed, the rows are still in the outbox
    /// and are published again (at least once); the round fails.
    async fn finish(self) -> Result<(), RoundError> {
        match self.task.await {
            Ok(done) => done.map_err(RoundError::from),
            Err(e) => Err(RoundError::Postgres(sqlx::Error::Protocol(format!(
                "outbox delete task: {e}"
            )))),
        }
    }
}

/// Reclaims the outbox rows deleted so far. A failure only costs speed: it
/// is logged and the relay goes on.
async fn vacuum_outbox(pool: PgPool) {
    let start = Instant::now();
    // Simple-protocol query: VACUUM cannot run in a transaction block.
    match sqlx::raw_sql("VACUUM event_outbox").execute(&pool).await {
        Ok(_) => metrics::histogram!("relay_vacuum_seconds").record(start.elapsed().as_secs_f64()),
        Err(e) => tracing::warn!(error = %e, "cannot vacuum event_outbox"),
    }
}
