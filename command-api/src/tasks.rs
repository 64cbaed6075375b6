//! The storage adapter around the domain: load a task's stream, decide,
//! append, all in one transaction with the idempotency record.

use chrono::{DateTime, Utc};
use events::store::{self, AppendError, ExpectedVersion};
use events::{Event, EventEnvelope, EventMeta, StreamType, StreamVersion, TaskEvent, TaskStatus};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{self, Action, Command, DomainError, Task, TaskState};
use crate::idempotency::{self, Claim, ClaimError, Scope, StoredResponse};

/// Attempts of a write without `If-Match` that loses the race for the next
/// version (writers take turns on a per-task lock, so only a writer that
/// bypasses it can cause one). A loss means another write committed, so each
/// retry decides on newer state; this only bounds a pathological pile-up.
pub const MAX_ATTEMPTS: usize = 8;

/// First key of the per-task advisory locks (the two-key form, a lock
/// space apart from the relay's single-key lock): "task" in ASCII.
const TASK_LOCK_CLASS: i32 = 0x7461_736b;

/// Second key: 32 bits of the task id. Two tasks sharing it only take turns.
fn task_lock_key(id: Uuid) -> i32 {
    let (hi, lo) = id.as_u64_pair();
    let folded = hi ^ lo;
    ((folded >> 32) as u32 ^ folded as u32) as i32
}

/// A task stream folded: the aggregate state plus what the envelopes say.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSnapshot {
    pub id: Uuid,
    pub state: TaskState,
    pub version: StreamVersion,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// When the task last became `done`; cleared when it leaves `done`
    /// (the rule the task view folds by).
    pub completed_at: Option<DateTime<Utc>>,
}

impl TaskSnapshot {
    /// Folds a stream. A stream that is not a task's (a user id sent as a
    /// task id) reads as absent, and must then never be appended to.
    pub fn fold(id: Uuid, history: &[EventEnvelope]) -> Result<Self, WriteError> {
        let mut snapshot = TaskSnapshot {
            id,
            state: TaskState::Absent,
            version: 0,
            created_at: None,
            updated_at: None,
            completed_at: None,
        };
        if history.iter().any(|e| e.stream_type != StreamType::Task) {
            return Err(WriteError::Domain(DomainError::NotFound));
        }
        snapshot.apply(history)?;
        Ok(snapshot)
    }

    fn apply(&mut self, envelopes: &[EventEnvelope]) -> Result<(), WriteError> {
        for env in envelopes {
            let event = env
                .decode()
                .map_err(|e| WriteError::Internal(anyhow::anyhow!("stream {}: {e}", self.id)))?;
            let Event::Task(event) = event else {
                return Err(WriteError::Domain(DomainError::NotFound));
            };
            match &event {
                TaskEvent::Created(c) => {
                    self.completed_at = (c.status == TaskStatus::Done).then_some(env.occurred_at);
                }
                TaskEvent::StatusChanged(c) => {
                    self.completed_at = (c.to == TaskStatus::Done).then_some(env.occurred_at);
                }
                _ => {}
            }
            self.state = domain::evolve(std::mem::take(&mut self.state), &event);
            self.version = env.version;
            self.created_at.get_or_insert(env.occurred_at);
            self.updated_at = Some(env.occurred_at);
        }
        Ok(())
    }

    pub fn task(&self) -> Option<&Task> {
        self.state.live()
    }
}

/// A command as the HTTP layer hands it over.
pub struct Write {
    pub task_id: Uuid,
    pub command: Command,
    /// `If-Match`: the version the client saw.
    pub if_match: Option<StreamVersion>,
    pub correlation_id: Uuid,
    pub idempotency: Option<Scope>,
}

/// What a successful write leaves behind, for the response.
pub struct Written {
    pub snapshot: TaskSnapshot,
    /// Events appended by this write (empty for a no-op).
    pub appended: Vec<EventEnvelope>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the task is at version {current}, not the one given in If-Match")]
    PreconditionFailed { current: StreamVersion },
    #[error("the idempotency key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("the task kept changing concurrently; retry")]
    Contended,
    #[error("the event store is unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("the owner already has {cap} live tasks")]
    LiveTaskLimit { cap: u32 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        if store::is_unavailable(&e) {
            WriteError::Unavailable(e)
        } else {
            WriteError::Internal(e.into())
        }
    }
}

/// What [`execute`] returns: a fresh response, or the replay of the first one.
pub enum Outcome {
    Done(StoredResponse),
    Replayed(StoredResponse),
}

/// Runs one command: (claim idempotency key) → load → check If-Match →
/// decide → append → (record response) → commit, as one transaction.
/// `render` turns the result into the response that is both returned and,
/// with a key, stored for replay.
pub async fn execute(
    pool: &PgPool,
    write: Write,
    max_live: u32,
    render: impl Fn(&Written) -> StoredResponse,
) -> Result<Outcome, WriteError> {
    let creating = matches!(write.command.action, Action::Create(_));
    if creating && write.idempotency.is_none() {
        return create(pool, write, max_live, render).await;
    }
    let actor = write.command.actor;
    for _ in 0..MAX_ATTEMPTS {
        let mut tx = pool.begin().await?;
        if let Some(scope) = &write.idempotency {
            match idempotency::claim(&mut tx, scope).await {
                Ok(Claim::New) => {}
                Ok(Claim::Replay(stored)) => {
                    tx.rollback().await?;
                    return Ok(Outcome::Replayed(stored));
                }
                Err(ClaimError::OtherBody) => return Err(WriteError::IdempotencyKeyReused),
                Err(ClaimError::Database(e)) => return Err(e.into()),
            }
        }
        // A create targets a fresh UUID v7 from this process: there is no
        // history to read, and the append at version 0 still guards it.
        let history = if creating {
            Vec::new()
        } else {
            // Writers of one task take turns (until commit), so a write
            // without If-Match decides on the state it appends after instead
            // of losing races; with If-Match the later one sees the new
            // version and answers 412.
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(TASK_LOCK_CLASS)
                .bind(task_lock_key(write.task_id))
                .execute(&mut *tx)
                .await?;
            store::load_stream(&mut *tx, write.task_id).await?
        };
        let snapshot = TaskSnapshot::fold(write.task_id, &history)?;
        // Existence and ownership come before the precondition: a task the
        // caller cannot see has no version to compare against.
        let visible = snapshot.task().is_some_and(|t| t.owner_id == actor);
        if !creating && !visible {
            return Err(DomainError::NotFound.into());
        }
        if let Some(expected) = write.if_match.filter(|_| !creating) {
            if expected != snapshot.version {
                return Err(WriteError::PreconditionFailed {
                    current: snapshot.version,
                });
            }
        }
        let decided = domain::decide(&snapshot.state, write.command.clone())?;
        let mut written = Written {
            snapshot,
            appended: Vec::new(),
        };
        if !decided.is_empty() {
            // Always the version the decision was made on, with or without
            // If-Match: `Any` would let a write that committed after our load
            // slip in between, and append a decision taken on stale state
            // (e.g. a transition from a status the task has already left).
            // Without If-Match a conflict means "decide again on newer state".
            let expected = ExpectedVersion::Exact(written.snapshot.version);
            let events: Vec<Event> = decided.into_iter().map(Event::Task).collect();
            let meta = EventMeta {
                actor,
                correlation_id: write.correlation_id,
                causation_id: None,
                occurred_at: write.command.at,
            };
            if creating {
                take_live_slot(&mut tx, actor, max_live).await?;
            } else if events
                .iter()
                .any(|e| matches!(e, Event::Task(TaskEvent::Deleted(_))))
            {
                free_live_slot(&mut tx, actor).await?;
            }
            match store::append(&mut tx, write.task_id, expected, &events, meta).await {
                Ok(envelopes) => {
                    written.snapshot.apply(&envelopes)?;
                    written.appended = envelopes;
                }
                Err(AppendError::Conflict { .. }) => {
                    // The failed insert aborted the transaction.
                    tx.rollback().await?;
                    if write.if_match.is_some() {
                        let current = store::stream_version(pool, write.task_id).await?;
                        return Err(WriteError::PreconditionFailed { current });
                    }
                    metrics::counter!("command_append_conflicts_total").increment(1);
                    continue;
                }
                Err(AppendError::Database(e)) => return Err(e.into()),
            }
        }
        let response = render(&written);
        if let Some(scope) = &write.idempotency {
            idempotency::record(&mut tx, scope, &response).await?;
        }
        tx.commit().await?;
        return Ok(Outcome::Done(response));
    }
    Err(WriteError::Contended)
}

/// Counts one more live task for `owner`, or refuses when they already
/// have `max_live` (the row lock serialises one owner's creates).
async fn take_live_slot(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    max_live: u32,
) -> Result<(), WriteError> {
    let taken: Option<i64> = sqlx::query_scalar(
        "INSERT INTO live_task_counts (owner_id, live) VALUES ($1, 1)
         ON CONFLICT (owner_id) DO UPDATE SET live = live_task_counts.live + 1
          WHERE live_task_counts.live < $2
         RETURNING live",
    )
    .bind(owner)
    .bind(i64::from(max_live))
    .fetch_optional(&mut *tx)
    .await?;
    match taken {
        Some(n) if n <= i64::from(max_live) => Ok(()),
        _ => Err(WriteError::LiveTaskLimit { cap: max_live }),
    }
}

/// Counts one live task fewer for `owner` (a task was deleted).
async fn free_live_slot(tx: &mut sqlx::PgConnection, owner: Uuid) -> Result<(), WriteError> {
    sqlx::query("UPDATE live_task_counts SET live = live - 1 WHERE owner_id = $1 AND live > 0")
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A create without an idempotency key: no stream to load and no key to
/// claim, so the transaction holds just the owner's live-task slot and the
/// one append (events and outbox rows in one `INSERT ... WITH`).
async fn create(
    pool: &PgPool,
    write: Write,
    max_live: u32,
    render: impl Fn(&Written) -> StoredResponse,
) -> Result<Outcome, WriteError> {
    let snapshot = TaskSnapshot::fold(write.task_id, &[])?;
    let meta = EventMeta {
        actor: write.command.actor,
        correlation_id: write.correlation_id,
        causation_id: None,
        occurred_at: write.command.at,
    };
    let events: Vec<Event> = domain::decide(&snapshot.state, write.command)?
        .into_iter()
        .map(Event::Task)
        .collect();
    // The live-task slot and the events commit together.
    let mut tx = pool.begin().await?;
    take_live_slot(&mut tx, meta.actor, max_live).await?;
    // Version 0: the id is a fresh UUID v7 of this process, and should it
    // ever exist already the insert appends nothing and this is a conflict.
    let envelopes = store::append(
        &mut tx,
        write.task_id,
        ExpectedVersion::Exact(0),
        &events,
        meta,
    )
    .await
    .map_err(|e| match e {
        AppendError::Conflict { .. } => WriteError::Contended,
        AppendError::Database(e) => e.into(),
    })?;
    tx.commit().await?;
    let mut written = Written {
        snapshot,
        appended: Vec::new(),
    };
    written.snapshot.apply(&envelopes)?;
    written.appended = envelopes;
    Ok(Outcome::Done(render(&written)))
}
