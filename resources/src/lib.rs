//! The resources the HTTP APIs answer with: one type per resource, served
//! alike by every service that shows it (command-api after a write,
//! query-api on a read), so a client sees one shape and one schema.
//!
//! Types only: no I/O, no storage types. Each service builds a resource
//! from what it holds (the aggregate after a write, a view on a read).

use chrono::{DateTime, Utc};
use events::{Priority, ProjectRole, TaskStatus};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A task as the API shows it.
///
/// Instants are RFC 3339 in UTC, to the millisecond: the precision the
/// views keep, so a write's answer and a later read of the same version
/// are equal. Absent optional fields are `null`, never left out.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaskResource {
    pub id: Uuid,
    /// Who created the task.
    pub owner_id: Uuid,
    /// The project the task belongs to; `null` for a personal task.
    pub project_id: Option<Uuid>,
    /// Who the task is assigned to (at most 10).
    pub assignee_ids: Vec<Uuid>,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: Priority,
    #[serde(serialize_with = "millis::option")]
    pub due_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    #[serde(serialize_with = "millis::instant")]
    pub created_at: DateTime<Utc>,
    /// When the last event of the task happened.
    #[serde(serialize_with = "millis::instant")]
    pub updated_at: DateTime<Utc>,
    /// When the task last became `done`; `null` while it is not done.
    #[serde(serialize_with = "millis::option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The task's stream version; also its `ETag`.
    pub version: u64,
    /// Completed attachments, oldest first (an upload not yet completed is
    /// listed nowhere).
    pub attachments: Vec<AttachmentResource>,
}

/// A file attached to a task: its metadata (the bytes are in the object
/// store, reached through `GET /tasks/{id}/attachments/{attachment_id}/download`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AttachmentResource {
    pub id: Uuid,
    pub filename: String,
    /// As declared at upload, from the allowlist; downloads carry it.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    pub uploaded_by: Uuid,
    /// When the upload was completed.
    #[serde(serialize_with = "millis::instant")]
    pub uploaded_at: DateTime<Utc>,
}

/// A project as the API shows it, with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProjectResource {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub owner_id: Uuid,
    /// An archived project's tasks are read-only.
    pub archived: bool,
    /// The caller's role in the project.
    pub my_role: ProjectRole,
    /// How many members the project has, its owner included.
    pub member_count: u32,
    #[serde(serialize_with = "millis::instant")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "millis::instant")]
    pub updated_at: DateTime<Utc>,
    /// The project's stream version; also its `ETag`.
    pub version: u64,
}

/// One member of a project.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MemberResource {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: ProjectRole,
}

/// Instants written to the millisecond (rounded down, as BSON dates hold
/// them), in chrono's RFC 3339 form: `2030-01-02T03:04:05Z`,
/// `2030-01-02T03:04:05.120Z`.
mod millis {
    use chrono::{DateTime, Utc};
    use serde::{Serialize, Serializer};

    fn truncate(t: &DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(*t)
    }

    pub fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        truncate(t).serialize(s)
    }

    pub fn option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        t.as_ref().map(truncate).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn task() -> TaskResource {
        TaskResource {
            id: Uuid::from_u128(1),
            owner_id: Uuid::from_u128(2),
            project_id: None,
            assignee_ids: vec![],
            title: "Write the report".into(),
            description: String::new(),
            status: TaskStatus::Todo,
            priority: Priority::Medium,
            due_at: None,
            tags: vec!["work".into()],
            created_at: at("2026-01-31T09:00:00Z"),
            updated_at: at("2026-01-31T09:00:00.123456789Z"),
            completed_at: None,
            version: 1,
            attachments: vec![],
        }
    }

    #[test]
    fn every_field_is_written_and_absent_ones_are_null() {
        assert_eq!(
            serde_json::to_value(task()).unwrap(),
            json!({
                "id": "00000000-0000-0000-0000-000000000001",
                "owner_id": "00000000-0000-0000-0000-000000000002",
                "project_id": null,
                "assignee_ids": [],
                "title": "Write the report",
                "description": "",
                "status": "todo",
                "priority": "medium",
                "due_at": null,
                "tags": ["work"],
                "created_at": "2026-01-31T09:00:00Z",
                "updated_at": "2026-01-31T09:00:00.123Z",
                "completed_at": null,
                "version": 1,
                "attachments": []
            })
        );
    }

    #[test]
    fn instants_are_cut_to_the_millisecond_as_the_views_hold_them() {
        let t = TaskResource {
            due_at: Some(at("9999-12-31T23:59:59.999999Z")),
            completed_at: Some(at("0001-01-01T00:00:00.0015Z")),
            ..task()
        };
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["due_at"], "9999-12-31T23:59:59.999Z");
        assert_eq!(v["completed_at"], "0001-01-01T00:00:00.001Z");
    }
}
