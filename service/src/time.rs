//! Instants the stores can hold. MongoDB (BSON dates) and the views'
//! RFC 3339 strings are only defined for years 1 to 9999 in UTC; chrono
//! parses far beyond that (`+10000-01-01T00:00:00Z`, or
//! `0001-01-01T00:00:00+01:00`, which is year 0 in UTC). Every instant a
//! client sends, in a body, a query parameter or a cursor, goes through
//! here, so no such value reaches an event or a store query.

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Deserializer};

/// The earliest and latest years (UTC) an accepted instant may fall in.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// `t` itself when its UTC year is within [`YEARS`].
pub fn storable(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    // A leap second (`23:59:60`) parses, but the stores count milliseconds
    // and would read 9999-12-31T23:59:60Z as the year 10000.
    if t.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err("must not be a leap second (:60)".into());
    }
    if YEARS.contains(&t.year()) {
        Ok(t)
    } else {
        Err(format!(
            "must fall within the years {} to {} (UTC)",
            YEARS.start(),
            YEARS.end()
        ))
    }
}

/// Parses an RFC 3339 instant and checks it is [`storable`].
pub fn parse_rfc3339(raw: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "expected an RFC 3339 instant such as 2026-01-31T09:00:00Z \
                 (a `+` offset must be sent as %2B): {e}"
            )
        })?;
    storable(t)
}

/// A body field holding a [`storable`] instant: deserialising anything
/// else fails, so the JSON extractor answers 422 naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(pub DateTime<Utc>);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = DateTime::<Utc>::deserialize(d)?;
        storable(t).map(Instant).map_err(serde::de::Error::custom)
    }
}

impl From<Instant> for DateTime<Utc> {
    fn from(i: Instant) -> Self {
        i.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_years_one_to_9999_in_utc_are_storable() {
        for ok in [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2026-06-01T12:00:00+02:00",
            "0001-01-01T00:30:00+00:00",
        ] {
            assert!(parse_rfc3339(ok).is_ok(), "{ok}");
        }
        for bad in [
            "0000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:00:00-02:00",
            "9999-12-31T23:59:60Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
            assert!(
                serde_json::from_str::<Instant>(&format!("\"{bad}\"")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_body_field_refuses_unstorable_instants() {
        let err = serde_json::from_str::<Instant>("\"0000-01-01T00:00:00Z\"").unwrap_err();
        assert!(err.to_string().contains("years 1 to 9999"), "{err}");
        assert!(serde_json::from_str::<Instant>("\"2026-01-01T00:00:00Z\"").is_ok());
    }
}
