//! Hardening of auth (issue 11): the operator makes the first admin, the
//! last admin stays, admins list accounts; token responses are not cached
//! and the token verifier refuses `nbf` in the future, `crit`, `iat` in the
//! future and over-long lifetimes; the login limiter's memory is bounded;
//! emails and names are Unicode-clean. Real services, real Postgres and
//! Kafka; assertions on what a client (or an operator) sees.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::clients::{
    email, id_of, pointers, AuthApp as Auth, AuthClient, CommandClient, Reply, PASSWORD,
};
use tests::process::{service_env, Service};
use tests::{eventually, unique, Deployment};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

// ----------------------------------------------------------------- helpers

/// Runs the real `auth` binary with `args`, `stdin` on its standard input,
/// against the deployment's database; returns (success, stdout, stderr).
async fn auth_cli(
    d: &Deployment,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(tests::binary("auth"));
    cmd.args(args)
        .env("AUTH_DATABASE_URL", &d.database_url)
        .env_remove("AUTH_ADMIN_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the auth binary");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`auth {}` did not exit within 60 s", args.join(" ")))
        .expect("auth output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------- 9: admin lifecycle

#[tokio::test]
async fn the_first_admin_is_made_by_the_operator_on_the_command_line_never_by_registering() {
    let auth = Auth::start().await;
    let d = &auth.deployment;

    // Registration never yields an admin, not even the very first account.
    let first = auth.registered(&email("first-")).await;
    assert_eq!(first["role"], "user", "{first}");

    // `auth create-admin` with the password on standard input.
    let boss = email("Boss-");
    let (ok, out, err) = auth_cli(
        d,
        &["create-admin", "--email", &boss],
        &format!("{PASSWORD}\n"),
        &[],
    )
    .await;
    assert!(ok, "create-admin failed: {err}");
    let made: Value = serde_json::from_str(out.trim()).expect("create-admin prints the account");
    assert_eq!(made["role"], "admin", "{made}");
    assert_eq!(made["email"], boss.to_lowercase(), "{made}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    let token = auth.access(&boss).await;
    let me = auth.me(&token).await.expect(StatusCode::OK, "admin me");
    assert_eq!(me["role"], "admin");
    // The new admin can administer.
    auth.list_users(&token, "")
        .await
        .expect(StatusCode::OK, "admin lists users");

    // The same address again: refused, pointing at `promote`; nothing changes.
    let (ok, _, err) = auth_cli(
        d,
        &["create-admin", "--email", &boss],
        &format!("{PASSWORD}\n"),
        &[],
    )
    .await;
    assert!(!ok && err.contains("promote"), "{err}");
    // A weak password is refused like at registration.
    let (ok, _, err) = auth_cli(
        d,
        &["create-admin", "--email", &email("weak-")],
        "short\n",
        &[],
    )
    .await;
    assert!(!ok && err.contains("password"), "{err}");
    // The password may come from AUTH_ADMIN_PASSWORD instead.
    let second = email("second-");
    let (ok, _, err) = auth_cli(
        d,
        &["create-admin", "--email", &second],
        "",
        &[("AUTH_ADMIN_PASSWORD", PASSWORD)],
    )
    .await;
    assert!(ok, "{err}");
    auth.access(&second).await;

    // `auth promote` makes an existing account admin.
    let plain = email("plain-");
    auth.registered(&plain).await;
    let me = auth
        .me(&auth.access(&plain).await)
        .await
        .expect(StatusCode::OK, "me");
    assert_eq!(me["role"], "user");
    let (ok, out, err) = auth_cli(d, &["promote", "--email", &plain], "", &[]).await;
    assert!(ok, "promote failed: {err}");
    assert!(out.contains("\"admin\""), "{out}");
    let me = auth
        .me(&auth.access(&plain).await)
        .await
        .expect(StatusCode::OK, "me");
    assert_eq!(me["role"], "admin");
    let (ok, _, err) = auth_cli(d, &["promote", "--email", &email("nobody-")], "", &[]).await;
    assert!(!ok && err.contains("no account"), "{err}");
}

#[tokio::test]
async fn the_last_active_admin_can_neither_demote_nor_deactivate_themselves() {
    let auth = Auth::start().await;
    let (boss, boss_token) = auth.admin_access().await;

    let res = auth.set_role(&boss_token, boss, "user").await;
    let p = res.expect_problem(StatusCode::CONFLICT, "last admin demotes self");
    assert!(
        p["type"].as_str().unwrap_or("").ends_with("/last-admin"),
        "{p}"
    );
    let res = auth
        .request(
            Method::POST,
            &format!("/admin/users/{boss}/deactivate"),
            &boss_token,
        )
        .await;
    res.expect_problem(StatusCode::CONFLICT, "last admin deactivates self");
    let me = auth
        .me(&boss_token)
        .await
        .expect(StatusCode::OK, "still admin");
    assert_eq!(me["role"], "admin");

    // With a second admin, the first may step down; then the second is the last.
    let deputy_email = email("deputy-");
    let deputy = id_of(&auth.registered(&deputy_email).await);
    auth.set_role(&boss_token, deputy, "admin")
        .await
        .expect(StatusCode::OK, "promote deputy");
    let deputy_token = auth.access(&deputy_email).await;
    let stepped_down = auth
        .set_role(&boss_token, boss, "user")
        .await
        .expect(StatusCode::OK, "boss steps down");
    assert_eq!(stepped_down["role"], "user");
    auth.set_role(&deputy_token, deputy, "user")
        .await
        .expect_problem(StatusCode::CONFLICT, "deputy is the last admin now");

    // Two admins demoting each other at the same moment: never both.
    auth.set_role(&deputy_token, boss, "admin")
        .await
        .expect(StatusCode::OK, "boss back");
    let role_of = |token: String| {
        let auth = &auth;
        async move {
            let me = auth.me(&token).await.expect(StatusCode::OK, "me");
            me["role"].as_str().expect("role").to_owned()
        }
    };
    for round in 0..5 {
        let (a, b) = tokio::join!(
            auth.set_role(&boss_token, deputy, "user"),
            auth.set_role(&deputy_token, boss, "user"),
        );
        let statuses = [a.status.as_u16(), b.status.as_u16()];
        assert!(
            statuses.iter().all(|s| [200, 403, 409].contains(s)) && statuses != [200, 200],
            "round {round}: {statuses:?}"
        );
        let boss_role = role_of(boss_token.clone()).await;
        let deputy_role = role_of(deputy_token.clone()).await;
        let (survivor_token, other) = match (boss_role.as_str(), deputy_role.as_str()) {
            ("admin", "admin") => continue,
            ("admin", _) => (&boss_token, deputy),
            (_, "admin") => (&deputy_token, boss),
            _ => panic!("round {round}: no admin left ({statuses:?})"),
        };
        auth.set_role(survivor_token, other, "admin")
            .await
            .expect(StatusCode::OK, "restore");
    }
}

#[tokio::test]
async fn admins_list_accounts_in_keyset_pages_filtered_by_email_prefix_role_and_active() {
    let auth = Auth::start().await;
    let (boss, token) = auth.admin_access().await;
    let tag = unique("").chars().take(8).collect::<String>();
    let mut alpha = Vec::new();
    for i in 0..7 {
        alpha.push(id_of(
            &auth
                .registered(&format!("alpha{tag}-{i}@example.test"))
                .await,
        ));
    }
    let mut beta = Vec::new();
    for i in 0..3 {
        beta.push(id_of(
            &auth
                .registered(&format!("beta{tag}-{i}@example.test"))
                .await,
        ));
    }
    for id in &alpha[1..3] {
        auth.request(
            Method::POST,
            &format!("/admin/users/{id}/deactivate"),
            &token,
        )
        .await
        .expect(StatusCode::OK, "deactivate");
    }
    auth.set_role(&token, beta[0], "admin")
        .await
        .expect(StatusCode::OK, "promote");

    // Pages of 3 over the alpha accounts (prefix in any letter case): every
    // account once, in registration order, and the last page says so.
    let mut seen = Vec::new();
    let mut query = format!("?email_prefix=ALPHA{tag}&limit=3");
    let mut pages = 0;
    loop {
        let page = auth
            .list_users(&token, &query)
            .await
            .expect(StatusCode::OK, &query);
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3, "{page}");
        seen.extend(items.iter().map(id_of));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?email_prefix=alpha{tag}&limit=3&cursor={c}"),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, alpha, "every alpha account once, oldest first");
    assert_eq!(pages, 3);

    let ids = |page: &Value| -> Vec<Uuid> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(id_of)
            .collect()
    };
    let page = auth
        .list_users(&token, &format!("?email_prefix=alpha{tag}&active=false"))
        .await
        .expect(StatusCode::OK, "inactive");
    assert_eq!(ids(&page), alpha[1..3].to_vec());
    assert_eq!(page["items"][0]["active"], false, "{page}");
    let page = auth
        .list_users(&token, &format!("?email_prefix=alpha{tag}&active=true"))
        .await
        .expect(StatusCode::OK, "active");
    assert_eq!(ids(&page).len(), 5);
    let page = auth
        .list_users(&token, "?role=admin")
        .await
        .expect(StatusCode::OK, "admins");
    assert_eq!(ids(&page), vec![boss, beta[0]]);
    let page = auth
        .list_users(&token, &format!("?email_prefix=beta{tag}&role=user"))
        .await
        .expect(StatusCode::OK, "beta users");
    assert_eq!(ids(&page), beta[1..].to_vec());
    for field in ["id", "email", "display_name", "role", "active"] {
        assert!(page["items"][0].get(field).is_some(), "{field}: {page}");
    }
    assert!(page["items"][0].get("password_hash").is_none());

    // Bad parameters: 400 naming each.
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?role=root", "role"),
        ("?active=yes", "active"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?sort=email", "sort"),
        ("?role=user&role=admin", "role"),
        ("?email_prefix=", "email_prefix"),
    ] {
        let p = auth
            .list_users(&token, query)
            .await
            .expect_problem(StatusCode::BAD_REQUEST, query);
        assert_eq!(pointers(&p), vec![param.to_owned()], "{query}: {p}");
    }

    // Only admins.
    let user_email = email("nosy-");
    auth.registered(&user_email).await;
    let user_token = auth.access(&user_email).await;
    auth.list_users(&user_token, "")
        .await
        .expect_problem(StatusCode::FORBIDDEN, "non-admin lists");
    let res = auth.get("/admin/users").await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "anonymous lists");
}

#[tokio::test]
async fn an_admin_reactivates_a_deactivated_account_and_user_reactivated_is_published() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;

    let auth = Auth::start().await;
    let (boss, token) = auth.admin_access().await;
    let email = email("again-");
    let id = id_of(&auth.registered(&email).await);
    let old = auth.logged_in(&email).await;
    let reactivate = format!("/admin/users/{id}/reactivate");

    let account = auth
        .request(
            Method::POST,
            &format!("/admin/users/{id}/deactivate"),
            &token,
        )
        .await
        .expect(StatusCode::OK, "deactivate");
    assert_eq!(account["active"], false);
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "deactivated login");

    // Only admins reactivate; unknown ids are 404.
    let user_email = self::email("nosy-");
    auth.registered(&user_email).await;
    let user_token = auth.access(&user_email).await;
    auth.request(Method::POST, &reactivate, &user_token)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "non-admin reactivates");
    auth.request(
        Method::POST,
        &format!("/admin/users/{}/reactivate", Uuid::now_v7()),
        &token,
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, "unknown id");

    let account = auth
        .request(Method::POST, &reactivate, &token)
        .await
        .expect(StatusCode::OK, "reactivate");
    assert_eq!(account["active"], true, "{account}");
    // Again: nothing changes, nothing is emitted.
    auth.request(Method::POST, &reactivate, &token)
        .await
        .expect(StatusCode::OK, "reactivate twice");
    // They log in again; the refresh token from before stays revoked.
    let fresh = auth.logged_in(&email).await;
    auth.me(fresh["access_token"].as_str().expect("token"))
        .await
        .expect(StatusCode::OK, "me after reactivation");
    let res = auth
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": old["refresh_token"] }),
        )
        .await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "old refresh token");
    let page = auth
        .list_users(&token, "?active=false")
        .await
        .expect(StatusCode::OK, "inactive");
    assert_eq!(page["items"], json!([]), "{page}");

    // The log: registered, deactivated, reactivated (once), by the admin.
    let topic = format!("{}user-events", auth.deployment.topic_prefix);
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &tests::servers().kafka_brokers)
        .set("group.id", unique("hardening-auth-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 3 events for {id}", seen.len()))
            .expect("kafka message");
        let envelope: Value =
            serde_json::from_slice(msg.payload().unwrap_or_default()).expect("envelope");
        if envelope["stream_id"] == id.to_string() {
            seen.push(envelope);
        }
    }
    let types: Vec<&str> = seen
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        ["user.registered", "user.deactivated", "user.reactivated"]
    );
    assert_eq!(seen[2]["version"], 3);
    assert_eq!(seen[2]["actor"], boss.to_string());
    assert_eq!(seen[2]["data"], json!({}));
    // Nothing after it (the second reactivation emitted nothing).
    let more = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let msg = consumer.recv().await.expect("kafka message");
            let envelope: Value =
                serde_json::from_slice(msg.payload().unwrap_or_default()).expect("envelope");
            if envelope["stream_id"] == id.to_string() {
                return envelope;
            }
        }
    })
    .await;
    assert!(more.is_err(), "an extra event: {more:?}");
}

// ------------------------------------------------- 7: tokens and their checks

#[tokio::test]
async fn token_responses_forbid_caching() {
    let auth = Auth::start().await;
    let email = email("cache-");
    auth.registered(&email).await;
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await;
    let headers = res.headers.clone();
    let body = res.expect(StatusCode::OK, "login");
    assert_eq!(headers["cache-control"], "no-store", "login");
    assert_eq!(headers["pragma"], "no-cache", "login");
    let res = auth
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": body["refresh_token"] }),
        )
        .await;
    let headers = res.headers.clone();
    res.expect(StatusCode::OK, "refresh");
    assert_eq!(headers["cache-control"], "no-store", "refresh");
    assert_eq!(headers["pragma"], "no-cache", "refresh");
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// Signs `claims` with the deployment's key (as auth would), with
/// `extra_header` fields added to the protected header.
fn mint(d: &Deployment, extra_header: Value, claims: &Value) -> String {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use ed25519_dalek::Signer;
    let pem = std::fs::read_to_string(&d.signing_key_path).expect("key file");
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("Ed25519 key");
    let kid = auth::keys::SigningKeys::from_pem(&pem).expect("keys").kid;
    let mut header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
    if let (Some(h), Some(extra)) = (header.as_object_mut(), extra_header.as_object()) {
        h.extend(extra.clone());
    }
    let input = format!("{}.{}", b64(&header), b64(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[tokio::test]
async fn the_verifier_refuses_future_nbf_crit_future_iat_and_overlong_lifetimes() {
    let auth = Auth::start().await;
    let d = &auth.deployment;
    let commands = d.spawn_command_api(&auth.running).await;
    let email = email("claims-");
    let user = auth.registered(&email).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64| {
        json!({
            "sub": user["id"], "email": user["email"], "role": "user",
            "iss": access::DEFAULT_ISSUER, "aud": access::DEFAULT_AUDIENCE,
            "iat": iat, "exp": exp, "jti": Uuid::now_v7(),
        })
    };
    let with = |mut c: Value, key: &str, v: Value| {
        c[key] = v;
        c
    };
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "a token like auth's",
            mint(d, json!({}), &claims(now, now + 900)),
            true,
        ),
        (
            "nbf passed",
            mint(
                d,
                json!({}),
                &with(claims(now, now + 900), "nbf", json!(now - 5)),
            ),
            true,
        ),
        (
            "nbf in ten minutes",
            mint(
                d,
                json!({}),
                &with(claims(now, now + 900), "nbf", json!(now + 600)),
            ),
            false,
        ),
        (
            "crit naming a claim",
            mint(d, json!({ "crit": ["exp"] }), &claims(now, now + 900)),
            false,
        ),
        (
            "crit with an extension",
            mint(
                d,
                json!({ "crit": ["b64"], "b64": true }),
                &claims(now, now + 900),
            ),
            false,
        ),
        (
            "iat within the leeway",
            mint(d, json!({}), &claims(now + 10, now + 900)),
            true,
        ),
        (
            "iat in ten minutes",
            mint(d, json!({}), &claims(now + 600, now + 900)),
            false,
        ),
        (
            "a day's lifetime",
            mint(d, json!({}), &claims(now - 60, now + 86_400)),
            false,
        ),
        (
            "16 minutes' lifetime",
            mint(d, json!({}), &claims(now, now + 960)),
            false,
        ),
    ];
    for (what, token, accepted) in cases {
        let at_auth = auth.me(&token).await;
        let at_commands = CommandClient::new(&commands.base, &token)
            .create_task(&json!({ "title": format!("task with {what}") }))
            .await;
        if accepted {
            at_auth.expect(StatusCode::OK, &format!("auth: {what}"));
            at_commands.expect(StatusCode::CREATED, &format!("command-api: {what}"));
        } else {
            for (service, res) in [("auth", at_auth), ("command-api", at_commands)] {
                let challenge = res
                    .headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                res.expect_problem(StatusCode::UNAUTHORIZED, &format!("{service}: {what}"));
                assert!(
                    challenge.is_some_and(|c| c.starts_with("Bearer")),
                    "{service}: {what}: Bearer challenge"
                );
            }
        }
    }
}

// ------------------------------------------------- 6: bounded limiter memory

/// auth as its own process (its own `/metrics`), with the given limits.
async fn auth_process(d: &Deployment, per_email: u32, capacity: usize) -> Service {
    let base = d.auth_config();
    Service::start_ready("auth", |port| {
        service_env(&auth::Config {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            rate_limit_per_minute: NonZeroU32::MAX,
            rate_limit_per_email_per_minute: NonZeroU32::new(per_email).expect("limit"),
            rate_limit_capacity: NonZeroUsize::new(capacity).expect("capacity"),
            ..base.clone()
        })
    })
    .await
}

async fn email_keys(auth: &Service) -> Option<f64> {
    tests::metric_at(
        &auth.url("/metrics"),
        "auth_rate_limit_keys{limiter=\"email\"}",
    )
    .await
}

async fn attempt(auth: &Service, path: &str, email: &str, password: &str) -> Reply {
    AuthClient::new(&auth.url(""))
        .post(path, &json!({ "email": email, "password": password }))
        .await
}

#[tokio::test]
async fn the_per_email_limiter_holds_a_bounded_number_of_fixed_size_keys() {
    let d = Deployment::fresh().await;
    let auth = auth_process(&d, 3, 20).await;

    // An email no account can have is refused before it is counted or hashed.
    let huge = format!("{}@example.test", "a".repeat(60 * 1024));
    for path in ["/auth/login", "/auth/register"] {
        let p = attempt(&auth, path, &huge, PASSWORD).await.expect_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("{path} with a 60 KiB email"),
        );
        assert!(pointers(&p).contains(&"/email".to_owned()), "{p}");
    }

    // One account under attack: its budget of 3 is spent.
    let target = email("target-");
    for _ in 0..3 {
        let res = attempt(&auth, "/auth/login", &target, "wrong password!").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = attempt(&auth, "/auth/login", &target, "wrong password!").await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);

    // A spray of 200 distinct addresses (registrations with a too-short
    // password: counted, never hashed) fills the limiter to its capacity
    // of 20 and no further, and never evicts the account under attack.
    for i in 0..200 {
        let res = attempt(
            &auth,
            "/auth/register",
            &format!("spray-{i}-{}@example.test", unique("")),
            "short",
        )
        .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "spray {i}");
    }
    let held = eventually("the email-key gauge", Duration::from_secs(10), || async {
        email_keys(&auth).await.filter(|n| *n > 0.0)
    })
    .await;
    assert!(held <= 20.0, "{held} email keys held, capacity 20");
    let res = attempt(
        &auth,
        "/auth/login",
        &target.to_uppercase(),
        "wrong password!",
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the attacked account is still limited"
    );
}

#[tokio::test]
async fn limiter_keys_are_forgotten_on_a_timer_once_their_budget_is_whole() {
    let d = Deployment::fresh().await;
    // 6 a minute: one attempt's key lives 10 s.
    let auth = auth_process(&d, 6, 1_000).await;
    for i in 0..15 {
        let res = attempt(
            &auth,
            "/auth/register",
            &format!("age-{i}-{}@example.test", unique("")),
            "short",
        )
        .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    eventually("15 email keys held", Duration::from_secs(8), || async {
        email_keys(&auth).await.filter(|n| *n == 15.0)
    })
    .await;
    // No request comes; the timer alone empties the limiter.
    eventually(
        "email keys forgotten without traffic",
        Duration::from_secs(20),
        || async { email_keys(&auth).await.filter(|n| *n == 0.0) },
    )
    .await;
}

// ------------------------------------------------ 8: text and identity hygiene

async fn register_status(auth: &Auth, body: Value) -> (StatusCode, Value) {
    let res = auth.post("/auth/register", &body).await;
    let status = res.status;
    let text = res.text();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
    )
}

#[tokio::test]
async fn emails_are_nfkc_case_folded_and_idna_and_look_alikes_are_one_account() {
    let auth = Auth::start().await;
    let tag: String = unique("").chars().take(10).collect();

    // Fullwidth and upper case: the same address as plain lower case.
    let fullwidth: String = format!("ada{tag}")
        .chars()
        .map(|c| match c {
            'a'..='z' => char::from_u32(c as u32 - 'a' as u32 + 0xFF21).unwrap_or(c),
            '0'..='9' => char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap_or(c),
            c => c,
        })
        .collect();
    let user = auth
        .registered(&format!("{fullwidth}@ＥＸＡＭＰＬＥ.test"))
        .await;
    assert_eq!(user["email"], format!("ada{tag}@example.test"), "{user}");
    auth.logged_in(&format!("ADA{tag}@example.test")).await;
    let (status, p) = register_status(
        &auth,
        json!({ "email": format!("ada{tag}@example.test"), "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");

    // Full case folding: STRASSE and straße are one address.
    auth.registered(&format!("STRASSE{tag}@example.test")).await;
    let (status, p) = register_status(
        &auth,
        json!({ "email": format!("straße{tag}@example.test"), "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "straße: {p}");

    // Look-alikes (TS #39 skeletons): a Cyrillic а, a digit 1 for an l.
    auth.registered(&format!("paypal{tag}@example.test")).await;
    let (status, p) = register_status(
        &auth,
        json!({ "email": format!("p\u{430}ypal{tag}@example.test"), "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "Cyrillic a: {p}");
    assert!(
        p["type"].as_str().unwrap_or("").ends_with("/email-taken"),
        "{p}"
    );
    auth.registered(&format!("alice{tag}@example.test")).await;
    let (status, p) = register_status(
        &auth,
        json!({ "email": format!("a1ice{tag}@example.test"), "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "a1ice: {p}");

    // An internationalised domain is stored as its A-label; either form logs in.
    let user = auth.registered(&format!("user{tag}@Bücher.example")).await;
    assert_eq!(
        user["email"],
        format!("user{tag}@xn--bcher-kva.example"),
        "{user}"
    );
    auth.logged_in(&format!("user{tag}@bücher.example")).await;
    auth.logged_in(&format!("user{tag}@xn--bcher-kva.example"))
        .await;
    let (status, p) = register_status(
        &auth,
        json!({ "email": format!("USER{tag}@xn--bcher-kva.example"), "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "A-label again: {p}");

    // Hidden characters and invalid domains: 422 on /email.
    for email in [
        format!("ada\u{200B}{tag}@example.test"),
        format!("\u{202E}ada{tag}@example.test"),
        format!("ada{tag}\u{2066}@example.test"),
        format!("ada{tag}@exa\u{200D}mple.test"),
        format!("\u{3164}{tag}@example.test"),
        format!("ada{tag}@exa_mple.test"),
        format!("ada{tag}@-example.test"),
    ] {
        let (status, p) =
            register_status(&auth, json!({ "email": email, "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{email:?}: {p}");
        assert_eq!(pointers(&p), vec!["/email".to_owned()], "{email:?}: {p}");
    }
}

#[tokio::test]
async fn display_names_and_passwords_must_be_visible_and_free_of_control_and_format_characters() {
    let auth = Auth::start().await;
    for name in [
        "\u{200B}\u{200B}\u{200B}",
        "\u{3164}",
        "\u{2800}\u{2800}",
        "   \u{FEFF}  ",
        "Ada\u{202E}ecalevol",
        "Ada\u{7}",
        "\u{301}\u{301}",
    ] {
        let (status, p) = register_status(
            &auth,
            json!({ "email": email("name-"), "password": PASSWORD, "display_name": name }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}: {p}");
        assert_eq!(
            pointers(&p),
            vec!["/display_name".to_owned()],
            "{name:?}: {p}"
        );
    }
    let user = auth.post("/auth/register", &json!({ "email": email("name-"), "password": PASSWORD, "display_name": "  José Ada  " }))
        .await.expect(StatusCode::CREATED, "a visible name");
    assert_eq!(user["display_name"], "José Ada");

    for password in [
        "\u{200B}".repeat(12),
        "\u{3164}".repeat(12),
        "\u{2800}".repeat(12),
        format!("{}a", "\u{200B}".repeat(11)),
        " ".repeat(12),
    ] {
        let (status, p) = register_status(
            &auth,
            json!({ "email": email("pw-"), "password": password }),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{password:?}: {p}"
        );
        assert_eq!(
            pointers(&p),
            vec!["/password".to_owned()],
            "{password:?}: {p}"
        );
    }
}

#[tokio::test]
async fn accounts_from_before_the_skeleton_column_get_theirs_at_start() {
    let auth = Auth::start().await;
    let tag: String = unique("").chars().take(10).collect();
    let alice = auth.registered(&format!("alice{tag}@example.test")).await;
    // As if registered before migration 20261201000010: no skeleton.
    let pool = events::store::connect_and_migrate(&auth.deployment.database_url, 1)
        .await
        .expect("postgres");
    sqlx::query("UPDATE users SET email_skeleton = NULL WHERE id = $1")
        .bind(id_of(&alice))
        .execute(&pool)
        .await
        .expect("clear skeleton");

    // A restarted auth fills it in, so the look-alike is refused.
    drop(auth.running);
    let restarted = auth.deployment.spawn_auth().await;
    let res = AuthClient::new(&restarted.base)
        .register(&format!("a1ice{tag}@example.test"), PASSWORD)
        .await;
    res.expect_problem(StatusCode::CONFLICT, "look-alike of an older account");
    let filled: Option<String> =
        sqlx::query_scalar("SELECT email_skeleton FROM users WHERE id = $1")
            .bind(id_of(&alice))
            .fetch_one(&pool)
            .await
            .expect("skeleton");
    assert!(filled.is_some());
}

#[tokio::test]
async fn auth_reads_its_http_limits_from_the_environment() {
    use tokio::io::AsyncReadExt;

    let d = Deployment::fresh().await;
    let base = d.auth_config();
    let auth = Service::start_ready("auth", |port| {
        service_env(&auth::Config {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http: service::http::Limits {
                header_read_timeout: Duration::from_millis(500),
                ..service::http::Limits::default()
            },
            ..base.clone()
        })
    })
    .await;
    // Half a request head: the connection is closed after AUTH_HTTP_HEADER_READ_TIMEOUT_MS.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", auth.port))
        .await
        .expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: auth\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a half-sent head is still held after 5 s (AUTH_HTTP_HEADER_READ_TIMEOUT_MS=500)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
