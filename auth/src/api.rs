//! Auth's REST endpoints and their OpenAPI document.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, State};
use axum::http::header::{HeaderName, CACHE_CONTROL, PRAGMA};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::Router;
use events::Role;
use serde::{Deserialize, Serialize};
use service::http::Path;
use service::json::Json;
use service::{FieldError, Problem};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{normalise_email, DisplayName, Email, NewPassword, EMAIL_MAX_LEN};
use crate::error::ApiError;
use crate::keys::Jwks;
use crate::rate_limit::Attempt;
use crate::startup::AppState;
use crate::tokens::{self, AccessTokenRequest, ACCESS_TOKEN_TTL};
use crate::users::{self, Cause, NewUser, User, UserFilter};
use crate::{password, refresh::RefreshToken};
use access::{AdminUser, AuthUser};
use service::http::ClientIp;
use service::http::CorrelationId;

// ------------------------------------------------------------------ bodies

/// A password as sent by a client; its `Debug` does not show it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Stored normalised (NFKC, case folded, domain as IDNA A-labels) and
    /// unique in that form and by look-alike (Unicode TS #39 skeleton); no
    /// whitespace, control or invisible formatting characters; at most 254 bytes.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 10 characters (invisible ones not counted, one at least visible) to 1024 bytes.
    #[schema(value_type = String, format = Password, min_length = 10)]
    pub password: Password,
    /// Defaults to the email's local part. At most 100 characters, at least
    /// one visible; no control or invisible formatting characters.
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Password,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub role: Role,
}

/// A user as others may see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
}

impl From<&User> for UserResponse {
    fn from(u: &User) -> Self {
        UserResponse {
            id: u.id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
        }
    }
}

/// A user as an admin sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
}

impl From<&User> for AccountResponse {
    fn from(u: &User) -> Self {
        AccountResponse {
            id: u.id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            active: u.active,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// EdDSA-signed JWT for the APIs' `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque; single use: `POST /auth/refresh` returns the next one.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: i64,
}

// ---------------------------------------------------------------- handlers

const PROBLEM: &str = "application/problem+json";

/// Registers an account.
#[utoipa::path(
    post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserResponse),
        (status = 409, description = "Email already registered, or one that looks the same (same normal form or confusable skeleton)", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 415, description = "Not JSON", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields (hidden or control characters, an invalid domain, a weak password, a blank name) or unknown field", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many attempts from this IP or for this email", body = Problem, content_type = PROBLEM,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    CorrelationId(correlation_id): CorrelationId,
    Json(body): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    limit_ip(&state, Attempt::Register, ip)?;

    let mut errors = Vec::new();
    let email = Email::parse(&body.email)
        .map_err(|e| errors.push(FieldError::new("/email", e)))
        .ok();
    let password = NewPassword::parse(body.password.0)
        .map_err(|e| errors.push(FieldError::new("/password", e)))
        .ok();
    let display_name = match body.display_name.as_deref() {
        Some(raw) => DisplayName::parse(raw)
            .map_err(|e| errors.push(FieldError::new("/display_name", e)))
            .ok(),
        None => email.as_ref().map(DisplayName::from_email),
    };
    // Only a valid address is counted per email: the per-email limiter
    // holds nothing a client made up beyond what an address can be.
    if let Some(email) = &email {
        limit_email(&state, Attempt::Register, email.as_str())?;
    }
    let (Some(email), Some(password), Some(display_name)) = (email, password, display_name) else {
        return Err(ApiError::Validation(errors));
    };

    // Registration never makes an admin: the first one is created by the
    // operator (`auth create-admin`), later ones by an admin.
    let role = Role::User;
    let password_hash = password::hash(password.expose().to_owned()).await?;
    let id = Uuid::now_v7();
    let user = users::register(
        &state.pool,
        NewUser {
            id,
            email,
            display_name,
            password_hash,
            role,
        },
        Cause {
            actor: id,
            correlation_id,
        },
    )
    .await?;
    metrics::counter!("auth_registrations_total").increment(1);
    tracing::info!(user_id = %user.id, role = user.role.as_str(), "user registered");
    Ok((StatusCode::CREATED, Json(UserResponse::from(&user))))
}

/// Logs in with email and password; starts a new refresh-token family.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse, headers(
            ("Cache-Control" = String, description = "`no-store`: no cache may keep tokens"),
            ("Pragma" = String, description = "`no-cache`, for HTTP/1.0 caches"))),
        (status = 401, description = "Wrong email or password, or account deactivated (indistinguishable)", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Malformed body, unknown field, or an email longer than 254 bytes", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many attempts from this IP or for this email", body = Problem, content_type = PROBLEM,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<NoStore<Json<TokenResponse>>, ApiError> {
    limit_ip(&state, Attempt::Login, ip)?;
    // No account has a longer email, so such a login is refused before it
    // is counted per email or costs a password hash.
    if body.email.len() > RAW_EMAIL_MAX_BYTES {
        return Err(email_too_long());
    }
    let email = normalise_email(&body.email);
    if email.len() > EMAIL_MAX_LEN {
        return Err(email_too_long());
    }
    limit_email(&state, Attempt::Login, &email)?;
    let user = users::find_by_email(&state.pool, &email).await?;
    // Unknown emails verify against a dummy hash: the same argon2 work, so
    // the answer's timing does not tell which emails have accounts.
    let hash = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.to_string(), |u| u.password_hash.clone());
    let matches = password::verify(body.password.0, hash).await?;
    let user = match user {
        Some(u) if matches && u.active => u,
        _ => {
            metrics::counter!("auth_logins_total", "outcome" => "failure").increment(1);
            return Err(ApiError::InvalidCredentials);
        }
    };
    metrics::counter!("auth_logins_total", "outcome" => "success").increment(1);
    let refresh = users::start_session(&state.pool, user.id).await?;
    Ok(no_store(Json(token_response(&state, &user, refresh)?)))
}

/// A login email longer than this (before normalisation) is refused without
/// normalising it; normalised, the limit is [`EMAIL_MAX_LEN`].
const RAW_EMAIL_MAX_BYTES: usize = 4 * EMAIL_MAX_LEN;

fn email_too_long() -> ApiError {
    ApiError::Validation(vec![FieldError::new(
        "/email",
        format!("must be at most {EMAIL_MAX_LEN} bytes"),
    )])
}

/// A response that no cache may keep (RFC 6749 5.1, for token responses).
pub type NoStore<T> = ([(HeaderName, &'static str); 2], T);

fn no_store<T>(body: T) -> NoStore<T> {
    ([(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")], body)
}

fn attempt_label(attempt: Attempt) -> &'static str {
    match attempt {
        Attempt::Login => "login",
        Attempt::Register => "register",
    }
}

fn rate_limited(attempt: Attempt, retry: crate::rate_limit::RetryAfter) -> ApiError {
    metrics::counter!("auth_rate_limited_total", "attempt" => attempt_label(attempt)).increment(1);
    ApiError::RateLimited(retry)
}

/// Counts an attempt against the per-IP limit.
fn limit_ip(state: &AppState, attempt: Attempt, ip: IpAddr) -> Result<(), ApiError> {
    state
        .limits
        .check_ip(attempt, ip)
        .map_err(|r| rate_limited(attempt, r))
}

/// Counts an attempt against the per-email limit (`email` normalised and
/// at most [`EMAIL_MAX_LEN`] bytes).
fn limit_email(state: &AppState, attempt: Attempt, email: &str) -> Result<(), ApiError> {
    state
        .limits
        .check_email(attempt, email)
        .map_err(|r| rate_limited(attempt, r))
}

fn token_response(
    state: &AppState,
    user: &User,
    refresh: RefreshToken,
) -> Result<TokenResponse, ApiError> {
    let (access_token, _) = tokens::issue(
        &state.keys,
        &AccessTokenRequest {
            user_id: user.id,
            email: &user.email,
            role: user.role,
            issuer: &state.config.issuer,
            audience: &state.config.audience,
            ttl: ACCESS_TOKEN_TTL,
        },
    )?;
    Ok(TokenResponse {
        access_token,
        refresh_token: refresh.into_string(),
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_TTL.num_seconds(),
    })
}

/// Exchanges a refresh token for new tokens. The presented token stops
/// working; presenting it again revokes its whole family.
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "Rotated", body = TokenResponse, headers(
            ("Cache-Control" = String, description = "`no-store`: no cache may keep tokens"),
            ("Pragma" = String, description = "`no-cache`, for HTTP/1.0 caches"))),
        (status = 401, description = "Unknown, expired, rotated or revoked token, or deactivated account", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Malformed body or unknown field", body = Problem, content_type = PROBLEM),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<NoStore<Json<TokenResponse>>, ApiError> {
    let (user, next) = users::rotate(&state.pool, &body.refresh_token).await?;
    Ok(no_store(Json(token_response(&state, &user, next)?)))
}

/// Logs out: revokes the presented refresh token's family. Idempotent, and
/// answers the same for tokens it does not know.
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The token's family is revoked"),
        (status = 422, description = "Malformed body or unknown field", body = Problem, content_type = PROBLEM),
    )
)]
async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    users::logout(&state.pool, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account.
#[utoipa::path(
    get, path = "/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired token, or account deactivated", body = Problem, content_type = PROBLEM,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
async fn me(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<UserResponse>, ApiError> {
    let user = users::find(&state.pool, caller.id)
        .await?
        .filter(|u| u.active)
        .ok_or(ApiError::AccountInactive)?;
    Ok(Json(UserResponse::from(&user)))
}

/// The token names an admin; make sure the account still is one (a demoted
/// or deactivated admin's token lives on for up to 15 minutes).
async fn still_admin(state: &AppState, admin: &AuthUser) -> Result<(), ApiError> {
    match users::find(&state.pool, admin.id).await? {
        Some(u) if u.active && u.role == Role::Admin => Ok(()),
        _ => Err(ApiError::Forbidden("this needs an active admin account")),
    }
}

/// An admin changing an account: a token with the admin role and the cause
/// its events carry. Whether the account is still an active admin is
/// checked by the handler ([`ActingAdmin::still_admin`]), after the path
/// and body have been read, so a bad request is answered as such first.
struct ActingAdmin {
    admin: AuthUser,
    cause: Cause,
}

impl ActingAdmin {
    async fn still_admin(&self, state: &AppState) -> Result<(), ApiError> {
        still_admin(state, &self.admin).await
    }
}

impl FromRequestParts<AppState> for ActingAdmin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let AdminUser(admin) = AdminUser::from_request_parts(parts, state).await?;
        let Ok(CorrelationId(correlation_id)) =
            CorrelationId::from_request_parts(parts, state).await;
        let cause = Cause {
            actor: admin.id,
            correlation_id,
        };
        Ok(ActingAdmin { admin, cause })
    }
}

/// Changes a user's role (admin only). Emits `user.role_changed`. The last
/// active admin cannot be demoted (409).
#[utoipa::path(
    patch, path = "/admin/users/{id}/role", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The user with its new role", body = AccountResponse),
        (status = 403, description = "Caller is not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The change would demote the last active admin", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Unknown role or unknown field", body = Problem, content_type = PROBLEM),
    )
)]
async fn change_role(
    State(state): State<AppState>,
    acting: ActingAdmin,
    Path(id): Path<Uuid>,
    Json(body): Json<RoleRequest>,
) -> Result<Json<AccountResponse>, ApiError> {
    acting.still_admin(&state).await?;
    let cause = acting.cause;
    let user = users::change_role(&state.pool, id, body.role, cause).await?;
    Ok(Json(AccountResponse::from(&user)))
}

/// Deactivates a user (admin only): they can no longer log in or refresh,
/// and their refresh tokens are revoked. Emits `user.deactivated`.
#[utoipa::path(
    post, path = "/admin/users/{id}/deactivate", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The deactivated user", body = AccountResponse),
        (status = 403, description = "Caller is not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
        (status = 409, description = "An admin cannot deactivate their own account, nor the last active admin", body = Problem, content_type = PROBLEM),
    )
)]
async fn deactivate(
    State(state): State<AppState>,
    acting: ActingAdmin,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    acting.still_admin(&state).await?;
    let ActingAdmin { admin, cause } = acting;
    if id == admin.id {
        return Err(ApiError::SelfDeactivation);
    }
    let user = users::deactivate(&state.pool, id, cause).await?;
    tracing::info!(user_id = %user.id, admin_id = %admin.id, "user deactivated");
    Ok(Json(AccountResponse::from(&user)))
}

/// Reactivates a deactivated user (admin only): they can log in again (their
/// old refresh tokens stay revoked). Emits `user.reactivated`; an active
/// user is answered as is.
#[utoipa::path(
    post, path = "/admin/users/{id}/reactivate", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The active user", body = AccountResponse),
        (status = 403, description = "Caller is not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
    )
)]
async fn reactivate(
    State(state): State<AppState>,
    acting: ActingAdmin,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    acting.still_admin(&state).await?;
    let ActingAdmin { admin, cause } = acting;
    let user = users::reactivate(&state.pool, id, cause).await?;
    tracing::info!(user_id = %user.id, admin_id = %admin.id, "user reactivated");
    Ok(Json(AccountResponse::from(&user)))
}

/// Largest page of `GET /admin/users`.
pub const MAX_PAGE: usize = 200;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// The query parameters of `GET /admin/users`, for the OpenAPI document
/// (parsing is [`parse_user_query`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListUsersParams {
    /// Only accounts whose (normalised) email starts with this.
    email_prefix: Option<String>,
    /// Only accounts with this role.
    role: Option<Role>,
    /// Only active (`true`) or deactivated (`false`) accounts.
    active: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (opaque).
    cursor: Option<String>,
}

/// One page of accounts, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<AccountResponse>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Parses the decoded query pairs of `GET /admin/users`, reporting every
/// bad parameter by name.
pub fn parse_user_query(pairs: &[(String, String)]) -> Result<UserFilter, ApiError> {
    let mut f = UserFilter {
        limit: DEFAULT_PAGE,
        ..UserFilter::default()
    };
    let mut errors = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let known = ["email_prefix", "role", "active", "limit", "cursor"]
            .into_iter()
            .find(|k| k == name);
        let Some(known) = known else {
            errors.push(FieldError::new(name, "unknown query parameter"));
            continue;
        };
        if seen.contains(&known) {
            errors.push(FieldError::new(known, "given more than once"));
            continue;
        }
        seen.push(known);
        let mut err = |detail: &str| errors.push(FieldError::new(known, detail));
        match known {
            "email_prefix" if value.len() > RAW_EMAIL_MAX_BYTES => err("too long"),
            "email_prefix" => {
                let prefix = normalise_email(value);
                if prefix.is_empty() || prefix.len() > EMAIL_MAX_LEN {
                    err("must be 1 to 254 bytes");
                } else {
                    f.email_prefix = Some(prefix);
                }
            }
            "role" => match value.parse::<Role>() {
                Ok(r) => f.role = Some(r),
                Err(_) => err("expected `user` or `admin`"),
            },
            "active" => match value.as_str() {
                "true" => f.active = Some(true),
                "false" => f.active = Some(false),
                _ => err("expected `true` or `false`"),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => f.limit = n,
                _ => err("expected a whole number from 1 to 200"),
            },
            _ => match decode_cursor(value) {
                Some(id) => f.after = Some(id),
                None => err("not a cursor this endpoint returned"),
            },
        }
    }
    if errors.is_empty() {
        Ok(f)
    } else {
        Err(ApiError::InvalidQuery(errors))
    }
}

/// The cursor is the last id of the page: nothing secret, and any id is a
/// valid position (accounts after it, in id order).
fn encode_cursor(id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(raw: &str) -> Option<Uuid> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// Lists accounts (admin only), oldest first, in keyset pages.
#[utoipa::path(
    get, path = "/admin/users", tag = "admin",
    security(("bearer" = [])),
    params(ListUsersParams),
    responses(
        (status = 200, description = "One page of accounts", body = UserPage),
        (status = 400, description = "A malformed, unknown or repeated query parameter", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Caller is not an admin", body = Problem, content_type = PROBLEM),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    uri: Uri,
) -> Result<Json<UserPage>, ApiError> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).map_err(|e| {
            ApiError::InvalidQuery(vec![FieldError::new(
                "",
                format!("malformed query string: {e}"),
            )])
        })?;
    let filter = parse_user_query(&pairs)?;
    still_admin(&state, &admin).await?;
    let (users, more) = users::list(&state.pool, &filter).await?;
    let next_cursor = if more {
        users.last().map(|u| encode_cursor(u.id))
    } else {
        None
    };
    Ok(Json(UserPage {
        items: users.iter().map(AccountResponse::from).collect(),
        next_cursor,
    }))
}

/// The public keys access tokens are verified with.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "JSON Web Key Set", body = Jwks))
)]
async fn jwks(State(state): State<AppState>) -> ([(HeaderName, &'static str); 1], Json<Jwks>) {
    // Public, and it changes only with a key rotation: shared caches (the
    // gateway) may keep it a few minutes.
    (
        [(CACHE_CONTROL, service::http::PUBLIC_5_MIN)],
        Json(state.keys.jwks()),
    )
}

// ----------------------------------------------------------------- OpenAPI

#[derive(OpenApi)]
#[openapi(
    components(schemas(Problem, FieldError)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "admin", description = "User administration (admin role)"),
        (name = "keys", description = "Token verification keys"),
    )
)]
struct ApiDoc;

/// The documented routes, and the OpenAPI document describing them (with
/// the Bearer security scheme the protected operations name).
pub fn routes(
    readiness: service::health::Readiness,
) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(list_users))
        .routes(routes!(change_role))
        .routes(routes!(deactivate))
        .routes(routes!(reactivate))
        .routes(routes!(jwks))
        .merge(service::health::documented_routes(readiness))
        .split_for_parts();
    let doc = service::openapi::finish_document(
        doc,
        "taskstream auth",
        "Registration, login, rotating refresh tokens, roles, and the public keys \
         the APIs verify access tokens with.",
    );
    (router, doc)
}
