//! The storage adapter around the `Project` aggregate: take the project's
//! lock, load its stream, decide, keep `project_members` exact and append,
//! all in one transaction with the idempotency record.
//!
//! `project_members` is the access authority of both sides (task writes
//! lock their row `FOR SHARE`, query-api reads it on every request), so
//! every project event that changes membership changes the rows in the
//! transaction that appends it, and *before* appending it: a removal's
//! `DELETE` waits for the task writes holding the row, so their events
//! precede the removal's in the log. Rows are locked in `(project_id,
//! user_id)` order, after the project's advisory lock and before any task
//! lock (the order of `crate::tasks`' module doc).
//!
//! - create / member added: a row (the new member's projects are counted
//!   under a per-user advisory lock, against the per-user bound);
//! - role changed / owner changed: the rows' `role`;
//! - archived / unarchived: `archived` on every row of the project;
//! - member removed: the row, then `task.assignees_changed` on each task
//!   of the project the member was assigned to (caused by the removal);
//! - deleted: every row, and the project's `project_tasks` rows, whose
//!   owners' live-task slots are freed (the tasks vanish; no task events).
//!
//! Adding a member resolves an email or a user id against auth's `users`
//! table (read only), locking the row `FOR SHARE` so a deactivation
//! cannot commit between the check and the addition.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::store::{self, AppendError, ExpectedVersion};
use events::{
    Event, EventEnvelope, EventMeta, ProjectEvent, ProjectRole, StreamType, StreamVersion,
    TaskAssigneesChanged, TaskEvent,
};
use futures::FutureExt;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::idempotency::{Scope, StoredResponse};
use crate::project::{
    self, GrantableRole, ProjectAction, ProjectCommand, ProjectError, ProjectState,
};
use crate::tasks::{self, Outcome, Retry, TaskSnapshot, WriteError};

/// First key of the per-project advisory locks: "proj" in ASCII.
const PROJECT_LOCK_CLASS: i32 = 0x7072_6f6a;
/// First key of the per-user membership-count locks: "memb" in ASCII.
const MEMBERSHIP_LOCK_CLASS: i32 = 0x6d65_6d62;

/// The bounds of projects, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_members: u32,
    pub max_projects_per_user: u32,
}

/// A project stream folded.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSnapshot {
    pub id: Uuid,
    pub state: ProjectState,
    pub version: StreamVersion,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl ProjectSnapshot {
    /// A stream that is not a project's reads as absent (and refuses).
    pub fn fold(id: Uuid, history: &[EventEnvelope]) -> Result<Self, WriteError> {
        let mut s = ProjectSnapshot {
            id,
            state: ProjectState::Absent,
            version: 0,
            created_at: None,
            updated_at: None,
        };
        if history.iter().any(|e| e.stream_type != StreamType::Project) {
            return Err(ProjectError::NotFound.into());
        }
        s.apply(history)?;
        Ok(s)
    }

    fn apply(&mut self, envelopes: &[EventEnvelope]) -> Result<(), WriteError> {
        for env in envelopes {
            let event = env
                .decode()
                .map_err(|e| WriteError::Internal(anyhow::anyhow!("stream {}: {e}", self.id)))?;
            let Event::Project(event) = event else {
                return Err(WriteError::Internal(anyhow::anyhow!(
                    "stream {}: not a project event",
                    self.id
                )));
            };
            self.state = project::evolve(std::mem::take(&mut self.state), &event);
            self.version = env.version;
            self.created_at.get_or_insert(env.occurred_at);
            self.updated_at = Some(env.occurred_at);
        }
        Ok(())
    }
}

/// A member as a write answers it (with what `users` says of them).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: ProjectRole,
}

/// Who to add: as the client named them.
#[derive(Debug, Clone, PartialEq)]
pub enum Who {
    /// Normalised as auth normalises.
    Email(String),
    UserId(Uuid),
}

/// What the HTTP layer asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Action(ProjectAction),
    AddMember { who: Who, role: GrantableRole },
}

pub struct Write {
    pub project_id: Uuid,
    pub actor: Uuid,
    pub at: DateTime<Utc>,
    pub request: Request,
    pub if_match: Option<StreamVersion>,
    pub correlation_id: Uuid,
    pub idempotency: Option<Scope>,
}

/// What a successful write leaves behind, for the response.
pub struct Written {
    pub snapshot: ProjectSnapshot,
    pub actor: Uuid,
    /// The member added or changed (member routes).
    pub member: Option<MemberInfo>,
}

/// Project-specific refusals, mapped to `WriteError::Project`.
#[derive(Debug, thiserror::Error)]
pub enum ProjectWriteError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// No active user by that email or id (422 on the field).
    #[error("no active user with this {field}")]
    NoSuchUser { field: &'static str },
    #[error("the user already belongs to {cap} projects")]
    ProjectsPerUser { cap: u32 },
}

impl ProjectWriteError {
    pub fn into_write(self) -> WriteError {
        WriteError::Project(self)
    }
}

impl From<ProjectError> for WriteError {
    fn from(e: ProjectError) -> Self {
        WriteError::Project(ProjectWriteError::Project(e))
    }
}

/// Runs one project command, as `tasks::execute` runs a task command.
pub async fn execute(
    pool: &PgPool,
    write: Write,
    limits: Limits,
    render: impl Fn(&Written) -> StoredResponse,
) -> Result<Outcome, WriteError> {
    let write = std::sync::Arc::new(write);
    tasks::in_transaction(
        pool,
        write.project_id,
        write.idempotency.as_ref(),
        |tx| {
            let write = write.clone();
            async move { attempt(tx, &write, limits).await }.boxed()
        },
        render,
    )
    .await
}

async fn attempt(tx: &mut PgConnection, write: &Write, limits: Limits) -> Result<Written, Retry> {
    let creating = matches!(write.request, Request::Action(ProjectAction::Create { .. }));
    let history = if creating {
        Vec::new()
    } else {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(PROJECT_LOCK_CLASS)
            .bind(tasks::task_lock_key(write.project_id))
            .execute(&mut *tx)
            .await?;
        store::load_stream(&mut *tx, write.project_id).await?
    };
    let snapshot = ProjectSnapshot::fold(write.project_id, &history)?;
    if !creating {
        // Membership before the precondition: a project the caller cannot
        // see has no version to compare against.
        let member = snapshot
            .state
            .live()
            .is_some_and(|p| p.role_of(write.actor).is_some());
        if !member {
            return Err(ProjectError::NotFound.into());
        }
        if let Some(expected) = write.if_match {
            if expected != snapshot.version {
                return Err(Retry::Fail(WriteError::PreconditionFailed {
                    current: snapshot.version,
                }));
            }
        }
    }
    let (action, mut member) = match &write.request {
        Request::Action(a) => (a.clone(), None),
        Request::AddMember { who, role } => {
            // Rights first: a member who may not add anyone learns nothing
            // about which accounts exist.
            let probe = ProjectAction::AddMember {
                user_id: Uuid::nil(),
                role: *role,
            };
            if let Err(e @ ProjectError::Forbidden(_)) = project::decide(
                &snapshot.state,
                ProjectCommand {
                    actor: write.actor,
                    action: probe,
                    max_members: u32::MAX,
                },
            ) {
                return Err(e.into());
            }
            let user = resolve_user(tx, who).await?;
            let action = ProjectAction::AddMember {
                user_id: user.user_id,
                role: *role,
            };
            (action, Some(user))
        }
    };
    let decided = project::decide(
        &snapshot.state,
        ProjectCommand {
            actor: write.actor,
            action: action.clone(),
            max_members: limits.max_members,
        },
    )?;
    let mut written = Written {
        snapshot,
        actor: write.actor,
        member: None,
    };
    if let ProjectAction::ChangeRole { user_id, .. } = &action {
        member = Some(user_info(tx, *user_id).await?);
    }
    if !decided.is_empty() {
        // The rows first (waiting for the task writes that hold them), so
        // the events land after those writes' events.
        for event in &decided {
            keep_members(tx, write.project_id, event, limits).await?;
        }
        let meta = EventMeta {
            actor: write.actor,
            correlation_id: write.correlation_id,
            causation_id: None,
            occurred_at: write.at,
        };
        let events: Vec<Event> = decided.iter().cloned().map(Event::Project).collect();
        let expected = ExpectedVersion::Exact(written.snapshot.version);
        let envelopes = match store::append(tx, write.project_id, expected, &events, meta).await {
            Ok(envelopes) => envelopes,
            Err(AppendError::Conflict { .. }) if creating => {
                return Err(Retry::Fail(WriteError::Contended))
            }
            Err(AppendError::Conflict { .. }) if write.if_match.is_some() => {
                return Err(Retry::Precondition)
            }
            Err(AppendError::Conflict { .. }) => return Err(Retry::Again),
            Err(AppendError::Database(e)) => return Err(e.into()),
        };
        for (event, env) in decided.iter().zip(&envelopes) {
            if let ProjectEvent::MemberRemoved(m) = event {
                unassign(tx, write.project_id, m.user_id, env, meta).await?;
            }
        }
        written.snapshot.apply(&envelopes)?;
    }
    if let (Some(m), Some(p)) = (member.as_mut(), written.snapshot.state.live()) {
        if let Some(role) = p.role_of(m.user_id) {
            m.role = role;
        }
    }
    written.member = member;
    Ok(written)
}

/// The active user `who` names, its row locked `FOR SHARE` (until commit,
/// auth cannot deactivate it).
async fn resolve_user(tx: &mut PgConnection, who: &Who) -> Result<MemberInfo, WriteError> {
    let (row, field) = match who {
        Who::Email(email) => (
            sqlx::query(
                "SELECT id, email, display_name FROM users
                  WHERE lower(email) = lower($1) AND active FOR SHARE",
            )
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?,
            "email",
        ),
        Who::UserId(id) => (
            sqlx::query(
                "SELECT id, email, display_name FROM users WHERE id = $1 AND active FOR SHARE",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?,
            "user_id",
        ),
    };
    let row = row.ok_or(ProjectWriteError::NoSuchUser { field }.into_write())?;
    Ok(MemberInfo {
        user_id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        // Set from the project once decided.
        role: ProjectRole::Viewer,
    })
}

/// What `users` says of a member (empty when auth has no row for them).
async fn user_info(tx: &mut PgConnection, user_id: Uuid) -> Result<MemberInfo, WriteError> {
    let row = sqlx::query("SELECT email, display_name FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    let (email, display_name) = match row {
        Some(r) => (r.try_get("email")?, r.try_get("display_name")?),
        None => (String::new(), String::new()),
    };
    Ok(MemberInfo {
        user_id,
        email,
        display_name,
        role: ProjectRole::Viewer,
    })
}

/// Locks the project's rows (all, or those of `users`) `FOR UPDATE`, in
/// user order, before an update or delete that touches several.
async fn lock_rows(
    tx: &mut PgConnection,
    project: Uuid,
    users: Option<&[Uuid]>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT 1 FROM project_members
          WHERE project_id = $1 AND ($2::uuid[] IS NULL OR user_id = ANY($2))
          ORDER BY user_id FOR UPDATE",
    )
    .bind(project)
    .bind(users)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Counts `user`'s projects under their lock; refuses one more past the cap.
async fn check_projects_per_user(
    tx: &mut PgConnection,
    user: Uuid,
    cap: u32,
) -> Result<(), WriteError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(MEMBERSHIP_LOCK_CLASS)
        .bind(tasks::task_lock_key(user))
        .execute(&mut *tx)
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM project_members WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
    if n >= i64::from(cap) {
        return Err(ProjectWriteError::ProjectsPerUser { cap }.into_write());
    }
    Ok(())
}

/// Makes `project_members` (and, for a delete, `project_tasks` and the
/// live-task counts) say what `event` says.
async fn keep_members(
    tx: &mut PgConnection,
    project: Uuid,
    event: &ProjectEvent,
    limits: Limits,
) -> Result<(), WriteError> {
    match event {
        ProjectEvent::Created(c) => {
            check_projects_per_user(tx, c.owner_id, limits.max_projects_per_user).await?;
            sqlx::query(
                "INSERT INTO project_members (project_id, user_id, role, archived)
                 VALUES ($1, $2, 'owner', false)",
            )
            .bind(project)
            .bind(c.owner_id)
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::MemberAdded(m) => {
            check_projects_per_user(tx, m.user_id, limits.max_projects_per_user).await?;
            sqlx::query(
                "INSERT INTO project_members (project_id, user_id, role, archived)
                 SELECT $1, $2, $3, coalesce(
                   (SELECT archived FROM project_members WHERE project_id = $1 LIMIT 1), false)",
            )
            .bind(project)
            .bind(m.user_id)
            .bind(m.role.as_str())
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::MemberRoleChanged(m) => {
            sqlx::query(
                "UPDATE project_members SET role = $3 WHERE project_id = $1 AND user_id = $2",
            )
            .bind(project)
            .bind(m.user_id)
            .bind(m.to.as_str())
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::OwnerChanged(o) => {
            lock_rows(tx, project, Some(&[o.from, o.to])).await?;
            sqlx::query(
                "UPDATE project_members
                    SET role = CASE WHEN user_id = $2 THEN 'owner' ELSE 'admin' END
                  WHERE project_id = $1 AND user_id IN ($2, $3)",
            )
            .bind(project)
            .bind(o.to)
            .bind(o.from)
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::Archived(_) | ProjectEvent::Unarchived(_) => {
            lock_rows(tx, project, None).await?;
            sqlx::query("UPDATE project_members SET archived = $2 WHERE project_id = $1")
                .bind(project)
                .bind(matches!(event, ProjectEvent::Archived(_)))
                .execute(&mut *tx)
                .await?;
        }
        ProjectEvent::MemberRemoved(m) => {
            sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                .bind(project)
                .bind(m.user_id)
                .execute(&mut *tx)
                .await?;
        }
        ProjectEvent::Deleted(_) => {
            lock_rows(tx, project, None).await?;
            sqlx::query("DELETE FROM project_members WHERE project_id = $1")
                .bind(project)
                .execute(&mut *tx)
                .await?;
            // The project's tasks vanish: their owners get the slots back,
            // and their attachments' objects are queued for deletion.
            let tasks: Vec<Uuid> = sqlx::query_scalar(
                "WITH gone AS (DELETE FROM project_tasks WHERE project_id = $1
                                RETURNING owner_id, task_id),
                      n AS (SELECT owner_id, count(*) AS c FROM gone GROUP BY owner_id),
                      freed AS (UPDATE live_task_counts l SET live = greatest(l.live - n.c, 0)
                                  FROM n WHERE l.owner_id = n.owner_id)
                 SELECT task_id FROM gone",
            )
            .bind(project)
            .fetch_all(&mut *tx)
            .await?;
            crate::attachments::collect_tasks(tx, &tasks).await?;
        }
        ProjectEvent::Updated(_) => {}
    }
    Ok(())
}

/// After `user` left `project` (their row is gone and locked out): takes
/// them off every task of the project they were assigned to, one
/// `task.assignees_changed` each, caused by the removal event.
async fn unassign(
    tx: &mut PgConnection,
    project: Uuid,
    user: Uuid,
    removal: &EventEnvelope,
    meta: EventMeta,
) -> Result<(), WriteError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT task_id FROM project_tasks
          WHERE project_id = $1 AND $2 = ANY(assignee_ids) ORDER BY task_id",
    )
    .bind(project)
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    let meta = EventMeta {
        causation_id: Some(removal.event_id),
        ..meta
    };
    // One lock per distinct key, in key order: no lock held twice, and the
    // order every holder of several task locks follows.
    let mut by_key: BTreeMap<i32, Vec<Uuid>> = BTreeMap::new();
    for id in ids {
        by_key.entry(tasks::task_lock_key(id)).or_default().push(id);
    }
    for (_, ids) in by_key {
        if let Some(first) = ids.first() {
            tasks::lock_task(tx, *first).await?;
        }
        for id in ids {
            let history = store::load_stream(&mut *tx, id).await?;
            let mut snapshot = TaskSnapshot::fold(id, &history)?;
            let Some(task) = snapshot.task() else {
                continue;
            };
            if task.project_id != Some(project) || !task.assignee_ids.contains(&user) {
                continue;
            }
            let kept: Vec<Uuid> = task
                .assignee_ids
                .iter()
                .copied()
                .filter(|a| *a != user)
                .collect();
            let event = Event::Task(TaskEvent::AssigneesChanged(TaskAssigneesChanged {
                assignee_ids: kept,
            }));
            let envelopes = store::append(
                tx,
                id,
                ExpectedVersion::Exact(snapshot.version),
                &[event],
                meta,
            )
            .await
            .map_err(|e| match e {
                // Every writer of the task holds its lock: nobody can.
                AppendError::Conflict { .. } => WriteError::Contended,
                AppendError::Database(e) => e.into(),
            })?;
            snapshot.apply(&envelopes)?;
            tasks::sync_project_task(tx, &snapshot, Some(project)).await?;
        }
    }
    Ok(())
}
