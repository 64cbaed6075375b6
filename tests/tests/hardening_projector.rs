//! Hardening of the projector (issue 11): an event the view store refuses
//! is dead-lettered instead of stopping the read side; the projector
//! recovers promptly from a Kafka outage; lag is exported only for the
//! partitions a projector owns; views are written durably and a view left
//! behind its stream is repaired from the log.
//!
//! Every test runs the real services against the real servers; events the
//! API would refuse are produced straight to Kafka with the envelope and
//! record helpers of `events`, as a faulty or older writer could.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use events::kafka::EnvelopeRecord;
use events::topics::{Topics, HEADER_DLQ_REASON};
use events::{
    Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskDueDateChanged, TaskEvent,
    TaskStatus, TaskUpdated,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tests::clients::{CommandClient, QueryClient};
use tests::{eventually, servers, unique, System};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn meta(actor: Uuid, at: DateTime<Utc>) -> EventMeta {
    EventMeta {
        actor,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: at,
    }
}

fn created(owner: Uuid, title: &str, due_at: Option<DateTime<Utc>>) -> Event {
    TaskEvent::Created(TaskCreated {
        owner_id: owner,
        project_id: None,
        assignee_ids: vec![],
        title: title.into(),
        description: String::new(),
        status: TaskStatus::Todo,
        priority: Priority::Medium,
        due_at,
        tags: vec![],
    })
    .into()
}

/// Produces envelopes to their topic, keyed by stream, as the relay would.
async fn produce(brokers: &str, topics: &Topics, envs: &[EventEnvelope]) {
    let producer: FutureProducer = events::kafka::producer(brokers).expect("producer");
    for env in envs {
        let record = EnvelopeRecord::new(topics, env);
        producer
            .send(record.as_future_record(), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// One dead-lettered message: key, payload, `dlq-reason`.
struct DeadLetter {
    key: String,
    payload: Vec<u8>,
    reason: String,
}

/// Reads `n` messages from the dead-letter topic (fails after [`WAIT`]).
async fn dead_letters(brokers: &str, topics: &Topics, n: usize) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("dlq-reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&topics.task_events_dlq()])
        .expect("subscribe");
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("dead letters within the wait")
            .expect("kafka");
        let reason = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_DLQ_REASON))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        out.push(DeadLetter {
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            reason,
        });
    }
    out
}

async fn metrics_text(url: &str) -> String {
    tests::metrics_page(url).await.expect("metrics")
}

/// Events whose view the MongoDB-wire server refuses (dates outside years
/// 1-9999: the server cannot hold them) are produced straight to Kafka,
/// ahead of other users' writes made through the API. The other writes
/// appear, the refused events are on the dead-letter topic with the
/// store's reason, a stream whose later event was refused keeps applying
/// the events after it, and a metric counts the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_view_store_refuses_is_dead_lettered_and_other_writes_still_appear() {
    let sys = System::start().await;
    let brokers = servers().kafka_brokers.clone();
    let topics = Topics::with_prefix(sys.deployment.topic_prefix.clone());

    // Mallory's events, as a writer that skipped the edge's checks could
    // publish them: a task created due in year 0 (`0001-01-01T00:00:00+01:00`
    // is such an instant), and a task whose second event moves its due
    // date to year 0, followed by a rename that must still apply.
    let mallory = Uuid::new_v4();
    let t0 = Utc::now();
    let year_0 = Utc.with_ymd_and_hms(0, 12, 31, 23, 0, 0).unwrap();
    let refused_create = EventEnvelope::new(
        Uuid::new_v4(),
        1,
        &created(mallory, "due in year 0", Some(year_0)),
        meta(mallory, t0),
    );
    let task = Uuid::new_v4();
    let fine = EventEnvelope::new(task, 1, &created(mallory, "fine", None), meta(mallory, t0));
    let refused_change = EventEnvelope::new(
        task,
        2,
        &TaskEvent::DueDateChanged(TaskDueDateChanged {
            due_at: Some(year_0),
        })
        .into(),
        meta(mallory, t0),
    );
    let renamed = EventEnvelope::new(
        task,
        3,
        &TaskEvent::Updated(TaskUpdated {
            title: Some("renamed after the refused change".into()),
            description: None,
            tags: None,
        })
        .into(),
        meta(mallory, t0),
    );
    produce(
        &brokers,
        &topics,
        &[
            refused_create.clone(),
            fine,
            refused_change.clone(),
            renamed,
        ],
    )
    .await;

    // Other users write through the API meanwhile and afterwards.
    let mut written = Vec::new();
    for i in 0..6 {
        let user = Uuid::new_v4();
        let token = sys.deployment.token_for(user, Role::User);
        let res = CommandClient::new(&sys.command.base, &token)
            .create_task(&json!({ "title": format!("other user's task {i}") }))
            .await;
        assert_eq!(res.status, 201, "create {i}");
        let body = res.json();
        written.push((token, body["id"].as_str().expect("id").to_owned()));
    }
    for (token, id) in &written {
        QueryClient::new(&sys.query.base, token)
            .wait_for_task(id, Duration::from_secs(30))
            .await;
    }

    // The stream whose second event was refused went on with its third.
    let mallory_token = sys.deployment.token_for(mallory, Role::User);
    let mallory_queries = QueryClient::new(&sys.query.base, &mallory_token);
    let view: Value = mallory_queries
        .eventually(
            "the rename after the refused event",
            WAIT,
            &format!("/tasks/{task}"),
            |res| {
                let body = res.try_json()?;
                (body["version"] == 3).then_some(body)
            },
        )
        .await;
    assert_eq!(view["title"], "renamed after the refused change");
    assert_eq!(
        view["due_at"],
        Value::Null,
        "the refused change is not applied"
    );
    // The refused creation made no view.
    let res = mallory_queries.get_task(refused_create.stream_id).await;
    assert_eq!(res.status, 404);

    // Both refused events are on the dead-letter topic with the store's reason.
    let dead = dead_letters(&brokers, &topics, 2).await;
    for refused in [&refused_create, &refused_change] {
        let letter = dead
            .iter()
            .find(|d| d.payload == refused.to_json())
            .unwrap_or_else(|| {
                panic!(
                    "v{} of {} not dead-lettered",
                    refused.version, refused.stream_id
                )
            });
        assert_eq!(letter.key, refused.stream_id.to_string());
        assert!(
            letter.reason.contains("refused"),
            "reason names the refusal: {}",
            letter.reason
        );
    }
    let page = metrics_text(&sys.projector.url("/metrics")).await;
    let refused = tests::process::metric(&page, "projector_refused_writes_total").unwrap_or(0.0);
    assert!(refused >= 2.0, "projector_refused_writes_total = {refused}");
}

/// The task-event and user-event partitions whose lag a projector's
/// `/metrics` page exports.
fn lag_partitions(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with("projector_consumer_lag{"))
        .filter_map(|l| l.split_once('}').map(|(series, _)| series.to_owned()))
        .collect()
}

/// Two projectors in one group: after the second joins, each exports the
/// lag of the partitions it owns and no other, so the lag summed over the
/// group counts every partition once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rebalance_a_projector_exports_lag_only_for_the_partitions_it_owns() {
    let d = tests::Deployment::fresh().await;
    let brokers = servers().kafka_brokers.clone();
    let topics = Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(&brokers, &topics)
        .await
        .expect("topics");
    // The projector reads the task, project and user event topics.
    let all = 3 * events::topics::EVENT_TOPIC_PARTITIONS as usize;
    let first = d.spawn_projector().await;
    let first_metrics = first.url("/metrics");
    eventually(
        "the first projector to export the lag of every partition",
        WAIT,
        || async {
            let page = metrics_text(&first_metrics).await;
            (lag_partitions(&page).len() == all).then_some(())
        },
    )
    .await;

    let second = d.spawn_projector().await;
    let second_metrics = second.url("/metrics");
    let (mine, theirs) = eventually(
        "each projector to export only the partitions it owns",
        WAIT,
        || async {
            let mine = lag_partitions(&metrics_text(&first_metrics).await);
            let theirs = lag_partitions(&metrics_text(&second_metrics).await);
            let disjoint = mine.is_disjoint(&theirs);
            let covered = mine.union(&theirs).count() == all;
            (disjoint && covered && !mine.is_empty() && !theirs.is_empty())
                .then_some((mine, theirs))
        },
    )
    .await;
    eprintln!("first owns {mine:?}; second owns {theirs:?}");
}

/// command-api in this process, publishing to `brokers`, trusting the
/// deployment's key (no auth process).
async fn spawn_command_api_at(d: &tests::Deployment, brokers: &str) -> tests::Running {
    d.spawn_command_api_with(command_api::Config {
        kafka: service::config::KafkaSettings {
            brokers: brokers.to_owned(),
            ..d.kafka()
        },
        ..d.command_api_config(tests::NO_JWKS)
    })
    .await
}

/// Kafka (a broker of the test's own) stops for 30 s while writes are
/// accepted; once it is back, a new write is visible within 10 s, and so
/// is everything accepted during the outage. The projector used to pause
/// 500 ms for each consumer error librdkafka had queued during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_kafka_outage_new_writes_are_visible_within_ten_seconds() {
    let mut broker = tests::broker::Broker::start().await;
    let d = tests::Deployment::fresh().await;
    let command = spawn_command_api_at(&d, &broker.bootstrap()).await;
    let _projector = d
        .spawn_projector_with(projector::Config {
            kafka: service::config::KafkaSettings {
                brokers: broker.bootstrap(),
                ..d.kafka()
            },
            ..d.projector_config()
        })
        .await;
    let query = d.spawn_query_api_standalone().await;
    let user = Uuid::new_v4();
    let token = d.token_for(user, Role::User);
    let queries = QueryClient::new(&query.base, &token);
    let commands = CommandClient::new(&command.base, &token);
    let before = commands
        .created(&json!({ "title": "before the outage" }))
        .await
        .0
        .to_string();
    queries.wait_for_task(&before, WAIT).await;

    broker.stop().await;
    let down = std::time::Instant::now();
    let mut during = Vec::new();
    while down.elapsed() < Duration::from_secs(30) {
        during.push(
            commands
                .created(&json!({ "title": "during the outage" }))
                .await
                .0
                .to_string(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    broker.restart().await;
    let back = std::time::Instant::now();
    // The projector's share: an event on the topic as soon as Kafka is
    // back (a fresh producer, no reconnect back-off of its own) ...
    let direct = Uuid::new_v4();
    let env = EventEnvelope::new(
        direct,
        1,
        &created(user, "produced right after the outage", None),
        meta(user, Utc::now()),
    );
    produce(
        &broker.bootstrap(),
        &Topics::with_prefix(d.topic_prefix.clone()),
        &[env],
    )
    .await;
    let produced = back.elapsed();
    queries.wait_for_task(&direct.to_string(), WAIT).await;
    let projected = back.elapsed();
    // ... and the whole path, through command-api and its outbox relay.
    let after = commands
        .created(&json!({ "title": "after the outage" }))
        .await
        .0
        .to_string();
    queries.wait_for_task(&after, WAIT).await;
    let end_to_end = back.elapsed();
    eprintln!(
        "after Kafka answered again: produced at {produced:?}, visible at {projected:?}; \
         a write through command-api visible at {end_to_end:?}"
    );
    assert!(
        projected - produced < Duration::from_secs(10),
        "an event produced after the outage took {:?} to be visible",
        projected - produced
    );
    for id in &during {
        queries.wait_for_task(id, Duration::from_secs(5)).await;
    }
}

/// A view write the store acknowledged and then lost (as a MongoDB server
/// SIGKILLed before journaling did): the view is set back by hand to its
/// first version, although the projector has applied and committed the
/// second. When the stream's third event arrives, the projector finds the
/// view two versions behind, reads the missing version from the log,
/// applies both, and counts the repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_behind_its_stream_is_repaired_from_the_log_at_the_next_event() {
    let sys = System::start().await;
    let user = Uuid::new_v4();
    let token = sys.deployment.token_for(user, Role::User);
    let commands = CommandClient::new(&sys.command.base, &token);
    let id = commands
        .created(&json!({ "title": "first" }))
        .await
        .0
        .to_string();
    let res = commands
        .patch_task(&id, &json!({ "description": "written at version 2" }))
        .await;
    assert_eq!(res.status, 200, "PATCH {}", res.text());
    let queries = QueryClient::new(&sys.query.base, &token);
    let at_version = |v: i64| {
        let (queries, id) = (queries.clone(), id.clone());
        async move {
            let body = queries.get_task(&id).await.try_json()?;
            (body["version"] == v).then_some(body)
        }
    };
    eventually("version 2 in the view", WAIT, || at_version(2)).await;

    // The store loses the write of version 2 (in both collections the
    // stream folds into).
    let db = mongodb::Client::with_uri_str(&servers().mongodb_url)
        .await
        .expect("mongodb")
        .database(&sys.deployment.mongodb_database);
    for collection in ["task_views", "task_facts"] {
        let lost = db
            .collection::<mongodb::bson::Document>(collection)
            .update_one(
                mongodb::bson::doc! { "_id": &id },
                mongodb::bson::doc! { "$set": { "version": 1_i64, "description": "" } },
            )
            .await
            .expect("set the view back");
        assert_eq!(lost.matched_count, 1, "{collection}");
    }
    let body: Value = at_version(1).await.expect("the view is back at version 1");
    assert_eq!(body["description"], "");

    let res = commands
        .patch_task(&id, &json!({ "title": "written at version 3" }))
        .await;
    assert_eq!(res.status, 200, "PATCH {}", res.text());
    let view = eventually("the view repaired up to version 3", WAIT, || at_version(3)).await;
    assert_eq!(view["title"], "written at version 3");
    assert_eq!(
        view["description"], "written at version 2",
        "version 2, read again from the log"
    );
    // The batch is counted right after its write, which the read above may
    // have seen first.
    let metrics_url = sys.projector.url("/metrics");
    eventually(
        "projector_repairs_total to count the repair",
        WAIT,
        || async {
            let page = metrics_text(&metrics_url).await;
            (tests::process::metric(&page, "projector_repairs_total")? >= 1.0).then_some(())
        },
    )
    .await;
}

/// query-api in this process, reading the views at `mongodb_url`.
async fn spawn_query_api_at(d: &tests::Deployment, mongodb_url: &str) -> tests::Running {
    d.spawn_query_api_with(query_api::Config {
        mongo: service::config::MongoSettings::new(mongodb_url, d.mongodb_database.clone()),
        ..d.query_api_config(tests::NO_JWKS)
    })
    .await
}

/// The MongoDB-wire server (one of the test's own, on disk) is SIGKILLed
/// right after the projector's view writes were acknowledged (they are
/// served), three times; each new task has one event only, so
/// nothing later would reveal a lost write. Every view is there after each
/// restart: the projector writes with a journaled write concern. (With
/// `PROJECTOR_MONGODB_WRITE_CONCERN=acknowledged` this server loses most of
/// them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn view_writes_survive_a_sigkill_of_the_store_right_after_they_were_acknowledged() {
    let mut store = tests::mongod::MongoServer::start().await;
    let d = tests::Deployment::fresh().await;
    let command = spawn_command_api_at(&d, &servers().kafka_brokers).await;
    let _projector = d
        .spawn_projector_with(projector::Config {
            mongo: service::config::MongoSettings::new(store.url(), d.mongodb_database.clone()),
            ..d.projector_config()
        })
        .await;
    let query = spawn_query_api_at(&d, &store.url()).await;
    let user = Uuid::new_v4();
    let token = d.token_for(user, Role::User);
    let queries = QueryClient::new(&query.base, &token);
    let commands = CommandClient::new(&command.base, &token);
    let mut all = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            all.push(
                commands
                    .created(&json!({ "title": &format!("round {round} task {i}") }))
                    .await
                    .0
                    .to_string(),
            );
        }
        for id in &all {
            queries.wait_for_task(id, WAIT).await;
        }
        // Right after: a running projector never writes a view again once
        // its write was acknowledged, committed or not.
        store.kill().await;
        store.restart().await;
        for id in &all {
            queries.wait_for_task(id, Duration::from_secs(10)).await;
        }
        eprintln!("round {round}: {} views survived the SIGKILL", all.len());
    }
}

/// Under a steady load of creates and renames, the MongoDB-wire server is
/// SIGKILLed three times (each time right after views were acknowledged
/// and served) and restarted. Once the load stops, every task view equals
/// the fold of its stream in the event store, version and title, with no
/// rebuild run by hand. (Whether a kill lands inside this server's
/// unjournaled window is chance under load; the test above aims at it
/// deterministically and is the one that fails with `acknowledged` writes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_repeated_store_sigkills_leave_every_view_equal_to_its_stream() {
    let mut store = tests::mongod::MongoServer::start().await;
    let d = tests::Deployment::fresh().await;
    let command = spawn_command_api_at(&d, &servers().kafka_brokers).await;
    let _projector = d
        .spawn_projector_with(projector::Config {
            mongo: service::config::MongoSettings::new(store.url(), d.mongodb_database.clone()),
            ..d.projector_config()
        })
        .await;
    let query = spawn_query_api_at(&d, &store.url()).await;
    let token = d.token_for(Uuid::new_v4(), Role::User);
    let queries = QueryClient::new(&query.base, &token);
    let commands = CommandClient::new(&command.base, &token);

    // The load: create a task, rename a recent one, over and over; writes go
    // to the event store, so they are accepted while the view store is down.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (commands, stop) = (commands.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ids: Vec<String> = Vec::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let res = commands
                    .create_task(&json!({ "title": format!("load {n}") }))
                    .await;
                assert_eq!(res.status, 201);
                let body = res.json();
                ids.push(body["id"].as_str().expect("id").to_owned());
                let target = &ids[(n as usize * 7) % ids.len()];
                let res = commands
                    .patch_task(target, &json!({ "title": format!("renamed {n}") }))
                    .await;
                assert_eq!(res.status, 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids.len()
        })
    };
    for round in 0..3 {
        // Let views be written and served, then kill the store at once.
        let probe = commands
            .created(&json!({ "title": &format!("probe {round}") }))
            .await
            .0
            .to_string();
        queries.wait_for_task(&probe, WAIT).await;
        store.kill().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let written = load.await.expect("load task");
    assert!(written > 10, "the load wrote only {written} tasks");

    // The fold of every stream, from the source of truth.
    let pool = events::store::connect_and_migrate(&d.database_url, 2)
        .await
        .expect("event store");
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT stream_id FROM events")
        .fetch_all(&pool)
        .await
        .expect("streams");
    let mut folds = std::collections::BTreeMap::new();
    for id in ids {
        let history = events::store::load_stream(&pool, id).await.expect("stream");
        let mut title = String::new();
        for env in &history {
            match env.decode().expect("decode") {
                Event::Task(TaskEvent::Created(c)) => title = c.title,
                Event::Task(TaskEvent::Updated(u)) => {
                    if let Some(t) = u.title {
                        title = t;
                    }
                }
                _ => {}
            }
        }
        folds.insert(id, (history.len() as u64, title));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut wrong = Vec::new();
        for (id, (version, title)) in &folds {
            // Raw: a transport error is one more wrong view, not a failure.
            let view: Value = match queries
                .api()
                .raw()
                .0
                .get(query.url(&format!("/tasks/{id}")))
                .bearer_auth(&token)
                .send()
                .await
            {
                Ok(res) => res.json().await.unwrap_or(Value::Null),
                Err(e) => json!({ "error": e.to_string() }),
            };
            if view["version"].as_u64() != Some(*version) || view["title"] != *title {
                wrong.push(format!("{id}: view {view}, stream v{version} {title:?}"));
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {WAIT:?}, {} of {} views differ from their streams:\n{}",
            wrong.len(),
            folds.len(),
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{} streams, every view equal to its fold", folds.len());
}

/// `projector rebuild` over a log holding events the view store refuses:
/// the rebuild completes and swaps in views where each refused event is
/// set aside (counted as poison) and the rest of its stream applied, as
/// the live projector does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_sets_aside_events_the_view_store_refuses() {
    let d = tests::Deployment::fresh().await;
    let brokers = servers().kafka_brokers.clone();
    let topics = Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(&brokers, &topics)
        .await
        .expect("topics");
    let owner = Uuid::new_v4();
    let t0 = Utc::now();
    let year_0 = Utc.with_ymd_and_hms(0, 6, 1, 0, 0, 0).unwrap();
    let refused_create = EventEnvelope::new(
        Uuid::new_v4(),
        1,
        &created(owner, "due in year 0", Some(year_0)),
        meta(owner, t0),
    );
    let task = Uuid::new_v4();
    let fine = Uuid::new_v4();
    let log = [
        refused_create.clone(),
        EventEnvelope::new(task, 1, &created(owner, "task", None), meta(owner, t0)),
        EventEnvelope::new(
            task,
            2,
            &TaskEvent::DueDateChanged(TaskDueDateChanged {
                due_at: Some(year_0),
            })
            .into(),
            meta(owner, t0),
        ),
        EventEnvelope::new(
            task,
            3,
            &TaskEvent::Updated(TaskUpdated {
                title: Some("renamed".into()),
                description: None,
                tags: None,
            })
            .into(),
            meta(owner, t0),
        ),
        EventEnvelope::new(fine, 1, &created(owner, "fine", None), meta(owner, t0)),
    ];
    produce(&brokers, &topics, &log).await;
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongodb");
    let report = projector::rebuild::rebuild(
        &db,
        &projector::rebuild::RebuildOptions {
            brokers: brokers.clone(),
            topics: topics.clone(),
            target: projector::rebuild::Target::Tasks,
            dry_run: false,
            progress: false,
            batch_size: 100,
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("the rebuild completes");
    assert!(report.swapped);
    assert_eq!(report.counts.poison, 2, "{:?}", report.counts);
    let views = db.collection::<read_model::views::TaskView>(read_model::views::TASK_VIEWS);
    let get = |id: Uuid| {
        let views = views.clone();
        async move {
            views
                .find_one(mongodb::bson::doc! { "_id": id.to_string() })
                .await
                .expect("find")
        }
    };
    assert!(get(refused_create.stream_id).await.is_none());
    let view = get(task).await.expect("the task's view");
    assert_eq!(
        (view.version, view.title.as_str(), view.due_at),
        (3, "renamed", None)
    );
    assert!(get(fine).await.is_some());
}
