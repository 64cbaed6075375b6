//! The merged document holds every public operation of every service,
//! unchanged, and nothing else; every reference in it resolves.

use std::collections::BTreeSet;

use serde_json::Value;

fn merged() -> Value {
    let doc = gateway::merged().unwrap_or_else(|e| panic!("the documents do not merge: {e}"));
    serde_json::to_value(doc).expect("the merged document serializes")
}

fn is_operations(op: &Value) -> bool {
    op["tags"]
        .as_array()
        .is_some_and(|tags| tags.contains(&Value::from("operations")))
}

#[test]
fn every_public_operation_of_every_service_is_in_it_unchanged() {
    let merged = merged();
    let mut expected = BTreeSet::new();
    for (backend, doc) in gateway::documents() {
        let doc = serde_json::to_value(doc).expect("a document serializes");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                if is_operations(op) {
                    assert!(
                        merged["paths"][path].get(method).is_none(),
                        "{method} {path} ({}) is per service, yet in the merged document",
                        backend.service()
                    );
                    continue;
                }
                assert_eq!(
                    &merged["paths"][path][method],
                    op,
                    "{method} {path} of {}",
                    backend.service()
                );
                expected.insert((path.clone(), method.clone()));
            }
        }
    }
    let mut found = BTreeSet::new();
    for (path, item) in merged["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            found.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(found, expected, "the merged document's operations");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(merged["paths"].get(path).is_none(), "{path} is per service");
    }
}

#[test]
fn it_is_one_openapi_3_1_document_for_taskstream() {
    let merged = merged();
    assert_eq!(merged["openapi"], "3.1.0");
    assert_eq!(merged["info"]["title"], "taskstream");
    assert_eq!(merged["info"]["version"], env!("CARGO_PKG_VERSION"));
    let description = merged["info"]["description"].as_str().unwrap_or_default();
    for service in ["auth", "command-api", "query-api"] {
        assert!(description.contains(service), "{description}");
    }
    let tags: Vec<&str> = merged["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let unique: BTreeSet<&str> = tags.iter().copied().collect();
    assert_eq!(tags.len(), unique.len(), "one tag per name: {tags:?}");
    assert!(!unique.contains("operations"), "{tags:?}");
    assert!(merged["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn every_reference_resolves_and_operation_ids_are_unique() {
    let merged = merged();
    let mut refs = Vec::new();
    collect_refs(&merged, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not local"));
        assert!(
            merged.pointer(pointer).is_some(),
            "{reference} resolves to nothing"
        );
    }
    let mut ids = BTreeSet::new();
    for item in merged["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("a path item").values() {
            if let Some(id) = op["operationId"].as_str() {
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            }
        }
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => refs.push(r.clone()),
                    _ => collect_refs(v, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}
