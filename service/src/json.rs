//! A JSON body extractor whose every rejection is a problem+json:
//! malformed JSON → 400, wrong shape or unknown field → 422 with a JSON
//! pointer, wrong content type → 415, too large → 413.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Like `axum::Json`, with problem+json rejections and field pointers.
/// Types should use `#[serde(deny_unknown_fields)]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "expected a body with `Content-Type: application/json`",
            ));
        }
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(Json)
    }
}

/// Reads a whole request body within the service's body-read timeout
/// ([`crate::http::Limits`]; 408 beyond it) and the body limit (413).
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    let timeout = req
        .extensions()
        .get::<crate::http::Limits>()
        .map(|l| l.body_read_timeout)
        .unwrap_or_else(|| crate::http::Limits::default().body_read_timeout);
    match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
        Err(_) => Err(Problem::request_timeout(timeout)),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(Problem::payload_too_large(BODY_LIMIT))
        }
        Ok(Err(rejection)) => Err(Problem::bad_request(format!(
            "could not read the request body: {rejection}"
        ))),
    }
}

/// Parses a JSON document, mapping errors as the extractor does.
///
/// Strings containing U+0000 are refused with 422: Postgres cannot store
/// that character in `text` or `jsonb`, so accepting it would turn bad
/// input into a server error later.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    if let Some((pointer, flaw)) = scan(bytes) {
        let detail = match flaw {
            Flaw::RepeatedKey => "this member appears more than once in its object",
            Flaw::Nul => "must not contain the character U+0000",
        };
        return Err(Problem::validation(vec![FieldError::new(
            if pointer.is_empty() {
                "/".to_owned()
            } else {
                pointer
            },
            detail,
        )]));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let pointer = pointer_of(err.path());
        Problem::validation(vec![FieldError::new(
            pointer,
            strip_position(&err.into_inner().to_string()),
        )])
    })
}

/// What [`scan`] refuses in a syntactically valid document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// An object repeats a key (`serde_json::Value` would keep the last).
    RepeatedKey,
    /// A string, value or key, holds U+0000, which Postgres cannot store.
    Nul,
}

/// One pass over a valid JSON document: the JSON pointer of its first
/// [`Flaw`]. The pointer is kept as one string that grows and shrinks with
/// the walk, so a large document costs a copy of each key once, not per
/// element.
fn scan(bytes: &[u8]) -> Option<(String, Flaw)> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::collections::HashSet;

    struct Walk<'p>(&'p mut String);

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = Option<Flaw>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    /// Appends `/key` (escaped as RFC 6901 says); returns the old length.
    fn push(path: &mut String, key: &str) -> usize {
        let len = path.len();
        path.push('/');
        for c in key.chars() {
            match c {
                '~' => path.push_str("~0"),
                '/' => path.push_str("~1"),
                c => path.push(c),
            }
        }
        len
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = Option<Flaw>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let len = push(self.0, &key);
                let found = if key.contains('\0') {
                    map.next_value::<IgnoredAny>()?;
                    Some(Flaw::Nul)
                } else if !seen.insert(key) {
                    map.next_value::<IgnoredAny>()?;
                    Some(Flaw::RepeatedKey)
                } else {
                    map.next_value_seed(Walk(&mut *self.0))?
                };
                if found.is_some() {
                    // The pointer stays where the flaw is; skip the rest.
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    return Ok(found);
                }
                self.0.truncate(len);
            }
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut i = 0usize;
            loop {
                let len = push(self.0, &i.to_string());
                match seq.next_element_seed(Walk(&mut *self.0))? {
                    None => {
                        self.0.truncate(len);
                        return Ok(None);
                    }
                    Some(Some(found)) => {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        return Ok(Some(found));
                    }
                    Some(None) => self.0.truncate(len),
                }
                i += 1;
            }
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.contains('\0').then_some(Flaw::Nul))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    let mut path = String::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = Walk(&mut path).deserialize(&mut de).ok().flatten()?;
    Some((path, found))
}

fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// `a.b[2].c` (serde_path_to_error's form) → `/a/b/2/c`.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        "/".to_owned()
    } else {
        out
    }
}

/// serde_json appends " at line 1 column 12"; the pointer already says where.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        title: String,
        tags: Option<Vec<String>>,
    }

    #[test]
    fn errors_map_to_status_and_pointer() {
        let cases: &[(&str, u16, Option<&str>)] = &[
            (r#"{"title": "a"}"#, 0, None),
            (r#"{"title": 1}"#, 422, Some("/title")),
            (r#"{"title": "a", "tags": ["x", 2]}"#, 422, Some("/tags/1")),
            (r#"{"title": "a", "extra": true}"#, 422, Some("/extra")),
            (r#"{}"#, 422, Some("/")),
            (r#"{"title": "#, 400, None),
            (r#"{"title": "a"} trailing"#, 400, None),
            (r#"{"title": "a\u0000b"}"#, 422, Some("/title")),
            (
                r#"{"title": "a", "tags": ["x", "\u0000"]}"#,
                422,
                Some("/tags/1"),
            ),
            ("", 400, None),
            (r#"{"title": "a", "title": "b"}"#, 422, Some("/title")),
            (
                r#"{"title": "a", "tags": [{"k": 1, "k": 2}]}"#,
                422,
                Some("/tags/0/k"),
            ),
        ];
        for (body, status, pointer) in cases {
            match parse::<Body>(body.as_bytes()) {
                Ok(_) => assert_eq!(*status, 0, "{body} parsed but expected {status}"),
                Err(p) => {
                    assert_eq!(p.status, *status, "{body}: {p:?}");
                    if let Some(ptr) = pointer {
                        assert_eq!(p.errors[0].pointer, *ptr, "{body}: {p:?}");
                    }
                }
            }
        }
    }
}
