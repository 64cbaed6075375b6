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

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use events::{ConsistencyToken, Event, EventEnvelope, TaskEvent, TaskStatus};
use futures::TryStreamExt;
use read_model::views::{TaskView, TASK_VIEWS, USER_VIEWS};
use resources::TaskResource;
use serde::Serialize;
use service::http::Path;
use service::{FieldError, Problem};
use utoipa::ToSchema;
use uuid::Uuid;

use access::AuthUser;

use crate::cursor::Position;
use crate::params::{ListQuery, ListTasksParams};
use crate::startup::AppState;
use crate::storage_error;

/// Header carrying a write's consistency token.
pub const CONSISTENCY_TOKEN: &str = "x-consistency-token";
/// How often a consistency wait looks at the view again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

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
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|e| Problem::bad_request(format!("malformed query string: {e}")))?;
    let query = ListQuery::parse(&pairs)?;
    let owner = match query.owner_id {
        Some(o) if o != user.id && !user.is_admin() => {
            return Err(Problem::forbidden(
                "only admins may list another user's tasks (`owner_id`)",
            ))
        }
        Some(o) => o,
        None => user.id,
    };
    let fingerprint = query.fingerprint(owner);
    let after = match &query.cursor {
        Some(c) => Some(state.cursor_key.decode(c, query.sort, &fingerprint)?),
        None => None,
    };
    wait_for_token(&state, &user, &headers).await?;
    let base = filter(&owner.to_string(), &query, Utc::now());
    let (views, more) = fetch_page(&state, base, &query, after.as_ref())
        .await
        .map_err(|e| storage_error::mongo("listing tasks failed", &e))?;
    let next_cursor = match views.last() {
        Some(last) if more => Some(state.cursor_key.encode(
            query.sort,
            sort_value(last, query.sort.field()),
            &last.id,
            &fingerprint,
        )),
        _ => None,
    };
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
    let view = state
        .db
        .collection::<TaskView>(TASK_VIEWS)
        .find_one(doc! { "_id": id.to_string() })
        .await
        .map_err(|e| storage_error::mongo("reading a task failed", &e))?
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
    let events = events::store::load_stream(&state.pool, id)
        .await
        .map_err(|e| storage_error::postgres("reading a task's history failed", &e))?;
    let owner = events.first().and_then(|first| match first.decode() {
        Ok(Event::Task(TaskEvent::Created(c))) => Some(c.owner_id),
        _ => None,
    });
    match owner {
        Some(owner) if owner == user.id => {
            Ok(axum::Json(TaskHistory { items: events }).into_response())
        }
        _ => Err(no_such_task()),
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

/// Waits until the view of the token's stream has reached the token's
/// version, polling; bounded by the configured timeout, then 504.
///
/// A token is honoured only when it names a committed write the caller may
/// read (their own task or user stream; any task stream for an admin).
/// Anything else, someone else's stream or a made-up one, gets the same
/// immediate 400 without a wait, so a token reveals nothing of other
/// streams and costs no polling. At most [`MAX_TOKEN_WAITS`] reads wait at
/// once per process; beyond that a read with a token is a 503.
async fn wait_for_token(
    state: &AppState,
    user: &AuthUser,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    let Some(raw) = headers.get(CONSISTENCY_TOKEN) else {
        return Ok(());
    };
    let token: ConsistencyToken = raw
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Problem::bad_request("malformed X-Consistency-Token: pass the token a write returned")
                .with_errors(vec![FieldError::new(
                    "X-Consistency-Token",
                    "expected `<stream id>.<version>` as returned by a write",
                )])
        })?;
    let readable = token_is_readable(state, user, &token)
        .await
        .map_err(|e| storage_error::postgres("checking a consistency token failed", &e))?;
    if !readable {
        return Err(Problem::bad_request(
            "X-Consistency-Token names no write this caller can read",
        )
        .with_errors(vec![FieldError::new(
            "X-Consistency-Token",
            "pass a token returned by one of your own writes",
        )]));
    }
    let Ok(_waiting) = state.token_waits.clone().try_acquire_owned() else {
        return Err(Problem::unavailable(
            "too many reads are waiting for their consistency tokens; retry shortly",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
    };
    let started = tokio::time::Instant::now();
    let deadline = started + state.consistency_timeout;
    loop {
        let version = projected_version(state, token.stream_id)
            .await
            .map_err(|e| storage_error::mongo("reading a view version failed", &e))?;
        if version >= token.version {
            metrics::histogram!("query_api_consistency_wait_seconds")
                .record(started.elapsed().as_secs_f64());
            return Ok(());
        }
        if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
            metrics::counter!("query_api_consistency_timeouts_total").increment(1);
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "projection-behind",
                "Projection behind",
                format!(
                    "the read view has not caught up with the write in the consistency token \
                     within {} ms (it is at version {version}, the write is version {}); retry shortly",
                    state.consistency_timeout.as_millis(),
                    token.version
                ),
            )
            .with_extension("projected_version", version)
            .with_extension("token_version", token.version)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads waiting for a consistency token at once, per process.
pub const MAX_TOKEN_WAITS: usize = 256;

/// True when the event store holds the token's version of its stream and
/// the stream is the caller's: their user stream, or a task they created
/// (any task for an admin). One indexed look-up on (stream_id, version).
async fn token_is_readable(
    state: &AppState,
    user: &AuthUser,
    token: &ConsistencyToken,
) -> Result<bool, sqlx::Error> {
    let Ok(version) = i64::try_from(token.version) else {
        return Ok(false);
    };
    if version < 1 {
        return Ok(false);
    }
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND version = $2)
            AND EXISTS (
                SELECT 1 FROM events
                WHERE stream_id = $1 AND version = 1
                  AND ((stream_type = 'user' AND stream_id = $3)
                    OR (stream_type = 'task' AND event_type = 'task.created'
                        AND ($4 OR data->>'owner_id' = $3::text))))",
    )
    .bind(token.stream_id)
    .bind(version)
    .bind(user.id)
    .bind(user.is_admin())
    .fetch_one(&state.pool)
    .await
}

/// The version the views hold for a stream (task or user), 0 if none.
async fn projected_version(
    state: &AppState,
    stream_id: Uuid,
) -> Result<u64, mongodb::error::Error> {
    let id = stream_id.to_string();
    for collection in [TASK_VIEWS, USER_VIEWS] {
        let found = state
            .db
            .collection::<Document>(collection)
            .find_one(doc! { "_id": &id })
            .projection(doc! { "version": 1 })
            .await?;
        if let Some(d) = found {
            let v = match d.get("version") {
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Int32(v)) => i64::from(*v),
                _ => 0,
            };
            return Ok(v.max(0) as u64);
        }
    }
    Ok(0)
}

/// The selection of a list request (everything but the cursor).
fn filter(owner: &str, q: &ListQuery, now: DateTime<Utc>) -> Document {
    let date = |t: &DateTime<Utc>| Bson::DateTime(bson::DateTime::from_chrono(*t));
    let mut all = vec![doc! { "owner_id": owner, "deleted": false }];
    if !q.statuses.is_empty() {
        let s: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        all.push(doc! { "status": { "$in": s } });
    }
    if !q.priorities.is_empty() {
        let p: Vec<&str> = q.priorities.iter().map(|p| p.as_str()).collect();
        all.push(doc! { "priority": { "$in": p } });
    }
    if let Some(t) = &q.due_before {
        all.push(doc! { "due_at": { "$lt": date(t) } });
    }
    if let Some(t) = &q.due_after {
        all.push(doc! { "due_at": { "$gt": date(t) } });
    }
    if let Some(t) = &q.created_before {
        all.push(doc! { "created_at": { "$lt": date(t) } });
    }
    if let Some(t) = &q.created_after {
        all.push(doc! { "created_at": { "$gt": date(t) } });
    }
    if let Some(t) = &q.updated_since {
        all.push(doc! { "updated_at": { "$gte": date(t) } });
    }
    if let Some(tag) = &q.tag {
        all.push(doc! { "tags": tag });
    }
    if let Some(text) = &q.q {
        all.push(doc! { "title": { "$regex": escape_regex(text), "$options": "i" } });
    }
    if q.overdue {
        all.push(doc! {
            "due_at": { "$lt": date(&now) },
            "status": { "$in": [TaskStatus::Todo.as_str(), TaskStatus::InProgress.as_str()] },
        });
    }
    doc! { "$and": all }
}

/// Escapes every ASCII punctuation character, so user text matches literally.
pub fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The sort value of a view for a cursor: milliseconds for dates, the rank for priority.
fn sort_value(v: &TaskView, field: &str) -> Option<i64> {
    match field {
        "due_at" => v.due_at.map(|t| t.timestamp_millis()),
        "created_at" => Some(v.created_at.timestamp_millis()),
        "updated_at" => Some(v.updated_at.timestamp_millis()),
        "priority_rank" => Some(i64::from(v.priority_rank)),
        _ => None,
    }
}

fn sort_bson(field: &str, value: i64) -> Bson {
    match field {
        "priority_rank" => Bson::Int32(value.clamp(i32::MIN.into(), i32::MAX.into()) as i32),
        _ => Bson::DateTime(bson::DateTime::from_millis(value)),
    }
}

/// Reads one page (keyset: strictly after `after` in the sort order) and
/// says whether more follow. Absent due dates sort after every date in
/// both directions, so `due_at` pages walk the dated tasks first and then
/// the undated ones by id.
async fn fetch_page(
    state: &AppState,
    base: Document,
    q: &ListQuery,
    after: Option<&Position>,
) -> Result<(Vec<TaskView>, bool), mongodb::error::Error> {
    let collection = state.db.collection::<TaskView>(TASK_VIEWS);
    let field = q.sort.field();
    let (dir, cmp) = if q.sort.descending() {
        (-1, "$lt")
    } else {
        (1, "$gt")
    };
    let want = q.limit + 1;
    let find = |conditions: Vec<Document>, sort: Document, limit: usize| {
        let collection = collection.clone();
        async move {
            collection
                .find(doc! { "$and": conditions })
                .sort(sort)
                .limit(limit as i64)
                .await?
                .try_collect::<Vec<TaskView>>()
                .await
        }
    };
    let keyset = |p: &Position, value: i64| {
        let v = sort_bson(field, value);
        doc! { "$or": [
            { field: { cmp: v.clone() } },
            { field: v, "_id": { cmp: &p.id } },
        ] }
    };
    let mut items = Vec::new();
    let in_dated_phase = after.is_none_or(|p| p.value.is_some());
    if in_dated_phase {
        let mut conditions = vec![base.clone()];
        if q.sort.nullable() {
            conditions.push(doc! { field: { "$ne": Bson::Null } });
        }
        if let Some((p, v)) = after.and_then(|p| p.value.map(|v| (p, v))) {
            conditions.push(keyset(p, v));
        }
        items = find(conditions, doc! { field: dir, "_id": dir }, want).await?;
    }
    if q.sort.nullable() && items.len() < want {
        let mut conditions = vec![base, doc! { field: Bson::Null }];
        if let Some(p) = after.filter(|p| p.value.is_none()) {
            conditions.push(doc! { "_id": { cmp: &p.id } });
        }
        let rest = find(conditions, doc! { "_id": dir }, want - items.len()).await?;
        items.extend(rest);
    }
    let more = items.len() > q.limit;
    items.truncate(q.limit);
    Ok((items, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::invalid;

    #[test]
    fn regex_escaping_keeps_text_literal() {
        assert_eq!(escape_regex("a.b*(c)"), r"a\.b\*\(c\)");
        assert_eq!(escape_regex("Überweisung 50%"), r"Überweisung 50\%");
    }

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

    #[test]
    fn invalid_lists_each_parameter() {
        let p = invalid(vec![FieldError::new("a", "x"), FieldError::new("b", "y")]);
        assert_eq!(p.status, 400);
        assert_eq!(p.errors.len(), 2);
    }
}
