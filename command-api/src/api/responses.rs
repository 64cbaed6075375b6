//! What a write answers: the task resource (the one `GET /tasks/{id}`
//! serves) with its version headers, rendered once and, under an
//! idempotency key, stored and replayed as rendered.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use resources::TaskResource;

use super::headers;
use crate::idempotency::{StoredResponse, REPLAYED_HEADER};
use crate::tasks::{Outcome, TaskSnapshot, Written};

/// The task as it stands after the write; `None` once it is deleted.
pub fn task_resource(s: &TaskSnapshot) -> Option<TaskResource> {
    let task = s.task()?;
    Some(TaskResource {
        id: s.id,
        owner_id: task.owner_id,
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
    })
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
    let mut headers = vec![(
        header::CONTENT_TYPE.to_string(),
        "application/json".to_owned(),
    )];
    headers.extend(location);
    headers.extend(headers::version(&w.snapshot));
    let body = task_resource(&w.snapshot)
        .and_then(|t| serde_json::to_vec(&t).ok())
        .unwrap_or_default();
    StoredResponse {
        status: status.as_u16(),
        headers,
        body,
    }
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
