//! Reads of the Postgres event store: a task's history, and whether a
//! consistency token names a write the caller may read.

use events::{ConsistencyToken, EventEnvelope};
use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;

/// Every event of stream `id`, oldest first, exactly as stored.
pub async fn stream(pool: &PgPool, id: Uuid) -> Result<Vec<EventEnvelope>, StoreError> {
    events::store::load_stream(pool, id)
        .await
        .map_err(StoreError::events("reading a task's history failed"))
}

/// True when the event store holds the token's version of its stream and
/// the stream is one `reader` may read: their user stream; a personal task
/// they created (any personal task for an admin); a task whose project
/// (its `task.created`, or its last `task.moved`) they are a member of,
/// whoever created it; a project they are a member of. Membership is read from
/// `project_members`, as every read decides it. Indexed look-ups on
/// (stream_id, version) and the membership key; the task's project is
/// found among its creation and move events only.
pub async fn token_is_readable(
    pool: &PgPool,
    reader: Uuid,
    admin: bool,
    token: &ConsistencyToken,
) -> Result<bool, StoreError> {
    let Ok(version) = i64::try_from(token.version) else {
        return Ok(false);
    };
    if version < 1 {
        return Ok(false);
    }
    // A task's reader is decided by where it is now: a personal task by its
    // creator (or an admin), a project's task by the project's members
    // only, so its creator loses the token with the membership.
    sqlx::query_scalar::<_, bool>(
        "WITH placed AS (SELECT task_project($1) AS project)
         SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND version = $2)
            AND EXISTS (
                SELECT 1 FROM events
                WHERE stream_id = $1 AND version = 1
                  AND ((stream_type = 'user' AND stream_id = $3)
                    OR (stream_type = 'project' AND EXISTS (
                        SELECT 1 FROM project_members
                        WHERE project_id = $1 AND user_id = $3))
                    OR (stream_type = 'task' AND event_type = 'task.created'
                        AND CASE WHEN (SELECT project FROM placed) IS NULL
                                 THEN ($4 OR data->>'owner_id' = $3::text)
                                 ELSE EXISTS (
                                     SELECT 1 FROM project_members
                                     WHERE user_id = $3
                                       AND project_id::text = (SELECT project FROM placed))
                            END)))",
    )
    .bind(token.stream_id)
    .bind(version)
    .bind(reader)
    .bind(admin)
    .fetch_one(pool)
    .await
    .map_err(StoreError::events("checking a consistency token failed"))
}
