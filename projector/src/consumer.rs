//! The consumer loop: Kafka batches → version-guarded MongoDB bulk writes →
//! offset commits.
//!
//! Delivery contract: Kafka gives each event at least once; the views absorb
//! the repeats, because [`View::apply`] skips every version at or below the
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
//! [`write_errors`]) is dead-lettered the same way, with the store's reason,
//! and counted (`projector_refused_writes_total`). The rest of the batch is
//! applied: the refused stream is written again one event at a time, the
//! refused event's version is spent without its change (so the stream's
//! later events still apply, and a redelivery is a duplicate), and the
//! offsets move on. Only failures that pass (connection, timeout, not
//! primary, interrupted) retry the batch.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use events::kafka::envelope_of;
use events::topics::{Topics, HEADER_DLQ_REASON};
use events::EventEnvelope;
use futures::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::options::ReplaceOneModel;
use mongodb::{Collection, Database, Namespace};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::write_errors::{self, Failure};
use read_model::analytics::TaskFacts;
use read_model::views::{Applied, TaskView, UserView, View};

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

/// Consumer lag per partition this consumer owns, as of librdkafka's last
/// statistics. Kept here rather than in the process's metrics recorder,
/// which cannot forget a series: a partition given up in a rebalance is
/// removed at once (its lag is another member's to report, and a summed lag
/// must not count it twice). [`Lag::render`] appends the series to
/// `/metrics` (see `startup`).
#[derive(Default)]
pub struct Lag(std::sync::Mutex<LagState>);

#[derive(Default)]
struct LagState {
    owned: HashSet<(String, i32)>,
    lag: std::collections::BTreeMap<(String, i32), i64>,
}

impl Lag {
    fn lock(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assigned(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            state.owned.insert((e.topic().to_owned(), e.partition()));
        }
    }

    fn revoked(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            let key = (e.topic().to_owned(), e.partition());
            state.owned.remove(&key);
            state.lag.remove(&key);
        }
    }

    /// The partitions whose lag is exported now.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.lock().lag.keys().cloned().collect()
    }

    /// `projector_consumer_lag{topic, partition}` in the Prometheus text format.
    pub fn render(&self) -> String {
        let state = self.lock();
        if state.lag.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "# HELP projector_consumer_lag Messages not yet committed, per partition this projector owns.\n# TYPE projector_consumer_lag gauge\n",
        );
        for ((topic, partition), lag) in &state.lag {
            out.push_str(&format!(
                "projector_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {lag}\n"
            ));
        }
        out
    }
}

/// The consumer's context: lag from the periodic statistics, ownership from
/// the rebalance callbacks.
pub struct LagReporter {
    lag: Arc<Lag>,
}

impl LagReporter {
    /// The lag this consumer reports.
    pub fn lag(&self) -> Arc<Lag> {
        Arc::clone(&self.lag)
    }
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        let mut state = self.lag.lock();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue;
                // partitions not desired belong to another group member.
                let key = (topic.clone(), *partition);
                if *partition < 0 || !p.desired || p.hi_offset < 0 || !state.owned.contains(&key) {
                    continue;
                }
                // Nothing committed yet: the group starts from the beginning.
                let from = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                state.lag.insert(key, (p.hi_offset - from).max(0));
            }
        }
    }
}

impl ConsumerContext for LagReporter {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.lag.revoked(tpl);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.lag.assigned(tpl);
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
        .create_with_context(LagReporter {
            lag: Arc::default(),
        })
}

#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("views kept changing under this projector (another instance?); retrying")]
    Contended,
    #[error("kafka: dead-letter publication failed: {0}")]
    DeadLetter(String),
    #[error("the view store refuses a view it stored before: {0}; retrying")]
    Stuck(String),
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
}

/// Which collections a batch is folded into; `None` skips that view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collections {
    pub task_views: Option<String>,
    pub task_facts: Option<String>,
    pub users: Option<String>,
}

impl Collections {
    /// What the live projector maintains.
    pub fn live() -> Self {
        Collections {
            task_views: Some(TaskView::COLLECTION.to_owned()),
            task_facts: Some(TaskFacts::COLLECTION.to_owned()),
            users: Some(UserView::COLLECTION.to_owned()),
        }
    }
}

/// Folds decoded events into views with version-guarded bulk writes.
/// Shared by the live consumer loop and `projector rebuild`.
#[derive(Clone)]
pub struct ViewWriter {
    pub(crate) db: Database,
    pub(crate) collections: Collections,
    remembered: Arc<Remembered>,
}

/// Views remembered per collection at most; when full, that collection's
/// memory is emptied (bounded, and a miss costs one read).
pub const VIEWS_REMEMBERED: usize = 50_000;

/// The views this writer last wrote or read, by collection and id, so a
/// batch folds onto them without reading them back. Only a shortcut: every
/// write is still guarded by the version it folded onto, and a stream whose
/// guard fails is read from MongoDB again. So another writer (a second
/// projector after a rebalance, a rebuild's swap) costs a re-read, never
/// a wrong view.
#[derive(Default)]
struct Remembered(std::sync::Mutex<ByCollection>);

/// Collection name → view id → the view (a `V: View` of that collection).
type ByCollection = HashMap<String, HashMap<String, Box<dyn Any + Send>>>;

impl Remembered {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByCollection> {
        // A panic while holding it leaves entries that are each whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get<V: View>(&self, collection: &str, id: &str) -> Option<V> {
        self.lock()
            .get(collection)?
            .get(id)?
            .downcast_ref::<V>()
            .cloned()
    }

    fn put<V: View>(&self, collection: &str, views: impl IntoIterator<Item = V>) {
        let mut all = self.lock();
        let known = all.entry(collection.to_owned()).or_default();
        for view in views {
            if known.len() >= VIEWS_REMEMBERED {
                known.clear();
            }
            known.insert(view.id().to_owned(), Box::new(view));
        }
    }

    fn forget_all(&self) {
        self.lock().clear();
    }

    fn forget(&self, collection: &str, ids: impl IntoIterator<Item = String>) {
        if let Some(known) = self.lock().get_mut(collection) {
            for id in ids {
                known.remove(&id);
            }
        }
    }
}

/// What one stream's events did in a batch.
#[derive(Default)]
pub(crate) struct StreamOutcome {
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) gaps: u64,
    pub(crate) poison: Vec<(usize, String)>,
    /// Events whose view the store refused (see [`write_errors`]), with the
    /// reason: dead-lettered like poison.
    pub(crate) refused: Vec<(usize, String)>,
    /// Where the stream stopped at a gap: the gap event's batch index and
    /// the first missing version.
    pub(crate) gap: Option<(usize, u64)>,
}

/// What a batch did, for metrics.
#[derive(Default)]
struct BatchOutcome {
    applied: u64,
    duplicates: u64,
    gaps: u64,
    dead_lettered: u64,
    refused: u64,
    /// Each gap: the gap event's batch index and the first missing version.
    gaps_at: Vec<(usize, u64)>,
    /// Streams whose gap was filled from the log, and the events it took.
    repaired_streams: u64,
    repaired_events: u64,
}

impl BatchOutcome {
    fn add(&mut self, s: &StreamOutcome) {
        self.applied += s.applied;
        self.duplicates += s.duplicates;
        self.gaps += s.gaps;
        self.gaps_at.extend(s.gap);
    }
}

impl Projector {
    /// Subscribes to the task and user event topics.
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
        let user_events = topics.user_events();
        consumer.subscribe(&[&task_events, &user_events])?;
        Ok(Projector {
            consumer: Arc::new(consumer),
            producer,
            writer: ViewWriter::new(db, Collections::live()),
            topics,
            settings,
            kafka_error_rounds: AtomicU32::new(0),
            brokers: brokers.to_owned(),
            store_process: std::sync::Mutex::new(None),
        })
    }

    /// Consumes until `shutdown`: the batch in hand is finished and
    /// committed first. Never returns an error: failures are logged,
    /// counted and retried (the batch is replayed; the views absorb it).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("projector consuming");
        match store_process(&self.writer.db).await {
            Ok(process) => {
                self.set_store_process(process);
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell the view store's process yet"),
        }
        loop {
            let batch = self.next_batch(&shutdown).await;
            if batch.is_empty() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            if let Err(e) =
                crate::rebuild::honour_pause(&self.writer.db, &self.writer.collections, &shutdown)
                    .await
            {
                tracing::warn!(error = %e, "cannot read the rebuild control documents; carrying on");
            }
            metrics::histogram!("projector_batch_size").record(batch.len() as f64);
            let outcome = loop {
                match self.handle(&batch).await {
                    Ok(outcome) => break Some(outcome),
                    Err(e) => {
                        // What this batch wrote may be gone (a store that
                        // restarted loses what it had not journaled): fold
                        // the retry onto what the store holds, not onto the
                        // views remembered from the failed attempt.
                        self.writer.forget_all();
                        metrics::counter!("projector_errors_total").increment(1);
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
            self.commit(&batch).await;
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
        let mut tasks = Vec::new();
        let mut users = Vec::new();
        let mut poison: Vec<(usize, String)> = Vec::new();
        let task_topic = self.topics.task_events();
        let user_topic = self.topics.user_events();
        for (i, msg) in batch.iter().enumerate() {
            let env = match envelope_of(msg) {
                Ok(env) => env,
                Err(e) => {
                    poison.push((i, e.to_string()));
                    continue;
                }
            };
            if msg.topic() == task_topic {
                tasks.push((i, env));
            } else if msg.topic() == user_topic {
                users.push((i, env));
            } else {
                poison.push((i, format!("unexpected topic {}", msg.topic())));
            }
        }
        let (outcome, more_poison) = self.writer.apply(tasks, users).await?;
        let mut outcome = outcome;
        if !outcome.gaps_at.is_empty() {
            self.repair(batch, &mut outcome).await?;
        }
        poison.extend(more_poison);
        poison.sort_by_key(|(i, _)| *i);
        self.dead_letter(batch, &poison).await?;
        outcome.dead_lettered = poison.len() as u64;
        if outcome.applied > 0 || outcome.refused > 0 {
            self.journal_barrier().await?;
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
        let task_topic = self.topics.task_events();
        let (mut tasks, mut users) = (Vec::new(), Vec::new());
        // Indices past the batch: nothing found in the log is dead-lettered
        // again (it was dealt with when it was consumed).
        for env in found {
            match env.stream_type {
                events::StreamType::Task => tasks.push((usize::MAX, env)),
                events::StreamType::User => users.push((usize::MAX, env)),
            }
        }
        for (i, msg) in batch.iter().enumerate() {
            let Ok(env) = envelope_of(msg) else { continue };
            if !streams.contains(&env.stream_id) {
                continue;
            }
            if msg.topic() == task_topic {
                tasks.push((i, env));
            } else {
                users.push((i, env));
            }
        }
        let (again, _) = self.writer.apply(tasks, users).await?;
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

    /// Commits, per partition, the offset after the batch's last message.
    async fn commit(&self, batch: &[OwnedMessage]) {
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for msg in batch {
            let e = next
                .entry((msg.topic().to_owned(), msg.partition()))
                .or_insert(0);
            *e = (*e).max(msg.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(error = %e, "cannot build the offset commit");
                return;
            }
        }
        let consumer = Arc::clone(&self.consumer);
        // A synchronous commit blocks on the broker's answer: keep it off
        // the async workers.
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {}
            // After a rebalance the partitions may belong to another member,
            // which replays from the last commit; the views absorb that.
            Ok(Err(e)) => tracing::warn!(error = %e, "offset commit failed"),
            Err(e) => tracing::warn!(error = %e, "offset commit task failed"),
        }
    }
}

impl ViewWriter {
    pub fn new(db: Database, collections: Collections) -> Self {
        ViewWriter {
            db,
            collections,
            remembered: Arc::default(),
        }
    }

    /// Forgets every remembered view: the next batch reads them from the store.
    pub(crate) fn forget_all(&self) {
        self.remembered.forget_all();
    }

    /// Folds a batch of task and user events (each with its index in the
    /// batch) into every configured view. Returns the counts and the events
    /// that can never apply (with their batch index and reason).
    async fn apply(
        &self,
        tasks: Vec<(usize, EventEnvelope)>,
        users: Vec<(usize, EventEnvelope)>,
    ) -> Result<(BatchOutcome, Vec<(usize, String)>), BatchError> {
        let mut outcome = BatchOutcome::default();
        let mut poison = Vec::new();
        // An event whose view any collection refused is dead-lettered once.
        let mut refused: Vec<(usize, String)> = Vec::new();
        // Poison is decided by the event alone, so the task view and the
        // facts agree on it: take it (and the counts) from the view the
        // projector serves first, and only the writes from the facts.
        match (&self.collections.task_views, &self.collections.task_facts) {
            (Some(views), facts) => {
                if let Some(facts) = facts {
                    for s in self.project::<TaskFacts>(facts, tasks.clone()).await? {
                        refused.extend(s.refused);
                        // The facts may lag the view (a write lost in one
                        // collection only): their gaps are repaired too.
                        outcome.gaps_at.extend(s.gap);
                    }
                }
                for s in self.project::<TaskView>(views, tasks).await? {
                    outcome.add(&s);
                    poison.extend(s.poison);
                    refused.extend(s.refused);
                }
            }
            (None, Some(facts)) => {
                for s in self.project::<TaskFacts>(facts, tasks).await? {
                    outcome.add(&s);
                    poison.extend(s.poison);
                    refused.extend(s.refused);
                }
            }
            (None, None) => {}
        }
        if let Some(users_collection) = &self.collections.users {
            for s in self.project::<UserView>(users_collection, users).await? {
                outcome.add(&s);
                poison.extend(s.poison);
                refused.extend(s.refused);
            }
        }
        refused.sort_by_key(|(i, _)| *i);
        refused.dedup_by_key(|(i, _)| *i);
        refused.retain(|(i, _)| !poison.iter().any(|(p, _)| p == i));
        outcome.refused = refused.len() as u64;
        poison.extend(refused);
        Ok((outcome, poison))
    }

    /// Folds each stream's events into its view and writes the changed
    /// views in one bulk round trip, each guarded by the version it was
    /// folded onto. The starting views come from memory ([`Remembered`]),
    /// or are taken to be absent for a stream whose events start at its
    /// first version, or are read. A guard that fails (another writer moved
    /// the view, or a redelivered stream did exist) re-reads and re-folds
    /// just those streams.
    async fn project<V: View>(
        &self,
        collection: &str,
        events: Vec<(usize, EventEnvelope)>,
    ) -> Result<Vec<StreamOutcome>, BatchError> {
        let mut pending: HashMap<Uuid, Vec<(usize, EventEnvelope)>> = HashMap::new();
        for (i, env) in events {
            pending.entry(env.stream_id).or_default().push((i, env));
        }
        for stream in pending.values_mut() {
            // Offset order within a partition is version order already;
            // sorting also repairs re-deliveries that landed in one batch.
            stream.sort_by_key(|(_, env)| env.version);
        }
        let collection = self.db.collection::<V>(collection);
        let namespace = collection.namespace();
        let mut done = Vec::new();
        // Streams whose guard failed: their views are read, not recalled.
        let mut read_again: HashSet<Uuid> = HashSet::new();
        // Streams whose view the store refused: written one event at a
        // time, so that only the event it refuses is set aside.
        let mut careful: HashSet<Uuid> = HashSet::new();
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            if pending.is_empty() {
                return Ok(done);
            }
            let mut current: HashMap<String, V> = HashMap::with_capacity(pending.len());
            let mut ids = Vec::new();
            let mut recalled: HashSet<Uuid> = HashSet::new();
            for (stream_id, stream) in &pending {
                let id = stream_id.to_string();
                if !read_again.contains(stream_id) {
                    if let Some(view) = self.remembered.get::<V>(collection.name(), &id) {
                        current.insert(id, view);
                        recalled.insert(*stream_id);
                        continue;
                    }
                    if stream.first().is_some_and(|(_, env)| env.version == 1) {
                        recalled.insert(*stream_id);
                        continue;
                    }
                }
                ids.push(id);
            }
            if !ids.is_empty() {
                let mut cursor = collection.find(doc! { "_id": { "$in": &ids } }).await?;
                let mut read = Vec::with_capacity(ids.len());
                while let Some(view) = cursor.try_next().await? {
                    current.insert(view.id().to_owned(), view.clone());
                    read.push(view);
                }
                self.remembered.put(collection.name(), read);
            }
            let mut written = Vec::new();
            let mut writes = Vec::new();
            let mut outcomes: Vec<(Uuid, StreamOutcome)> = Vec::new();
            // A gap over a recalled start may only mean that another writer
            // moved the view: read it and fold again before calling it a gap.
            let mut stale: Vec<Uuid> = Vec::new();
            let mut one_by_one: Vec<Uuid> = Vec::new();
            for (stream_id, stream) in &pending {
                if careful.contains(stream_id) {
                    one_by_one.push(*stream_id);
                    continue;
                }
                let start = current.get(&stream_id.to_string());
                let (view, outcome) = fold(start, stream);
                if outcome.gaps > 0 && recalled.contains(stream_id) {
                    stale.push(*stream_id);
                    continue;
                }
                let start_version = start.map(View::version).unwrap_or(0);
                if let Some(view) = view.filter(|v| v.version() > start_version) {
                    let Ok(replacement) = bson::to_document(&view) else {
                        // Not even encodable: find the event that did it.
                        careful.insert(*stream_id);
                        continue;
                    };
                    written.push((*stream_id, view));
                    writes.push((
                        *stream_id,
                        guarded(&namespace, *stream_id, start_version, replacement),
                    ));
                }
                outcomes.push((*stream_id, outcome));
            }
            let report = self.write(&writes).await?;
            let mut conflicts = report.conflicts;
            conflicts.extend(stale);
            let refused: HashSet<Uuid> = report.refused.iter().map(|(id, _)| *id).collect();
            for (stream_id, why) in &report.refused {
                tracing::warn!(
                    collection = collection.name(),
                    stream_id = %stream_id,
                    reason = %why,
                    "the view store refused a view; writing its events one at a time"
                );
            }
            careful.extend(refused.iter().copied());
            for stream_id in one_by_one {
                let start = current.get(&stream_id.to_string());
                let Some(stream) = pending.get(&stream_id) else {
                    continue;
                };
                match self.isolate(&collection, stream_id, start, stream).await? {
                    Some((view, outcome)) => {
                        written.extend(view.map(|v| (stream_id, v)));
                        outcomes.push((stream_id, outcome));
                    }
                    None => conflicts.push(stream_id),
                }
            }
            self.remembered
                .forget(collection.name(), conflicts.iter().map(Uuid::to_string));
            read_again.extend(conflicts.iter().copied());
            self.remembered.put(
                collection.name(),
                written
                    .into_iter()
                    .filter(|(id, _)| !conflicts.contains(id) && !refused.contains(id))
                    .map(|(_, view)| view),
            );
            for (stream_id, outcome) in outcomes {
                if !conflicts.contains(&stream_id) && !refused.contains(&stream_id) {
                    pending.remove(&stream_id);
                    done.push(outcome);
                }
            }
        }
        if pending.is_empty() {
            Ok(done)
        } else {
            Err(BatchError::Contended)
        }
    }

    /// Writes one stream's events one at a time, each guarded by the
    /// version before it, after the store refused the view they fold into.
    /// An event whose view is refused is set aside (returned in
    /// [`StreamOutcome::refused`], to be dead-lettered) and its version is
    /// spent without its change, so the stream's later events still apply
    /// and a redelivery of it is a duplicate. A refused creation leaves no
    /// view; the stream's later events are then poison (not created first).
    /// `None`: another writer moved the view (read it again).
    async fn isolate<V: View>(
        &self,
        collection: &Collection<V>,
        stream_id: Uuid,
        start: Option<&V>,
        stream: &[(usize, EventEnvelope)],
    ) -> Result<Option<(Option<V>, StreamOutcome)>, BatchError> {
        let namespace = collection.namespace();
        let mut view = start.cloned();
        let mut outcome = StreamOutcome::default();
        let mut changed = false;
        for (i, env) in stream {
            match V::apply(view.as_ref(), env) {
                Ok(Applied::Advanced(next)) => {
                    let guard = view.as_ref().map(View::version).unwrap_or(0);
                    match self.write_one(&namespace, stream_id, guard, &next).await? {
                        One::Written => {
                            view = Some(next);
                            outcome.applied += 1;
                            changed = true;
                        }
                        One::Moved => return Ok(None),
                        One::Refused(why) => {
                            tracing::warn!(
                                collection = collection.name(),
                                stream_id = %stream_id,
                                version = env.version,
                                event_type = %env.event_type,
                                reason = %why,
                                "the view store refused this event's view: dead-lettering it"
                            );
                            outcome.refused.push((*i, why));
                            let Some(before) = view.take() else { continue };
                            let spent = before.with_version(env.version);
                            match self.write_one(&namespace, stream_id, guard, &spent).await? {
                                One::Written => {
                                    view = Some(spent);
                                    changed = true;
                                }
                                One::Moved => return Ok(None),
                                One::Refused(why) => return Err(BatchError::Stuck(why)),
                            }
                        }
                    }
                }
                Ok(Applied::Duplicate) => outcome.duplicates += 1,
                Ok(Applied::Gap { expected, got }) => {
                    outcome.gaps += 1;
                    outcome.gap = Some((*i, expected));
                    report_gap::<V>(env, expected, got);
                    break;
                }
                Err(poison) => outcome.poison.push((*i, poison.to_string())),
            }
        }
        Ok(Some((view.filter(|_| changed), outcome)))
    }

    /// One guarded replacement on its own.
    async fn write_one<V: View>(
        &self,
        namespace: &Namespace,
        stream_id: Uuid,
        guard: u64,
        view: &V,
    ) -> Result<One, BatchError> {
        let replacement = match bson::to_document(view) {
            Ok(r) => r,
            Err(e) => {
                return Ok(One::Refused(format!(
                    "the view cannot be encoded as BSON: {e}"
                )))
            }
        };
        let model = guarded(namespace, stream_id, guard, replacement);
        let report = self.write(&[(stream_id, model)]).await?;
        Ok(if !report.conflicts.is_empty() {
            One::Moved
        } else if let Some((_, why)) = report.refused.into_iter().next() {
            One::Refused(why)
        } else {
            One::Written
        })
    }

    /// One unordered bulk write. A transient failure (or one not known to
    /// be about a document) fails the batch, which is retried. Per-document
    /// failures are reported per stream: a failed guard as a conflict, a
    /// refused document as refused (the other models were written). A
    /// refusal of the whole command names no document: the models are
    /// written again in halves until each refused one stands alone (the
    /// halves that pass are written; a model written before the refusal
    /// fails its guard the second time and is read again).
    async fn write(&self, writes: &[(Uuid, ReplaceOneModel)]) -> Result<WriteReport, BatchError> {
        let mut report = WriteReport::default();
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(1);
        ranges.push(0..writes.len());
        while let Some(range) = ranges.pop() {
            let Some(chunk) = writes.get(range.clone()).filter(|c| !c.is_empty()) else {
                continue;
            };
            let models: Vec<mongodb::options::WriteModel> =
                chunk.iter().map(|(_, m)| m.clone().into()).collect();
            let e = match self.db.client().bulk_write(models).ordered(false).await {
                Ok(_) => continue,
                Err(e) => e,
            };
            if let ErrorKind::BulkWrite(bulk) = e.kind.as_ref() {
                if bulk.write_concern_errors.is_empty()
                    && !bulk.write_errors.is_empty()
                    && write_errors::inner(&e).is_none()
                {
                    let mut transient = false;
                    for (i, w) in &bulk.write_errors {
                        let Some((id, _)) = chunk.get(*i) else {
                            continue;
                        };
                        if w.code == DUPLICATE_KEY {
                            // The guard `{_id, version: <read>}` matched
                            // nothing, so the upsert tried to insert an `_id`
                            // that exists: the view moved.
                            report.conflicts.push(*id);
                            continue;
                        }
                        let name = w.code_name.as_deref().unwrap_or("");
                        match write_errors::classify_write_error(w.code, name, &w.message) {
                            Failure::Refused(why) => report.refused.push((*id, why)),
                            Failure::Transient | Failure::Other => transient = true,
                        }
                    }
                    if transient {
                        return Err(e.into());
                    }
                    continue;
                }
            }
            match write_errors::classify(&e) {
                Failure::Refused(why) if chunk.len() == 1 => report.refused.push((chunk[0].0, why)),
                Failure::Refused(_) => {
                    let mid = range.start + chunk.len() / 2;
                    ranges.push(mid..range.end);
                    ranges.push(range.start..mid);
                }
                Failure::Transient => return Err(e.into()),
                Failure::Other => {
                    tracing::error!(error = %e, "view write failed for a reason not known to pass; retrying");
                    return Err(e.into());
                }
            }
        }
        Ok(report)
    }
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

/// What one bulk write of guarded replacements did, per stream.
#[derive(Default)]
struct WriteReport {
    /// The version guard failed: another writer moved the view.
    conflicts: Vec<Uuid>,
    /// The store refuses the view (never retried as it is), with the reason.
    refused: Vec<(Uuid, String)>,
}

/// What writing one view on its own did.
enum One {
    Written,
    Moved,
    Refused(String),
}

/// The version-guarded upsert of one view.
fn guarded(
    namespace: &Namespace,
    stream_id: Uuid,
    guard: u64,
    view: bson::Document,
) -> ReplaceOneModel {
    ReplaceOneModel::builder()
        .namespace(namespace.clone())
        .filter(doc! { "_id": stream_id.to_string(), "version": guard as i64 })
        .replacement(view)
        .upsert(true)
        .build()
}

fn report_gap<V: View>(env: &EventEnvelope, expected: u64, got: u64) {
    tracing::warn!(
        stream_id = %env.stream_id,
        stream_type = V::STREAM_TYPE.as_str(),
        expected,
        got,
        "version gap: not applying past it until the missing version arrives"
    );
}

const DUPLICATE_KEY: i32 = 11000;

/// Folds one stream's batch (sorted by version) into its view. Stops at the
/// first gap: nothing after a missing version is applied.
pub(crate) fn fold<V: View>(
    start: Option<&V>,
    stream: &[(usize, EventEnvelope)],
) -> (Option<V>, StreamOutcome) {
    let mut view = start.cloned();
    let mut outcome = StreamOutcome::default();
    for (i, env) in stream {
        match V::apply(view.as_ref(), env) {
            Ok(Applied::Advanced(v)) => {
                view = Some(v);
                outcome.applied += 1;
            }
            Ok(Applied::Duplicate) => outcome.duplicates += 1,
            Ok(Applied::Gap { expected, got }) => {
                outcome.gaps += 1;
                outcome.gap = Some((*i, expected));
                report_gap::<V>(env, expected, got);
                break;
            }
            Err(poison) => outcome.poison.push((*i, poison.to_string())),
        }
    }
    (view, outcome)
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
