//! Hostile input at the HTTP edge of command-api and query-api, against the
//! real services and servers: values the stores cannot hold, unbounded
//! metric labels, slow and oversized requests, write floods, consistency
//! tokens of other users' streams, published secrets, and dependencies
//! that go away. Each test fails on a service without the limit it names.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::clients::{pointers, CommandClient, Reply};
use tests::faults::{url_addr, via, Relay};
use tests::{eventually, http, servers, unique, Deployment, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// [`problem`] for an answer a typed client already read.
fn problem_of(res: Reply) -> (StatusCode, Value) {
    assert_eq!(
        res.header("content-type"),
        Some("application/problem+json"),
        "status {}",
        res.status
    );
    (res.status, res.json())
}

fn host_port(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

async fn problem(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {status}"
    );
    (status, res.json().await.expect("problem body"))
}

/// Reads until the server closes the connection or `within` passes;
/// returns what arrived and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// ------------------------------------------------------------ instants

const UNSTORABLE: [&str; 4] = [
    "0000-01-01T00:00:00Z",
    "+10000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    // A leap second: the stores would count it as 10000-01-01.
    "9999-12-31T23:59:60Z",
];

#[tokio::test]
async fn instants_the_stores_cannot_hold_are_refused_at_the_edge() {
    let sys = tests::System::start().await;
    let user = Uuid::now_v7();
    let token = sys.deployment.token_for(user, events::Role::User);
    let client = http();

    let created = client
        .post(sys.command.url("/tasks"))
        .bearer_auth(&token)
        .json(&json!({ "title": "ok", "due_at": "9999-12-31T23:59:59Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "the last storable year is accepted");
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for due in UNSTORABLE {
        let res = client
            .post(sys.command.url("/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "title": "far", "due_at": due }))
            .send()
            .await
            .unwrap();
        let (status, body) = problem(res).await;
        assert_eq!(status, 422, "POST due_at {due}: {body}");
        assert_eq!(pointers(&body), ["/due_at"], "{body}");

        let res = client
            .patch(sys.command.url(&format!("/tasks/{id}")))
            .bearer_auth(&token)
            .json(&json!({ "due_at": due }))
            .send()
            .await
            .unwrap();
        let (status, body) = problem(res).await;
        assert_eq!(status, 422, "PATCH due_at {due}: {body}");
        assert_eq!(pointers(&body), ["/due_at"], "{body}");
    }

    // Query parameters: 400 naming the parameter, never 500.
    for param in [
        "due_before",
        "due_after",
        "created_before",
        "created_after",
        "updated_since",
    ] {
        for value in UNSTORABLE {
            let res = client
                .get(sys.query.url("/tasks"))
                .bearer_auth(&token)
                .query(&[(param, value)])
                .send()
                .await
                .unwrap();
            let (status, body) = problem(res).await;
            assert_eq!(status, 400, "{param}={value}: {body}");
            assert_eq!(pointers(&body), [param], "{body}");
        }
    }
    for (param, path) in [
        ("from", "/analytics/summary"),
        ("to", "/analytics/summary"),
        ("from", "/analytics/throughput"),
    ] {
        for value in UNSTORABLE {
            let res = client
                .get(sys.query.url(path))
                .bearer_auth(&token)
                .query(&[(param, value)])
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert_eq!(status, 400, "{path}?{param}={value}: {body}");
            assert!(
                pointers(&body).iter().any(|p| p == param),
                "{path}?{param}={value}: {body}"
            );
        }
    }

    // Nothing was changed by the refusals: the one task is as created.
    let task = eventually("the task to be projected", Duration::from_secs(20), || {
        let (client, url, token) = (&client, sys.query.url(&format!("/tasks/{id}")), &token);
        async move {
            let res = client.get(url).bearer_auth(token).send().await.ok()?;
            if res.status() == 200 {
                res.json::<Value>().await.ok()
            } else {
                None
            }
        }
    })
    .await;
    assert_eq!(task["version"], 1, "{task}");
    assert_eq!(task["due_at"], "9999-12-31T23:59:59Z", "{task}");
}

#[tokio::test]
async fn duplicate_keys_in_a_body_are_refused() {
    let dep = Deployment::fresh().await;
    let cmd = dep
        .spawn_command_api_with(dep.command_api_config(tests::NO_JWKS))
        .await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let res = http()
        .post(cmd.url("/tasks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"title": "shown", "title": "hidden"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(pointers(&body), ["/title"], "{body}");
}

#[tokio::test]
async fn invisible_and_control_characters_are_refused_in_titles_and_tags() {
    let dep = Deployment::fresh().await;
    let cmd = dep
        .spawn_command_api_with(dep.command_api_config(tests::NO_JWKS))
        .await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let client = http();
    let post = |body: Value| {
        client
            .post(cmd.url("/tasks"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    for title in [
        "pay\u{200B}roll",
        "invoice\u{202E}fdp.exe",
        "bell\u{0007}",
        "\u{3164}\u{3164}",
        " \u{2800} ",
        "\u{0301}",
    ] {
        let (status, body) = problem(post(json!({ "title": title })).await.unwrap()).await;
        assert_eq!(status, 422, "{title:?}: {body}");
        assert_eq!(pointers(&body), ["/title"], "{title:?}: {body}");
    }
    for tag in ["a\u{200D}", "\u{FEFF}", "\u{3164}", "new\nline"] {
        let (status, body) = problem(
            post(json!({ "title": "fine", "tags": ["ok", tag] }))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{tag:?}: {body}");
        assert_eq!(pointers(&body), ["/tags/1"], "{tag:?}: {body}");
    }
    let res = post(json!({ "title": "Überprüfung 👨\u{200D}👩\u{200D}👧", "tags": ["修复"] }))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

// -------------------------------------------------------------- metrics

#[tokio::test]
async fn metric_labels_come_from_fixed_sets_whatever_the_method() {
    let dep = Deployment::fresh().await;
    let cmd = dep
        .spawn_command_api_with(dep.command_api_config(tests::NO_JWKS))
        .await;
    let client = http();
    for i in 0..300 {
        let method = format!("X{}{i}", unique("M").to_uppercase());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let path = format!("/no/such/{}", unique("p"));
        let res = client.request(method, cmd.url(&path)).send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let after = client
        .get(cmd.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(after.contains(r#"route="unmatched""#), "{after}");
    assert!(!after.contains("/no/such/"), "paths never become labels");
    assert!(!after.contains("XM"), "method tokens never become labels");
    // 300 distinct methods and paths made a handful of request series at
    // most. Counted among the unmatched route's series only: the registry
    // is the test binary's, and tests running meanwhile add their routes'.
    let unmatched = |page: &str| {
        page.lines()
            .filter(|l| l.starts_with("http_requests_total{") && l.contains(r#"route="unmatched""#))
            .count()
    };
    assert!(
        unmatched(&after) <= 40,
        "the unmatched route has {} request series",
        unmatched(&after)
    );
}

// ------------------------------------------------- slow and large requests

/// Generous limits, for a test to tighten the one it exercises, so that
/// no other limit can be what closes the connection.
fn loose_limits() -> service::http::Limits {
    service::http::Limits {
        header_read_timeout: Duration::from_secs(20),
        body_read_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(30),
        max_connections: 1000,
        max_connections_per_ip: 1000,
        ..service::http::Limits::default()
    }
}

async fn command_api_with_limits(dep: &Deployment, http: service::http::Limits) -> Running {
    dep.spawn_command_api_with(command_api::Config {
        http,
        ..dep.command_api_config(tests::NO_JWKS)
    })
    .await
}

#[tokio::test]
async fn a_trickled_request_head_is_dropped_after_the_header_timeout() {
    let dep = Deployment::fresh().await;
    let limits = service::http::Limits {
        header_read_timeout: Duration::from_millis(800),
        ..loose_limits()
    };
    let cmd = command_api_with_limits(&dep, limits).await;
    let mut s = TcpStream::connect(host_port(&cmd.base)).await.unwrap();
    let started = Instant::now();
    // A byte every 200 ms: never idle, never a whole head.
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: example.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !closed {
        closed = read_until_closed(&mut s, Duration::from_secs(1)).await.1;
    }
    assert!(
        closed,
        "a head trickled for {:?} is still open",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let dep = Deployment::fresh().await;
    let limits = service::http::Limits {
        body_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        ..loose_limits()
    };
    let cmd = command_api_with_limits(&dep, limits).await;
    let mut s = TcpStream::connect(host_port(&cmd.base)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(closed, "an idle keep-alive connection stayed open for 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_times_out_with_408() {
    let dep = Deployment::fresh().await;
    let limits = service::http::Limits {
        body_read_timeout: Duration::from_millis(800),
        ..loose_limits()
    };
    let cmd = command_api_with_limits(&dep, limits).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let mut s = TcpStream::connect(host_port(&cmd.base)).await.unwrap();
    let head = format!(
        "POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"title\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Never finish the body.
    let started = Instant::now();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request-timeout"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_oversized_declared_length_is_413_before_any_body_is_read() {
    let dep = Deployment::fresh().await;
    let cmd = command_api_with_limits(&dep, loose_limits()).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let mut s = TcpStream::connect(host_port(&cmd.base)).await.unwrap();
    let head = format!(
        "POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 99999999999\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("an answer without waiting for the body")
        .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(!got.contains("100 Continue"), "{got}");
}

/// Opens `n` connections that each sent half a request head.
async fn hold_slow_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    held
}

/// A fresh connection is closed without an answer, at once.
async fn assert_refused(addr: &str, why: &str) {
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "{why}: {got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{why}: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_the_caps_are_refused_not_left_hanging() {
    let dep = Deployment::fresh().await;
    for (limits, why) in [
        (
            service::http::Limits {
                max_connections: 16,
                ..loose_limits()
            },
            "beyond the process's cap",
        ),
        (
            service::http::Limits {
                max_connections_per_ip: 16,
                ..loose_limits()
            },
            "beyond one address's cap",
        ),
    ] {
        let cmd = command_api_with_limits(&dep, limits).await;
        let addr = host_port(&cmd.base);
        let held = hold_slow_connections(&addr, 16).await;
        assert_refused(&addr, why).await;
        // Their slots free up as soon as the slow clients go.
        drop(held);
        let res = eventually("a slot to free up", Duration::from_secs(10), || async {
            http()
                .get(cmd.url("/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        assert_eq!(res.status(), 200);
    }
}

// ---------------------------------------------------------- write limits

#[tokio::test]
async fn writes_are_limited_per_user_with_429_and_retry_after() {
    let dep = Deployment::fresh().await;
    // One a minute after the burst: nothing refills while the test runs.
    let quota = service::rate_limit::Quota {
        per_minute: std::num::NonZeroU32::new(1).unwrap(),
        burst: std::num::NonZeroU32::new(5).unwrap(),
    };
    let cmd = dep
        .spawn_command_api_with(command_api::Config {
            write_quota: quota,
            ..dep.command_api_config(tests::NO_JWKS)
        })
        .await;
    let flooder = dep.token_for(Uuid::now_v7(), events::Role::User);
    let other = dep.token_for(Uuid::now_v7(), events::Role::User);
    let commands = CommandClient::new(&cmd.base, &flooder);
    let create = |token: &str| {
        commands
            .as_user(token)
            .create_task(&json!({ "title": "flood" }))
    };
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let res = create(&flooder).await;
        assert_eq!(res.status, 201);
        assert_eq!(res.headers["ratelimit-limit"], "5");
        remaining.push(
            res.headers["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let res = create(&flooder).await;
    let retry_after: u64 = res.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(res.headers["ratelimit-limit"], "5");
    assert_eq!(res.headers["ratelimit-remaining"], "0");
    let (status, body) = problem_of(res);
    assert_eq!(status, 429, "{body}");
    assert!(body["type"].as_str().unwrap().ends_with("/rate-limited"));

    // The refused write appended nothing; another user is not affected.
    let pool = events::store::connect_and_migrate(&dep.database_url, 2)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(create(&other).await.status, 201);
}

#[tokio::test]
async fn live_tasks_per_user_are_capped_and_a_delete_frees_a_slot() {
    let dep = Deployment::fresh().await;
    let cmd = dep
        .spawn_command_api_with(command_api::Config {
            max_live_tasks: std::num::NonZeroU32::new(3).unwrap(),
            ..dep.command_api_config(tests::NO_JWKS)
        })
        .await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let other = dep.token_for(Uuid::now_v7(), events::Role::User);
    let commands = CommandClient::new(&cmd.base, &token);
    let create = |token: &str, key: Option<&str>| {
        let mut call = commands
            .as_user(token)
            .create_task(&json!({ "title": "one more" }));
        if let Some(k) = key {
            call = call.idempotency_key(k);
        }
        call
    };
    let mut ids = Vec::new();
    for key in [None, Some("k-1"), None] {
        let res = create(&token, key).await;
        assert_eq!(res.status, 201);
        ids.push(res.json()["id"].as_str().unwrap().to_owned());
    }
    for key in [None, Some("k-2")] {
        let (status, body) = problem_of(create(&token, key).await);
        assert_eq!(status, 409, "{body}");
        assert!(
            body["type"].as_str().unwrap().ends_with("/live-task-limit"),
            "{body}"
        );
        assert_eq!(body["limit"], 3, "{body}");
    }
    assert_eq!(create(&other, None).await.status, 201);
    let res = commands.delete_task(&ids[0]).await;
    assert_eq!(res.status, 204);
    assert_eq!(create(&token, None).await.status, 201);
    assert_eq!(create(&token, None).await.status, 409);
    // Exactly the accepted creates are in the event store.
    let pool = events::store::connect_and_migrate(&dep.database_url, 2)
        .await
        .unwrap();
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'task.created'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, 5);
}

// ---------------------------------------------------- consistency tokens

#[tokio::test]
async fn a_consistency_token_of_another_users_stream_reveals_nothing_and_waits_for_nothing() {
    let sys = tests::System::start().await;
    let client = http();
    let alice = sys.deployment.token_for(Uuid::now_v7(), events::Role::User);
    let mallory = sys.deployment.token_for(Uuid::now_v7(), events::Role::User);
    let res = client
        .post(sys.command.url("/tasks"))
        .bearer_auth(&alice)
        .json(&json!({ "title": "private" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let token = res.headers()["x-consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let (stream, _) = token.split_once('.').unwrap();
    // A version of Alice's stream that does not exist yet, and a random one.
    let ahead = format!("{stream}.99");
    let random = format!("{}.1", Uuid::now_v7());

    let read = |bearer: &str, ct: &str, path: &str| {
        client
            .get(sys.query.url(path))
            .bearer_auth(bearer)
            .header("x-consistency-token", ct)
            .send()
    };
    let mut answers = Vec::new();
    for ct in [&token, &ahead, &random] {
        for path in ["/tasks", &format!("/tasks/{}", Uuid::now_v7())] {
            let started = Instant::now();
            let res = read(&mallory, ct, path).await.unwrap();
            // Well under the 2 s a waiting read would take.
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{ct} {path}: waited {:?}",
                started.elapsed()
            );
            let (status, body) = problem(res).await;
            assert_eq!(status, 400, "{ct} {path}: {body}");
            assert!(body.get("projected_version").is_none(), "{body}");
            answers.push(body);
        }
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every foreign or unknown token gets the same answer: {answers:?}"
    );
    // A version ahead of Alice's own stream is refused for Alice too, at once.
    let res = read(&alice, &ahead, "/tasks").await.unwrap();
    assert_eq!(res.status(), 400);
    // Her own token is honoured.
    let res = read(&alice, &token, "/tasks").await.unwrap();
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

// ------------------------------------------------------------ secrets

#[tokio::test]
async fn query_api_refuses_to_start_on_a_missing_or_published_cursor_secret() {
    let dep = Deployment::fresh().await;
    let run = |secret: Option<&str>, development: bool| {
        let mut cmd = std::process::Command::new(tests::binary("query-api"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("QUERY_API_LISTEN_ADDR", "127.0.0.1:0")
            .env("QUERY_API_DATABASE_URL", &dep.database_url)
            .env("QUERY_API_MONGODB_URL", &servers().mongodb_url)
            .env("QUERY_API_JWKS_URL", tests::NO_JWKS);
        if let Some(s) = secret {
            cmd.env("QUERY_API_CURSOR_SECRET", s);
        }
        if development {
            cmd.env("TASKSTREAM_DEVELOPMENT", "1");
        }
        cmd.output().expect("run query-api")
    };
    for (secret, why) in [
        (None, "is required"),
        (Some(query_api::config::DEV_CURSOR_SECRET), "published"),
        (Some("short"), "shorter than"),
    ] {
        let out = run(secret, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {secret:?}");
        assert!(
            stderr.contains("QUERY_API_CURSOR_SECRET") && stderr.contains(why),
            "{secret:?}: {stderr}"
        );
    }
    // In development mode the missing secret is not what stops it (the
    // JWKS address is unreachable on purpose, so it fails later).
    let out = run(None, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("QUERY_API_CURSOR_SECRET"), "{stderr}");
}

// ---------------------------------------------------- dependencies down

/// `request` answers 503 with `Retry-After` within a few seconds.
async fn expect_prompt_503(
    what: &str,
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) {
    let started = Instant::now();
    let res = request.await.unwrap();
    assert!(
        res.headers().contains_key("retry-after"),
        "{what}: {} {:?}",
        res.status(),
        res.headers()
    );
    let (status, body) = problem(res).await;
    assert_eq!(status, 503, "{what}: {body}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{what}: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_store_that_is_down_is_a_prompt_503_and_service_resumes_after() {
    let dep = Deployment::fresh().await;
    let pg = Relay::start(url_addr(&dep.database_url)).await;
    let mongo = Relay::start(url_addr(&servers().mongodb_url)).await;
    let cmd = dep
        .spawn_command_api_with(command_api::Config {
            postgres: service::config::PostgresSettings::new(via(&dep.database_url, pg.addr())),
            ..dep.command_api_config(tests::NO_JWKS)
        })
        .await;
    let query = dep
        .spawn_query_api_with(query_api::Config {
            // Direct: the driver must not discover the server's own address
            // and go around the relay.
            mongo: service::config::MongoSettings::new(
                format!(
                    "{}&directConnection=true",
                    via(&servers().mongodb_url, mongo.addr())
                ),
                dep.mongodb_database.clone(),
            ),
            ..dep.query_api_config(tests::NO_JWKS)
        })
        .await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let client = http();
    let create = || {
        client
            .post(cmd.url("/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "title": "t" }))
            .send()
    };
    let list = || client.get(query.url("/tasks")).bearer_auth(&token).send();
    assert_eq!(create().await.unwrap().status(), 201);
    assert_eq!(list().await.unwrap().status(), 200);

    pg.cut();
    mongo.cut();
    for _ in 0..3 {
        expect_prompt_503("write while Postgres is down", create()).await;
        expect_prompt_503("read while MongoDB is down", list()).await;
    }

    pg.restore().await;
    mongo.restore().await;
    eventually(
        "writes to succeed again",
        Duration::from_secs(20),
        || async { create().await.ok().filter(|r| r.status() == 201) },
    )
    .await;
    eventually(
        "reads to succeed again",
        Duration::from_secs(20),
        || async { list().await.ok().filter(|r| r.status() == 200) },
    )
    .await;
}
