//! Per-user write limits: a token bucket per caller in front of every
//! write, so one user's burst cannot take the event store, the relay and
//! the projector away from everyone else.

use std::num::NonZeroU32;
use std::sync::Arc;

use access::AuthUser;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service::rate_limit::{self, KeyedLimiter, Quota};
use uuid::Uuid;

use crate::startup::AppState;

/// Users tracked at once; an idle user's bucket is forgotten (see
/// `service::rate_limit`), so this bounds memory, not the number of users.
pub const CAPACITY: usize = 100_000;

/// The default: 600 writes a minute per user (10/s sustained), bursts of 100.
pub fn default_quota() -> Quota {
    Quota {
        per_minute: NonZeroU32::new(600).expect("non-zero"),
        burst: NonZeroU32::new(100).expect("non-zero"),
    }
}

pub type WriteLimiter = Arc<KeyedLimiter<Uuid>>;

pub fn limiter(quota: Quota) -> WriteLimiter {
    Arc::new(KeyedLimiter::new(quota, CAPACITY))
}

/// Middleware on the write routes: counts the caller's write, or answers
/// 429 with `Retry-After` and `RateLimit-*` headers. Reads (GET, HEAD) and
/// requests without a valid token pass through untouched: the handler
/// answers those (401) and they never reach a store.
pub async fn limit_writes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method().is_safe() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Ok(user) = AuthUser::from_request_parts(&mut parts, &state).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let quota = state.write_limiter.quota();
    match state.write_limiter.check(&user.id) {
        Ok(admitted) => {
            let mut res = next.run(Request::from_parts(parts, body)).await;
            res.headers_mut()
                .extend(rate_limit::headers(quota, admitted));
            res
        }
        Err(limited) => {
            metrics::counter!("command_writes_rate_limited_total").increment(1);
            rate_limit::too_many(quota, limited, "writes per user").into_response()
        }
    }
}
