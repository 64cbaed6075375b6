//! The merged document holds every public operation of every service,
//! unchanged but for the answers the gateway itself adds, and nothing
//! else; every reference in it resolves.

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
                let service = backend.service();
                let got = &merged["paths"][path][method];
                assert_eq!(
                    without_responses(got),
                    without_responses(op),
                    "{method} {path} of {service}"
                );
                let got = got["responses"].as_object().expect("responses");
                for (status, response) in op["responses"].as_object().expect("responses") {
                    assert_eq!(
                        got.get(status),
                        Some(response),
                        "{method} {path} of {service}: its own {status} answer"
                    );
                }
                for status in got.keys() {
                    assert!(
                        op["responses"].get(status).is_some() || is_gateways(status),
                        "{method} {path} of {service}: {status} is neither the service's nor the gateway's"
                    );
                }
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

fn without_responses(op: &Value) -> Value {
    let mut op = op.clone();
    if let Some(op) = op.as_object_mut() {
        op.remove("responses");
    }
    op
}

fn is_gateways(status: &str) -> bool {
    gateway::merge::GATEWAY_STATUSES.contains(&status)
        || gateway::merge::GATEWAY_BODY_STATUSES.contains(&status)
}

#[test]
fn every_operation_describes_the_gateways_own_answers() {
    let merged = merged();
    let mut rate_limit_headers = 0;
    for (path, item) in merged["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let responses = &op["responses"];
            let mut statuses = gateway::merge::GATEWAY_STATUSES.to_vec();
            if op.get("requestBody").is_some() {
                statuses.extend(gateway::merge::GATEWAY_BODY_STATUSES);
            }
            for status in statuses {
                let response = &responses[status];
                assert!(
                    response["description"].is_string(),
                    "{method} {path}: no {status}"
                );
                if status == "429" && response["headers"]["RateLimit-Policy"].is_object() {
                    for header in gateway::merge::RATE_LIMIT_HEADERS {
                        assert!(
                            response["headers"][header].is_object(),
                            "{method} {path}: 429 without {header}"
                        );
                    }
                    rate_limit_headers += 1;
                }
            }
        }
    }
    assert!(
        rate_limit_headers > 10,
        "the gateway's 429 (with RateLimit-*) is on only {rate_limit_headers} operations"
    );
    let read = &merged["paths"]["/tasks/{id}"]["get"]["responses"];
    assert_eq!(
        read["429"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem",
        "{read}"
    );
}

#[test]
fn it_is_one_openapi_3_1_document_for_taskstream() {
    let merged = merged();
    assert_eq!(merged["openapi"], "3.1.0");
    assert_eq!(merged["info"]["title"], "taskstream");
    assert_eq!(merged["info"]["version"], env!("CARGO_PKG_VERSION"));
    let description = merged["info"]["description"].as_str().unwrap_or_default();
    for service in ["auth", "command-api", "query-api", "notifier"] {
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
