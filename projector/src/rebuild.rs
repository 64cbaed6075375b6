//! `projector rebuild`: rebuild a view from the first event into a fresh
//! collection while the live one keeps serving, then swap it in atomically.
//!
//! How the swap stays gap-free while the live projector keeps running:
//!
//! 1. The rebuild reads the topic from the beginning with its own
//!    partition assignment (no consumer group: the live group is not
//!    disturbed) and folds it into `<view>__<timestamp>` with the same
//!    folds as the live projector (the only writer of that collection, it
//!    keeps its views in memory and writes them unguarded), in rounds, until it is
//!    within [`PAUSE_THRESHOLD`] events of the log's end.
//! 2. It asks the live projector to pause (a document in
//!    `projector_control`). The live projector honours it before its next
//!    batch, so from then on nothing is written to the old collection except
//!    a batch that was already in flight, whose messages are in the log.
//! 3. The rebuild reads to the log's end as of now (which covers that
//!    in-flight batch), renames the new collection over the live one
//!    (`renameCollection` with `dropTarget`: atomic for readers), and lifts
//!    the pause. The live projector resumes where it was, now writing into
//!    the rebuilt collection; what it re-reads is a duplicate to the guard.
//!
//! Interrupted (Ctrl-C) it drops its collection and lifts its pause. Killed
//! (SIGKILL), it leaves the live view untouched: the live projector stops
//! waiting after [`MAX_PAUSE`], and the next rebuild takes over the dead
//! one's lock (at once when the holder was a process on the same host, else
//! after [`LOCK_STALE`] without a heartbeat), lifts its pause and drops its
//! leftover collection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use events::kafka::envelope_of;
use events::topics::Topics;
use events::{EventEnvelope, StreamType};
use mongodb::error::ErrorKind;
use mongodb::Database;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::control::{heartbeat, pause_live, release, take_lock};
pub use crate::control::{CONTROL, LOCK_STALE, MAX_PAUSE};
use crate::fold::{by_stream, fold};
use crate::replay::{
    detached_consumer, plan, progress_bar, read_ranges, PartitionRange, ReplayFrom,
};
use crate::write_errors::{self, Failure};
use read_model::analytics::TaskFacts;
use read_model::views::{Applied, ProjectView, TaskView, UserView, View};

/// The rebuild pauses the live projector once it is this close to the end.
pub const PAUSE_THRESHOLD: i64 = 500;
/// Catch-up rounds before the rebuild pauses the live projector regardless.
const MAX_ROUNDS: u32 = 8;

/// Which view to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `task_views`, from `task-events`.
    Tasks,
    /// `task_facts` (the analytics projection), from `task-events`.
    Analytics,
    /// `project_views`, from `project-events`.
    Projects,
    /// `users`, from `user-events`.
    Users,
}

impl Target {
    pub fn live_collection(self) -> &'static str {
        match self {
            Target::Tasks => TaskView::COLLECTION,
            Target::Analytics => TaskFacts::COLLECTION,
            Target::Projects => ProjectView::COLLECTION,
            Target::Users => UserView::COLLECTION,
        }
    }

    fn stream_type(self) -> StreamType {
        match self {
            Target::Tasks | Target::Analytics => StreamType::Task,
            Target::Projects => StreamType::Project,
            Target::Users => StreamType::User,
        }
    }

    async fn create_indexes(
        self,
        db: &Database,
        collection: &str,
    ) -> Result<(), mongodb::error::Error> {
        let c = db.collection::<Document>(collection);
        match self {
            Target::Tasks => c
                .create_indexes(read_model::views::task_indexes())
                .await
                .map(|_| ()),
            Target::Analytics => read_model::analytics::ensure_facts_indexes(db, collection).await,
            Target::Projects => c
                .create_indexes(read_model::views::project_indexes())
                .await
                .map(|_| ()),
            Target::Users => c
                .create_indexes(read_model::views::user_indexes())
                .await
                .map(|_| ()),
        }
    }

    /// Folds a batch into the rebuild's own collection (see [`RebuildState`]).
    async fn apply(
        self,
        state: &mut RebuildState,
        events: Vec<EventEnvelope>,
    ) -> Result<Counts, mongodb::error::Error> {
        let (db, collection) = (&state.db, state.collection.as_str());
        match self {
            Target::Tasks => apply_exclusive(&mut state.tasks, db, collection, events).await,
            Target::Analytics => apply_exclusive(&mut state.facts, db, collection, events).await,
            Target::Projects => apply_exclusive(&mut state.projects, db, collection, events).await,
            Target::Users => apply_exclusive(&mut state.users, db, collection, events).await,
        }
    }
}

/// The rebuild is the only writer of its collection until the swap, so it
/// keeps every view it built in memory and never reads one back: a batch is
/// one fold in memory and one bulk write of the views it changed. Memory
/// grows with the number of streams (a task view is a few hundred bytes).
pub struct RebuildState {
    db: Database,
    /// The collection being built.
    collection: String,
    tasks: HashMap<uuid::Uuid, TaskView>,
    facts: HashMap<uuid::Uuid, TaskFacts>,
    projects: HashMap<uuid::Uuid, ProjectView>,
    users: HashMap<uuid::Uuid, UserView>,
}

async fn apply_exclusive<V: View>(
    views: &mut HashMap<uuid::Uuid, V>,
    db: &Database,
    collection: &str,
    events: Vec<EventEnvelope>,
) -> Result<Counts, mongodb::error::Error> {
    let streams = by_stream(events.into_iter().enumerate());
    let mut counts = Counts::default();
    let mut changed = Vec::new();
    // Each changed stream's view before this batch, in case the store
    // refuses the folded one.
    let mut before: HashMap<uuid::Uuid, Option<V>> = HashMap::new();
    let mut batches: HashMap<uuid::Uuid, Vec<(usize, EventEnvelope)>> = HashMap::new();
    for (id, stream) in streams {
        let start = views.get(&id);
        let start_version = start.map(View::version).unwrap_or(0);
        let (view, outcome) = fold(start, &stream);
        counts.applied += outcome.applied;
        counts.duplicates += outcome.duplicates;
        counts.gaps += outcome.gaps;
        counts.poison += outcome.poison.len() as u64;
        if let Some(view) = view.filter(|v| v.version() > start_version) {
            changed.push(id);
            before.insert(id, views.insert(id, view));
            batches.insert(id, stream);
        }
    }
    if changed.is_empty() {
        return Ok(counts);
    }
    let namespace = db.collection::<Document>(collection).namespace();
    let mut models = Vec::with_capacity(changed.len());
    let mut refused: Vec<uuid::Uuid> = Vec::new();
    let mut written: Vec<uuid::Uuid> = Vec::with_capacity(changed.len());
    for id in &changed {
        match views.get(id).and_then(|v| upsert(&namespace, id, v)) {
            Some(m) => {
                models.push(m);
                written.push(*id);
            }
            None => refused.push(*id),
        }
    }
    if let Err(e) = db.client().bulk_write(models).ordered(false).await {
        // The live projector's rule: a document the store refuses is set
        // aside; anything else fails the rebuild (which can be run again).
        match e.kind.as_ref() {
            ErrorKind::BulkWrite(b)
                if write_errors::inner(&e).is_none() && !b.write_errors.is_empty() =>
            {
                for (i, w) in &b.write_errors {
                    let name = w.code_name.as_deref().unwrap_or("");
                    match write_errors::classify_write_error(w.code, name, &w.message) {
                        Failure::Refused(_) => refused.extend(written.get(*i).copied()),
                        _ => return Err(e),
                    }
                }
            }
            _ if matches!(write_errors::classify(&e), Failure::Refused(_)) => {
                // The refusal names no document: write them one at a time.
                for id in &written {
                    if let Some(view) = views.get(id) {
                        if !write_one(db, &namespace, id, view).await? {
                            refused.push(*id);
                        }
                    }
                }
            }
            _ => return Err(e),
        }
    }
    // A refused stream is written again one event at a time from its view
    // before the batch; a refused event's version is spent unchanged.
    for id in refused {
        let Some(stream) = batches.get(&id) else {
            continue;
        };
        let mut view = before.remove(&id).flatten();
        for (_, env) in stream {
            let Ok(Applied::Advanced(next)) = V::apply(view.as_ref(), env) else {
                continue;
            };
            if write_one(db, &namespace, &id, &next).await? {
                view = Some(next);
                continue;
            }
            tracing::warn!(
                stream_id = %id,
                version = env.version,
                "the view store refused this event's view: skipped"
            );
            counts.poison += 1;
            counts.applied = counts.applied.saturating_sub(1);
            if let Some(v) = view.take() {
                let spent = v.with_version(env.version);
                write_one(db, &namespace, &id, &spent).await?;
                view = Some(spent);
            }
        }
        match view {
            Some(v) => views.insert(id, v),
            None => views.remove(&id),
        };
    }
    Ok(counts)
}

/// The unguarded upsert of one rebuilt view (`None`: not encodable).
fn upsert<V: View>(
    namespace: &mongodb::Namespace,
    id: &uuid::Uuid,
    view: &V,
) -> Option<mongodb::options::WriteModel> {
    let replacement = bson::to_document(view).ok()?;
    Some(
        mongodb::options::ReplaceOneModel::builder()
            .namespace(namespace.clone())
            .filter(doc! { "_id": id.to_string() })
            .replacement(replacement)
            .upsert(true)
            .build()
            .into(),
    )
}

/// Writes one rebuilt view; `false` when the store refuses it.
async fn write_one<V: View>(
    db: &Database,
    namespace: &mongodb::Namespace,
    id: &uuid::Uuid,
    view: &V,
) -> Result<bool, mongodb::error::Error> {
    let Some(model) = upsert(namespace, id, view) else {
        return Ok(false);
    };
    match db.client().bulk_write([model]).await {
        Ok(_) => Ok(true),
        Err(e) => {
            let refused = match e.kind.as_ref() {
                ErrorKind::BulkWrite(b)
                    if write_errors::inner(&e).is_none() && !b.write_errors.is_empty() =>
                {
                    b.write_errors.values().all(|w| {
                        let name = w.code_name.as_deref().unwrap_or("");
                        matches!(
                            write_errors::classify_write_error(w.code, name, &w.message),
                            Failure::Refused(_)
                        )
                    })
                }
                _ => matches!(write_errors::classify(&e), Failure::Refused(_)),
            };
            if refused {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    pub brokers: String,
    pub topics: Topics,
    pub target: Target,
    /// Report the plan and change nothing.
    pub dry_run: bool,
    pub progress: bool,
    /// Events per MongoDB round trip.
    pub batch_size: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub poison: u64,
    pub undecodable: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.read += o.read;
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
        self.poison += o.poison;
        self.undecodable += o.undecodable;
    }
}

#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub target: Target,
    /// The collection built (and, unless a dry run, swapped in).
    pub collection: String,
    /// Events in the log when the rebuild started (the dry run's plan).
    pub planned: u64,
    pub counts: Counts,
    pub elapsed: Duration,
    /// How long the live projector was asked to pause.
    pub paused: Duration,
    pub swapped: bool,
}

impl RebuildReport {
    pub fn rate(&self) -> f64 {
        self.counts.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds `options.target` from the first event; see the module docs.
pub async fn rebuild(
    db: &Database,
    options: &RebuildOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let live = options.target.live_collection();
    let collection = format!("{live}__{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let topic = options.topics.for_stream(options.target.stream_type());
    let consumer = std::sync::Arc::new(detached_consumer(&options.brokers)?);
    let first = {
        let consumer = std::sync::Arc::clone(&consumer);
        tokio::task::spawn_blocking(move || plan(&consumer, &[topic], ReplayFrom::Beginning))
            .await??
    };
    let planned: u64 = first
        .values()
        .map(|r| (r.end - r.start).max(0) as u64)
        .sum();
    let mut report = RebuildReport {
        target: options.target,
        collection: collection.clone(),
        planned,
        counts: Counts::default(),
        elapsed: Duration::ZERO,
        paused: Duration::ZERO,
        swapped: false,
    };
    if options.dry_run {
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    take_lock(db, live).await?;
    let result = build_and_swap(
        db,
        options,
        &collection,
        consumer,
        first,
        &mut report,
        &shutdown,
    )
    .await;
    release(db, live).await;
    if result.is_err() || !report.swapped {
        let _ = db.collection::<Document>(&collection).drop().await;
    }
    report.elapsed = started.elapsed();
    result.map(|()| report)
}

async fn build_and_swap(
    db: &Database,
    options: &RebuildOptions,
    collection: &str,
    consumer: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    first: HashMap<(String, i32), PartitionRange>,
    report: &mut RebuildReport,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let live = options.target.live_collection();
    drop_leftovers(db, live).await?;
    db.create_collection(collection).await?;
    let mut state = RebuildState {
        db: db.clone(),
        collection: collection.to_owned(),
        tasks: HashMap::new(),
        facts: HashMap::new(),
        projects: HashMap::new(),
        users: HashMap::new(),
    };
    let bar = progress_bar(report.planned, options.progress, &format!("rebuild {live}"));

    let mut ranges = first;
    let mut paused_at: Option<Instant> = None;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let counts = run_round(&consumer, &ranges, &mut state, options, &bar, shutdown).await?;
        report.counts.add(counts);
        heartbeat(db, live).await?;
        if paused_at.is_some() {
            break;
        }
        // Next round: from where this one ended to the log's end now.
        let next = advance(&consumer, &ranges).await?;
        let behind: i64 = next.values().map(|r| (r.end - r.start).max(0)).sum();
        bar.inc_length(behind as u64);
        ranges = next;
        // Writers outpacing the rebuild cannot keep it from finishing: after
        // a few rounds it pauses the live projector however far behind it is.
        if behind <= PAUSE_THRESHOLD || rounds >= MAX_ROUNDS {
            paused_at = Some(Instant::now());
            // Indexes are built once over the loaded documents, not
            // maintained through every bulk write: cheaper, and the
            // collection serves nobody before the swap.
            options.target.create_indexes(db, collection).await?;
            pause_live(db, live).await?;
            // The final round reads to the end as it is once the live
            // projector stopped (or an in-flight batch of it, already in the log).
            let last = advance_from(&consumer, &ranges).await?;
            let extra: i64 = last.values().map(|r| (r.end - r.start).max(0)).sum::<i64>() - behind;
            if extra > 0 {
                bar.inc_length(extra as u64);
            }
            ranges = last;
        }
    }
    if shutdown.is_cancelled() {
        anyhow::bail!("interrupted; the live view is untouched");
    }
    rename_over(db, collection, live).await?;
    // A killed rebuild's last bulk write may still have been in flight on
    // the server when this one started, and recreated its collection after
    // the first clean-up: clean up again now that the swap is done.
    drop_leftovers(db, live).await?;
    report.swapped = true;
    report.paused = paused_at.map(|t| t.elapsed()).unwrap_or_default();
    bar.finish_and_clear();
    Ok(())
}

/// Ranges that continue where `done` ended, up to the log's end now.
async fn advance(
    consumer: &std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    done: &HashMap<(String, i32), PartitionRange>,
) -> anyhow::Result<HashMap<(String, i32), PartitionRange>> {
    let topics: Vec<String> = {
        let mut t: Vec<String> = done.keys().map(|(t, _)| t.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let consumer = std::sync::Arc::clone(consumer);
    let mut now =
        tokio::task::spawn_blocking(move || plan(&consumer, &topics, ReplayFrom::Beginning))
            .await??;
    for (key, range) in now.iter_mut() {
        if let Some(prev) = done.get(key) {
            range.start = prev.end;
        }
    }
    Ok(now)
}

/// Like [`advance`] for ranges not read yet: keeps their starts.
async fn advance_from(
    consumer: &std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    pending: &HashMap<(String, i32), PartitionRange>,
) -> anyhow::Result<HashMap<(String, i32), PartitionRange>> {
    let mut now = advance(consumer, pending).await?;
    for (key, range) in now.iter_mut() {
        if let Some(prev) = pending.get(key) {
            range.start = prev.start;
        }
    }
    Ok(now)
}

/// Reads `ranges` on a blocking thread and folds them in batches, the next
/// batch being read while the previous one is written.
async fn run_round(
    consumer: &std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    ranges: &HashMap<(String, i32), PartitionRange>,
    state: &mut RebuildState,
    options: &RebuildOptions,
    bar: &indicatif::ProgressBar,
    shutdown: &CancellationToken,
) -> anyhow::Result<Counts> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<EventEnvelope>, u64)>(2);
    let reader = {
        let consumer = std::sync::Arc::clone(consumer);
        let ranges = ranges.clone();
        let bar = bar.clone();
        let batch_size = options.batch_size.max(1);
        let stop = shutdown.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut batch = Vec::with_capacity(batch_size);
            let mut undecodable = 0u64;
            read_ranges(&consumer, &ranges, &bar, |msg| {
                if stop.is_cancelled() {
                    anyhow::bail!("interrupted");
                }
                match envelope_of(msg) {
                    Ok(env) => batch.push(env),
                    Err(e) => {
                        undecodable += 1;
                        tracing::warn!(offset = msg.offset(), partition = msg.partition(), error = %e, "skipping an undecodable message");
                    }
                }
                if batch.len() >= batch_size {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    tx.blocking_send((full, std::mem::take(&mut undecodable)))
                        .map_err(|_| anyhow::anyhow!("writer stopped"))?;
                }
                Ok(())
            })?;
            if !batch.is_empty() || undecodable > 0 {
                tx.blocking_send((batch, undecodable))
                    .map_err(|_| anyhow::anyhow!("writer stopped"))?;
            }
            Ok(())
        })
    };
    let mut counts = Counts::default();
    while let Some((events, undecodable)) = rx.recv().await {
        let read = events.len() as u64 + undecodable;
        let mut c = options.target.apply(state, events).await?;
        c.read = read;
        c.undecodable = undecodable;
        counts.add(c);
        heartbeat(&state.db, options.target.live_collection()).await?;
    }
    reader.await??;
    Ok(counts)
}

/// Drops collections left by interrupted rebuilds of `live`.
async fn drop_leftovers(db: &Database, live: &str) -> anyhow::Result<()> {
    let prefix = format!("{live}__");
    let names: Vec<String> = db.list_collection_names().await?;
    for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
        tracing::info!(collection = %name, "dropping a leftover of an interrupted rebuild");
        db.collection::<Document>(&name).drop().await?;
    }
    Ok(())
}

/// Atomically replaces `live` with `built`.
async fn rename_over(db: &Database, built: &str, live: &str) -> anyhow::Result<()> {
    let name = db.name();
    db.client()
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{name}.{built}"),
            "to": format!("{name}.{live}"),
            "dropTarget": true,
        })
        .await?;
    Ok(())
}
