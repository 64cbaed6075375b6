//! The MongoDB views the projector maintains and query-api reads, and the
//! pure functions that fold events into them.
//!
//! # Collections
//!
//! - `task_views`: one [`TaskView`] per task, `_id` = task id.
//! - `users`: one [`UserView`] per user, `_id` = user id.
//! - `project_views`: one [`ProjectView`] per project, `_id` = project id,
//!   its members inside.
//!
//! # Indexes (created at start by [`crate::ensure_indexes`])
//!
//! Every task query is scoped to one owner's personal tasks or to a set of
//! projects, so every task index starts with `owner_id` or `project_id`;
//! each sort order has its own index ending in `_id`, the tie breaker that
//! makes keyset pagination total:
//!
//! | collection | keys | serves |
//! | --- | --- | --- |
//! | `task_views` | `{owner_id: 1, created_at: 1, _id: 1}` | `sort=created_at` / `-created_at`, `created_before/after` |
//! | `task_views` | `{owner_id: 1, due_at: 1, _id: 1}` | `sort=due_at` / `-due_at`, `due_before/after`, `overdue` |
//! | `task_views` | `{owner_id: 1, updated_at: 1, _id: 1}` | `sort=updated_at` / `-updated_at`, `updated_since` |
//! | `task_views` | `{owner_id: 1, priority_rank: 1, _id: 1}` | `sort=priority` / `-priority` |
//! | `task_views` | `{owner_id: 1, status: 1}` | `status` filters |
//! | `task_views` | `{project_id: 1, <sort key>: 1, _id: 1}` (one per sort key above) | the same, over projects |
//! | `task_views` | `{assignee_ids: 1}` | `assignee` filters |
//! | `users` | `{email: 1}` | look-ups by email |
//!
//! # Why deleted tasks stay in the view
//!
//! `task.deleted` flags the view (`deleted: true`) instead of removing the
//! document: the document carries the stream's version, and without it a
//! re-delivered `task.created` (at-least-once delivery) would resurrect the
//! task. query-api never serves a flagged task.

use bson::{doc, Document};
use events::{
    Event, EventEnvelope, Priority, ProjectEvent, ProjectRole, Role, StreamType, TaskEvent,
    TaskStatus, UserEvent,
};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};

use crate::fold::{impl_view, next_event, next_task_event, project_event, user_event};
pub use crate::fold::{Applied, Poison, View};

/// Collection of [`TaskView`]s.
pub const TASK_VIEWS: &str = "task_views";
/// Collection of [`UserView`]s.
pub const USER_VIEWS: &str = "users";
/// Collection of [`ProjectView`]s.
pub const PROJECT_VIEWS: &str = "project_views";

/// The read model of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task id (hyphenated UUID).
    #[serde(rename = "_id")]
    pub id: String,
    pub owner_id: String,
    /// The project (hyphenated UUID); `None` (absent in documents written
    /// before projects) for a personal task.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Hyphenated UUIDs, in the order given.
    #[serde(default)]
    pub assignee_ids: Vec<String>,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: Priority,
    /// [`Priority::rank`], so that sorting by priority sorts by urgency.
    pub priority_rank: i32,
    pub due_at: Option<bson::DateTime>,
    pub tags: Vec<String>,
    pub created_at: bson::DateTime,
    /// `occurred_at` of the last applied event.
    pub updated_at: bson::DateTime,
    /// When the task last became `done`; cleared if it leaves `done`.
    pub completed_at: Option<bson::DateTime>,
    /// The version of the last applied event (BSON has no unsigned integers).
    pub version: i64,
    pub deleted: bool,
    /// Completed attachments, oldest first (absent in documents written
    /// before attachments). Metadata only; the bytes are in the object store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentView>,
}

/// One completed attachment of a task, as `task.attachment_added` said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentView {
    /// Hyphenated UUID.
    pub id: String,
    pub filename: String,
    pub content_type: String,
    /// Bytes (BSON has no unsigned integers; at most the configured limit).
    pub size: i64,
    /// Lowercase hex.
    pub sha256: String,
    pub uploaded_by: String,
    pub uploaded_at: bson::DateTime,
}

/// The read model of one user. Never holds a password hash or a token
/// (the events do not carry them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
    pub version: i64,
}

/// Applies one task event to a task view. Pure: no I/O, no clock.
///
/// Versions guard everything: at or below the view's version is a
/// duplicate (skipped), beyond the next version is a gap (never applied
/// over). Only the exact next version changes the view.
pub fn apply(view: Option<&TaskView>, env: &EventEnvelope) -> Result<Applied<TaskView>, Poison> {
    let event = match next_task_event(view.map(View::version).unwrap_or(0), env)? {
        Ok(event) => event,
        Err(skipped) => return Ok(skipped),
    };
    let at = bson::DateTime::from_chrono(env.occurred_at);
    let next = match (view, event) {
        (None, TaskEvent::Created(c)) => TaskView {
            id: env.stream_id.to_string(),
            owner_id: c.owner_id.to_string(),
            project_id: c.project_id.map(|p| p.to_string()),
            assignee_ids: c.assignee_ids.iter().map(ToString::to_string).collect(),
            title: c.title,
            description: c.description,
            status: c.status,
            priority: c.priority,
            priority_rank: c.priority.rank(),
            due_at: c.due_at.map(bson::DateTime::from_chrono),
            tags: c.tags,
            created_at: at,
            updated_at: at,
            completed_at: (c.status == TaskStatus::Done).then_some(at),
            version: 0,
            deleted: false,
            attachments: Vec::new(),
        },
        (None, other) => return Err(Poison::NotCreatedFirst(type_of_task(&other).to_owned())),
        (Some(v), event) => {
            let mut v = v.clone();
            match event {
                TaskEvent::Created(_) => return Err(Poison::CreatedAgain(env.version)),
                TaskEvent::Updated(u) => {
                    if let Some(t) = u.title {
                        v.title = t;
                    }
                    if let Some(d) = u.description {
                        v.description = d;
                    }
                    if let Some(tags) = u.tags {
                        v.tags = tags;
                    }
                }
                TaskEvent::StatusChanged(s) => {
                    v.status = s.to;
                    v.completed_at = match s.to {
                        TaskStatus::Done => Some(at),
                        _ => None,
                    };
                }
                TaskEvent::PriorityChanged(p) => {
                    v.priority = p.to;
                    v.priority_rank = p.to.rank();
                }
                TaskEvent::DueDateChanged(d) => {
                    v.due_at = d.due_at.map(bson::DateTime::from_chrono);
                }
                TaskEvent::Deleted(_) => v.deleted = true,
                TaskEvent::AssigneesChanged(a) => {
                    v.assignee_ids = a.assignee_ids.iter().map(ToString::to_string).collect();
                }
                TaskEvent::Moved(m) => v.project_id = m.to.map(|p| p.to_string()),
                TaskEvent::AttachmentAdded(a) => {
                    let id = a.attachment_id.to_string();
                    // Redelivered events are skipped by version; this only
                    // keeps a log that says "added" twice from listing it twice.
                    v.attachments.retain(|x| x.id != id);
                    v.attachments.push(AttachmentView {
                        id,
                        filename: a.filename,
                        content_type: a.content_type,
                        size: i64::try_from(a.size).unwrap_or(i64::MAX),
                        sha256: a.sha256,
                        uploaded_by: a.uploaded_by.to_string(),
                        uploaded_at: at,
                    });
                }
                TaskEvent::AttachmentRemoved(r) => {
                    let id = r.attachment_id.to_string();
                    v.attachments.retain(|x| x.id != id);
                }
            }
            v.updated_at = at;
            v
        }
    };
    Ok(Applied::Advanced(TaskView {
        version: env.version as i64,
        ..next
    }))
}

fn type_of_task(e: &TaskEvent) -> &'static str {
    Event::Task(e.clone()).event_type()
}

/// Applies one user event to a user view. Pure, same version rules as [`apply`].
pub fn apply_user(
    view: Option<&UserView>,
    env: &EventEnvelope,
) -> Result<Applied<UserView>, Poison> {
    let have = view.map(View::version).unwrap_or(0);
    let event = match next_event(have, env, StreamType::User, user_event)? {
        Ok(event) => event,
        Err(skipped) => return Ok(skipped),
    };
    let at = bson::DateTime::from_chrono(env.occurred_at);
    let next = match (view, event) {
        (None, UserEvent::Registered(r)) => UserView {
            id: env.stream_id.to_string(),
            email: r.email,
            display_name: r.display_name,
            role: r.role,
            active: true,
            created_at: at,
            updated_at: at,
            version: 0,
        },
        (None, other) => {
            return Err(Poison::NotCreatedFirst(
                Event::User(other).event_type().to_owned(),
            ))
        }
        (Some(v), event) => {
            let mut v = v.clone();
            match event {
                UserEvent::Registered(_) => return Err(Poison::CreatedAgain(env.version)),
                UserEvent::RoleChanged(r) => v.role = r.to,
                UserEvent::Deactivated(_) => v.active = false,
                UserEvent::Reactivated(_) => v.active = true,
            }
            v.updated_at = at;
            v
        }
    };
    Ok(Applied::Advanced(UserView {
        version: env.version as i64,
        ..next
    }))
}

/// The read model of one project, its members inside (a project has at
/// most a few hundred; see command-api's member cap).
///
/// Like a task, a deleted project stays as a flagged document so that a
/// re-delivered `project.created` cannot bring it back; query-api never
/// serves it. Who may read a project is not decided here: query-api asks
/// the command side's membership table, which has no lag (see
/// ARCHITECTURE.md, "Access follows membership").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectView {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner_id: String,
    pub archived: bool,
    /// Every member, the owner included, in the order they joined.
    pub members: Vec<MemberView>,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
    pub version: i64,
    pub deleted: bool,
}

/// One member of a [`ProjectView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub user_id: String,
    pub role: ProjectRole,
    pub joined_at: bson::DateTime,
}

impl ProjectView {
    /// The role of `user_id` (hyphenated), if they are a member.
    pub fn role_of(&self, user_id: &str) -> Option<ProjectRole> {
        self.members
            .iter()
            .find(|m| m.user_id == user_id)
            .map(|m| m.role)
    }

    fn set_role(&mut self, user_id: &str, role: ProjectRole) {
        if let Some(m) = self.members.iter_mut().find(|m| m.user_id == user_id) {
            m.role = role;
        }
    }
}

/// Applies one project event to a project view. Pure, same version rules
/// as [`apply`].
pub fn apply_project(
    view: Option<&ProjectView>,
    env: &EventEnvelope,
) -> Result<Applied<ProjectView>, Poison> {
    let have = view.map(View::version).unwrap_or(0);
    let event = match next_event(have, env, StreamType::Project, project_event)? {
        Ok(event) => event,
        Err(skipped) => return Ok(skipped),
    };
    let at = bson::DateTime::from_chrono(env.occurred_at);
    let next = match (view, event) {
        (None, ProjectEvent::Created(c)) => ProjectView {
            id: env.stream_id.to_string(),
            name: c.name,
            description: c.description,
            owner_id: c.owner_id.to_string(),
            archived: false,
            members: vec![MemberView {
                user_id: c.owner_id.to_string(),
                role: ProjectRole::Owner,
                joined_at: at,
            }],
            created_at: at,
            updated_at: at,
            version: 0,
            deleted: false,
        },
        (None, other) => {
            return Err(Poison::NotCreatedFirst(
                Event::Project(other).event_type().to_owned(),
            ))
        }
        (Some(v), event) => {
            let mut v = v.clone();
            match event {
                ProjectEvent::Created(_) => return Err(Poison::CreatedAgain(env.version)),
                ProjectEvent::Updated(u) => {
                    if let Some(name) = u.name {
                        v.name = name;
                    }
                    if let Some(description) = u.description {
                        v.description = description;
                    }
                }
                ProjectEvent::Archived(_) => v.archived = true,
                ProjectEvent::Unarchived(_) => v.archived = false,
                ProjectEvent::Deleted(_) => v.deleted = true,
                ProjectEvent::MemberAdded(m) => {
                    let user_id = m.user_id.to_string();
                    v.members.retain(|existing| existing.user_id != user_id);
                    v.members.push(MemberView {
                        user_id,
                        role: m.role,
                        joined_at: at,
                    });
                }
                ProjectEvent::MemberRoleChanged(r) => v.set_role(&r.user_id.to_string(), r.to),
                ProjectEvent::MemberRemoved(m) => {
                    let user_id = m.user_id.to_string();
                    v.members.retain(|existing| existing.user_id != user_id);
                }
                ProjectEvent::OwnerChanged(o) => {
                    v.set_role(&o.from.to_string(), ProjectRole::Admin);
                    v.set_role(&o.to.to_string(), ProjectRole::Owner);
                    v.owner_id = o.to.to_string();
                }
            }
            v.updated_at = at;
            v
        }
    };
    Ok(Applied::Advanced(ProjectView {
        version: env.version as i64,
        ..next
    }))
}

impl_view!(TaskView, TASK_VIEWS, StreamType::Task, apply);

impl_view!(
    ProjectView,
    PROJECT_VIEWS,
    StreamType::Project,
    apply_project
);

impl_view!(UserView, USER_VIEWS, StreamType::User, apply_user);

fn index(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).build())
        .build()
}

/// The indexes of every view (see the module docs); idempotent.
pub fn task_indexes() -> Vec<IndexModel> {
    vec![
        index(
            doc! { "owner_id": 1, "created_at": 1, "_id": 1 },
            "owner_created",
        ),
        index(doc! { "owner_id": 1, "due_at": 1, "_id": 1 }, "owner_due"),
        index(
            doc! { "owner_id": 1, "updated_at": 1, "_id": 1 },
            "owner_updated",
        ),
        index(
            doc! { "owner_id": 1, "priority_rank": 1, "_id": 1 },
            "owner_priority",
        ),
        index(doc! { "owner_id": 1, "status": 1 }, "owner_status"),
        index(
            doc! { "project_id": 1, "created_at": 1, "_id": 1 },
            "project_created",
        ),
        index(
            doc! { "project_id": 1, "due_at": 1, "_id": 1 },
            "project_due",
        ),
        index(
            doc! { "project_id": 1, "updated_at": 1, "_id": 1 },
            "project_updated",
        ),
        index(
            doc! { "project_id": 1, "priority_rank": 1, "_id": 1 },
            "project_priority",
        ),
        index(doc! { "assignee_ids": 1 }, "assignees"),
    ]
}

/// The indexes of the project view: who is a member of what (the
/// rebuild check and operators' look-ups; access itself is decided from
/// Postgres, see [`ProjectView`]).
pub fn project_indexes() -> Vec<IndexModel> {
    vec![index(doc! { "members.user_id": 1 }, "members")]
}

/// The indexes of the users view.
pub fn user_indexes() -> Vec<IndexModel> {
    vec![index(doc! { "email": 1 }, "email")]
}

#[cfg(test)]
mod tests;
