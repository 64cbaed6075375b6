//! What a write answers: the task resource (the one `GET /tasks/{id}`
//! serves), the project or member resource (those of `GET /projects/{id}`
//! and its members), with their version headers, rendered once and, under
//! an idempotency key, stored and replayed as rendered.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use resources::{AttachmentResource, MemberResource, ProjectResource, TaskResource};
use serde::Serialize;

use super::headers;
use crate::idempotency::{StoredResponse, REPLAYED_HEADER};
use crate::projects::{self, ProjectSnapshot};
use crate::tasks::{Outcome, TaskSnapshot, Written};

/// The task as it stands after the write; `None` once it is deleted.
pub fn task_resource(s: &TaskSnapshot) -> Option<TaskResource> {
    let task = s.task()?;
    Some(TaskResource {
        id: s.id,
        owner_id: task.owner_id,
        project_id: task.project_id,
        assignee_ids: task.assignee_ids.clone(),
        title: task.title.clone(),
        description: task.description.clone(),
        status: task.status,
        priority: task.priority,
        due_at: task.due_at,
        tags: task.tags.clone(),
        created_at: s.created_at?,
        updated_at: s.updated_at?,
        completed_at: s.completed_at,
        version: s.version,
        attachments: s.attachments.iter().map(attachment_resource).collect(),
    })
}

/// An attachment as `GET /tasks/{id}/attachments` shows it.
pub fn attachment_resource(
    (a, at): &(events::TaskAttachmentAdded, chrono::DateTime<chrono::Utc>),
) -> AttachmentResource {
    AttachmentResource {
        id: a.attachment_id,
        filename: a.filename.clone(),
        content_type: a.content_type.clone(),
        size: a.size,
        sha256: a.sha256.clone(),
        uploaded_by: a.uploaded_by,
        uploaded_at: *at,
    }
}

/// 201 with a pending upload (`body`) and its `Location`; the task's
/// version headers are those of the task, unchanged.
pub fn upload_created<T: Serialize>(w: &Written, location: String, body: &T) -> StoredResponse {
    json_response(
        StatusCode::CREATED,
        Some((header::LOCATION.to_string(), location)),
        headers::version(&w.snapshot),
        Some(body),
    )
}

/// 200 with the completed attachment `id`.
pub fn attachment_completed(w: &Written, id: uuid::Uuid) -> StoredResponse {
    let found = w
        .snapshot
        .attachments
        .iter()
        .find(|(a, _)| a.attachment_id == id)
        .map(attachment_resource);
    json_response(StatusCode::OK, None, headers::version(&w.snapshot), found)
}

/// 201 with the task and its `Location`.
pub fn created(w: &Written) -> StoredResponse {
    with_task(
        StatusCode::CREATED,
        w,
        Some(headers::location(w.snapshot.id)),
    )
}

/// 200 with the task.
pub fn changed(w: &Written) -> StoredResponse {
    with_task(StatusCode::OK, w, None)
}

/// 204 with the version of the deletion.
pub fn deleted(w: &Written) -> StoredResponse {
    StoredResponse {
        status: StatusCode::NO_CONTENT.as_u16(),
        headers: headers::version(&w.snapshot).into(),
        body: Vec::new(),
    }
}

fn with_task(
    status: StatusCode,
    w: &Written,
    location: Option<(String, String)>,
) -> StoredResponse {
    json_response(
        status,
        location,
        headers::version(&w.snapshot),
        task_resource(&w.snapshot),
    )
}

fn json_response<T: Serialize>(
    status: StatusCode,
    location: Option<(String, String)>,
    version: [(String, String); 2],
    resource: Option<T>,
) -> StoredResponse {
    let mut headers = vec![(
        header::CONTENT_TYPE.to_string(),
        "application/json".to_owned(),
    )];
    headers.extend(location);
    headers.extend(version);
    let body = resource
        .and_then(|t| serde_json::to_vec(&t).ok())
        .unwrap_or_default();
    StoredResponse {
        status: status.as_u16(),
        headers,
        body,
    }
}

/// The project as it stands after the write, seen by `actor`; `None` once
/// it is deleted or the actor has left it.
pub fn project_resource(s: &ProjectSnapshot, actor: uuid::Uuid) -> Option<ProjectResource> {
    let p = s.state.live()?;
    Some(ProjectResource {
        id: s.id,
        name: p.name.clone(),
        description: p.description.clone(),
        owner_id: p.owner_id,
        archived: p.archived,
        my_role: p.role_of(actor)?,
        member_count: u32::try_from(p.members.len()).unwrap_or(u32::MAX),
        created_at: s.created_at?,
        updated_at: s.updated_at?,
        version: s.version,
    })
}

fn project_version(w: &projects::Written) -> [(String, String); 2] {
    headers::stream_version(w.snapshot.id, w.snapshot.version)
}

/// 201 with the new project and its `Location`.
pub fn project_created(w: &projects::Written) -> StoredResponse {
    json_response(
        StatusCode::CREATED,
        Some(headers::project_location(w.snapshot.id, None)),
        project_version(w),
        project_resource(&w.snapshot, w.actor),
    )
}

/// 200 with the project.
pub fn project_changed(w: &projects::Written) -> StoredResponse {
    json_response(
        StatusCode::OK,
        None,
        project_version(w),
        project_resource(&w.snapshot, w.actor),
    )
}

/// 204 with the project's version (a delete, a removal, leaving).
pub fn project_no_content(w: &projects::Written) -> StoredResponse {
    StoredResponse {
        status: StatusCode::NO_CONTENT.as_u16(),
        headers: project_version(w).into(),
        body: Vec::new(),
    }
}

fn member_resource(w: &projects::Written) -> Option<MemberResource> {
    w.member.as_ref().map(|m| MemberResource {
        user_id: m.user_id,
        email: m.email.clone(),
        display_name: m.display_name.clone(),
        role: m.role,
    })
}

/// 201 with the new member and its `Location`.
pub fn member_added(w: &projects::Written) -> StoredResponse {
    let location = w
        .member
        .as_ref()
        .map(|m| headers::project_location(w.snapshot.id, Some(m.user_id)));
    json_response(
        StatusCode::CREATED,
        location,
        project_version(w),
        member_resource(w),
    )
}

/// 200 with the member.
pub fn member_changed(w: &projects::Written) -> StoredResponse {
    json_response(StatusCode::OK, None, project_version(w), member_resource(w))
}

/// A replay says so (`Idempotent-Replayed: true`).
impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Done(r) => r.into_response(),
            Outcome::Replayed(r) => {
                let mut res = r.into_response();
                res.headers_mut()
                    .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
                res
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};
    use events::{
        Event, EventEnvelope, EventMeta, Priority, TaskCreated, TaskEvent, TaskStatus,
        TaskStatusChanged,
    };
    use uuid::Uuid;

    use super::task_resource;
    use crate::tasks::TaskSnapshot;

    /// The resource after folding `events`, the n-th (from 0) at `t0 + n s`.
    fn after(events: &[TaskEvent]) -> (resources::TaskResource, DateTime<Utc>) {
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let history: Vec<EventEnvelope> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let meta = EventMeta {
                    actor: owner,
                    correlation_id: Uuid::now_v7(),
                    causation_id: None,
                    occurred_at: t0 + TimeDelta::seconds(i as i64),
                };
                let e = match e {
                    TaskEvent::Created(c) => TaskEvent::Created(TaskCreated {
                        owner_id: owner,
                        project_id: None,
                        assignee_ids: vec![],
                        ..c.clone()
                    }),
                    other => other.clone(),
                };
                EventEnvelope::new(id, i as u64 + 1, &Event::Task(e), meta)
            })
            .collect();
        let snapshot = TaskSnapshot::fold(id, &history).unwrap();
        (task_resource(&snapshot).unwrap(), t0)
    }

    fn created(status: TaskStatus) -> TaskEvent {
        TaskEvent::Created(TaskCreated {
            owner_id: Uuid::nil(),
            project_id: None,
            assignee_ids: vec![],
            title: "t".into(),
            description: String::new(),
            status,
            priority: Priority::Medium,
            due_at: None,
            tags: vec![],
        })
    }

    fn moved(from: TaskStatus, to: TaskStatus) -> TaskEvent {
        TaskEvent::StatusChanged(TaskStatusChanged { from, to })
    }

    /// `completed_at` follows the task view's rule: set when the task
    /// becomes done, cleared when it leaves done.
    #[test]
    fn completed_at_is_when_the_task_last_became_done() {
        use TaskStatus::{Done, InProgress, Todo};
        let s = |n: i64| TimeDelta::seconds(n);
        let (t, t0) = after(&[created(Todo)]);
        assert_eq!(t.completed_at, None);
        assert_eq!((t.created_at, t.updated_at, t.version), (t0, t0, 1));

        let (t, t0) = after(&[
            created(Todo),
            moved(Todo, InProgress),
            moved(InProgress, Done),
        ]);
        assert_eq!(t.completed_at, Some(t0 + s(2)));
        assert_eq!((t.created_at, t.updated_at, t.version), (t0, t0 + s(2), 3));

        let (t, _) = after(&[
            created(Todo),
            moved(Todo, InProgress),
            moved(InProgress, Done),
            moved(Done, Todo),
        ]);
        assert_eq!(t.completed_at, None);

        let (t, t0) = after(&[created(Done)]);
        assert_eq!(t.completed_at, Some(t0));
    }
}
