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
/// the stream is `reader`'s: their user stream, or a task they created
/// (any task for an admin). One indexed look-up on (stream_id, version).
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
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND version = $2)
            AND EXISTS (
                SELECT 1 FROM events
                WHERE stream_id = $1 AND version = 1
                  AND ((stream_type = 'user' AND stream_id = $3)
                    OR (stream_type = 'task' AND event_type = 'task.created'
                        AND ($4 OR data->>'owner_id' = $3::text))))",
    )
    .bind(token.stream_id)
    .bind(version)
    .bind(reader)
    .bind(admin)
    .fetch_one(pool)
    .await
    .map_err(StoreError::events("checking a consistency token failed"))
}
