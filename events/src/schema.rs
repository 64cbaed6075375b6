//! Event payloads, one Rust type per `type` on the wire, each with its
//! current schema version. Pure data: this module does no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::envelope::StreamType;

/// Where a task is in its life. Transitions are the command side's business;
/// this type only names the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Todo,
    InProgress,
    Done,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [Self::Todo, Self::InProgress, Self::Done, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::InProgress => "in_progress",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }

    /// Open tasks are the ones still to be worked on.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Todo | Self::InProgress)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// Task priority; ordered by urgency (`Low < Medium < High < Urgent`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Low, Self::Medium, Self::High, Self::Urgent];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }

    /// Numeric rank used for sorting by urgency (1 = low … 4 = urgent).
    pub fn rank(self) -> i32 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Urgent => 4,
        }
    }

    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|p| i64::from(p.rank()) == rank)
    }
}

impl std::str::FromStr for Priority {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownValue(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

// ---------------------------------------------------------------- task events

/// `task.created`, schema 3 (schemas 1 and 2 are upcast, see
/// [`crate::upcast`]). `owner_id` is the creator; `project_id` is `None`
/// for a personal task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCreated {
    pub owner_id: Uuid,
    pub project_id: Option<Uuid>,
    /// Who the task is assigned to (at most 10, no repeats).
    pub assignee_ids: Vec<Uuid>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub status: TaskStatus,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
}

/// `task.updated`: only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// `task.status_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskStatusChanged {
    pub from: TaskStatus,
    pub to: TaskStatus,
}

/// `task.priority_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPriorityChanged {
    pub from: Priority,
    pub to: Priority,
}

/// `task.due_date_changed`; `due_at: null` clears the due date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDueDateChanged {
    pub due_at: Option<DateTime<Utc>>,
}

/// `task.deleted`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDeleted {}

/// `task.assignees_changed`: the whole new set (not a diff), so a consumer
/// needs no earlier event to know who is assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskAssigneesChanged {
    pub assignee_ids: Vec<Uuid>,
}

/// `task.moved`: the task left `from` for `to` (`None`: personal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskMoved {
    pub from: Option<Uuid>,
    pub to: Option<Uuid>,
}

/// `task.attachment_added`: an upload was completed (the store holds the
/// object with this size and checksum). Metadata only: never the bytes,
/// never a URL; the object's key follows from the task and attachment ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskAttachmentAdded {
    pub attachment_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub uploaded_by: Uuid,
}

/// `task.attachment_removed`: the object is deleted from the store afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskAttachmentRemoved {
    pub attachment_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TaskEvent {
    #[serde(rename = "task.created")]
    Created(TaskCreated),
    #[serde(rename = "task.updated")]
    Updated(TaskUpdated),
    #[serde(rename = "task.status_changed")]
    StatusChanged(TaskStatusChanged),
    #[serde(rename = "task.priority_changed")]
    PriorityChanged(TaskPriorityChanged),
    #[serde(rename = "task.due_date_changed")]
    DueDateChanged(TaskDueDateChanged),
    #[serde(rename = "task.deleted")]
    Deleted(TaskDeleted),
    #[serde(rename = "task.assignees_changed")]
    AssigneesChanged(TaskAssigneesChanged),
    #[serde(rename = "task.moved")]
    Moved(TaskMoved),
    #[serde(rename = "task.attachment_added")]
    AttachmentAdded(TaskAttachmentAdded),
    #[serde(rename = "task.attachment_removed")]
    AttachmentRemoved(TaskAttachmentRemoved),
}

// ------------------------------------------------------------- project events

/// A member's role in a project, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRole {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl ProjectRole {
    pub const ALL: [ProjectRole; 4] = [Self::Owner, Self::Admin, Self::Member, Self::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for ProjectRole {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// `project.created`: the creator is its owner and first member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreated {
    pub owner_id: Uuid,
    pub name: String,
    pub description: String,
}

/// `project.updated`: only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `project.archived`: its tasks are read-only until it is unarchived.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectArchived {}

/// `project.unarchived`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUnarchived {}

/// `project.deleted`: the project and every task in it are gone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectDeleted {}

/// `project.member_added`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectMemberAdded {
    pub user_id: Uuid,
    pub role: ProjectRole,
}

/// `project.member_role_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectMemberRoleChanged {
    pub user_id: Uuid,
    pub from: ProjectRole,
    pub to: ProjectRole,
}

/// `project.member_removed` (removed by an admin, or left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectMemberRemoved {
    pub user_id: Uuid,
}

/// `project.owner_changed`: `to` (already a member) becomes the owner and
/// `from` stays on as an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectOwnerChanged {
    pub from: Uuid,
    pub to: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProjectEvent {
    #[serde(rename = "project.created")]
    Created(ProjectCreated),
    #[serde(rename = "project.updated")]
    Updated(ProjectUpdated),
    #[serde(rename = "project.archived")]
    Archived(ProjectArchived),
    #[serde(rename = "project.unarchived")]
    Unarchived(ProjectUnarchived),
    #[serde(rename = "project.deleted")]
    Deleted(ProjectDeleted),
    #[serde(rename = "project.member_added")]
    MemberAdded(ProjectMemberAdded),
    #[serde(rename = "project.member_role_changed")]
    MemberRoleChanged(ProjectMemberRoleChanged),
    #[serde(rename = "project.member_removed")]
    MemberRemoved(ProjectMemberRemoved),
    #[serde(rename = "project.owner_changed")]
    OwnerChanged(ProjectOwnerChanged),
}

// ---------------------------------------------------------------- user events

/// `user.registered`. Never carries a password hash or a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    pub email: String,
    pub display_name: String,
    pub role: Role,
}

/// `user.role_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRoleChanged {
    pub from: Role,
    pub to: Role,
}

/// `user.deactivated`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserDeactivated {}

/// `user.reactivated`: an admin gave a deactivated account back its access.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserReactivated {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    #[serde(rename = "user.registered")]
    Registered(UserRegistered),
    #[serde(rename = "user.role_changed")]
    RoleChanged(UserRoleChanged),
    #[serde(rename = "user.deactivated")]
    Deactivated(UserDeactivated),
    #[serde(rename = "user.reactivated")]
    Reactivated(UserReactivated),
}

/// Any event of the system.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Task(TaskEvent),
    Project(ProjectEvent),
    User(UserEvent),
}

impl From<TaskEvent> for Event {
    fn from(e: TaskEvent) -> Self {
        Event::Task(e)
    }
}

impl From<ProjectEvent> for Event {
    fn from(e: ProjectEvent) -> Self {
        Event::Project(e)
    }
}

impl From<UserEvent> for Event {
    fn from(e: UserEvent) -> Self {
        Event::User(e)
    }
}

/// Every event type on the wire with its current schema version.
pub const EVENT_TYPES: &[(&str, StreamType, u32)] = &[
    ("task.created", StreamType::Task, 3),
    ("task.updated", StreamType::Task, 1),
    ("task.status_changed", StreamType::Task, 1),
    ("task.priority_changed", StreamType::Task, 1),
    ("task.due_date_changed", StreamType::Task, 1),
    ("task.deleted", StreamType::Task, 1),
    ("task.assignees_changed", StreamType::Task, 1),
    ("task.moved", StreamType::Task, 1),
    ("task.attachment_added", StreamType::Task, 1),
    ("task.attachment_removed", StreamType::Task, 1),
    ("project.created", StreamType::Project, 1),
    ("project.updated", StreamType::Project, 1),
    ("project.archived", StreamType::Project, 1),
    ("project.unarchived", StreamType::Project, 1),
    ("project.deleted", StreamType::Project, 1),
    ("project.member_added", StreamType::Project, 1),
    ("project.member_role_changed", StreamType::Project, 1),
    ("project.member_removed", StreamType::Project, 1),
    ("project.owner_changed", StreamType::Project, 1),
    ("user.registered", StreamType::User, 1),
    ("user.role_changed", StreamType::User, 1),
    ("user.deactivated", StreamType::User, 1),
    ("user.reactivated", StreamType::User, 1),
];

/// The current schema version of an event type, or `None` if unknown.
pub fn current_schema(event_type: &str) -> Option<u32> {
    EVENT_TYPES
        .iter()
        .find(|(t, _, _)| *t == event_type)
        .map(|(_, _, s)| *s)
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::Task(TaskEvent::Created(_)) => "task.created",
            Event::Task(TaskEvent::Updated(_)) => "task.updated",
            Event::Task(TaskEvent::StatusChanged(_)) => "task.status_changed",
            Event::Task(TaskEvent::PriorityChanged(_)) => "task.priority_changed",
            Event::Task(TaskEvent::DueDateChanged(_)) => "task.due_date_changed",
            Event::Task(TaskEvent::Deleted(_)) => "task.deleted",
            Event::Task(TaskEvent::AssigneesChanged(_)) => "task.assignees_changed",
            Event::Task(TaskEvent::Moved(_)) => "task.moved",
            Event::Task(TaskEvent::AttachmentAdded(_)) => "task.attachment_added",
            Event::Task(TaskEvent::AttachmentRemoved(_)) => "task.attachment_removed",
            Event::Project(ProjectEvent::Created(_)) => "project.created",
            Event::Project(ProjectEvent::Updated(_)) => "project.updated",
            Event::Project(ProjectEvent::Archived(_)) => "project.archived",
            Event::Project(ProjectEvent::Unarchived(_)) => "project.unarchived",
            Event::Project(ProjectEvent::Deleted(_)) => "project.deleted",
            Event::Project(ProjectEvent::MemberAdded(_)) => "project.member_added",
            Event::Project(ProjectEvent::MemberRoleChanged(_)) => "project.member_role_changed",
            Event::Project(ProjectEvent::MemberRemoved(_)) => "project.member_removed",
            Event::Project(ProjectEvent::OwnerChanged(_)) => "project.owner_changed",
            Event::User(UserEvent::Registered(_)) => "user.registered",
            Event::User(UserEvent::RoleChanged(_)) => "user.role_changed",
            Event::User(UserEvent::Deactivated(_)) => "user.deactivated",
            Event::User(UserEvent::Reactivated(_)) => "user.reactivated",
        }
    }

    pub fn stream_type(&self) -> StreamType {
        match self {
            Event::Task(_) => StreamType::Task,
            Event::Project(_) => StreamType::Project,
            Event::User(_) => StreamType::User,
        }
    }

    /// The schema version this code writes for the event's type.
    pub fn schema(&self) -> u32 {
        current_schema(self.event_type()).unwrap_or(1)
    }

    /// The payload (`data`) as JSON.
    pub fn data(&self) -> serde_json::Value {
        let tagged = match self {
            Event::Task(e) => serde_json::to_value(e),
            Event::Project(e) => serde_json::to_value(e),
            Event::User(e) => serde_json::to_value(e),
        };
        // Serialising these plain structs cannot fail; fall back to null defensively.
        tagged
            .ok()
            .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Builds a typed event from a (current-schema) type and payload.
    pub fn from_parts(
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        let tagged = serde_json::json!({ "type": event_type, "data": data });
        if event_type.starts_with("task.") {
            serde_json::from_value(tagged).map(Event::Task)
        } else if event_type.starts_with("project.") {
            serde_json::from_value(tagged).map(Event::Project)
        } else {
            serde_json::from_value(tagged).map(Event::User)
        }
    }
}
