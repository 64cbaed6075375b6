//! The command side end to end: REST writes against real Postgres, the
//! event store's guarantees, and the outbox relay publishing to real Kafka.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use events::store::{self, AppendError, ExpectedVersion};
use events::{Event, EventEnvelope, EventMeta, Priority, TaskCreated, TaskEvent, TaskStatus};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::broker::Broker;
use tests::clients::CommandClient;
use tests::{eventually, http, servers, unique, Deployment, Running};
use uuid::Uuid;

// ------------------------------------------------------------------ harness

/// One test's command side: auth (for the JWKS), command-api, a user.
struct Ctx {
    dep: Deployment,
    _auth: Running,
    _cmd: Running,
    /// command-api as the test's user; any 5xx fails the test.
    api: CommandClient,
    db: PgPool,
    user: Uuid,
}

async fn setup() -> Ctx {
    let dep = Deployment::fresh().await;
    let auth = dep.spawn_auth().await;
    let cmd = dep.spawn_command_api(&auth).await;
    let db = pool(&dep).await;
    let user = Uuid::now_v7();
    let token = dep.token_for(user, events::Role::User);
    let api = CommandClient::new(&cmd.base, &token).refusing_server_errors();
    Ctx {
        dep,
        _auth: auth,
        _cmd: cmd,
        api,
        db,
        user,
    }
}

async fn pool(dep: &Deployment) -> PgPool {
    events::store::connect_and_migrate(&dep.database_url, 20)
        .await
        .expect("test database")
}

/// A command-api with keys taken straight from the deployment's signing key,
/// so no auth service (and so no second outbox relay) runs: the relay tests
/// must know exactly which relays are publishing.
async fn spawn_command_api_alone(dep: &Deployment) -> Running {
    spawn_command_api_alone_at(dep, &servers().kafka_brokers).await
}

/// [`spawn_command_api_alone`] publishing to the Kafka at `brokers`.
async fn spawn_command_api_alone_at(dep: &Deployment, brokers: &str) -> Running {
    let mut config = dep.command_api_config(tests::NO_JWKS);
    config.kafka.brokers = brokers.to_owned();
    dep.spawn_command_api_with(config).await
}

async fn stop(running: &mut Running) {
    running.stop.cancel();
    let _ = (&mut running.handle).await;
}

impl Ctx {
    async fn events_of(&self, stream: Uuid) -> Vec<EventEnvelope> {
        store::load_stream(&self.db, stream).await.expect("load")
    }

    async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.db)
            .await
            .expect("count")
    }
}

// --------------------------------------------------------------- REST: happy

#[tokio::test]
async fn create_patch_status_delete_with_headers() {
    let ctx = setup().await;

    let r = ctx
        .api
        .create_task(&json!({
            "title": "  Write the report  ",
            "tags": ["work", "q3", "work"],
            "due_at": "2030-01-02T03:04:05Z"
        }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(r.header("location"), Some(format!("/tasks/{id}").as_str()));
    assert_eq!(r.etag(), "\"1\"");
    assert_eq!(
        r.header("x-consistency-token"),
        Some(
            events::ConsistencyToken {
                stream_id: id,
                version: 1
            }
            .to_string()
            .as_str()
        )
    );
    assert_eq!(r.body["owner_id"], json!(ctx.user.to_string()));
    assert_eq!(r.body["title"], "Write the report");
    assert_eq!(r.body["description"], "");
    assert_eq!(r.body["status"], "todo");
    assert_eq!(r.body["priority"], "medium");
    assert_eq!(r.body["tags"], json!(["work", "q3"]));
    assert_eq!(r.body["due_at"], "2030-01-02T03:04:05Z");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["created_at"], r.body["updated_at"]);

    // The envelope metadata: actor, correlation id from X-Request-Id.
    let request_id = Uuid::new_v4();
    let r = ctx
        .api
        .patch_task(
            id,
            &json!({"title": "Write the final report", "priority": "high", "due_at": null}),
        )
        .request_id(&request_id.to_string())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.etag(),
        "\"4\"",
        "title, priority and due date: three events"
    );
    assert_eq!(r.body["title"], "Write the final report");
    assert_eq!(r.body["priority"], "high");
    assert_eq!(r.body["due_at"], Value::Null);
    assert_eq!(r.body["version"], 4);
    assert_eq!(
        r.header("x-consistency-token"),
        Some(format!("{}.4", id.simple()).as_str())
    );
    let history = ctx.events_of(id).await;
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "task.created",
            "task.updated",
            "task.priority_changed",
            "task.due_date_changed"
        ]
    );
    for e in &history {
        assert_eq!(e.actor, ctx.user);
        assert_eq!(e.causation_id, None);
    }
    assert!(history[1..].iter().all(|e| e.correlation_id == request_id));

    let r = ctx
        .api
        .set_status(id, &json!({"status": "in_progress"}))
        .if_match("\"4\"")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["status"], "in_progress");
    assert_eq!(r.etag(), "\"5\"");
    assert_ne!(r.body["updated_at"], r.body["created_at"]);

    let r = ctx.api.delete_task(id).if_match("\"5\"").send().await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(r.etag(), "\"6\"");
    assert_eq!(
        r.header("x-consistency-token"),
        Some(format!("{}.6", id.simple()).as_str())
    );
    assert!(r.raw.is_empty());
    let last = ctx.events_of(id).await.pop().unwrap();
    assert_eq!(last.event_type, "task.deleted");
    assert_eq!(last.version, 6);
}

#[tokio::test]
async fn a_command_that_changes_nothing_appends_nothing() {
    let ctx = setup().await;
    let (id, _) = ctx
        .api
        .created(&json!({"title": "t", "priority": "low", "tags": ["a", "b"]}))
        .await;
    for body in [
        json!({}),
        json!({"title": " t ", "priority": "low", "tags": ["b", "a"], "due_at": null, "description": ""}),
    ] {
        let r = ctx.api.patch_task(id, &body).send().await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {r:?}");
        assert_eq!(r.etag(), "\"1\"", "{body}");
        assert_eq!(r.body["version"], 1);
    }
    let r = ctx
        .api
        .set_status(id, &json!({"status": "todo"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.etag(), "\"1\"");
    assert_eq!(ctx.events_of(id).await.len(), 1);
}

// ---------------------------------------------------------- REST: refusals

#[tokio::test]
async fn invalid_fields_are_422_with_pointers_and_append_nothing() {
    let ctx = setup().await;
    let (id, _) = ctx.api.created(&json!({"title": "t"})).await;
    let long = |n: usize| "x".repeat(n);
    let many_tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let create_cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["/title"]),
        (json!({"title": ""}), vec!["/title"]),
        (json!({"title": "   "}), vec!["/title"]),
        (json!({"title": long(201)}), vec!["/title"]),
        (
            json!({"title": "t", "description": long(10_001)}),
            vec!["/description"],
        ),
        (json!({"title": "t", "priority": "asap"}), vec!["/priority"]),
        (json!({"title": "t", "due_at": "tomorrow"}), vec!["/due_at"]),
        (json!({"title": "t", "due_at": 17}), vec!["/due_at"]),
        (json!({"title": "t", "tags": many_tags}), vec!["/tags"]),
        (
            json!({"title": "t", "tags": ["ok", "", long(41)]}),
            vec!["/tags/1", "/tags/2"],
        ),
        (json!({"title": "t", "tags": "work"}), vec!["/tags"]),
        (
            json!({"title": "", "description": long(10_001)}),
            vec!["/title", "/description"],
        ),
        (json!({"title": 5}), vec!["/title"]),
    ];
    for (body, pointers) in create_cases {
        let r = ctx.api.create_task(&body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.pointers(), pointers, "{body}: {r:?}");
    }
    let patch_cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"title": null}), vec!["/title"]),
        (json!({"title": long(201)}), vec!["/title"]),
        (json!({"priority": null}), vec!["/priority"]),
        (json!({"priority": "urgentest"}), vec!["/priority"]),
        (json!({"tags": [" "]}), vec!["/tags/0"]),
        (json!({"description": long(10_001)}), vec!["/description"]),
    ];
    for (body, pointers) in patch_cases {
        let r = ctx.api.patch_task(id, &body).send().await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {r:?}");
        assert_eq!(r.pointers(), pointers, "{body}: {r:?}");
    }
    let r = ctx
        .api
        .set_status(id, &json!({"status": "finished"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert_eq!(r.pointers(), ["/status"]);
    assert_eq!(
        ctx.event_count().await,
        1,
        "only the first create was recorded"
    );
}

#[tokio::test]
async fn malformed_oversized_and_unknown_bodies_are_refused() {
    let ctx = setup().await;
    let (id, _) = ctx.api.created(&json!({"title": "t"})).await;

    let r = ctx
        .api
        .request(Method::POST, "/tasks")
        .body("application/json", b"{\"title\": ".to_vec())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");

    let r = ctx
        .api
        .create_task(&json!({"title": "t", "colour": "red"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert!(
        r.body["detail"].as_str().unwrap_or("").contains("colour"),
        "{r:?}"
    );
    assert_eq!(r.pointers(), ["/colour"]);

    let r = ctx
        .api
        .patch_task(id, &json!({"status": "done"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert_eq!(r.pointers(), ["/status"]);

    let big = json!({"title": "t", "description": "x".repeat(70 * 1024)});
    let r = ctx.api.create_task(&big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{r:?}");

    let r = ctx
        .api
        .request(Method::POST, "/tasks")
        .body("text/plain", b"{\"title\": \"t\"}".to_vec())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");

    for bad in ["3", "\"x\"", "W/\"1\"", "\"1\", \"2\""] {
        let r = ctx
            .api
            .patch_task(id, &json!({"title": "u"}))
            .if_match(bad)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "If-Match {bad}: {r:?}");
    }

    let r = ctx
        .api
        .create_task(&json!({"title": "t"}))
        .token(None)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let r = ctx
        .api
        .create_task(&json!({"title": "t"}))
        .token(Some("not-a-jwt".into()))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(ctx.event_count().await, 1);
}

#[tokio::test]
async fn illegal_transition_is_409_listing_the_allowed_ones() {
    let ctx = setup().await;
    let (id, _) = ctx.api.created(&json!({"title": "t"})).await;
    let status = |s: &'static str| ctx.api.set_status(id, &json!({ "status": s })).send();
    let r = status("done").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert!(r.problem_type().ends_with("/illegal-transition"), "{r:?}");
    assert_eq!(r.body["from"], "todo");
    assert_eq!(r.body["to"], "done");
    assert_eq!(r.body["allowed"], json!(["in_progress", "cancelled"]));

    assert_eq!(status("cancelled").await.status, StatusCode::OK);
    let r = status("in_progress").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(r.body["allowed"], json!(["todo"]));
    assert_eq!(status("todo").await.status, StatusCode::OK);
    assert_eq!(status("in_progress").await.status, StatusCode::OK);
    assert_eq!(status("done").await.status, StatusCode::OK);
    let r = status("cancelled").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(r.body["allowed"], json!(["todo"]));

    let to: Vec<TaskStatus> = ctx
        .events_of(id)
        .await
        .iter()
        .filter_map(|e| match e.decode() {
            Ok(Event::Task(TaskEvent::StatusChanged(s))) => Some(s.to),
            _ => None,
        })
        .collect();
    use TaskStatus::*;
    assert_eq!(to, [Cancelled, Todo, InProgress, Done]);
}

#[tokio::test]
async fn other_users_deleted_and_malformed_tasks_are_404() {
    let ctx = setup().await;
    let (id, _) = ctx.api.created(&json!({"title": "mine"})).await;
    let stranger = ctx.dep.token_for(Uuid::now_v7(), events::Role::User);
    let admin = ctx.dep.token_for(Uuid::now_v7(), events::Role::Admin);
    for token in [stranger, admin] {
        let as_other = ctx.api.as_user(&token);
        let r = as_other
            .patch_task(id, &json!({"title": "theirs"}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
        let r = as_other
            .patch_task(id, &json!({"title": "theirs"}))
            .if_match("\"1\"")
            .send()
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "If-Match must not reveal it: {r:?}"
        );
        let r = as_other
            .set_status(id, &json!({"status": "in_progress"}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
        let r = as_other.delete_task(id).send().await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    }
    assert_eq!(ctx.events_of(id).await.len(), 1);

    for path in [
        "/tasks/not-a-uuid",
        "/tasks/123",
        &format!("/tasks/{}", Uuid::now_v7()),
    ] {
        let r = ctx
            .api
            .request(Method::PATCH, path)
            .json(&json!({"title": "x"}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r:?}");
        let r = ctx.api.request(Method::DELETE, path).send().await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r:?}");
    }

    // A user stream is not a task, even for that user.
    let user_stream = Uuid::now_v7();
    let mut conn = ctx.db.acquire().await.unwrap();
    store::append(
        &mut conn,
        user_stream,
        ExpectedVersion::Exact(0),
        &[Event::User(events::UserEvent::Registered(
            events::UserRegistered {
                email: "u@example.test".into(),
                display_name: "U".into(),
                role: events::Role::User,
            },
        ))],
        meta(user_stream),
    )
    .await
    .unwrap();
    let own = ctx.dep.token_for(user_stream, events::Role::User);
    let r = ctx
        .api
        .delete_task(user_stream)
        .token(Some(own))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");

    // Deleted: every write is 404 from then on (documented choice).
    assert_eq!(
        ctx.api.delete_task(id).send().await.status,
        StatusCode::NO_CONTENT
    );
    let r = ctx.api.delete_task(id).send().await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = ctx
        .api
        .patch_task(id, &json!({"title": "again"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = ctx
        .api
        .set_status(id, &json!({"status": "in_progress"}))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(ctx.events_of(id).await.len(), 2);
}

// ------------------------------------------------------------- concurrency

#[tokio::test]
async fn if_match_mismatch_is_412_and_appends_nothing() {
    let ctx = setup().await;
    let (id, _) = ctx.api.created(&json!({"title": "t"})).await;
    let r = ctx.api.patch_task(id, &json!({"title": "u"})).send().await;
    assert_eq!(r.etag(), "\"2\"");
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/tasks/{id}"),
            Some(json!({"title": "stale"})),
        ),
        (
            Method::POST,
            format!("/tasks/{id}/status"),
            Some(json!({"status": "in_progress"})),
        ),
        (Method::DELETE, format!("/tasks/{id}"), None),
    ] {
        let mut call = ctx.api.request(method.clone(), &path).if_match("\"1\"");
        if let Some(b) = body {
            call = call.json(&b);
        }
        let r = call.send().await;
        assert_eq!(
            r.status,
            StatusCode::PRECONDITION_FAILED,
            "{method} {path}: {r:?}"
        );
        assert_eq!(r.body["current_version"], 2, "{r:?}");
        assert!(r.problem_type().ends_with("/precondition-failed"));
    }
    assert_eq!(ctx.events_of(id).await.len(), 2);
    let r = ctx
        .api
        .patch_task(id, &json!({"title": "fresh"}))
        .if_match("\"2\"")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.etag(), "\"3\"");
}

#[tokio::test]
async fn concurrent_writers_with_the_same_if_match_exactly_one_wins() {
    let ctx = setup().await;
    let (id, _) = ctx.api.created(&json!({"title": "t"})).await;
    let writers = (0..50).map(|i| {
        ctx.api
            .patch_task(id, &json!({ "title": format!("writer {i}") }))
            .if_match("\"1\"")
            .send()
    });
    let replies = futures::future::join_all(writers).await;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for r in &replies {
        *by_status.entry(r.status.as_u16()).or_default() += 1;
        if r.status == StatusCode::PRECONDITION_FAILED {
            assert_eq!(r.body["current_version"], 2, "{r:?}");
        }
    }
    assert_eq!(by_status, BTreeMap::from([(200, 1), (412, 49)]));
    let versions: Vec<u64> = ctx.events_of(id).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2], "no gap, no duplicate");

    // Without If-Match every writer applies, one after the other.
    let writers = (0..10).map(|i| {
        ctx.api
            .patch_task(id, &json!({ "title": format!("last writer {i}") }))
            .send()
    });
    let replies = futures::future::join_all(writers).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::OK),
        "{replies:?}"
    );
    let versions: Vec<u64> = ctx.events_of(id).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=12).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_writers_without_if_match_decide_on_the_latest_state() {
    let ctx = setup().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (id, _) = ctx.api.created(&json!({"title": "t"})).await;
        let r = ctx
            .api
            .set_status(id, &json!({"status": "in_progress"}))
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK);
        ids.push(id);
    }
    // Done and cancelled race on each task: whichever lands first, the
    // others must be decided on it (done → cancelled and cancelled → done
    // are illegal), never on the in_progress they may have loaded before.
    let ctx = &ctx;
    let racers = ids.iter().flat_map(|id| {
        (0..30).map(move |i| {
            let to = if i % 2 == 0 { "done" } else { "cancelled" };
            ctx.api.set_status(id, &json!({ "status": to })).send()
        })
    });
    let replies = futures::future::join_all(racers).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK || r.status == StatusCode::CONFLICT),
        "{replies:?}"
    );
    for id in ids {
        let changes: Vec<(TaskStatus, TaskStatus)> = ctx
            .events_of(id)
            .await
            .iter()
            .filter_map(|e| match e.decode() {
                Ok(Event::Task(TaskEvent::StatusChanged(s))) => Some((s.from, s.to)),
                _ => None,
            })
            .collect();
        assert_eq!(
            changes.len(),
            2,
            "exactly one racer changed {id}: {changes:?}"
        );
        assert_eq!(
            changes[1].0, changes[0].1,
            "decided on the latest state: {changes:?}"
        );
    }
}

// -------------------------------------------------------------- idempotency

#[tokio::test]
async fn idempotent_retry_replays_the_first_response_and_appends_nothing() {
    let ctx = setup().await;
    let key = Uuid::new_v4().to_string();
    let create = || {
        ctx.api
            .create_task(&json!({"title": "once", "tags": ["a"]}))
            .idempotency_key(&key)
            .send()
    };
    let first = create().await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(ctx.event_count().await, 1);
    let again = create().await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    assert_eq!(again.raw, first.raw, "same body, byte for byte");
    for h in ["location", "etag", "x-consistency-token", "content-type"] {
        assert_eq!(again.header(h), first.header(h), "header {h}");
    }
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(ctx.event_count().await, 1, "the retry appended nothing");

    let id = first.body["id"].as_str().unwrap().to_owned();
    // The same key on another path is another key.
    let patch = || {
        ctx.api
            .patch_task(&id, &json!({"title": "twice"}))
            .idempotency_key(&key)
            .send()
    };
    let p1 = patch().await;
    assert_eq!(p1.status, StatusCode::OK, "{p1:?}");
    // Someone else changes the task; the retry still replays the first answer.
    let other = ctx
        .api
        .patch_task(&id, &json!({"title": "thrice"}))
        .send()
        .await;
    assert_eq!(other.etag(), "\"3\"");
    let p2 = patch().await;
    assert_eq!(p2.status, StatusCode::OK);
    assert_eq!(p2.raw, p1.raw);
    assert_eq!(p2.etag(), "\"2\"");

    let delete = || ctx.api.delete_task(&id).idempotency_key("delete-1").send();
    let d1 = delete().await;
    assert_eq!(d1.status, StatusCode::NO_CONTENT, "{d1:?}");
    let d2 = delete().await;
    assert_eq!(
        d2.status,
        StatusCode::NO_CONTENT,
        "a retried delete is not a 404: {d2:?}"
    );
    assert_eq!(d2.etag(), d1.etag());
    assert_eq!(ctx.event_count().await, 4);

    // Keys are per user.
    let other_user = ctx.dep.token_for(Uuid::now_v7(), events::Role::User);
    let r = ctx
        .api
        .create_task(&json!({"title": "once", "tags": ["a"]}))
        .token(Some(other_user))
        .idempotency_key(&key)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_ne!(r.body["id"], first.body["id"]);
    assert_eq!(ctx.event_count().await, 5);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let ctx = setup().await;
    let first = ctx
        .api
        .create_task(&json!({"title": "one"}))
        .idempotency_key("k-1")
        .send()
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let r = ctx
        .api
        .create_task(&json!({"title": "two"}))
        .idempotency_key("k-1")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert!(
        r.problem_type().ends_with("/idempotency-key-reused"),
        "{r:?}"
    );
    assert_eq!(ctx.event_count().await, 1);

    let r = ctx
        .api
        .create_task(&json!({"title": "one"}))
        .idempotency_key(&"k".repeat(256))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let r = ctx
        .api
        .create_task(&json!({"title": "one"}))
        .idempotency_key(&"k".repeat(255))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(ctx.event_count().await, 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_append_once() {
    let ctx = setup().await;
    let calls = (0..20).map(|_| {
        ctx.api
            .create_task(&json!({"title": "raced"}))
            .idempotency_key("race")
            .send()
    });
    let replies = futures::future::join_all(calls).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{replies:?}"
    );
    let bodies: HashSet<&[u8]> = replies.iter().map(|r| r.raw.as_slice()).collect();
    assert_eq!(bodies.len(), 1, "every caller sees the one response");
    assert_eq!(ctx.event_count().await, 1);
}

#[tokio::test]
async fn expired_keys_are_cleaned_up_and_free_again() {
    let ctx = setup().await;
    let send = |title: &'static str| {
        ctx.api
            .create_task(&json!({ "title": title }))
            .idempotency_key("old")
            .send()
    };
    assert_eq!(send("first").await.status, StatusCode::CREATED);
    // Age the key past the retention.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&ctx.db)
        .await
        .unwrap();
    let r = send("second").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "an expired key is free: {r:?}"
    );
    assert_eq!(r.body["title"], "second");
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(ctx.event_count().await, 2);

    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&ctx.db)
        .await
        .unwrap();
    let fresh = ctx
        .api
        .create_task(&json!({"title": "kept"}))
        .idempotency_key("fresh")
        .send()
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    let deleted = command_api::idempotency::delete_expired(&ctx.db)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys")
        .fetch_all(&ctx.db)
        .await
        .unwrap();
    assert_eq!(keys, ["fresh"]);
}

// ----------------------------------------------------------------- OpenAPI

#[tokio::test]
async fn openapi_document_describes_the_commands() {
    let ctx = setup().await;
    let r = ctx
        .api
        .request(Method::GET, "/openapi.json")
        .token(None)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let doc = &r.body;
    for (path, method) in [
        ("/tasks", "post"),
        ("/tasks/{id}", "patch"),
        ("/tasks/{id}", "delete"),
        ("/tasks/{id}/status", "post"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert_eq!(op["security"][0]["bearer"], json!([]), "{method} {path}");
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            params.contains(&"Idempotency-Key"),
            "{method} {path}: {params:?}"
        );
        if path != "/tasks" {
            assert!(params.contains(&"If-Match"), "{method} {path}: {params:?}");
        }
        let ok = op["responses"]
            .as_object()
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.starts_with('2'))
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or(Value::Null);
        assert!(ok["headers"]["ETag"].is_object(), "{method} {path}");
        assert!(
            ok["headers"]["X-Consistency-Token"].is_object(),
            "{method} {path}"
        );
        assert!(op["responses"]["404"].is_object() || path == "/tasks");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "Problem",
        "TaskResource",
        "CreateTaskRequest",
        "UpdateTaskRequest",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

// ------------------------------------------------------------- event store

fn meta(actor: Uuid) -> EventMeta {
    EventMeta {
        actor,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: chrono::Utc::now(),
    }
}

fn task_created(owner: Uuid, title: &str) -> Event {
    Event::Task(TaskEvent::Created(TaskCreated {
        owner_id: owner,
        project_id: None,
        assignee_ids: vec![],
        title: title.into(),
        description: String::new(),
        status: TaskStatus::Todo,
        priority: Priority::Medium,
        due_at: None,
        tags: vec![],
    }))
}

fn task_renamed(title: &str) -> Event {
    Event::Task(TaskEvent::Updated(events::TaskUpdated {
        title: Some(title.into()),
        ..Default::default()
    }))
}

#[tokio::test]
async fn concurrent_appends_at_one_expected_version_conflict() {
    let dep = Deployment::fresh().await;
    let db = pool(&dep).await;
    let stream = Uuid::now_v7();
    let owner = Uuid::now_v7();
    let mut conn = db.acquire().await.unwrap();
    store::append(
        &mut conn,
        stream,
        ExpectedVersion::Exact(0),
        &[task_created(owner, "t")],
        meta(owner),
    )
    .await
    .unwrap();
    drop(conn);

    let writers = (0..10).map(|i| {
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            let r = store::append(
                &mut tx,
                stream,
                ExpectedVersion::Exact(1),
                &[task_renamed(&format!("w{i}"))],
                meta(owner),
            )
            .await;
            // Hold the transaction open a little so the writers overlap.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match r {
                Ok(_) => tx.commit().await.map(|_| true).unwrap(),
                Err(AppendError::Conflict { .. }) => false,
                Err(e) => panic!("append failed: {e}"),
            }
        }
    });
    let outcomes = futures::future::join_all(writers).await;
    assert_eq!(
        outcomes.iter().filter(|won| **won).count(),
        1,
        "{outcomes:?}"
    );
    let versions: Vec<u64> = store::load_stream(&db, stream)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2]);

    let mut conn = db.acquire().await.unwrap();
    let stale = store::append(
        &mut conn,
        stream,
        ExpectedVersion::Exact(1),
        &[task_renamed("x")],
        meta(owner),
    )
    .await;
    assert!(
        matches!(
            stale,
            Err(AppendError::Conflict {
                actual: Some(2),
                ..
            })
        ),
        "{stale:?}"
    );
}

#[tokio::test]
async fn events_are_immutable() {
    let dep = Deployment::fresh().await;
    let db = pool(&dep).await;
    let stream = Uuid::now_v7();
    let mut conn = db.acquire().await.unwrap();
    store::append(
        &mut conn,
        stream,
        ExpectedVersion::Exact(0),
        &[task_created(stream, "t")],
        meta(stream),
    )
    .await
    .unwrap();
    for sql in [
        "UPDATE events SET data = '{}'::jsonb",
        "UPDATE events SET version = 7",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
    ] {
        let r = sqlx::query(sql).execute(&db).await;
        assert!(r.is_err(), "{sql} succeeded");
    }
    let history = store::load_stream(&db, stream).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].data["title"], "t");
}

// -------------------------------------------------------------------- relay

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
struct Published {
    partition: i32,
    offset: i64,
    key: String,
    type_header: Option<String>,
    schema_header: Option<String>,
    timestamp_ms: Option<i64>,
    envelope: EventEnvelope,
}

/// Reads `topic` from the beginning until `enough` holds, then `linger`
/// longer (to catch duplicates), or panics after `timeout`.
async fn read_topic(
    topic: &str,
    enough: impl Fn(&[Published]) -> bool,
    linger: Duration,
    timeout: Duration,
) -> Vec<Published> {
    read_topic_at(&servers().kafka_brokers, topic, enough, linger, timeout).await
}

/// [`read_topic`] from the Kafka at `brokers`.
async fn read_topic_at(
    brokers: &str,
    topic: &str,
    enough: impl Fn(&[Published]) -> bool,
    linger: Duration,
    timeout: Duration,
) -> Vec<Published> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("commands-test-"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..events::topics::EVENT_TOPIC_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out: Vec<Published> = Vec::new();
    let mut satisfied_at: Option<Instant> = None;
    loop {
        if satisfied_at.is_none() && enough(&out) {
            satisfied_at = Some(Instant::now());
        }
        if satisfied_at.is_some_and(|t| t.elapsed() >= linger) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} reading {topic}: got {} messages",
            out.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            out.push(Published {
                partition: m.partition(),
                offset: m.offset(),
                key: m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                type_header: events::kafka::header_str(&m, "type").map(str::to_owned),
                schema_header: events::kafka::header_str(&m, "schema").map(str::to_owned),
                timestamp_ms: m.timestamp().to_millis(),
                envelope: events::kafka::envelope_of(&m).expect("envelope"),
            });
        }
    }
}

async fn all_events(db: &PgPool) -> Vec<EventEnvelope> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM events ORDER BY global_position",
        store::ENVELOPE_COLUMNS
    ))
    .fetch_all(db)
    .await
    .unwrap();
    rows.iter()
        .map(|r| store::envelope_from_row(r).unwrap())
        .collect()
}

async fn outbox_len(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_outbox")
        .fetch_one(db)
        .await
        .unwrap()
}

/// Every event of the table is on the topic exactly once, keyed by its
/// stream, with type/schema headers, in version order per stream.
fn assert_published_once_in_order(stored: &[EventEnvelope], published: &[Published]) {
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for p in published {
        *seen.entry(p.envelope.event_id).or_default() += 1;
        assert_eq!(p.key, p.envelope.stream_id.to_string(), "key = stream id");
        assert_eq!(
            p.type_header.as_deref(),
            Some(p.envelope.event_type.as_str())
        );
        assert_eq!(p.schema_header, Some(p.envelope.schema.to_string()));
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "published more than once: {dupes:?}");
    for e in stored {
        assert_eq!(
            seen.get(&e.event_id),
            Some(&1),
            "event {} v{} missing",
            e.stream_id,
            e.version
        );
        let on_topic = published
            .iter()
            .find(|p| p.envelope.event_id == e.event_id)
            .unwrap();
        assert_eq!(
            &on_topic.envelope, e,
            "the topic carries the stored envelope"
        );
    }
    assert_eq!(published.len(), stored.len());
    // Per stream: offsets increase with versions 1, 2, 3...
    for (stream, msgs) in by_stream_in_offset_order(published) {
        let versions: Vec<u64> = msgs.iter().map(|p| p.envelope.version).collect();
        assert_eq!(
            versions,
            (1..=msgs.len() as u64).collect::<Vec<_>>(),
            "stream {stream}"
        );
    }
}

/// The messages of each stream in offset order; each stream must sit on
/// one partition (the key is the stream id), or offsets would not order it.
fn by_stream_in_offset_order(published: &[Published]) -> HashMap<Uuid, Vec<&Published>> {
    let mut streams: HashMap<Uuid, Vec<&Published>> = HashMap::new();
    for p in published {
        streams.entry(p.envelope.stream_id).or_default().push(p);
    }
    for (stream, msgs) in &mut streams {
        let partitions: HashSet<i32> = msgs.iter().map(|p| p.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "stream {stream} spread over {partitions:?}"
        );
        msgs.sort_by_key(|p| p.offset);
    }
    streams
}

/// At-least-once in per-stream order, as the relay promises: every event of
/// the table is on the topic (with the stored envelope, keyed by its stream)
/// and nothing else is; each stream is on one partition, and a consumer that
/// skips versions it has already seen (as the projector does) reads 1, 2, 3...
/// up to the stream's last version, with no gap. Returns how many messages
/// were duplicates.
fn assert_published_at_least_once_in_order(
    stored: &[EventEnvelope],
    published: &[Published],
) -> usize {
    let by_id: HashMap<Uuid, &EventEnvelope> = stored.iter().map(|e| (e.event_id, e)).collect();
    for p in published {
        let e = by_id.get(&p.envelope.event_id).unwrap_or_else(|| {
            panic!(
                "on the topic but not in the table: {} v{}",
                p.envelope.stream_id, p.envelope.version
            )
        });
        assert_eq!(&&p.envelope, e, "the topic carries the stored envelope");
        assert_eq!(p.key, e.stream_id.to_string(), "key = stream id");
    }
    let ids: HashSet<Uuid> = published.iter().map(|p| p.envelope.event_id).collect();
    let missing: Vec<String> = stored
        .iter()
        .filter(|e| !ids.contains(&e.event_id))
        .map(|e| format!("{} v{}", e.stream_id, e.version))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events missing from the topic, e.g. {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(5)]
    );
    let mut last_version: HashMap<Uuid, u64> = HashMap::new();
    for e in stored {
        let v = last_version.entry(e.stream_id).or_default();
        *v = (*v).max(e.version);
    }
    for (stream, msgs) in by_stream_in_offset_order(published) {
        let mut applied = 0;
        for m in &msgs {
            if m.envelope.version <= applied {
                continue;
            }
            assert_eq!(
                m.envelope.version,
                applied + 1,
                "stream {stream}: version {} follows {applied} on the topic (offsets {:?})",
                m.envelope.version,
                msgs.iter()
                    .map(|p| (p.offset, p.envelope.version))
                    .collect::<Vec<_>>()
            );
            applied = m.envelope.version;
        }
        assert_eq!(Some(&applied), last_version.get(&stream), "stream {stream}");
    }
    published.len() - ids.len()
}

/// After an outage of the test's own `broker`: every stored event reaches
/// its topic in per-stream order (reading lingers `linger` after the last
/// one arrived, up to `timeout`), and the outbox empties. Returns how many
/// messages were duplicates.
async fn assert_all_on_topic_and_outbox_drained(
    broker: &Broker,
    topic: &str,
    stored: &[EventEnvelope],
    db: &PgPool,
    linger: Duration,
    timeout: Duration,
) -> usize {
    let published = read_topic_at(
        &broker.bootstrap(),
        topic,
        distinct_events(stored.len()),
        linger,
        timeout,
    )
    .await;
    let duplicates = assert_published_at_least_once_in_order(stored, &published);
    eventually("outbox drained", Duration::from_secs(10), || async {
        (outbox_len(db).await == 0).then_some(())
    })
    .await;
    duplicates
}

/// `enough` for [`read_topic`]: at least `n` distinct events (duplicates
/// do not count).
fn distinct_events(n: usize) -> impl Fn(&[Published]) -> bool {
    move |p| {
        p.iter()
            .map(|m| m.envelope.event_id)
            .collect::<HashSet<_>>()
            .len()
            >= n
    }
}

/// Writes a few tasks with several events each through `cmd`.
async fn write_tasks(cmd: &Running, token: &str, tasks: usize) {
    let api = CommandClient::new(&cmd.base, token);
    for i in 0..tasks {
        let r = api
            .create_task(&json!({"title": format!("task {i}")}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let id = r.body["id"].as_str().unwrap().to_owned();
        for (j, status) in ["in_progress", "done"].iter().enumerate() {
            let r = api
                .patch_task(&id, &json!({"title": format!("task {i}.{j}")}))
                .await;
            assert_eq!(r.status, StatusCode::OK);
            let r = api.set_status(&id, &json!({ "status": status })).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn relay_publishes_every_event_keyed_with_headers_in_stream_order() {
    let dep = Deployment::fresh().await;
    let cmd = spawn_command_api_alone(&dep).await;
    let db = pool(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    write_tasks(&cmd, &token, 6).await;
    let stored = all_events(&db).await;
    assert_eq!(stored.len(), 6 * 5);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let n = stored.len();
    let published = read_topic(
        &topic,
        |p| p.len() >= n,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;
    assert_published_once_in_order(&stored, &published);
    eventually("outbox drained", Duration::from_secs(10), || async {
        (outbox_len(&db).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn relay_restart_publishes_what_was_committed_while_it_was_down() {
    let dep = Deployment::fresh().await;
    let mut cmd = spawn_command_api_alone(&dep).await;
    let db = pool(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    write_tasks(&cmd, &token, 1).await;
    eventually("outbox drained", Duration::from_secs(10), || async {
        (outbox_len(&db).await == 0).then_some(())
    })
    .await;
    stop(&mut cmd).await;

    // Committed while no relay runs: it waits in the outbox.
    let stream = Uuid::now_v7();
    let mut tx = db.begin().await.unwrap();
    store::append(
        &mut tx,
        stream,
        ExpectedVersion::Exact(0),
        &[
            task_created(stream, "while down"),
            task_renamed("still down"),
        ],
        meta(stream),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        outbox_len(&db).await,
        2,
        "nothing published without a relay"
    );

    let _cmd = spawn_command_api_alone(&dep).await;
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let stored = all_events(&db).await;
    let n = stored.len();
    let published = read_topic(
        &topic,
        |p| p.len() >= n,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;
    assert_published_once_in_order(&stored, &published);
    assert!(published.iter().any(|p| p.envelope.stream_id == stream));
}

#[tokio::test]
async fn two_relays_publish_each_event_once_in_order() {
    let dep = Deployment::fresh().await;
    let mut first = spawn_command_api_alone(&dep).await;
    let second = spawn_command_api_alone(&dep).await;
    let db = pool(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    // Both instances take writes; both relays compete for the outbox.
    tokio::join!(
        write_tasks(&first, &token, 4),
        write_tasks(&second, &token, 4)
    );
    // The publishing one stops; the other takes over for what follows.
    stop(&mut first).await;
    write_tasks(&second, &token, 3).await;
    let stored = all_events(&db).await;
    assert_eq!(stored.len(), 11 * 5);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let n = stored.len();
    let published = read_topic(
        &topic,
        |p| p.len() >= n,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    assert_published_once_in_order(&stored, &published);
}

#[tokio::test]
async fn commit_to_kafka_latency_is_well_under_a_second_when_idle() {
    let dep = Deployment::fresh().await;
    let cmd = spawn_command_api_alone(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let samples = 5;
    for i in 0..samples {
        // Idle: the relay is parked, waiting for a notification.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = CommandClient::new(&cmd.base, &token)
            .create_task(&json!({ "title": format!("latency {i}") }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let published = read_topic(
        &topic,
        |p| p.len() >= samples,
        Duration::ZERO,
        Duration::from_secs(30),
    )
    .await;
    // Producer timestamp minus the moment the command was stamped (just
    // before its transaction): an upper bound of commit → Kafka.
    let mut lags: Vec<i64> = published
        .iter()
        .map(|p| p.timestamp_ms.expect("timestamp") - p.envelope.occurred_at.timestamp_millis())
        .collect();
    lags.sort();
    eprintln!("command → Kafka lag (ms), sorted: {lags:?}");
    assert!(lags.iter().all(|l| *l < 2_000), "lags {lags:?}");
}

/// Deliveries that fail (the outage outlasts the producer's message
/// timeout): the publishing relay's producer points at a port where no
/// broker answers and gives up on each message after 1.5 s, round after
/// round. Commands are still accepted, no failed event is marked published,
/// and once a relay that reaches Kafka takes over, every event arrives, in
/// order per stream. (A real broker stop and restart, shorter than the
/// timeout, is `kafka_stopped_while_500_commands_are_accepted_...`.)
#[tokio::test]
async fn failed_deliveries_stay_in_the_outbox_until_a_relay_reaching_kafka_publishes_them() {
    use events::relay::{OutboxRelay, RelayConfig};
    let dep = Deployment::fresh().await;
    let db = pool(&dep).await;
    let topics = events::topics::Topics::with_prefix(dep.topic_prefix.clone());
    let unreachable = events::kafka::producer_config("127.0.0.1:1")
        .set("message.timeout.ms", "1500")
        .create()
        .expect("producer");
    let cut_off = tokio_util::sync::CancellationToken::new();
    let blind = tokio::spawn(
        OutboxRelay::new(
            db.clone(),
            unreachable,
            topics.clone(),
            RelayConfig::default(),
        )
        .run(cut_off.clone()),
    );
    // The blind relay holds the publishing lock before command-api's relay starts.
    eventually(
        "the blind relay leading",
        Duration::from_secs(10),
        || async {
            // pg_locks is cluster-wide: other tests' relays hold the same key
            // in their own databases.
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks
                  WHERE locktype = 'advisory' AND granted
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            (held > 0).then_some(())
        },
    )
    .await;
    let cmd = spawn_command_api_alone(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);

    let api = CommandClient::new(&cmd.base, &token);

    let total = 500;
    let mut ids = Vec::new();
    for chunk in (0..total).collect::<Vec<_>>().chunks(50) {
        let creates = chunk.iter().map(|i| {
            api.create_task(&json!({ "title": format!("during the outage {i}") }))
                .send()
        });
        for r in futures::future::join_all(creates).await {
            assert_eq!(r.status, StatusCode::CREATED, "accepted during the outage");
            ids.push(r.body["id"].as_str().unwrap().to_owned());
        }
    }
    // Second events on some streams, so per-stream order is exercised.
    for id in ids.iter().take(50) {
        let r = api.set_status(id, &json!({"status": "in_progress"})).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Long enough for the blind relay's deliveries to time out and be retried.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        outbox_len(&db).await,
        total as i64 + 50,
        "nothing was lost or marked"
    );

    // Kafka is reachable again: the blind relay goes, command-api's takes over.
    blind.abort();
    let _ = blind.await;
    let stored = all_events(&db).await;
    let n = stored.len();
    let published = read_topic(
        &topics.task_events(),
        |p| p.len() >= n,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    assert_published_once_in_order(&stored, &published);
    drop(cmd);
}

/// Kafka itself goes down: the test's own broker (`tests::broker`) is
/// stopped with SIGTERM after the pipeline has published, 500 commands over
/// 100 interleaved streams are accepted while it is down (none of them
/// reaches Kafka: the outbox holds every one), then the broker starts again
/// on the same ports and data, and the relay of the same command-api
/// publishes them: every event of the table is on the topic, in version
/// order per stream.
#[tokio::test]
async fn kafka_stopped_while_500_commands_are_accepted_then_restarted_every_event_arrives_in_order()
{
    let started = Instant::now();
    let mut broker = Broker::start().await;
    let dep = Deployment::fresh().await;
    let cmd = spawn_command_api_alone_at(&dep, &broker.bootstrap()).await;
    // auth on the same broker, with a database of its own (its relay must
    // not compete for this deployment's outbox): for its /readyz below.
    let mut auth_config = dep.auth_config();
    auth_config.kafka.brokers = broker.bootstrap();
    auth_config.postgres = service::config::PostgresSettings::new(tests::fresh_database().await);
    let auth_app = auth::Application::build(auth_config)
        .await
        .expect("auth starts");
    let auth_ready = format!("http://127.0.0.1:{}/readyz", auth_app.port());
    let auth_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(auth_app.run_until_stopped(auth_stop.clone()));
    let _stop_auth = auth_stop.drop_guard();
    let db = pool(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();

    // Before the outage: published, so the topic holds messages the
    // restarted broker must still have.
    write_tasks(&cmd, &token, 2).await;
    eventually(
        "published before the outage",
        Duration::from_secs(30),
        || async { (outbox_len(&db).await == 0).then_some(()) },
    )
    .await;
    let before = all_events(&db).await.len();

    broker.stop().await;
    let outage = Instant::now();
    // Readiness means "can serve its requests": writes go to the outbox,
    // so command-api stays ready while Kafka is down.
    let ready = http().get(cmd.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "command-api's /readyz while Kafka is down"
    );
    let ready = http().get(&auth_ready).send().await.unwrap();
    assert_eq!(ready.status(), 200, "auth's /readyz while Kafka is down");
    // 100 streams, 5 commands each, in order per stream, streams concurrent.
    let api = CommandClient::new(&cmd.base, &token);
    let per_stream = |i: usize| {
        let api = &api;
        async move {
            let send = |method: Method, path: String, body: Value| async move {
                let r = api.request(method.clone(), &path).json(&body).await;
                let (status, body) = (r.status, r.body);
                assert!(
                    status.is_success(),
                    "{method} {path} answered {status} while Kafka was down: {body}"
                );
                body
            };
            let created = send(
                Method::POST,
                "/tasks".into(),
                json!({ "title": format!("outage {i}") }),
            )
            .await;
            let id = created["id"].as_str().expect("id").to_owned();
            let task = format!("/tasks/{id}");
            let status = format!("/tasks/{id}/status");
            send(
                Method::PATCH,
                task.clone(),
                json!({ "title": format!("outage {i}, renamed") }),
            )
            .await;
            send(
                Method::POST,
                status.clone(),
                json!({ "status": "in_progress" }),
            )
            .await;
            send(Method::PATCH, task, json!({ "priority": "high" })).await;
            send(Method::POST, status, json!({ "status": "done" })).await;
        }
    };
    futures::future::join_all((0..100).map(per_stream)).await;
    let accepted_in = outage.elapsed();
    let stored = all_events(&db).await;
    assert_eq!(stored.len() - before, 500, "one event per command");
    assert_eq!(
        outbox_len(&db).await,
        500,
        "nothing marked published while Kafka was down"
    );
    assert!(!broker.is_running());

    broker.restart().await;
    let down_for = outage.elapsed();
    let duplicates = assert_all_on_topic_and_outbox_drained(
        &broker,
        &topic,
        &stored,
        &db,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    eprintln!(
        "kafka outage: 500 commands accepted in {accepted_in:.1?}, broker down for {down_for:.1?}; \
         {} events on the topic, {duplicates} duplicates; test took {:.1?}",
        stored.len(),
        started.elapsed()
    );
    drop(cmd);
}

/// Clients writing continuously, each to a stream of its own (a create,
/// then renames and status changes in a cycle), to whichever command-api
/// [`Writers::switch_to`] last named. Every command must succeed.
struct Writers {
    target: std::sync::Arc<std::sync::Mutex<(u64, String)>>,
    /// Per client, the generation of the target its last completed request went to.
    done_gen: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(clients: usize, base: &str, token: &str) -> Writers {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let target = Arc::new(Mutex::new((0, base.to_owned())));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut done_gen = Vec::new();
        let mut handles = Vec::new();
        for c in 0..clients {
            let gen = Arc::new(AtomicU64::new(0));
            done_gen.push(gen.clone());
            let (target, accepted, stop) = (target.clone(), accepted.clone(), stop.clone());
            let token = token.to_owned();
            handles.push(tokio::spawn(async move {
                let client = http();
                let mut task: Option<String> = None;
                let cycle = ["in_progress", "done", "todo"];
                let mut n = 0usize;
                while !stop.is_cancelled() {
                    let (g, base) = target.lock().unwrap().clone();
                    let req = match &task {
                        None => client
                            .post(format!("{base}/tasks"))
                            .json(&json!({ "title": format!("writer {c}") })),
                        Some(id) if n.is_multiple_of(2) => client
                            .patch(format!("{base}/tasks/{id}"))
                            .json(&json!({ "title": format!("writer {c}, change {n}") })),
                        Some(id) => client
                            .post(format!("{base}/tasks/{id}/status"))
                            .json(&json!({ "status": cycle[(n / 2) % cycle.len()] })),
                    };
                    let r = req.bearer_auth(&token).send().await.unwrap_or_else(|e| {
                        panic!("writer {c}: command-api at {base} did not answer: {e}")
                    });
                    let status = r.status();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    assert!(status.is_success(), "writer {c}: {status} {body}");
                    if task.is_none() {
                        task = Some(body["id"].as_str().expect("id").to_owned());
                    }
                    n += 1;
                    accepted.fetch_add(1, Ordering::SeqCst);
                    gen.store(g, Ordering::SeqCst);
                }
            }));
        }
        Writers {
            target,
            done_gen,
            accepted,
            stop,
            handles,
        }
    }

    /// Sends all further commands to `base`; returns once no request to
    /// the previous target is in flight any more.
    async fn switch_to(&self, base: &str) {
        let gen = {
            let mut t = self.target.lock().unwrap();
            *t = (t.0 + 1, base.to_owned());
            t.0
        };
        eventually(
            "every writer on the new target",
            Duration::from_secs(30),
            || async {
                self.done_gen
                    .iter()
                    .all(|g| g.load(std::sync::atomic::Ordering::SeqCst) == gen)
                    .then_some(())
            },
        )
        .await;
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn finish(self) -> usize {
        self.stop.cancel();
        for h in self.handles {
            h.await.expect("writer");
        }
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One series of a process's `/metrics` page (0 while absent).
async fn metric_of(service: &tests::process::Service, name: &str) -> f64 {
    tests::metric_at(&service.url("/metrics"), name)
        .await
        .unwrap_or(0.0)
}

/// Waits until `service`'s relay holds the publishing lock and has
/// published at least `events` events.
async fn until_leading_and_published(service: &tests::process::Service, events: f64) -> f64 {
    eventually(
        &format!("pid {:?} leading and publishing", service.pid()),
        Duration::from_secs(30),
        || async {
            let leader = metric_of(service, "relay_leader").await;
            let published = metric_of(service, "relay_published_total").await;
            (leader == 1.0 && published >= events).then_some(published)
        },
    )
    .await
}

/// The relay runs inside command-api, so a crash is the process's: two
/// command-api processes (two relays, one holding the advisory lock) on one
/// database; clients write continuously. The leader is SIGKILLed while it
/// publishes (it has published some events and writes keep committing), the
/// standby takes over, the killed one restarts (as the standby); then the
/// new leader is SIGKILLed too, and the restarted process's relay takes
/// over. Every event of the table is on the topic, in order per stream.
#[tokio::test]
async fn relay_process_sigkilled_mid_stream_and_restarted_loses_nothing() {
    use tests::process::{service_env, Service};
    let started = Instant::now();
    let dep = Deployment::fresh().await;
    let db = pool(&dep).await;
    // auth only serves the JWKS here; on a database of its own, its relay
    // does not compete for this deployment's outbox.
    let keys_only = Deployment {
        database_url: tests::fresh_database().await,
        ..dep.clone()
    };
    let auth = keys_only.spawn_auth().await;
    let jwks = auth.url("/.well-known/jwks.json");
    let env = |port: u16| {
        service_env(&command_api::Config {
            listen_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            ..dep.command_api_config(&jwks)
        })
    };
    // `a` starts first and takes the lock; `b` waits as the standby.
    let mut a = Service::start_ready("command-api", env).await;
    until_leading_and_published(&a, 0.0).await;
    let mut b = Service::start_ready("command-api", env).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let writers = Writers::start(8, &b.base, &token);

    // Mid-stream: the leader has published, and writes keep committing.
    let by_a = until_leading_and_published(&a, 300.0).await;
    assert_eq!(metric_of(&b, "relay_leader").await, 0.0, "b is the standby");
    a.kill9();
    let committed_at_kill: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db)
        .await
        .unwrap();
    let unpublished_at_kill = outbox_len(&db).await;

    let by_b = until_leading_and_published(&b, 300.0).await;
    a.restart().await;
    eventually(
        "the restarted a as standby",
        Duration::from_secs(10),
        || async {
            (tests::metric_at(&a.url("/metrics"), "relay_leader").await == Some(0.0)).then_some(())
        },
    )
    .await;
    // Writes move to `a`, and `b`, now the leader, is killed in its turn.
    writers.switch_to(&a.base).await;
    let published_b = until_leading_and_published(&b, by_b + 300.0).await;
    b.kill9();
    let by_a_restarted = until_leading_and_published(&a, 300.0).await;
    let accepted = writers.finish().await;
    b.restart().await;

    eventually("outbox drained", Duration::from_secs(30), || async {
        (outbox_len(&db).await == 0).then_some(())
    })
    .await;
    let stored = all_events(&db).await;
    assert_eq!(stored.len(), accepted, "one event per accepted command");
    // Some events, not all, were published by the killed relay: the others
    // (at least 300 each) by the ones that took over.
    assert!(by_a >= 300.0 && stored.len() as f64 >= by_a + 600.0);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let published = read_topic(
        &topic,
        distinct_events(stored.len()),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    let duplicates = assert_published_at_least_once_in_order(&stored, &published);
    eprintln!(
        "relay SIGKILL: a published {by_a} before its kill ({committed_at_kill} committed, \
         {unpublished_at_kill} in the outbox); b published {published_b} before its kill; \
         restarted a published {by_a_restarted}; {} events, {} messages, {duplicates} duplicates; \
         test took {:.1?}",
        stored.len(),
        published.len(),
        started.elapsed()
    );
}

/// The broker crashes (SIGKILL) while the relay publishes under continuous
/// writes, and stays down longer than the producer's message timeout, so
/// deliveries in flight and queued fail and the relay retries them round
/// after round; after the restart every event is on the topic, in order per
/// stream. About 50 s, most of it the outage, while other tests run.
#[tokio::test]
async fn kafka_sigkilled_mid_stream_for_longer_than_the_message_timeout_loses_nothing() {
    let started = Instant::now();
    let mut broker = Broker::start().await;
    let dep = Deployment::fresh().await;
    let cmd = spawn_command_api_alone_at(&dep, &broker.bootstrap()).await;
    let db = pool(&dep).await;
    let token = dep.token_for(Uuid::now_v7(), events::Role::User);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let writers = Writers::start(8, &cmd.base, &token);
    eventually("300 events published", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&db)
            .await
            .unwrap();
        (n - outbox_len(&db).await >= 300).then_some(())
    })
    .await;
    broker.kill().await;
    let killed = tokio::time::Instant::now();
    let before = writers.accepted();
    eventually(
        "500 commands accepted while Kafka is down",
        Duration::from_secs(60),
        || async { (writers.accepted() >= before + 500).then_some(()) },
    )
    .await;
    let accepted = writers.finish().await;
    let timeout_ms: u64 = events::kafka::producer_config("unused")
        .get("message.timeout.ms")
        .and_then(|v| v.parse().ok())
        .expect("the relay's producer sets message.timeout.ms");
    // The outage's length is what is tested here: it must outlast the timeout.
    tokio::time::sleep_until(killed + Duration::from_millis(timeout_ms + 5_000)).await;
    let unpublished = outbox_len(&db).await;
    broker.restart().await;
    let stored = all_events(&db).await;
    assert_eq!(stored.len(), accepted, "one event per accepted command");
    let duplicates = assert_all_on_topic_and_outbox_drained(
        &broker,
        &topic,
        &stored,
        &db,
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    eprintln!(
        "kafka crash: {accepted} commands accepted, {unpublished} unpublished when it came back; \
         {duplicates} duplicates; test took {:.1?}",
        started.elapsed()
    );
    drop(cmd);
}

/// The outbox takes an insert and a delete per event; the publishing relay
/// vacuums it itself (`VACUUM_AFTER_DELETES`), since autovacuum alone let
/// dead rows pile up until every fetch read them all. The delete of one
/// round's rows overlaps the next round, which must never publish them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_vacuums_the_outbox_it_empties_and_publishes_each_event_once() {
    let dep = Deployment::fresh().await;
    let db = pool(&dep).await;
    let _cmd = spawn_command_api_alone(&dep).await;
    let owner = Uuid::now_v7();
    let n = events::relay::VACUUM_AFTER_DELETES + 1_000;
    for chunk in 0..n.div_ceil(500) {
        let mut tx = db.begin().await.unwrap();
        for i in chunk * 500..((chunk + 1) * 500).min(n) {
            store::append(
                &mut tx,
                Uuid::now_v7(),
                ExpectedVersion::Exact(0),
                &[task_created(owner, &format!("bulk {i}"))],
                meta(owner),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    eventually("the outbox to drain", Duration::from_secs(60), || async {
        (outbox_len(&db).await == 0).then_some(())
    })
    .await;
    // Cumulative statistics reach the view within about a second.
    eventually(
        "a vacuum of event_outbox by the relay",
        Duration::from_secs(20),
        || async {
            let manual: i64 = sqlx::query_scalar(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'event_outbox'",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            (manual >= 1).then_some(())
        },
    )
    .await;
    let stored = all_events(&db).await;
    assert_eq!(stored.len(), n);
    let topic = events::topics::Topics::with_prefix(dep.topic_prefix.clone()).task_events();
    let published = read_topic(
        &topic,
        |p| p.len() >= n,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    assert_published_once_in_order(&stored, &published);
}
