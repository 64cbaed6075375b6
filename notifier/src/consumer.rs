//! The live loop: Kafka batches → one Postgres transaction per batch
//! (state, schedule and event-caused notifications together, see
//! [`crate::fold`]) → offset commit.
//!
//! Delivery contract: Kafka gives each event at least once; the fold
//! absorbs repeats (version guards, deterministic ids). Offsets are
//! committed only after the batch's transaction committed, so a crash at
//! any instant replays from the last commit and converges to the same
//! state. A message that is not an event the notifier can read (not an
//! envelope, an unknown type, a newer schema) is logged, counted
//! (`notifier_skipped_events_total`) and passed over: the projector
//! dead-letters it already, and a notifier must not stop on it. An event
//! that decodes but cannot be applied (a value the database refuses as
//! data) is found by applying the failed batch one message per
//! transaction, and set aside in `notifier_dead_letters` after a few tries
//! alone; any other failure is waited out.

use std::sync::Arc;
use std::time::Duration;

use events::kafka::envelope_of;
use events::topics::Topics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::ClientConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Messages per transaction, at most.
const BATCH_MAX_MESSAGES: usize = 200;
/// Once a batch has its first message, wait at most this long for more.
const BATCH_MAX_WAIT: Duration = Duration::from_millis(20);
/// Pause before retrying a batch whose transaction failed.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// Tries of a message alone before it is set aside as poison.
const POISON_ATTEMPTS: u32 = 3;

/// The consumer settings: a group, manual commits only, from the beginning.
pub fn consumer(
    brokers: &str,
    group_id: &str,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .create()
}

/// The notifier's consumer loop.
pub struct EventLoop {
    consumer: Arc<StreamConsumer>,
    pool: PgPool,
    topics: Topics,
    catch_up: chrono::Duration,
}

impl EventLoop {
    /// Subscribes to the task, project and user event topics.
    pub fn new(
        consumer: StreamConsumer,
        pool: PgPool,
        topics: Topics,
        catch_up: chrono::Duration,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        consumer.subscribe(&[
            &topics.task_events(),
            &topics.project_events(),
            &topics.user_events(),
        ])?;
        Ok(EventLoop {
            consumer: Arc::new(consumer),
            pool,
            topics,
            catch_up,
        })
    }

    /// Consumes until `shutdown`; the batch in hand is finished and
    /// committed first, unless its transaction keeps failing (then it is
    /// left uncommitted, and replayed by the next start).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("notifier consuming");
        loop {
            let batch = self.next_batch(&shutdown).await;
            if batch.is_empty() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            let created = loop {
                let result = match self.handle(&batch).await {
                    Err(e) if is_poison(&e) => {
                        // Something in the batch cannot apply: find it, one
                        // message per transaction, and set it aside.
                        tracing::warn!(error = %e, messages = batch.len(),
                            "batch failed; applying its messages one by one");
                        self.handle_one_by_one(&batch).await
                    }
                    other => other,
                };
                match result {
                    Ok(created) => break Some(created),
                    Err(e) => {
                        metrics::counter!("notifier_consumer_errors_total").increment(1);
                        tracing::warn!(error = %e, messages = batch.len(), "batch failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break None,
                            _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                        }
                    }
                }
            };
            let Some(created) = created else { break };
            for kind in created {
                metrics::counter!("notifications_created_total", "kind" => kind).increment(1);
            }
            metrics::counter!("notifier_events_total").increment(batch.len() as u64);
            events::kafka::commit_after(&self.consumer, &batch).await;
            if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::info!("notifier consumer stopped");
    }

    async fn next_batch(&self, shutdown: &CancellationToken) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let first = tokio::select! {
            _ = shutdown.cancelled() => return batch,
            m = self.consumer.recv() => m,
        };
        match first {
            Ok(m) => batch.push(m.detach()),
            Err(e) => {
                // librdkafka recovers by itself; do not spin while it does.
                metrics::counter!("notifier_kafka_errors_total").increment(1);
                tracing::warn!(error = %e, "kafka consumer error");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                return batch;
            }
        }
        let deadline = tokio::time::Instant::now() + BATCH_MAX_WAIT;
        while batch.len() < BATCH_MAX_MESSAGES {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    metrics::counter!("notifier_kafka_errors_total").increment(1);
                    tracing::warn!(error = %e, "kafka consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Applies each message of `batch` in a transaction of its own. A
    /// message the database refuses as data ([`is_poison`]) after
    /// [`POISON_ATTEMPTS`] tries is recorded in `notifier_dead_letters` and
    /// passed over, so that it stalls no one. Any other error (the database
    /// unavailable, a deadlock, a failover's read-only moment) ends the
    /// pass: the whole batch is retried later (what was applied is applied
    /// again, as a no-op).
    async fn handle_one_by_one(
        &self,
        batch: &[OwnedMessage],
    ) -> Result<Vec<&'static str>, sqlx::Error> {
        let mut created = Vec::new();
        for msg in batch {
            let mut attempt = 1;
            loop {
                match self.handle(std::slice::from_ref(msg)).await {
                    Ok(c) => {
                        created.extend(c);
                        break;
                    }
                    Err(e) if !is_poison(&e) => return Err(e),
                    Err(e) if attempt < POISON_ATTEMPTS => {
                        attempt += 1;
                        tracing::debug!(error = %e, "a message failed alone; retrying it");
                    }
                    Err(e) => {
                        self.dead_letter(msg, &e).await?;
                        break;
                    }
                }
            }
        }
        Ok(created)
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        error: &sqlx::Error,
    ) -> Result<(), sqlx::Error> {
        let reason: String = error.to_string().chars().take(1000).collect();
        sqlx::query(
            "INSERT INTO notifier_dead_letters (topic, kafka_partition, kafka_offset, error, payload)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(msg.topic())
        .bind(msg.partition())
        .bind(msg.offset())
        .bind(&reason)
        .bind(msg.payload())
        .execute(&self.pool)
        .await?;
        metrics::counter!("notifier_dead_letters_total").increment(1);
        tracing::error!(
            source = %format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()),
            error = %reason,
            "an event the notifier cannot apply was set aside in notifier_dead_letters"
        );
        Ok(())
    }

    /// Applies a batch in one transaction; the kinds of the notifications
    /// it created.
    async fn handle(&self, batch: &[OwnedMessage]) -> Result<Vec<&'static str>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut created = Vec::new();
        for msg in batch {
            let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
            let decoded = envelope_of(msg).and_then(|env| env.decode().map(|e| (env, e)));
            let (env, event) = match decoded {
                Ok(pair) => pair,
                Err(e) => {
                    metrics::counter!("notifier_skipped_events_total").increment(1);
                    tracing::warn!(error = %e, %source, "not an event the notifier can read; skipped");
                    continue;
                }
            };
            if msg.topic() != self.topics.for_stream(env.stream_type) {
                metrics::counter!("notifier_skipped_events_total").increment(1);
                tracing::warn!(%source, "an event on another stream type's topic; skipped");
                continue;
            }
            let applied = crate::fold::apply(&mut tx, &env, &event, self.catch_up).await?;
            created.extend(applied.created);
        }
        tx.commit().await?;
        Ok(created)
    }
}

/// Whether the database refused the data itself (SQLSTATE class 22, data
/// exception, or 23, integrity constraint violation): such an event fails
/// the same way every time. Everything else (a lost connection, a
/// deadlock, a serialization failure, a read-only standby during a
/// failover, a table not migrated yet) may pass on a retry, and is waited
/// out rather than set aside.
fn is_poison(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}
