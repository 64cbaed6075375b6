//! The inbox and settings API: `GET /notifications`,
//! `POST /notifications/{id}/read`, `POST /notifications/read-all`,
//! `GET|PUT /me/notification-settings`. Every route answers for the
//! caller's own notifications only: another user's notification is the same
//! 404 as one that never existed.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service::http::Path;
use service::json::Json;
use service::{FieldError, Problem};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use access::AuthUser;

use crate::config::MAX_LEAD_SECONDS;
use crate::page::{self, PageQuery};
use crate::startup::AppState;
use crate::store;

/// Reminder lead times per user, at most.
pub const MAX_LEADS: usize = 5;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A task assigned to the user (or owned, with no assignees) is due soon.
    Reminder,
    /// Such a task reached its due time and is not done.
    Overdue,
    /// Someone else assigned the user a task.
    Assigned,
    /// Someone else added the user to a project.
    ProjectMemberAdded,
    /// Someone else changed the user's role in a project.
    ProjectRoleChanged,
    /// One of the user's webhook endpoints failed (for longer than the retry window, or in a way no retry can mend) and was disabled.
    WebhookDisabled,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reminder => "reminder",
            Self::Overdue => "overdue",
            Self::Assigned => "assigned",
            Self::ProjectMemberAdded => "project_member_added",
            Self::ProjectRoleChanged => "project_role_changed",
            Self::WebhookDisabled => "webhook_disabled",
        }
    }
}

/// One notification in the caller's inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationResource {
    /// Derived from its cause: the same cause never makes a second one.
    pub id: Uuid,
    #[schema(value_type = NotificationKind)]
    pub kind: String,
    pub title: String,
    pub body: String,
    pub task_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    /// Details by kind: `due_at`, `fire_at`, `lead_seconds` for reminders
    /// and overdue notices; `assigned_by`; `role`, `added_by`; `from`, `to`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Sent well after its time (the notifier was down, or behind).
    pub late: bool,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    /// How it left the notifier: its e-mail, and its deliveries to the
    /// webhook endpoints the caller manages.
    pub deliveries: Vec<DeliveryResource>,
}

/// Where one delivery stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryResource {
    /// `email` or `webhook`.
    #[schema(example = "email")]
    pub channel: String,
    /// The endpoint, for a webhook delivery.
    pub webhook_id: Option<Uuid>,
    /// `pending` (waiting for its first or next attempt), `sending`,
    /// `delivered`, `failed` (given up on), `skipped` (not to be sent:
    /// opted out, no address, endpoint disabled).
    #[schema(example = "delivered")]
    pub state: String,
    pub attempts: i32,
    /// The last answer: an HTTP status or an SMTP reply code.
    pub last_status: Option<i32>,
    /// Why the last attempt failed, or why it was skipped.
    pub last_error: Option<String>,
    /// When the next attempt is due, while there will be one.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<store::DeliveryRow> for DeliveryResource {
    fn from(r: store::DeliveryRow) -> Self {
        let next_attempt_at = crate::delivery::next_attempt(&r.state, r.next_attempt_at);
        DeliveryResource {
            channel: r.channel,
            webhook_id: r.webhook_id,
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            next_attempt_at,
            delivered_at: r.delivered_at,
        }
    }
}

impl NotificationResource {
    fn new(r: store::NotificationRow, deliveries: Vec<DeliveryResource>) -> Self {
        NotificationResource {
            id: r.id,
            kind: r.kind,
            title: r.title,
            body: r.body,
            task_id: r.task_id,
            project_id: r.project_id,
            data: r.data,
            late: r.late,
            created_at: r.created_at,
            read_at: r.read_at,
            deliveries,
        }
    }
}

/// One page of the inbox, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationResource>,
    /// Pass as `cursor` (with the same `unread`) for the next page; `null`
    /// on the last page.
    pub next_cursor: Option<String>,
    /// How many of the caller's notifications are unread (whatever the filter).
    pub unread_count: i64,
}

/// The query parameters of `GET /notifications`, for the OpenAPI document.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InboxParams {
    /// `true`: only unread notifications.
    unread: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page, with the same `unread`.
    cursor: Option<String>,
}

/// Maps a failed database call: unreachable → 503, else a logged 500.
pub fn db_problem(what: &'static str) -> impl FnOnce(sqlx::Error) -> Problem {
    move |e| {
        if events::store::is_unavailable(&e) {
            tracing::warn!(error = %e, "{what}: the database is unavailable");
            Problem::dependency_down("the database")
        } else {
            tracing::error!(error = %e, "{what}");
            Problem::internal()
        }
    }
}

/// The caller's notifications, newest first, keyset-paginated.
#[utoipa::path(
    get,
    path = "/notifications",
    tag = "notifications",
    params(InboxParams),
    responses(
        (status = 200, description = "A page of the caller's notifications and their unread count", body = NotificationPage),
        (status = 400, description = "Unknown parameter, bad value or bad cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn list_notifications(
    user: AuthUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, Problem> {
    let query = PageQuery::parse(&uri, true)?;
    let mut rows = store::inbox_page(
        &state.pool,
        user.id,
        query.unread,
        query.after,
        query.limit as i64 + 1,
    )
    .await
    .map_err(db_problem("read the inbox"))?;
    let more = rows.len() > query.limit;
    rows.truncate(query.limit);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|last| page::cursor(last.created_at, last.id, query.unread));
    let unread_count = store::unread_count(&state.pool, user.id)
        .await
        .map_err(db_problem("count the unread notifications"))?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut deliveries = store::deliveries_of(&state.pool, user.id, &ids)
        .await
        .map_err(db_problem("read the deliveries"))?;
    let items = rows
        .into_iter()
        .map(|r| {
            let mine = deliveries
                .extract_if(.., |d| d.notification_id == r.id)
                .map(DeliveryResource::from)
                .collect();
            NotificationResource::new(r, mine)
        })
        .collect();
    Ok(axum::Json(NotificationPage {
        items,
        next_cursor,
        unread_count,
    })
    .into_response())
}

/// Marks one of the caller's notifications read (again: no change).
#[utoipa::path(
    post,
    path = "/notifications/{id}/read",
    tag = "notifications",
    params(("id" = Uuid, Path, description = "Notification id")),
    responses(
        (status = 204, description = "Read (it stays read; the first time is kept)"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller has no notification with this id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn mark_read(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let found = store::mark_read(&state.pool, user.id, id)
        .await
        .map_err(db_problem("mark a notification read"))?;
    if !found {
        return Err(Problem::not_found("no notification with this id"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Marks every one of the caller's notifications read.
#[utoipa::path(
    post,
    path = "/notifications/read-all",
    tag = "notifications",
    responses(
        (status = 204, description = "Every notification of the caller's is read"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn mark_all_read(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Response, Problem> {
    store::mark_all_read(&state.pool, user.id)
        .await
        .map_err(db_problem("mark every notification read"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller's notification settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationSettings {
    /// Reminders before a task's due time, in seconds, longest first.
    pub reminder_lead_times_seconds: Vec<u32>,
    /// Kinds the caller does not want by e-mail.
    pub email_opt_out: Vec<NotificationKind>,
    /// When they were last changed; `null` while they are the defaults.
    pub updated_at: Option<DateTime<Utc>>,
}

/// `PUT /me/notification-settings`: the whole settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettingsRequest {
    /// At most 5 lead times, each from the minimum lead time (60 s unless
    /// the operator lowered it) to 30 days; repeats count once. Required
    /// (`[]`: no reminders, only overdue notices).
    #[schema(required = true, value_type = Vec<u32>)]
    pub reminder_lead_times_seconds: Option<Vec<u32>>,
    /// Kinds not wanted by e-mail (the inbox always has them). Required.
    #[schema(required = true, value_type = Vec<NotificationKind>)]
    pub email_opt_out: Option<Vec<NotificationKind>>,
}

fn settings_resource(row: store::SettingsRow) -> NotificationSettings {
    NotificationSettings {
        reminder_lead_times_seconds: row
            .leads
            .iter()
            .filter_map(|l| u32::try_from(*l).ok())
            .collect(),
        email_opt_out: row
            .email_opt_out
            .iter()
            .filter_map(|k| serde_json::from_value(serde_json::Value::String(k.clone())).ok())
            .collect(),
        updated_at: row.updated_at,
    }
}

/// The caller's notification settings (the defaults until they set them).
#[utoipa::path(
    get,
    path = "/me/notification-settings",
    tag = "notifications",
    responses(
        (status = 200, description = "The caller's settings", body = NotificationSettings),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn get_settings(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Response, Problem> {
    let row = store::settings(&state.pool, user.id)
        .await
        .map_err(db_problem("read notification settings"))?;
    Ok(axum::Json(settings_resource(row)).into_response())
}

/// Checks a settings request: the lead times (deduplicated, longest first)
/// and the opted-out kinds (deduplicated), or a 422 naming each bad field.
fn check_settings(
    req: &NotificationSettingsRequest,
    min_lead: u32,
) -> Result<(Vec<i32>, Vec<String>), Problem> {
    let mut errors = Vec::new();
    let required = |name: &str| FieldError::new(format!("/{name}"), "is required");
    if req.reminder_lead_times_seconds.is_none() {
        errors.push(required("reminder_lead_times_seconds"));
    }
    if req.email_opt_out.is_none() {
        errors.push(required("email_opt_out"));
    }
    let mut leads: Vec<i32> = Vec::new();
    let requested = req
        .reminder_lead_times_seconds
        .as_deref()
        .unwrap_or_default();
    for (i, lead) in requested.iter().enumerate() {
        match i32::try_from(*lead) {
            Ok(l) if (min_lead..=MAX_LEAD_SECONDS).contains(lead) => {
                if !leads.contains(&l) {
                    leads.push(l);
                }
            }
            _ => errors.push(FieldError::new(
                format!("/reminder_lead_times_seconds/{i}"),
                format!("must be from {min_lead} to {MAX_LEAD_SECONDS} seconds"),
            )),
        }
    }
    if leads.len() > MAX_LEADS {
        errors.push(FieldError::new(
            "/reminder_lead_times_seconds",
            format!("at most {MAX_LEADS} lead times"),
        ));
    }
    leads.sort_unstable_by(|a, b| b.cmp(a));
    let mut kinds: Vec<String> = Vec::new();
    for k in req.email_opt_out.as_deref().unwrap_or_default() {
        if !kinds.iter().any(|x| x == k.as_str()) {
            kinds.push(k.as_str().to_owned());
        }
    }
    if errors.is_empty() {
        Ok((leads, kinds))
    } else {
        Err(Problem::validation(errors))
    }
}

/// Replaces the caller's notification settings; their pending reminders
/// are rescheduled at once.
#[utoipa::path(
    put,
    path = "/me/notification-settings",
    tag = "notifications",
    request_body = NotificationSettingsRequest,
    responses(
        (status = 200, description = "The settings now in force", body = NotificationSettings),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or invalid (named by a JSON pointer)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn put_settings(
    user: AuthUser,
    State(state): State<AppState>,
    Json(req): Json<NotificationSettingsRequest>,
) -> Result<Response, Problem> {
    let (leads, kinds) = check_settings(&req, state.min_lead_seconds)?;
    let row = store::put_settings(&state.pool, user.id, &leads, &kinds, state.catch_up)
        .await
        .map_err(db_problem("write notification settings"))?;
    Ok(axum::Json(settings_resource(row)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(leads: Vec<u32>) -> NotificationSettingsRequest {
        NotificationSettingsRequest {
            reminder_lead_times_seconds: Some(leads),
            email_opt_out: Some(vec![NotificationKind::Overdue, NotificationKind::Overdue]),
        }
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        let (leads, kinds) = check_settings(&req(vec![60, 3600, 60]), 60).unwrap();
        assert_eq!(leads, vec![3600, 60]);
        assert_eq!(kinds, vec!["overdue"]);
        let e = check_settings(&req(vec![59, 3600, MAX_LEAD_SECONDS + 1]), 60).unwrap_err();
        assert_eq!(e.status, 422);
        let pointers: Vec<_> = e.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec![
                "/reminder_lead_times_seconds/0",
                "/reminder_lead_times_seconds/2"
            ]
        );
        let e = check_settings(&req(vec![60, 120, 180, 240, 300, 360]), 60).unwrap_err();
        assert_eq!(e.errors[0].pointer, "/reminder_lead_times_seconds");
        assert!(check_settings(&req(vec![]), 60).is_ok());
        let missing = NotificationSettingsRequest {
            reminder_lead_times_seconds: None,
            email_opt_out: None,
        };
        let e = check_settings(&missing, 60).unwrap_err();
        let pointers: Vec<_> = e.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec!["/reminder_lead_times_seconds", "/email_opt_out"]
        );
    }
}
