//! The MongoDB views the projector maintains and query-api reads, and the
//! pure functions that fold events into them.
//!
//! # Collections
//!
//! - `task_views`: one [`TaskView`] per task, `_id` = task id.
//! - `users`: one [`UserView`] per user, `_id` = user id.
//!
//! # Indexes (created at start by [`crate::ensure_indexes`])
//!
//! Every task query is scoped to one owner, so every task index starts with
//! `owner_id`; each sort order has its own index ending in `_id`, the tie
//! breaker that makes keyset pagination total:
//!
//! | collection | keys | serves |
//! | --- | --- | --- |
//! | `task_views` | `{owner_id: 1, created_at: 1, _id: 1}` | `sort=created_at` / `-created_at`, `created_before/after` |
//! | `task_views` | `{owner_id: 1, due_at: 1, _id: 1}` | `sort=due_at` / `-due_at`, `due_before/after`, `overdue` |
//! | `task_views` | `{owner_id: 1, updated_at: 1, _id: 1}` | `sort=updated_at` / `-updated_at`, `updated_since` |
//! | `task_views` | `{owner_id: 1, priority_rank: 1, _id: 1}` | `sort=priority` / `-priority` |
//! | `task_views` | `{owner_id: 1, status: 1}` | `status` filters |
//! | `users` | `{email: 1}` | look-ups by email |
//!
//! # Why deleted tasks stay in the view
//!
//! `task.deleted` flags the view (`deleted: true`) instead of removing the
//! document: the document carries the stream's version, and without it a
//! re-delivered `task.created` (at-least-once delivery) would resurrect the
//! task. query-api never serves a flagged task.

use bson::{doc, Document};
use events::{Event, EventEnvelope, Priority, Role, StreamType, TaskEvent, TaskStatus, UserEvent};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};

use crate::fold::{impl_view, next_event, next_task_event, user_event};
pub use crate::fold::{Applied, Poison, View};

/// Collection of [`TaskView`]s.
pub const TASK_VIEWS: &str = "task_views";
/// Collection of [`UserView`]s.
pub const USER_VIEWS: &str = "users";

/// The read model of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task id (hyphenated UUID).
    #[serde(rename = "_id")]
    pub id: String,
    pub owner_id: String,
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

impl_view!(TaskView, TASK_VIEWS, StreamType::Task, apply);

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
    ]
}

/// The indexes of the users view.
pub fn user_indexes() -> Vec<IndexModel> {
    vec![index(doc! { "email": 1 }, "email")]
}

#[cfg(test)]
mod tests;
