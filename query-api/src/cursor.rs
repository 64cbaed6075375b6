//! Opaque, tamper-evident keyset cursors.
//!
//! A cursor is `base64url(json) "." base64url(hmac_sha256(secret, json))`,
//! where the JSON holds the sort, the last item's sort value and id, and a
//! digest of the filter set. Clients cannot forge or edit one (the MAC
//! fails) nor reuse one with other filters (the digest differs); both are a
//! 400 naming `cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use service::{FieldError, Problem};
use sha2::{Digest, Sha256};

use crate::params::{invalid, Sort};

type HmacSha256 = Hmac<Sha256>;

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The sort the cursor was cut for (`Sort::as_str`).
    #[serde(rename = "s")]
    pub sort: String,
    /// The last item's sort value: milliseconds for dates, the rank for
    /// priority, `null` for an absent due date.
    #[serde(rename = "v")]
    pub value: Option<i64>,
    /// The last item's id (the tie breaker).
    pub id: String,
    /// Digest of the filter set (see `ListQuery::fingerprint`).
    #[serde(rename = "f")]
    pub filters: String,
}

/// The HMAC key cursors are signed with.
#[derive(Clone)]
pub struct CursorKey(HmacSha256);

impl CursorKey {
    pub fn new(secret: &str) -> Result<Self, hmac::digest::InvalidLength> {
        <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).map(CursorKey)
    }

    fn mac(&self) -> HmacSha256 {
        self.0.clone()
    }

    pub fn encode(&self, sort: Sort, value: Option<i64>, id: &str, fingerprint: &str) -> String {
        let position = Position {
            sort: sort.as_str().to_owned(),
            value,
            id: id.to_owned(),
            filters: digest(fingerprint),
        };
        let json = serde_json::to_vec(&position).unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&json);
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Verifies the MAC, then that the cursor belongs to this sort and filter set.
    pub fn decode(&self, cursor: &str, sort: Sort, fingerprint: &str) -> Result<Position, Problem> {
        let bad = |detail: &str| invalid(vec![FieldError::new("cursor", detail)]);
        let (body, tag) = cursor
            .split_once('.')
            .ok_or_else(|| bad("not a cursor this API issued"))?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not a cursor this API issued"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| bad("not a cursor this API issued"))?;
        let mut mac = self.mac();
        mac.update(&json);
        mac.verify_slice(&tag)
            .map_err(|_| bad("the cursor was modified or not issued by this API"))?;
        let position: Position =
            serde_json::from_slice(&json).map_err(|_| bad("not a cursor this API issued"))?;
        if position.sort != sort.as_str() || position.filters != digest(fingerprint) {
            return Err(bad(
                "the cursor belongs to a list with other filters or another sort; \
                 repeat the same parameters, or start again without a cursor",
            ));
        }
        let is_date = !matches!(sort, Sort::Priority | Sort::PriorityDesc);
        if let (true, Some(ms)) = (is_date, position.value) {
            chrono::DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| "out of range".to_owned())
                .and_then(service::time::storable)
                .map_err(|_| bad("the cursor's position is not a time the views can hold"))?;
        }
        Ok(position)
    }
}

fn digest(fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(fingerprint.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_rejects_tampering_and_other_filters() {
        let key = CursorKey::new("secret").unwrap();
        let c = key.encode(Sort::DueAt, Some(42), "abc", "filters-a");
        let p = key.decode(&c, Sort::DueAt, "filters-a").unwrap();
        assert_eq!((p.value, p.id.as_str()), (Some(42), "abc"));

        let (body, tag) = c.split_once('.').unwrap();
        let mut json = URL_SAFE_NO_PAD.decode(body).unwrap();
        let at = json.iter().position(|b| *b == b'4').unwrap();
        json[at] = b'9';
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(&json));
        for bad in [forged.as_str(), "garbage", "a.b", &c[..c.len() - 2]] {
            let e = key.decode(bad, Sort::DueAt, "filters-a").unwrap_err();
            assert_eq!(
                (e.status, e.errors[0].pointer.as_str()),
                (400, "cursor"),
                "{bad}"
            );
        }
        assert!(key.decode(&c, Sort::DueAt, "filters-b").is_err());
        assert!(key.decode(&c, Sort::DueAtDesc, "filters-a").is_err());
        let far = key.encode(Sort::DueAt, Some(i64::MAX), "abc", "filters-a");
        assert_eq!(
            key.decode(&far, Sort::DueAt, "filters-a")
                .unwrap_err()
                .status,
            400
        );
        assert!(CursorKey::new("other")
            .unwrap()
            .decode(&c, Sort::DueAt, "filters-a")
            .is_err());
    }
}
