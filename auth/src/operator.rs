//! Operator actions, run from the command line, never over HTTP: creating
//! the first admin (`auth create-admin`) and giving an existing account the
//! admin role (`auth promote`). They write through the same functions as
//! the API, so each change commits with its user event, which the running
//! auth service's outbox relay then publishes.
//!
//! An operator has no account; events these actions cause carry
//! [`OPERATOR`] (the nil UUID) as their actor, except `user.registered`,
//! whose actor is, as for every registration, the new account itself.

use events::Role;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{normalise_email, DisplayName, Email, NewPassword};
use crate::error::ApiError;
use crate::users::{self, Cause, NewUser, User};

/// The actor of events an operator causes from the command line.
pub const OPERATOR: Uuid = Uuid::nil();

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("an account with email {0} already exists; to make it admin, run `auth promote --email {0}`")]
    Exists(String),
    #[error("no account has the email {0}")]
    NoSuchAccount(String),
    #[error("the account {0} is deactivated; an admin must reactivate it first")]
    Inactive(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<ApiError> for OperatorError {
    fn from(e: ApiError) -> Self {
        OperatorError::Other(anyhow::anyhow!("{e}"))
    }
}

impl From<sqlx::Error> for OperatorError {
    fn from(e: sqlx::Error) -> Self {
        OperatorError::Other(e.into())
    }
}

fn invalid(field: &'static str) -> impl FnOnce(String) -> OperatorError {
    move |detail| OperatorError::Invalid { field, detail }
}

/// Creates an admin account: validated exactly as a registration, stored
/// with the `admin` role, `user.registered` (role `admin`) in the same
/// transaction.
pub async fn create_admin(
    pool: &PgPool,
    email: &str,
    password: String,
    display_name: Option<&str>,
) -> Result<User, OperatorError> {
    let email = Email::parse(email).map_err(invalid("email"))?;
    let password = NewPassword::parse(password).map_err(invalid("password"))?;
    let display_name = match display_name {
        Some(raw) => DisplayName::parse(raw).map_err(invalid("display name"))?,
        None => DisplayName::from_email(&email),
    };
    let password_hash = crate::password::hash(password.expose().to_owned())
        .await
        .map_err(|e| OperatorError::Other(e.into()))?;
    let id = Uuid::now_v7();
    let shown = email.as_str().to_owned();
    let new = NewUser {
        id,
        email,
        display_name,
        password_hash,
        role: Role::Admin,
    };
    let cause = Cause {
        actor: id,
        correlation_id: Uuid::now_v7(),
    };
    match users::register(pool, new, cause).await {
        Ok(user) => Ok(user),
        Err(ApiError::EmailTaken) => Err(OperatorError::Exists(shown)),
        Err(e) => Err(e.into()),
    }
}

/// Gives the active account with this email the admin role (appends
/// `user.role_changed`; nothing if it is admin already).
pub async fn promote(pool: &PgPool, email: &str) -> Result<User, OperatorError> {
    let normalised = normalise_email(email);
    let user = users::find_by_email(pool, &normalised)
        .await?
        .ok_or_else(|| OperatorError::NoSuchAccount(normalised.clone()))?;
    if !user.active {
        return Err(OperatorError::Inactive(normalised));
    }
    let cause = Cause {
        actor: OPERATOR,
        correlation_id: Uuid::now_v7(),
    };
    Ok(users::change_role(pool, user.id, Role::Admin, cause).await?)
}
