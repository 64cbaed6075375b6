//! The headers of a write: `If-Match` and `Idempotency-Key` read from the
//! request; `ETag`, `Location` and `X-Consistency-Token` written on the
//! answer; and their OpenAPI declarations.

use axum::http::{header, HeaderMap, HeaderName};
use events::{ConsistencyToken, StreamVersion};
use service::Problem;
use uuid::Uuid;

use crate::idempotency::IdempotencyKey;
use crate::tasks::TaskSnapshot;

pub const IF_MATCH: HeaderName = header::IF_MATCH;
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

/// `If-Match: "<version>"` (a strong entity tag); `*` means "any version".
pub fn if_match(headers: &HeaderMap) -> Result<Option<StreamVersion>, Problem> {
    let Some(raw) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        Problem::bad_request(
            "If-Match must be one entity tag as sent in ETag, e.g. `If-Match: \"3\"`",
        )
    };
    let s = raw.to_str().map_err(|_| bad())?.trim();
    if s == "*" {
        return Ok(None);
    }
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|v| v.parse::<StreamVersion>().ok())
        .map(Some)
        .ok_or_else(bad)
}

/// `Idempotency-Key`, when sent: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|raw| IdempotencyKey::parse(raw).map_err(Problem::bad_request))
        .transpose()
}

/// `ETag` and `X-Consistency-Token` of the version a write left the task at.
pub fn version(snapshot: &TaskSnapshot) -> [(String, String); 2] {
    stream_version(snapshot.id, snapshot.version)
}

/// `ETag` and `X-Consistency-Token` of the version a write left a stream at.
pub fn stream_version(stream_id: Uuid, version: StreamVersion) -> [(String, String); 2] {
    let token = ConsistencyToken { stream_id, version };
    [
        (header::ETAG.to_string(), format!("\"{version}\"")),
        (CONSISTENCY_TOKEN.to_string(), token.to_string()),
    ]
}

/// `Location` of a created task.
pub fn location(id: Uuid) -> (String, String) {
    (header::LOCATION.to_string(), format!("/tasks/{id}"))
}

/// `Location` of a created project, or of a member (`/projects/{id}/members/{user}`).
pub fn project_location(id: Uuid, member: Option<Uuid>) -> (String, String) {
    let path = match member {
        Some(user) => format!("/projects/{id}/members/{user}"),
        None => format!("/projects/{id}"),
    };
    (header::LOCATION.to_string(), path)
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatchHeader {
    /// `"<version>"` as sent in `ETag`: the write applies only at that
    /// version (else 412). Without it the write applies to the latest version.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters. A retry with the same key and body
    /// within 24 h replays the first response (with `Idempotent-Replayed:
    /// true`) and records nothing; the same key with another body is 422.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    idempotency_key: Option<String>,
}
