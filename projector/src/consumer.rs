//! The live loop: Kafka batches → version-guarded MongoDB bulk writes (the
//! `writer`) → offset commits.
//!
//! Delivery contract: Kafka gives each event at least once; the views absorb
//! the repeats, because [`read_model::views::View::apply`] skips every version at or below the
//! view's. Offsets are committed only after the batch's MongoDB write (and
//! its dead-letter publications) succeeded, so a crash at any instant
//! replays from the last commit and converges to the same views.
//!
//! Gaps: an event beyond a view's next version is never applied. It is
//! counted (`projector_version_gaps_total`), logged, and that stream stops
//! advancing for the rest of the batch. The outbox relay republishes a
//! stream from its first unpublished version, in order, so the missing
//! version arrives again followed by the ones after it, and the stream
//! catches up then; the gap never becomes a hole in the view. A view can also
//! be behind because the store lost an acknowledged write (the offset was
//! committed, nothing will redeliver it): so a gap is first repaired from the
//! log (`Projector::repair`: the gap event's partition is read up to it for
//! the stream's missing versions), and stays reported only when the missing
//! versions are not on the log yet.
//!
//! Poison (a message that can never apply: not an envelope, an unknown type
//! or a newer schema, a payload that does not match, a stream that does not
//! start with its creation) goes to `task-events.dlq` with its original key,
//! payload and headers plus `dlq-reason` and `dlq-source`
//! (`<topic>/<partition>/<offset>`, which also tells the rare poisoned user
//! event apart), and the partition moves on.
//!
//! Refused writes: an event whose view the store refuses (a value it cannot
//! hold, a document over its size limit, a validation failure; see
//! [`crate::write_errors`]) is dead-lettered the same way, with the store's reason,
//! and counted (`projector_refused_writes_total`). The rest of the batch is
//! applied: the refused stream is written again one event at a time, the
//! refused event's version is spent without its change (so the stream's
//! later events still apply, and a redelivery is a duplicate), and the
//! offsets move on. Only failures that pass (connection, timeout, not
//! primary, interrupted) retry the batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use events::kafka::envelope_of;
use events::topics::{Topics, HEADER_DLQ_REASON};
use events::EventEnvelope;
use mongodb::Database;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::lag::LagReporter;
use crate::writer::{BatchOutcome, ByKind, Collections, ViewWriter, WriteError};

/// The collection of the projector's journal barrier: one document,
/// counting batches (see `Projector::journal_barrier`).
pub const JOURNAL_BARRIER: &str = "projector_journal";

/// Kafka header on dead-lettered messages: `<topic>/<partition>/<offset>` of the original.
pub const HEADER_DLQ_SOURCE: &str = "dlq-source";

/// How messages are grouped into one MongoDB round trip.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// At most this many messages per batch.
    pub max_messages: usize,
    /// Once a batch has its first message, wait at most this long for more.
    pub max_wait: Duration,
    /// Pause before retrying a batch whose write failed (transiently).
    pub error_backoff: Duration,
    /// End each batch that wrote a view with a journaled write (see
    /// [`Projector::journal_barrier`]) before committing its offsets.
    pub journal_barrier: bool,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_messages: 500,
            max_wait: Duration::from_millis(20),
            error_backoff: Duration::from_millis(500),
            journal_barrier: true,
        }
    }
}

pub type EventConsumer = StreamConsumer<LagReporter>;

/// The pause after the `rounds`-th round of consumer errors in a row (each
/// round drains every error queued): none after the first, then 50 ms
/// doubling to at most 1 s, so a broker that returns is noticed within a
/// second and a client that keeps failing does not spin.
pub fn kafka_error_pause(rounds: u32) -> Duration {
    match rounds {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(50u64.saturating_mul(1 << (n - 2).min(5)))
            .min(Duration::from_secs(1)),
    }
}

/// The consumer settings: a group, manual commits only, from the beginning.
pub fn consumer(
    brokers: &str,
    group_id: &str,
) -> Result<EventConsumer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The broker's minimum. After a Kafka outage this consumer's session
        // has expired on both sides; the restarted coordinator still lists
        // the old member and holds the rejoin until its session expires.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("statistics.interval.ms", "5000")
        // librdkafka backs off reconnecting up to 10 s by default: after an
        // outage the consumer would notice a returned broker that late.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(LagReporter::default())
}

#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("kafka: dead-letter publication failed: {0}")]
    DeadLetter(String),
    #[error("the view store restarted since the last durable batch, which may have lost this batch's writes; replaying it")]
    StoreRestarted,
}

/// The projector's consumer loop.
pub struct Projector {
    consumer: Arc<EventConsumer>,
    producer: FutureProducer,
    writer: ViewWriter,
    topics: Topics,
    settings: BatchSettings,
    /// Rounds of consumer errors since the last message.
    kafka_error_rounds: AtomicU32,
    /// Where the log is read to repair a version gap.
    brokers: String,
    /// The view store's process (`hello.topologyVersion.processId`) at the
    /// last journal barrier (see [`Projector::journal_barrier`]).
    store_process: std::sync::Mutex<Option<bson::oid::ObjectId>>,
    /// Views may have been written since the last journal barrier that
    /// passed: by a failed attempt (whose retry then finds only
    /// duplicates), or by a predecessor killed before its barrier. The next
    /// batch ends with a barrier whatever it writes.
    unbarriered: AtomicBool,
}

impl Projector {
    /// Subscribes to the task, project and user event topics.
    /// `brokers`: where the log is read to repair a version gap.
    pub fn new(
        consumer: EventConsumer,
        producer: FutureProducer,
        db: Database,
        topics: Topics,
        settings: BatchSettings,
        brokers: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let task_events = topics.task_events();
        let project_events = topics.project_events();
        let user_events = topics.user_events();
        consumer.subscribe(&[&task_events, &project_events, &user_events])?;
        Ok(Projector {
            consumer: Arc::new(consumer),
            producer,
            writer: ViewWriter::new(db, Collections::live()),
            topics,
            settings,
            kafka_error_rounds: AtomicU32::new(0),
            brokers: brokers.to_owned(),
            store_process: std::sync::Mutex::new(None),
            unbarriered: AtomicBool::new(true),
        })
    }

    /// Consumes until `shutdown`: the batch in hand is finished and
    /// committed first. Never returns an error: failures are logged,
    /// counted and retried (the batch is replayed; the views absorb it).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("projector consuming");
        // The first barrier compares the store's process with this one.
        loop {
            match store_process(&self.writer.db).await {
                Ok(process) => {
                    self.set_store_process(process);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell the view store's process yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.settings.error_backoff) => {}
                    }
                }
            }
        }
        loop {
            let batch = self.next_batch(&shutdown).await;
            if batch.is_empty() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            let writes = self.writer.collections.names();
            if let Err(e) = crate::control::honour_pause(&self.writer.db, writes, &shutdown).await {
                tracing::warn!(error = %e, "cannot read the rebuild control documents; carrying on");
            }
            metrics::histogram!("projector_batch_size").record(batch.len() as f64);
            let outcome = loop {
                match self.handle(&batch).await {
                    Ok(outcome) => break Some(outcome),
                    Err(e) => {
                        metrics::counter!("projector_errors_total").increment(1);
                        // What this batch wrote may be gone (a store that
                        // restarted loses what it had not journaled): fold
                        // the retry onto what the store holds, not onto the
                        // views remembered from the failed attempt.
                        self.writer.forget_all();
                        self.unbarriered.store(true, Ordering::Relaxed);
                        tracing::warn!(error = %e, messages = batch.len(), "batch failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break None,
                            _ = tokio::time::sleep(self.settings.error_backoff) => {}
                        }
                    }
                }
            };
            let Some(outcome) = outcome else {
                // Stopped while the write kept failing: leave the offsets
                // uncommitted, so the next start replays this batch.
                break;
            };
            metrics::counter!("projector_events_applied_total").increment(outcome.applied);
            metrics::counter!("projector_duplicates_total").increment(outcome.duplicates);
            metrics::counter!("projector_version_gaps_total").increment(outcome.gaps);
            metrics::counter!("projector_dlq_total").increment(outcome.dead_lettered);
            metrics::counter!("projector_refused_writes_total").increment(outcome.refused);
            metrics::counter!("projector_repairs_total").increment(outcome.repaired_streams);
            metrics::counter!("projector_repaired_events_total").increment(outcome.repaired_events);
            events::kafka::commit_after(&self.consumer, &batch).await;
            if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::info!("projector stopped");
    }

    /// Waits for a first message (or shutdown), then gathers more for at
    /// most `max_wait` or until `max_messages`.
    ///
    /// Consumer errors are librdkafka telling what it is doing anyway
    /// (reconnecting, brokers down, a transport failure): the client
    /// recovers by itself. During an outage it queues them faster than any
    /// fixed pause per error would drain them, and a pause per error left
    /// the views stale long after Kafka returned. So every error queued is
    /// drained at once and logged as one line, and a pause (see
    /// [`kafka_error_pause`]) follows only rounds of errors with no message
    /// between them, growing from 50 ms to at most 1 s.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let first = tokio::select! {
            _ = shutdown.cancelled() => return batch,
            m = self.consumer.recv() => m,
        };
        match first {
            Ok(m) => batch.push(m.detach()),
            Err(e) => {
                let mut errors = 1u64;
                let mut last = e;
                // Whatever is queued now comes back without waiting.
                loop {
                    match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                        Ok(Err(e)) => {
                            errors += 1;
                            last = e;
                        }
                        Ok(Ok(m)) => {
                            batch.push(m.detach());
                            break;
                        }
                        Err(_) => break,
                    }
                }
                metrics::counter!("projector_kafka_errors_total").increment(errors);
                tracing::warn!(error = %last, errors, "kafka consumer error(s)");
                if batch.is_empty() {
                    let rounds = self.kafka_error_rounds.fetch_add(1, Ordering::Relaxed) + 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(kafka_error_pause(rounds)) => {}
                    }
                    return batch;
                }
            }
        }
        self.kafka_error_rounds.store(0, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.settings.max_wait;
        while batch.len() < self.settings.max_messages {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    metrics::counter!("projector_kafka_errors_total").increment(1);
                    tracing::warn!(error = %e, "kafka consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Applies one batch: dead-letters what can never apply, writes the views.
    async fn handle(&self, batch: &[OwnedMessage]) -> Result<BatchOutcome, BatchError> {
        let mut routed = ByKind::default();
        let mut poison: Vec<(usize, String)> = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            let env = match envelope_of(msg) {
                Ok(env) => env,
                Err(e) => {
                    poison.push((i, e.to_string()));
                    continue;
                }
            };
            // An event travels on its stream type's topic; one on another
            // topic was not published by taskstream's relay.
            if msg.topic() == self.topics.for_stream(env.stream_type) {
                routed.push(i, env);
            } else {
                poison.push((
                    i,
                    format!(
                        "a {} event on topic {}",
                        env.stream_type.as_str(),
                        msg.topic()
                    ),
                ));
            }
        }
        let (outcome, more_poison) = self.writer.apply(routed).await?;
        let mut outcome = outcome;
        if !outcome.gaps_at.is_empty() {
            self.repair(batch, &mut outcome).await?;
        }
        poison.extend(more_poison);
        poison.sort_by_key(|(i, _)| *i);
        self.dead_letter(batch, &poison).await?;
        outcome.dead_lettered = poison.len() as u64;
        if outcome.applied > 0 || outcome.refused > 0 || self.unbarriered.load(Ordering::Relaxed) {
            self.journal_barrier().await?;
            self.unbarriered.store(false, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    /// One small write with `j: true` (to [`JOURNAL_BARRIER`]) after the
    /// batch's view writes, so
    /// that they are on the journal before the offsets are committed.
    ///
    /// The view writes already carry the configured write concern, and a
    /// MongoDB server honours it; but SecantusDB 0.7 (the development and
    /// test server) drops `writeConcern.j` inside a client `bulkWrite` and
    /// acknowledges before its journal is written, so a SIGKILL lost
    /// acknowledged views. A journaled write flushes the journal up to
    /// itself, hence every earlier write too: one round trip per batch.
    async fn journal_barrier(&self) -> Result<(), BatchError> {
        if !self.settings.journal_barrier {
            return Ok(());
        }
        let journaled = mongodb::options::WriteConcern::builder()
            .w(mongodb::options::Acknowledgment::Nodes(1))
            .journal(true)
            .build();
        self.writer
            .db
            .collection::<bson::Document>(JOURNAL_BARRIER)
            .update_one(
                doc! { "_id": "journal-barrier" },
                doc! { "$inc": { "batches": 1_i64 } },
            )
            .upsert(true)
            .write_concern(journaled)
            .await?;
        // The barrier makes durable what its own server process was sent. A
        // store killed after the views were acknowledged and restarted
        // before the barrier reached it lost them, and the barrier succeeds
        // on the new process all the same: so the process must be the one
        // the previous barrier saw, or this batch is replayed.
        let now = store_process(&self.writer.db).await?;
        let before = self.set_store_process(now);
        if before.is_some() && now.is_some() && before != now {
            return Err(BatchError::StoreRestarted);
        }
        Ok(())
    }

    /// Records the store's process; returns the one recorded before.
    fn set_store_process(
        &self,
        process: Option<bson::oid::ObjectId>,
    ) -> Option<bson::oid::ObjectId> {
        let mut known = self.store_process.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *known, process)
    }

    /// Fills the batch's version gaps from the log: reads, in the gap
    /// event's partition, from the partition's first offset up to the gap
    /// event, the stream's missing versions, and folds them with the
    /// batch's events of that stream (what was applied already is a
    /// duplicate now). A version missing from the log too (the relay has
    /// not republished it yet) leaves the gap reported, as before; so does
    /// a failure to read, which never fails the batch.
    async fn repair(
        &self,
        batch: &[OwnedMessage],
        outcome: &mut BatchOutcome,
    ) -> Result<(), BatchError> {
        let mut wanted: HashMap<Uuid, Missing> = HashMap::new();
        for (i, first_missing) in &outcome.gaps_at {
            let Some(msg) = batch.get(*i) else { continue };
            let Ok(env) = envelope_of(msg) else { continue };
            let w = wanted.entry(env.stream_id).or_insert_with(|| Missing {
                topic: msg.topic().to_owned(),
                partition: msg.partition(),
                before_offset: msg.offset(),
                from_version: *first_missing,
                before_version: env.version,
            });
            w.from_version = w.from_version.min(*first_missing);
            w.before_offset = w.before_offset.max(msg.offset());
            w.before_version = w.before_version.max(env.version);
        }
        let brokers = self.brokers.clone();
        let looking = wanted.clone();
        let found = match tokio::task::spawn_blocking(move || read_missing(&brokers, &looking))
            .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the log to repair a version gap; the gap stays reported");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "the log read for a version gap failed; the gap stays reported");
                return Ok(());
            }
        };
        if found.is_empty() {
            return Ok(());
        }
        let streams: HashSet<Uuid> = found.iter().map(|e| e.stream_id).collect();
        let found_events = found.len() as u64;
        let mut routed = ByKind::default();
        // Indices past the batch: nothing found in the log is dead-lettered
        // again (it was dealt with when it was consumed).
        for env in found {
            routed.push(usize::MAX, env);
        }
        for (i, msg) in batch.iter().enumerate() {
            let Ok(env) = envelope_of(msg) else { continue };
            if !streams.contains(&env.stream_id)
                || msg.topic() != self.topics.for_stream(env.stream_type)
            {
                continue;
            }
            routed.push(i, env);
        }
        let (again, _) = self.writer.apply(routed).await?;
        let repaired: Vec<String> = streams.iter().map(Uuid::to_string).collect();
        tracing::warn!(
            streams = ?repaired,
            events = found_events,
            applied = again.applied,
            "version gap repaired from the log: a view was behind its stream"
        );
        outcome.applied += again.applied;
        outcome.repaired_streams += streams.len() as u64;
        outcome.repaired_events += found_events;
        Ok(())
    }

    /// Publishes each poison message to the dead-letter topic with its
    /// reason, and waits for every acknowledgement.
    async fn dead_letter(
        &self,
        batch: &[OwnedMessage],
        poison: &[(usize, String)],
    ) -> Result<(), BatchError> {
        let dlq = self.topics.task_events_dlq();
        let mut deliveries = Vec::with_capacity(poison.len());
        for (i, reason) in poison {
            let Some(msg) = batch.get(*i) else { continue };
            tracing::warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                reason = %reason,
                "poison message sent to the dead-letter topic"
            );
            let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
            let mut headers = OwnedHeaders::new();
            if let Some(original) = msg.headers() {
                for h in original.iter() {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            headers = headers
                .insert(Header {
                    key: HEADER_DLQ_REASON,
                    value: Some(reason.as_bytes()),
                })
                .insert(Header {
                    key: HEADER_DLQ_SOURCE,
                    value: Some(source.as_bytes()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq).headers(headers);
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            if let Some(payload) = msg.payload() {
                record = record.payload(payload);
            }
            deliveries.push(self.producer.send(record, Duration::from_secs(10)));
        }
        for delivery in deliveries {
            delivery
                .await
                .map_err(|(e, _)| BatchError::DeadLetter(e.to_string()))?;
        }
        Ok(())
    }
}

/// The versions a stream misses, and where to look for them.
#[derive(Debug, Clone)]
struct Missing {
    topic: String,
    partition: i32,
    /// The gap event's offset: the missing versions were published before it.
    before_offset: i64,
    from_version: u64,
    before_version: u64,
}

/// Reads each partition holding a gap from its first offset up to the gap
/// event, outside the consumer group (nothing is committed), and returns
/// the missing events found, in version order per stream.
fn read_missing(
    brokers: &str,
    wanted: &HashMap<Uuid, Missing>,
) -> anyhow::Result<Vec<EventEnvelope>> {
    let consumer = crate::replay::detached_consumer(brokers)?;
    let mut ranges: HashMap<(String, i32), crate::replay::PartitionRange> = HashMap::new();
    for w in wanted.values() {
        let key = (w.topic.clone(), w.partition);
        if let Some(range) = ranges.get_mut(&key) {
            range.end = range.end.max(w.before_offset);
            continue;
        }
        let (low, _) = consumer.fetch_watermarks(&w.topic, w.partition, Duration::from_secs(10))?;
        ranges.insert(
            key,
            crate::replay::PartitionRange {
                start: low,
                end: w.before_offset,
            },
        );
    }
    let mut found: std::collections::BTreeMap<(Uuid, u64), EventEnvelope> = Default::default();
    crate::replay::read_ranges(
        &consumer,
        &ranges,
        &indicatif::ProgressBar::hidden(),
        |msg| {
            let Ok(env) = envelope_of(msg) else {
                return Ok(());
            };
            if let Some(w) = wanted.get(&env.stream_id) {
                if env.version >= w.from_version && env.version < w.before_version {
                    found.insert((env.stream_id, env.version), env);
                }
            }
            Ok(())
        },
    )?;
    Ok(found.into_values().collect())
}

/// The server process behind `db` (MongoDB 4.4+ `hello.topologyVersion`),
/// which changes when the server restarts; `None` from a server that does
/// not say.
async fn store_process(
    db: &Database,
) -> Result<Option<bson::oid::ObjectId>, mongodb::error::Error> {
    let hello = db.run_command(doc! { "hello": 1 }).await?;
    Ok(hello
        .get_document("topologyVersion")
        .ok()
        .and_then(|t| t.get_object_id("processId").ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_errors_pause_only_when_they_keep_coming_and_at_most_a_second() {
        assert_eq!(kafka_error_pause(1), Duration::ZERO);
        assert_eq!(kafka_error_pause(2), Duration::from_millis(50));
        assert_eq!(kafka_error_pause(3), Duration::from_millis(100));
        assert_eq!(kafka_error_pause(50), Duration::from_secs(1));
    }
}
