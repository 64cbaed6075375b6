//! End-to-end tests of the auth service: the real binary's application over
//! real HTTP, against a fresh Postgres database and Kafka topic prefix per
//! test. Every assertion is on what a client or a Kafka consumer sees.

use std::num::NonZeroU32;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::clients::{self, id_of, pointers, AuthApp as Auth, Reply, Tokens, PASSWORD};
use tests::{servers, unique, Deployment, Running};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// auth with its configuration changed by `tweak`.
async fn start_auth_with(deployment: Deployment, tweak: impl FnOnce(&mut auth::Config)) -> Auth {
    let mut config = deployment.auth_config();
    tweak(&mut config);
    let app = auth::Application::build(config).await.expect("auth starts");
    let port = app.port();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
    let running = Running {
        base: format!("http://127.0.0.1:{port}"),
        stop,
        handle,
    };
    Auth::new(deployment, running)
}

fn email() -> String {
    clients::email("user-")
}

// ---------------------------------------------------------------- accounts

#[tokio::test]
async fn registration_normalises_the_email_and_me_returns_the_account() {
    let auth = Auth::start().await;
    let local = unique("Ada-");
    let res = auth
        .post("/auth/register", &json!({ "email": format!("  {local}@Example.TEST "), "password": PASSWORD, "display_name": " Ada L. " }))
        .await;
    let user = res.expect(StatusCode::CREATED, "register");
    let email = format!("{}@example.test", local.to_lowercase());
    assert_eq!(user["email"], email.as_str(), "{user}");
    assert_eq!(user["display_name"], "Ada L.", "{user}");
    assert_eq!(
        user["role"], "user",
        "the first user is not admin by magic: {user}"
    );
    assert_eq!(
        user.as_object().map(|o| o.len()),
        Some(4),
        "exactly id, email, display_name, role: {user}"
    );
    let id = id_of(&user);

    // Log in with the address in yet another letter case.
    let tokens = auth.tokens(&email.to_uppercase()).await;
    let me = auth.me(&tokens.access).await.expect(StatusCode::OK, "me");
    assert_eq!(me, user, "GET /auth/me returns the registered account");
    assert_eq!(id_of(&me), id);

    // Without a display name, the email's local part is used.
    let other = auth
        .registered(&format!("grace-{}@example.test", Uuid::new_v4().simple()))
        .await;
    assert!(
        other["display_name"]
            .as_str()
            .is_some_and(|n| n.starts_with("grace-")),
        "{other}"
    );
}

#[tokio::test]
async fn duplicate_email_in_another_letter_case_is_409() {
    let auth = Auth::start().await;
    let email = email();
    auth.registered(&email).await;
    let res = auth
        .post(
            "/auth/register",
            &json!({ "email": email.to_uppercase(), "password": "another password 123" }),
        )
        .await;
    let problem = res.expect_problem(StatusCode::CONFLICT, "duplicate");
    assert_eq!(
        problem["type"], "https://taskstream.dev/problems/email-taken",
        "{problem}"
    );
}

#[tokio::test]
async fn weak_or_too_long_passwords_and_bad_emails_are_422_with_field_pointers() {
    let auth = Auth::start().await;
    let cases = [
        (
            json!({ "email": email(), "password": "short" }),
            vec!["/password"],
        ),
        (
            json!({ "email": email(), "password": "123456789" }),
            vec!["/password"],
        ),
        (
            json!({ "email": email(), "password": "x".repeat(1025) }),
            vec!["/password"],
        ),
        (
            json!({ "email": "not-an-email", "password": PASSWORD }),
            vec!["/email"],
        ),
        (
            json!({ "email": "", "password": "", "display_name": "  " }),
            vec!["/email", "/password", "/display_name"],
        ),
    ];
    for (body, want) in cases {
        let res = auth.post("/auth/register", &body).await;
        let problem = res.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, &body.to_string());
        assert_eq!(pointers(&problem), want, "{body} → {problem}");
        assert_eq!(
            problem["type"],
            "https://taskstream.dev/problems/validation"
        );
    }
    // A password of exactly 1024 bytes is fine.
    let res = auth
        .post(
            "/auth/register",
            &json!({ "email": email(), "password": "y".repeat(1024) }),
        )
        .await;
    res.expect(StatusCode::CREATED, "1024-byte password");
}

#[tokio::test]
async fn login_succeeds_and_unknown_email_and_wrong_password_are_indistinguishable() {
    let auth = Auth::start().await;
    let email = email();
    let user = auth.registered(&email).await;
    let tokens = auth.tokens(&email).await;
    let me = auth.me(&tokens.access).await.expect(StatusCode::OK, "me");
    assert_eq!(me["id"], user["id"]);

    let wrong_password = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": "not the password" }),
        )
        .await;
    let unknown_email = auth
        .post(
            "/auth/login",
            &json!({ "email": format!("nobody-{email}"), "password": PASSWORD }),
        )
        .await;
    let describe = |res: Reply| {
        let content_type = res.headers.get("content-type").cloned();
        let challenge = res.headers.get("www-authenticate").cloned();
        (res.status, content_type, challenge, res.text())
    };
    let a = describe(wrong_password);
    let b = describe(unknown_email);
    assert_eq!(a.0, StatusCode::UNAUTHORIZED, "{a:?}");
    assert_eq!(a, b, "wrong password and unknown email must look the same");
}

// ---------------------------------------------------------- refresh tokens

#[tokio::test]
async fn refresh_rotates_and_the_old_token_stops_working() {
    let auth = Auth::start().await;
    let email = email();
    auth.registered(&email).await;
    let first = auth.tokens(&email).await;

    let res = auth.refresh(&first.refresh).await;
    let second = Tokens::from(res.expect(StatusCode::OK, "refresh"));
    assert_ne!(second.refresh, first.refresh, "a new refresh token");
    let me = auth.me(&second.access).await.expect(StatusCode::OK, "me");
    assert_eq!(me["email"], email.as_str());

    // The new one works once more; afterwards the old one is refused.
    let res = auth.refresh(&second.refresh).await;
    let third = Tokens::from(res.expect(StatusCode::OK, "second refresh"));
    let res = auth.refresh(&first.refresh).await;
    let problem = res.expect_problem(StatusCode::UNAUTHORIZED, "old token");
    assert_eq!(
        problem["type"], "https://taskstream.dev/problems/invalid-refresh-token",
        "{problem}"
    );
    // That was reuse: the family is gone, including the newest token.
    let res = auth.refresh(&third.refresh).await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "newest after reuse");

    // A token that was never issued is refused the same way.
    let res = auth.refresh("not-a-token-we-issued").await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "unknown token");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_its_whole_family_only() {
    let auth = Auth::start().await;
    let email = email();
    auth.registered(&email).await;
    let stolen = auth.tokens(&email).await;
    let other_device = auth.tokens(&email).await;

    // The legitimate client rotates; the thief then replays the old token.
    let res = auth.refresh(&stolen.refresh).await;
    let newest = Tokens::from(res.expect(StatusCode::OK, "rotate"));
    let res = auth.refresh(&stolen.refresh).await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "replayed token");

    // Everyone holding that family is logged out...
    let res = auth.refresh(&newest.refresh).await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "newest token of the family");
    // ...but another login's family is untouched.
    let res = auth.refresh(&other_device.refresh).await;
    res.expect(StatusCode::OK, "other family");
}

#[tokio::test]
async fn logout_revokes_the_family_and_is_idempotent() {
    let auth = Auth::start().await;
    let email = email();
    auth.registered(&email).await;
    let first = auth.tokens(&email).await;
    let res = auth.refresh(&first.refresh).await;
    let second = Tokens::from(res.expect(StatusCode::OK, "refresh"));

    let res = auth
        .post("/auth/logout", &json!({ "refresh_token": second.refresh }))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = auth.refresh(&second.refresh).await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "refresh after logout");

    // Again, and with a token nobody issued: same answer, nothing revealed.
    for token in [second.refresh.as_str(), "never-issued"] {
        let res = auth
            .post("/auth/logout", &json!({ "refresh_token": token }))
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "logout {token}");
    }
}

// ------------------------------------------------------------------- admin

#[tokio::test]
async fn admin_changes_roles_and_non_admins_are_refused() {
    let auth = Auth::start().await;
    let (_, admin) = auth.admin_tokens().await;
    let email = email();
    let user = auth.registered(&email).await;
    let id = id_of(&user);
    let mut tokens = auth.tokens(&email).await;
    let role_path = format!("/admin/users/{id}/role");

    // A plain user may not change roles, not even their own.
    let res = auth
        .request(reqwest::Method::PATCH, &role_path, &tokens.access)
        .json(&json!({ "role": "admin" }))
        .await;
    res.expect_problem(StatusCode::FORBIDDEN, "non-admin");
    // Without a token at all: 401.
    let res = auth
        .api()
        .request(reqwest::Method::PATCH, &role_path)
        .json(&json!({ "role": "admin" }))
        .await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "anonymous");

    // The admin can.
    let res = auth
        .request(reqwest::Method::PATCH, &role_path, &admin.access)
        .json(&json!({ "role": "admin" }))
        .await;
    let changed = res.expect(StatusCode::OK, "role change");
    assert_eq!(changed["role"], "admin", "{changed}");
    assert_eq!(changed["active"], true, "{changed}");

    // New tokens carry the new role, and the promoted user can act as admin.
    tokens = auth.tokens(&email).await;
    let me = auth.me(&tokens.access).await.expect(StatusCode::OK, "me");
    assert_eq!(me["role"], "admin");
    let res = auth
        .request(reqwest::Method::PATCH, &role_path, &tokens.access)
        .json(&json!({ "role": "user" }))
        .await;
    let back = res.expect(StatusCode::OK, "demote self");
    assert_eq!(back["role"], "user");
    // Demoted: the still-valid admin token no longer works for admin routes.
    let res = auth
        .request(reqwest::Method::PATCH, &role_path, &tokens.access)
        .json(&json!({ "role": "admin" }))
        .await;
    res.expect_problem(StatusCode::FORBIDDEN, "demoted admin's old token");

    // Unknown user, malformed id, unknown role, unknown field.
    let cases = [
        (
            format!("/admin/users/{}/role", Uuid::now_v7()),
            json!({ "role": "admin" }),
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/users/not-a-uuid/role".to_owned(),
            json!({ "role": "admin" }),
            StatusCode::NOT_FOUND,
        ),
        (
            role_path.clone(),
            json!({ "role": "root" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            role_path.clone(),
            json!({ "role": "user", "why": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (path, body, status) in cases {
        let res = auth
            .request(reqwest::Method::PATCH, &path, &admin.access)
            .json(&body)
            .await;
        res.expect_problem(status, &format!("{path} {body}"));
    }
}

#[tokio::test]
async fn deactivated_users_cannot_log_in_or_refresh() {
    let auth = Auth::start().await;
    let (admin_id, admin) = auth.admin_tokens().await;
    let email = email();
    let user = auth.registered(&email).await;
    let id = id_of(&user);
    let tokens = auth.tokens(&email).await;
    let deactivate = |id: String| format!("/admin/users/{id}/deactivate");

    // Only admins deactivate.
    let res = auth
        .request(
            reqwest::Method::POST,
            &deactivate(id.to_string()),
            &tokens.access,
        )
        .await;
    res.expect_problem(StatusCode::FORBIDDEN, "non-admin deactivates");

    let res = auth
        .request(
            reqwest::Method::POST,
            &deactivate(id.to_string()),
            &admin.access,
        )
        .await;
    let account = res.expect(StatusCode::OK, "deactivate");
    assert_eq!(account["active"], false, "{account}");

    // Login fails exactly like a wrong password would.
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await;
    let deactivated = res.expect_problem(StatusCode::UNAUTHORIZED, "login");
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": "wrong password!" }),
        )
        .await;
    let wrong = res.expect_problem(StatusCode::UNAUTHORIZED, "wrong password");
    assert_eq!(deactivated, wrong);
    // The refresh token issued before was revoked.
    let res = auth.refresh(&tokens.refresh).await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "refresh");
    // Auth itself no longer honours the unexpired access token.
    auth.me(&tokens.access)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "me");

    // Unknown and malformed ids are 404; an admin cannot lock themselves out.
    for (path, status) in [
        (
            deactivate(Uuid::now_v7().to_string()),
            StatusCode::NOT_FOUND,
        ),
        (deactivate("12345".into()), StatusCode::NOT_FOUND),
        (deactivate(admin_id.to_string()), StatusCode::CONFLICT),
    ] {
        let res = auth
            .request(reqwest::Method::POST, &path, &admin.access)
            .await;
        res.expect_problem(status, &path);
    }
}

// ----------------------------------------------------------- access tokens

fn b64_json(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url JWT part");
    serde_json::from_slice(&bytes).expect("JSON JWT part")
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

#[tokio::test]
async fn tampered_access_tokens_are_rejected_with_a_bearer_challenge() {
    let auth = Auth::start().await;
    let email = email();
    let user = auth.registered(&email).await;
    let id = id_of(&user);
    let genuine = auth.tokens(&email).await.access;
    auth.me(&genuine)
        .await
        .expect(StatusCode::OK, "genuine token");

    let parts: Vec<&str> = genuine.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let header_json = b64_json(header);
    let kid = header_json["kid"].as_str().expect("kid").to_owned();
    let claims = b64_json(payload);

    // Changed payload, original signature.
    let mut elevated = claims.clone();
    elevated["role"] = json!("admin");
    let changed_payload = format!("{header}.{}.{signature}", b64(&elevated));

    // alg: none, with and without a signature.
    let none_header = b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid }));
    let alg_none = format!("{none_header}.{payload}.");
    let alg_none_signed = format!("{none_header}.{payload}.{signature}");

    // HS256 keyed with the published public key (the algorithm-confusion attack).
    let jwks = auth
        .get("/.well-known/jwks.json")
        .await
        .expect(StatusCode::OK, "jwks");
    let x = jwks["keys"][0]["x"].as_str().expect("jwk x").to_owned();
    let raw_public = URL_SAFE_NO_PAD.decode(&x).expect("x is base64url");
    let public_pem = {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            &raw_public.clone().try_into().expect("32-byte key"),
        )
        .expect("public key");
        key.to_public_key_pem(Default::default()).expect("pem")
    };
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = |secret: &[u8]| {
        jsonwebtoken::encode(
            &hs_header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("hs256")
    };

    // Properly signed by the deployment's key, but with bad claims.
    let keys = auth::keys::SigningKeys::from_pem_file(
        &auth.deployment.signing_key_path.display().to_string(),
    )
    .expect("deployment key");
    let sign =
        |keys: &auth::keys::SigningKeys, audience: &str, issuer: &str, ttl: chrono::Duration| {
            auth::tokens::issue(
                keys,
                &auth::tokens::AccessTokenRequest {
                    user_id: id,
                    email: &email,
                    role: events::Role::User,
                    issuer,
                    audience,
                    ttl,
                },
            )
            .expect("sign")
            .0
        };
    let minutes = chrono::Duration::minutes;
    let control = sign(
        &keys,
        access::DEFAULT_AUDIENCE,
        access::DEFAULT_ISSUER,
        minutes(15),
    );
    auth.me(&control)
        .await
        .expect(StatusCode::OK, "control token");
    let expired = sign(
        &keys,
        access::DEFAULT_AUDIENCE,
        access::DEFAULT_ISSUER,
        minutes(-5),
    );
    let wrong_audience = sign(&keys, "somebody-else", access::DEFAULT_ISSUER, minutes(15));
    let wrong_issuer = sign(&keys, access::DEFAULT_AUDIENCE, "evil-issuer", minutes(15));

    // Signed by a key auth never published: under its own kid, and under auth's kid.
    let stranger = auth::keys::SigningKeys::generate();
    let unknown_kid = sign(
        &stranger,
        access::DEFAULT_AUDIENCE,
        access::DEFAULT_ISSUER,
        minutes(15),
    );
    let mut borrowed_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    borrowed_header.kid = Some(kid.clone());
    let borrowed_kid =
        jsonwebtoken::encode(&borrowed_header, &claims, stranger.encoding_key()).expect("sign");

    let cases = [
        ("changed payload", changed_payload),
        ("alg none", alg_none),
        ("alg none with signature", alg_none_signed),
        ("HS256 with raw public key", hs256(&raw_public)),
        ("HS256 with JWK x", hs256(x.as_bytes())),
        ("HS256 with public key PEM", hs256(public_pem.as_bytes())),
        ("expired", expired),
        ("wrong audience", wrong_audience),
        ("wrong issuer", wrong_issuer),
        ("unknown kid", unknown_kid),
        ("foreign key under our kid", borrowed_kid),
        (
            "truncated signature",
            genuine[..genuine.len() - 4].to_owned(),
        ),
        ("not a JWT", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let res = auth.me(&token).await;
        let challenge = res.header("www-authenticate").map(str::to_owned);
        res.expect_problem(StatusCode::UNAUTHORIZED, what);
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer"),
            "{what}: WWW-Authenticate"
        );
    }

    // No token, or not a Bearer one.
    let res = auth.get("/auth/me").await;
    assert_eq!(
        res.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    res.expect_problem(StatusCode::UNAUTHORIZED, "no token");
    let res = auth
        .get("/auth/me")
        .header("authorization", &format!("Basic {genuine}"))
        .await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "Basic scheme");
}

// ------------------------------------------------------------------- abuse

#[tokio::test]
async fn login_and_register_are_rate_limited_per_client_ip() {
    let auth = start_auth_with(Deployment::fresh().await, |c| {
        c.rate_limit_per_minute = NonZeroU32::new(3).expect("3");
    })
    .await;
    let email = email();
    // Registration: three from this IP pass, the fourth (another email) is refused.
    auth.registered(&email).await;
    auth.registered(&self::email()).await;
    auth.registered(&self::email()).await;
    let res = auth
        .post(
            "/auth/register",
            &json!({ "email": self::email(), "password": PASSWORD }),
        )
        .await;
    assert_retry_after(res, "fourth registration").await;

    // Login has its own budget: three attempts, any emails, then 429.
    auth.tokens(&email).await;
    for other in [self::email(), self::email()] {
        let res = auth
            .post(
                "/auth/login",
                &json!({ "email": other, "password": PASSWORD }),
            )
            .await;
        res.expect_problem(StatusCode::UNAUTHORIZED, "unknown email");
    }
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await;
    assert_retry_after(res, "fourth login").await;
}

#[tokio::test]
async fn login_is_rate_limited_per_email_in_any_letter_case() {
    let auth = start_auth_with(Deployment::fresh().await, |c| {
        c.rate_limit_per_email_per_minute = NonZeroU32::new(2).expect("2");
    })
    .await;
    let email = email();
    auth.registered(&email).await;
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email, "password": "wrong guess 1" }),
        )
        .await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "guess 1");
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": email.to_uppercase(), "password": "wrong guess 2" }),
        )
        .await;
    res.expect_problem(StatusCode::UNAUTHORIZED, "guess 2");
    // Even the right password is refused now: the account is being guessed at.
    let res = auth
        .post(
            "/auth/login",
            &json!({ "email": format!(" {} ", email.to_uppercase()), "password": PASSWORD }),
        )
        .await;
    assert_retry_after(res, "third attempt on one email").await;
    // Another account is not affected.
    let other = self::email();
    auth.registered(&other).await;
    auth.tokens(&other).await;
}

async fn assert_retry_after(res: Reply, what: &str) {
    let retry_after = res
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok());
    let problem = res.expect_problem(StatusCode::TOO_MANY_REQUESTS, what);
    assert_eq!(
        problem["type"],
        "https://taskstream.dev/problems/rate-limited"
    );
    match retry_after {
        Some(secs) => assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}"),
        None => panic!("{what}: 429 without a numeric Retry-After: {problem}"),
    }
}

#[tokio::test]
async fn oversized_bodies_are_413_and_unknown_fields_422() {
    let auth = Auth::start().await;
    let big = json!({ "email": email(), "password": "p".repeat(70 * 1024) });
    for path in ["/auth/register", "/auth/login"] {
        let res = auth.post(path, &big).await;
        res.expect_problem(StatusCode::PAYLOAD_TOO_LARGE, path);
    }
    let cases = [
        (
            "/auth/register",
            json!({ "email": email(), "password": PASSWORD, "role": "admin" }),
            "role",
        ),
        (
            "/auth/login",
            json!({ "email": email(), "password": PASSWORD, "remember": true }),
            "remember",
        ),
        (
            "/auth/refresh",
            json!({ "refresh_token": "x", "extra": 1 }),
            "extra",
        ),
        (
            "/auth/logout",
            json!({ "refresh_token": "x", "all": true }),
            "all",
        ),
    ];
    for (path, body, field) in cases {
        let res = auth.post(path, &body).await;
        let problem = res.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, path);
        assert!(
            problem.to_string().contains(field),
            "{path}: the problem names `{field}`: {problem}"
        );
    }
    // Registering with a role does not sneak in: nothing was created.
    let res = auth
        .post(
            "/auth/register",
            &json!({ "email": "x@example.test", "password": PASSWORD }),
        )
        .await;
    let user = res.expect(StatusCode::CREATED, "plain register");
    assert_eq!(user["role"], "user");
}

#[tokio::test]
async fn openapi_document_describes_every_endpoint() {
    let auth = Auth::start().await;
    let res = auth.get("/openapi.json").await;
    let doc = res.expect(StatusCode::OK, "openapi.json");
    for (path, method) in [
        ("/auth/register", "post"),
        ("/auth/login", "post"),
        ("/auth/refresh", "post"),
        ("/auth/logout", "post"),
        ("/auth/me", "get"),
        ("/admin/users/{id}/role", "patch"),
        ("/admin/users/{id}/deactivate", "post"),
        ("/.well-known/jwks.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented: {}",
            doc["paths"]
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["paths"]["/admin/users/{id}/role"]["patch"]["responses"]["403"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

// ------------------------------------------------------------------- Kafka

#[tokio::test]
async fn user_events_reach_kafka_with_the_envelope_and_no_secrets() {
    let auth = Auth::start().await;
    let (admin_id, admin) = auth.admin_tokens().await;
    let email = email();
    let request_id = Uuid::now_v7();
    let res = auth
        .register(&email, PASSWORD)
        .request_id(&request_id.to_string())
        .await;
    let user = res.expect(StatusCode::CREATED, "register");
    let id = id_of(&user);
    let tokens = auth.tokens(&email).await;
    let res = auth
        .request(
            reqwest::Method::PATCH,
            &format!("/admin/users/{id}/role"),
            &admin.access,
        )
        .json(&json!({ "role": "admin" }))
        .await;
    res.expect(StatusCode::OK, "role");
    let res = auth
        .request(
            reqwest::Method::POST,
            &format!("/admin/users/{id}/deactivate"),
            &admin.access,
        )
        .await;
    res.expect(StatusCode::OK, "deactivate");

    let topic = format!("{}user-events", auth.deployment.topic_prefix);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers().kafka_brokers)
        .set("group.id", unique("auth-test-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");

    struct Seen {
        key: String,
        type_header: String,
        schema_header: String,
        raw: String,
        envelope: Value,
    }
    let mut seen: Vec<Seen> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 3 events for {id} on {topic}", seen.len()))
            .expect("kafka message");
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let header = |name: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let raw = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
        let envelope: Value = serde_json::from_str(&raw).expect("envelope JSON");
        if envelope["stream_id"] == id.to_string() {
            seen.push(Seen {
                key,
                type_header: header("type"),
                schema_header: header("schema"),
                raw,
                envelope,
            });
        }
    }

    let expected = [
        ("user.registered", 1, id),
        ("user.role_changed", 2, admin_id),
        ("user.deactivated", 3, admin_id),
    ];
    for (s, (event_type, version, actor)) in seen.iter().zip(expected) {
        let e = &s.envelope;
        assert_eq!(s.key, id.to_string(), "key is the user id: {e}");
        assert_eq!(s.type_header, event_type, "type header: {e}");
        assert_eq!(s.schema_header, "1", "schema header: {e}");
        assert_eq!(e["type"], event_type, "{e}");
        assert_eq!(e["schema"], 1, "{e}");
        assert_eq!(e["stream_type"], "user", "{e}");
        assert_eq!(e["version"], version, "{e}");
        assert_eq!(e["actor"], actor.to_string(), "{e}");
        assert!(
            e["event_id"]
                .as_str()
                .and_then(|s| Uuid::try_parse(s).ok())
                .is_some_and(|u| u.get_version_num() == 7),
            "event_id is a UUID v7: {e}"
        );
        assert!(
            e["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{e}"
        );
        for secret in [
            PASSWORD,
            "$argon2",
            "password",
            "token",
            tokens.refresh.as_str(),
            tokens.access.as_str(),
            admin.refresh.as_str(),
        ] {
            assert!(
                !s.raw.contains(secret),
                "`{secret}` must not be in an event: {}",
                s.raw
            );
        }
    }
    let registered = &seen[0].envelope;
    assert_eq!(
        registered["correlation_id"],
        request_id.to_string(),
        "correlation id = request id"
    );
    assert_eq!(
        registered["data"],
        json!({ "email": email, "display_name": user["display_name"], "role": "user" })
    );
    assert_eq!(
        seen[1].envelope["data"],
        json!({ "from": "user", "to": "admin" })
    );
    assert_eq!(seen[2].envelope["data"], json!({}));
}
