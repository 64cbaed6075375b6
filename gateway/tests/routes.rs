//! The committed maps, read as HAProxy reads them and evaluated as
//! `map_reg` does (each key a regex, the first match in file order wins):
//! `routes.map` routes every documented operation to the service that
//! documents it, says whether it takes a Bearer token and names its
//! documented path (`<backend>|<bearer|public>|<path>`), and matches
//! nothing else anywhere; `allow.map` knows every documented path and no
//! other.
//!
//! The oracle is the services' documents as JSON (`auth::openapi()` and its
//! siblings), not the gateway crate's own merge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gateway::Backend;
use regex::Regex;
use serde_json::Value;

/// One map line as HAProxy parses it: leading blanks stripped, the key up
/// to the first space or tab, the value the rest without surrounding blanks.
struct Line {
    key: Regex,
    value: String,
}

fn load(name: &str) -> Vec<Line> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|line| line.trim_start_matches([' ', '\t']))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            Line {
                key: Regex::new(key).unwrap_or_else(|e| panic!("{name}: key {key:?}: {e}")),
                value: value.trim_matches([' ', '\t']).to_owned(),
            }
        })
        .collect()
}

fn first_match<'a>(map: &'a [Line], input: &str) -> Option<&'a str> {
    map.iter()
        .find(|line| line.key.is_match(input))
        .map(|line| line.value.as_str())
}

/// Every method a request may carry, documented or not.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
];
const ALLOW_ORDER: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

/// Who serves a documented operation, and how.
#[derive(Debug, Clone, Copy)]
struct Served {
    backend: Backend,
    /// `bearer` or `public`.
    access: &'static str,
}

/// (path, METHOD) → the backend whose service documents it and whether the
/// operation requires its document's Bearer scheme, GET implying HEAD; the
/// per-service `operations` paths left out.
fn served() -> BTreeMap<(String, String), Served> {
    let mut served = BTreeMap::new();
    for (backend, doc) in gateway::documents() {
        let doc = serde_json::to_value(doc).expect("a document serializes");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                let tags = op["tags"].as_array().cloned().unwrap_or_default();
                if !op.is_object() || tags.contains(&Value::from("operations")) {
                    continue;
                }
                let here = Served {
                    backend,
                    access: access(&doc, op),
                };
                let method = method.to_ascii_uppercase();
                if method == "GET" {
                    served.insert((path.clone(), "HEAD".to_owned()), here);
                }
                served.insert((path.clone(), method), here);
            }
        }
    }
    served
}

/// `bearer` when the operation's `security` (its document's when it has
/// none) is non-empty and every requirement names only HTTP Bearer schemes
/// of the document; `public` when it is absent, empty or has an empty
/// requirement `{}`.
fn access(doc: &Value, op: &Value) -> &'static str {
    let requirements = op
        .get("security")
        .or_else(|| doc.get("security"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if requirements.is_empty() {
        return "public";
    }
    let mut bearer = true;
    for requirement in &requirements {
        let schemes = requirement.as_object().expect("a requirement is an object");
        if schemes.is_empty() {
            return "public";
        }
        for name in schemes.keys() {
            let scheme = &doc["components"]["securitySchemes"][name];
            bearer &= scheme["type"] == "http" && scheme["scheme"] == "bearer";
        }
    }
    assert!(bearer, "{requirements:?} names a scheme that is not Bearer");
    "bearer"
}

/// The path with each parameter replaced by `value`.
fn concrete(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(value);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

const PARAMETER_VALUES: [&str; 3] = ["0190a4f2-5c6e-7d1a-9b3f-2a4c6e8f0a1b", "x.y-z~1", "%2F"];

#[test]
fn every_documented_operation_is_routed_to_its_service_and_no_other_method_is() {
    let routes = load("routes.map");
    let served = served();
    let paths: BTreeSet<&String> = served.keys().map(|(p, _)| p).collect();
    assert!(paths.len() > 20, "too few paths documented: {paths:?}");
    let mut wrong = Vec::new();
    for path in &paths {
        for value in PARAMETER_VALUES {
            let concrete = concrete(path, value);
            for method in METHODS {
                let expected = served
                    .get(&(path.to_string(), method.to_owned()))
                    .map(|s| format!("{}|{}|{path}", s.backend.name(), s.access));
                let got = first_match(&routes, &format!("{method}{concrete}"));
                if got != expected.as_deref() {
                    wrong.push(format!(
                        "{method} {concrete} ({path}): expected {expected:?}, routes.map gives {got:?}"
                    ));
                }
            }
        }
    }
    assert_all_right(&wrong);
}

#[test]
fn allow_map_lists_every_method_of_every_path() {
    let allow = load("allow.map");
    let served = served();
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (path, method) in served.keys() {
        expected.entry(path).or_default().push(method);
    }
    let mut wrong = Vec::new();
    for (path, methods) in &mut expected {
        methods.sort_by_key(|m| ALLOW_ORDER.iter().position(|o| o == m));
        let expected = methods.join(", ");
        for value in PARAMETER_VALUES {
            let concrete = concrete(path, value);
            let got = first_match(&allow, &concrete);
            if got != Some(expected.as_str()) {
                wrong.push(format!(
                    "{concrete} ({path}): expected {expected:?}, allow.map gives {got:?}"
                ));
            }
        }
    }
    assert_all_right(&wrong);
}

#[test]
fn paths_no_service_documents_match_no_map() {
    let routes = load("routes.map");
    let allow = load("allow.map");
    let paths = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/tasks/",
        "/tasks//history",
        "/tasks/a/b",
        "/TASKS",
        "/auth/login/",
        "/auth/loginx",
        "x/tasks",
        "//tasks",
        "/.well-knownXjwks.json",
        "/.well-known/jwksXjson",
        "/.well-known/jwks.json/x",
    ];
    for path in paths {
        assert_eq!(first_match(&allow, path), None, "allow.map matches {path}");
        for method in METHODS {
            let key = format!("{method}{path}");
            assert_eq!(first_match(&routes, &key), None, "routes.map matches {key}");
        }
    }
    assert_eq!(
        first_match(&routes, "get/tasks"),
        None,
        "methods are case-sensitive"
    );
}

#[test]
fn routes_map_values_are_a_backend_bearer_or_public_and_a_documented_path() {
    let names: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
    let paths: BTreeSet<String> = served().into_keys().map(|(p, _)| p).collect();
    let mut accesses = BTreeSet::new();
    for line in load("routes.map") {
        let fields: Vec<&str> = line.value.split('|').collect();
        let [backend, access, path] = fields[..] else {
            panic!("{}: {:?} is not three `|` fields", line.key, line.value);
        };
        assert!(
            names.contains(&backend),
            "{}: {backend:?} is no backend",
            line.key
        );
        assert!(
            ["bearer", "public"].contains(&access),
            "{}: {access:?} is neither bearer nor public",
            line.key
        );
        assert!(
            paths.contains(path),
            "{}: {path:?} is not documented",
            line.key
        );
        accesses.insert(access.to_owned());
    }
    assert_eq!(
        accesses,
        BTreeSet::from(["bearer".to_owned(), "public".to_owned()]),
        "the services document both kinds"
    );
}

#[test]
fn well_known_routes_are_public_or_bearer_as_their_services_say() {
    let routes = load("routes.map");
    for (request, expected) in [
        (
            "GET/.well-known/jwks.json",
            "auth|public|/.well-known/jwks.json",
        ),
        ("POST/auth/login", "auth|public|/auth/login"),
        ("GET/auth/me", "auth|bearer|/auth/me"),
        (
            "HEAD/tasks/0190a4f2-5c6e-7d1a-9b3f-2a4c6e8f0a1b",
            "query|bearer|/tasks/{id}",
        ),
        (
            "PATCH/projects/p/members/u",
            "command|bearer|/projects/{id}/members/{user_id}",
        ),
    ] {
        assert_eq!(first_match(&routes, request), Some(expected), "{request}");
    }
}

/// Fails naming every wrong answer, and the command that regenerates the maps.
fn assert_all_right(wrong: &[String]) {
    assert!(
        wrong.is_empty(),
        "{}\n(if a service changed: run `{}`)",
        wrong.join("\n"),
        gateway::RENDER_COMMAND
    );
}
