//! The generated files' text: the merged document as stable JSON, and the
//! two HAProxy maps.
//!
//! HAProxy reads a map file line by line: `#` lines and blank lines are
//! skipped, leading blanks stripped, the key is the first word (up to a
//! space or tab, no escaping) and the value the rest of the line without its
//! trailing blanks. `map_reg` compiles each key as a PCRE2 regex and answers
//! the value of the first line, in file order, whose key matches. So keys
//! hold no blank (a path with one is refused), values may (`GET, HEAD`), and
//! where two keys can match one string the more specific comes first.
//!
//! A `routes.map` value is `<backend>|<bearer|public>|<documented path>`.
//! Checked with HAProxy 2.6 and this file: with the key built as
//! `set-var-fmt(txn.route) "%[method]%[path]"`, `var(txn.route),
//! map_reg(routes.map)` gives the whole value (`{` and `}` kept) and
//! `,field(1,|)`, `,field(2,|)`, `,field(3,|)` its fields (`|` needs no
//! quoting there), for GET, HEAD, POST, PATCH and DELETE. Building the key
//! with `set-var(txn.route) method` instead loses PATCH (a method HAProxy
//! does not know), so the key must be built by a format string.

use std::collections::{BTreeMap, BTreeSet};

use utoipa::openapi::OpenApi;

use crate::merge::{MergeError, Method, Route};
use crate::RENDER_COMMAND;

/// The regex of a documented path, without anchors: parameters (`{id}`)
/// match one non-empty segment (`[^/]+`), every other character itself
/// (regex metacharacters escaped: `/.well-known/jwks\.json`). A path must
/// start with `/` and hold printable ASCII only, so the regex holds no
/// blank and means the same to PCRE2 (HAProxy) and Rust's `regex`; no `"`
/// or `\`, so the path can stand in a JSON access-log line as is; and no
/// `|`, the separator of the fields of a `routes.map` value.
pub fn path_regex(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("it does not start with `/`".into());
    }
    let mut regex = String::with_capacity(path.len() + 8);
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                let mut name = String::new();
                let closed = loop {
                    match chars.next() {
                        Some('}') => break true,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => break false,
                    }
                };
                if !closed || name.is_empty() {
                    return Err("a parameter is not a `{name}` of letters, digits and `_`".into());
                }
                regex.push_str("[^/]+");
            }
            '}' => return Err("a `}` closes no parameter".into()),
            c if !c.is_ascii_graphic() || c == '"' || c == '\\' || c == '|' => {
                return Err(format!(
                    "{c:?} is not printable ASCII or is a quote, backslash or `|`"
                ));
            }
            c => {
                if ".+*?()[]^$".contains(c) {
                    regex.push('\\');
                }
                regex.push(c);
            }
        }
    }
    Ok(regex)
}

/// `routes.map`: one line per path, backend and access, key
/// `^(METHOD|...)<path regex>$`, value `<backend>|<bearer|public>|<path>`
/// ([`route_value`]), in match order.
pub fn routes_map(routes: &[Route]) -> String {
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        specificity(&a.path)
            .cmp(&specificity(&b.path))
            .then(a.backend.cmp(&b.backend))
            .then(a.access.cmp(&b.access))
    });
    let lines = ordered.iter().map(|route| {
        let methods: Vec<&str> = route.methods.iter().map(|m| m.as_str()).collect();
        (
            format!("^({}){}$", methods.join("|"), regex_of(&route.path)),
            route_value(route),
        )
    });
    map_file(
        "HAProxy map_reg over \"<METHOD><path>\" (the request's method directly followed\n\
         by its path, query string excluded). The value is three fields separated by\n\
         `|` (HAProxy: field(1,|) etc.): the backend serving it; `bearer` when the\n\
         operation requires a Bearer token (only then may the token pick a per-user\n\
         budget), else `public`; the path as the API documents it, the route the access\n\
         log names. map_reg answers the first matching line, so a literal segment comes\n\
         before a parameter in the same place. GET implies HEAD.",
        lines,
    )
}

/// A `routes.map` value: `<backend>|<bearer|public>|<documented path>`,
/// e.g. `query|bearer|/tasks/{id}` (a documented path holds no `|` nor
/// blank: [`path_regex`]).
pub fn route_value(route: &Route) -> String {
    format!(
        "{}|{}|{}",
        route.backend.name(),
        route.access.as_str(),
        route.path
    )
}

/// `allow.map`: one line per path, key `^<path regex>$`, value the `Allow`
/// list of every method any service serves on it, in match order.
pub fn allow_map(routes: &[Route]) -> String {
    let lines = per_path(routes).into_iter().map(|(path, methods)| {
        let methods: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        (format!("^{}$", regex_of(path)), methods.join(", "))
    });
    map_file(
        "HAProxy map_reg over the request's path (query string excluded): the value,\n\
         the rest of the line, is the Allow list of a path that exists, for the 405\n\
         answered when routes.map has no line for the method. No line: 404.",
        lines,
    )
}

/// Every path once, with the methods any service serves on it, in match
/// order.
fn per_path(routes: &[Route]) -> Vec<(&str, BTreeSet<Method>)> {
    let mut methods: BTreeMap<&str, BTreeSet<Method>> = BTreeMap::new();
    for route in routes {
        methods
            .entry(&route.path)
            .or_default()
            .extend(route.methods.iter().copied());
    }
    let mut ordered: Vec<(&str, BTreeSet<Method>)> = methods.into_iter().collect();
    ordered.sort_by(|a, b| specificity(a.0).cmp(&specificity(b.0)));
    ordered
}

/// The document as pretty JSON with every object's keys sorted, so the
/// file is byte-stable between runs.
pub fn document_json(document: &OpenApi) -> Result<String, MergeError> {
    let value = sorted(serde_json::to_value(document)?);
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The merge checked every path ([`path_regex`]), so this cannot fail on a
/// merged route; an unroutable path would match nothing.
fn regex_of(path: &str) -> String {
    path_regex(path).unwrap_or_else(|_| "(?!)".to_owned())
}

/// The order map_reg must try paths in: segment by segment, a literal
/// segment before one mixing literal text and a parameter, before a bare
/// parameter. Two paths one request can match differ first where one has a
/// literal and the other a parameter, so the more specific comes first.
fn specificity(path: &str) -> Vec<(u8, &str)> {
    path.split('/')
        .map(|segment| {
            if !segment.contains('{') {
                (0, segment)
            } else if segment.starts_with('{')
                && segment.ends_with('}')
                && segment.matches('{').count() == 1
            {
                (2, "")
            } else {
                (1, segment)
            }
        })
        .collect()
}

/// A map file: the header, then `key value` lines with the values aligned.
fn map_file(about: &str, lines: impl Iterator<Item = (String, String)>) -> String {
    let lines: Vec<(String, String)> = lines.collect();
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = format!("# Generated by `{RENDER_COMMAND}` from the services'\n# OpenAPI documents: do not edit.\n#\n");
    for line in about.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    for (key, value) in lines {
        text.push_str(&format!("{key:<width$} {value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::Access;
    use crate::Backend;

    #[test]
    fn paths_become_anchorable_regexes_with_metacharacters_escaped() {
        let check = |path: &str, expected: &str| {
            assert_eq!(path_regex(path).as_deref(), Ok(expected), "{path}");
        };
        check("/tasks", "/tasks");
        check("/tasks/{id}", "/tasks/[^/]+");
        check(
            "/projects/{id}/members/{user_id}",
            "/projects/[^/]+/members/[^/]+",
        );
        check("/.well-known/jwks.json", "/\\.well-known/jwks\\.json");
        check("/analytics/cycle-time", "/analytics/cycle-time");
        check("/files/{name}.json", "/files/[^/]+\\.json");
        check("/a+b*c?(d)[e]^$", "/a\\+b\\*c\\?\\(d\\)\\[e\\]\\^\\$");
    }

    #[test]
    fn paths_a_map_key_cannot_hold_are_refused() {
        for path in [
            "tasks", "/a b", "/a\tb", "/tâche", "/{}", "/{id", "/id}", "/{a{b}}", "/a\"b", "/a\\b",
            "/a|b",
        ] {
            assert!(path_regex(path).is_err(), "{path:?} accepted");
        }
    }

    #[test]
    fn literal_segments_come_before_parameters_in_the_maps() {
        let route = |path: &str, backend, methods: &[Method]| Route {
            path: path.to_owned(),
            backend,
            access: Access::Bearer,
            methods: methods.iter().copied().collect(),
        };
        let routes = [
            route("/tasks/{id}", Backend::Query, &[Method::Get, Method::Head]),
            route("/tasks/{id}.json", Backend::Query, &[Method::Get]),
            route("/tasks/search", Backend::Query, &[Method::Post]),
            route("/tasks/{id}", Backend::Command, &[Method::Delete]),
        ];
        let keys = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(
            keys(&routes_map(&routes)),
            [
                "^(POST)/tasks/search$",
                "^(GET)/tasks/[^/]+\\.json$",
                "^(DELETE)/tasks/[^/]+$",
                "^(GET|HEAD)/tasks/[^/]+$",
            ]
        );
        let allow = allow_map(&routes);
        assert_eq!(
            keys(&allow),
            ["^/tasks/search$", "^/tasks/[^/]+\\.json$", "^/tasks/[^/]+$"]
        );
        assert!(
            allow
                .lines()
                .any(|l| l.starts_with("^/tasks/[^/]+$") && l.ends_with(" GET, HEAD, DELETE")),
            "{allow}"
        );
    }

    #[test]
    fn route_values_are_backend_access_and_documented_path() {
        let route = |path: &str, backend, access, methods: &[Method]| Route {
            path: path.to_owned(),
            backend,
            access,
            methods: methods.iter().copied().collect(),
        };
        let routes = [
            route(
                "/tasks/{id}",
                Backend::Query,
                Access::Bearer,
                &[Method::Get, Method::Head],
            ),
            route(
                "/.well-known/jwks.json",
                Backend::Auth,
                Access::Public,
                &[Method::Get, Method::Head],
            ),
            route("/auth/me", Backend::Auth, Access::Public, &[Method::Post]),
            route("/auth/me", Backend::Auth, Access::Bearer, &[Method::Get]),
        ];
        let lines: Vec<(String, String)> = routes_map(&routes)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (key, value) = l.split_once(' ').unwrap_or((l, ""));
                (key.to_owned(), value.trim().to_owned())
            })
            .collect();
        let expected = [
            (
                "^(GET|HEAD)/\\.well-known/jwks\\.json$",
                "auth|public|/.well-known/jwks.json",
            ),
            ("^(GET)/auth/me$", "auth|bearer|/auth/me"),
            ("^(POST)/auth/me$", "auth|public|/auth/me"),
            ("^(GET|HEAD)/tasks/[^/]+$", "query|bearer|/tasks/{id}"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(lines, expected);
    }

    #[test]
    fn the_document_is_written_with_sorted_keys() {
        let doc: OpenApi = serde_json::from_value(serde_json::json!({
            "openapi": "3.1.0",
            "info": { "version": "0", "title": "t" },
            "paths": {},
            "components": { "schemas": { "B": { "type": "object", "properties": { "z": { "type": "string" }, "a": { "type": "string" } } } } }
        }))
        .expect("a valid document");
        let text = document_json(&doc).expect("serializable");
        assert!(text.ends_with("}\n"));
        let z = text.find("\"z\"").expect("z");
        let a = text.find("\"a\"").expect("a");
        assert!(a < z, "{text}");
        assert!(text.find("\"info\"") < text.find("\"openapi\""), "{text}");
    }
}
