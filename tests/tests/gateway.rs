//! The gateway: the real HAProxy running `gateway/haproxy.cfg` in front of
//! the real services. One base URL routes every documented operation to the
//! service that serves it; limits, request ids, caching and edge limits
//! behave as `docs/api.md` says.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::clients::{email, id_of, Api, AuthClient, CommandClient, QueryClient, Reply};
use tests::gateway::{self, Gateway, Settings, Upstreams};
use tests::process::ProcessSystem;
use tests::{signing_key_file, Deployment, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A bearer client of the gateway (`token` may be `None`).
fn api(gateway: &Gateway, token: Option<&str>) -> Api {
    let api = AuthClient::new(&gateway.base).api().clone();
    match token {
        Some(t) => api.as_user(t),
        None => api,
    }
}

fn is_operational(path: &str) -> bool {
    ["/healthz", "/readyz", "/metrics"].contains(&path)
}

/// The gateway's own 404/405: what a request no service serves gets.
fn is_unrouted(reply: &Reply) -> bool {
    let body = reply.try_json().unwrap_or(Value::Null);
    (reply.status == 404 && body["detail"] == "no such route") || reply.status == 405
}

#[test]
fn the_configuration_passes_haproxys_check_with_warnings_fatal() {
    let (ok, output) = gateway::check_config();
    assert!(ok, "haproxy -dW -c rejected gateway/haproxy.cfg:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_document_describes_the_whole_api_and_every_operation_reaches_its_service() {
    let system = System::start().await;
    let gateway = system.start_gateway(&Settings::default()).await;
    let token = AuthClient::new(&gateway.base)
        .user(&email("gateway-"))
        .await;

    let merged = api(&gateway, None)
        .request(Method::GET, "/openapi.json")
        .send()
        .await;
    assert_eq!(merged.status, 200);
    assert!(merged.header("etag").is_some());
    assert_eq!(merged.header("cache-control"), Some("public, max-age=300"));
    let merged = merged.json();
    assert!(merged["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    assert_eq!(
        merged,
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(gateway::dir().join("openapi.json")).expect("openapi.json")
        )
        .expect("gateway/openapi.json is JSON"),
        "the gateway serves gateway/openapi.json"
    );

    // No path twice, even spelled with other parameter names.
    let mut shapes = BTreeMap::new();
    for path in merged["paths"].as_object().expect("paths").keys() {
        let shape: Vec<&str> = path
            .split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect();
        if let Some(other) = shapes.insert(shape.join("/"), path.clone()) {
            panic!("{path} and {other} are the same path");
        }
    }

    // The merged document is exactly the services' documents, without their
    // operator endpoints; each operation goes to the service that declares it.
    let mut owner = BTreeMap::new();
    for (backend, base) in [
        ("auth", &system.auth.base),
        ("command", &system.command.base),
        ("query", &system.query.base),
        ("notifier", &system.notifier.base),
    ] {
        let doc = AuthClient::new(base)
            .get("/openapi.json")
            .await
            .expect(StatusCode::OK, "a service's document");
        for op in tests::openapi_operations(&doc) {
            if !is_operational(&op.1) {
                assert!(
                    owner.insert(op.clone(), backend).is_none(),
                    "{op:?} is served by two services"
                );
            }
        }
    }
    let ops = tests::openapi_operations(&merged);
    assert_eq!(
        ops,
        owner.keys().cloned().collect::<BTreeSet<_>>(),
        "the gateway's document has every service operation and nothing else"
    );

    for (method, template) in &ops {
        let path: String = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    Uuid::new_v4().to_string()
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let request_id = format!("route-{}", Uuid::new_v4().simple());
        let mut call = api(&gateway, Some(&token))
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &path)
            .request_id(&request_id);
        if method != "GET" && method != "DELETE" {
            call = call.json(&json!({}));
        }
        let reply = call.send().await;
        assert!(
            !is_unrouted(&reply),
            "{method} {template} through the gateway is not served: {reply:?}"
        );
        let line = gateway.access_line(&request_id).await;
        assert_eq!(
            line["backend"],
            owner[&(method.clone(), template.clone())],
            "{method} {template} went to {line}"
        );
        assert_eq!(line["route"], template.as_str(), "{line}");
    }

    // The browsable docs, through the gateway, load its merged document.
    let docs = api(&gateway, None)
        .request(Method::GET, "/docs")
        .send()
        .await;
    assert_eq!(docs.status, 200);
    assert!(docs.text().contains("/openapi.json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_path_is_404_and_a_wrong_method_405_with_allow() {
    let system = System::start().await;
    let gateway = system.start_gateway(&Settings::default()).await;
    let anonymous = api(&gateway, None);

    for path in ["/nope", "/tasks/a/b/c", "/metrics", "/readyz", "/admin"] {
        let reply = anonymous.request(Method::GET, path).send().await;
        assert_eq!(reply.status, 404, "GET {path}: {reply:?}");
        assert_eq!(reply.content_type(), "application/problem+json");
        assert!(reply.problem_type().ends_with("/not-found"));
    }

    let task = format!("/tasks/{}", Uuid::new_v4());
    let reply = anonymous.request(Method::PUT, &task).send().await;
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.header("allow"), Some("GET, HEAD, PATCH, DELETE"));
    let reply = anonymous.request(Method::DELETE, "/tasks").send().await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, POST"));
    for path in [
        "/.well-known/jwks.json",
        "/openapi.json",
        "/docs",
        "/healthz",
    ] {
        let reply = anonymous.request(Method::POST, path).send().await;
        assert_eq!(reply.status, 405, "POST {path}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "POST {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_one_users_budget_meets_429_and_another_user_is_unaffected() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            user_reads_per_10s: 20,
            user_writes_per_10s: 5,
            ..Settings::default()
        })
        .await;
    let auth = AuthClient::new(&gateway.base);
    let alice = auth.user(&email("alice-")).await;
    let bob = auth.user(&email("bob-")).await;

    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..30 {
        let reply = api(&gateway, Some(&alice))
            .request(Method::GET, "/tasks")
            .send()
            .await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 {
            refused = Some(reply);
        }
    }
    // The window slides: a request may slip in where the burst crosses a
    // period boundary, never more.
    let admitted = statuses.iter().take_while(|s| **s == 200).count();
    assert!((20..=21).contains(&admitted), "{statuses:?}");
    assert!(
        statuses[admitted..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    let refused = refused.expect("a 429");
    assert_eq!(refused.content_type(), "application/problem+json");
    assert!(refused.problem_type().ends_with("/rate-limited"));
    assert_eq!(refused.header("retry-after"), Some("10"));
    assert_eq!(refused.header("ratelimit-limit"), Some("20"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    assert!(refused.header("ratelimit-reset").is_some());

    // Bob, from the same address, reads as usual.
    for _ in 0..10 {
        let reply = api(&gateway, Some(&bob))
            .request(Method::GET, "/tasks")
            .send()
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // Alice's writes have a budget of their own.
    let commands = CommandClient::new(&gateway.base, &alice);
    let mut writes = Vec::new();
    for i in 0..8 {
        writes.push(
            commands
                .create_task(&json!({ "title": format!("task {i}") }))
                .send()
                .await
                .status
                .as_u16(),
        );
    }
    let admitted = writes.iter().take_while(|s| **s == 201).count();
    assert!((5..=6).contains(&admitted), "{writes:?}");
    assert!(writes[admitted..].iter().all(|s| *s == 429), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_token_cannot_spend_another_users_budget() {
    let system = System::start().await;
    // The test's clients all connect from 127.0.0.1: trusting it lets each
    // request name its client address in X-Forwarded-For.
    let gateway = system
        .start_gateway(&Settings {
            user_reads_per_10s: 10,
            auth_failures_per_10s: 5,
            anonymous_per_10s: 100,
            trusted_proxies: vec!["127.0.0.1/32".into()],
            ..Settings::default()
        })
        .await;
    let auth = AuthClient::new(&gateway.base);
    let victim_email = email("victim-");
    let victim_id = id_of(&auth.registered(&victim_email).await);
    let victim = auth.access(&victim_email).await;
    let forger = Deployment {
        signing_key_path: signing_key_file(),
        ..system.deployment.clone()
    };
    let forged = forger.token_for(victim_id, events::Role::User);

    // On routes that check the token, the forgery is a 401 and spends the
    // forger's address's failure budget.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let reply = api(&gateway, Some(&forged))
            .request(Method::GET, "/tasks")
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await;
        statuses.push(reply.status.as_u16());
    }
    let refused = statuses.iter().take_while(|s| **s == 401).count();
    assert!((5..=6).contains(&refused), "{statuses:?}");
    assert!(
        statuses[refused..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // On routes that do not check it (the JWKS, the document, login), the
    // token names no one: those requests spend the address's own budget.
    for path in ["/.well-known/jwks.json", "/openapi.json"] {
        for _ in 0..15 {
            let reply = api(&gateway, Some(&forged))
                .request(Method::GET, path)
                .header("x-forwarded-for", "203.0.113.8")
                .send()
                .await;
            assert_eq!(reply.status, 200, "{path}: {reply:?}");
        }
    }
    for _ in 0..15 {
        api(&gateway, Some(&forged))
            .request(Method::POST, "/auth/login")
            .json(&json!({ "email": victim_email, "password": "not the password" }))
            .header("x-forwarded-for", "203.0.113.8")
            .send()
            .await;
    }
    assert!(
        gateway
            .access_log()
            .iter()
            .all(|line| line["user_id"] != victim_id.to_string()),
        "a forged token never names its user in the access log"
    );

    // The victim's whole budget is intact.
    for i in 0..10 {
        let reply = api(&gateway, Some(&victim))
            .request(Method::GET, "/tasks")
            .header("x-forwarded-for", "198.51.100.2")
            .send()
            .await;
        assert_eq!(reply.status, 200, "read {i}: {reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_x_forwarded_for_changes_neither_the_limit_nor_the_client_the_gateway_sees() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            anonymous_per_10s: 10,
            ..Settings::default()
        })
        .await;
    let anonymous = api(&gateway, None);
    let mut statuses = Vec::new();
    for i in 0..15 {
        let request_id = format!("spoof-{i}-{}", Uuid::new_v4().simple());
        let reply = anonymous
            .request(Method::GET, "/.well-known/jwks.json")
            .header("x-forwarded-for", &format!("192.0.2.{i}"))
            .header("forwarded", &format!("for=192.0.2.{i}"))
            .request_id(&request_id)
            .send()
            .await;
        statuses.push(reply.status.as_u16());
        let line = gateway.access_line(&request_id).await;
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    let admitted = statuses.iter().take_while(|s| **s == 200).count();
    assert!((10..=11).contains(&admitted), "{statuses:?}");
    assert!(
        statuses[admitted..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_budget() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            anonymous_per_10s: 3,
            trusted_proxies: vec!["127.0.0.1/32".into()],
            ..Settings::default()
        })
        .await;
    let anonymous = api(&gateway, None);
    for client in ["198.51.100.1", "198.51.100.2"] {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let reply = anonymous
                .request(Method::GET, "/.well-known/jwks.json")
                .header("x-forwarded-for", &format!("10.0.0.1, {client}"))
                .send()
                .await;
            statuses.push(reply.status.as_u16());
        }
        assert_eq!(statuses[..3], [200, 200, 200], "{client}: {statuses:?}");
        assert_eq!(statuses[4], 429, "{client}: {statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_made_up_token_on_a_route_that_does_not_check_it_spends_the_anonymous_budget() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            anonymous_per_10s: 3,
            ..Settings::default()
        })
        .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        // A new `sub` each time: were it a user's, each would have a budget.
        let token = system
            .deployment
            .token_for(Uuid::new_v4(), events::Role::User);
        let reply = api(&gateway, Some(&token))
            .request(Method::POST, "/auth/register")
            .json(&json!({ "email": email("junk-"), "password": "a long enough password" }))
            .send()
            .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses[..3], [201, 201, 201], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ipv6_client_is_limited_by_its_network_not_per_address() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            anonymous_per_10s: 4,
            trusted_proxies: vec!["127.0.0.1/32".into()],
            ..Settings::default()
        })
        .await;
    let anonymous = api(&gateway, None);
    let from = |client: String| {
        anonymous
            .request(Method::GET, "/.well-known/jwks.json")
            .header("x-forwarded-for", &client)
            .send()
    };
    // Eight addresses of one /64: one budget between them.
    let mut statuses = Vec::new();
    for i in 1..=8 {
        statuses.push(from(format!("2001:db8:1:2::{i:x}")).await.status.as_u16());
    }
    let admitted = statuses.iter().take_while(|s| **s == 200).count();
    assert!((4..=5).contains(&admitted), "{statuses:?}");
    assert!(
        statuses[admitted..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // Another /64 has its own.
    assert_eq!(from("2001:db8:1:3::1".into()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_id_is_the_same_in_the_answer_the_access_log_and_the_services_log() {
    let system = ProcessSystem::start().await;
    let gateway = Gateway::start(
        // This test sends nothing to the notifier, which runs in no process here.
        &Upstreams::from_bases([
            &system.auth.base,
            &system.command.base,
            &system.query.base,
            "http://127.0.0.1:9",
        ]),
        &Settings::default(),
    )
    .await;
    let token = AuthClient::new(&gateway.base).user(&email("ids-")).await;
    let commands = CommandClient::new(&gateway.base, &token);

    // Generated at the edge when the client sends none.
    let reply = commands
        .create_task(&json!({ "title": "traced" }))
        .send()
        .await;
    assert_eq!(reply.status, 201);
    let id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    Uuid::parse_str(&id).expect("a generated request id is a UUID");
    let line = gateway.access_line(&id).await;
    assert_eq!(line["status"], 201);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/tasks");
    assert_eq!(line["backend"], "command");
    assert!(line["bytes"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(line["ms"].is_number(), "{line}");
    let user = tests::clients::id_of(
        &AuthClient::new(&gateway.base)
            .me(&token)
            .send()
            .await
            .json(),
    );
    assert_eq!(line["user_id"], user.to_string(), "{line}");
    tests::eventually(
        "command-api's log line naming the request id",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(system.command.log_path()).unwrap_or_default();
            let id = id.clone();
            async move { log.contains(&id).then_some(()) }
        },
    )
    .await;

    // A client's own id is kept; a hostile one is replaced.
    let own = format!("client-{}", Uuid::new_v4().simple());
    let reply = QueryClient::new(&gateway.base, &token)
        .api()
        .request(Method::GET, "/tasks")
        .request_id(&own)
        .send()
        .await;
    assert_eq!(reply.header("x-request-id"), Some(own.as_str()));
    gateway.access_line(&own).await;
    let hostile = format!("{} \"quoted\"", "x".repeat(200));
    let reply = QueryClient::new(&gateway.base, &token)
        .api()
        .request(Method::GET, "/tasks")
        .request_id(&hostile)
        .send()
        .await;
    let replaced = reply.header("x-request-id").expect("x-request-id");
    assert_ne!(replaced, hostile);
    Uuid::parse_str(replaced).expect("a replaced request id is a UUID");
}

#[tokio::test(flavor = "multi_thread")]
async fn public_resources_are_cached_at_the_edge_and_per_user_answers_never_are() {
    let system = System::start().await;
    let gateway = system.start_gateway(&Settings::default()).await;
    let anonymous = api(&gateway, None);

    let mut servers = Vec::new();
    for _ in 0..3 {
        let id = format!("cache-{}", Uuid::new_v4().simple());
        let reply = anonymous
            .request(Method::GET, "/.well-known/jwks.json")
            .request_id(&id)
            .send()
            .await;
        assert_eq!(reply.status, 200);
        servers.push(gateway.access_line(&id).await["server"].clone());
    }
    assert_eq!(servers[0], "auth", "the first JWKS request reaches auth");
    assert_eq!(servers[1..], ["<CACHE>", "<CACHE>"], "{servers:?}");

    // A user's task: never from the cache, another user never sees it, and
    // the service's ETag/304 pass through unchanged.
    let auth = AuthClient::new(&gateway.base);
    let alice = auth.user(&email("alice-")).await;
    let bob = auth.user(&email("bob-")).await;
    let created = CommandClient::new(&gateway.base, &alice)
        .create_task(&json!({ "title": "mine" }))
        .send()
        .await;
    assert_eq!(created.status, 201);
    let task = id_of(&created.body);
    let path = format!("/tasks/{task}");
    let alice_reads = QueryClient::new(&gateway.base, &alice);
    let first = alice_reads
        .api()
        .request(Method::GET, &path)
        .consistency_token(created.consistency_token().expect("token"))
        .send()
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first
        .header("cache-control")
        .is_some_and(|c| c.contains("private")));
    let etag = first.etag().to_owned();
    for _ in 0..2 {
        let id = format!("user-{}", Uuid::new_v4().simple());
        let again = alice_reads
            .api()
            .request(Method::GET, &path)
            .if_none_match(&etag)
            .request_id(&id)
            .send()
            .await;
        assert_eq!(again.status, 304);
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        assert_eq!(gateway.access_line(&id).await["server"], "query");
    }
    let bobs = api(&gateway, Some(&bob))
        .request(Method::GET, &path)
        .send()
        .await;
    assert_eq!(bobs.status, 404, "{bobs:?}");
}

/// Reads from `stream` until the peer closes it or `within` passes; what
/// arrived.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_oversized_requests_are_cut_off_at_the_edge() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            request_timeout: Duration::from_secs(1),
            ..Settings::default()
        })
        .await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();

    // A head that never ends: 408 within the timeout, then closed. (Before
    // a whole head has arrived there is no request yet, and HAProxy 2.6
    // answers with its built-in page, not an errorfile.)
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /tasks HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body that never arrives: the same.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ti",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // A declared body over the limit: 413 before any of it is read.
    let mut big = tokio::net::TcpStream::connect(&addr).await.unwrap();
    big.write_all(
        b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut big, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // A body with no declared length: refused, nothing forwarded.
    let mut chunked = tokio::net::TcpStream::connect(&addr).await.unwrap();
    chunked
        .write_all(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    chunked.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 411");

    // Cleartext HTTP/2 is not spoken: its preface is a bad HTTP/1 request.
    let mut h2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut h2, Duration::from_secs(5)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // A very long method still makes one JSON access line.
    let method = "X".repeat(900);
    let id = format!("long-{}", Uuid::new_v4().simple());
    let mut long = tokio::net::TcpStream::connect(&addr).await.unwrap();
    long.write_all(
        format!("{method} /tasks HTTP/1.1\r\nHost: x\r\nX-Request-Id: {id}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    long.read_exact(&mut head).await.unwrap();
    let line = gateway.access_line(&id).await;
    assert_eq!(line["method"], "X".repeat(16), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_holds_at_most_its_share_of_connections() {
    let system = System::start().await;
    let gateway = system
        .start_gateway(&Settings {
            max_connections_per_ip: 4,
            ..Settings::default()
        })
        .await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();
    // Four connections are served; the fifth is closed at once. (The
    // readiness probe's connection may not be closed on HAProxy's side yet:
    // until it is, it holds one of the four, so a short first attempt
    // starts over.)
    let mut held = Vec::new();
    for attempt in 0..20 {
        held.clear();
        for _ in 0..4 {
            match served(&addr).await {
                Some(s) => held.push(s),
                None => break,
            }
        }
        if held.len() == 4 {
            break;
        }
        assert!(attempt < 19, "four connections from one address are served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused_at = std::time::Instant::now();
    // Refused: reset while connecting, or closed before an answer.
    if let Ok(mut fifth) = tokio::net::TcpStream::connect(&addr).await {
        let _ = fifth
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut fifth, Duration::from_secs(5)).await;
        assert!(
            answer.is_empty(),
            "the fifth connection was served: {answer}"
        );
    }
    assert!(
        refused_at.elapsed() < Duration::from_secs(2),
        "the fifth connection was closed at once, not left hanging"
    );
    drop(held);
}

/// A kept-alive connection the gateway has answered `GET /healthz` on.
async fn served(addr: &str) -> Option<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.ok()?;
    (&buf == b"HTTP/1.1 200").then_some(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_metrics_are_exposed_for_prometheus() {
    let system = System::start().await;
    let gateway = system.start_gateway(&Settings::default()).await;
    api(&gateway, None)
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await;
    let page = tests::metrics_page(&gateway.metrics_url)
        .await
        .expect("metrics page");
    let requests =
        tests::process::metric(&page, "haproxy_frontend_http_requests_total{proxy=\"api\"}")
            .expect("frontend request counter");
    assert!(requests >= 1.0, "{requests}");
    assert!(page.contains("haproxy_backend_http_responses_total{proxy=\"auth\",code=\"2xx\"}"));
}

/// The `GATEWAY_*` names in `text` that follow `prefix` (`${` or `env(`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| name.starts_with("GATEWAY_"))
        .collect()
}

#[test]
fn every_gateway_setting_has_a_default_is_documented_and_compose_sets_no_other() {
    let read = |path: &str| {
        std::fs::read_to_string(gateway::dir().join("..").join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let config = read("gateway/haproxy.cfg");
    let declared: BTreeSet<String> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("presetenv "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let used: BTreeSet<String> = names_after(&config, "${")
        .into_iter()
        .chain(names_after(&config, "env("))
        .collect();
    assert!(!declared.is_empty());
    assert_eq!(
        used, declared,
        "every setting the configuration reads has a default (presetenv), and every default is read"
    );

    let readme = read("README.md");
    let undocumented: Vec<&String> = declared
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "README.md's gateway table lacks {undocumented:?}"
    );

    // The compose file's gateway sets only settings the configuration reads.
    let compose = read("compose/docker-compose.yml");
    let gateway_section: String = compose
        .lines()
        .skip_while(|l| *l != "  gateway:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("   "))
        .collect::<Vec<_>>()
        .join("\n");
    let set: BTreeSet<String> = gateway_section
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.to_owned()))
        .filter(|k| k.starts_with("GATEWAY_"))
        .collect();
    assert!(!set.is_empty(), "compose configures the gateway");
    assert!(
        set.is_subset(&declared),
        "compose sets {:?}, which the gateway does not read",
        set.difference(&declared).collect::<Vec<_>>()
    );
}
