//! Deactivation and role changes reach every API at once, not when the
//! caller's 15-minute access token expires: auth, command-api, projector
//! and query-api run as processes; the only link between an admin's change
//! at auth and the other APIs is the event store they each follow.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::process::ProcessSystem;
use tests::{http, unique};

const PASSWORD: &str = "correct horse battery staple";
/// The promise: every API applies a change within this of auth's answer.
const WITHIN: Duration = Duration::from_secs(2);

async fn login(sys: &ProcessSystem, email: &str) -> String {
    let res = http()
        .post(sys.auth.url("/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn register(sys: &ProcessSystem, email: &str) -> String {
    let res = http()
        .post(sys.auth.url("/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// The status `request` answers with `token` as its bearer.
async fn status_of(request: reqwest::RequestBuilder, token: String) -> u16 {
    request
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `status_of` until it returns `want`; returns how long that took.
async fn until_status<F, Fut>(what: &str, want: u16, mut status_of: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = Instant::now();
    loop {
        let got = status_of().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still {got}, not {want}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn deactivation_and_demotion_take_effect_at_every_api_within_two_seconds() {
    let mut sys = ProcessSystem::start().await;
    let client = http();
    // Restarted services keep their ports, so these stay valid.
    let (tasks_cmd, tasks_query, all_users_url) = (
        sys.command.url("/tasks"),
        sys.query.url("/tasks"),
        sys.query.url("/analytics/summary?all=true"),
    );
    let admin_email = format!("{}@example.test", unique("admin-"));
    sys.deployment.create_admin(&admin_email, PASSWORD).await;
    let admin = login(&sys, &admin_email).await;

    let user_email = format!("{}@example.test", unique("user-"));
    let user_id = register(&sys, &user_email).await;
    let user = login(&sys, &user_email).await;
    let create = |token: String| {
        status_of(
            client
                .post(&tasks_cmd)
                .json(&json!({ "title": "still here?" })),
            token,
        )
    };
    let list = |token: String| status_of(client.get(&tasks_query), token);
    assert_eq!(create(user.clone()).await, 201);
    assert_eq!(list(user.clone()).await, 200);

    // A second admin, promoted then demoted: the demotion applies at
    // query-api's admin-only analytics while the token still says admin.
    let deputy_email = format!("{}@example.test", unique("deputy-"));
    let deputy_id = register(&sys, &deputy_email).await;
    let res = client
        .patch(sys.auth.url(&format!("/admin/users/{deputy_id}/role")))
        .bearer_auth(&admin)
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deputy = login(&sys, &deputy_email).await;
    let all_users = |token: String| status_of(client.get(&all_users_url), token);
    until_status("the deputy's admin read", 200, || all_users(deputy.clone())).await;

    let res = client
        .patch(sys.auth.url(&format!("/admin/users/{deputy_id}/role")))
        .bearer_auth(&admin)
        .json(&json!({ "role": "user" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let took = until_status("the demoted admin's all-user analytics", 403, || {
        all_users(deputy.clone())
    })
    .await;
    assert!(took <= WITHIN, "demotion reached query-api after {took:?}");

    // Deactivation: the user's unexpired token stops working everywhere.
    let res = client
        .post(sys.auth.url(&format!("/admin/users/{user_id}/deactivate")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let answered = Instant::now();
    let took = until_status("command-api refusing the deactivated user", 401, || {
        create(user.clone())
    })
    .await;
    assert!(
        took <= WITHIN,
        "deactivation reached command-api after {took:?}"
    );
    until_status("query-api refusing the deactivated user", 401, || {
        list(user.clone())
    })
    .await;
    assert!(
        answered.elapsed() <= WITHIN + Duration::from_millis(500),
        "deactivation reached query-api after {:?}",
        answered.elapsed()
    );
    let res = client
        .get(sys.query.url("/tasks"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("deactivated"),
        "{body}"
    );

    // A restarted API knows at once: the directory is loaded before it serves.
    sys.query.terminate(Duration::from_secs(10));
    sys.query.restart().await;
    assert_eq!(list(user.clone()).await, 401);
    assert_eq!(all_users(deputy.clone()).await, 403);
    // Other users are not affected.
    assert_eq!(list(admin.clone()).await, 200);
}
