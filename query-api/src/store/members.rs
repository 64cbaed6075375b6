//! Reads of `project_members`, the access authority of the read side.
//!
//! The views lag the event store; this table does not: command-api
//! changes it in the transaction that appends the project event (add,
//! remove, role change, delete). So query-api reads it on every request
//! that touches a project, with no cache, and a caller who has received
//! a removal's answer is refused by every later read (ARCHITECTURE.md,
//! "Access follows membership").

use events::ProjectRole;
use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;

/// The most memberships one caller is read with: command-api refuses a
/// user's project beyond [`access::MAX_PROJECTS_PER_USER`] (its
/// configuration may lower that bound, never raise it), so this bounds a
/// list request's work without cutting anyone off.
pub const MAX_MEMBERSHIPS: usize = access::MAX_PROJECTS_PER_USER as usize;

/// One project the caller belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub project_id: Uuid,
    pub role: ProjectRole,
}

/// Every project `user` belongs to (at most [`MAX_MEMBERSHIPS`], in project
/// id order), with their role.
pub async fn of_user(pool: &PgPool, user: Uuid) -> Result<Vec<Membership>, StoreError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT project_id, role FROM project_members
         WHERE user_id = $1 ORDER BY project_id LIMIT $2",
    )
    .bind(user)
    .bind(MAX_MEMBERSHIPS as i64 + 1)
    .fetch_all(pool)
    .await
    .map_err(StoreError::events(
        "reading the caller's memberships failed",
    ))?;
    if rows.len() > MAX_MEMBERSHIPS {
        tracing::warn!(
            user = %user,
            limit = MAX_MEMBERSHIPS,
            "a user belongs to more projects than the read side serves; the rest are not listed"
        );
    }
    Ok(rows
        .into_iter()
        .take(MAX_MEMBERSHIPS)
        .filter_map(|(project_id, role)| {
            Some(Membership {
                project_id,
                role: parse_role(&role)?,
            })
        })
        .collect())
}

/// `user`'s role in `project`; `None` when they are not a member (or the
/// project does not exist, or was deleted: its rows go with it).
pub async fn role_in(
    pool: &PgPool,
    project: Uuid,
    user: Uuid,
) -> Result<Option<ProjectRole>, StoreError> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project)
    .bind(user)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::events("reading a membership failed"))?;
    Ok(role.as_deref().and_then(parse_role))
}

/// A role the table's CHECK constraint allows; anything else is logged and
/// treated as no membership (never as more access).
fn parse_role(raw: &str) -> Option<ProjectRole> {
    match raw.parse::<ProjectRole>() {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::error!(role = raw, "project_members holds an unknown role");
            None
        }
    }
}
