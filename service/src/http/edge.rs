//! Middleware every response passes through on its way out: the request id
//! (only a well-formed one is adopted; see [`drop_malformed_request_id`]),
//! the default caching headers, and one log line per request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, VARY};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::REQUEST_ID;

/// The longest request id adopted from a client or proxy.
pub const REQUEST_ID_MAX_LEN: usize = 128;

/// Whether `id` may be adopted as this request's id: 1 to 128 characters of
/// `[A-Za-z0-9._:-]` (UUIDs, HAProxy's `%ID` formats, trace ids), nothing
/// that could forge or break a log line.
pub fn is_acceptable_request_id(id: &[u8]) -> bool {
    (1..=REQUEST_ID_MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Middleware, outside the one that sets the request id: an incoming
/// `X-Request-Id` that is not exactly one acceptable value is removed, so a
/// fresh one is made and neither logs nor the response ever carry what a
/// client made up beyond that shape.
pub async fn drop_malformed_request_id(mut req: Request, next: Next) -> Response {
    let mut ids = req.headers().get_all(REQUEST_ID).iter();
    let acceptable = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => is_acceptable_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !acceptable {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}

/// `Cache-Control` of a response that names none and answered a request
/// with credentials: any cache must revalidate, and only the caller's may
/// keep it.
pub const PRIVATE: &str = "private, no-cache";
/// `Cache-Control` of a response that names none and answered a request
/// without credentials: nothing keeps it (errors, health, metrics).
pub const NO_STORE: &str = "no-store";
/// `Cache-Control` of the public documents (JWKS, OpenAPI, the docs page).
pub const PUBLIC_5_MIN: &str = "public, max-age=300";

/// Middleware: a response that sets no `Cache-Control` gets
/// [`PRIVATE`] and `Vary: Authorization` when the request carried
/// `Authorization`, else [`NO_STORE`]. Only a handler serving something
/// public sets its own; a shared cache (the gateway) therefore keeps
/// nothing it was not told it may. `ETag`s are left as they are.
pub async fn default_cache_control(req: Request, next: Next) -> Response {
    let credentials = req.headers().contains_key(AUTHORIZATION);
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    if !headers.contains_key(CACHE_CONTROL) {
        if credentials {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(PRIVATE));
            headers.append(VARY, HeaderValue::from_static("Authorization"));
        } else {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
        }
    }
    res
}

/// Middleware: one INFO line per request once its response head is ready,
/// `"message":"request"` with `method`, `route` (the route template, or
/// `unmatched`; never the raw path or query), `status`, `latency_ms` and
/// `request_id` (the id the response carries in `X-Request-Id`).
pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = crate::metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let res = next.run(req).await;
    let request_id = res
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        method,
        route = route.as_deref().unwrap_or("unmatched"),
        status = res.status().as_u16(),
        latency_ms = start.elapsed().as_millis() as u64,
        request_id,
        "request"
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_request_ids_are_adopted() {
        let ok = [
            "0192a0c4-8d1e-7cc3-9a57-2f3b9b1c2d4e",
            "a",
            "C0A80001:D2F0_5F6A8B2C.1A2B-0001",
            &"x".repeat(128),
        ];
        for id in ok {
            assert!(is_acceptable_request_id(id.as_bytes()), "{id:?}");
        }
        let bad = [
            "",
            "has space",
            "line\nbreak",
            "quote\"",
            "{\"json\":1}",
            "ünïcode",
            &"x".repeat(129),
            &"y".repeat(300),
        ];
        for id in bad {
            assert!(!is_acceptable_request_id(id.as_bytes()), "{id:?}");
        }
    }
}
