//! The webhooks API: `POST|GET /webhooks`, `GET|PATCH|DELETE
//! /webhooks/{id}`, `GET /webhooks/{id}/deliveries`, `POST
//! /webhooks/{id}/deliveries/{delivery_id}/retry`. An endpoint is a
//! user's own or a project's (managed by its owners and admins); one the
//! caller may not manage is the same 404 as one that never existed.

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use service::http::Path;
use service::json::Json;
use service::{FieldError, Problem};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use access::AuthUser;

use super::sender::{literal_ip, secret_key, SECRET_PREFIX};
use super::{guard, DeliveryRow, NewWebhook, WebhookChange, WebhookRow};
use crate::api::db_problem;
use crate::page::{self, PageQuery};
use crate::startup::AppState;

/// Endpoints one user may own (their own and the projects' they created).
pub const MAX_WEBHOOKS_PER_USER: i64 = 25;
/// The longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Event kinds per endpoint, at most.
pub const MAX_EVENTS: usize = 16;
/// A given secret's key length, in bytes.
pub const SECRET_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// A generated secret's key length, in bytes.
const GENERATED_KEY_BYTES: usize = 32;

/// A kind of notification an endpoint subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    Reminder,
    Overdue,
    Assigned,
    ProjectMemberAdded,
    ProjectRoleChanged,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reminder => "reminder",
            Self::Overdue => "overdue",
            Self::Assigned => "assigned",
            Self::ProjectMemberAdded => "project_member_added",
            Self::ProjectRoleChanged => "project_role_changed",
        }
    }
}

/// A webhook endpoint (its secret is shown only when it is created).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResource {
    pub id: Uuid,
    #[schema(example = "https://hooks.example.com/taskstream")]
    pub url: String,
    #[schema(value_type = Vec<WebhookEvent>)]
    pub events: Vec<String>,
    /// The project whose notifications it receives; `null`: the owner's own.
    pub project_id: Option<Uuid>,
    /// `false` once deliveries failed for longer than the retry window (or
    /// it was disabled by hand); nothing is sent to it until it is enabled.
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookResource {
    fn from(r: WebhookRow) -> Self {
        WebhookResource {
            id: r.id,
            url: r.url,
            events: r.events,
            project_id: r.project_id,
            enabled: r.enabled,
            disabled_at: r.disabled_at,
            disabled_reason: r.disabled_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A new endpoint, with its signing secret: keep it, it is never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookResource,
    /// `whsec_` + base64 of the HMAC-SHA256 key.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// The caller's endpoints and those of projects they own or administer.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookResource>,
}

/// `POST /webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Absolute `http` or `https` URL, at most 2048 characters, no
    /// user-info, no fragment; not a private or loopback address unless
    /// the operator allows them.
    pub url: String,
    /// 1 to 16 distinct kinds.
    pub events: Vec<WebhookEvent>,
    /// A project the caller owns or administers: the endpoint receives its
    /// members' notifications about it.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// `whsec_` + standard base64 of a 24 to 64 byte key; generated when
    /// absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// `PATCH /webhooks/{id}`: what changes; what is absent stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<WebhookEvent>>,
    /// `true` enables it again (after it was disabled); `false` disables it.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new secret (rotation); the old one stops signing at once.
    #[serde(default)]
    pub secret: Option<String>,
}

/// One delivery to an endpoint. `id` is the `webhook-id` header every
/// attempt carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryResource {
    pub id: Uuid,
    pub notification_id: Uuid,
    /// The notification's kind.
    #[serde(rename = "type")]
    #[schema(value_type = WebhookEvent)]
    pub kind: String,
    /// `pending`, `sending`, `delivered`, `failed` (given up on) or
    /// `skipped` (the endpoint was disabled).
    #[schema(example = "delivered")]
    pub state: String,
    pub attempts: i32,
    /// The last HTTP status the endpoint answered.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due, while there will be one.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<DeliveryRow> for WebhookDeliveryResource {
    fn from(r: DeliveryRow) -> Self {
        let next_attempt_at = crate::delivery::next_attempt(&r.state, r.next_attempt_at);
        WebhookDeliveryResource {
            id: r.id,
            notification_id: r.notification_id,
            kind: r.kind,
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            next_attempt_at,
            first_attempt_at: r.first_attempt_at,
            last_attempt_at: r.last_attempt_at,
            delivered_at: r.delivered_at,
            created_at: r.created_at,
        }
    }
}

/// One page of an endpoint's deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryPage {
    pub items: Vec<WebhookDeliveryResource>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The query parameters of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveryParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

// ------------------------------------------------------------- validation

/// The URL as it will be called (normalised), or why it cannot be.
fn check_url(url: &str, allow_private: bool) -> Result<String, FieldError> {
    let bad = |detail: &str| FieldError::new("/url", detail);
    if url.len() > MAX_URL_LEN {
        return Err(bad("at most 2048 characters"));
    }
    let parsed = Url::parse(url).map_err(|e| bad(&format!("not an absolute URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad("a host is required"));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("user-info (`user:password@`) is not allowed"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("a fragment (`#...`) is not allowed"));
    }
    if !allow_private {
        if let Some(ip) = literal_ip(&parsed) {
            if !guard::is_public(ip) {
                return Err(bad(&format!(
                    "{ip} is not a public address; webhooks may reach only public ones"
                )));
            }
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return Err(bad("localhost is not a public host"));
        }
    }
    let normalised = parsed.to_string();
    if normalised.len() > MAX_URL_LEN {
        return Err(bad("at most 2048 characters"));
    }
    Ok(normalised)
}

fn check_events(events: &[WebhookEvent]) -> Result<Vec<String>, FieldError> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(FieldError::new(
            "/events",
            format!("1 to {MAX_EVENTS} kinds"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if out.iter().any(|k| k == e.as_str()) {
            return Err(FieldError::new(
                format!("/events/{i}"),
                "given more than once",
            ));
        }
        out.push(e.as_str().to_owned());
    }
    Ok(out)
}

fn check_secret(secret: &str) -> Result<(), FieldError> {
    let bad = |detail: String| FieldError::new("/secret", detail);
    let key = secret_key(secret).map_err(bad)?;
    if !SECRET_KEY_BYTES.contains(&key.len()) {
        return Err(bad(format!(
            "the key must be {} to {} bytes (it is {})",
            SECRET_KEY_BYTES.start(),
            SECRET_KEY_BYTES.end(),
            key.len()
        )));
    }
    Ok(())
}

fn generated_secret() -> String {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// Every field error at once, or the checked values.
fn collect<T>(errors: &mut Vec<FieldError>, r: Result<T, FieldError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

// ---------------------------------------------------------------- handlers

/// Creates a webhook endpoint: the caller's own, or (with `project_id`) a
/// project's.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = WebhookCreated,
         headers(("Location" = String, description = "The endpoint's URL"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a member of the project but not its owner or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named by a JSON pointer), or the caller owns 25 endpoints already", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    user: AuthUser,
    State(state): State<AppState>,
    Json(req): Json<CreateWebhookRequest>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let url = collect(
        &mut errors,
        check_url(&req.url, state.webhooks_allow_private),
    );
    let events = collect(&mut errors, check_events(&req.events));
    if let Some(secret) = &req.secret {
        collect(&mut errors, check_secret(secret));
    }
    let (Some(url), Some(events), true) = (url, events, errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    if let Some(project) = req.project_id {
        let role = super::project_role(&state.pool, project, user.id)
            .await
            .map_err(db_problem("read a project role"))?;
        match role.as_deref() {
            None => return Err(Problem::not_found("no project with this id")),
            Some("owner" | "admin") => {}
            Some(_) => {
                return Err(Problem::forbidden(
                    "only the project's owner and admins manage its webhooks",
                ))
            }
        }
    }
    let secret = req.secret.unwrap_or_else(generated_secret);
    let new = NewWebhook {
        id: Uuid::now_v7(),
        owner_id: user.id,
        project_id: req.project_id,
        url,
        events,
        secret: secret.clone(),
    };
    let Some(row) = super::create(&state.pool, &new, MAX_WEBHOOKS_PER_USER)
        .await
        .map_err(db_problem("create a webhook"))?
    else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook-limit",
            "Too many webhooks",
            format!(
                "a user may own at most {MAX_WEBHOOKS_PER_USER} webhook endpoints; delete one first"
            ),
        ));
    };
    let location = format!("/webhooks/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(WebhookCreated {
            webhook: row.into(),
            secret,
        }),
    )
        .into_response())
}

/// The caller's endpoints and those of the projects they own or administer.
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "Every endpoint the caller manages, oldest first", body = WebhookList),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Response, Problem> {
    let rows = super::list(&state.pool, user.id)
        .await
        .map_err(db_problem("list webhooks"))?;
    Ok(axum::Json(WebhookList {
        items: rows.into_iter().map(Into::into).collect(),
    })
    .into_response())
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookResource),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint with this id that the caller manages", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn get_webhook(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let row = super::get(&state.pool, user.id, id)
        .await
        .map_err(db_problem("read a webhook"))?
        .ok_or_else(not_found)?;
    Ok(axum::Json(WebhookResource::from(row)).into_response())
}

/// Changes an endpoint: its URL, kinds or secret; `enabled: true` enables
/// it again after it was disabled.
#[utoipa::path(
    patch,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    request_body = UpdateWebhookRequest,
    responses(
        (status = 200, description = "The endpoint as it now is", body = WebhookResource),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint with this id that the caller manages", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (named by a JSON pointer)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn update_webhook(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateWebhookRequest>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let url = req
        .url
        .as_deref()
        .and_then(|u| collect(&mut errors, check_url(u, state.webhooks_allow_private)));
    let events = req
        .events
        .as_deref()
        .and_then(|e| collect(&mut errors, check_events(e)));
    if let Some(secret) = &req.secret {
        collect(&mut errors, check_secret(secret));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let change = WebhookChange {
        url,
        events,
        secret: req.secret,
        enabled: req.enabled,
    };
    let row = super::update(&state.pool, user.id, id, &change)
        .await
        .map_err(db_problem("update a webhook"))?
        .ok_or_else(not_found)?;
    Ok(axum::Json(WebhookResource::from(row)).into_response())
}

/// Deletes an endpoint and its deliveries' records.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted; nothing more is sent to it"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint with this id that the caller manages", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let found = super::delete(&state.pool, user.id, id)
        .await
        .map_err(db_problem("delete a webhook"))?;
    if !found {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An endpoint's deliveries, newest first, keyset-paginated.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveryParams),
    responses(
        (status = 200, description = "A page of the endpoint's deliveries", body = WebhookDeliveryPage),
        (status = 400, description = "Unknown parameter, bad value or bad cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint with this id that the caller manages", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    uri: Uri,
) -> Result<Response, Problem> {
    let query = PageQuery::parse(&uri, false)?;
    super::get(&state.pool, user.id, id)
        .await
        .map_err(db_problem("read a webhook"))?
        .ok_or_else(not_found)?;
    let mut rows = super::deliveries(&state.pool, id, query.after, query.limit as i64 + 1)
        .await
        .map_err(db_problem("read a webhook's deliveries"))?;
    let more = rows.len() > query.limit;
    rows.truncate(query.limit);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|last| page::cursor(last.created_at, last.id, false));
    Ok(axum::Json(WebhookDeliveryPage {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    })
    .into_response())
}

/// Deliver a failed or skipped delivery again.
///
/// It becomes `pending`, due now, with the same `webhook-id` and body
/// (receivers that saw it already can tell), and a new retry window. Only
/// a delivery that was given up on (`failed`) or not sent because its
/// endpoint was disabled (`skipped`) is sent again, and only to an enabled
/// endpoint.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/deliveries/{delivery_id}/retry",
    tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "Webhook id"),
        ("delivery_id" = Uuid, Path, description = "Delivery id (its `webhook-id`)"),
    ),
    responses(
        (status = 202, description = "Queued: the delivery, pending again", body = WebhookDeliveryResource),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery to an endpoint the caller manages", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint is disabled (`webhook-disabled`: enable it first), or the delivery is not `failed` or `skipped` (`delivery-not-failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
    ),
    security(("bearer" = []))
)]
pub async fn retry_delivery(
    user: AuthUser,
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(Uuid, Uuid)>,
) -> Result<Response, Problem> {
    let redelivery = super::redeliver(&state.pool, user.id, id, delivery_id)
        .await
        .map_err(db_problem("deliver a webhook again"))?;
    match redelivery {
        super::Redelivery::Queued(row) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(WebhookDeliveryResource::from(row)),
        )
            .into_response()),
        super::Redelivery::NotFound => Err(Problem::not_found("no such delivery of this webhook")),
        super::Redelivery::EndpointDisabled => Err(Problem::conflict(
            "webhook-disabled",
            "the endpoint is disabled: enable it (PATCH {\"enabled\": true}) first",
        )),
        super::Redelivery::NotFailed(state) => Err(Problem::conflict(
            "delivery-not-failed",
            format!("the delivery is `{state}`: only a `failed` or `skipped` one is sent again"),
        )),
    }
}

fn not_found() -> Problem {
    Problem::not_found("no webhook with this id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::WEBHOOK_KINDS;

    #[test]
    fn the_event_enum_is_the_deliverable_kinds() {
        let all = [
            WebhookEvent::Reminder,
            WebhookEvent::Overdue,
            WebhookEvent::Assigned,
            WebhookEvent::ProjectMemberAdded,
            WebhookEvent::ProjectRoleChanged,
        ];
        let names: Vec<&str> = all.iter().map(|e| e.as_str()).collect();
        assert_eq!(names, WEBHOOK_KINDS);
        for e in all {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }

    fn url_error(url: &str, allow_private: bool) -> String {
        match check_url(url, allow_private) {
            Ok(u) => panic!("{url} accepted as {u}"),
            Err(e) => e.detail,
        }
    }

    #[test]
    fn urls_are_absolute_http_with_a_host_and_no_credentials_or_fragment() {
        assert_eq!(
            check_url("https://Hooks.Example.com/in?x=1", false).unwrap(),
            "https://hooks.example.com/in?x=1"
        );
        assert_eq!(
            check_url("http://example.com", false).unwrap(),
            "http://example.com/"
        );
        for (url, why) in [
            ("/relative", "absolute"),
            ("ftp://example.com/", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("https://user:pw@example.com/", "user-info"),
            ("https://user@example.com/", "user-info"),
            ("https://example.com/#frag", "fragment"),
        ] {
            let e = url_error(url, false);
            assert!(e.contains(why), "{url}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(url_error(&long, true).contains("2048"));
    }

    #[test]
    fn private_hosts_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1:8080/",
            "http://2130706433/",
            "http://[::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:3000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            let e = url_error(url, false);
            assert!(e.contains("public"), "{url}: {e}");
            assert!(check_url(url, true).is_ok(), "{url} when allowed");
        }
        assert!(check_url("https://8.8.8.8/", false).is_ok());
        assert!(check_url("https://notlocalhost.example/", false).is_ok());
    }

    #[test]
    fn events_are_one_to_sixteen_distinct_kinds() {
        assert!(check_events(&[]).is_err());
        assert_eq!(
            check_events(&[WebhookEvent::Assigned, WebhookEvent::Overdue]).unwrap(),
            vec!["assigned", "overdue"]
        );
        let e = check_events(&[WebhookEvent::Assigned, WebhookEvent::Assigned]).unwrap_err();
        assert_eq!(e.pointer, "/events/1");
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes() {
        let of = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert!(check_secret(&of(24)).is_ok());
        assert!(check_secret(&of(64)).is_ok());
        assert!(check_secret(&of(23)).is_err());
        assert!(check_secret(&of(65)).is_err());
        assert!(check_secret(&STANDARD.encode([7u8; 32])).is_err());
        assert!(check_secret("whsec_not base64!").is_err());
        let g = generated_secret();
        assert!(check_secret(&g).is_ok(), "{g}");
        assert_ne!(g, generated_secret());
    }
}
