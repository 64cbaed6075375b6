//! Keyset pagination, newest first, shared by the inbox and a webhook's
//! deliveries: `limit` and an opaque `cursor` (the last item's creation
//! time and id, and the filter the page was cut for), plus the inbox's
//! `unread` filter where a list has it.

use axum::http::Uri;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service::{FieldError, Problem};
use uuid::Uuid;

/// Page size when `limit` is absent, and the largest accepted.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// A parsed list request.
#[derive(Debug, Clone, PartialEq)]
pub struct PageQuery {
    /// Only unread items (lists with an `unread` filter).
    pub unread: bool,
    pub limit: usize,
    /// The last item of the previous page: created_at, id.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// Where a page ended: the last item's time and id, and the filter.
#[derive(Debug, Serialize, Deserialize)]
struct Position {
    /// `created_at`, microseconds since the epoch.
    t: i64,
    id: Uuid,
    /// The `unread` filter the cursor was cut for.
    u: bool,
}

/// The `next_cursor` after an item created at `at` with id `id`.
pub fn cursor(at: DateTime<Utc>, id: Uuid, unread: bool) -> String {
    let position = Position {
        t: at.timestamp_micros(),
        id,
        u: unread,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position).unwrap_or_default())
}

impl PageQuery {
    /// Reads `limit`, `cursor` and (when `with_unread`) `unread`; any other
    /// parameter, a repeated one or a bad value is a 400 naming each.
    pub fn parse(uri: &Uri, with_unread: bool) -> Result<Self, Problem> {
        let pairs: Vec<(String, String)> =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map(|q| q.0)
                .map_err(|e| Problem::bad_request(format!("malformed query string: {e}")))?;
        let mut unread = false;
        let mut limit = DEFAULT_LIMIT;
        let mut cursor = None;
        let mut errors = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in &pairs {
            let known =
                matches!(name.as_str(), "limit" | "cursor") || (with_unread && name == "unread");
            if !known {
                errors.push(FieldError::new(name.as_str(), "unknown query parameter"));
                continue;
            }
            if seen.contains(name) {
                errors.push(FieldError::new(name.as_str(), "given more than once"));
                continue;
            }
            seen.push(name.clone());
            match name.as_str() {
                "unread" => match value.as_str() {
                    "true" => unread = true,
                    "false" => unread = false,
                    _ => errors.push(FieldError::new("unread", "expected `true` or `false`")),
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                    _ => errors.push(FieldError::new(
                        "limit",
                        format!("expected an integer from 1 to {MAX_LIMIT}"),
                    )),
                },
                _ => cursor = Some(value.clone()),
            }
        }
        let mut after = None;
        if let Some(c) = cursor {
            let position = URL_SAFE_NO_PAD
                .decode(c.as_bytes())
                .ok()
                .and_then(|json| serde_json::from_slice::<Position>(&json).ok())
                .and_then(|p| {
                    // Only an instant the store can hold: a made-up cursor
                    // is a 400, never a database error.
                    let t = DateTime::from_timestamp_micros(p.t)?;
                    Some((service::time::storable(t).ok()?, p))
                });
            match position {
                Some((_, p)) if p.u != unread => errors.push(FieldError::new(
                    "cursor",
                    "the cursor belongs to a list with another `unread`; repeat the same \
                     parameters, or start again without a cursor",
                )),
                Some((t, p)) => after = Some((t, p.id)),
                None => errors.push(FieldError::new("cursor", "not a cursor this API issued")),
            }
        }
        if errors.is_empty() {
            Ok(PageQuery {
                unread,
                limit,
                after,
            })
        } else {
            Err(Problem::invalid_query(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_bound_to_its_filter() {
        let (at, id) = (
            DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            Uuid::from_u128(7),
        );
        let c = cursor(at, id, true);
        let uri: Uri = format!("/notifications?unread=true&cursor={c}")
            .parse()
            .unwrap();
        let q = PageQuery::parse(&uri, true).unwrap();
        assert_eq!(q.after, Some((at, id)));
        let uri: Uri = format!("/notifications?cursor={c}").parse().unwrap();
        assert_eq!(PageQuery::parse(&uri, true).unwrap_err().status, 400);
        let uri: Uri = "/notifications?cursor=nope&limit=0&x=1".parse().unwrap();
        let e = PageQuery::parse(&uri, true).unwrap_err();
        assert_eq!(e.errors.len(), 3);
    }

    #[test]
    fn a_list_without_the_filter_refuses_it() {
        let uri: Uri = "/webhooks/x/deliveries?unread=true".parse().unwrap();
        let e = PageQuery::parse(&uri, false).unwrap_err();
        assert_eq!(e.errors[0].pointer, "unread");
        let c = cursor(Utc::now(), Uuid::from_u128(1), false);
        let uri: Uri = format!("/webhooks/x/deliveries?limit=200&cursor={c}")
            .parse()
            .unwrap();
        let q = PageQuery::parse(&uri, false).unwrap();
        assert_eq!(q.limit, 200);
        assert!(q.after.is_some());
    }
}
