//! The REST edge: request bodies parsed into domain values, responses with
//! `ETag`, `Location` and `X-Consistency-Token`, problem+json errors, and
//! the OpenAPI document describing all of it.

use access::AuthUser;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use events::{Priority, StreamVersion, TaskStatus};
use serde::{Deserialize, Deserializer, Serialize};
use service::http::Path;
use service::json::Json;
use service::time::Instant;
use service::{FieldError, Problem};
use sha2::{Digest, Sha256};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{
    Action, Command, CreateTask, Description, DomainError, Invalid, Tags, TaskTitle, UpdateTask,
};
use crate::idempotency::{IdempotencyKey, Scope, StoredResponse, REPLAYED_HEADER};
use crate::startup::AppState;
use crate::tasks::{self, Outcome, WriteError, Written};

pub const IF_MATCH: HeaderName = header::IF_MATCH;
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

// ------------------------------------------------------------------ bodies

/// `POST /tasks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// 1 to 200 characters after trimming.
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// Up to 10,000 characters; default empty.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    /// Default `medium`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// RFC 3339 within the years 1 to 9999 (UTC), or null for none.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub due_at: Option<Instant>,
    /// Up to 20 tags of 1 to 40 characters; duplicates are dropped.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
}

/// `PATCH /tasks/{id}`: absent fields stay as they are. `null` clears
/// `description`, `tags` and `due_at`; `title` and `priority` cannot be null.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<Option<Priority>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub due_at: Option<Option<Instant>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, nullable, max_items = 20)]
    pub tags: Option<Option<Vec<String>>>,
}

/// Tells "field absent" (`None`) from "field is null" (`Some(None)`).
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /tasks/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeStatusRequest {
    pub status: TaskStatus,
}

/// A task's current state, as every successful write returns it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskResponse {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: Priority,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<String>,
    pub tags: Vec<String>,
    /// The stream version; also the `ETag`.
    pub version: StreamVersion,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ------------------------------------------------------------ validation

fn validate_title(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<TaskTitle> {
    match raw {
        None => {
            errors.push(FieldError::new("/title", "is required"));
            None
        }
        Some(t) => collect(TaskTitle::parse(t), "/title", errors),
    }
}

fn collect<T>(r: Result<T, Invalid>, pointer: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    r.map_err(|e| errors.push(FieldError::new(pointer, e.0)))
        .ok()
}

fn validate_tags(raw: &[String], errors: &mut Vec<FieldError>) -> Option<Tags> {
    match Tags::parse(raw) {
        Ok(t) => Some(t),
        Err(bad) => {
            for (index, why) in bad {
                let pointer = match index {
                    Some(i) => format!("/tags/{i}"),
                    None => "/tags".to_owned(),
                };
                errors.push(FieldError::new(pointer, why.0));
            }
            None
        }
    }
}

impl CreateTaskRequest {
    fn into_action(self) -> Result<Action, Problem> {
        let mut errors = Vec::new();
        let title = validate_title(self.title.as_deref(), &mut errors);
        let description = collect(
            Description::parse(self.description.as_deref().unwrap_or("")),
            "/description",
            &mut errors,
        );
        let tags = validate_tags(self.tags.as_deref().unwrap_or(&[]), &mut errors);
        match (title, description, tags) {
            (Some(title), Some(description), Some(tags)) if errors.is_empty() => {
                Ok(Action::Create(CreateTask {
                    title,
                    description,
                    priority: self.priority.unwrap_or_default(),
                    due_at: self.due_at.map(Into::into),
                    tags,
                }))
            }
            _ => Err(Problem::validation(errors)),
        }
    }
}

impl UpdateTaskRequest {
    fn into_action(self) -> Result<Action, Problem> {
        let mut errors = Vec::new();
        let mut update = UpdateTask::default();
        match self.title {
            None => {}
            Some(None) => errors.push(FieldError::new("/title", "must not be null")),
            Some(Some(t)) => update.title = collect(TaskTitle::parse(&t), "/title", &mut errors),
        }
        if let Some(d) = self.description {
            update.description = collect(
                Description::parse(d.as_deref().unwrap_or("")),
                "/description",
                &mut errors,
            );
        }
        match self.priority {
            None => {}
            Some(None) => errors.push(FieldError::new("/priority", "must not be null")),
            Some(Some(p)) => update.priority = Some(p),
        }
        update.due_at = self.due_at.map(|d| d.map(Into::into));
        if let Some(t) = self.tags {
            update.tags = validate_tags(t.as_deref().unwrap_or(&[]), &mut errors);
        }
        if errors.is_empty() {
            Ok(Action::Update(update))
        } else {
            Err(Problem::validation(errors))
        }
    }
}

/// A JSON body plus the SHA-256 of its bytes (what idempotency compares).
/// Rejections are those of `service::json::Json` (400/413/415/422).
pub struct HashedJson<T> {
    pub value: T,
    pub sha256: [u8; 32],
}

impl<T, S> FromRequest<S> for HashedJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes =
            service::json::read_body(Request::from_parts(parts.clone(), body), state).await?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let Json(value) =
            Json::<T>::from_request(Request::from_parts(parts, Body::from(bytes)), state).await?;
        Ok(HashedJson { value, sha256 })
    }
}

// --------------------------------------------------------------- headers

/// `If-Match: "<version>"` (a strong entity tag); `*` means "any version".
fn if_match(headers: &HeaderMap) -> Result<Option<StreamVersion>, Problem> {
    let Some(raw) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        Problem::bad_request(
            "If-Match must be one entity tag as sent in ETag, e.g. `If-Match: \"3\"`",
        )
    };
    let s = raw.to_str().map_err(|_| bad())?.trim();
    if s == "*" {
        return Ok(None);
    }
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|v| v.parse::<StreamVersion>().ok())
        .map(Some)
        .ok_or_else(bad)
}

fn idempotency_scope(
    headers: &HeaderMap,
    user: &AuthUser,
    method: &Method,
    path: &str,
    request_hash: [u8; 32],
) -> Result<Option<Scope>, Problem> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = IdempotencyKey::parse(raw).map_err(Problem::bad_request)?;
    Ok(Some(Scope {
        user_id: user.id,
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        key,
        request_hash,
    }))
}

/// The request id (set by the edge middleware) when it is a UUID, so the
/// events of one request can be traced; otherwise a fresh one.
fn correlation_id(headers: &HeaderMap) -> Uuid {
    headers
        .get(service::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::try_parse(v).ok())
        .unwrap_or_else(Uuid::now_v7)
}

// ------------------------------------------------------------- responses

fn task_body(w: &Written) -> Option<TaskResponse> {
    let s = &w.snapshot;
    let task = s.task()?;
    Some(TaskResponse {
        id: s.id,
        owner_id: task.owner_id,
        title: task.title.clone(),
        description: task.description.clone(),
        status: task.status,
        priority: task.priority,
        due_at: task.due_at.map(rfc3339),
        tags: task.tags.clone(),
        version: s.version,
        created_at: s.created_at.map(rfc3339).unwrap_or_default(),
        updated_at: s.updated_at.map(rfc3339).unwrap_or_default(),
    })
}

fn version_headers(w: &Written) -> Vec<(String, String)> {
    let token = events::ConsistencyToken {
        stream_id: w.snapshot.id,
        version: w.snapshot.version,
    };
    vec![
        (
            header::ETAG.to_string(),
            format!("\"{}\"", w.snapshot.version),
        ),
        (CONSISTENCY_TOKEN.to_string(), token.to_string()),
    ]
}

/// Renders the task with `status`; `location` adds the `Location` header.
fn render_task(status: StatusCode, location: bool) -> impl Fn(&Written) -> StoredResponse {
    move |w| {
        let mut headers = vec![(
            header::CONTENT_TYPE.to_string(),
            "application/json".to_owned(),
        )];
        if location {
            headers.push((
                header::LOCATION.to_string(),
                format!("/tasks/{}", w.snapshot.id),
            ));
        }
        headers.extend(version_headers(w));
        let body = task_body(w)
            .and_then(|t| serde_json::to_vec(&t).ok())
            .unwrap_or_default();
        StoredResponse {
            status: status.as_u16(),
            headers,
            body,
        }
    }
}

fn render_deleted(w: &Written) -> StoredResponse {
    StoredResponse {
        status: StatusCode::NO_CONTENT.as_u16(),
        headers: version_headers(w),
        body: Vec::new(),
    }
}

impl From<WriteError> for Problem {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Domain(DomainError::NotFound) => Problem::not_found("no such task"),
            WriteError::Domain(DomainError::AlreadyExists) => {
                Problem::conflict("task-exists", "the task already exists")
            }
            WriteError::Domain(DomainError::IllegalTransition { from, to, allowed }) => {
                let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                Problem::conflict(
                    "illegal-transition",
                    format!(
                        "a task cannot go from {} to {}; allowed from {}: {}",
                        from.as_str(),
                        to.as_str(),
                        from.as_str(),
                        names.join(", ")
                    ),
                )
                .with_extension("from", from)
                .with_extension("to", to)
                .with_extension("allowed", allowed)
            }
            WriteError::PreconditionFailed { current } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                format!("the task is at version {current}, not the one given in If-Match"),
            )
            .with_extension("current_version", current),
            WriteError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request body",
            ),
            WriteError::Contended => Problem::conflict(
                "concurrent-modification",
                "the task kept changing while this write was decided; retry",
            ),
            WriteError::LiveTaskLimit { cap } => Problem::conflict(
                "live-task-limit",
                format!(
                    "you already have {cap} live tasks, the most one user may have; \
                     delete some before creating more"
                ),
            )
            .with_extension("limit", cap),
            WriteError::Unavailable(e) => {
                tracing::warn!(error = %e, "command refused: the event store is unavailable");
                Problem::dependency_down("the event store")
            }
            WriteError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "command failed");
                Problem::internal()
            }
        }
    }
}

fn respond(outcome: Result<Outcome, WriteError>) -> Response {
    match outcome {
        Ok(Outcome::Done(r)) => r.into_response(),
        Ok(Outcome::Replayed(r)) => {
            let mut res = r.into_response();
            res.headers_mut().insert(
                REPLAYED_HEADER,
                axum::http::HeaderValue::from_static("true"),
            );
            res
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

// -------------------------------------------------------------- handlers

/// Create a task owned by the caller.
#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    request_body = CreateTaskRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The task was created", body = TaskResponse, headers(
            ("Location" = String, description = "`/tasks/{id}`"),
            ("ETag" = String, description = "The task's version, quoted: `\"1\"`"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller already has the most live tasks one user may have (`live-task-limit`, with `limit`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (with pointers), unknown field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_task(
    State(state): State<AppState>,
    user: AuthUser,
    method: Method,
    headers: HeaderMap,
    body: HashedJson<CreateTaskRequest>,
) -> Response {
    let scope = match idempotency_scope(&headers, &user, &method, "/tasks", body.sha256) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let action = match body.value.into_action() {
        Ok(a) => a,
        Err(p) => return p.into_response(),
    };
    let write = tasks::Write {
        task_id: Uuid::now_v7(),
        command: Command {
            actor: user.id,
            // The one clock read of a command: it becomes the events' occurred_at.
            at: Utc::now(),
            action,
        },
        if_match: None,
        correlation_id: correlation_id(&headers),
        idempotency: scope,
    };
    respond(
        tasks::execute(
            &state.pool,
            write,
            state.max_live_tasks,
            render_task(StatusCode::CREATED, true),
        )
        .await,
    )
}

/// Change a task's title, description, priority, due date or tags.
///
/// One request may record several events (`task.updated`,
/// `task.priority_changed`, `task.due_date_changed`); a request that changes
/// nothing records none and returns the current version.
#[utoipa::path(
    patch,
    path = "/tasks/{id}",
    tag = "tasks",
    request_body = UpdateTaskRequest,
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The task after the update", body = TaskResponse, headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: deleted, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (with pointers), unknown field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_task(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    method: Method,
    headers: HeaderMap,
    body: HashedJson<UpdateTaskRequest>,
) -> Response {
    let path = format!("/tasks/{id}");
    let prepared = (|| {
        let if_match = if_match(&headers)?;
        let scope = idempotency_scope(&headers, &user, &method, &path, body.sha256)?;
        let action = body.value.into_action()?;
        Ok::<_, Problem>((if_match, scope, action))
    })();
    let (if_match, scope, action) = match prepared {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    let write = tasks::Write {
        task_id: id,
        command: Command {
            actor: user.id,
            // The one clock read of a command: it becomes the events' occurred_at.
            at: Utc::now(),
            action,
        },
        if_match,
        correlation_id: correlation_id(&headers),
        idempotency: scope,
    };
    respond(
        tasks::execute(
            &state.pool,
            write,
            state.max_live_tasks,
            render_task(StatusCode::OK, false),
        )
        .await,
    )
}

/// Move a task through its status machine.
///
/// todo → in_progress → done; todo or in_progress → cancelled; done or
/// cancelled → todo. Anything else is 409 with the allowed transitions.
#[utoipa::path(
    post,
    path = "/tasks/{id}/status",
    tag = "tasks",
    request_body = ChangeStatusRequest,
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The task after the change", body = TaskResponse, headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: deleted, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Transition not allowed: `from`, `to` and `allowed` say which are", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown status or field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn change_status(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    method: Method,
    headers: HeaderMap,
    body: HashedJson<ChangeStatusRequest>,
) -> Response {
    let path = format!("/tasks/{id}/status");
    let prepared = (|| {
        let if_match = if_match(&headers)?;
        let scope = idempotency_scope(&headers, &user, &method, &path, body.sha256)?;
        Ok::<_, Problem>((if_match, scope))
    })();
    let (if_match, scope) = match prepared {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    let write = tasks::Write {
        task_id: id,
        command: Command {
            actor: user.id,
            // The one clock read of a command: it becomes the events' occurred_at.
            at: Utc::now(),
            action: Action::ChangeStatus(body.value.status),
        },
        if_match,
        correlation_id: correlation_id(&headers),
        idempotency: scope,
    };
    respond(
        tasks::execute(
            &state.pool,
            write,
            state.max_live_tasks,
            render_task(StatusCode::OK, false),
        )
        .await,
    )
}

/// Delete a task. Afterwards every write to it is 404.
#[utoipa::path(
    delete,
    path = "/tasks/{id}",
    tag = "tasks",
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 204, description = "The task was deleted", headers(
            ("ETag" = String, description = "The version of the deletion, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: already deleted, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_task(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let path = format!("/tasks/{id}");
    // DELETE carries no body; every retry "has the same body".
    let empty: [u8; 32] = Sha256::digest(b"").into();
    let prepared = (|| {
        let if_match = if_match(&headers)?;
        let scope = idempotency_scope(&headers, &user, &method, &path, empty)?;
        Ok::<_, Problem>((if_match, scope))
    })();
    let (if_match, scope) = match prepared {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    let write = tasks::Write {
        task_id: id,
        command: Command {
            actor: user.id,
            // The one clock read of a command: it becomes the events' occurred_at.
            at: Utc::now(),
            action: Action::Delete,
        },
        if_match,
        correlation_id: correlation_id(&headers),
        idempotency: scope,
    };
    respond(tasks::execute(&state.pool, write, state.max_live_tasks, render_deleted).await)
}

// ---------------------------------------------------------------- OpenAPI

/// The task id (a UUID); anything else is 404.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
struct TaskId(Uuid);

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IfMatchHeader {
    /// `"<version>"` as sent in `ETag`: the write applies only at that
    /// version (else 412). Without it the write applies to the latest version.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters. A retry with the same key and body
    /// within 24 h replays the first response (with `Idempotent-Replayed:
    /// true`) and records nothing; the same key with another body is 422.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    idempotency_key: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    components(schemas(Problem, FieldError, TaskStatus, Priority)),
    tags((name = "tasks", description = "Task commands"))
)]
struct ApiDoc;

/// The task routes, health and metrics, and their OpenAPI document (with
/// the Bearer scheme).
pub fn routes(
    readiness: service::health::Readiness,
) -> (OpenApiRouter<AppState>, utoipa::openapi::OpenApi) {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_task))
        .routes(routes!(update_task, delete_task))
        .routes(routes!(change_status))
        .merge(service::health::documented_routes(readiness));
    let mut doc = router.to_openapi();
    service::openapi::add_retry_after_response_to_writes(
        &mut doc,
        "429",
        "Over the caller's write budget (`RateLimit-*` headers say the limit)",
    );
    service::openapi::add_retry_after_response_to_writes(
        &mut doc,
        "503",
        "The event store is unreachable; nothing was changed",
    );
    let doc = service::openapi::finish_document(
        doc,
        "taskstream command-api",
        "REST writes: each accepted command is committed as task events in the \
         Postgres event store before it is answered.",
    );
    (router, doc)
}
