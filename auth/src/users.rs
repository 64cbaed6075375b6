//! Users and refresh tokens in Postgres.
//!
//! Every change to a user commits together with its user event: the row is
//! written and the event appended (`events::store::append`, stream id = user
//! id) on one transaction, so the outbox relay publishes exactly what was
//! committed.

use chrono::Utc;
use events::store::{append, ExpectedVersion};
use events::{
    EventMeta, Role, StreamVersion, UserDeactivated, UserEvent, UserReactivated, UserRegistered,
    UserRoleChanged,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::domain::{DisplayName, Email};
use crate::error::{ApiError, OnConstraint};
use crate::refresh::{self, RefreshToken, REFRESH_TOKEN_TTL};

/// A user as stored (the password hash stays in this module's callers' hands
/// only for verification).
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub password_hash: String,
}

const USER_COLUMNS: &str = "id, email, display_name, role, active, password_hash";

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: role.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        active: row.try_get("active")?,
        password_hash: row.try_get("password_hash")?,
    })
}

/// What registration stores.
pub struct NewUser {
    pub id: Uuid,
    pub email: Email,
    pub display_name: DisplayName,
    pub password_hash: String,
    pub role: Role,
}

/// Who caused a change, for the event envelope.
#[derive(Debug, Clone, Copy)]
pub struct Cause {
    pub actor: Uuid,
    pub correlation_id: Uuid,
}

impl Cause {
    fn meta(self) -> EventMeta {
        EventMeta {
            actor: self.actor,
            correlation_id: self.correlation_id,
            causation_id: None,
            occurred_at: Utc::now(),
        }
    }
}

/// Inserts the user and appends `user.registered` (version 1) in one transaction.
pub async fn register(pool: &PgPool, new: NewUser, cause: Cause) -> Result<User, ApiError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!(
        "INSERT INTO users (id, email, display_name, password_hash, role, email_skeleton)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {USER_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.email.as_str())
    .bind(new.display_name.as_str())
    .bind(&new.password_hash)
    .bind(new.role.as_str())
    .bind(new.email.skeleton())
    .fetch_one(&mut *tx)
    .await
    .on_constraints(&["users_email_key", "users_email_skeleton_key"], || {
        ApiError::EmailTaken
    })?;
    let user = user_from_row(&row)?;
    let event = UserEvent::Registered(UserRegistered {
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        role: user.role,
    });
    append_one(&mut tx, user.id, Some(0), event, cause).await?;
    tx.commit().await?;
    Ok(user)
}

async fn append_one(
    conn: &mut PgConnection,
    user_id: Uuid,
    expected: Option<StreamVersion>,
    event: UserEvent,
    cause: Cause,
) -> Result<(), ApiError> {
    let expected = expected.map_or(ExpectedVersion::Any, ExpectedVersion::Exact);
    append(conn, user_id, expected, &[event.into()], cause.meta()).await?;
    Ok(())
}

pub async fn find_by_email<'e>(
    db: impl PgExecutor<'e>,
    email: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(user_from_row)
    .transpose()
}

pub async fn find<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

/// Locks the user's row for the rest of the transaction, so changes to one
/// user (and so its event versions) are serialised.
async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<User, ApiError> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::UserNotFound)?;
    Ok(user_from_row(&row)?)
}

/// Locks the rows of every active admin, in id order, and returns their
/// ids. Every change that can take the admin role away from an active
/// account takes these locks first (before the target's row, so two such
/// changes cannot deadlock): of two admins demoting each other at once, the
/// second sees the first's change and is refused as the last admin.
async fn lock_active_admins(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM users WHERE role = 'admin' AND active ORDER BY id FOR UPDATE",
    )
    .fetch_all(&mut *conn)
    .await
}

/// Refuses (409) when `user` is an active admin and no other is.
fn ensure_not_last_admin(user: &User, active_admins: &[Uuid]) -> Result<(), ApiError> {
    let is_active_admin = user.active && user.role == Role::Admin;
    if is_active_admin && !active_admins.iter().any(|a| *a != user.id) {
        return Err(ApiError::LastAdmin);
    }
    Ok(())
}

/// Sets the role and appends `user.role_changed`; setting the role a user
/// already has changes nothing and emits nothing. Demoting the last active
/// admin is refused ([`ApiError::LastAdmin`]).
pub async fn change_role(
    pool: &PgPool,
    id: Uuid,
    role: Role,
    cause: Cause,
) -> Result<User, ApiError> {
    let mut tx = pool.begin().await?;
    let admins = if role == Role::Admin {
        Vec::new()
    } else {
        lock_active_admins(&mut tx).await?
    };
    let mut user = lock(&mut tx, id).await?;
    if user.role == role {
        return Ok(user);
    }
    if role != Role::Admin {
        ensure_not_last_admin(&user, &admins)?;
    }
    sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    let event = UserEvent::RoleChanged(UserRoleChanged {
        from: user.role,
        to: role,
    });
    append_one(&mut tx, id, None, event, cause).await?;
    tx.commit().await?;
    user.role = role;
    Ok(user)
}

/// Deactivates the user, revokes all their refresh tokens and appends
/// `user.deactivated`; deactivating an inactive user changes nothing.
/// Deactivating the last active admin is refused ([`ApiError::LastAdmin`]).
pub async fn deactivate(pool: &PgPool, id: Uuid, cause: Cause) -> Result<User, ApiError> {
    let mut tx = pool.begin().await?;
    let admins = lock_active_admins(&mut tx).await?;
    let mut user = lock(&mut tx, id).await?;
    if !user.active {
        return Ok(user);
    }
    ensure_not_last_admin(&user, &admins)?;
    sqlx::query(
        "UPDATE users SET active = false, deactivated_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let event = UserEvent::Deactivated(UserDeactivated {});
    append_one(&mut tx, id, None, event, cause).await?;
    tx.commit().await?;
    user.active = false;
    Ok(user)
}

/// Reactivates a deactivated user and appends `user.reactivated`;
/// reactivating an active user changes nothing and emits nothing. Their
/// refresh tokens stay revoked: they log in again.
pub async fn reactivate(pool: &PgPool, id: Uuid, cause: Cause) -> Result<User, ApiError> {
    let mut tx = pool.begin().await?;
    let mut user = lock(&mut tx, id).await?;
    if user.active {
        return Ok(user);
    }
    sqlx::query(
        "UPDATE users SET active = true, deactivated_at = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let event = UserEvent::Reactivated(UserReactivated {});
    append_one(&mut tx, id, None, event, cause).await?;
    tx.commit().await?;
    user.active = true;
    Ok(user)
}

/// What `GET /admin/users` asks for: filters, the keyset position (the
/// last id of the previous page) and the page size.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only emails starting with this (already normalised) prefix.
    pub email_prefix: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    /// Only ids after this one (ids are UUID v7, so this is registration order).
    pub after: Option<Uuid>,
    pub limit: usize,
}

/// One page of users in id order, and whether more follow.
pub async fn list(pool: &PgPool, f: &UserFilter) -> Result<(Vec<User>, bool), sqlx::Error> {
    let fetch = i64::try_from(f.limit).unwrap_or(i64::MAX).saturating_add(1);
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users
          WHERE ($1::text IS NULL OR starts_with(email, $1))
            AND ($2::text IS NULL OR role = $2)
            AND ($3::boolean IS NULL OR active = $3)
            AND ($4::uuid IS NULL OR id > $4)
          ORDER BY id
          LIMIT $5"
    ))
    .bind(f.email_prefix.as_deref())
    .bind(f.role.map(Role::as_str))
    .bind(f.active)
    .bind(f.after)
    .bind(fetch)
    .fetch_all(pool)
    .await?;
    let mut users = rows
        .iter()
        .map(user_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = users.len() > f.limit;
    users.truncate(f.limit);
    Ok((users, more))
}

/// Fills in `email_skeleton` for accounts stored before it existed, in
/// batches. An account whose skeleton another account already holds keeps
/// none (both stay usable; only new look-alikes are refused) and is logged.
pub async fn backfill_skeletons(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut filled = 0;
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, email FROM users WHERE email_skeleton IS NULL AND id > $1
              ORDER BY id LIMIT 500",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some((last, _)) = rows.last() else {
            return Ok(filled);
        };
        after = *last;
        for (id, email) in rows {
            let skeleton: String = match Email::parse(&email) {
                Ok(e) => e.skeleton(),
                Err(_) => unicode_security::skeleton(&email).collect(),
            };
            let done = sqlx::query(
                "UPDATE users SET email_skeleton = $2 WHERE id = $1 AND email_skeleton IS NULL",
            )
            .bind(id)
            .bind(&skeleton)
            .execute(pool)
            .await;
            match done {
                Ok(_) => filled += 1,
                Err(sqlx::Error::Database(db))
                    if db.constraint() == Some("users_email_skeleton_key") =>
                {
                    tracing::warn!(user_id = %id, "an older account looks like another; its email skeleton stays empty");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Starts a new token family for a fresh login.
pub async fn start_session(pool: &PgPool, user_id: Uuid) -> Result<RefreshToken, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    insert_refresh_token(&mut conn, user_id, Uuid::now_v7()).await
}

async fn insert_refresh_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    family_id: Uuid,
) -> Result<RefreshToken, sqlx::Error> {
    let token = RefreshToken::generate();
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(family_id)
    .bind(&token.hash()[..])
    .bind(Utc::now() + REFRESH_TOKEN_TTL)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Exchanges a refresh token for a new one of the same family.
///
/// The presented token's row is locked, so of two concurrent uses of one
/// token exactly one rotates it and the other counts as reuse. Reuse of a
/// rotated token revokes the family (committed, though the answer is 401):
/// whoever holds the newest token of a stolen family is logged out too.
pub async fn rotate(pool: &PgPool, presented: &str) -> Result<(User, RefreshToken), ApiError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT id, user_id, family_id, expires_at < now() AS expired,
                rotated_at IS NOT NULL AS rotated, revoked_at IS NOT NULL AS revoked
           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(&refresh::hash(presented)[..])
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::InvalidRefreshToken)?;
    let token_id: Uuid = row.try_get("id")?;
    let user_id: Uuid = row.try_get("user_id")?;
    let family_id: Uuid = row.try_get("family_id")?;
    if row.try_get::<bool, _>("revoked")? {
        return Err(ApiError::InvalidRefreshToken);
    }
    if row.try_get::<bool, _>("rotated")? {
        revoke_family_on(&mut tx, family_id).await?;
        tx.commit().await?;
        metrics::counter!("auth_refresh_token_reuse_total").increment(1);
        tracing::warn!(%user_id, %family_id, "rotated refresh token reused; family revoked");
        return Err(ApiError::InvalidRefreshToken);
    }
    if row.try_get::<bool, _>("expired")? {
        return Err(ApiError::InvalidRefreshToken);
    }
    let user = find(&mut *tx, user_id)
        .await?
        .filter(|u| u.active)
        .ok_or(ApiError::InvalidRefreshToken)?;
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1")
        .bind(token_id)
        .execute(&mut *tx)
        .await?;
    let next = insert_refresh_token(&mut tx, user_id, family_id).await?;
    tx.commit().await?;
    Ok((user, next))
}

async fn revoke_family_on(conn: &mut PgConnection, family_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Revokes the family of the presented token, if it names one.
pub async fn logout(pool: &PgPool, presented: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now()
          WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
            AND revoked_at IS NULL",
    )
    .bind(&refresh::hash(presented)[..])
    .execute(pool)
    .await?;
    Ok(())
}
