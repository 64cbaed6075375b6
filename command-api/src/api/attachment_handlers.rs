//! The attachment writes: hand out a presigned upload, complete it once
//! the store holds the bytes, remove an attachment. The bytes never pass
//! through here (see `crate::attachments` for the flow and the cleanup).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use objects::{Hashed, StoreError};
use resources::AttachmentResource;
use serde::{Deserialize, Serialize};
use service::{FieldError, Problem};
use utoipa::ToSchema;
use uuid::Uuid;

use super::bodies::NoBody;
use super::headers::IdempotencyKeyHeader;
use super::responses;
use super::write::WriteRequest;
use crate::attachments::{self, PendingUpload};
use crate::domain::Action;
use crate::startup::AppState;
use crate::tasks;

/// `POST /tasks/{id}/attachments`: what the client is about to upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAttachmentRequest {
    /// Shown to readers and used as the download's filename: no path
    /// separators or control characters, 1 to 255 bytes of UTF-8.
    pub filename: String,
    /// One of the allowed types (`COMMAND_API_ATTACHMENT_CONTENT_TYPES`),
    /// without parameters.
    pub content_type: String,
    /// Bytes; at most `COMMAND_API_ATTACHMENT_MAX_BYTES` (25 MiB by default).
    pub size: u64,
    /// SHA-256 of the bytes: 64 hex digits.
    pub sha256: String,
}

/// How to upload: send `method` to `url` with exactly `headers` (they are
/// signed: another size or checksum is refused by the store) and the bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadInstructions {
    /// `PUT`.
    pub method: String,
    /// A presigned URL on the store's public address.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// After this instant the store refuses the URL.
    pub expires_at: DateTime<Utc>,
}

/// A pending upload: not listed anywhere until it is completed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingUploadResource {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub upload: UploadInstructions,
}

impl super::bodies::JsonBody for CreateAttachmentRequest {}

/// Start an upload: an attachment id and a presigned PUT.
///
/// The caller must be allowed to write the task. The upload is accepted by
/// the store only with the declared size and SHA-256, and only until
/// `upload.expires_at`; then `POST …/{attachment_id}/complete` records it.
/// An upload never completed is removed after
/// `COMMAND_API_ATTACHMENT_UPLOAD_TTL_SECONDS`.
#[utoipa::path(
    post,
    path = "/tasks/{id}/attachments",
    tag = "attachments",
    request_body = CreateAttachmentRequest,
    params(("id" = Uuid, Path, description = "Task id"), IdempotencyKeyHeader),
    responses(
        (status = 201, description = "A pending upload and how to send the bytes", body = PendingUploadResource, headers(
            ("Location" = String, description = "`/tasks/{id}/attachments/{attachment_id}`"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a viewer of the task's project", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: deleted, someone else's, in a project the caller is not a member of)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task's project is archived (`project-archived`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (`/filename`, `/content_type` not allowed, `/sha256`), or a limit (`attachment-limit`, with `limit`: `max_bytes`, `max_per_task`, `max_bytes_per_user` or `max_pending_per_user`, and `max`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The object store (or the event store) is unreachable; nothing was recorded", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn create_attachment(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<CreateAttachmentRequest>,
) -> Result<Response, Problem> {
    let limits = &state.attachment_limits;
    let content_type = body.content_type.trim().to_ascii_lowercase();
    let sha256 = body.sha256.to_ascii_lowercase();
    let mut errors = Vec::new();
    if let Err(why) = attachments::check_filename(&body.filename) {
        errors.push(FieldError::new("/filename", why));
    }
    if !limits.content_types.contains(&content_type) {
        errors.push(FieldError::new(
            "/content_type",
            "not an allowed content type (without parameters)",
        ));
    }
    let Some(sha256_base64) = objects::sha256_hex_to_base64(&sha256) else {
        errors.push(FieldError::new("/sha256", "must be 64 hex digits"));
        return Err(Problem::validation(errors));
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    if body.size > limits.max_bytes {
        return Err(super::errors::attachment_limit(
            "max_bytes",
            limits.max_bytes,
            "the file is larger than one attachment may be",
        ));
    }
    // Nothing is recorded while the store cannot take the upload (a retry
    // of a create that succeeded is answered as before, store or not).
    let replay = match &write.idempotency {
        Some(scope) => crate::idempotency::is_recorded(&state.pool, scope)
            .await
            .map_err(|e| Problem::from(tasks::WriteError::from(e)))?,
        None => false,
    };
    if !replay {
        state.store.probe().await.map_err(store_problem)?;
    }
    let attachment_id = Uuid::now_v7();
    let key = attachments::object_key(write.id, attachment_id);
    let presigned = state
        .store
        .presign_put(&key, body.size, &sha256_base64, &content_type);
    let resource = PendingUploadResource {
        id: attachment_id,
        filename: body.filename.clone(),
        content_type: content_type.clone(),
        size: body.size,
        sha256: sha256.clone(),
        upload: UploadInstructions {
            method: presigned.method.to_owned(),
            url: presigned.url,
            headers: presigned.headers.into_iter().collect(),
            expires_at: presigned.expires_at,
        },
    };
    let upload = PendingUpload {
        attachment_id,
        filename: body.filename,
        content_type,
        size: body.size,
        sha256,
        settles_at: presigned.expires_at
            + chrono::Duration::from_std(limits.upload_grace).unwrap_or_default(),
        max_per_task: limits.max_per_task,
        max_bytes_per_user: limits.max_bytes_per_user,
        max_pending_per_user: limits.max_pending_per_user,
    };
    let location = format!("/tasks/{}/attachments/{attachment_id}", write.id);
    let command = write.command(Action::Attach(upload));
    let outcome = tasks::execute(&state.pool, command, state.max_live_tasks, |w| {
        responses::upload_created(w, location.clone(), &resource)
    })
    .await?;
    Ok(outcome.into_response())
}

/// Complete an upload: the store must hold the object with the declared
/// size and SHA-256; then `task.attachment_added` is recorded and the
/// attachment is listed with the task. Completing twice answers the same.
#[utoipa::path(
    post,
    path = "/tasks/{id}/attachments/{attachment_id}/complete",
    tag = "attachments",
    params(
        ("id" = Uuid, Path, description = "Task id"),
        ("attachment_id" = Uuid, Path, description = "Attachment id"),
        IdempotencyKeyHeader,
    ),
    responses(
        (status = 200, description = "The attachment, now listed", body = AttachmentResource, headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a viewer of the task's project", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user, or no such upload of the caller's (also: removed after its time)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The store holds no object for this upload yet (`upload-missing`), or the project is archived", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The stored object's size or SHA-256 is not the declared one, or it was stored with a `Content-Encoding` (`upload-mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The object store (or the event store) is unreachable; nothing was recorded", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn complete_attachment(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    let attachment_id = write.attachment_id.ok_or_else(Problem::internal)?;
    let row = attachments::find(&state.pool, write.id, attachment_id)
        .await
        .map_err(|e| Problem::from(tasks::WriteError::from(e)))?
        // Only its uploader completes an upload; to anyone else it does not exist.
        .filter(|r| r.uploaded_by == write.caller.id);
    let Some(row) = row else {
        // Refused after the access check: 404 "no such task" for a caller
        // who may not see it, "no such attachment" otherwise.
        let command = write.command(Action::CompleteAttachment(None));
        return run(&state, command, responses::changed).await;
    };
    let added = events::TaskAttachmentAdded {
        attachment_id,
        filename: row.filename.clone(),
        content_type: row.content_type.clone(),
        size: row.size,
        sha256: row.sha256.clone(),
        uploaded_by: row.uploaded_by,
    };
    let command = write.command(Action::CompleteAttachment(Some(added)));
    if !row.completed {
        // Access first: a caller who may no longer write the task (removed
        // from its project, say) gets its 404 or 403, and no call to the
        // store is made for them.
        tasks::check(&state.pool, &command).await?;
        verify_upload(&state, &row).await?;
    }
    run(&state, command, move |w| {
        responses::attachment_completed(w, attachment_id)
    })
    .await
}

/// Remove an attachment: `task.attachment_removed` is recorded and the
/// object is deleted from the store afterwards. A pending upload is
/// cancelled the same way (nothing was recorded for it, so nothing is):
/// its slot is free at once, and its URL useless once the object goes.
#[utoipa::path(
    delete,
    path = "/tasks/{id}/attachments/{attachment_id}",
    tag = "attachments",
    params(
        ("id" = Uuid, Path, description = "Task id"),
        ("attachment_id" = Uuid, Path, description = "Attachment id"),
        IdempotencyKeyHeader,
    ),
    responses(
        (status = 204, description = "The attachment was removed, or the pending upload cancelled", headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a viewer of the task's project", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user, or no such attachment on it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task's project is archived (`project-archived`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_attachment(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    let attachment_id = write.attachment_id.ok_or_else(Problem::internal)?;
    let command = write.command(Action::RemoveAttachment(attachment_id));
    run(&state, command, |w| {
        let mut r = responses::deleted(w);
        r.status = StatusCode::NO_CONTENT.as_u16();
        r
    })
    .await
}

async fn run(
    state: &AppState,
    command: tasks::Write,
    render: impl Fn(&tasks::Written) -> crate::idempotency::StoredResponse,
) -> Result<Response, Problem> {
    let outcome = tasks::execute(&state.pool, command, state.max_live_tasks, render).await?;
    Ok(outcome.into_response())
}

/// The store holds the object with the declared size and checksum: by the
/// checksum the store computed on upload when it reports one, else by
/// reading the object (bounded by its declared size).
async fn verify_upload(state: &AppState, row: &attachments::AttachmentRow) -> Result<(), Problem> {
    let key = attachments::object_key(row.task_id, row.attachment_id);
    let info = state.store.head(&key).await.map_err(store_problem)?;
    let Some(info) = info else {
        return Err(Problem::conflict(
            "upload-missing",
            "the store holds no object for this upload yet: PUT the bytes to the upload URL first",
        ));
    };
    if info.size != row.size {
        return Err(mismatch(format!(
            "the stored object has {} bytes, not the {} declared",
            info.size, row.size
        )));
    }
    // Downloads would be decoded by the client as this says, and differ
    // from the bytes whose size and checksum were declared.
    if info.content_encoding.is_some_and(|e| e != "identity") {
        return Err(mismatch(
            "the object was stored with a Content-Encoding: upload it with exactly the headers given"
                .into(),
        ));
    }
    let declared = objects::sha256_hex_to_base64(&row.sha256).unwrap_or_default();
    let not_declared = || mismatch("the stored object's SHA-256 is not the declared one".into());
    match info.checksum_sha256 {
        Some(stored) if stored == declared => Ok(()),
        Some(_) => Err(not_declared()),
        None => match state
            .store
            .hash(&key, row.size)
            .await
            .map_err(store_problem)?
        {
            Hashed::Sha256(hex) if hex == row.sha256 => Ok(()),
            Hashed::Sha256(_) | Hashed::TooLarge => Err(not_declared()),
            Hashed::Missing => Err(Problem::conflict(
                "upload-missing",
                "the store holds no object for this upload yet",
            )),
        },
    }
}

fn mismatch(detail: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "upload-mismatch",
        "Upload does not match",
        detail,
    )
}

/// The store is down, or refused a call of ours (a misconfiguration):
/// either way 503, and nothing was recorded.
fn store_problem(e: StoreError) -> Problem {
    tracing::warn!(error = %e, "attachment refused: the object store is unavailable");
    Problem::dependency_down("the object store")
}
