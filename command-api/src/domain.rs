//! The `Task` aggregate: pure business rules, no async, no I/O, no clock.
//!
//! `decide(&state, command)` says which events a command produces (or why
//! it is refused); `evolve(state, &event)` folds an event into the state.
//! Values arrive already parsed (`TaskTitle`, `Description`, `Tags`), so the
//! aggregate never holds an invalid task. Time comes in with the command
//! (`Command::at`, read once at the edge); no rule depends on it yet, and
//! it becomes the events' `occurred_at`, so a task's timestamps live on its
//! envelopes rather than in this state.
//!
//! Deleted tasks: every command on a deleted task is `NotFound` (404), the
//! same answer as for a task that never existed or belongs to someone else,
//! so a deleted task is gone for its owner as for everyone else.
//!
//! Tasks in projects: who may write is decided by the caller's membership
//! of the task's project, which the storage adapter reads (under a row
//! lock) and hands in as [`Access`]; the rules themselves live here. A
//! personal task (`project_id: None`) is its creator's alone, as before.

use chrono::{DateTime, Utc};
use events::{
    Priority, ProjectRole, TaskAssigneesChanged, TaskAttachmentAdded, TaskAttachmentRemoved,
    TaskCreated, TaskDeleted, TaskDueDateChanged, TaskEvent, TaskMoved, TaskPriorityChanged,
    TaskStatus, TaskStatusChanged, TaskUpdated,
};
use uuid::Uuid;

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
pub const TAGS_MAX: usize = 20;
pub const TAG_MAX_CHARS: usize = 40;
pub const ASSIGNEES_MAX: usize = 10;

/// Why a raw value is not a valid part of a task (the message is for humans).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A title: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTitle(String);

impl TaskTitle {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let t = raw.trim();
        let n = t.chars().count();
        service::text::check_line(t).map_err(Invalid)?;
        if service::text::visible_chars(t) == 0 {
            return Err(Invalid(
                "must not be empty or only whitespace and invisible characters".into(),
            ));
        }
        if n > TITLE_MAX_CHARS {
            return Err(Invalid(format!(
                "must be at most {TITLE_MAX_CHARS} characters, got {n}"
            )));
        }
        Ok(TaskTitle(t.to_owned()))
    }

    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: up to 10,000 characters, kept as written (may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let n = raw.chars().count();
        if n > DESCRIPTION_MAX_CHARS {
            return Err(Invalid(format!(
                "must be at most {DESCRIPTION_MAX_CHARS} characters, got {n}"
            )));
        }
        Ok(Description(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tags: at most 20 distinct tags, each trimmed and 1 to 40 characters;
/// duplicates are dropped, keeping the first occurrence's position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Vec<String>);

impl Tags {
    /// On failure returns every bad tag as `(index, why)`, or `None` as the
    /// index when the list as a whole is too long.
    pub fn parse(raw: &[String]) -> Result<Self, Vec<(Option<usize>, Invalid)>> {
        let mut errors = Vec::new();
        let mut tags: Vec<String> = Vec::with_capacity(raw.len().min(TAGS_MAX));
        for (i, tag) in raw.iter().enumerate() {
            let t = tag.trim();
            let n = t.chars().count();
            if let Err(why) = service::text::check_line(t) {
                errors.push((Some(i), Invalid(format!("a tag {why}"))));
            } else if service::text::visible_chars(t) == 0 {
                errors.push((
                    Some(i),
                    Invalid("a tag must have at least one visible character".into()),
                ));
            } else if n > TAG_MAX_CHARS {
                errors.push((
                    Some(i),
                    Invalid(format!(
                        "a tag must be at most {TAG_MAX_CHARS} characters, got {n}"
                    )),
                ));
            } else if !tags.iter().any(|existing| existing == t) {
                tags.push(t.to_owned());
            }
        }
        if tags.len() > TAGS_MAX {
            errors.push((
                None,
                Invalid(format!(
                    "at most {TAGS_MAX} distinct tags, got {}",
                    tags.len()
                )),
            ));
        }
        if errors.is_empty() {
            Ok(Tags(tags))
        } else {
            Err(errors)
        }
    }

    #[cfg(test)]
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Tags are a set to the user: the same tags in another order change nothing.
    fn same_set(&self, other: &[String]) -> bool {
        self.0.len() == other.len() && self.0.iter().all(|t| other.contains(t))
    }
}

/// Who a task is assigned to: at most 10 distinct users; duplicates are
/// dropped, keeping the first occurrence's position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignees {
    ids: Vec<Uuid>,
    /// Where each id stood in the request, for the pointer of a refusal.
    positions: Vec<usize>,
}

impl Assignees {
    pub fn parse(raw: &[Uuid]) -> Result<Self, Invalid> {
        let mut a = Assignees::default();
        for (i, id) in raw.iter().enumerate() {
            if !a.ids.contains(id) {
                a.ids.push(*id);
                a.positions.push(i);
            }
        }
        if a.ids.len() > ASSIGNEES_MAX {
            return Err(Invalid(format!(
                "at most {ASSIGNEES_MAX} distinct assignees, got {}",
                a.ids.len()
            )));
        }
        Ok(a)
    }

    pub fn ids(&self) -> &[Uuid] {
        &self.ids
    }

    /// The first assignee not in `allowed`, as its position in the request.
    fn first_outside(&self, allowed: impl Fn(&Uuid) -> bool) -> Option<usize> {
        self.ids
            .iter()
            .zip(&self.positions)
            .find(|(id, _)| !allowed(id))
            .map(|(_, i)| *i)
    }
}

/// Assignee sets compare as sets.
fn same_set(a: &[Uuid], b: &[Uuid]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The caller's membership of one project, as `project_members` says
/// while the write holds its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub role: ProjectRole,
    pub archived: bool,
}

/// What the storage adapter read about the projects a command touches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Access {
    /// The caller's membership of the task's project (for a create, of the
    /// body's `project_id`); `None`: not a member, or no such project.
    pub here: Option<Membership>,
    /// For a move into a project: the caller's membership there.
    pub there: Option<Membership>,
    /// Of the users the command names as assignees (or, for a move, the
    /// task's assignees), those who are members of the project the task
    /// will be in.
    pub members: Vec<Uuid>,
}

/// A task as the command side knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub owner_id: Uuid,
    /// `None`: a personal task.
    pub project_id: Option<Uuid>,
    pub assignee_ids: Vec<Uuid>,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    /// Completed attachments, in the order they were added.
    pub attachments: Vec<Uuid>,
}

/// The aggregate's state: a stream with no events, a live task, or a deleted one.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TaskState {
    #[default]
    Absent,
    Live(Task),
    Deleted(Task),
}

impl TaskState {
    /// The task, if it exists and is not deleted.
    pub fn live(&self) -> Option<&Task> {
        match self {
            TaskState::Live(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTask {
    pub project_id: Option<Uuid>,
    pub assignees: Assignees,
    pub title: TaskTitle,
    pub description: Description,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    pub tags: Tags,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateTask {
    pub title: Option<TaskTitle>,
    pub description: Option<Description>,
    pub priority: Option<Priority>,
    /// `Some(None)` clears the due date.
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub tags: Option<Tags>,
    /// The whole new set (empty clears).
    pub assignees: Option<Assignees>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(CreateTask),
    Update(UpdateTask),
    ChangeStatus(TaskStatus),
    Delete,
    /// Into a project, or out of one (`None`: personal).
    Move(Option<Uuid>),
    /// May the caller attach a file? Records nothing: the pending upload
    /// lives beside the stream until it is completed.
    Attach(crate::attachments::PendingUpload),
    /// An upload the store holds as declared: record it (once). `None`:
    /// no such upload (refused after the access check, so a caller who may
    /// not see the task learns nothing more).
    CompleteAttachment(Option<TaskAttachmentAdded>),
    /// A completed attachment is removed (an event). Any other id may be a
    /// pending upload, which the caller may then cancel: that records
    /// nothing, and the write finds the pending row or answers 404 (see
    /// `crate::attachments::cancel_pending`).
    RemoveAttachment(Uuid),
}

impl Action {
    /// The users the command names as assignees.
    pub fn assignees(&self) -> &[Uuid] {
        match self {
            Action::Create(c) => c.assignees.ids(),
            Action::Update(UpdateTask {
                assignees: Some(a), ..
            }) => a.ids(),
            _ => &[],
        }
    }
}

/// A command: what to do, on whose behalf, when it was issued, and what
/// the caller's memberships were when it was decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub actor: Uuid,
    pub at: DateTime<Utc>,
    pub action: Action,
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// No such task for this user: never existed, deleted, or someone else's.
    #[error("no such task")]
    NotFound,
    /// Create on a stream that already has events.
    #[error("the task already exists")]
    AlreadyExists,
    #[error("a task cannot go from {} to {}", from.as_str(), to.as_str())]
    IllegalTransition {
        from: TaskStatus,
        to: TaskStatus,
        allowed: Vec<TaskStatus>,
    },
    /// A body's `project_id` (create, move) names no project the caller
    /// belongs to: the same words whether it exists or not.
    #[error("no such project")]
    NoSuchProject,
    /// A member whose role does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The task's project (or the move's target) is archived.
    #[error("the project is archived; unarchive it to change its tasks")]
    ProjectArchived,
    /// An assignee who may not be assigned (not a member of the task's
    /// project; for a personal task, not its owner): the position in the
    /// request's `assignee_ids`.
    #[error("not a member of the task's project")]
    NotAssignable { index: usize, personal: bool },
    /// No such (completed) attachment on this task.
    #[error("no attachment with this id")]
    NoSuchAttachment,
}

/// May `actor` write to `task` (and delete it, when `deleting`)?
fn authorise(
    task: &Task,
    actor: Uuid,
    here: Option<Membership>,
    deleting: bool,
) -> Result<(), DomainError> {
    match task.project_id {
        None if task.owner_id == actor => Ok(()),
        None => Err(DomainError::NotFound),
        Some(_) => {
            let m = here.ok_or(DomainError::NotFound)?;
            writable(m)?;
            if deleting && m.role == ProjectRole::Member && task.owner_id != actor {
                return Err(DomainError::Forbidden(
                    "a member may delete only the tasks they created",
                ));
            }
            Ok(())
        }
    }
}

/// A member with the right to write tasks, in a project that is not archived.
fn writable(m: Membership) -> Result<(), DomainError> {
    if m.role == ProjectRole::Viewer {
        return Err(DomainError::Forbidden("a viewer cannot change tasks"));
    }
    if m.archived {
        return Err(DomainError::ProjectArchived);
    }
    Ok(())
}

/// Checks a new assignee set for a task in `project` created by `owner`.
fn check_assignees(
    a: &Assignees,
    project: Option<Uuid>,
    owner: Uuid,
    access: &Access,
) -> Result<(), DomainError> {
    let outside = match project {
        None => a.first_outside(|id| *id == owner),
        Some(_) => a.first_outside(|id| access.members.contains(id)),
    };
    match outside {
        Some(index) => Err(DomainError::NotAssignable {
            index,
            personal: project.is_none(),
        }),
        None => Ok(()),
    }
}

/// The status machine: todo → in_progress → done; any open status →
/// cancelled; done or cancelled → todo (reopen). Nothing else.
pub fn allowed_transitions(from: TaskStatus) -> Vec<TaskStatus> {
    use TaskStatus::*;
    match from {
        Todo => vec![InProgress, Cancelled],
        InProgress => vec![Done, Cancelled],
        Done | Cancelled => vec![Todo],
    }
}

/// The events `command` produces on `state`; an empty list means it changes nothing.
pub fn decide(state: &TaskState, command: Command) -> Result<Vec<TaskEvent>, DomainError> {
    let Command {
        actor,
        action,
        access,
        ..
    } = command;
    let task = match (state, &action) {
        (TaskState::Absent, Action::Create(_)) => None,
        (_, Action::Create(_)) => return Err(DomainError::AlreadyExists),
        (TaskState::Live(task), action) => {
            authorise(task, actor, access.here, matches!(action, Action::Delete))?;
            Some(task)
        }
        _ => return Err(DomainError::NotFound),
    };
    match (task, action) {
        (None, Action::Create(c)) => {
            if c.project_id.is_some() {
                writable(access.here.ok_or(DomainError::NoSuchProject)?)?;
            }
            check_assignees(&c.assignees, c.project_id, actor, &access)?;
            Ok(vec![TaskEvent::Created(TaskCreated {
                owner_id: actor,
                project_id: c.project_id,
                assignee_ids: c.assignees.ids,
                title: c.title.0,
                description: c.description.0,
                status: TaskStatus::Todo,
                priority: c.priority,
                due_at: c.due_at,
                tags: c.tags.0,
            })])
        }
        (Some(task), Action::Update(u)) => {
            if let Some(a) = &u.assignees {
                check_assignees(a, task.project_id, task.owner_id, &access)?;
            }
            Ok(decide_update(task, u))
        }
        (Some(task), Action::Move(to)) => decide_move(task, actor, to, &access),
        (Some(task), Action::ChangeStatus(to)) => {
            if task.status == to {
                return Ok(vec![]);
            }
            let allowed = allowed_transitions(task.status);
            if !allowed.contains(&to) {
                return Err(DomainError::IllegalTransition {
                    from: task.status,
                    to,
                    allowed,
                });
            }
            Ok(vec![TaskEvent::StatusChanged(TaskStatusChanged {
                from: task.status,
                to,
            })])
        }
        (Some(_), Action::Delete) => Ok(vec![TaskEvent::Deleted(TaskDeleted {})]),
        (Some(_), Action::Attach(_)) => Ok(vec![]),
        (Some(_), Action::CompleteAttachment(None)) => Err(DomainError::NoSuchAttachment),
        (Some(task), Action::CompleteAttachment(Some(added))) => {
            if task.attachments.contains(&added.attachment_id) {
                return Ok(vec![]);
            }
            Ok(vec![TaskEvent::AttachmentAdded(added)])
        }
        (Some(task), Action::RemoveAttachment(id)) => {
            if !task.attachments.contains(&id) {
                return Ok(vec![]);
            }
            Ok(vec![TaskEvent::AttachmentRemoved(TaskAttachmentRemoved {
                attachment_id: id,
            })])
        }
        // Create was matched above with `None`; a live task never reaches Create.
        (_, _) => Err(DomainError::AlreadyExists),
    }
}

fn decide_update(task: &Task, u: UpdateTask) -> Vec<TaskEvent> {
    let mut events = Vec::new();
    let updated = TaskUpdated {
        title: u.title.map(|t| t.0).filter(|t| *t != task.title),
        description: u
            .description
            .map(|d| d.0)
            .filter(|d| *d != task.description),
        tags: u.tags.filter(|t| !t.same_set(&task.tags)).map(|t| t.0),
    };
    if updated != TaskUpdated::default() {
        events.push(TaskEvent::Updated(updated));
    }
    if let Some(to) = u.priority.filter(|p| *p != task.priority) {
        events.push(TaskEvent::PriorityChanged(TaskPriorityChanged {
            from: task.priority,
            to,
        }));
    }
    if let Some(due_at) = u.due_at.filter(|d| *d != task.due_at) {
        events.push(TaskEvent::DueDateChanged(TaskDueDateChanged { due_at }));
    }
    if let Some(a) = u
        .assignees
        .filter(|a| !same_set(a.ids(), &task.assignee_ids))
    {
        events.push(TaskEvent::AssigneesChanged(TaskAssigneesChanged {
            assignee_ids: a.ids,
        }));
    }
    events
}

/// A move needs the write right on both sides (checked on the source by
/// [`authorise`]); out to personal, only the task's creator may take it.
/// Assignees who cannot follow (not members of the target; for a personal
/// task, anyone but its owner) are dropped with a `task.assignees_changed`.
fn decide_move(
    task: &Task,
    actor: Uuid,
    to: Option<Uuid>,
    access: &Access,
) -> Result<Vec<TaskEvent>, DomainError> {
    if to == task.project_id {
        return Ok(vec![]);
    }
    let kept: Vec<Uuid> = match to {
        None => {
            if task.owner_id != actor {
                return Err(DomainError::Forbidden(
                    "only the task's creator may make it personal",
                ));
            }
            task.assignee_ids
                .iter()
                .copied()
                .filter(|id| *id == task.owner_id)
                .collect()
        }
        Some(_) => {
            writable(access.there.ok_or(DomainError::NoSuchProject)?)?;
            task.assignee_ids
                .iter()
                .copied()
                .filter(|id| access.members.contains(id))
                .collect()
        }
    };
    let mut events = vec![TaskEvent::Moved(TaskMoved {
        from: task.project_id,
        to,
    })];
    if kept.len() != task.assignee_ids.len() {
        events.push(TaskEvent::AssigneesChanged(TaskAssigneesChanged {
            assignee_ids: kept,
        }));
    }
    Ok(events)
}

/// Folds one event into the state. Events are facts: an event that does
/// not fit the state (which `decide` never produces) leaves it unchanged.
pub fn evolve(state: TaskState, event: &TaskEvent) -> TaskState {
    match (state, event) {
        (TaskState::Absent, TaskEvent::Created(c)) => TaskState::Live(Task {
            owner_id: c.owner_id,
            project_id: c.project_id,
            assignee_ids: c.assignee_ids.clone(),
            title: c.title.clone(),
            description: c.description.clone(),
            status: c.status,
            priority: c.priority,
            due_at: c.due_at,
            tags: c.tags.clone(),
            attachments: Vec::new(),
        }),
        (TaskState::Live(mut t), TaskEvent::Updated(u)) => {
            if let Some(title) = &u.title {
                t.title = title.clone();
            }
            if let Some(description) = &u.description {
                t.description = description.clone();
            }
            if let Some(tags) = &u.tags {
                t.tags = tags.clone();
            }
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::StatusChanged(s)) => {
            t.status = s.to;
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::PriorityChanged(p)) => {
            t.priority = p.to;
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::DueDateChanged(d)) => {
            t.due_at = d.due_at;
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::AssigneesChanged(a)) => {
            t.assignee_ids = a.assignee_ids.clone();
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::Moved(m)) => {
            t.project_id = m.to;
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::AttachmentAdded(a)) => {
            if !t.attachments.contains(&a.attachment_id) {
                t.attachments.push(a.attachment_id);
            }
            TaskState::Live(t)
        }
        (TaskState::Live(mut t), TaskEvent::AttachmentRemoved(r)) => {
            t.attachments.retain(|id| *id != r.attachment_id);
            TaskState::Live(t)
        }
        (TaskState::Live(t), TaskEvent::Deleted(_)) => TaskState::Deleted(t),
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn owner() -> Uuid {
        Uuid::from_u128(1)
    }

    fn stranger() -> Uuid {
        Uuid::from_u128(2)
    }

    fn created() -> TaskEvent {
        TaskEvent::Created(TaskCreated {
            owner_id: owner(),
            project_id: None,
            assignee_ids: vec![],
            title: "Write the report".into(),
            description: "".into(),
            status: Todo,
            priority: Priority::Medium,
            due_at: None,
            tags: vec!["work".into()],
        })
    }

    fn status(from: TaskStatus, to: TaskStatus) -> TaskEvent {
        TaskEvent::StatusChanged(TaskStatusChanged { from, to })
    }

    /// Events that bring a fresh task to `s`.
    fn at(s: TaskStatus) -> Vec<TaskEvent> {
        let mut events = vec![created()];
        match s {
            Todo => {}
            InProgress => events.push(status(Todo, InProgress)),
            Done => {
                events.push(status(Todo, InProgress));
                events.push(status(InProgress, Done));
            }
            Cancelled => events.push(status(Todo, Cancelled)),
        }
        events
    }

    fn title(s: &str) -> TaskTitle {
        TaskTitle::parse(s).unwrap()
    }

    fn tags(ts: &[&str]) -> Tags {
        Tags::parse(&ts.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn create() -> Action {
        Action::Create(CreateTask {
            project_id: None,
            assignees: Assignees::default(),
            title: title("  Write the report "),
            description: Description::default(),
            priority: Priority::default(),
            due_at: None,
            tags: tags(&["work", "work"]),
        })
    }

    fn update(u: UpdateTask) -> Action {
        Action::Update(u)
    }

    fn due(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fold(events: &[TaskEvent]) -> TaskState {
        events.iter().fold(TaskState::Absent, evolve)
    }

    /// name, given events, actor, action, expected events or error.
    type Case = (
        &'static str,
        Vec<TaskEvent>,
        Uuid,
        Action,
        Result<Vec<TaskEvent>, DomainError>,
    );

    /// Given `history`, `actor` doing `action` yields `expected`.
    fn check(
        name: &str,
        history: Vec<TaskEvent>,
        actor: Uuid,
        action: Action,
        expected: Result<Vec<TaskEvent>, DomainError>,
    ) {
        let state = fold(&history);
        let got = decide(
            &state,
            Command {
                actor,
                at: due("2026-11-25T00:00:00Z"),
                action,
                access: Access::default(),
            },
        );
        assert_eq!(got, expected, "case `{name}`");
    }

    #[test]
    fn attachments_are_added_once_removed_once_and_only_by_writers() {
        let id = Uuid::from_u128(77);
        let added = TaskAttachmentAdded {
            attachment_id: id,
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 3,
            sha256: "ab".repeat(32),
            uploaded_by: owner(),
        };
        let with = {
            let mut h = at(Todo);
            h.push(TaskEvent::AttachmentAdded(added.clone()));
            h
        };
        let removed = TaskEvent::AttachmentRemoved(TaskAttachmentRemoved { attachment_id: id });
        let upload = crate::attachments::PendingUpload {
            attachment_id: id,
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 3,
            sha256: "ab".repeat(32),
            settles_at: due("2026-11-25T00:05:00Z"),
            max_per_task: 1,
            max_bytes_per_user: 1,
            max_pending_per_user: 1,
        };
        let cases: Vec<Case> = vec![
            (
                "attach",
                at(Todo),
                owner(),
                Action::Attach(upload.clone()),
                Ok(vec![]),
            ),
            (
                "attach, not yours",
                at(Todo),
                stranger(),
                Action::Attach(upload),
                Err(DomainError::NotFound),
            ),
            (
                "complete",
                at(Todo),
                owner(),
                Action::CompleteAttachment(Some(added.clone())),
                Ok(vec![TaskEvent::AttachmentAdded(added.clone())]),
            ),
            (
                "complete again",
                with.clone(),
                owner(),
                Action::CompleteAttachment(Some(added.clone())),
                Ok(vec![]),
            ),
            (
                "complete nothing",
                at(Todo),
                owner(),
                Action::CompleteAttachment(None),
                Err(DomainError::NoSuchAttachment),
            ),
            (
                "complete, not yours",
                at(Todo),
                stranger(),
                Action::CompleteAttachment(None),
                Err(DomainError::NotFound),
            ),
            (
                "remove",
                with.clone(),
                owner(),
                Action::RemoveAttachment(id),
                Ok(vec![removed.clone()]),
            ),
            (
                "remove one not completed: perhaps a pending upload",
                at(Todo),
                owner(),
                Action::RemoveAttachment(id),
                Ok(vec![]),
            ),
            (
                "remove, not yours",
                with.clone(),
                stranger(),
                Action::RemoveAttachment(id),
                Err(DomainError::NotFound),
            ),
        ];
        for (name, history, actor, action, expected) in cases {
            check(name, history, actor, action, expected);
        }
        let mut gone = with;
        gone.push(removed);
        check(
            "remove twice: no event (and no pending row, so 404)",
            gone,
            owner(),
            Action::RemoveAttachment(id),
            Ok(vec![]),
        );
    }

    #[test]
    fn decide_follows_the_rules() {
        let illegal = |from, to| {
            Err(DomainError::IllegalTransition {
                from,
                to,
                allowed: allowed_transitions(from),
            })
        };
        let deleted = {
            let mut h = at(Todo);
            h.push(TaskEvent::Deleted(TaskDeleted {}));
            h
        };
        let cases: Vec<Case> = vec![
            (
                "create: todo, medium, trimmed title, deduplicated tags",
                vec![],
                owner(),
                create(),
                Ok(vec![created()]),
            ),
            (
                "create twice",
                at(Todo),
                owner(),
                create(),
                Err(DomainError::AlreadyExists),
            ),
            (
                "update a task that does not exist",
                vec![],
                owner(),
                update(UpdateTask::default()),
                Err(DomainError::NotFound),
            ),
            (
                "someone else's task is not found",
                at(Todo),
                stranger(),
                update(UpdateTask {
                    title: Some(title("x")),
                    ..Default::default()
                }),
                Err(DomainError::NotFound),
            ),
            (
                "someone else's task cannot be deleted",
                at(Todo),
                stranger(),
                Action::Delete,
                Err(DomainError::NotFound),
            ),
            (
                "someone else's task status",
                at(Todo),
                stranger(),
                Action::ChangeStatus(InProgress),
                Err(DomainError::NotFound),
            ),
            (
                "empty update changes nothing",
                at(Todo),
                owner(),
                update(UpdateTask::default()),
                Ok(vec![]),
            ),
            (
                "same values change nothing",
                at(Todo),
                owner(),
                update(UpdateTask {
                    title: Some(title("Write the report")),
                    description: Some(Description::default()),
                    priority: Some(Priority::Medium),
                    due_at: Some(None),
                    tags: Some(tags(&["work"])),
                    assignees: None,
                }),
                Ok(vec![]),
            ),
            (
                "title only",
                at(Todo),
                owner(),
                update(UpdateTask {
                    title: Some(title("New")),
                    ..Default::default()
                }),
                Ok(vec![TaskEvent::Updated(TaskUpdated {
                    title: Some("New".into()),
                    ..Default::default()
                })]),
            ),
            (
                "title, description and tags in one task.updated",
                at(Todo),
                owner(),
                update(UpdateTask {
                    title: Some(title("New")),
                    description: Some(Description::parse("details").unwrap()),
                    tags: Some(tags(&["a", "b"])),
                    ..Default::default()
                }),
                Ok(vec![TaskEvent::Updated(TaskUpdated {
                    title: Some("New".into()),
                    description: Some("details".into()),
                    tags: Some(vec!["a".into(), "b".into()]),
                })]),
            ),
            (
                "tags in another order change nothing",
                {
                    let mut h = at(Todo);
                    h.push(TaskEvent::Updated(TaskUpdated {
                        tags: Some(vec!["a".into(), "b".into()]),
                        ..Default::default()
                    }));
                    h
                },
                owner(),
                update(UpdateTask {
                    tags: Some(tags(&["b", "a"])),
                    ..Default::default()
                }),
                Ok(vec![]),
            ),
            (
                "priority",
                at(Todo),
                owner(),
                update(UpdateTask {
                    priority: Some(Priority::Urgent),
                    ..Default::default()
                }),
                Ok(vec![TaskEvent::PriorityChanged(TaskPriorityChanged {
                    from: Priority::Medium,
                    to: Priority::Urgent,
                })]),
            ),
            (
                "due date set",
                at(Todo),
                owner(),
                update(UpdateTask {
                    due_at: Some(Some(due("2030-01-01T00:00:00Z"))),
                    ..Default::default()
                }),
                Ok(vec![TaskEvent::DueDateChanged(TaskDueDateChanged {
                    due_at: Some(due("2030-01-01T00:00:00Z")),
                })]),
            ),
            (
                "due date cleared",
                {
                    let mut h = at(Todo);
                    h.push(TaskEvent::DueDateChanged(TaskDueDateChanged {
                        due_at: Some(due("2030-01-01T00:00:00Z")),
                    }));
                    h
                },
                owner(),
                update(UpdateTask {
                    due_at: Some(None),
                    ..Default::default()
                }),
                Ok(vec![TaskEvent::DueDateChanged(TaskDueDateChanged {
                    due_at: None,
                })]),
            ),
            (
                "a patch of everything emits three events",
                at(Todo),
                owner(),
                update(UpdateTask {
                    title: Some(title("New")),
                    priority: Some(Priority::Low),
                    due_at: Some(Some(due("2030-01-01T00:00:00Z"))),
                    ..Default::default()
                }),
                Ok(vec![
                    TaskEvent::Updated(TaskUpdated {
                        title: Some("New".into()),
                        ..Default::default()
                    }),
                    TaskEvent::PriorityChanged(TaskPriorityChanged {
                        from: Priority::Medium,
                        to: Priority::Low,
                    }),
                    TaskEvent::DueDateChanged(TaskDueDateChanged {
                        due_at: Some(due("2030-01-01T00:00:00Z")),
                    }),
                ]),
            ),
            (
                "todo → in_progress",
                at(Todo),
                owner(),
                Action::ChangeStatus(InProgress),
                Ok(vec![status(Todo, InProgress)]),
            ),
            (
                "in_progress → done",
                at(InProgress),
                owner(),
                Action::ChangeStatus(Done),
                Ok(vec![status(InProgress, Done)]),
            ),
            (
                "todo → cancelled",
                at(Todo),
                owner(),
                Action::ChangeStatus(Cancelled),
                Ok(vec![status(Todo, Cancelled)]),
            ),
            (
                "in_progress → cancelled",
                at(InProgress),
                owner(),
                Action::ChangeStatus(Cancelled),
                Ok(vec![status(InProgress, Cancelled)]),
            ),
            (
                "done → todo (reopen)",
                at(Done),
                owner(),
                Action::ChangeStatus(Todo),
                Ok(vec![status(Done, Todo)]),
            ),
            (
                "cancelled → todo (reopen)",
                at(Cancelled),
                owner(),
                Action::ChangeStatus(Todo),
                Ok(vec![status(Cancelled, Todo)]),
            ),
            (
                "same status changes nothing",
                at(InProgress),
                owner(),
                Action::ChangeStatus(InProgress),
                Ok(vec![]),
            ),
            (
                "todo ↛ done",
                at(Todo),
                owner(),
                Action::ChangeStatus(Done),
                illegal(Todo, Done),
            ),
            (
                "in_progress ↛ todo",
                at(InProgress),
                owner(),
                Action::ChangeStatus(Todo),
                illegal(InProgress, Todo),
            ),
            (
                "done ↛ in_progress",
                at(Done),
                owner(),
                Action::ChangeStatus(InProgress),
                illegal(Done, InProgress),
            ),
            (
                "done ↛ cancelled",
                at(Done),
                owner(),
                Action::ChangeStatus(Cancelled),
                illegal(Done, Cancelled),
            ),
            (
                "cancelled ↛ in_progress",
                at(Cancelled),
                owner(),
                Action::ChangeStatus(InProgress),
                illegal(Cancelled, InProgress),
            ),
            (
                "cancelled ↛ done",
                at(Cancelled),
                owner(),
                Action::ChangeStatus(Done),
                illegal(Cancelled, Done),
            ),
            (
                "delete",
                at(Done),
                owner(),
                Action::Delete,
                Ok(vec![TaskEvent::Deleted(TaskDeleted {})]),
            ),
            (
                "a deleted task cannot be updated",
                deleted.clone(),
                owner(),
                update(UpdateTask {
                    title: Some(title("x")),
                    ..Default::default()
                }),
                Err(DomainError::NotFound),
            ),
            (
                "a deleted task cannot change status",
                deleted.clone(),
                owner(),
                Action::ChangeStatus(InProgress),
                Err(DomainError::NotFound),
            ),
            (
                "a deleted task cannot be deleted again",
                deleted.clone(),
                owner(),
                Action::Delete,
                Err(DomainError::NotFound),
            ),
            (
                "a deleted task cannot be created again",
                deleted,
                owner(),
                create(),
                Err(DomainError::AlreadyExists),
            ),
        ];
        for (name, history, actor, action, expected) in cases {
            check(name, history, actor, action, expected);
        }
    }

    #[test]
    fn the_status_machine_allows_exactly_the_listed_transitions() {
        let allowed = [
            (Todo, InProgress),
            (InProgress, Done),
            (Todo, Cancelled),
            (InProgress, Cancelled),
            (Done, Todo),
            (Cancelled, Todo),
        ];
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                let expected = from == to || allowed.contains(&(from, to));
                let got = decide(
                    &fold(&at(from)),
                    Command {
                        actor: owner(),
                        at: due("2026-11-25T00:00:00Z"),
                        action: Action::ChangeStatus(to),
                        access: Access::default(),
                    },
                )
                .is_ok();
                assert_eq!(got, expected, "{from:?} → {to:?}");
            }
        }
    }

    #[test]
    fn evolve_applies_each_event() {
        let history = vec![
            created(),
            TaskEvent::Updated(TaskUpdated {
                title: Some("T".into()),
                description: Some("D".into()),
                tags: Some(vec!["x".into()]),
            }),
            TaskEvent::PriorityChanged(TaskPriorityChanged {
                from: Priority::Medium,
                to: Priority::High,
            }),
            TaskEvent::DueDateChanged(TaskDueDateChanged {
                due_at: Some(due("2031-02-03T04:05:06Z")),
            }),
            status(Todo, InProgress),
        ];
        let expected = Task {
            owner_id: owner(),
            project_id: None,
            assignee_ids: vec![],
            title: "T".into(),
            description: "D".into(),
            status: InProgress,
            priority: Priority::High,
            due_at: Some(due("2031-02-03T04:05:06Z")),
            tags: vec!["x".into()],
            attachments: vec![],
        };
        assert_eq!(fold(&history), TaskState::Live(expected.clone()));
        let mut deleted = history;
        deleted.push(TaskEvent::Deleted(TaskDeleted {}));
        assert_eq!(fold(&deleted), TaskState::Deleted(expected));
    }

    #[test]
    fn titles_parse() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a", Some("a")),
            ("  padded  ", Some("padded")),
            ("", None),
            ("   \t\n", None),
            (&"é".repeat(200), Some(&"é".repeat(200))),
            (&"x".repeat(201), None),
            (&format!("  {}  ", "x".repeat(200)), Some(&"x".repeat(200))),
        ];
        for (raw, expected) in cases {
            let got = TaskTitle::parse(raw).ok();
            assert_eq!(
                got.as_ref().map(TaskTitle::as_str),
                *expected,
                "title {raw:?}"
            );
        }
    }

    #[test]
    fn descriptions_parse() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"ü".repeat(10_000)).is_ok());
        assert!(Description::parse(&"x".repeat(10_001)).is_err());
    }

    #[test]
    fn tags_parse() {
        let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        let twenty_with_dupes: Vec<String> = (0..40).map(|i| format!("t{}", i % 20)).collect();
        assert_eq!(
            Tags::parse(&s(&[" a ", "b", "a", "b"])).unwrap().as_slice(),
            s(&["a", "b"])
        );
        assert_eq!(
            Tags::parse(&twenty_with_dupes).unwrap().as_slice().len(),
            20
        );
        assert_eq!(Tags::parse(&[]).unwrap().as_slice().len(), 0);
        assert_eq!(
            Tags::parse(&many).unwrap_err(),
            vec![(None, Invalid("at most 20 distinct tags, got 21".into()))]
        );
        let errs = Tags::parse(&s(&["ok", " ", &"x".repeat(41), &"y".repeat(40)])).unwrap_err();
        assert_eq!(
            errs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![Some(1), Some(2)]
        );
    }

    // ------------------------------------------------------ tasks in projects

    const P: Uuid = Uuid::from_u128(100);
    const Q: Uuid = Uuid::from_u128(200);

    fn member(role: ProjectRole) -> Option<Membership> {
        Some(Membership {
            role,
            archived: false,
        })
    }

    fn archived() -> Option<Membership> {
        Some(Membership {
            role: ProjectRole::Owner,
            archived: true,
        })
    }

    /// A task of `owner()`'s in project P, assigned to `assignees`.
    fn in_project(assignees: &[Uuid]) -> TaskState {
        let TaskEvent::Created(c) = created() else {
            unreachable!()
        };
        fold(&[TaskEvent::Created(TaskCreated {
            project_id: Some(P),
            assignee_ids: assignees.to_vec(),
            ..c
        })])
    }

    fn run(
        state: &TaskState,
        actor: Uuid,
        action: Action,
        access: Access,
    ) -> Result<Vec<TaskEvent>, DomainError> {
        decide(
            state,
            Command {
                actor,
                at: due("2026-12-02T00:00:00Z"),
                action,
                access,
            },
        )
    }

    fn here(m: Option<Membership>, members: &[Uuid]) -> Access {
        Access {
            here: m,
            there: None,
            members: members.to_vec(),
        }
    }

    fn create_in(project: Option<Uuid>, assignees: &[Uuid]) -> Action {
        let Action::Create(c) = create() else {
            unreachable!()
        };
        Action::Create(CreateTask {
            project_id: project,
            assignees: Assignees::parse(assignees).unwrap(),
            ..c
        })
    }

    #[test]
    fn creating_in_a_project_follows_the_membership() {
        use ProjectRole::*;
        let a = stranger();
        let refused = |access, assignees: &[Uuid]| {
            run(
                &TaskState::Absent,
                owner(),
                create_in(Some(P), assignees),
                access,
            )
            .unwrap_err()
        };
        assert_eq!(refused(here(None, &[]), &[]), DomainError::NoSuchProject);
        assert!(matches!(
            refused(here(member(Viewer), &[owner()]), &[]),
            DomainError::Forbidden(_)
        ));
        assert_eq!(
            refused(here(archived(), &[owner()]), &[]),
            DomainError::ProjectArchived
        );
        assert_eq!(
            refused(here(member(Member), &[owner()]), &[owner(), owner(), a]),
            DomainError::NotAssignable {
                index: 2,
                personal: false
            }
        );
        let events = run(
            &TaskState::Absent,
            owner(),
            create_in(Some(P), &[a, owner(), a]),
            here(member(Member), &[owner(), a]),
        )
        .unwrap();
        assert!(matches!(
            &events[..],
            [TaskEvent::Created(c)] if c.project_id == Some(P) && c.assignee_ids == vec![a, owner()]
        ));
        // Personal: only the owner may be assigned.
        assert_eq!(
            run(
                &TaskState::Absent,
                owner(),
                create_in(None, &[a]),
                Access::default()
            ),
            Err(DomainError::NotAssignable {
                index: 0,
                personal: true
            })
        );
        assert!(Assignees::parse(&(0..11).map(Uuid::from_u128).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn writes_to_a_project_task_follow_the_membership() {
        use ProjectRole::*;
        let task = in_project(&[]);
        let edit = || {
            update(UpdateTask {
                title: Some(title("x")),
                ..Default::default()
            })
        };
        let a = stranger();
        assert_eq!(
            run(&task, a, edit(), here(None, &[])),
            Err(DomainError::NotFound)
        );
        assert!(matches!(
            run(&task, a, edit(), here(member(Viewer), &[])),
            Err(DomainError::Forbidden(_))
        ));
        assert_eq!(
            run(
                &task,
                a,
                Action::ChangeStatus(InProgress),
                here(archived(), &[])
            ),
            Err(DomainError::ProjectArchived)
        );
        assert_eq!(
            run(&task, a, edit(), here(member(Member), &[])).map(|e| e.len()),
            Ok(1)
        );
        // Delete: a member only their own; an admin any.
        assert!(matches!(
            run(&task, a, Action::Delete, here(member(Member), &[])),
            Err(DomainError::Forbidden(_))
        ));
        assert!(run(&task, a, Action::Delete, here(member(Admin), &[])).is_ok());
        assert!(run(&task, owner(), Action::Delete, here(member(Member), &[])).is_ok());
        // Assignees: the whole set, members only, compared as a set.
        let assign = |ids: &[Uuid]| {
            update(UpdateTask {
                assignees: Some(Assignees::parse(ids).unwrap()),
                ..Default::default()
            })
        };
        assert_eq!(
            run(&task, a, assign(&[a]), here(member(Member), &[])),
            Err(DomainError::NotAssignable {
                index: 0,
                personal: false
            })
        );
        let two = in_project(&[a, owner()]);
        assert_eq!(
            run(
                &two,
                a,
                assign(&[owner(), a]),
                here(member(Member), &[a, owner()])
            ),
            Ok(vec![])
        );
        assert_eq!(
            run(&two, a, assign(&[]), here(member(Member), &[])),
            Ok(vec![TaskEvent::AssigneesChanged(TaskAssigneesChanged {
                assignee_ids: vec![]
            })])
        );
    }

    #[test]
    fn moves_need_both_sides_and_drop_who_cannot_follow() {
        use ProjectRole::*;
        let a = stranger();
        let task = in_project(&[a, owner()]);
        let to = |there, members: &[Uuid]| Access {
            here: member(Member),
            there,
            members: members.to_vec(),
        };
        assert_eq!(
            run(
                &task,
                a,
                Action::Move(Some(Q)),
                to(member(Member), &[a, owner()])
            ),
            Ok(vec![TaskEvent::Moved(TaskMoved {
                from: Some(P),
                to: Some(Q)
            })])
        );
        assert_eq!(
            run(&task, a, Action::Move(Some(Q)), to(member(Admin), &[a])),
            Ok(vec![
                TaskEvent::Moved(TaskMoved {
                    from: Some(P),
                    to: Some(Q)
                }),
                TaskEvent::AssigneesChanged(TaskAssigneesChanged {
                    assignee_ids: vec![a]
                })
            ])
        );
        assert_eq!(
            run(&task, a, Action::Move(Some(Q)), to(None, &[])),
            Err(DomainError::NoSuchProject)
        );
        assert!(matches!(
            run(&task, a, Action::Move(Some(Q)), to(member(Viewer), &[])),
            Err(DomainError::Forbidden(_))
        ));
        assert_eq!(
            run(&task, a, Action::Move(Some(Q)), to(archived(), &[])),
            Err(DomainError::ProjectArchived)
        );
        assert_eq!(
            run(&task, a, Action::Move(Some(P)), to(None, &[])),
            Ok(vec![])
        );
        // To personal: only the creator, who alone stays assigned.
        assert!(matches!(
            run(&task, a, Action::Move(None), to(None, &[])),
            Err(DomainError::Forbidden(_))
        ));
        let moved = run(&task, owner(), Action::Move(None), to(None, &[])).unwrap();
        let state = moved.iter().fold(task, evolve);
        let t = state.live().unwrap();
        assert_eq!(
            (t.project_id, t.assignee_ids.clone()),
            (None, vec![owner()])
        );
        // And a personal task is its owner's alone again.
        assert_eq!(
            run(&state, a, Action::Delete, here(member(Owner), &[])),
            Err(DomainError::NotFound)
        );
    }
}
