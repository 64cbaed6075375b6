//! `GET /tasks/{id}/attachments` and `GET …/{attachment_id}/download`.
//!
//! The list is the task view's (completed attachments only: a pending
//! upload has no event yet); who may read the task may list and download,
//! by the same rule as `GET /tasks/{id}` (anyone else: the same 404). A
//! download answers `302` to a presigned GET on the store's public address
//! whose answer carries `Content-Disposition: attachment` and the stored
//! content type, so no file (HTML and SVG included) is rendered inline.

use access::AuthUser;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use read_model::views::TaskView;
use resources::AttachmentResource;
use serde::Serialize;
use service::http::Path;
use service::Problem;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::consistency::wait_for_token;
use crate::startup::AppState;
use crate::store;
use crate::tasks::{attachment_resource, internal, may_read, no_such_task};

/// A task's completed attachments, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentList {
    pub items: Vec<AttachmentResource>,
}

/// The view of task `id` when `user` may read it; else the 404 of a missing task.
async fn readable_task(state: &AppState, user: &AuthUser, id: Uuid) -> Result<TaskView, Problem> {
    let view = store::tasks::find(&state.db, id)
        .await?
        .filter(|v| !v.deleted)
        .ok_or_else(no_such_task)?;
    let project = view
        .project_id
        .as_deref()
        .map(Uuid::try_parse)
        .transpose()
        .map_err(|e| internal("a task view holds a malformed project id", e))?;
    if !may_read(state, user, project, &view.owner_id).await? {
        return Err(no_such_task());
    }
    Ok(view)
}

/// List a task's attachments (completed uploads only).
#[utoipa::path(
    get,
    path = "/tasks/{id}/attachments",
    tag = "attachments",
    params(
        ("id" = Uuid, Path, description = "Task id"),
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token (e.g. a completion's): wait (bounded) until the list reflects it"),
    ),
    responses(
        (status = 200, description = "The task's attachments, oldest first", body = AttachmentList),
        (status = 400, description = "A malformed consistency token, or one that names no write of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (deleted, someone else's personal task, or a project the caller is not a member of)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 504, description = "The projection did not catch up with the consistency token in time", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_attachments(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    wait_for_token(&state, &user, &headers).await?;
    let view = readable_task(&state, &user, id).await?;
    let items = view
        .attachments
        .iter()
        .map(attachment_resource)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(AttachmentList { items }).into_response())
}

/// Download an attachment: `302` to a short-lived presigned GET.
///
/// The store answers it with `Content-Disposition: attachment` (RFC 6266,
/// with `filename*`) and the stored content type.
#[utoipa::path(
    get,
    path = "/tasks/{id}/attachments/{attachment_id}/download",
    tag = "attachments",
    params(
        ("id" = Uuid, Path, description = "Task id"),
        ("attachment_id" = Uuid, Path, description = "Attachment id"),
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token: wait (bounded) until the task reflects it"),
    ),
    responses(
        (status = 302, description = "Redirect to the bytes", headers(
            ("Location" = String, description = "A presigned GET on the store's public address, valid for minutes"),
        )),
        (status = 400, description = "A malformed consistency token, or one that names no write of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user, or no such attachment on it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The object store (or another store) is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 504, description = "The projection did not catch up with the consistency token in time", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn download_attachment(
    user: AuthUser,
    State(state): State<AppState>,
    Path((id, attachment_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    wait_for_token(&state, &user, &headers).await?;
    let view = readable_task(&state, &user, id).await?;
    let wanted = attachment_id.to_string();
    let attachment = view
        .attachments
        .iter()
        .find(|a| a.id == wanted)
        .ok_or_else(|| Problem::not_found("no such attachment"))?;
    let key = objects::attachment_key(id, attachment_id);
    // A redirect to a store that is down, or to an object already deleted
    // (the view lags behind a removal), would only fail at the client.
    match state.store.head(&key).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(Problem::not_found("no such attachment")),
        Err(e) => {
            tracing::warn!(error = %e, "download refused: the object store is unavailable");
            return Err(Problem::dependency_down("the object store"));
        }
    }
    let url = state
        .store
        .presign_get(&key, &attachment.filename, &attachment.content_type);
    let location = HeaderValue::from_str(&url).map_err(|e| internal("bad presigned URL", e))?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}
