//! Deactivation and role changes reach every API at once, not when the
//! caller's 15-minute access token expires: auth, command-api, projector
//! and query-api run as processes; the only link between an admin's change
//! at auth and the other APIs is the event store they each follow.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tests::clients::{email, id_of, AuthClient, CommandClient, QueryClient, PASSWORD};
use tests::process::ProcessSystem;

/// The promise: every API applies a change within this of auth's answer.
const WITHIN: Duration = Duration::from_secs(2);

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
    // Restarted services keep their ports, so these clients stay valid.
    let auth = AuthClient::new(&sys.auth.url(""));
    let commands = CommandClient::new(&sys.command.url(""), "");
    let queries = QueryClient::new(&sys.query.url(""), "");
    let admin_email = email("admin-");
    sys.deployment.create_admin(&admin_email, PASSWORD).await;
    let admin = auth.access(&admin_email).await;

    let user_email = email("user-");
    let user_id = id_of(&auth.registered(&user_email).await);
    let user = auth.access(&user_email).await;
    let create = |token: String| {
        let commands = commands.as_user(&token);
        async move {
            commands
                .create_task(&json!({ "title": "still here?" }))
                .await
                .status
                .as_u16()
        }
    };
    let list = |token: String| {
        let queries = queries.as_user(&token);
        async move { queries.list_tasks("").await.status.as_u16() }
    };
    assert_eq!(create(user.clone()).await, 201);
    assert_eq!(list(user.clone()).await, 200);

    // A second admin, promoted then demoted: the demotion applies at
    // query-api's admin-only analytics while the token still says admin.
    let deputy_email = email("deputy-");
    let deputy_id = id_of(&auth.registered(&deputy_email).await);
    let res = auth.set_role(&admin, deputy_id, "admin").await;
    assert_eq!(res.status, 200);
    let deputy = auth.access(&deputy_email).await;
    let all_users = |token: String| {
        let queries = queries.as_user(&token);
        async move { queries.analytics("summary?all=true").await.status.as_u16() }
    };
    until_status("the deputy's admin read", 200, || all_users(deputy.clone())).await;

    let res = auth.set_role(&admin, deputy_id, "user").await;
    assert_eq!(res.status, 200);
    let took = until_status("the demoted admin's all-user analytics", 403, || {
        all_users(deputy.clone())
    })
    .await;
    assert!(took <= WITHIN, "demotion reached query-api after {took:?}");

    // Deactivation: the user's unexpired token stops working everywhere.
    let res = auth.deactivate(&admin, user_id).await;
    assert!(res.status.is_success(), "{}", res.status);
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
    let res = queries.as_user(&user).list_tasks("").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let body = res.body;
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
