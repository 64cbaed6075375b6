//! The guarded writer: folds a batch's events into the views and writes
//! them with version-guarded bulk writes, for the live consumer.
//!
//! Each changed view is an upsert guarded by the version it was folded onto
//! (`{_id, version: <start>}`), so a view another writer moved fails its
//! guard and is read and folded again, never overwritten. A view the store
//! refuses (see [`write_errors`]) has its stream written one event at a
//! time, so only the refused event is set aside.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bson::doc;
use events::EventEnvelope;
use futures::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::options::ReplaceOneModel;
use mongodb::{Collection, Database, Namespace};
use read_model::analytics::TaskFacts;
use read_model::views::{ProjectView, TaskView, UserView, View};
use uuid::Uuid;

use crate::fold::{by_stream, fold, step, Step, StreamOutcome};
use crate::write_errors::{self, Failure};

/// Why a batch's view writes failed; the batch is retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("views kept changing under this projector (another instance?); retrying")]
    Contended,
    #[error("the view store refuses a view it stored before: {0}; retrying")]
    Stuck(String),
}

/// Which collections a batch is folded into; `None` skips that view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collections {
    pub task_views: Option<String>,
    pub task_facts: Option<String>,
    pub projects: Option<String>,
    pub users: Option<String>,
}

/// A batch's events by the kind of stream they belong to, each with its
/// index in the batch (`usize::MAX` for events read to repair a gap).
#[derive(Debug, Default)]
pub(crate) struct ByKind {
    pub(crate) tasks: Vec<(usize, EventEnvelope)>,
    pub(crate) projects: Vec<(usize, EventEnvelope)>,
    pub(crate) users: Vec<(usize, EventEnvelope)>,
}

impl ByKind {
    /// Files an event under its envelope's stream type.
    pub(crate) fn push(&mut self, index: usize, env: EventEnvelope) {
        match env.stream_type {
            events::StreamType::Task => self.tasks.push((index, env)),
            events::StreamType::Project => self.projects.push((index, env)),
            events::StreamType::User => self.users.push((index, env)),
        }
    }
}

impl Collections {
    /// What the live projector maintains.
    pub fn live() -> Self {
        Collections {
            task_views: Some(TaskView::COLLECTION.to_owned()),
            task_facts: Some(TaskFacts::COLLECTION.to_owned()),
            projects: Some(ProjectView::COLLECTION.to_owned()),
            users: Some(UserView::COLLECTION.to_owned()),
        }
    }

    /// The collections folded into.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [
            &self.task_views,
            &self.task_facts,
            &self.projects,
            &self.users,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
    }
}

/// Folds decoded events into views with version-guarded bulk writes, for
/// the live consumer loop (a rebuild is the only writer of its collection
/// and writes it unguarded, see `rebuild`).
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

/// What a batch did, for metrics.
#[derive(Default)]
pub(crate) struct BatchOutcome {
    pub(crate) applied: u64,
    pub(crate) duplicates: u64,
    pub(crate) gaps: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) refused: u64,
    /// Each gap: the gap event's batch index and the first missing version.
    pub(crate) gaps_at: Vec<(usize, u64)>,
    /// Streams whose gap was filled from the log, and the events it took.
    pub(crate) repaired_streams: u64,
    pub(crate) repaired_events: u64,
}

impl BatchOutcome {
    fn add(&mut self, s: &StreamOutcome) {
        self.applied += s.applied;
        self.duplicates += s.duplicates;
        self.gaps += s.gaps;
        self.gaps_at.extend(s.gap);
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

    /// Folds a batch of task, project and user events (each with its index
    /// in the batch) into every configured view. Returns the counts and the
    /// events that can never apply (with their batch index and reason).
    pub(crate) async fn apply(
        &self,
        batch: ByKind,
    ) -> Result<(BatchOutcome, Vec<(usize, String)>), WriteError> {
        let ByKind {
            tasks,
            projects,
            users,
        } = batch;
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
        let mut single = |streams: Vec<StreamOutcome>| {
            for s in streams {
                outcome.add(&s);
                poison.extend(s.poison);
                refused.extend(s.refused);
            }
        };
        if let Some(collection) = &self.collections.projects {
            single(self.project::<ProjectView>(collection, projects).await?);
        }
        if let Some(collection) = &self.collections.users {
            single(self.project::<UserView>(collection, users).await?);
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
    /// folded onto: [`Self::recall`] the starting views, [`fold_onto`] them
    /// (pure), [`Self::write_guarded`]. A guard that fails (another writer
    /// moved the view, or a redelivered stream did exist) re-reads and
    /// re-folds just those streams.
    async fn project<V: View>(
        &self,
        collection: &str,
        events: Vec<(usize, EventEnvelope)>,
    ) -> Result<Vec<StreamOutcome>, WriteError> {
        let mut pending = by_stream(events);
        let collection = self.db.collection::<V>(collection);
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
            let start = self.recall(&collection, &pending, &read_again).await?;
            let folded = fold_onto(&collection.namespace(), &start, &pending, &careful);
            careful.extend(folded.unencodable.iter().copied());
            let written = self
                .write_guarded(&collection, &start, &pending, folded)
                .await?;
            careful.extend(written.refused.iter().copied());
            read_again.extend(written.conflicts.iter().copied());
            for (stream_id, outcome) in written.settled {
                pending.remove(&stream_id);
                done.push(outcome);
            }
        }
        if pending.is_empty() {
            Ok(done)
        } else {
            Err(WriteError::Contended)
        }
    }

    /// The view each pending stream starts from: from memory
    /// ([`Remembered`]), taken to be absent for a stream whose events start
    /// at its first version, or read (one `$in` find; always for
    /// `read_again`).
    async fn recall<V: View>(
        &self,
        collection: &Collection<V>,
        pending: &Pending,
        read_again: &HashSet<Uuid>,
    ) -> Result<Start<V>, WriteError> {
        let mut start = Start {
            views: HashMap::with_capacity(pending.len()),
            unread: HashSet::new(),
        };
        let mut ids = Vec::new();
        for (stream_id, stream) in pending {
            let id = stream_id.to_string();
            if !read_again.contains(stream_id) {
                if let Some(view) = self.remembered.get::<V>(collection.name(), &id) {
                    start.views.insert(id, view);
                    start.unread.insert(*stream_id);
                    continue;
                }
                if stream.first().is_some_and(|(_, env)| env.version == 1) {
                    start.unread.insert(*stream_id);
                    continue;
                }
            }
            ids.push(id);
        }
        if !ids.is_empty() {
            let mut cursor = collection.find(doc! { "_id": { "$in": &ids } }).await?;
            let mut read = Vec::with_capacity(ids.len());
            while let Some(view) = cursor.try_next().await? {
                start.views.insert(view.id().to_owned(), view.clone());
                read.push(view);
            }
            self.remembered.put(collection.name(), read);
        }
        Ok(start)
    }

    /// Writes the folded views in one bulk write, and the `one_by_one`
    /// streams an event at a time ([`Self::isolate`]); remembers what was
    /// written and forgets what another writer moved.
    async fn write_guarded<V: View>(
        &self,
        collection: &Collection<V>,
        start: &Start<V>,
        pending: &Pending,
        folded: Folded<V>,
    ) -> Result<Written, WriteError> {
        let Folded {
            mut views,
            writes,
            mut outcomes,
            stale,
            one_by_one,
            unencodable: _,
        } = folded;
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
        for stream_id in one_by_one {
            let Some(stream) = pending.get(&stream_id) else {
                continue;
            };
            let from = start.views.get(&stream_id.to_string());
            match self.isolate(collection, stream_id, from, stream).await? {
                Some((view, outcome)) => {
                    views.extend(view.map(|v| (stream_id, v)));
                    outcomes.push((stream_id, outcome));
                }
                None => conflicts.push(stream_id),
            }
        }
        self.remembered
            .forget(collection.name(), conflicts.iter().map(Uuid::to_string));
        let kept = |id: &Uuid| !conflicts.contains(id) && !refused.contains(id);
        self.remembered.put(
            collection.name(),
            views
                .into_iter()
                .filter(|(id, _)| kept(id))
                .map(|(_, view)| view),
        );
        let settled = outcomes.into_iter().filter(|(id, _)| kept(id)).collect();
        Ok(Written {
            settled,
            conflicts,
            refused,
        })
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
    ) -> Result<Option<(Option<V>, StreamOutcome)>, WriteError> {
        let namespace = collection.namespace();
        let mut view = start.cloned();
        let mut outcome = StreamOutcome::default();
        let mut changed = false;
        for (i, env) in stream {
            let next = match step(view.as_ref(), *i, env, &mut outcome) {
                Step::Advanced(next) => next,
                Step::Skipped => continue,
                Step::Gap => break,
            };
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
                        One::Refused(why) => return Err(WriteError::Stuck(why)),
                    }
                }
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
    ) -> Result<One, WriteError> {
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
    async fn write(&self, writes: &[(Uuid, ReplaceOneModel)]) -> Result<WriteReport, WriteError> {
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

/// A batch's events by stream, each in version order (see [`by_stream`]).
type Pending = HashMap<Uuid, Vec<(usize, EventEnvelope)>>;

/// The views a batch folds onto.
struct Start<V> {
    /// Stream id → its view (absent: none yet).
    views: HashMap<String, V>,
    /// Streams whose start was recalled or taken to be absent, not read.
    unread: HashSet<Uuid>,
}

/// What folding the pending streams onto their start gave.
struct Folded<V> {
    /// The changed views, by stream.
    views: Vec<(Uuid, V)>,
    /// Their guarded writes.
    writes: Vec<(Uuid, ReplaceOneModel)>,
    outcomes: Vec<(Uuid, StreamOutcome)>,
    /// A gap over an unread start may only mean that another writer moved
    /// the view: read it and fold again before calling it a gap.
    stale: Vec<Uuid>,
    /// Streams whose view the store refused before: one event at a time.
    one_by_one: Vec<Uuid>,
    /// Views not even encodable: one event at a time next, to find the
    /// event that did it.
    unencodable: Vec<Uuid>,
}

/// What writing the folded views did.
struct Written {
    /// Streams done with, and what their events did.
    settled: Vec<(Uuid, StreamOutcome)>,
    /// Streams another writer moved: read again.
    conflicts: Vec<Uuid>,
    /// Streams whose view the store refused: one event at a time next.
    refused: HashSet<Uuid>,
}

/// Folds every pending stream onto its start (pure): the changed views
/// with their guarded writes, and what each stream's events did.
fn fold_onto<V: View>(
    namespace: &Namespace,
    start: &Start<V>,
    pending: &Pending,
    careful: &HashSet<Uuid>,
) -> Folded<V> {
    let mut folded = Folded {
        views: Vec::new(),
        writes: Vec::new(),
        outcomes: Vec::new(),
        stale: Vec::new(),
        one_by_one: Vec::new(),
        unencodable: Vec::new(),
    };
    for (stream_id, stream) in pending {
        if careful.contains(stream_id) {
            folded.one_by_one.push(*stream_id);
            continue;
        }
        let from = start.views.get(&stream_id.to_string());
        let (view, outcome) = fold(from, stream);
        if outcome.gaps > 0 && start.unread.contains(stream_id) {
            folded.stale.push(*stream_id);
            continue;
        }
        let from_version = from.map(View::version).unwrap_or(0);
        if let Some(view) = view.filter(|v| v.version() > from_version) {
            let Ok(replacement) = bson::to_document(&view) else {
                folded.unencodable.push(*stream_id);
                continue;
            };
            let write = guarded(namespace, *stream_id, from_version, replacement);
            folded.writes.push((*stream_id, write));
            folded.views.push((*stream_id, view));
        }
        folded.outcomes.push((*stream_id, outcome));
    }
    folded
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

const DUPLICATE_KEY: i32 = 11000;
