//! The read side end to end, every service a real process: events
//! appended to the real Postgres event store are published by the outbox
//! relay the auth process runs (the same relay command-api runs) to real
//! Kafka, projected by the projector process into the MongoDB-wire server,
//! and read through the query-api process over HTTP.
//!
//! Events are appended with `events::store::append`, so these tests pin
//! every timestamp and do not depend on the command handlers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use events::kafka::EnvelopeRecord;
use events::store::ExpectedVersion;
use events::topics::{Topics, HEADER_DLQ_REASON};
use events::{
    Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskDeleted, TaskDueDateChanged,
    TaskEvent, TaskPriorityChanged, TaskStatus, TaskStatusChanged, TaskUpdated, UserDeactivated,
    UserEvent, UserRegistered, UserRoleChanged,
};
use futures::TryStreamExt;
use mongodb::bson::{self, doc};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use read_model::views::{Applied, TaskView, UserView, TASK_VIEWS, USER_VIEWS};
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::clients::{CommandClient, QueryClient, Reply};
use tests::process::{ProcessSystem, Service};
use tests::{eventually, http, servers, unique, Deployment};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

/// One test's read side, as processes: auth (the JWKS query-api trusts, and
/// the outbox relay), the projector and query-api.
struct ReadSide {
    d: Deployment,
    pool: PgPool,
    topics: Topics,
    /// Kept running for its JWKS and its relay.
    #[allow(dead_code)]
    auth: Service,
    projector: Option<Service>,
    /// Kept running; read through `queries`.
    #[allow(dead_code)]
    query: Service,
    /// query-api; [`ReadSide::query`] gives it a caller.
    queries: QueryClient,
}

/// One append: a stream, its new events, when they happened.
type Write = (Uuid, Vec<Event>, DateTime<Utc>);

impl ReadSide {
    async fn start() -> Self {
        let mut rs = Self::start_without_projector().await;
        rs.projector = Some(rs.d.spawn_projector_process().await);
        rs
    }

    async fn start_without_projector() -> Self {
        let d = Deployment::fresh().await;
        let pool = events::store::connect_and_migrate(&d.database_url, 5)
            .await
            .expect("postgres");
        let topics = Topics::with_prefix(d.topic_prefix.clone());
        events::kafka::ensure_topics(&servers().kafka_brokers, &topics)
            .await
            .expect("topics");
        let auth = d.spawn_auth_process().await;
        let query = d.spawn_query_api_process(&auth).await;
        let queries = QueryClient::new(&query.url(""), "");
        ReadSide {
            d,
            pool,
            topics,
            auth,
            projector: None,
            query,
            queries,
        }
    }

    /// SIGTERM to the projector; it must exit cleanly.
    fn stop_projector(&mut self) {
        if let Some(mut p) = self.projector.take() {
            p.terminate(STOP);
        }
    }

    fn projector(&self) -> &Service {
        self.projector.as_ref().expect("the projector runs")
    }

    /// Appends to a stream, as command-api would, at a pinned time.
    async fn append(
        &self,
        stream: Uuid,
        events: &[Event],
        at: DateTime<Utc>,
    ) -> Vec<EventEnvelope> {
        self.append_all(&[(stream, events.to_vec(), at)])
            .await
            .pop()
            .expect("one write")
    }

    /// Appends every write, in order, in one transaction (seeding many
    /// tasks without a round trip each); returns each write's envelopes.
    async fn append_all(&self, writes: &[Write]) -> Vec<Vec<EventEnvelope>> {
        let mut tx = self.pool.begin().await.expect("begin");
        let mut out = Vec::with_capacity(writes.len());
        for (stream, events, at) in writes {
            let envs = events::store::append(
                &mut tx,
                *stream,
                ExpectedVersion::Any,
                events,
                EventMeta {
                    actor: *stream,
                    correlation_id: Uuid::now_v7(),
                    causation_id: None,
                    occurred_at: *at,
                },
            )
            .await
            .expect("append");
            out.push(envs);
        }
        tx.commit().await.expect("commit");
        out
    }

    fn token(&self, user: Uuid) -> String {
        self.d.token_for(user, Role::User)
    }

    /// query-api as the holder of `token`.
    fn query(&self, token: &str) -> QueryClient {
        self.queries.as_user(token)
    }

    async fn get_json(&self, token: &str, path: &str) -> Value {
        self.query(token).get_json(path).await
    }

    /// Waits until the view of `env`'s stream reflects it (through the API).
    async fn visible(&self, owner: Uuid, env: &EventEnvelope) {
        let token = self.token(owner);
        let ct = env.consistency_token().to_string();
        self.query(&token).wait_visible(&ct, WAIT).await;
    }

    /// Waits until the task view of `env`'s stream is at `env`'s version or
    /// later, polling without a consistency token: for events produced
    /// straight to Kafka, which the event store (and so a token) knows
    /// nothing of.
    async fn projected(&self, owner: Uuid, env: &EventEnvelope) {
        let token = self.token(owner);
        let path = format!("/tasks/{}", env.stream_id);
        eventually("the view to reach the produced event", WAIT, || async {
            let res = self.query(&token).get(&path).await;
            let task = res.try_json()?;
            (task["version"].as_u64()? >= env.version).then_some(())
        })
        .await;
    }

    /// Waits until the relay has published everything appended so far.
    async fn published(&self) {
        eventually("the relay to empty the outbox", WAIT, || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
                .fetch_one(&self.pool)
                .await
                .ok()?;
            (left == 0).then_some(())
        })
        .await;
    }

    /// Waits until everything appended so far is published and the
    /// projector's group has committed every partition up to its high
    /// watermark (everything published has been applied: offsets are
    /// committed only after the view write).
    async fn caught_up(&self) {
        self.published().await;
        let group = self.d.projector_config().group_id;
        let topics = [self.topics.task_events(), self.topics.user_events()];
        eventually("the projector to commit everything", WAIT, || {
            let group = group.clone();
            let topics = topics.clone();
            async move {
                tokio::task::spawn_blocking(move || committed_everything(&group, &topics))
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await;
    }

    async fn views(&self) -> BTreeMap<String, TaskView> {
        mongo(&self.d)
            .await
            .collection::<TaskView>(TASK_VIEWS)
            .find(doc! {})
            .await
            .expect("find")
            .try_collect::<Vec<_>>()
            .await
            .expect("views")
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect()
    }
}

fn committed_everything(group: &str, topics: &[String]) -> Option<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers().kafka_brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..events::topics::EVENT_TOPIC_PARTITIONS {
            tpl.add_partition(t, p);
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    for t in topics {
        for p in 0..events::topics::EVENT_TOPIC_PARTITIONS {
            let (_, high) = consumer
                .fetch_watermarks(t, p, Duration::from_secs(5))
                .ok()?;
            let at = match committed.find_partition(t, p)?.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            if at < high {
                return None;
            }
        }
    }
    Some(())
}

async fn mongo(d: &Deployment) -> mongodb::Database {
    mongodb::Client::with_uri_str(&servers().mongodb_url)
        .await
        .expect("mongodb")
        .database(&d.mongodb_database)
}

/// Now, to the millisecond (the precision the views keep).
fn now_ms() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::milliseconds(1))
        .expect("truncate")
}

// ------------------------------------------------------------ the test model

/// What the test created: the expected state of one task.
#[derive(Debug, Clone)]
struct Spec {
    id: Uuid,
    title: String,
    status: TaskStatus,
    priority: Priority,
    due_at: Option<DateTime<Utc>>,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted: bool,
    last: Option<EventEnvelope>,
}

fn created(
    owner: Uuid,
    title: &str,
    priority: Priority,
    due_at: Option<DateTime<Utc>>,
    tags: &[&str],
) -> Event {
    TaskEvent::Created(TaskCreated {
        owner_id: owner,
        project_id: None,
        assignee_ids: vec![],
        title: title.into(),
        description: format!("about {title}"),
        status: TaskStatus::Todo,
        priority,
        due_at,
        tags: tags.iter().map(|t| t.to_string()).collect(),
    })
    .into()
}

fn status(from: TaskStatus, to: TaskStatus) -> Event {
    TaskEvent::StatusChanged(TaskStatusChanged { from, to }).into()
}

/// A varied task `i` of `owner`: every status, priority, tag mix, past and
/// future due dates, some without one, some deleted, a title with regex
/// metacharacters. Created at `t0 + i s`, changed 500 ms later. Returns the
/// expected state (without `last`) and the appends that make it.
fn plan_varied(owner: Uuid, i: usize, t0: DateTime<Utc>) -> (Spec, Vec<Write>) {
    let now = now_ms();
    let id = Uuid::new_v4();
    let title = match i % 5 {
        0 => format!("Write report {i}"),
        1 => format!("review PR {i}"),
        2 => format!("PLAN the week {i}"),
        3 => format!("call mum {i}"),
        _ => format!("sale 50% off (a.b*) {i}"),
    };
    let priority = Priority::ALL[(i + i / 4) % 4];
    let due_at = (!i.is_multiple_of(6)).then(|| now + TimeDelta::hours(i as i64 * 7 - 100));
    let tags: &[&str] = match i % 3 {
        0 => &["work"],
        1 => &["home", "urgent"],
        _ => &[],
    };
    let created_at = t0 + TimeDelta::seconds(i as i64);
    let mut writes = vec![(
        id,
        vec![created(owner, &title, priority, due_at, tags)],
        created_at,
    )];
    let target = TaskStatus::ALL[i % 4];
    let mut updated_at = created_at;
    let mut later: Vec<Event> = Vec::new();
    match target {
        TaskStatus::Todo => {}
        TaskStatus::InProgress => later.push(status(TaskStatus::Todo, TaskStatus::InProgress)),
        TaskStatus::Done => {
            later.push(status(TaskStatus::Todo, TaskStatus::InProgress));
            later.push(status(TaskStatus::InProgress, TaskStatus::Done));
        }
        TaskStatus::Cancelled => later.push(status(TaskStatus::Todo, TaskStatus::Cancelled)),
    }
    let deleted = i % 13 == 7;
    if deleted {
        later.push(TaskEvent::Deleted(TaskDeleted {}).into());
    }
    if !later.is_empty() {
        updated_at = created_at + TimeDelta::milliseconds(500);
        writes.push((id, later, updated_at));
    }
    let spec = Spec {
        id,
        title,
        status: target,
        priority,
        due_at,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        created_at,
        updated_at,
        deleted,
        last: None,
    };
    (spec, writes)
}

/// Appends task `i` of `owner` (see [`plan_varied`]).
async fn create_varied(rs: &ReadSide, owner: Uuid, i: usize, t0: DateTime<Utc>) -> Spec {
    let (mut spec, writes) = plan_varied(owner, i, t0);
    spec.last = rs.append_all(&writes).await.concat().pop();
    spec
}

/// Appends tasks `0..n` of `owner`, 100 tasks per transaction, and waits
/// until the projector has applied all of them.
async fn create_many(rs: &ReadSide, owner: Uuid, n: usize, t0: DateTime<Utc>) -> Vec<Spec> {
    let mut specs = Vec::with_capacity(n);
    let planned: Vec<(Spec, Vec<Write>)> = (0..n).map(|i| plan_varied(owner, i, t0)).collect();
    for chunk in planned.chunks(100) {
        let writes: Vec<Write> = chunk.iter().flat_map(|(_, w)| w.clone()).collect();
        let mut envs = rs.append_all(&writes).await.into_iter();
        for (spec, w) in chunk {
            let mut spec = spec.clone();
            for _ in 0..w.len() {
                spec.last = envs.next().expect("envelopes per write").pop();
            }
            specs.push(spec);
        }
    }
    rs.caught_up().await;
    specs
}

fn ids(items: &Value) -> Vec<String> {
    items["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().map(|s| {
        DateTime::parse_from_rfc3339(s)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    })
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_projector_builds_views_that_query_api_serves_with_etags_and_history() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let token = rs.token(owner);
    let id = Uuid::new_v4();
    let t0 = now_ms() - TimeDelta::minutes(10);
    let due = t0 + TimeDelta::days(3);
    rs.append(
        id,
        &[created(owner, "Buy milk", Priority::Low, None, &["home"])],
        t0,
    )
    .await;
    let changes: Vec<Event> = vec![
        TaskEvent::Updated(TaskUpdated {
            title: Some("Buy oat milk".into()),
            description: None,
            tags: Some(vec!["home".into(), "shop".into()]),
        })
        .into(),
        TaskEvent::PriorityChanged(TaskPriorityChanged {
            from: Priority::Low,
            to: Priority::High,
        })
        .into(),
        TaskEvent::DueDateChanged(TaskDueDateChanged { due_at: Some(due) }).into(),
        status(TaskStatus::Todo, TaskStatus::InProgress),
        status(TaskStatus::InProgress, TaskStatus::Done),
    ];
    let t1 = t0 + TimeDelta::seconds(5);
    let last = rs.append(id, &changes, t1).await.pop().unwrap();
    let ct = last.consistency_token().to_string();

    // Read-your-writes on the single task: the first read already sees version 6.
    let res = rs
        .query(&token)
        .get(&format!("/tasks/{id}"))
        .header("X-Consistency-Token", &ct)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["etag"], "\"6\"");
    let task: Value = res.json();
    assert_eq!(task["id"], id.to_string());
    assert_eq!(task["owner_id"], owner.to_string());
    assert_eq!(task["title"], "Buy oat milk");
    assert_eq!(task["description"], "about Buy milk");
    assert_eq!(task["status"], "done");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["tags"], json!(["home", "shop"]));
    assert_eq!(task["version"], 6);
    assert_eq!(time(&task["due_at"]), Some(due));
    assert_eq!(time(&task["created_at"]), Some(t0));
    assert_eq!(time(&task["updated_at"]), Some(t1));
    assert_eq!(time(&task["completed_at"]), Some(t1));
    assert!(task.get("priority_rank").is_none() && task.get("deleted").is_none());

    // If-None-Match with the current version → 304; an older one → 200.
    let res = rs
        .query(&token)
        .get(&format!("/tasks/{id}"))
        .header("If-None-Match", "\"6\"")
        .await;
    assert_eq!(res.status, 304);
    assert_eq!(res.headers["etag"], "\"6\"");
    let res = rs
        .query(&token)
        .get(&format!("/tasks/{id}"))
        .header("If-None-Match", "\"5\"")
        .await;
    assert_eq!(res.status, 200);

    // History: every event, in order, from the event store.
    let history = rs.get_json(&token, &format!("/tasks/{id}/history")).await;
    let items = history["items"].as_array().unwrap();
    let got: Vec<(u64, &str)> = items
        .iter()
        .map(|e| (e["version"].as_u64().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "task.created"),
            (2, "task.updated"),
            (3, "task.priority_changed"),
            (4, "task.due_date_changed"),
            (5, "task.status_changed"),
            (6, "task.status_changed"),
        ]
    );

    // Deleted: gone from the single read and the list, history stays.
    let gone = rs
        .append(
            id,
            &[TaskEvent::Deleted(TaskDeleted {}).into()],
            t1 + TimeDelta::seconds(1),
        )
        .await
        .pop()
        .unwrap();
    let ct = gone.consistency_token().to_string();
    let res = rs
        .query(&token)
        .get(&format!("/tasks/{id}"))
        .header("X-Consistency-Token", &ct)
        .await;
    assert_eq!(res.status, 404);
    let body: Value = res.json();
    assert_eq!(body["status"], 404);
    let list = rs.get_json(&token, "/tasks").await;
    assert_eq!(ids(&list), Vec::<String>::new());
    assert_eq!(
        rs.get_json(&token, &format!("/tasks/{id}/history")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        7
    );

    // The users view from user events.
    let user = Uuid::new_v4();
    let env = rs
        .append(
            user,
            &[UserEvent::Registered(UserRegistered {
                email: "ada@example.test".into(),
                display_name: "Ada".into(),
                role: Role::User,
            })
            .into()],
            t0,
        )
        .await
        .pop()
        .unwrap();
    let users = mongo(&rs.d).await.collection::<UserView>(USER_VIEWS);
    let view = eventually("the users view", WAIT, || async {
        users
            .find_one(doc! { "_id": env.stream_id.to_string() })
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        (
            view.email.as_str(),
            view.display_name.as_str(),
            view.role,
            view.active,
            view.version
        ),
        ("ada@example.test", "Ada", Role::User, true, 1)
    );

    // The OpenAPI document names every route, its parameters and the scheme.
    let doc = rs.queries.get("/openapi.json").token(None).await.json();
    for path in ["/tasks", "/tasks/{id}", "/tasks/{id}/history"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing: {doc}"
        );
        assert!(
            doc["paths"][path]["get"]["security"].is_array(),
            "{path} unsecured"
        );
    }
    let params: Vec<&str> = doc["paths"]["/tasks"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "status",
        "priority",
        "sort",
        "cursor",
        "limit",
        "q",
        "overdue",
        "X-Consistency-Token",
    ] {
        assert!(
            params.contains(&p),
            "parameter {p} undocumented: {params:?}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_filter_returns_what_the_same_filter_over_the_created_tasks_returns() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let token = rs.token(owner);
    let t0 = now_ms() - TimeDelta::hours(1);
    let specs = create_many(&rs, owner, 40, t0).await;
    let live: Vec<&Spec> = specs.iter().filter(|s| !s.deleted).collect();
    let now = Utc::now();
    let at = |i: usize| specs[i].created_at;
    let due_mid = now + TimeDelta::hours(10);
    let due_lo = now - TimeDelta::hours(50);

    type Pred<'a> = Box<dyn Fn(&Spec) -> bool + 'a>;
    fn open(s: &Spec) -> bool {
        matches!(s.status, TaskStatus::Todo | TaskStatus::InProgress)
    }
    let cases: Vec<(String, Pred<'_>)> = vec![
        (
            "status=done".into(),
            Box::new(|s| s.status == TaskStatus::Done),
        ),
        (
            "status=todo,in_progress".into(),
            Box::new(|s| matches!(s.status, TaskStatus::Todo | TaskStatus::InProgress)),
        ),
        (
            "status=cancelled&status=done".into(),
            Box::new(|s| matches!(s.status, TaskStatus::Cancelled | TaskStatus::Done)),
        ),
        (
            "priority=urgent".into(),
            Box::new(|s| s.priority == Priority::Urgent),
        ),
        (
            "priority=low,high".into(),
            Box::new(|s| matches!(s.priority, Priority::Low | Priority::High)),
        ),
        (
            format!("due_before={}", rfc(due_mid)),
            Box::new(move |s| s.due_at.is_some_and(|d| d < due_mid)),
        ),
        (
            format!("due_after={}", rfc(due_mid)),
            Box::new(move |s| s.due_at.is_some_and(|d| d > due_mid)),
        ),
        (
            format!("due_after={}&due_before={}", rfc(due_lo), rfc(due_mid)),
            Box::new(move |s| s.due_at.is_some_and(|d| d > due_lo && d < due_mid)),
        ),
        (
            format!("created_before={}", rfc(at(17))),
            Box::new(move |s| s.created_at < at(17)),
        ),
        (
            format!("created_after={}", rfc(at(17))),
            Box::new(move |s| s.created_at > at(17)),
        ),
        (
            format!(
                "created_after={}&created_before={}",
                rfc(at(5)),
                rfc(at(30))
            ),
            Box::new(move |s| s.created_at > at(5) && s.created_at < at(30)),
        ),
        (
            format!(
                "updated_since={}",
                rfc(at(20) + TimeDelta::milliseconds(500))
            ),
            Box::new(move |s| s.updated_at >= at(20) + TimeDelta::milliseconds(500)),
        ),
        (
            "tag=work".into(),
            Box::new(|s| s.tags.iter().any(|t| t == "work")),
        ),
        (
            "tag=urgent".into(),
            Box::new(|s| s.tags.iter().any(|t| t == "urgent")),
        ),
        (
            "q=REVIEW".into(),
            Box::new(|s| s.title.to_lowercase().contains("review")),
        ),
        (
            "q=plan%20the".into(),
            Box::new(|s| s.title.to_lowercase().contains("plan the")),
        ),
        (
            "q=50%25%20off%20(a.b*)".into(),
            Box::new(|s| s.title.contains("50% off (a.b*)")),
        ),
        ("q=a.b".into(), Box::new(|s| s.title.contains("a.b"))),
        ("q=nothing-like-this".into(), Box::new(|_| false)),
        (
            "overdue=true".into(),
            Box::new(move |s| open(s) && s.due_at.is_some_and(|d| d < now)),
        ),
        // Combined.
        (
            "status=todo,in_progress&priority=high,urgent&tag=work".into(),
            Box::new(|s| {
                open(s)
                    && matches!(s.priority, Priority::High | Priority::Urgent)
                    && s.tags.iter().any(|t| t == "work")
            }),
        ),
        (
            format!(
                "overdue=true&priority=low,medium&created_after={}",
                rfc(at(3))
            ),
            Box::new(move |s| {
                open(s)
                    && s.due_at.is_some_and(|d| d < now)
                    && matches!(s.priority, Priority::Low | Priority::Medium)
                    && s.created_at > at(3)
            }),
        ),
        (
            format!("q=task&due_before={}&status=done", rfc(due_mid)),
            Box::new(|_| false),
        ),
        (
            format!("q=r&status=done,cancelled&due_before={}", rfc(due_mid)),
            Box::new(move |s| {
                s.title.to_lowercase().contains('r')
                    && matches!(s.status, TaskStatus::Done | TaskStatus::Cancelled)
                    && s.due_at.is_some_and(|d| d < due_mid)
            }),
        ),
    ];
    let mut nonempty = 0;
    for (query, pred) in &cases {
        let mut expected: Vec<&Spec> = live.iter().copied().filter(|s| pred(s)).collect();
        expected.sort_by_key(|s| (s.created_at, s.id.to_string()));
        let expected: Vec<String> = expected.iter().map(|s| s.id.to_string()).collect();
        let got = ids(&rs
            .get_json(&token, &format!("/tasks?{query}&sort=created_at&limit=200"))
            .await);
        assert_eq!(got, expected, "GET /tasks?{query}");
        nonempty += usize::from(!expected.is_empty());
    }
    assert!(
        nonempty >= cases.len() - 3,
        "the data should exercise the filters"
    );
}

/// Sort value of an API item, for checking order: (absent?, value).
fn key(item: &Value, sort: &str) -> (bool, i64) {
    let field = sort.trim_start_matches('-');
    match field {
        "priority" => {
            let rank = match item["priority"].as_str().unwrap() {
                "low" => 1,
                "medium" => 2,
                "high" => 3,
                _ => 4,
            };
            (false, rank)
        }
        _ => match time(&item[field]) {
            Some(t) => (false, t.timestamp_millis()),
            None => (true, 0),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sort_pages_through_each_task_exactly_once_in_order_while_tasks_are_created() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let token = rs.token(owner);
    let t0 = now_ms() - TimeDelta::hours(2);
    // 542 varied tasks of which 42 are deleted: 500 to page through.
    let specs = create_many(&rs, owner, 542, t0).await;
    let originals: HashSet<String> = specs
        .iter()
        .filter(|s| !s.deleted)
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(originals.len(), 500);
    let mut extras: HashSet<String> = HashSet::new();
    let sorts = [
        "due_at",
        "-due_at",
        "created_at",
        "-created_at",
        "updated_at",
        "-updated_at",
        "priority",
        "-priority",
    ];
    let mut extra = 1000;
    for sort in sorts {
        let mut seen: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/tasks?sort={sort}&limit=37");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = rs.get_json(&token, &path).await;
            seen.extend(page["items"].as_array().unwrap().iter().cloned());
            pages += 1;
            // New tasks arrive between pages.
            if pages <= 2 {
                let s = create_varied(&rs, owner, extra, now_ms()).await;
                extra += 1;
                rs.visible(owner, s.last.as_ref().unwrap()).await;
                if !s.deleted {
                    extras.insert(s.id.to_string());
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(pages < 100, "{sort}: pagination does not end");
        }
        let got: Vec<String> = seen
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "{sort}: a task came twice: {got:?}"
        );
        for id in &originals {
            assert!(unique.contains(id), "{sort}: task {id} was skipped");
        }
        for id in &unique {
            assert!(
                originals.contains(*id) || extras.contains(*id),
                "{sort}: {id} is neither a live task nor one created while paging"
            );
        }
        // 500 tasks at 37 a page, plus the few created while paging.
        assert!((14..=15).contains(&pages), "{sort}: {pages} pages");
        let desc = sort.starts_with('-');
        for pair in seen.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (ka, kb) = (key(a, sort), key(b, sort));
            let (ia, ib) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
            let in_order = if ka.0 != kb.0 {
                // Absent due dates come last in both directions.
                !ka.0
            } else if ka.1 != kb.1 && !ka.0 {
                (ka.1 < kb.1) != desc
            } else {
                (ia < ib) != desc
            };
            assert!(in_order, "{sort}: {a} before {b}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_400s_that_name_the_parameter() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let token = rs.token(owner);
    let specs = create_many(&rs, owner, 6, now_ms() - TimeDelta::hours(1)).await;
    assert!(!specs.is_empty());

    for (query, named) in [
        ("colour=red", vec!["colour"]),
        ("status=finished", vec!["status"]),
        ("status=todo,nope", vec!["status"]),
        ("priority=critical", vec!["priority"]),
        ("sort=title", vec!["sort"]),
        ("limit=0", vec!["limit"]),
        ("limit=500", vec!["limit"]),
        ("due_before=tomorrow", vec!["due_before"]),
        ("created_after=2026-13-01T00:00:00Z", vec!["created_after"]),
        ("updated_since=1700000000", vec!["updated_since"]),
        ("overdue=maybe", vec!["overdue"]),
        ("owner_id=42", vec!["owner_id"]),
        ("cursor=abc", vec!["cursor"]),
        ("limit=x&sort=y&foo=1", vec!["limit", "sort", "foo"]),
    ] {
        let res = rs.query(&token).get(&format!("/tasks?{query}")).await;
        assert_eq!(res.status, 400, "{query}");
        assert_eq!(res.headers["content-type"], "application/problem+json");
        let body: Value = res.json();
        let pointers: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(pointers, named, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(named[0]),
            "{body}"
        );
    }

    // A tampered cursor, and a cursor replayed with other filters.
    let page = rs.get_json(&token, "/tasks?limit=2&sort=priority").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let mut chars: Vec<char> = cursor.chars().collect();
    chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    for path in [
        format!("/tasks?limit=2&sort=priority&cursor={tampered}"),
        format!("/tasks?limit=2&sort=-priority&cursor={cursor}"),
        format!("/tasks?limit=2&sort=priority&status=done&cursor={cursor}"),
    ] {
        let res = rs.query(&token).get(&path).await;
        assert_eq!(res.status, 400, "{path}");
        let body: Value = res.json();
        assert_eq!(body["errors"][0]["pointer"], "cursor", "{body}");
    }
    // The genuine cursor still works, with another page size too.
    let res = rs
        .query(&token)
        .get(&format!("/tasks?limit=3&sort=priority&cursor={cursor}"))
        .await;
    assert_eq!(res.status, 200);

    // A malformed consistency token.
    for bad in [
        "nonsense",
        "123.4",
        &format!("{}.0", Uuid::new_v4().simple()),
    ] {
        for path in ["/tasks".to_owned(), format!("/tasks/{}", specs[0].id)] {
            let res = rs
                .query(&token)
                .get(&path)
                .header("X-Consistency-Token", bad)
                .await;
            assert_eq!(res.status, 400, "{path} with token {bad}");
        }
    }
    // No token, a bad token: 401.
    let res = rs.queries.list_tasks("").token(None).await;
    assert_eq!(res.status, 401);
    let res = rs.query("not-a-jwt").get("/tasks").await;
    assert_eq!(res.status, 401);
    // An id that is not a UUID names nothing: 404.
    let res = rs.query(&token).get("/tasks/not-a-uuid").await;
    assert_eq!(res.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_never_see_each_others_tasks_but_admins_may_ask_by_owner() {
    let rs = ReadSide::start().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let t0 = now_ms() - TimeDelta::hours(1);
    let a = create_many(&rs, alice, 12, t0).await;
    let b = create_many(&rs, bob, 12, t0).await;
    let live = |specs: &[Spec]| -> HashSet<String> {
        specs
            .iter()
            .filter(|s| !s.deleted)
            .map(|s| s.id.to_string())
            .collect()
    };
    let (alice_ids, bob_ids) = (live(&a), live(&b));
    for (user, own, other, other_specs) in [
        (alice, &alice_ids, &bob_ids, &b),
        (bob, &bob_ids, &alice_ids, &a),
    ] {
        let token = rs.token(user);
        for query in [
            "limit=200",
            "status=todo,in_progress,done,cancelled",
            "priority=low,medium,high,urgent",
            "tag=work",
            "q=e",
            "overdue=true",
            "sort=due_at",
            "sort=-priority",
        ] {
            let got: HashSet<String> = ids(&rs.get_json(&token, &format!("/tasks?{query}")).await)
                .into_iter()
                .collect();
            assert!(got.is_subset(own), "{query}: saw tasks that are not theirs");
            assert!(
                got.is_disjoint(other),
                "{query}: saw the other user's tasks"
            );
        }
        for s in other_specs {
            for path in [
                format!("/tasks/{}", s.id),
                format!("/tasks/{}/history", s.id),
            ] {
                let res = rs.query(&token).get(&path).await;
                assert_eq!(res.status, 404, "{path} of another user");
            }
        }
        // A non-admin cannot ask for someone else's list.
        let other_owner = if user == alice { bob } else { alice };
        let res = rs
            .query(&token)
            .get(&format!("/tasks?owner_id={other_owner}"))
            .await;
        assert_eq!(res.status, 403);
        // Asking for one's own is fine.
        let res = rs
            .query(&token)
            .get(&format!("/tasks?owner_id={user}&limit=200"))
            .await;
        assert_eq!(res.status, 200);
    }
    let admin = rs.d.token_for(Uuid::new_v4(), Role::Admin);
    let got: HashSet<String> = ids(&rs
        .get_json(&admin, &format!("/tasks?owner_id={alice}&limit=200"))
        .await)
    .into_iter()
    .collect();
    assert_eq!(got, alice_ids);
    assert_eq!(
        ids(&rs.get_json(&admin, "/tasks").await),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consistency_token_waits_for_the_projection_and_504s_when_it_is_stopped() {
    let mut rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let token = rs.token(owner);
    let id = Uuid::new_v4();
    let t0 = now_ms();
    // Warm up: the projector has joined its group and applied something.
    let first = rs
        .append(
            id,
            &[created(owner, "first", Priority::Medium, None, &[])],
            t0,
        )
        .await
        .pop()
        .unwrap();
    rs.visible(owner, &first).await;

    // Each write is visible to the very next read that carries its token.
    for (i, to) in [TaskStatus::InProgress, TaskStatus::Done]
        .into_iter()
        .enumerate()
    {
        let from = if i == 0 {
            TaskStatus::Todo
        } else {
            TaskStatus::InProgress
        };
        let env = rs
            .append(
                id,
                &[status(from, to)],
                t0 + TimeDelta::seconds(i as i64 + 1),
            )
            .await
            .pop()
            .unwrap();
        let ct = env.consistency_token().to_string();
        let res = rs
            .query(&token)
            .get(&format!("/tasks/{id}"))
            .header("X-Consistency-Token", &ct)
            .await;
        assert_eq!(res.status, 200);
        let task: Value = res.json();
        assert_eq!(task["version"], env.version);
        assert_eq!(task["status"], to.as_str());
        let new = Uuid::new_v4();
        let env = rs
            .append(
                new,
                &[created(owner, "listed", Priority::Low, None, &[])],
                t0,
            )
            .await
            .pop()
            .unwrap();
        let ct = env.consistency_token().to_string();
        let res = rs
            .query(&token)
            .get("/tasks?limit=200")
            .header("X-Consistency-Token", &ct)
            .await;
        assert_eq!(res.status, 200);
        let list: Value = res.json();
        assert!(
            ids(&list).contains(&new.to_string()),
            "the list reflects the write"
        );
    }

    // With the projector stopped the token cannot be met: 504 after the bound.
    rs.stop_projector();
    let env = rs
        .append(
            id,
            &[TaskEvent::Updated(TaskUpdated {
                title: Some("renamed".into()),
                ..TaskUpdated::default()
            })
            .into()],
            t0 + TimeDelta::seconds(9),
        )
        .await
        .pop()
        .unwrap();
    let ct = env.consistency_token().to_string();
    for path in [format!("/tasks/{id}"), "/tasks".to_owned()] {
        let started = std::time::Instant::now();
        let res = rs
            .query(&token)
            .get(&path)
            .header("X-Consistency-Token", &ct)
            .await;
        let waited = started.elapsed();
        assert_eq!(res.status, 504, "{path}");
        assert_eq!(res.headers["content-type"], "application/problem+json");
        let body: Value = res.json();
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .ends_with("/projection-behind"),
            "{body}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("not caught up"),
            "{body}"
        );
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
            "waited {waited:?}"
        );
    }
    // Without the token the (older) view is served as before.
    let task = rs.get_json(&token, &format!("/tasks/{id}")).await;
    assert_eq!(task["version"], 3);

    // Restarted, it resumes from its committed offsets and meets the token.
    rs.projector = Some(rs.d.spawn_projector_process().await);
    let task: Value = eventually("the restarted projector to catch up", WAIT, || async {
        let res = rs
            .query(&token)
            .get(&format!("/tasks/{id}"))
            .header("X-Consistency-Token", &ct)
            .await;
        if res.status == 200 {
            res.try_json()
        } else {
            None
        }
    })
    .await;
    assert_eq!(
        (task["title"].as_str(), task["version"].as_u64()),
        (Some("renamed"), Some(4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_land_on_the_dead_letter_topic_and_the_projector_moves_on() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let good = Uuid::new_v4();
    let key = good.to_string();
    // Same key as the good task, so the poison sits before it in its partition.
    let template = EventEnvelope::new(
        Uuid::new_v4(),
        1,
        &created(owner, "poison", Priority::Low, None, &[]),
        EventMeta {
            actor: owner,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            occurred_at: Utc::now(),
        },
    );
    let poisons: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not an event envelope"),
        (
            EventEnvelope {
                event_type: "task.exploded".into(),
                ..template.clone()
            }
            .to_json(),
            "unknown event type",
        ),
        (
            EventEnvelope {
                schema: 99,
                ..template.clone()
            }
            .to_json(),
            "newer than this code knows",
        ),
        (
            EventEnvelope {
                data: json!({ "title": 5 }),
                ..template.clone()
            }
            .to_json(),
            "does not match its schema",
        ),
    ];
    let producer: FutureProducer = events::kafka::producer(&servers().kafka_brokers).unwrap();
    let topic = rs.topics.task_events();
    for (payload, _) in &poisons {
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce poison");
    }
    let env = rs
        .append(
            good,
            &[created(
                owner,
                "after the poison",
                Priority::High,
                None,
                &[],
            )],
            now_ms(),
        )
        .await
        .pop()
        .unwrap();
    rs.visible(owner, &env).await;
    let task = rs
        .get_json(&rs.token(owner), &format!("/tasks/{good}"))
        .await;
    assert_eq!(task["title"], "after the poison");

    // Everything poisonous is on the DLQ, with the original key, payload and a reason.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers().kafka_brokers)
        .set("group.id", unique("dlq-reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&rs.topics.task_events_dlq()]).unwrap();
    let mut dead: Vec<(Vec<u8>, String)> = Vec::new();
    while dead.len() < poisons.len() {
        let msg = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("dead letters within the wait")
            .expect("kafka");
        assert_eq!(msg.key(), Some(key.as_bytes()));
        let reason = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_DLQ_REASON))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("a dlq-reason header");
        dead.push((msg.payload().unwrap_or_default().to_vec(), reason));
    }
    for (payload, why) in &poisons {
        let found = dead.iter().find(|(p, _)| p == payload);
        let (_, reason) = found.unwrap_or_else(|| panic!("{why}: not on the DLQ"));
        assert!(reason.contains(why), "reason {reason:?} should say {why:?}");
    }
    // None of them made a view.
    assert_eq!(rs.views().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_and_redelivered_events_leave_the_views_unchanged() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let specs = create_many(&rs, owner, 15, now_ms() - TimeDelta::hours(1)).await;
    assert_eq!(specs.len(), 15);
    rs.caught_up().await;
    let before = rs.views().await;
    assert_eq!(before.len(), 15);

    // Publish the whole log again, forwards and then backwards.
    let log = all_events(&rs.pool).await;
    let producer: FutureProducer = events::kafka::producer(&servers().kafka_brokers).unwrap();
    for env in log.iter().chain(log.iter().rev()) {
        let record = EnvelopeRecord::new(&rs.topics, env);
        producer
            .send(record.as_future_record(), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("republish");
    }
    rs.caught_up().await;
    assert_eq!(rs.views().await, before);
}

async fn all_events(pool: &PgPool) -> Vec<EventEnvelope> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM events ORDER BY global_position",
        events::store::ENVELOPE_COLUMNS
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| events::store::envelope_from_row(r).unwrap())
        .collect()
}

/// The views a fold of the event log gives, with the projector's own `apply`.
fn fold(log: &[EventEnvelope]) -> (BTreeMap<String, TaskView>, BTreeMap<String, UserView>) {
    let mut tasks: BTreeMap<String, TaskView> = BTreeMap::new();
    let mut users: BTreeMap<String, UserView> = BTreeMap::new();
    let mut streams: HashMap<Uuid, Vec<&EventEnvelope>> = HashMap::new();
    for env in log {
        streams.entry(env.stream_id).or_default().push(env);
    }
    for (id, mut envs) in streams {
        envs.sort_by_key(|e| e.version);
        let id = id.to_string();
        for env in envs {
            match env.stream_type {
                events::StreamType::Task => {
                    if let Ok(Applied::Advanced(v)) = read_model::views::apply(tasks.get(&id), env)
                    {
                        tasks.insert(id.clone(), v);
                    }
                }
                events::StreamType::User => {
                    if let Ok(Applied::Advanced(v)) =
                        read_model::views::apply_user(users.get(&id), env)
                    {
                        users.insert(id.clone(), v);
                    }
                }
                // Project views are compared by the project tests.
                events::StreamType::Project => {}
            }
        }
    }
    (tasks, users)
}

/// Appends `n` tasks of a few events each, interleaving streams in the log.
async fn append_backlog(rs: &ReadSide, n: usize, t0: DateTime<Utc>) {
    let owner = Uuid::new_v4();
    for i in 0..n {
        let id = Uuid::new_v4();
        let at = t0 + TimeDelta::seconds(i as i64);
        rs.append(
            id,
            &[created(
                owner,
                &format!("task {i}"),
                Priority::ALL[i % 4],
                None,
                &[],
            )],
            at,
        )
        .await;
        rs.append(
            id,
            &[
                status(TaskStatus::Todo, TaskStatus::InProgress),
                TaskEvent::DueDateChanged(TaskDueDateChanged {
                    due_at: Some(at + TimeDelta::days(2)),
                })
                .into(),
                TaskEvent::PriorityChanged(TaskPriorityChanged {
                    from: Priority::ALL[i % 4],
                    to: Priority::Urgent,
                })
                .into(),
            ],
            at + TimeDelta::milliseconds(100),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_in_one_group_share_the_work_and_converge_when_one_leaves() {
    let mut rs = ReadSide::start_without_projector().await;
    let config = projector::Config {
        batch_max_messages: 10,
        ..rs.d.projector_config()
    };
    rs.projector = Some(rs.d.spawn_projector_process_with(config.clone()).await);
    let mut second = rs.d.spawn_projector_process_with(config).await;
    let t0 = now_ms() - TimeDelta::hours(1);
    append_backlog(&rs, 30, t0).await;
    // One member leaves mid-stream: the other takes its partitions over.
    let views = mongo(&rs.d).await.collection::<bson::Document>(TASK_VIEWS);
    eventually("the projectors to start applying", WAIT, || async {
        let n = views.count_documents(doc! {}).await.ok()?;
        (n > 0).then_some(())
    })
    .await;
    second.terminate(STOP);
    append_backlog(&rs, 20, t0 + TimeDelta::minutes(5)).await;
    rs.caught_up().await;
    let (tasks, _) = fold(&all_events(&rs.pool).await);
    assert_eq!(tasks.len(), 50);
    assert_eq!(rs.views().await, tasks);
}

/// The views as stored, every field of every document, by id.
async fn stored(d: &Deployment, collection: &str) -> BTreeMap<String, bson::Document> {
    mongo(d)
        .await
        .collection::<bson::Document>(collection)
        .find(doc! {})
        .await
        .expect("find")
        .try_collect::<Vec<_>>()
        .await
        .expect("views")
        .into_iter()
        .map(|v| (v.get_str("_id").expect("_id").to_owned(), v))
        .collect()
}

/// Views as the projector stores them (it writes `bson::to_document(view)`).
fn as_stored<V: serde::Serialize>(views: &BTreeMap<String, V>) -> BTreeMap<String, bson::Document> {
    views
        .iter()
        .map(|(id, v)| (id.clone(), bson::to_document(v).expect("view as bson")))
        .collect()
}

/// Asserts that `got` holds exactly the documents of `expected`, naming the
/// first difference.
fn assert_same_views(
    what: &str,
    got: &BTreeMap<String, bson::Document>,
    expected: &BTreeMap<String, bson::Document>,
) {
    for (id, want) in expected {
        assert_eq!(got.get(id), Some(want), "{what} {id}");
    }
    let extra: Vec<&String> = got
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    assert!(extra.is_empty(), "{what}: views without events: {extra:?}");
}

/// 2,000 events: 5 users (registered, 3 made admin, 3 deactivated) and 221
/// tasks of 9 events each, every field of the view changed at least once,
/// appended so that the log interleaves streams.
fn kill_test_log(t0: DateTime<Utc>) -> Vec<Write> {
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut writes: Vec<Write> = Vec::new();
    for (k, u) in users.iter().enumerate() {
        let registered = UserEvent::Registered(UserRegistered {
            email: format!("{}@example.test", u.simple()),
            display_name: format!("user {k}"),
            role: Role::User,
        });
        writes.push((*u, vec![registered.into()], t0));
    }
    for u in &users[..3] {
        let admin = UserEvent::RoleChanged(UserRoleChanged {
            from: Role::User,
            to: Role::Admin,
        });
        writes.push((*u, vec![admin.into()], t0 + TimeDelta::seconds(1)));
    }
    for u in &users[2..] {
        let gone = UserEvent::Deactivated(UserDeactivated {});
        writes.push((*u, vec![gone.into()], t0 + TimeDelta::seconds(2)));
    }
    let tasks: Vec<(Uuid, Vec<Event>, DateTime<Utc>)> = (0..221usize)
        .map(|i| {
            let at = t0 + TimeDelta::seconds(i as i64);
            let priority = Priority::ALL[i % 4];
            let mut evs = vec![created(
                users[i % 5],
                &format!("task {i}"),
                priority,
                None,
                &["x"],
            )];
            for k in 0..3u32 {
                evs.push(
                    TaskEvent::Updated(TaskUpdated {
                        title: Some(format!("task {i} rev {k}")),
                        description: Some(format!("described {k}")),
                        tags: Some(vec![format!("t{k}")]),
                    })
                    .into(),
                );
                evs.push(
                    TaskEvent::DueDateChanged(TaskDueDateChanged {
                        due_at: (k < 2 || i % 2 == 0)
                            .then(|| at + TimeDelta::days(i64::from(k) + 1)),
                    })
                    .into(),
                );
            }
            evs.push(status(TaskStatus::Todo, TaskStatus::InProgress));
            evs.push(match i % 3 {
                0 => status(TaskStatus::InProgress, TaskStatus::Done),
                1 => TaskEvent::Deleted(TaskDeleted {}).into(),
                _ => TaskEvent::PriorityChanged(TaskPriorityChanged {
                    from: priority,
                    to: Priority::ALL[(i + 1) % 4],
                })
                .into(),
            });
            (Uuid::new_v4(), evs, at)
        })
        .collect();
    // Per 20 tasks: the first half of each, then the second half of each.
    for chunk in tasks.chunks(20) {
        for (id, evs, at) in chunk {
            writes.push((*id, evs[..4].to_vec(), *at));
        }
        for (id, evs, at) in chunk {
            writes.push((*id, evs[4..].to_vec(), *at + TimeDelta::milliseconds(250)));
        }
    }
    writes
}

async fn events_applied(projector: &Service) -> Option<f64> {
    tests::metric_at(&projector.url("/metrics"), "projector_events_applied_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_with_sigkill_mid_stream_and_restarted_ends_with_the_fold_of_the_event_log(
) {
    const EVENTS: usize = 2_000;
    let mut rs = ReadSide::start_without_projector().await;
    let writes = kill_test_log(now_ms() - TimeDelta::hours(1));
    for chunk in writes.chunks(100) {
        rs.append_all(chunk).await;
    }
    let log = all_events(&rs.pool).await;
    assert_eq!(log.len(), EVENTS);
    let (tasks, users) = fold(&log);
    assert_eq!((tasks.len(), users.len()), (221, 5));
    let (tasks, users) = (as_stored(&tasks), as_stored(&users));
    // All of it on Kafka before the projector starts: it faces a backlog.
    rs.published().await;

    // Small batches, so the kill lands among many batches and commits.
    let config = projector::Config {
        batch_max_messages: 25,
        ..rs.d.projector_config()
    };
    let mut projector = rs.d.spawn_projector_process_with(config).await;
    let deadline = std::time::Instant::now() + WAIT;
    let before_kill = loop {
        // Polled tightly: the whole backlog takes a few seconds.
        if let Some(n) = events_applied(&projector).await {
            if n >= 600.0 {
                break n;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projector did not start applying; log: {}",
            projector.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    projector.kill9();

    // Provably mid-way: part of the log is applied, part is not.
    let partial = stored(&rs.d, TASK_VIEWS).await;
    let done = tasks
        .iter()
        .filter(|(id, want)| partial.get(*id) == Some(want))
        .count();
    eprintln!(
        "killed the projector at {before_kill} events applied; {done} of {} task views final, {} written",
        tasks.len(),
        partial.len()
    );
    assert!(before_kill < EVENTS as f64, "killed after the end");
    assert!(done > 0, "nothing applied before the kill");
    assert!(done < tasks.len(), "the kill came after the last task view");

    // Same group: it resumes from the last committed offsets once the
    // killed member's session has expired (session.timeout.ms, 10 s).
    projector.restart().await;
    rs.projector = Some(projector);
    rs.caught_up().await;
    assert_same_views("task view", &stored(&rs.d, TASK_VIEWS).await, &tasks);
    assert_same_views("user view", &stored(&rs.d, USER_VIEWS).await, &users);
}

/// The projector's write guard, on the server itself: a bulk replace
/// filtered on `{_id, version: <read>}` with upsert applies when the view
/// is still at the version read, and fails with a duplicate key (11000),
/// changing nothing, when another writer moved the view meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_guarded_bulk_write_detects_a_moved_view() {
    use mongodb::options::{ReplaceOneModel, WriteModel};
    let db = mongodb::Client::with_uri_str(&servers().mongodb_url)
        .await
        .expect("mongodb")
        .database(&unique("ts_"));
    let coll = db.collection::<bson::Document>("guard");
    coll.insert_one(doc! { "_id": "a", "version": 2_i64, "v": "second" })
        .await
        .unwrap();
    let model = |id: &str, read: i64, v: &str| -> WriteModel {
        ReplaceOneModel::builder()
            .namespace(coll.namespace())
            .filter(doc! { "_id": id, "version": read })
            .replacement(doc! { "_id": id, "version": read + 1, "v": v })
            .upsert(true)
            .build()
            .into()
    };
    let err = db
        .client()
        .bulk_write(vec![
            model("a", 1, "stale"),   // read at 1, but the view is at 2
            model("a", 2, "third"),   // read at 2: applies
            model("b", 0, "created"), // new view
        ])
        .ordered(false)
        .await
        .expect_err("the stale write conflicts");
    match *err.kind {
        mongodb::error::ErrorKind::BulkWrite(ref bulk) => {
            let codes: Vec<(usize, i32)> = bulk
                .write_errors
                .iter()
                .map(|(i, e)| (*i, e.code))
                .collect();
            assert_eq!(codes, vec![(0, 11000)], "{bulk:?}");
        }
        ref other => panic!("expected a bulk write error, got {other:?}"),
    }
    let a = coll.find_one(doc! { "_id": "a" }).await.unwrap().unwrap();
    assert_eq!(
        (a.get_i64("version").unwrap(), a.get_str("v").unwrap()),
        (3, "third")
    );
    let b = coll.find_one(doc! { "_id": "b" }).await.unwrap().unwrap();
    assert_eq!(b.get_i64("version").unwrap(), 1);
}

/// A version that arrives before its predecessor is never applied over the
/// hole; the re-delivery of the missing version (the relay republishes
/// from the gap, in order) lets the stream catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_gap_is_reported_and_never_applied_until_the_missing_version_arrives() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let id = Uuid::new_v4();
    let t0 = now_ms();
    let first = rs
        .append(id, &[created(owner, "gappy", Priority::Low, None, &[])], t0)
        .await
        .pop()
        .unwrap();
    rs.visible(owner, &first).await;
    let meta = EventMeta {
        actor: owner,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: t0 + TimeDelta::seconds(1),
    };
    let v2 = EventEnvelope::new(
        id,
        2,
        &status(TaskStatus::Todo, TaskStatus::InProgress),
        meta,
    );
    let v3 = EventEnvelope::new(
        id,
        3,
        &status(TaskStatus::InProgress, TaskStatus::Done),
        meta,
    );
    let producer: FutureProducer = events::kafka::producer(&servers().kafka_brokers).unwrap();
    let publish = |envs: Vec<EventEnvelope>| {
        let producer = producer.clone();
        let topics = rs.topics.clone();
        async move {
            for env in envs {
                let record = EnvelopeRecord::new(&topics, &env);
                producer
                    .send(record.as_future_record(), Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| e)
                    .expect("publish");
            }
        }
    };
    publish(vec![v3.clone()]).await;
    rs.caught_up().await;
    let view = rs.views().await.remove(&id.to_string()).unwrap();
    assert_eq!(
        (view.version, view.status),
        (1, TaskStatus::Todo),
        "v3 applied over the gap"
    );
    let metrics = http()
        .get(rs.projector().url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("projector_version_gaps_total"),
        "{metrics}"
    );
    // Lag per partition, from the consumer's periodic statistics.
    let lag = format!(
        "projector_consumer_lag{{topic=\"{}\",partition=",
        rs.topics.task_events()
    );
    let metrics_url = rs.projector().url("/metrics");
    eventually("the lag gauge", WAIT, || async {
        let text = http()
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().any(|l| l.starts_with(&lag)).then_some(())
    })
    .await;

    publish(vec![v2, v3]).await;
    rs.caught_up().await;
    let view = rs.views().await.remove(&id.to_string()).unwrap();
    assert_eq!((view.version, view.status), (3, TaskStatus::Done));
}

/// The whole system: writes through command-api, reads through query-api
/// with the consistency token each write returns; no sleeps anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_command_api_are_read_back_through_query_api_with_their_tokens() {
    let sys = ProcessSystem::start().await;
    let user = Uuid::new_v4();
    let token = sys.deployment.token_for(user, Role::User);
    let commands = CommandClient::new(&sys.command.url(""), &token);
    let queries = QueryClient::new(&sys.query.url(""), &token);
    let token_of = |res: &Reply| -> String {
        res.consistency_token()
            .expect("X-Consistency-Token")
            .to_owned()
    };
    let read = |path: String, ct: String| {
        let queries = queries.clone();
        async move { queries.get(&path).consistency_token(&ct).await }
    };

    let res = commands
        .create_task(
            &json!({ "title": "Ship the read side", "priority": "high", "tags": ["work"] }),
        )
        .await;
    assert_eq!(res.status, 201);
    let ct = token_of(&res);
    let created = res.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let res = read(format!("/tasks/{id}"), ct).await;
    assert_eq!(res.status, 200);
    let task = res.json();
    assert_eq!(
        (
            &task["title"],
            &task["priority"],
            &task["status"],
            &task["version"]
        ),
        (
            &json!("Ship the read side"),
            &json!("high"),
            &json!("todo"),
            &json!(1)
        )
    );

    let res = commands
        .patch_task(&id, &json!({ "title": "Ship the read side today" }))
        .if_match("\"1\"")
        .await;
    assert_eq!(res.status, 200);
    let res = read("/tasks?q=today".to_owned(), token_of(&res)).await;
    assert_eq!(res.status, 200);
    assert_eq!(ids(&res.json()), vec![id.clone()]);

    let res = commands
        .set_status(&id, &json!({ "status": "in_progress" }))
        .await;
    assert_eq!(res.status, 200);
    let res = read("/tasks?status=in_progress".to_owned(), token_of(&res)).await;
    assert_eq!(ids(&res.json()), vec![id.clone()]);

    let res = commands.delete_task(&id).await;
    assert!(res.status.is_success(), "{}", res.status);
    let ct = token_of(&res);
    assert_eq!(read(format!("/tasks/{id}"), ct.clone()).await.status, 404);
    let res = read("/tasks".to_owned(), ct).await;
    assert_eq!(ids(&res.json()), Vec::<String>::new());
    let history = queries.history(&id).await.json();
    let types: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "task.created",
            "task.updated",
            "task.status_changed",
            "task.deleted"
        ]
    );
}

/// The projector remembers the views it wrote and folds the next batch onto
/// them without reading them back. A view another writer moved meanwhile
/// (a second projector that had the partition for a while) is read again:
/// here this projector last wrote version 2, the other writer version 3,
/// and only version 4 reaches this projector. From memory that looks like
/// a gap, which must neither stall the stream nor overwrite version 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_moved_by_another_writer_is_read_again_not_overwritten_or_stalled() {
    let rs = ReadSide::start().await;
    let owner = Uuid::new_v4();
    let task = Uuid::new_v4();
    let meta = EventMeta {
        actor: owner,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: now_ms(),
    };
    let producer: FutureProducer = events::kafka::producer(&servers().kafka_brokers).unwrap();
    let produce = |env: EventEnvelope| {
        let producer = producer.clone();
        let record = EnvelopeRecord::new(&rs.topics, &env);
        async move {
            producer
                .send(record.as_future_record(), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    };
    let v1 = EventEnvelope::new(
        task,
        1,
        &created(owner, "mine", Priority::Low, None, &[]),
        meta,
    );
    let v2 = EventEnvelope::new(
        task,
        2,
        &status(TaskStatus::Todo, TaskStatus::InProgress),
        meta,
    );
    produce(v1).await;
    produce(v2.clone()).await;
    rs.projected(owner, &v2).await;

    let views = mongo(&rs.d).await.collection::<bson::Document>(TASK_VIEWS);
    let mut moved = views
        .find_one(doc! { "_id": task.to_string() })
        .await
        .unwrap()
        .expect("the view");
    moved.insert("version", 3_i64);
    moved.insert("title", "moved elsewhere");
    views
        .replace_one(doc! { "_id": task.to_string() }, moved)
        .await
        .unwrap();

    let v4 = EventEnvelope::new(
        task,
        4,
        &status(TaskStatus::InProgress, TaskStatus::Done),
        meta,
    );
    produce(v4.clone()).await;
    rs.projected(owner, &v4).await;
    let view = rs
        .get_json(&rs.token(owner), &format!("/tasks/{task}"))
        .await;
    assert_eq!(view["version"], 4, "{view}");
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["title"], "moved elsewhere", "version 3 kept: {view}");
}
