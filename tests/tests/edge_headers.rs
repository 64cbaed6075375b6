//! What the services tell the gateway in front of them, and what they take
//! from it, against the real services: whose `X-Forwarded-For` counts as
//! the client's address, which answers a shared cache may keep
//! (`Cache-Control`, `Vary`), and which request ids are adopted and echoed.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tests::clients::{email, AuthClient, CommandClient, QueryClient, PASSWORD};
use tests::{http, Deployment, Running, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// auth with a login budget of two a minute per client address, trusting
/// `trusted_proxies` (a `AUTH_TRUSTED_PROXIES` value).
async fn auth_trusting(trusted_proxies: &str) -> (Running, AuthClient) {
    let deployment = Deployment::fresh().await;
    let mut config = deployment.auth_config();
    config.rate_limit_per_minute = NonZeroU32::new(2).expect("2");
    config.http.trusted_proxies = trusted_proxies.parse().expect("trusted proxies");
    let app = auth::Application::build(config).await.expect("auth starts");
    let stop = CancellationToken::new();
    let running = Running {
        base: format!("http://127.0.0.1:{}", app.port()),
        handle: tokio::spawn(app.run_until_stopped(stop.clone())),
        stop,
    };
    let client = AuthClient::new(&running.base);
    (running, client)
}

/// A login for an unknown account sent with `X-Forwarded-For: forwarded`
/// (none when empty): 401 while its client's budget lasts, then 429.
async fn login_from(auth: &AuthClient, forwarded: &str) -> StatusCode {
    let mut call = auth.login(&email("nobody-"), PASSWORD);
    if !forwarded.is_empty() {
        call = call.header("x-forwarded-for", forwarded);
    }
    let res = call.await;
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&res.status),
        "X-Forwarded-For {forwarded:?}: {res:?}"
    );
    res.status
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_change_the_login_budget() {
    let (_running, auth) = auth_trusting("").await;
    // Every value names another client; all are this peer's, one budget.
    let got = [
        login_from(&auth, "203.0.113.1").await,
        login_from(&auth, "203.0.113.2").await,
        login_from(&auth, "203.0.113.3").await,
        login_from(&auth, "").await,
    ];
    assert_eq!(
        got,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_gives_each_client_its_own_login_budget() {
    let (_running, auth) = auth_trusting("127.0.0.1/32").await;
    let a = "203.0.113.1";
    let b = "2001:db8::b";
    for (forwarded, expected, why) in [
        (a, StatusCode::UNAUTHORIZED, "a's first"),
        (a, StatusCode::UNAUTHORIZED, "a's second"),
        (a, StatusCode::TOO_MANY_REQUESTS, "a's third"),
        (b, StatusCode::UNAUTHORIZED, "b's first: its own budget"),
        (
            "203.0.113.1, 198.51.100.7",
            StatusCode::UNAUTHORIZED,
            "the rightmost value counts, not what the client put left of it",
        ),
        (
            "198.51.100.7, 203.0.113.1",
            StatusCode::TOO_MANY_REQUESTS,
            "a again, behind a made-up address",
        ),
        (b, StatusCode::UNAUTHORIZED, "b's second"),
        (b, StatusCode::TOO_MANY_REQUESTS, "b's third"),
        ("", StatusCode::UNAUTHORIZED, "no header: the proxy's own"),
        (
            "not-an-address",
            StatusCode::UNAUTHORIZED,
            "unparsable: the proxy's own",
        ),
        (
            "203.0.113.99:4711",
            StatusCode::TOO_MANY_REQUESTS,
            "with a port, unparsable: the proxy's own, spent",
        ),
    ] {
        assert_eq!(login_from(&auth, forwarded).await, expected, "{why}");
    }
}

/// Opens `n` connections that each send half a request head and wait.
async fn hold_slow_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("half a head");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    held
}

/// What one more connection gets for `GET /healthz`: its answer's status
/// line, or `None` when it is closed without one.
async fn one_more(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("neither answered nor closed after {:?}", started.elapsed()),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn a_trusted_proxy_is_spared_the_per_address_connection_cap_but_not_the_total() {
    let dep = Deployment::fresh().await;
    let limits = |max_connections| service::http::Limits {
        header_read_timeout: Duration::from_secs(20),
        max_connections,
        max_connections_per_ip: 4,
        trusted_proxies: "127.0.0.1/32".parse().expect("trusted proxies"),
        ..service::http::Limits::default()
    };
    // command-api with at most `total` connections, and the address of it.
    let dep = &dep;
    let spawn = |total: usize| async move {
        let cmd = dep
            .spawn_command_api_with(command_api::Config {
                http: limits(total),
                ..dep.command_api_config(tests::NO_JWKS)
            })
            .await;
        let addr = cmd.base.trim_start_matches("http://").to_owned();
        (cmd, addr)
    };
    let (cmd, addr) = spawn(32).await;
    let held = hold_slow_connections(&addr, 8).await;
    assert_eq!(
        one_more(&addr).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "the proxy's ninth connection, over the per-address cap of 4"
    );
    drop(held);
    drop(cmd);

    let (_cmd, addr) = spawn(8).await;
    let _held = hold_slow_connections(&addr, 8).await;
    assert_eq!(
        one_more(&addr).await,
        None,
        "the proxy's ninth connection, over the total of 8"
    );
}

/// The `name` header of `res`, or "" when absent.
fn header<'a>(res: &'a tests::clients::Reply, name: &str) -> &'a str {
    res.header(name).unwrap_or("")
}

#[tokio::test]
async fn every_answer_says_whether_and_by_whom_it_may_be_cached() {
    let sys = System::start().await;
    let auth = AuthClient::new(&sys.auth.base);
    let token = auth.user(&email("cache-")).await;
    let commands = CommandClient::new(&sys.command.base, &token);
    let (id, created) = commands.created(&json!({ "title": "cache me" })).await;
    assert_eq!(header(&created, "cache-control"), "private, no-cache");
    assert_eq!(header(&created, "vary"), "Authorization");
    let consistency = created
        .consistency_token()
        .expect("consistency token")
        .to_owned();

    // A task read with a token: only the caller's cache, revalidated.
    let queries = QueryClient::new(&sys.query.base, &token);
    let read = queries.get_task(id).consistency_token(&consistency).await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(header(&read, "cache-control"), "private, no-cache");
    assert_eq!(header(&read, "vary"), "Authorization");
    let etag = read.etag().to_owned();
    assert!(!etag.is_empty(), "{read:?}");
    // Revalidated: 304 with the same ETag and the same caching headers.
    let again = queries.get_task(id).if_none_match(&etag).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{again:?}");
    assert_eq!(again.etag(), etag);
    assert_eq!(header(&again, "cache-control"), "private, no-cache");
    assert_eq!(header(&again, "vary"), "Authorization");

    // Public documents: any cache, five minutes.
    let jwks = auth.jwks().await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(header(&jwks, "cache-control"), "public, max-age=300");
    for base in [&sys.auth.base, &sys.command.base, &sys.query.base] {
        for path in ["/openapi.json", "/docs"] {
            let res = http()
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect(path);
            assert_eq!(res.status(), StatusCode::OK, "{base}{path}");
            assert_eq!(
                res.headers()
                    .get("cache-control")
                    .and_then(|v| v.to_str().ok()),
                Some("public, max-age=300"),
                "{base}{path}"
            );
        }
    }

    // Without a token: nothing keeps errors or operational answers.
    let anonymous = queries
        .api()
        .request(reqwest::Method::GET, "/no-such-route");
    let missing = anonymous.token(None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");
    assert_eq!(header(&missing, "cache-control"), "no-store");
    assert_eq!(missing.header("vary"), None);
    let unauthorized = queries.get_task(id).token(None).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&unauthorized, "cache-control"), "no-store");
    let health = http()
        .get(sys.query.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.headers()["cache-control"], "no-store");

    // Tokens: still no-store, with a token or without.
    let login = auth.login(&email("nobody-"), PASSWORD).await;
    assert_eq!(header(&login, "cache-control"), "no-store");
}

#[tokio::test]
async fn a_well_formed_request_id_is_echoed_and_any_other_replaced() {
    let sys = System::start().await;
    let valid = format!("gw-{}:0001_a.B", Uuid::new_v4().simple());
    let hostile = [
        "has spaces in it".to_owned(),
        "x".repeat(300),
        "x".repeat(129),
        "quote\"and{json}".to_owned(),
        String::new(),
    ];
    for base in [&sys.auth.base, &sys.command.base, &sys.query.base] {
        let sent_back = |res: &reqwest::Response| {
            res.headers()
                .get_all("x-request-id")
                .iter()
                .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
                .collect::<Vec<_>>()
        };
        let res = http()
            .get(format!("{base}/healthz"))
            .header("x-request-id", &valid)
            .send()
            .await
            .expect("healthz");
        assert_eq!(sent_back(&res), std::slice::from_ref(&valid), "{base}");

        for id in &hostile {
            let res = http()
                .get(format!("{base}/healthz"))
                .header("x-request-id", id)
                .send()
                .await
                .expect("healthz");
            let got = sent_back(&res);
            assert_eq!(got.len(), 1, "{base}, sent {id:?}: {got:?}");
            assert!(
                Uuid::try_parse(&got[0]).is_ok(),
                "{base}, sent {id:?}: got {got:?}, expected a fresh UUID"
            );
        }

        // Two ids: neither is taken.
        let res = http()
            .get(format!("{base}/healthz"))
            .header("x-request-id", &valid)
            .header("x-request-id", "second")
            .send()
            .await
            .expect("healthz");
        let got = sent_back(&res);
        assert!(
            got.len() == 1 && Uuid::try_parse(&got[0]).is_ok(),
            "{base}: two ids sent, got {got:?}"
        );

        // None: a fresh one.
        let res = http()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        let got = sent_back(&res);
        assert!(
            got.len() == 1 && Uuid::try_parse(&got[0]).is_ok(),
            "{base}: none sent, got {got:?}"
        );
    }
}
