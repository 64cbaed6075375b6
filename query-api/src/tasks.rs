//! `GET /tasks`, `GET /tasks/{id}`, `GET /tasks/{id}/history`.
//!
//! Reads come from the projector's `task_views`; history comes from the
//! Postgres event store (the source of truth), so it is complete and exact
//! even while the projection lags, and no second view has to be kept.
//! Ownership of a history is decided by its `task.created` event.
//!
//! Visibility: a task, its history and its place in a list belong to its
//! owner; anyone else gets 404 (existence is not revealed). Admins read
//! another user's tasks only through `GET /tasks?owner_id=` (issue 5); the
//! single-task and history endpoints are owner-only for everyone.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use events::{Event, EventEnvelope, TaskEvent};
use read_model::views::TaskView;
use resources::TaskResource;
use serde::Serialize;
use service::http::Path;
use service::Problem;
use utoipa::ToSchema;
use uuid::Uuid;

use access::AuthUser;

use crate::consistency::wait_for_token;
use crate::params::{query_pairs, ListQuery, ListTasksParams};
use crate::startup::AppState;
use crate::store;

/// The task resource of a view (the same shape command-api answers writes
/// with); a malformed id in the store is an internal error.
fn task_resource(v: &TaskView) -> Result<TaskResource, Problem> {
    let id = |s: &str| {
        Uuid::try_parse(s).map_err(|e| {
            tracing::error!(error = %e, id = s, "a task view holds a malformed id");
            Problem::internal()
        })
    };
    Ok(TaskResource {
        id: id(&v.id)?,
        owner_id: id(&v.owner_id)?,
        project_id: v.project_id.as_deref().map(id).transpose()?,
        assignee_ids: v
            .assignee_ids
            .iter()
            .map(|a| id(a))
            .collect::<Result<_, _>>()?,
        title: v.title.clone(),
        description: v.description.clone(),
        status: v.status,
        priority: v.priority,
        due_at: v.due_at.map(|t| t.to_chrono()),
        tags: v.tags.clone(),
        created_at: v.created_at.to_chrono(),
        updated_at: v.updated_at.to_chrono(),
        completed_at: v.completed_at.map(|t| t.to_chrono()),
        version: v.version.max(0) as u64,
    })
}

/// One page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    pub items: Vec<TaskResource>,
    /// Pass as `cursor` (with the same filters and sort) for the next page;
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A task's events, oldest first, exactly as stored: an event written
/// under an older schema keeps its `schema` and `data` (readers upcast).
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskHistory {
    pub items: Vec<EventEnvelope>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "{what}");
    Problem::internal()
}

fn no_such_task() -> Problem {
    Problem::not_found("no task with this id")
}

/// Lists the caller's tasks (or, for an admin, `owner_id`'s), filtered,
/// sorted and paginated with an opaque keyset cursor.
#[utoipa::path(
    get,
    path = "/tasks",
    tag = "tasks",
    params(
        ListTasksParams,
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token: wait (bounded) until the list reflects that write"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        (status = 400, description = "Unknown parameter, bad value (an instant outside the years 1-9999 included), bad cursor, or a consistency token that names no write of the caller's",
         body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable, or too many reads wait on consistency tokens", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 403, description = "`owner_id` given by a non-admin", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The projection did not catch up with the consistency token in time",
         body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_tasks(
    user: AuthUser,
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    let query = ListQuery::parse(&query_pairs(&uri)?)?;
    let owner = list_owner(&query, &user)?;
    let fingerprint = query.fingerprint(owner);
    let after = query
        .cursor
        .as_deref()
        .map(|c| state.cursor_key.decode(c, query.sort, &fingerprint))
        .transpose()?;
    wait_for_token(&state, &user, &headers).await?;
    let (views, more) =
        store::tasks::page(&state.db, owner, &query, after.as_ref(), Utc::now()).await?;
    let next_cursor = views.last().filter(|_| more).map(|last| {
        let value = store::tasks::sort_value(last, query.sort.field());
        state
            .cursor_key
            .encode(query.sort, value, &last.id, &fingerprint)
    });
    let items = views
        .iter()
        .map(task_resource)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(TaskPage { items, next_cursor }).into_response())
}

/// One task, with its version as `ETag`.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = Uuid, Path, description = "Task id"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 if it is still current"),
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token: wait (bounded) until the task reflects that write"),
    ),
    responses(
        (status = 200, description = "The task", body = TaskResource,
         headers(("ETag" = String, description = "The task's version, quoted"))),
        (status = 304, description = "Not modified since the given ETag"),
        (status = 400, description = "A malformed consistency token, or one that names no write of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable, or too many reads wait on consistency tokens", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 404, description = "No such task, deleted, or someone else's", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The projection did not catch up with the consistency token in time",
         body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_task(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    wait_for_token(&state, &user, &headers).await?;
    let view = store::tasks::find(&state.db, id)
        .await?
        .filter(|v| !v.deleted && v.owner_id == user.id.to_string())
        .ok_or_else(no_such_task)?;
    let etag = format!("\"{}\"", view.version);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| internal("bad ETag", e))?;
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let resource = task_resource(&view)?;
    Ok(([(header::ETAG, etag_value)], axum::Json(resource)).into_response())
}

/// A task's events in version order, read from the event store.
#[utoipa::path(
    get,
    path = "/tasks/{id}/history",
    tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task's events, oldest first", body = TaskHistory),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable, or too many reads wait on consistency tokens", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 404, description = "No such task, or someone else's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn task_history(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let events = store::events::stream(&state.pool, id).await?;
    if created_by(&events) != Some(user.id) {
        return Err(no_such_task());
    }
    Ok(axum::Json(TaskHistory { items: events }).into_response())
}

/// Whose tasks a list shows: the caller's, or for an admin `owner_id`'s.
fn list_owner(query: &ListQuery, user: &AuthUser) -> Result<Uuid, Problem> {
    match query.owner_id {
        Some(o) if o != user.id && !user.is_admin() => Err(Problem::forbidden(
            "only admins may list another user's tasks (`owner_id`)",
        )),
        Some(o) => Ok(o),
        None => Ok(user.id),
    }
}

/// The owner of a task stream, from its creation event.
fn created_by(events: &[EventEnvelope]) -> Option<Uuid> {
    match events.first()?.decode() {
        Ok(Event::Task(TaskEvent::Created(c))) => Some(c.owner_id),
        _ => None,
    }
}

/// True when `If-None-Match` names `etag` (or is `*`); weak tags compare weakly.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_tags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"3\", W/\"4\""),
        );
        assert!(if_none_match(&h, "\"4\""));
        assert!(if_none_match(&h, "\"3\""));
        assert!(!if_none_match(&h, "\"5\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"5\""));
    }
}
