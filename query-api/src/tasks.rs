//! `GET /tasks`, `GET /tasks/{id}`, `GET /tasks/{id}/history`.
//!
//! Reads come from the projector's `task_views`; history comes from the
//! Postgres event store (the source of truth), so it is complete and exact
//! even while the projection lags, and no second view has to be kept.
//! Ownership of a history is decided by its `task.created` event.
//!
//! Visibility: a personal task (no project), its history and its place in
//! a list belong to its owner; a project's task to the project's members,
//! as `project_members` says at the time of the request (read from
//! Postgres on every request: no cache, no lag; see `store::members`).
//! Anyone else gets 404, byte-identical to a missing id (existence is not
//! revealed). Admins read another user's personal tasks only through
//! `GET /tasks?owner_id=` (issue 5); the single-task and history endpoints
//! follow the rule above for everyone.
//!
//! Which project a task is in: for `GET /tasks` and `GET /tasks/{id}` the
//! view says (a task just moved out of a project is still under its old
//! project until the projector applies `task.moved`: the known lag); for
//! the history, the events themselves (no lag).

use std::collections::HashSet;

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
use crate::store::tasks::Visible;

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
        attachments: v
            .attachments
            .iter()
            .map(attachment_resource)
            .collect::<Result<_, _>>()?,
    })
}

/// An attachment of a view as the API shows it.
pub(crate) fn attachment_resource(
    a: &read_model::views::AttachmentView,
) -> Result<resources::AttachmentResource, Problem> {
    let id = |s: &str| {
        Uuid::try_parse(s).map_err(|e| internal("a task view holds a malformed attachment", e))
    };
    Ok(resources::AttachmentResource {
        id: id(&a.id)?,
        filename: a.filename.clone(),
        content_type: a.content_type.clone(),
        size: a.size.max(0) as u64,
        sha256: a.sha256.clone(),
        uploaded_by: id(&a.uploaded_by)?,
        uploaded_at: a.uploaded_at.to_chrono(),
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
    pub items: Vec<HistoryItem>,
}

/// One event of a history: the envelope's fields exactly as stored (see
/// `EventEnvelope`), and `actor_display_name` after `actor`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// UUID v7: time-ordered, unique across the system.
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_type: events::StreamType,
    /// 1-based, per stream.
    pub version: u64,
    /// E.g. `task.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` for this `type`.
    pub schema: u32,
    /// RFC 3339, UTC, to the microsecond (as the event store holds it).
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: String,
    /// The user whose request produced the event.
    pub actor: Uuid,
    /// The actor's display name from the users view (as it is now, not as
    /// it was then); `null` when the view does not know the actor.
    pub actor_display_name: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl HistoryItem {
    fn new(e: EventEnvelope, actor_display_name: Option<String>) -> Self {
        HistoryItem {
            event_id: e.event_id,
            stream_id: e.stream_id,
            stream_type: e.stream_type,
            version: e.version,
            event_type: e.event_type,
            schema: e.schema,
            occurred_at: e
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: e.actor,
            actor_display_name,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            data: e.data,
        }
    }
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "{what}");
    Problem::internal()
}

pub(crate) fn no_such_task() -> Problem {
    Problem::not_found("no task with this id")
}

/// Lists the tasks the caller can see: their personal tasks and the tasks
/// of every project they belong to; filtered, sorted and paginated with an
/// opaque keyset cursor.
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
        (status = 403, description = "`owner_id` naming another user, given by a non-admin", body = Problem, content_type = "application/problem+json"),
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
    let fingerprint = query.fingerprint(user.id);
    let after = query
        .cursor
        .as_deref()
        .map(|c| state.cursor_key.decode(c, query.sort, &fingerprint))
        .transpose()?;
    wait_for_token(&state, &user, &headers).await?;
    // After the wait: the memberships as they are when the views are read.
    let mut projects: Vec<Uuid> = store::members::of_user(&state.pool, user.id)
        .await?
        .into_iter()
        .map(|m| m.project_id)
        .collect();
    if !query.project_ids.is_empty() {
        projects.retain(|p| query.project_ids.binary_search(p).is_ok());
    }
    let visible = Visible {
        personal_of: query.project_ids.is_empty().then_some(owner),
        projects,
        created_by: query.owner_id,
        caller: user.id,
    };
    let (views, more) =
        store::tasks::page(&state.db, &visible, &query, after.as_ref(), Utc::now()).await?;
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
        (status = 404, description = "No such task, deleted, someone else's personal task, or a task of a project the caller is not a member of", body = Problem, content_type = "application/problem+json"),
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
        .filter(|v| !v.deleted)
        .ok_or_else(no_such_task)?;
    let project = match view.project_id.as_deref() {
        None => None,
        Some(p) => Some(
            Uuid::try_parse(p)
                .map_err(|e| internal("a task view holds a malformed project id", e))?,
        ),
    };
    if !may_read(&state, &user, project, &view.owner_id).await? {
        return Err(no_such_task());
    }
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
        (status = 404, description = "No such task, someone else's personal task, or a task of a project the caller is not a member of", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn task_history(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let events = store::events::stream(&state.pool, id).await?;
    let Some((owner, project)) = placement(&events) else {
        return Err(no_such_task());
    };
    if !may_read(&state, &user, project, &owner.to_string()).await? {
        return Err(no_such_task());
    }
    let actors: Vec<Uuid> = events
        .iter()
        .map(|e| e.actor)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let names = store::users::by_ids(&state.db, &actors).await?;
    let items = events
        .into_iter()
        .map(|event| {
            let name = names.get(&event.actor).map(|u| u.display_name.clone());
            HistoryItem::new(event, name)
        })
        .collect();
    Ok(axum::Json(TaskHistory { items }).into_response())
}

/// Whether `user` may read a task created by `owner` (hyphenated) that is
/// in `project` (`None`: personal): its owner for a personal task, a
/// member (any role) for a project's, decided by `project_members` now.
pub(crate) async fn may_read(
    state: &AppState,
    user: &AuthUser,
    project: Option<Uuid>,
    owner: &str,
) -> Result<bool, Problem> {
    Ok(match project {
        None => owner == user.id.to_string(),
        Some(p) => store::members::role_in(&state.pool, p, user.id)
            .await?
            .is_some(),
    })
}

/// Whose personal tasks a list shows: the caller's, or for an admin
/// `owner_id`'s (who then also filters the project tasks by creator).
fn list_owner(query: &ListQuery, user: &AuthUser) -> Result<Uuid, Problem> {
    match query.owner_id {
        Some(o) if o != user.id && !user.is_admin() => Err(Problem::forbidden(
            "only admins may list another user's tasks (`owner_id`)",
        )),
        Some(o) => Ok(o),
        None => Ok(user.id),
    }
}

/// The creator of a task stream and the project it is in now (`None`:
/// personal), from its events: `task.created` and the last `task.moved`.
/// `None` when the stream is not a task's.
fn placement(events: &[EventEnvelope]) -> Option<(Uuid, Option<Uuid>)> {
    let (owner, mut project) = match events.first()?.decode() {
        Ok(Event::Task(TaskEvent::Created(c))) => (c.owner_id, c.project_id),
        _ => return None,
    };
    for e in events.iter().filter(|e| e.event_type == "task.moved") {
        match e.decode() {
            Ok(Event::Task(TaskEvent::Moved(m))) => project = m.to,
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, stream = %e.stream_id, version = e.version, "a task.moved event does not decode");
                return None;
            }
        }
    }
    Some((owner, project))
}

/// True when `If-None-Match` names `etag` (or is `*`); weak tags compare weakly.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
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
    fn a_history_item_is_the_envelope_with_the_actor_s_name() {
        let meta = events::EventMeta {
            actor: Uuid::from_u128(7),
            correlation_id: Uuid::from_u128(8),
            causation_id: None,
            occurred_at: chrono::DateTime::parse_from_rfc3339("2026-01-31T09:00:00.1234567Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let event = Event::Task(TaskEvent::Deleted(events::TaskDeleted {}));
        let env = EventEnvelope::new(Uuid::from_u128(1), 3, &event, meta);
        let mut want = serde_json::to_value(&env).unwrap();
        want["actor_display_name"] = "Ann".into();
        let got = serde_json::to_value(HistoryItem::new(env, Some("Ann".into()))).unwrap();
        assert_eq!(got, want);
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
}
