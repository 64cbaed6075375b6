//! `Idempotency-Key`: the first response to a (user, method, path, key) is
//! stored in the same transaction as the command's events, and replayed to
//! every retry with the same body.
//!
//! Concurrency: a request claims its key by inserting the row first. A
//! concurrent request with the same key blocks on the primary key until the
//! first commits (then it finds the stored response and replays it) or rolls
//! back (then it claims the key itself), so two requests never both append.
//! Only successful responses are stored: a refused command changed nothing,
//! and a retry with the same key is decided afresh.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest accepted key, in bytes (the key is visible ASCII).
pub const MAX_KEY_LEN: usize = 255;
/// Keys live at least this long.
pub const RETENTION_HOURS: i32 = 24;
/// How often expired keys are deleted.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Header on a replayed response, so a client can tell it apart.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A key as sent by a client: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &HeaderValue) -> Result<Self, String> {
        let s = raw
            .to_str()
            .map_err(|_| "Idempotency-Key must be visible ASCII".to_owned())?;
        if s.is_empty() || s.len() > MAX_KEY_LEN {
            return Err(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters, got {}",
                s.len()
            ));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err("Idempotency-Key must be visible ASCII".to_owned());
        }
        Ok(IdempotencyKey(s.to_owned()))
    }
}

/// What scopes a key, and the body it came with.
#[derive(Debug, Clone)]
pub struct Scope {
    pub user_id: Uuid,
    pub method: String,
    pub path: String,
    pub key: IdempotencyKey,
    pub request_hash: [u8; 32],
}

/// A response as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(n, v);
            }
        }
        (status, headers, self.body).into_response()
    }
}

/// request_hash, response_status, response_headers, response_body, expired.
type KeyRow = (
    Vec<u8>,
    Option<i16>,
    Option<serde_json::Value>,
    Option<Vec<u8>>,
    bool,
);

pub enum Claim {
    /// The key is ours for this transaction; record the response before commit.
    New,
    /// An earlier request with this key and body succeeded: replay this.
    Replay(StoredResponse),
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the idempotency key was used with a different request body")]
    OtherBody,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Claims the key inside the caller's transaction, or finds the stored response.
pub async fn claim(conn: &mut PgConnection, scope: &Scope) -> Result<Claim, ClaimError> {
    // Blocks while another transaction holds an uncommitted claim on the key.
    let inserted = insert(conn, scope).await?;
    if inserted {
        return Ok(Claim::New);
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, response_status, response_headers, response_body,
                    created_at < now() - make_interval(hours => $5) AS expired
               FROM idempotency_keys
              WHERE user_id = $1 AND method = $2 AND path = $3 AND idempotency_key = $4",
    )
    .bind(scope.user_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key.0)
    .bind(RETENTION_HOURS)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        // The holder rolled back between our insert and select: claim again.
        None => {
            if insert(conn, scope).await? {
                Ok(Claim::New)
            } else {
                Err(ClaimError::Database(sqlx::Error::RowNotFound))
            }
        }
        Some((_, _, _, _, true)) => {
            // Expired but not yet cleaned up: the key is free again.
            sqlx::query(
                "DELETE FROM idempotency_keys
                  WHERE user_id = $1 AND method = $2 AND path = $3 AND idempotency_key = $4",
            )
            .bind(scope.user_id)
            .bind(&scope.method)
            .bind(&scope.path)
            .bind(&scope.key.0)
            .execute(&mut *conn)
            .await?;
            if insert(conn, scope).await? {
                Ok(Claim::New)
            } else {
                Err(ClaimError::Database(sqlx::Error::RowNotFound))
            }
        }
        Some((hash, _, _, _, _)) if hash != scope.request_hash => Err(ClaimError::OtherBody),
        Some((_, Some(status), Some(headers), Some(body), _)) => {
            let headers: Vec<(String, String)> =
                serde_json::from_value(headers).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok(Claim::Replay(StoredResponse {
                status: status as u16,
                headers,
                body,
            }))
        }
        // Committed rows always carry a response; a row without one is corrupt.
        Some(_) => Err(ClaimError::Database(sqlx::Error::RowNotFound)),
    }
}

/// Whether a request with this key has been answered and the answer is
/// kept (a retry will be answered with it), without claiming the key.
pub async fn is_recorded(pool: &sqlx::PgPool, scope: &Scope) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (
           SELECT 1 FROM idempotency_keys
            WHERE user_id = $1 AND method = $2 AND path = $3 AND idempotency_key = $4
              AND response_status IS NOT NULL
              AND created_at >= now() - make_interval(hours => $5))",
    )
    .bind(scope.user_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key.0)
    .bind(RETENTION_HOURS)
    .fetch_one(pool)
    .await
}

async fn insert(conn: &mut PgConnection, scope: &Scope) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, method, path, idempotency_key, request_hash)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING",
    )
    .bind(scope.user_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key.0)
    .bind(&scope.request_hash[..])
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the response on the claimed row (same transaction as the events).
pub async fn record(
    conn: &mut PgConnection,
    scope: &Scope,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    let headers = serde_json::to_value(&response.headers).unwrap_or_default();
    sqlx::query(
        "UPDATE idempotency_keys
            SET response_status = $5, response_headers = $6, response_body = $7
          WHERE user_id = $1 AND method = $2 AND path = $3 AND idempotency_key = $4",
    )
    .bind(scope.user_id)
    .bind(&scope.method)
    .bind(&scope.path)
    .bind(&scope.key.0)
    .bind(response.status as i16)
    .bind(headers)
    .bind(&response.body)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes keys older than the retention; returns how many.
pub async fn delete_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(RETENTION_HOURS)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes expired keys now and every [`CLEANUP_INTERVAL`] until shutdown.
pub async fn clean_up_until(pool: sqlx::PgPool, shutdown: CancellationToken) {
    loop {
        match delete_expired(&pool).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "idempotency key cleanup failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CLEANUP_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse() {
        let ok = |s: &str| IdempotencyKey::parse(&HeaderValue::from_str(s).unwrap()).is_ok();
        assert!(ok("a"));
        assert!(ok(&"k".repeat(255)));
        assert!(!ok(&"k".repeat(256)));
        assert!(!ok(""));
        assert!(ok("0190a7c4-5b1e-7000-8000-000000000000"));
        let non_ascii = HeaderValue::from_bytes("clé".as_bytes()).unwrap();
        assert!(IdempotencyKey::parse(&non_ascii).is_err());
    }
}
