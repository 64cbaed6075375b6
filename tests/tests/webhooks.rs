//! The notifier's webhooks, end to end: real services, real accounts and a
//! real HTTP receiver that verifies every Standard Webhooks signature with
//! its own implementation. A notification reaches its endpoints signed; a
//! retry carries the same `webhook-id` and bytes; an endpoint failing past
//! the retry window is disabled and its owner told once; a hanging
//! endpoint delays no other; private addresses are refused at creation and
//! at connect time; endpoints are their owners' (or their projects'
//! admins'); a notifier killed mid-send or before sending ends with one
//! delivery per `webhook-id`.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::notify::{instant, Person, Team, WAIT};
use tests::receiver::{Receiver, Reply};
use tests::{eventually, System};
use uuid::Uuid;

/// Creates an endpoint as `who`; asserts 201.
async fn create(who: &Person, body: Value) -> Value {
    who.notifier
        .request(Method::POST, "/webhooks")
        .json(&body)
        .await
        .expect(StatusCode::CREATED, "POST /webhooks")
}

/// `who`'s own endpoint at `receiver`, for `events`.
async fn endpoint(who: &Person, receiver: &Receiver, events: &[&str]) -> String {
    let created = create(
        who,
        json!({ "url": receiver.url, "events": events, "secret": receiver.secret() }),
    )
    .await;
    created["id"].as_str().expect("an id").to_owned()
}

/// The first page of an endpoint's deliveries, newest first.
async fn deliveries(who: &Person, hook: &str) -> Vec<Value> {
    let page = who
        .notifier
        .request(Method::GET, &format!("/webhooks/{hook}/deliveries"))
        .await
        .expect(StatusCode::OK, "GET /webhooks/{id}/deliveries");
    page["items"].as_array().expect("items").clone()
}

/// Waits until the delivery `id` of endpoint `hook` satisfies `done`.
async fn delivery_until(
    who: &Person,
    hook: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, Duration::from_secs(60), || async {
        deliveries(who, hook).await.into_iter().find(|d| done(d))
    })
    .await
}

/// ann assigns bob a task in her project (bob and cat are members).
async fn assign(t: &Team, project: Uuid, title: &str) -> Uuid {
    t.ann
        .task(json!({ "title": title, "project_id": project, "assignee_ids": [t.bob.id] }))
        .await
}

fn ids(received: &[tests::receiver::Received]) -> BTreeSet<String> {
    received.iter().map(|r| r.id.clone()).collect()
}

fn assert_all_verified(received: &[tests::receiver::Received]) {
    for r in received {
        assert!(
            r.verified,
            "a request whose signature or timestamp did not verify: {r:?}"
        );
    }
}

#[tokio::test]
async fn an_assignment_reaches_the_users_endpoint_signed_and_shows_delivered() {
    let t = Team::start().await;
    let project = t.project().await;
    let receiver = Receiver::start().await;
    let created = create(
        &t.bob,
        json!({ "url": receiver.url, "events": ["assigned"], "secret": receiver.secret() }),
    )
    .await;
    assert_eq!(created["secret"], receiver.secret());
    assert_eq!(created["enabled"], true);
    assert_eq!(created["project_id"], Value::Null);
    let hook = created["id"].as_str().unwrap().to_owned();
    let shown = t
        .bob
        .notifier
        .request(Method::GET, &format!("/webhooks/{hook}"))
        .await
        .expect(StatusCode::OK, "GET /webhooks/{id}");
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );
    assert_eq!(shown["events"], json!(["assigned"]));

    let task = assign(&t, project, "ship the hooks").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_all_verified(&got);
    let r = &got[0];
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.user_agent, "taskstream-webhooks/1");
    let body = r.json();
    let notification = t.bob.wait_for("assigned", task).await.remove(0);
    assert_eq!(body["type"], "assigned");
    assert_eq!(body["data"]["id"], notification["id"]);
    assert_eq!(body["data"]["user_id"], t.bob.id.to_string());
    assert_eq!(body["data"]["task_id"], task.to_string());
    assert_eq!(body["data"]["title"], notification["title"]);
    assert_eq!(body["data"]["data"], notification["data"]);
    assert_eq!(body["timestamp"], body["data"]["created_at"]);

    let d = delivery_until(&t.bob, &hook, "the delivery to be delivered", |d| {
        d["state"] == "delivered"
    })
    .await;
    assert_eq!(d["id"], r.id.as_str(), "the delivery id is the webhook-id");
    assert_eq!(d["notification_id"], notification["id"]);
    assert_eq!(d["type"], "assigned");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_status"], 204);
    assert_eq!(d["next_attempt_at"], Value::Null);
    assert!(d["delivered_at"].is_string(), "{d}");

    let notification = eventually("the inbox to show it delivered", WAIT, || async {
        let n = t.bob.about("assigned", task).await.remove(0);
        let webhook = n["deliveries"]
            .as_array()?
            .iter()
            .find(|d| d["channel"] == "webhook")?
            .clone();
        (webhook["state"] == "delivered").then_some(webhook)
    })
    .await;
    assert_eq!(notification["webhook_id"], hook.as_str());
    assert_eq!(receiver.received().len(), 1, "sent once");
}

#[tokio::test]
async fn a_receiver_answering_500_then_200_gets_the_same_webhook_id_and_bytes_twice() {
    let t = Team::start().await;
    let project = t.project().await;
    let receiver = Receiver::start().await;
    receiver.script(&[Reply::Status(500)]);
    receiver.otherwise(Reply::Status(200));
    let hook = endpoint(&t.bob, &receiver, &["assigned"]).await;

    assign(&t, project, "flaky receiver").await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_all_verified(&got);
    assert_eq!(got[0].id, got[1].id, "a retry reuses its webhook-id");
    assert_eq!(got[0].body, got[1].body, "a retry sends the same bytes");
    let d = delivery_until(&t.bob, &hook, "the retry to be delivered", |d| {
        d["state"] == "delivered"
    })
    .await;
    assert_eq!(d["attempts"], 2, "{d}");
    assert_eq!(d["last_status"], 200);
    assert_eq!(d["id"], got[0].id.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 2, "nothing after the success");
}

#[tokio::test]
async fn an_endpoint_failing_past_the_retry_window_is_disabled_and_its_owner_told_once() {
    let sys = System::start_with_notifier(|c| {
        c.webhooks.retry_window = Duration::from_secs(2);
    })
    .await;
    let t = Team::of(sys).await;
    let project = t.project().await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Status(500));
    let hook = endpoint(&t.bob, &receiver, &["assigned"]).await;

    assign(&t, project, "never accepted").await;
    let d = delivery_until(&t.bob, &hook, "the delivery to fail", |d| {
        d["state"] == "failed"
    })
    .await;
    assert!(d["attempts"].as_i64().unwrap() >= 2, "retried first: {d}");
    assert_eq!(d["last_status"], 500);
    assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
    assert_all_verified(&receiver.received());
    assert_eq!(ids(&receiver.received()).len(), 1, "one webhook-id");

    let shown = t
        .bob
        .notifier
        .request(Method::GET, &format!("/webhooks/{hook}"))
        .await
        .expect(StatusCode::OK, "GET /webhooks/{id}");
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(shown["disabled_at"].is_string(), "{shown}");
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("retry window"),
        "{shown}"
    );
    let notices = eventually("the disable notice", WAIT, || async {
        let found: Vec<Value> = t
            .bob
            .all()
            .await
            .into_iter()
            .filter(|n| n["kind"] == "webhook_disabled")
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["data"]["webhook_id"], hook.as_str());

    // Disabled: a new notification is not sent to it.
    let before = receiver.received().len();
    let task = assign(&t, project, "while disabled").await;
    t.bob.wait_for("assigned", task).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), before);

    // A failed delivery is sent again on request, but not to a disabled
    // endpoint.
    let failed_id = d["id"].as_str().unwrap().to_owned();
    let retry = |who: &Person, delivery: &str| {
        who.notifier.request(
            Method::POST,
            &format!("/webhooks/{hook}/deliveries/{delivery}/retry"),
        )
    };
    let r = retry(&t.bob, &failed_id).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert!(r.problem_type().ends_with("webhook-disabled"), "{r:?}");

    // Enabled again by its owner: the reason is cleared, and it receives.
    let enabled = t
        .bob
        .notifier
        .request(Method::PATCH, &format!("/webhooks/{hook}"))
        .json(&json!({ "enabled": true }))
        .await
        .expect(StatusCode::OK, "PATCH enabled");
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_at"], Value::Null);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    receiver.otherwise(Reply::Status(204));
    assign(&t, project, "after enabling").await;
    receiver.wait_for(before + 1, WAIT).await;

    // Now the failed delivery goes again: the same webhook-id, a new retry
    // window, delivered. Only its endpoint's managers may ask, and only
    // for a delivery that failed.
    for (who, delivery) in [
        (&t.cat, failed_id.as_str()),
        (&t.bob, "01a2366c-0000-7000-8000-000000000000"),
    ] {
        let r = retry(who, delivery).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    }
    let queued = retry(&t.bob, &failed_id)
        .await
        .expect(StatusCode::ACCEPTED, "retry a failed delivery");
    assert_eq!(queued["id"], failed_id.as_str());
    assert_eq!(queued["state"], "pending");
    receiver.wait_for(before + 2, WAIT).await;
    let again: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.id == failed_id)
        .collect();
    assert!(again.len() >= 2, "sent before and again: {again:?}");
    assert_all_verified(&receiver.received());
    delivery_until(&t.bob, &hook, "the retried delivery to arrive", |d| {
        d["id"] == failed_id.as_str() && d["state"] == "delivered"
    })
    .await;
    let r = retry(&t.bob, &failed_id).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert!(r.problem_type().ends_with("delivery-not-failed"), "{r:?}");
    let notices = t
        .bob
        .all()
        .await
        .into_iter()
        .filter(|n| n["kind"] == "webhook_disabled")
        .count();
    assert_eq!(notices, 1, "still one notice");
}

#[tokio::test]
async fn a_dead_endpoints_backlog_does_not_hold_back_another_endpoint() {
    let sys = System::start_with_notifier(|c| {
        c.webhooks.timeout = Duration::from_secs(20);
    })
    .await;
    let t = Team::of(sys).await;
    let project = t.project().await;
    let dead = Receiver::start().await;
    dead.otherwise(Reply::Hang);
    let fast = Receiver::start().await;
    let dead_hook: Uuid = endpoint(&t.bob, &dead, &["assigned"])
        .await
        .parse()
        .unwrap();
    endpoint(&t.bob, &fast, &["assigned"]).await;
    // Hours of the dead endpoint's outage: 600 deliveries due before
    // anything else, far more than one claim looks at.
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .unwrap();
    sqlx::query(
        "WITH n AS (
             INSERT INTO notifier_notifications (id, user_id, kind, title, body, created_at)
             SELECT gen_random_uuid(), $1, 'assigned', 'backlog', 'backlog', now() - interval '1 hour'
               FROM generate_series(1, 600)
             RETURNING id)
         INSERT INTO notifier_deliveries (id, notification_id, channel, webhook_id, next_attempt_at)
         SELECT gen_random_uuid(), n.id, 'webhook', $2, now() - interval '1 hour' FROM n",
    )
    .bind(t.bob.id)
    .bind(dead_hook)
    .execute(&pool)
    .await
    .unwrap();

    let started = std::time::Instant::now();
    for i in 0..3 {
        assign(&t, project, &format!("behind the backlog {i}")).await;
    }
    let got = fast.wait_for(3, Duration::from_secs(15)).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the other endpoint waited {:?}",
        started.elapsed()
    );
    assert_eq!(ids(&got).len(), 3);
    let held = dead.received().len();
    assert!(
        held <= 4,
        "the dead endpoint holds at most its 4 slots: {held}"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_another_endpoint() {
    // Each request may take 20 s; the hanging one takes all of it.
    let sys = System::start_with_notifier(|c| {
        c.webhooks.timeout = Duration::from_secs(20);
    })
    .await;
    let t = Team::of(sys).await;
    let project = t.project().await;
    let hanging = Receiver::start().await;
    hanging.otherwise(Reply::Hang);
    let fast = Receiver::start().await;
    endpoint(&t.bob, &hanging, &["assigned"]).await;
    let fast_hook = endpoint(&t.bob, &fast, &["assigned"]).await;

    // More notifications than the hanging endpoint has slots (4).
    let started = std::time::Instant::now();
    for i in 0..6 {
        assign(&t, project, &format!("task {i}")).await;
    }
    let got = fast.wait_for(6, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the fast endpoint got everything within {:?}",
        started.elapsed()
    );
    assert_all_verified(&got);
    assert_eq!(ids(&got).len(), 6, "six deliveries, once each");
    let stuck = hanging.received();
    assert!(
        !stuck.is_empty() && stuck.len() <= 4,
        "the hanging endpoint holds at most its own 4 slots: {}",
        stuck.len()
    );
    let delivered = deliveries(&t.bob, &fast_hook)
        .await
        .into_iter()
        .filter(|d| d["state"] == "delivered")
        .count();
    assert!(delivered >= 5, "{delivered} of 6 recorded as delivered");

    // The deliveries page by keyset, newest first, each once.
    let first = t
        .bob
        .notifier
        .request(
            Method::GET,
            &format!("/webhooks/{fast_hook}/deliveries?limit=4"),
        )
        .await
        .expect(StatusCode::OK, "the first page");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = t
        .bob
        .notifier
        .request(
            Method::GET,
            &format!("/webhooks/{fast_hook}/deliveries?limit=4&cursor={cursor}"),
        )
        .await
        .expect(StatusCode::OK, "the second page");
    assert_eq!(second["next_cursor"], Value::Null);
    let paged: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .cloned()
        .collect();
    let paged_ids: BTreeSet<String> = paged
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged_ids, ids(&got), "every delivery once, by webhook-id");
    let created: Vec<_> = paged.iter().map(|d| instant(&d["created_at"])).collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
}

#[tokio::test]
async fn private_addresses_are_refused_at_creation_and_when_a_name_resolves_to_one() {
    let sys = System::start_with_notifier(|c| {
        c.webhooks.allow_private = false;
    })
    .await;
    let t = Team::of(sys).await;
    let project = t.project().await;
    let receiver = Receiver::start().await;
    for url in [
        format!("http://127.0.0.1:{}/hook", receiver.port),
        "http://[::1]/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://10.1.2.3/".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://localhost:{}/hook", receiver.port),
    ] {
        let problem = t
            .bob
            .notifier
            .request(Method::POST, "/webhooks")
            .json(&json!({ "url": url, "events": ["assigned"] }))
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "a private URL");
        assert_eq!(problem["errors"][0]["pointer"], "/url", "{url}: {problem}");
    }

    // A name that passed the check and resolves to loopback (registered
    // while the operator allowed private addresses, or whose DNS moved
    // since): refused where the connection is made.
    let hook = create(
        &t.bob,
        json!({ "url": "https://hooks.example.com/in", "events": ["assigned"], "secret": receiver.secret() }),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .expect("postgres");
    sqlx::query("UPDATE notifier_webhooks SET url = $2 WHERE id = $1::uuid")
        .bind(&hook)
        .bind(format!("http://localhost:{}/hook", receiver.port))
        .execute(&pool)
        .await
        .expect("point the endpoint at a loopback name");

    assign(&t, project, "to a loopback name").await;
    let d = delivery_until(&t.bob, &hook, "the refused attempt", |d| {
        d["attempts"].as_i64() >= Some(1) && d["last_error"].is_string()
    })
    .await;
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.contains("non-public"), "{reason}");
    // What the name resolves to is not told to the endpoint's owner.
    assert!(
        !reason.contains("127.0.0.1") && !reason.contains("::1"),
        "{reason}"
    );
    assert_ne!(d["state"], "delivered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn endpoints_are_their_owners_and_project_endpoints_their_admins() {
    let t = Team::start().await;
    let receiver = Receiver::start().await;
    let hook = endpoint(&t.bob, &receiver, &["assigned"]).await;

    // Another user's endpoint is the same 404 as a missing one.
    let missing = Uuid::new_v4().to_string();
    for id in [hook.as_str(), missing.as_str()] {
        for (method, path, body) in [
            (Method::GET, format!("/webhooks/{id}"), None),
            (
                Method::PATCH,
                format!("/webhooks/{id}"),
                Some(json!({ "enabled": false })),
            ),
            (Method::GET, format!("/webhooks/{id}/deliveries"), None),
            (Method::DELETE, format!("/webhooks/{id}"), None),
        ] {
            let mut call = t.cat.notifier.request(method.clone(), &path);
            if let Some(b) = &body {
                call = call.json(b);
            }
            let problem = call
                .await
                .expect_problem(StatusCode::NOT_FOUND, &format!("cat: {method} {path}"));
            assert_eq!(problem["detail"], "no webhook with this id");
        }
    }
    let cats = t
        .cat
        .notifier
        .request(Method::GET, "/webhooks")
        .await
        .expect(StatusCode::OK, "cat's list");
    assert_eq!(cats["items"], json!([]));
    // ... and bob's is untouched.
    let bobs = t
        .bob
        .notifier
        .request(Method::GET, &format!("/webhooks/{hook}"))
        .await
        .expect(StatusCode::OK, "bob's");
    assert_eq!(bobs["enabled"], true);

    // A project's endpoint: its owner and admins only.
    let project = t.project().await; // ann's; bob and cat are members
    let project_receiver = Receiver::start().await;
    let body = json!({
        "url": project_receiver.url,
        "events": ["assigned"],
        "project_id": project,
        "secret": project_receiver.secret(),
    });
    t.bob
        .notifier
        .request(Method::POST, "/webhooks")
        .json(&body)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "a member, not an admin");
    let elsewhere = t.ann.project("not bob's").await;
    let mut not_his = body.clone();
    not_his["project_id"] = json!(elsewhere);
    t.bob
        .notifier
        .request(Method::POST, "/webhooks")
        .json(&not_his)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not a member");
    let project_hook = create(&t.ann, body).await;
    assert_eq!(project_hook["project_id"], project.to_string());
    let project_hook = project_hook["id"].as_str().unwrap().to_owned();
    let listed = t
        .bob
        .notifier
        .request(Method::GET, "/webhooks")
        .await
        .expect(StatusCode::OK, "bob's list");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    t.bob
        .notifier
        .request(Method::GET, &format!("/webhooks/{project_hook}"))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "a member does not manage it");

    // It receives the project's notifications: bob assigned a task there.
    let task = t
        .ann
        .task(
            json!({ "title": "in the project", "project_id": project, "assignee_ids": [t.bob.id] }),
        )
        .await;
    let got = project_receiver.wait_for(1, WAIT).await;
    assert_all_verified(&got);
    let payload = got[0].json();
    assert_eq!(payload["data"]["task_id"], task.to_string());
    assert_eq!(payload["data"]["project_id"], project.to_string());
    assert_eq!(payload["data"]["user_id"], t.bob.id.to_string());
    // bob's own endpoint gets it too, under its own webhook-id.
    let own = receiver.wait_for(1, WAIT).await;
    assert_ne!(own[0].id, got[0].id);

    // Made an admin, cat manages it.
    t.ann.set_role(project, &t.cat, "admin").await;
    let cats = eventually("cat to see the project's endpoint", WAIT, || async {
        let list = t
            .cat
            .notifier
            .request(Method::GET, "/webhooks")
            .await
            .expect(StatusCode::OK, "cat's list");
        (list["items"].as_array()?.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(cats["items"][0]["id"], project_hook.as_str());
    let deleted = t
        .cat
        .notifier
        .request(Method::DELETE, &format!("/webhooks/{project_hook}"))
        .await;
    assert_eq!(
        deleted.status,
        StatusCode::NO_CONTENT,
        "an admin deletes it: {deleted:?}"
    );
    t.ann
        .notifier
        .request(Method::GET, &format!("/webhooks/{project_hook}"))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "deleted");
}

#[tokio::test]
async fn bad_webhook_requests_are_problems_naming_the_field() {
    let t = Team::start().await;
    for (body, pointer) in [
        (
            json!({ "url": "ftp://example.com/", "events": ["assigned"] }),
            "/url",
        ),
        (
            json!({ "url": "https://u:p@example.com/", "events": ["assigned"] }),
            "/url",
        ),
        (
            json!({ "url": "https://example.com/#x", "events": ["assigned"] }),
            "/url",
        ),
        (
            json!({ "url": "https://example.com/", "events": [] }),
            "/events",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["assigned", "assigned"] }),
            "/events/1",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["assigned"], "secret": "whsec_c2hvcnQ=" }),
            "/secret",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["assigned"], "secret": "plain" }),
            "/secret",
        ),
    ] {
        let problem = t
            .bob
            .notifier
            .request(Method::POST, "/webhooks")
            .json(&body)
            .await
            .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, &body.to_string());
        let pointers = tests::clients::pointers(&problem);
        assert!(pointers.iter().any(|p| p == pointer), "{body}: {problem}");
    }
    for body in [
        json!({ "url": "https://example.com/", "events": ["webhook_disabled"] }),
        json!({ "url": "https://example.com/", "events": ["assigned"], "extra": 1 }),
    ] {
        let r = t
            .bob
            .notifier
            .request(Method::POST, "/webhooks")
            .json(&body)
            .await;
        assert!(
            r.status == StatusCode::UNPROCESSABLE_ENTITY || r.status == StatusCode::BAD_REQUEST,
            "{body}: {r:?}"
        );
        assert_eq!(r.content_type(), "application/problem+json");
    }
    // A generated secret, shown once, of 32 bytes.
    let created = create(
        &t.bob,
        json!({ "url": "https://example.com/", "events": ["overdue"] }),
    )
    .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The cap: 25 endpoints per owner.
    for _ in 1..25 {
        create(
            &t.bob,
            json!({ "url": "https://example.com/", "events": ["overdue"] }),
        )
        .await;
    }
    let problem = t
        .bob
        .notifier
        .request(Method::POST, "/webhooks")
        .json(&json!({ "url": "https://example.com/", "events": ["overdue"] }))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "the 26th");
    assert!(
        problem["detail"].as_str().unwrap().contains("25"),
        "{problem}"
    );
    let r = t
        .bob
        .notifier
        .request(Method::GET, "/webhooks/not-a-uuid/deliveries?limit=0")
        .await;
    assert!(r.status.is_client_error(), "{r:?}");
}

#[tokio::test]
async fn a_notifier_killed_between_sending_and_recording_ends_with_one_delivery() {
    let mut sys = System::start().await;
    sys.stop_notifier().await;
    let mut config = sys
        .deployment
        .notifier_config(&sys.auth.url("/.well-known/jwks.json"));
    config.webhooks.timeout = Duration::from_secs(5);
    let mut notifier = sys.deployment.spawn_notifier_process_with(config).await;
    let t = Team::with_notifier_at(sys, &notifier.url("")).await;
    let project = t.project().await;
    let receiver = Receiver::start().await;
    receiver.script(&[Reply::Held(200)]);
    receiver.otherwise(Reply::Status(200));
    let hook = endpoint(&t.bob, &receiver, &["assigned"]).await;

    assign(&t, project, "sent, unheard").await;
    // The receiver has the request; the notifier waits for the answer.
    let first = receiver.wait_for(1, WAIT).await;
    notifier.kill9();
    let id = first[0].id.clone();
    notifier.restart().await;
    receiver.release();

    // Sent again once the lease is over, with the same webhook-id.
    let d = delivery_until(&t.bob, &hook, "the resend to be delivered", |d| {
        d["state"] == "delivered"
    })
    .await;
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["attempts"], 2, "{d}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = receiver.received();
    assert_all_verified(&got);
    assert!(got.len() <= 2, "at most twice: {}", got.len());
    assert_eq!(ids(&got), BTreeSet::from([id]), "one webhook-id");
    assert_eq!(got[0].body, got[got.len() - 1].body);
}

#[tokio::test]
async fn a_notifier_killed_between_scheduling_and_sending_delivers_once_after_restart() {
    let mut sys = System::start().await;
    sys.stop_notifier().await;
    let config = sys
        .deployment
        .notifier_config(&sys.auth.url("/.well-known/jwks.json"));
    let mut notifier = sys.deployment.spawn_notifier_process_with(config).await;
    let t = Team::with_notifier_at(sys, &notifier.url("")).await;
    let project = t.project().await;
    // Nothing listens there yet: every attempt is refused.
    let port = tests::process::free_port();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hook = create(
        &t.bob,
        json!({ "url": format!("http://127.0.0.1:{port}/hook"), "events": ["assigned"], "secret": secret }),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    assign(&t, project, "pending while down").await;
    let d = delivery_until(&t.bob, &hook, "a refused attempt", |d| {
        d["state"] == "pending" && d["attempts"].as_i64() >= Some(1)
    })
    .await;
    assert!(d["last_error"].is_string(), "{d}");
    notifier.kill9();
    let receiver = Receiver::start_on(port, secret).await;
    notifier.restart().await;

    let d = delivery_until(&t.bob, &hook, "the delivery after restart", |d| {
        d["state"] == "delivered"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    assert_all_verified(&got);
    assert_eq!(got.len(), 1, "exactly one: {got:?}");
    assert_eq!(d["id"], got[0].id.as_str());
}
