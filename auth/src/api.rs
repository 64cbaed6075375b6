//! Auth's REST endpoints and their OpenAPI document.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use events::Role;
use serde::{Deserialize, Serialize};
use service::http::Path;
use service::json::Json;
use service::{FieldError, Problem};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::{normalise_email, DisplayName, Email, NewPassword};
use crate::error::ApiError;
use crate::keys::Jwks;
use crate::rate_limit::Attempt;
use crate::request::{ClientIp, CorrelationId};
use crate::startup::AppState;
use crate::tokens::{self, AccessTokenRequest, ACCESS_TOKEN_TTL};
use crate::users::{self, Cause, NewUser, User};
use crate::verify::{AdminUser, AuthUser};
use crate::{password, refresh::RefreshToken};

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
    /// Unique regardless of letter case; stored lowercase.
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 10 characters to 1024 bytes.
    #[schema(value_type = String, format = Password, min_length = 10)]
    pub password: Password,
    /// Defaults to the email's local part.
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
        (status = 409, description = "Email already registered", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 415, description = "Not JSON", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields or unknown field", body = Problem, content_type = PROBLEM),
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
    limit(&state, Attempt::Register, ip, &normalise_email(&body.email))?;

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
    let (Some(email), Some(password), Some(display_name)) = (email, password, display_name) else {
        return Err(ApiError::Validation(errors));
    };

    // Bootstrap: the configured admin email becomes admin when it registers.
    let is_bootstrap_admin = state
        .config
        .admin_email
        .as_deref()
        .is_some_and(|admin| normalise_email(admin) == email.as_str());
    let role = if is_bootstrap_admin {
        Role::Admin
    } else {
        Role::User
    };
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
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong email or password, or account deactivated (indistinguishable)", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Malformed body or unknown field", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many attempts from this IP or for this email", body = Problem, content_type = PROBLEM,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let email = normalise_email(&body.email);
    limit(&state, Attempt::Login, ip, &email)?;
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
    Ok(Json(token_response(&state, &user, refresh)?))
}

/// Counts an attempt against the per-IP and per-email limits.
fn limit(state: &AppState, attempt: Attempt, ip: IpAddr, email: &str) -> Result<(), ApiError> {
    state.limits.check(attempt, ip, email).map_err(|retry| {
        let attempt = match attempt {
            Attempt::Login => "login",
            Attempt::Register => "register",
        };
        metrics::counter!("auth_rate_limited_total", "attempt" => attempt).increment(1);
        ApiError::RateLimited(retry)
    })
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
        (status = 200, description = "Rotated", body = TokenResponse),
        (status = 401, description = "Unknown, expired, rotated or revoked token, or deactivated account", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Malformed body or unknown field", body = Problem, content_type = PROBLEM),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let (user, next) = users::rotate(&state.pool, &body.refresh_token).await?;
    Ok(Json(token_response(&state, &user, next)?))
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

/// Changes a user's role (admin only). Emits `user.role_changed`.
#[utoipa::path(
    patch, path = "/admin/users/{id}/role", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The user with its new role", body = AccountResponse),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Caller is not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Unknown role or unknown field", body = Problem, content_type = PROBLEM),
    )
)]
async fn change_role(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    CorrelationId(correlation_id): CorrelationId,
    Path(id): Path<Uuid>,
    Json(body): Json<RoleRequest>,
) -> Result<Json<AccountResponse>, ApiError> {
    still_admin(&state, &admin).await?;
    let cause = Cause {
        actor: admin.id,
        correlation_id,
    };
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
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Caller is not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
        (status = 409, description = "An admin cannot deactivate their own account", body = Problem, content_type = PROBLEM),
    )
)]
async fn deactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    CorrelationId(correlation_id): CorrelationId,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    still_admin(&state, &admin).await?;
    if id == admin.id {
        return Err(ApiError::SelfDeactivation);
    }
    let cause = Cause {
        actor: admin.id,
        correlation_id,
    };
    let user = users::deactivate(&state.pool, id, cause).await?;
    tracing::info!(user_id = %user.id, admin_id = %admin.id, "user deactivated");
    Ok(Json(AccountResponse::from(&user)))
}

/// The public keys access tokens are verified with.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "JSON Web Key Set", body = Jwks))
)]
async fn jwks(State(state): State<AppState>) -> Json<Jwks> {
    Json(state.keys.jwks())
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
        .routes(routes!(change_role))
        .routes(routes!(deactivate))
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
