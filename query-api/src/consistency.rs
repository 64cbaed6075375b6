//! Read-your-writes: a read that carries a write's consistency token
//! waits (bounded) until the views have caught up with that write.

use std::time::Duration;

use access::AuthUser;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use events::ConsistencyToken;
use service::{FieldError, Problem};

use crate::startup::AppState;
use crate::store;

/// Header carrying a write's consistency token.
pub const CONSISTENCY_TOKEN: &str = "x-consistency-token";
/// How often a consistency wait looks at the view again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until the view of the token's stream has reached the token's
/// version, polling; bounded by the configured timeout, then 504.
///
/// A token is honoured only when it names a committed write the caller may
/// read (their own task or user stream; any task stream for an admin; a
/// project they are a member of, or a task in one: the wait is then on the
/// project's or the task's view).
/// Anything else, someone else's stream or a made-up one, gets the same
/// immediate 400 without a wait, so a token reveals nothing of other
/// streams and costs no polling. At most [`MAX_TOKEN_WAITS`] reads wait at
/// once per process; beyond that a read with a token is a 503.
pub async fn wait_for_token(
    state: &AppState,
    user: &AuthUser,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    let Some(raw) = headers.get(CONSISTENCY_TOKEN) else {
        return Ok(());
    };
    let token: ConsistencyToken = raw
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Problem::bad_request("malformed X-Consistency-Token: pass the token a write returned")
                .with_errors(vec![FieldError::new(
                    "X-Consistency-Token",
                    "expected `<stream id>.<version>` as returned by a write",
                )])
        })?;
    let readable =
        store::events::token_is_readable(&state.pool, user.id, user.is_admin(), &token).await?;
    if !readable {
        return Err(Problem::bad_request(
            "X-Consistency-Token names no write this caller can read",
        )
        .with_errors(vec![FieldError::new(
            "X-Consistency-Token",
            "pass a token returned by one of your own writes",
        )]));
    }
    let Ok(_waiting) = state.token_waits.clone().try_acquire_owned() else {
        return Err(Problem::unavailable(
            "too many reads are waiting for their consistency tokens; retry shortly",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
    };
    let started = tokio::time::Instant::now();
    let deadline = started + state.consistency_timeout;
    loop {
        let version = store::tasks::projected_version(&state.db, token.stream_id).await?;
        if version >= token.version {
            metrics::histogram!("query_api_consistency_wait_seconds")
                .record(started.elapsed().as_secs_f64());
            return Ok(());
        }
        if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
            metrics::counter!("query_api_consistency_timeouts_total").increment(1);
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "projection-behind",
                "Projection behind",
                format!(
                    "the read view has not caught up with the write in the consistency token \
                     within {} ms (it is at version {version}, the write is version {}); retry shortly",
                    state.consistency_timeout.as_millis(),
                    token.version
                ),
            )
            .with_extension("projected_version", version)
            .with_extension("token_version", token.version)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads waiting for a consistency token at once, per process.
pub const MAX_TOKEN_WAITS: usize = 256;
