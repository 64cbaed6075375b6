//! The one error type of auth's HTTP boundary, and the constraint mapping
//! that turns database violations into domain errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use service::problem::TYPE_BASE;
use service::{FieldError, Problem};

use crate::rate_limit::RetryAfter;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("email already registered")]
    EmailTaken,
    /// Wrong password, unknown email and deactivated account alike: the
    /// caller must not learn which.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Unknown, expired, rotated, revoked, or belonging to a deactivated user.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A valid access token whose account is gone or deactivated.
    #[error("account not active")]
    AccountInactive,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("user not found")]
    UserNotFound,
    #[error("an admin cannot deactivate their own account")]
    SelfDeactivation,
    /// The change would leave no active admin.
    #[error("the last active admin cannot be demoted or deactivated")]
    LastAdmin,
    /// A query parameter of a list request is malformed.
    #[error("invalid query")]
    InvalidQuery(Vec<FieldError>),
    #[error("rate limited")]
    RateLimited(RetryAfter),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }
}

macro_rules! internal_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                ApiError::Internal(e.into())
            }
        }
    )*};
}

internal_from!(
    sqlx::Error,
    events::store::AppendError,
    crate::password::PasswordError,
    jsonwebtoken::errors::Error
);

fn unauthorized(slug: &str, detail: &str) -> Problem {
    let mut p = Problem::unauthorized(detail);
    p.problem_type = format!("{TYPE_BASE}{slug}");
    p
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            ApiError::Validation(errors) => Problem::validation(errors),
            ApiError::EmailTaken => {
                Problem::conflict("email-taken", "an account with this email already exists")
            }
            ApiError::InvalidCredentials => {
                unauthorized("invalid-credentials", "email or password is incorrect")
            }
            ApiError::InvalidRefreshToken => unauthorized(
                "invalid-refresh-token",
                "the refresh token is invalid, expired or revoked; log in again",
            ),
            ApiError::AccountInactive => unauthorized(
                "account-inactive",
                "the account of this token does not exist or is deactivated",
            ),
            ApiError::Forbidden(why) => Problem::forbidden(why),
            ApiError::UserNotFound => Problem::not_found("no such user"),
            ApiError::SelfDeactivation => Problem::conflict(
                "self-deactivation",
                "an admin cannot deactivate their own account",
            ),
            ApiError::LastAdmin => Problem::conflict(
                "last-admin",
                "this would leave no active admin; make another account admin first",
            ),
            ApiError::InvalidQuery(errors) => Problem::invalid_query(errors),
            ApiError::RateLimited(retry) => {
                let secs = retry.seconds();
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    format!("too many attempts; retry in {secs} s"),
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            }
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "auth request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// Maps a violation of one of the named constraints to a
/// domain error; every other database error stays internal.
pub trait OnConstraint<T> {
    fn on_constraints(self, names: &[&str], to: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraints(self, names: &[&str], to: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        self.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.constraint().is_some_and(|c| names.contains(&c)) => {
                to()
            }
            _ => ApiError::internal(e),
        })
    }
}
