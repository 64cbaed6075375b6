//! The API contract: each HTTP service's OpenAPI document describes exactly
//! the routes it serves, and schemathesis, given the gateway's one document
//! and sending everything through the gateway, finds no server error, schema
//! violation or undocumented status.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tests::clients::{email, AuthClient, QueryClient};
use tests::gateway::Settings;
use tests::{http, System};

/// schemathesis's checks that the contract promises: no 5xx, every status
/// documented, responses match their schema, content type and headers.
/// (Acceptance of every schema-valid input is not promised: the schema
/// cannot express every domain rule, e.g. legal status transitions.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance";

/// True when the router answered with its fallback (no such route or method).
async fn is_unrouted(res: reqwest::Response) -> bool {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let ty = body["type"].as_str().unwrap_or("");
    (status == 404 && ty.ends_with("/not-found") && body["detail"] == "no such route")
        || (status == 405 && ty.ends_with("/method-not-allowed"))
}

async fn request(base: &str, method: &str, path: &str, token: &str) -> reqwest::Response {
    let url = format!(
        "{base}{}",
        path.replace("{id}", &uuid::Uuid::new_v4().to_string())
    );
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http().request(method.clone(), url).bearer_auth(token);
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        req = req.json(&json!({}));
    }
    req.send().await.expect("request")
}

/// The API surface each service must serve (issues 2–7); the document must
/// describe exactly these, and each must be routed.
fn expected_surface(service: &str) -> BTreeSet<(String, String)> {
    let ops: &[(&str, &str)] = match service {
        "auth" => &[
            ("POST", "/auth/register"),
            ("POST", "/auth/login"),
            ("POST", "/auth/refresh"),
            ("POST", "/auth/logout"),
            ("GET", "/auth/me"),
            ("GET", "/admin/users"),
            ("PATCH", "/admin/users/{id}/role"),
            ("POST", "/admin/users/{id}/deactivate"),
            ("POST", "/admin/users/{id}/reactivate"),
            ("GET", "/.well-known/jwks.json"),
        ],
        "command-api" => &[
            ("POST", "/tasks"),
            ("PATCH", "/tasks/{id}"),
            ("POST", "/tasks/{id}/status"),
            ("DELETE", "/tasks/{id}"),
            ("POST", "/tasks/{id}/move"),
            ("POST", "/projects"),
            ("PATCH", "/projects/{id}"),
            ("DELETE", "/projects/{id}"),
            ("POST", "/projects/{id}/archive"),
            ("POST", "/projects/{id}/unarchive"),
            ("POST", "/projects/{id}/owner"),
            ("POST", "/projects/{id}/members"),
            ("PATCH", "/projects/{id}/members/{user_id}"),
            ("DELETE", "/projects/{id}/members/{user_id}"),
            ("POST", "/tasks/{id}/attachments"),
            ("POST", "/tasks/{id}/attachments/{attachment_id}/complete"),
            ("DELETE", "/tasks/{id}/attachments/{attachment_id}"),
        ],
        "query-api" => &[
            ("GET", "/tasks"),
            ("GET", "/tasks/{id}"),
            ("GET", "/tasks/{id}/history"),
            ("GET", "/analytics/summary"),
            ("GET", "/analytics/cycle-time"),
            ("GET", "/analytics/throughput"),
            ("GET", "/analytics/assignees"),
            ("GET", "/projects"),
            ("GET", "/projects/{id}"),
            ("GET", "/projects/{id}/members"),
            ("GET", "/tasks/{id}/attachments"),
            ("GET", "/tasks/{id}/attachments/{attachment_id}/download"),
        ],
        other => panic!("unknown service {other}"),
    };
    ops.iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain(
            ["/healthz", "/readyz", "/metrics"]
                .into_iter()
                .map(|p| ("GET".to_string(), p.to_string())),
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let system = System::start().await;
    let token = system
        .deployment
        .token_for(uuid::Uuid::new_v4(), events::Role::User);
    for (name, base) in [
        ("auth", system.auth.base.clone()),
        ("command-api", system.command.base.clone()),
        ("query-api", system.query.base.clone()),
    ] {
        let res = http()
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .expect("openapi");
        assert_eq!(res.status(), 200, "{name} serves /openapi.json");
        let doc: Value = res.json().await.expect("json");
        assert!(
            doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
            "{name}: OpenAPI 3.1"
        );
        assert!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer",
            "{name}: the Bearer scheme is declared"
        );
        let documented = tests::openapi_operations(&doc);
        let expected = expected_surface(name);
        assert_eq!(
            documented, expected,
            "{name}: the document must describe exactly the served routes\n  only documented: {:?}\n  only served: {:?}",
            documented.difference(&expected).collect::<Vec<_>>(),
            expected.difference(&documented).collect::<Vec<_>>()
        );
        for (method, path) in &documented {
            let res = request(&base, method, path, &token).await;
            assert!(
                !is_unrouted(res).await,
                "{name}: {method} {path} is documented but not routed"
            );
        }
        // And a route nobody documented is really not there.
        let res = request(&base, "GET", "/no-such-thing", &token).await;
        assert!(
            is_unrouted(res).await,
            "{name}: the fallback answers unknown routes"
        );
        // The browsable docs are served from the binary.
        let docs = http()
            .get(format!("{base}/docs"))
            .send()
            .await
            .expect("docs");
        assert_eq!(docs.status(), 200, "{name}: /docs");
        let page = docs.text().await.expect("docs page");
        assert!(
            page.contains("/docs/swagger-ui-bundle.js") && !page.contains("https://"),
            "{name}: /docs loads only local assets"
        );
        let js = http()
            .get(format!("{base}/docs/swagger-ui-bundle.js"))
            .send()
            .await
            .expect("asset");
        assert_eq!(js.status(), 200, "{name}: the UI's script is served");
    }
}

/// schemathesis, when `scripts/test` installed it (TASKSTREAM_SCHEMATHESIS
/// names its executable); every service, every operation, all checks.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_or_contract_violation() {
    let Some(st) = std::env::var_os("TASKSTREAM_SCHEMATHESIS") else {
        if std::env::var_os("CI").is_some() {
            panic!("TASKSTREAM_SCHEMATHESIS is not set in CI: scripts/test installs schemathesis");
        }
        eprintln!("schemathesis not installed (run through scripts/test); skipping");
        return;
    };
    let examples =
        std::env::var("TASKSTREAM_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "200".into());
    let system = System::start().await;
    let gateway = system.start_gateway(&Settings::default()).await;
    // A real user with a real token from auth.
    let token = AuthClient::new(&gateway.base)
        .user(&email("contract-"))
        .await;
    let mut failures = Vec::new();
    {
        let (name, base) = ("gateway", gateway.base.clone());
        let report = std::env::temp_dir().join(format!(
            "schemathesis-{name}-{}.xml",
            uuid::Uuid::new_v4().simple()
        ));
        let run = |workers: &'static str| {
            tokio::task::spawn_blocking({
                let (st, base, token, examples, report) = (
                    st.clone(),
                    base.clone(),
                    token.clone(),
                    examples.clone(),
                    report.clone(),
                );
                move || {
                    Command::new(st)
                        .args(["run", &format!("{base}/openapi.json"), "--checks", CHECKS])
                        .args([
                            "--max-examples",
                            &examples,
                            "--workers",
                            workers,
                            "--no-color",
                        ])
                        .args([
                            "--request-timeout",
                            "30",
                            "--generation-database",
                            "none",
                            "--seed",
                            "1",
                        ])
                        .args(["--header", &format!("Authorization: Bearer {token}")])
                        .args(["--report", "junit", "--report-junit-path"])
                        .arg(&report)
                        .output()
                        .expect("run schemathesis")
                }
            })
        };
        // One worker: with two, schemathesis's coverage phase crashes more
        // often than not here ("AST constructor recursion depth mismatch":
        // Python 3.11's parser, re-entered from two threads), and one
        // worker is no slower on two cores the system under test shares
        // (124 s against 130–150 s). A crash inside schemathesis itself is
        // not a finding about the API: it runs once more. Findings are
        // reported as "Failures" and are never retried.
        let mut out = run("1").await.expect("join");
        let crashed = |o: &std::process::Output| {
            let text = String::from_utf8_lossy(&o.stdout);
            !o.status.success() && text.contains("Runtime Error") && !text.contains("Failures:")
        };
        if crashed(&out) {
            eprintln!("schemathesis crashed against {name}; running it once more");
            out = run("1").await.expect("join");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: String = stdout
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("schemathesis against {name}:\n{summary}");
        if !out.status.success() {
            failures.push(format!(
                "{name}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        failures.is_empty(),
        "schemathesis found problems:\n{}",
        failures.join("\n\n")
    );
}

/// Regressions of what schemathesis found: U+0000 in any JSON string used to
/// reach Postgres (which cannot store it) and answer 500.
#[tokio::test(flavor = "multi_thread")]
async fn a_nul_character_in_any_json_string_is_a_422_not_a_server_error() {
    let system = System::start().await;
    let user = uuid::Uuid::new_v4();
    let token = system.deployment.token_for(user, events::Role::User);
    let cases = [
        (
            system.command.url("/tasks"),
            json!({ "title": "ok", "tags": ["fine", "bad\u{0}tag"] }),
            "/tags/1",
        ),
        (
            system.command.url("/tasks"),
            json!({ "title": "a\u{0}b" }),
            "/title",
        ),
        (
            system.auth.url("/auth/register"),
            json!({ "email": "nul@example.com", "password": "correct horse battery", "display_name": "\u{0}" }),
            "/display_name",
        ),
    ];
    for (url, body, pointer) in cases {
        let res = http()
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 422, "{url} with {body}");
        let problem: Value = res.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let list = QueryClient::new(&system.query.base, &token)
        .list_tasks("")
        .await;
    assert_eq!(list.status, 200);
}
