//! The storage adapter around the domain: load a task's stream, decide,
//! append, all in one transaction with the idempotency record.
//!
//! # Tasks in projects: membership under a row lock, and lock order
//!
//! A write to a project's task is decided against the caller's
//! `project_members` row, read `FOR SHARE` inside the write's transaction
//! (with the rows of the assignees it names, who must be members too).
//! A removal, a role change, an archive or a project delete changes those
//! rows in the transaction that appends its project event, so it waits
//! for the writes holding them, and every later write reads its outcome:
//! a write racing a removal commits before the removal's event or is
//! refused (no row: 404), never after.
//!
//! Locks are always taken in one order, so these transactions cannot
//! deadlock one another:
//!
//! 1. the project's advisory lock (project writes only),
//! 2. `project_members` rows, several at once in `(project_id, user_id)`
//!    order (task writes `FOR SHARE`; project writes by `UPDATE`/`DELETE`
//!    after locking them `FOR UPDATE` in that order),
//! 3. task advisory locks (a removal takes those of the removed member's
//!    assigned tasks, in task id order, after the member's row),
//! 4. `live_task_counts` rows.
//!
//! So a task write learns the task's project (and assignees) *before* its
//! task lock, from the stream's latest events (an indexed read, unlocked),
//! locks the membership rows, then takes the task lock and loads the
//! stream; should the task have moved, or its assignees changed, in
//! between, the attempt is retried. A task of a deleted project finds no
//! membership row: 404, as for everyone.
//! A create without an idempotency key is a single statement, atomic
//! without `BEGIN`/`COMMIT`: for a personal task the live-task slot and the
//! append ([`create_personal_at_once`]), for a project's task the row
//! locks, the slot, the `project_tasks` row and the append
//! ([`create_in_project_at_once`]); the append is
//! `events::store::FirstEvent`'s, gated on the slot.
//!
//! A deadlock Postgres still reports (`40P01`: two project deletes
//! freeing slots of the same owners, a lock key shared by two tasks) is
//! retried within the same bounded loop as a lost append race.

use chrono::{DateTime, Utc};
use events::store::{self, AppendError, ExpectedVersion};
use events::{
    Event, EventEnvelope, EventMeta, ProjectRole, StreamType, StreamVersion, TaskEvent, TaskStatus,
};
use futures::future::{BoxFuture, FutureExt};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{
    self, Access, Action, Command, CreateTask, DomainError, Membership, Task, TaskState,
};
use crate::idempotency::{self, Claim, ClaimError, Scope, StoredResponse};

/// Attempts of a write without `If-Match` that loses the race for the next
/// version (writers take turns on a per-task lock, so only a writer that
/// bypasses it can cause one). A loss means another write committed, so each
/// retry decides on newer state; this only bounds a pathological pile-up.
pub const MAX_ATTEMPTS: usize = 8;

/// First key of the per-task advisory locks (the two-key form, a lock
/// space apart from the relay's single-key lock): "task" in ASCII.
const TASK_LOCK_CLASS: i32 = 0x7461_736b;

/// Postgres' "deadlock detected": the victim's transaction is retried.
const DEADLOCK: &str = "40P01";

/// Takes the task's advisory lock (until the transaction ends).
pub async fn lock_task(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(TASK_LOCK_CLASS)
        .bind(task_lock_key(id))
        .execute(&mut *tx)
        .await
        .map(|_| ())
}

/// Second key: 32 bits of an id. Two ids sharing it only take turns.
pub fn task_lock_key(id: Uuid) -> i32 {
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
    /// Completed attachments with the instant each was added, oldest first
    /// (the rule the task view folds by).
    pub attachments: Vec<(events::TaskAttachmentAdded, DateTime<Utc>)>,
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
            attachments: Vec::new(),
        };
        if history.iter().any(|e| e.stream_type != StreamType::Task) {
            return Err(WriteError::Domain(DomainError::NotFound));
        }
        snapshot.apply(history)?;
        Ok(snapshot)
    }

    pub(crate) fn apply(&mut self, envelopes: &[EventEnvelope]) -> Result<(), WriteError> {
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
                TaskEvent::AttachmentAdded(a) => {
                    self.attachments
                        .retain(|(x, _)| x.attachment_id != a.attachment_id);
                    self.attachments.push((a.clone(), env.occurred_at));
                }
                TaskEvent::AttachmentRemoved(r) => {
                    self.attachments
                        .retain(|(x, _)| x.attachment_id != r.attachment_id);
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

/// True when Postgres aborted the statement to break a deadlock.
pub fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(DEADLOCK))
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
    /// An attachment limit, or an upload that is gone.
    #[error(transparent)]
    Attachment(crate::attachments::AttachmentError),
    /// A project command refused (or a project bound reached).
    #[error(transparent)]
    Project(crate::projects::ProjectWriteError),
    /// A transaction Postgres chose as a deadlock's victim.
    #[error("deadlock; retry")]
    Deadlock,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        if is_deadlock(&e) {
            return WriteError::Deadlock;
        }
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

/// Why one attempt of a write ended without a result.
pub(crate) enum Retry {
    /// Decide again on newer state (lost append race, stale pre-read, deadlock).
    Again,
    /// With If-Match: the stream moved on (the transaction is aborted).
    Precondition,
    Fail(WriteError),
}

impl<E: Into<WriteError>> From<E> for Retry {
    fn from(e: E) -> Self {
        match e.into() {
            WriteError::Deadlock => Retry::Again,
            e => Retry::Fail(e),
        }
    }
}

/// Runs one command: (claim idempotency key) → lock memberships → load →
/// check If-Match → decide → append → (record response) → commit, as one
/// transaction. `render` turns the result into the response that is both
/// returned and, with a key, stored for replay.
pub async fn execute(
    pool: &PgPool,
    write: Write,
    max_live: u32,
    render: impl Fn(&Written) -> StoredResponse,
) -> Result<Outcome, WriteError> {
    let creating = matches!(write.command.action, Action::Create(_));
    if let (
        Action::Create(CreateTask {
            project_id: Some(project),
            ..
        }),
        None,
    ) = (&write.command.action, &write.idempotency)
    {
        for _ in 0..MAX_ATTEMPTS {
            match create_in_project_at_once(pool, &write, *project, max_live).await {
                Err(WriteError::Deadlock) => continue,
                written => return Ok(Outcome::Done(render(&written?))),
            }
        }
        return Err(WriteError::Contended);
    }
    if creating && write.idempotency.is_none() {
        let written = create_personal_at_once(pool, &write, max_live).await?;
        return Ok(Outcome::Done(render(&written)));
    }
    // The attempt's future owns a handle on the write, so it borrows only
    // the transaction's connection.
    let write = std::sync::Arc::new(write);
    in_transaction(
        pool,
        write.task_id,
        write.idempotency.as_ref(),
        |tx| {
            let write = write.clone();
            async move {
                if creating {
                    create_in(tx, &write, max_live).await
                } else {
                    change_in(tx, &write).await
                }
            }
            .boxed()
        },
        render,
    )
    .await
}

/// The transaction every task and project write runs in, attempt by
/// attempt (at most [`MAX_ATTEMPTS`]): claim the idempotency key (or replay
/// its first answer) → `attempt` → record the rendered answer under the
/// key → commit. An attempt that must decide again (`Retry::Again`) is
/// rolled back and run afresh; one whose `If-Match` failed
/// (`Retry::Precondition`) answers 412 with `stream_id`'s current version.
pub(crate) async fn in_transaction<W>(
    pool: &PgPool,
    stream_id: Uuid,
    idempotency: Option<&Scope>,
    mut attempt: impl for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<W, Retry>>,
    render: impl Fn(&W) -> StoredResponse,
) -> Result<Outcome, WriteError> {
    for _ in 0..MAX_ATTEMPTS {
        let mut tx = pool.begin().await?;
        if let Some(scope) = idempotency {
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
        let written = match attempt(&mut tx).await {
            Ok(written) => written,
            Err(Retry::Again) => {
                tx.rollback().await?;
                metrics::counter!("command_append_conflicts_total").increment(1);
                continue;
            }
            Err(Retry::Precondition) => {
                tx.rollback().await?;
                let current = store::stream_version(pool, stream_id).await?;
                return Err(WriteError::PreconditionFailed { current });
            }
            Err(Retry::Fail(e)) => return Err(e),
        };
        let response = render(&written);
        if let Some(scope) = idempotency {
            idempotency::record(&mut tx, scope, &response).await?;
        }
        tx.commit().await?;
        return Ok(Outcome::Done(response));
    }
    Err(WriteError::Contended)
}

fn meta(write: &Write) -> EventMeta {
    EventMeta {
        actor: write.command.actor,
        correlation_id: write.correlation_id,
        causation_id: None,
        occurred_at: write.command.at,
    }
}

/// A create: no stream to load (the id is a fresh UUID v7 of this process,
/// and the append at version 0 still guards it). A personal task takes the
/// owner's live-task slot; a project's task locks the membership rows,
/// takes the slot and records its `project_tasks` row in one statement
/// ([`prepare_project_create`]), so it costs the round trips of a
/// personal create.
async fn create_in(tx: &mut PgConnection, write: &Write, max_live: u32) -> Result<Written, Retry> {
    let Action::Create(create) = &write.command.action else {
        return Err(Retry::Fail(DomainError::AlreadyExists.into()));
    };
    let actor = write.command.actor;
    let mut command = write.command.clone();
    let slot = match create.project_id {
        None => None,
        Some(project) => {
            let (access, slot) = prepare_project_create(
                tx,
                write.task_id,
                project,
                actor,
                create.assignees.ids(),
                max_live,
            )
            .await?;
            command.access = access;
            Some(slot)
        }
    };
    let snapshot = TaskSnapshot::fold(write.task_id, &[])?;
    let events: Vec<Event> = domain::decide(&snapshot.state, command)?
        .into_iter()
        .map(Event::Task)
        .collect();
    match slot {
        None => take_live_slot(tx, actor, max_live).await?,
        Some(true) => {}
        Some(false) => return Err(Retry::Fail(WriteError::LiveTaskLimit { cap: max_live })),
    }
    let envelopes = store::append(
        tx,
        write.task_id,
        ExpectedVersion::Exact(0),
        &events,
        meta(write),
    )
    .await
    .map_err(|e| match e {
        AppendError::Conflict { .. } => Retry::Fail(WriteError::Contended),
        AppendError::Database(e) => e.into(),
    })?;
    let mut written = Written {
        snapshot,
        appended: Vec::new(),
    };
    written.snapshot.apply(&envelopes)?;
    written.appended = envelopes;
    Ok(written)
}

/// For a create in `project`, in one statement: locks the caller's and the
/// named assignees' membership rows `FOR SHARE` (in user order), and, when
/// the caller may write there and every assignee is a member, takes the
/// caller's live-task slot and records the task's `project_tasks` row
/// (the inserts read the whole locked set first, so they come after every
/// row lock). Returns what the domain needs to decide, and whether the
/// slot was free. A refused create rolls all of it back.
async fn prepare_project_create(
    tx: &mut PgConnection,
    task_id: Uuid,
    project: Uuid,
    actor: Uuid,
    assignees: &[Uuid],
    max_live: u32,
) -> Result<(Access, bool), WriteError> {
    let mut users = vec![actor];
    users.extend(assignees.iter().filter(|a| **a != actor));
    let rows = sqlx::query(
        "WITH m AS (
           SELECT user_id, role, archived FROM project_members
            WHERE project_id = $1 AND user_id = ANY($2)
            ORDER BY user_id FOR SHARE),
         ok AS (
           SELECT coalesce(bool_or(user_id = $3 AND role <> 'viewer' AND NOT archived), false)
                  AND count(*) = cardinality($2) AS allowed
             FROM m),
         slot AS (
           INSERT INTO live_task_counts (owner_id, live)
           SELECT $3, 1 FROM ok WHERE ok.allowed
           ON CONFLICT (owner_id) DO UPDATE SET live = live_task_counts.live + 1
            WHERE live_task_counts.live < $4
           RETURNING live),
         pt AS (
           INSERT INTO project_tasks (task_id, project_id, owner_id, assignee_ids)
           SELECT $5, $1, $3, $6 FROM ok WHERE ok.allowed)
         SELECT m.user_id, m.role, m.archived, (SELECT allowed FROM ok) AS allowed,
                EXISTS (SELECT 1 FROM slot) AS slot
           FROM m",
    )
    .bind(project)
    .bind(&users)
    .bind(actor)
    .bind(i64::from(max_live))
    .bind(task_id)
    .bind(assignees)
    .fetch_all(&mut *tx)
    .await?;
    let mut access = Access::default();
    let mut slot = true;
    for row in &rows {
        let user: Uuid = row.try_get("user_id")?;
        let role = parse_role(row.try_get("role")?)?;
        if user == actor {
            access.here = Some(Membership {
                role,
                archived: row.try_get("archived")?,
            });
        }
        access.members.push(user);
        let ok: bool = row.try_get("allowed")?;
        slot = !ok || row.try_get::<bool, _>("slot")?;
    }
    Ok((access, slot))
}

/// A create in a project without an idempotency key, as one statement
/// (atomic on its own, so no `BEGIN`/`COMMIT`): it locks the caller's and
/// the assignees' membership rows `FOR SHARE`, and only when the caller may
/// write there and every assignee is a member, takes the live-task slot,
/// records the `project_tasks` row and appends the event with its outbox
/// row. The event is decided beforehand as if that held; when it does not,
/// nothing was written and the domain decides again on the rows read, for
/// the refusal. The append is `events::store::FirstEvent`'s, gated on the
/// slot; a stream that already exists fails it on the unique version key.
async fn create_in_project_at_once(
    pool: &PgPool,
    write: &Write,
    project: Uuid,
    max_live: u32,
) -> Result<Written, WriteError> {
    let actor = write.command.actor;
    let mut users = vec![actor];
    users.extend(
        write
            .command
            .action
            .assignees()
            .iter()
            .filter(|a| **a != actor),
    );
    let snapshot = TaskSnapshot::fold(write.task_id, &[])?;
    let mut assumed = write.command.clone();
    assumed.access = Access {
        here: Some(Membership {
            role: ProjectRole::Member,
            archived: false,
        }),
        there: None,
        members: users.clone(),
    };
    let event = decide_creation(&snapshot, assumed)?;
    let first = store::FirstEvent::new(write.task_id, &event, meta(write));
    let sql = format!(
        "WITH m AS (
           SELECT user_id, role, archived FROM project_members
            WHERE project_id = $1 AND user_id = ANY($2)
            ORDER BY user_id FOR SHARE),
         ok AS (
           SELECT coalesce(bool_or(user_id = $3 AND role <> 'viewer' AND NOT archived), false)
                  AND count(*) = cardinality($2) AS allowed
             FROM m),
         slot AS (
           INSERT INTO live_task_counts (owner_id, live)
           SELECT $3, 1 FROM ok WHERE ok.allowed
           ON CONFLICT (owner_id) DO UPDATE SET live = live_task_counts.live + 1
            WHERE live_task_counts.live < $4
           RETURNING live),
         pt AS (
           INSERT INTO project_tasks (project_id, task_id, owner_id, assignee_ids)
           SELECT $1, $5, $3, $6 FROM slot),
         {}
         SELECT m.user_id, m.role, m.archived, (SELECT allowed FROM ok) AS allowed,
                EXISTS (SELECT 1 FROM slot) AS slot
           FROM m",
        store::FirstEvent::ctes("slot", 7)
    );
    let query = sqlx::query(&sql)
        .bind(project)
        .bind(&users)
        .bind(actor)
        .bind(i64::from(max_live))
        .bind(write.task_id)
        .bind(write.command.action.assignees());
    let rows = first.bind(query).fetch_all(pool).await.map_err(|e| {
        if store::is_version_conflict(&e) {
            WriteError::Contended
        } else {
            e.into()
        }
    })?;
    let (mut allowed, mut slot) = (false, false);
    let mut access = Access::default();
    for row in &rows {
        let user: Uuid = row.try_get("user_id")?;
        if user == actor {
            access.here = Some(Membership {
                role: parse_role(row.try_get("role")?)?,
                archived: row.try_get("archived")?,
            });
        }
        access.members.push(user);
        allowed = row.try_get("allowed")?;
        slot = row.try_get("slot")?;
    }
    if !allowed {
        // Nothing was written: the refusal, as the domain words it.
        let mut command = write.command.clone();
        command.access = access;
        domain::decide(&snapshot.state, command)?;
        return Err(WriteError::Internal(anyhow::anyhow!(
            "the create statement refused what the domain accepts"
        )));
    }
    if !slot {
        return Err(WriteError::LiveTaskLimit { cap: max_live });
    }
    created(snapshot, first)
}

/// The one event a create decides.
fn decide_creation(snapshot: &TaskSnapshot, command: Command) -> Result<Event, WriteError> {
    match domain::decide(&snapshot.state, command)?.as_slice() {
        [event] => Ok(Event::Task(event.clone())),
        _ => Err(WriteError::Internal(anyhow::anyhow!(
            "a create is one event"
        ))),
    }
}

/// What a one-statement create that appended `first` leaves behind.
fn created(mut snapshot: TaskSnapshot, first: store::FirstEvent) -> Result<Written, WriteError> {
    let envelope = first.into_envelope();
    snapshot.apply(std::slice::from_ref(&envelope))?;
    Ok(Written {
        snapshot,
        appended: vec![envelope],
    })
}

/// A personal create without an idempotency key, in one statement: the
/// owner's live-task slot and, when it was free, the event with its outbox
/// row ([`store::FirstEvent`]); atomic without `BEGIN`/`COMMIT`, as a
/// create in a project is ([`create_in_project_at_once`]).
async fn create_personal_at_once(
    pool: &PgPool,
    write: &Write,
    max_live: u32,
) -> Result<Written, WriteError> {
    let snapshot = TaskSnapshot::fold(write.task_id, &[])?;
    let event = decide_creation(&snapshot, write.command.clone())?;
    let first = store::FirstEvent::new(write.task_id, &event, meta(write));
    let sql = format!(
        "WITH slot AS (
           INSERT INTO live_task_counts (owner_id, live) VALUES ($1, 1)
           ON CONFLICT (owner_id) DO UPDATE SET live = live_task_counts.live + 1
            WHERE live_task_counts.live < $2
           RETURNING live),
         {}
         SELECT EXISTS (SELECT 1 FROM slot) AS slot",
        store::FirstEvent::ctes("slot", 3)
    );
    let slot: bool = first
        .bind(
            sqlx::query(&sql)
                .bind(write.command.actor)
                .bind(i64::from(max_live)),
        )
        .fetch_one(pool)
        .await
        .map_err(|e| {
            if store::is_version_conflict(&e) {
                WriteError::Contended
            } else {
                WriteError::from(e)
            }
        })?
        .try_get("slot")?;
    if !slot {
        return Err(WriteError::LiveTaskLimit { cap: max_live });
    }
    created(snapshot, first)
}

fn parse_role(raw: String) -> Result<ProjectRole, WriteError> {
    raw.parse()
        .map_err(|e| WriteError::Internal(anyhow::anyhow!("project_members.role: {e}")))
}

/// A task's project and assignees as its latest events say (`None`:
/// personal), read without its lock: two indexed look-ups of the stream's
/// last `task.created`/`task.moved` and `task.created`/
/// `task.assignees_changed`, so `project_tasks` needs no index by task.
/// When the task reads as personal, the same statement takes its lock
/// (there are no membership rows to lock first), so a personal task's
/// write costs no round trip more than before projects; the second value
/// says whether it did.
async fn project_of(
    tx: &mut PgConnection,
    task_id: Uuid,
) -> Result<(Option<(Uuid, Vec<Uuid>)>, bool), WriteError> {
    let row = sqlx::query(
        "SELECT pre.project_id, pre.assignee_ids,
                CASE WHEN pre.project_id IS NULL
                     THEN (SELECT true FROM pg_advisory_xact_lock($2, $3)) END AS locked
           FROM (SELECT
                  task_project($1) AS project_id,
                  (SELECT data->>'assignee_ids'
                     FROM events
                    WHERE stream_id = $1
                      AND event_type IN ('task.created', 'task.assignees_changed')
                    ORDER BY version DESC LIMIT 1) AS assignee_ids) pre",
    )
    .bind(task_id)
    .bind(TASK_LOCK_CLASS)
    .bind(task_lock_key(task_id))
    .fetch_one(&mut *tx)
    .await?;
    let locked = row.try_get::<Option<bool>, _>("locked")?.unwrap_or(false);
    let project: Option<String> = row.try_get("project_id")?;
    let Some(project) = project.and_then(|p| p.parse::<Uuid>().ok()) else {
        return Ok((None, locked));
    };
    let assignees: Option<String> = row.try_get("assignee_ids")?;
    let assignees: Vec<Uuid> = match assignees {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| WriteError::Internal(anyhow::anyhow!("task {task_id}: {e}")))?,
        None => Vec::new(),
    };
    Ok((Some((project, assignees)), locked))
}

/// A locked `project_members` row.
struct MemberRow {
    project_id: Uuid,
    user_id: Uuid,
    membership: Membership,
}

/// Locks the membership rows of `(project, user)` pairs `FOR SHARE`, in
/// `(project_id, user_id)` order; returns those that exist.
async fn lock_memberships(
    tx: &mut PgConnection,
    pairs: &[(Uuid, Uuid)],
) -> Result<Vec<MemberRow>, WriteError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let (projects, users): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    let rows = sqlx::query(
        "SELECT project_id, user_id, role, archived FROM project_members
          WHERE (project_id, user_id) IN (SELECT * FROM UNNEST($1::uuid[], $2::uuid[]))
          ORDER BY project_id, user_id FOR SHARE",
    )
    .bind(&projects)
    .bind(&users)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MemberRow {
                project_id: r.try_get("project_id")?,
                user_id: r.try_get("user_id")?,
                membership: Membership {
                    role: parse_role(r.try_get("role")?)?,
                    archived: r.try_get("archived")?,
                },
            })
        })
        .collect()
}

/// Decides `write` as [`execute`] would, and writes nothing: the caller
/// learns now what the write would answer for access (404, 403, 409), the
/// precondition and the domain, before work outside the database (such as
/// asking the object store) that must not tell a caller who may not see
/// the task anything. [`execute`] decides again in its own transaction.
pub async fn check(pool: &PgPool, write: &Write) -> Result<(), WriteError> {
    for _ in 0..MAX_ATTEMPTS {
        let mut tx = pool.begin().await?;
        let decided = decide_in(&mut tx, write).await;
        tx.rollback().await?;
        match decided {
            Ok(_) => return Ok(()),
            Err(Retry::Again) => continue,
            Err(Retry::Precondition) => {
                let current = store::stream_version(pool, write.task_id).await?;
                return Err(WriteError::PreconditionFailed { current });
            }
            Err(Retry::Fail(e)) => return Err(e),
        }
    }
    Err(WriteError::Contended)
}

/// What [`decide_in`] decided, on the state it loaded.
struct Decision {
    snapshot: TaskSnapshot,
    events: Vec<TaskEvent>,
    owner: Uuid,
    was_in: Option<Uuid>,
}

/// A write to an existing task: its project's membership rows, then its
/// lock and stream (see the module doc for why in this order).
async fn change_in(tx: &mut PgConnection, write: &Write) -> Result<Written, Retry> {
    let actor = write.command.actor;
    let Decision {
        snapshot,
        events: decided,
        owner,
        was_in,
    } = decide_in(tx, write).await?;
    match &write.command.action {
        Action::Attach(upload) => {
            crate::attachments::insert_pending(tx, write.task_id, actor, upload)
                .await?
                .map_err(WriteError::Attachment)?
        }
        Action::RemoveAttachment(id) if decided.is_empty() => {
            crate::attachments::cancel_pending(tx, write.task_id, *id)
                .await?
                .map_err(WriteError::Attachment)?
        }
        _ => {}
    }
    let mut written = Written {
        snapshot,
        appended: Vec::new(),
    };
    if decided.is_empty() {
        return Ok(written);
    }
    let deleting = decided.iter().any(|e| matches!(e, TaskEvent::Deleted(_)));
    let regrouping = decided
        .iter()
        .any(|e| matches!(e, TaskEvent::Moved(_) | TaskEvent::AssigneesChanged(_)));
    // Always the version the decision was made on, with or without
    // If-Match: `Any` would let a write that committed after our load slip
    // in between, and append a decision taken on stale state (e.g. a
    // transition from a status the task has already left). Without
    // If-Match a conflict means "decide again on newer state".
    let expected = ExpectedVersion::Exact(written.snapshot.version);
    crate::attachments::after_append(tx, write.task_id, &decided)
        .await?
        .map_err(WriteError::Attachment)?;
    let events: Vec<Event> = decided.into_iter().map(Event::Task).collect();
    match store::append(tx, write.task_id, expected, &events, meta(write)).await {
        Ok(envelopes) => {
            written.snapshot.apply(&envelopes)?;
            written.appended = envelopes;
        }
        Err(AppendError::Conflict { .. }) if write.if_match.is_some() => {
            return Err(Retry::Precondition)
        }
        Err(AppendError::Conflict { .. }) => return Err(Retry::Again),
        Err(AppendError::Database(e)) => return Err(e.into()),
    }
    if deleting {
        free_live_slot(tx, owner).await?;
    }
    if (deleting && was_in.is_some()) || regrouping {
        sync_project_task(tx, &written.snapshot, was_in).await?;
    }
    Ok(written)
}

/// Loads the task under its locks and decides `write` on it: existence
/// and access, then `If-Match`, then the domain.
async fn decide_in(tx: &mut PgConnection, write: &Write) -> Result<Decision, Retry> {
    let actor = write.command.actor;
    let action = &write.command.action;
    let (pre, locked) = project_of(tx, write.task_id).await?;
    let pre_project = pre.as_ref().map(|(p, _)| *p);
    let mut pairs = Vec::new();
    if let Some(p) = pre_project {
        pairs.push((p, actor));
        pairs.extend(action.assignees().iter().map(|a| (p, *a)));
    }
    let target = match action {
        Action::Move(Some(q)) if Some(*q) != pre_project => Some(*q),
        _ => None,
    };
    if let Some(q) = target {
        pairs.push((q, actor));
        if let Some((_, current)) = &pre {
            pairs.extend(current.iter().map(|a| (q, *a)));
        }
    }
    let rows = lock_memberships(tx, &pairs).await?;
    // Writers of one task take turns (until commit), so a write without
    // If-Match decides on the state it appends after instead of losing
    // races; with If-Match the later one sees the new version and answers 412.
    if !locked {
        lock_task(tx, write.task_id).await?;
    }
    let history = store::load_stream(&mut *tx, write.task_id).await?;
    let snapshot = TaskSnapshot::fold(write.task_id, &history)?;
    let Some(task) = snapshot.task() else {
        return Err(Retry::Fail(DomainError::NotFound.into()));
    };
    // Moved, or reassigned, since `project_tasks` was read: the locks
    // taken may not be the ones this state needs.
    let now = task.project_id.map(|p| (p, task.assignee_ids.clone()));
    if now != pre {
        return Err(Retry::Again);
    }
    let mine = |project: Option<Uuid>| {
        rows.iter()
            .find(|r| Some(r.project_id) == project && r.user_id == actor)
            .map(|r| r.membership)
    };
    let destination = target.or(task.project_id);
    let access = Access {
        here: mine(task.project_id),
        there: mine(target),
        members: rows
            .iter()
            .filter(|r| Some(r.project_id) == destination)
            .map(|r| r.user_id)
            .collect(),
    };
    // Existence and access come before the precondition: a task the caller
    // cannot see has no version to compare against.
    let visible = match task.project_id {
        None => task.owner_id == actor,
        Some(_) => access.here.is_some(),
    };
    if !visible {
        return Err(Retry::Fail(DomainError::NotFound.into()));
    }
    if let Some(expected) = write.if_match {
        if expected != snapshot.version {
            return Err(Retry::Fail(WriteError::PreconditionFailed {
                current: snapshot.version,
            }));
        }
    }
    let (owner, was_in) = (task.owner_id, task.project_id);
    let mut command = write.command.clone();
    command.access = access;
    let events = domain::decide(&snapshot.state, command)?;
    Ok(Decision {
        snapshot,
        events,
        owner,
        was_in,
    })
}

/// Makes the task's `project_tasks` row say what its stream now says (it
/// was in `before`): its project and assignees while it is live in a
/// project, no row otherwise.
pub async fn sync_project_task(
    tx: &mut PgConnection,
    snapshot: &TaskSnapshot,
    before: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let now = snapshot.task().and_then(|t| t.project_id.map(|p| (p, t)));
    if let Some(old) = before.filter(|old| now.is_none_or(|(p, _)| p != *old)) {
        sqlx::query("DELETE FROM project_tasks WHERE project_id = $1 AND task_id = $2")
            .bind(old)
            .bind(snapshot.id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some((project, task)) = now {
        sqlx::query(
            "INSERT INTO project_tasks (project_id, task_id, owner_id, assignee_ids)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id, task_id) DO UPDATE SET assignee_ids = EXCLUDED.assignee_ids",
        )
        .bind(project)
        .bind(snapshot.id)
        .bind(task.owner_id)
        .bind(&task.assignee_ids)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
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
