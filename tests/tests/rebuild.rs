//! `projector rebuild`: a view rebuilt from the first event while the live
//! projector keeps projecting new writes and query-api keeps serving, with no
//! error and no step back for any reader; an interrupted rebuild leaves the
//! live view untouched and can be run again; a dry run changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use events::kafka::EnvelopeRecord;
use events::topics::Topics;
use events::{
    Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskEvent, TaskStatus,
    TaskStatusChanged,
};
use futures::future::join_all;
use mongodb::bson::{doc, Document};
use projector::rebuild::{rebuild, RebuildOptions, Target};
use rdkafka::producer::FutureProducer;
use read_model::views::{TaskView, TASK_VIEWS};
use tests::{servers, Deployment, Running};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Produces well-formed event streams straight to the deployment's topic,
/// remembering each stream's last version.
struct Writer {
    producer: FutureProducer,
    topics: Topics,
    owner: Uuid,
    versions: HashMap<Uuid, (u64, TaskStatus)>,
}

impl Writer {
    fn new(topics: Topics, owner: Uuid) -> Self {
        Writer {
            producer: events::kafka::producer(&servers().kafka_brokers).expect("producer"),
            topics,
            owner,
            versions: HashMap::new(),
        }
    }

    fn meta(&self) -> EventMeta {
        EventMeta {
            actor: self.owner,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            occurred_at: Utc::now(),
        }
    }

    fn create(&mut self, title: String) -> EventEnvelope {
        let id = Uuid::new_v4();
        self.versions.insert(id, (1, TaskStatus::Todo));
        let event = Event::Task(TaskEvent::Created(TaskCreated {
            owner_id: self.owner,
            project_id: None,
            assignee_ids: vec![],
            title,
            description: String::new(),
            status: TaskStatus::Todo,
            priority: Priority::Medium,
            due_at: None,
            tags: vec![],
        }));
        EventEnvelope::new(id, 1, &event, self.meta())
    }

    /// Moves a task one step around todo → in_progress → done → todo.
    fn step(&mut self, id: Uuid) -> EventEnvelope {
        let meta = self.meta();
        let (version, status) = self.versions.get_mut(&id).expect("known task");
        let to = match *status {
            TaskStatus::Todo => TaskStatus::InProgress,
            TaskStatus::InProgress => TaskStatus::Done,
            _ => TaskStatus::Todo,
        };
        let event = Event::Task(TaskEvent::StatusChanged(TaskStatusChanged {
            from: *status,
            to,
        }));
        *version += 1;
        *status = to;
        EventEnvelope::new(id, *version, &event, meta)
    }

    async fn send(&self, envelopes: &[EventEnvelope]) {
        let records: Vec<EnvelopeRecord> = envelopes
            .iter()
            .map(|e| EnvelopeRecord::new(&self.topics, e))
            .collect();
        let sends = records.iter().map(|r| {
            self.producer
                .send(r.as_future_record(), Duration::from_secs(30))
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| e).expect("publish");
        }
    }
}

async fn views(d: &Deployment) -> HashMap<String, TaskView> {
    use futures::TryStreamExt;
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongo");
    db.collection::<TaskView>(TASK_VIEWS)
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

async fn collection_names(d: &Deployment) -> Vec<String> {
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongo");
    db.list_collection_names().await.expect("names")
}

/// Waits until every stream's view is at the writer's last version, with a
/// cheap server-side check (count and version sum) polled once a second, so
/// the wait does not itself load the server the projector writes to.
async fn wait_until_projected(d: &Deployment, writer: &Writer) {
    use futures::TryStreamExt;
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongo");
    let count = writer.versions.len() as i64;
    let sum: i64 = writer.versions.values().map(|(v, _)| *v as i64).sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let got: Vec<Document> = db
            .collection::<Document>(TASK_VIEWS)
            .aggregate(vec![
                doc! { "$group": { "_id": null, "n": { "$sum": 1 }, "v": { "$sum": "$version" } } },
            ])
            .await
            .expect("aggregate")
            .try_collect()
            .await
            .expect("aggregate");
        let (n, v) = got
            .first()
            .map(|d| {
                (
                    d.get_i32("n")
                        .map(i64::from)
                        .or_else(|_| d.get_i64("n"))
                        .unwrap_or(0),
                    d.get_i64("v")
                        .or_else(|_| d.get_i32("v").map(i64::from))
                        .unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        if n == count && v == sum {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live projector did not catch up: {n}/{count} views, version sum {v}/{sum}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `n` tasks, each created and started, published and projected; returns
/// the live views they produced.
async fn seed_started_tasks(d: &Deployment, n: usize) -> HashMap<String, TaskView> {
    let mut writer = Writer::new(Topics::with_prefix(d.topic_prefix.clone()), Uuid::new_v4());
    let mut seed: Vec<EventEnvelope> = (0..n).map(|i| writer.create(format!("task {i}"))).collect();
    let ids: Vec<Uuid> = seed.iter().map(|e| e.stream_id).collect();
    for id in &ids {
        seed.push(writer.step(*id));
    }
    writer.send(&seed).await;
    wait_until_projected(d, &writer).await;
    views(d).await
}

/// No `task_views__*` collection (a rebuild's work in progress) is left.
async fn assert_no_leftover(d: &Deployment, what: &str) {
    let names = collection_names(d).await;
    assert!(
        !names.iter().any(|n| n.starts_with("task_views__")),
        "{what}: {names:?}"
    );
}

fn options(d: &Deployment, target: Target, dry_run: bool) -> RebuildOptions {
    RebuildOptions {
        brokers: servers().kafka_brokers.clone(),
        topics: Topics::with_prefix(d.topic_prefix.clone()),
        target,
        dry_run,
        progress: false,
        batch_size: 2000,
    }
}

async fn live_system() -> (Deployment, Running, Running, mongodb::Database) {
    let d = Deployment::fresh().await;
    events::kafka::ensure_topics(
        &servers().kafka_brokers,
        &Topics::with_prefix(d.topic_prefix.clone()),
    )
    .await
    .expect("topics");
    let projector = d.spawn_projector().await;
    let query = d.spawn_query_api_standalone().await;
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongo");
    (d, projector, query, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_never_fail_or_step_back_while_a_rebuild_of_20000_events_swaps_in_under_live_writes()
{
    let (d, _projector, query, db) = live_system().await;
    let owner = Uuid::new_v4();
    let token = d.token_for(owner, Role::User);
    let mut writer = Writer::new(Topics::with_prefix(d.topic_prefix.clone()), owner);

    // 4,000 tasks × 5 events = 20,000 events in the log before the rebuild.
    let mut seed = Vec::new();
    for i in 0..4000 {
        seed.push(writer.create(format!("task {i:05}")));
    }
    let ids: Vec<Uuid> = seed.iter().map(|e| e.stream_id).collect();
    for _ in 0..4 {
        for id in &ids {
            seed.push(writer.step(*id));
        }
    }
    let t0 = std::time::Instant::now();
    writer.send(&seed).await;
    wait_until_projected(&d, &writer).await;
    eprintln!(
        "20,000 events projected by the live projector in {:.1?}",
        t0.elapsed()
    );

    // Readers: a fixed sample of tasks and the first page of the list.
    let stop = CancellationToken::new();
    let reads = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let sample: Vec<Uuid> = ids.iter().step_by(97).copied().collect();
    let reader = {
        let (stop, reads, failed) = (stop.clone(), reads.clone(), failed.clone());
        let base = query.base.clone();
        let token = token.clone();
        let sample = sample.clone();
        tokio::spawn(async move {
            // A slow answer is not a failure (the MongoDB-wire test server is
            // single-threaded and busy with two projections here); an error
            // status, a broken connection or an older version is.
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(180))
                .build()
                .expect("client");
            let mut seen: HashMap<Uuid, u64> = HashMap::new();
            let mut problems = Vec::new();
            while !stop.is_cancelled() {
                for id in &sample {
                    let res = client
                        .get(format!("{base}/tasks/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 200 => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            let v = body["version"].as_u64().unwrap_or(0);
                            let prev = seen.insert(*id, v).unwrap_or(0);
                            if v < prev {
                                problems.push(format!(
                                    "task {id} went back from version {prev} to {v}"
                                ));
                            }
                        }
                        Ok(r) => problems.push(format!("GET /tasks/{id}: {}", r.status())),
                        Err(e) => problems.push(format!("GET /tasks/{id}: {e}")),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                match client
                    .get(format!("{base}/tasks?limit=100&sort=created_at"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let n = body["items"].as_array().map(Vec::len).unwrap_or(0);
                        if n != 100 {
                            problems.push(format!("the first page had {n} tasks instead of 100"));
                        }
                    }
                    Ok(r) => problems.push(format!("GET /tasks: {}", r.status())),
                    Err(e) => problems.push(format!("GET /tasks: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
                // Paced like a client, not a load test.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !problems.is_empty() {
                failed.store(true, Ordering::Relaxed);
            }
            problems
        })
    };

    // Writers: new tasks and status changes keep arriving during the rebuild.
    let live_writes = {
        let stop = stop.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            // About 20 events/s, bounded: the MongoDB-wire test server is
            // slow, and a rebuild must be able to catch up with the writers.
            let mut round = 0usize;
            while !stop.is_cancelled() && round < 1_000 {
                let mut batch = vec![writer.create(format!("live {round}"))];
                batch.push(writer.step(ids[(round * 31) % ids.len()]));
                writer.send(&batch).await;
                round += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            writer
        })
    };

    let report = rebuild(
        &db,
        &options(&d, Target::Tasks, false),
        CancellationToken::new(),
    )
    .await
    .expect("rebuild");
    eprintln!(
        "rebuild: {} events in {:.1?} ({:.0}/s), live projector paused {:.1?}",
        report.counts.read,
        report.elapsed,
        report.rate(),
        report.paused
    );
    // Keep reading and writing a little after the swap.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let problems = reader.await.expect("reader");
    let writer = live_writes.await.expect("writer");

    assert!(report.swapped, "the rebuilt collection was swapped in");
    assert!(
        report.counts.read >= 20_000,
        "read {} events",
        report.counts.read
    );
    assert_eq!(report.counts.gaps, 0);
    assert_eq!(report.counts.poison, 0);
    assert!(
        problems.is_empty(),
        "readers saw problems during the rebuild:\n{}",
        problems.join("\n")
    );
    assert!(
        reads.load(Ordering::Relaxed) > 50,
        "the readers really read"
    );
    // After the swap the live projector carries on in the rebuilt collection.
    wait_until_projected(&d, &writer).await;
    assert_no_leftover(&d, "no leftover collection").await;
    let have = views(&d).await;
    assert_eq!(
        have.len(),
        writer.versions.len(),
        "every task has exactly one view"
    );
    for (id, (version, status)) in &writer.versions {
        let v = &have[&id.to_string()];
        assert_eq!(
            (v.version as u64, v.status),
            (*version, *status),
            "task {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_rebuild_leaves_the_live_view_untouched_and_can_run_again() {
    let (d, _projector, _query, db) = live_system().await;
    let before = seed_started_tasks(&d, 1500).await;

    let dry = rebuild(
        &db,
        &options(&d, Target::Tasks, true),
        CancellationToken::new(),
    )
    .await
    .expect("dry run");
    assert!(!dry.swapped);
    assert_eq!(
        dry.planned, 3000,
        "the dry run plans every event in the log"
    );
    assert!(!collection_names(&d)
        .await
        .iter()
        .any(|n| n.starts_with("task_views__")));

    let interrupt = CancellationToken::new();
    let cancel = interrupt.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let interrupted = rebuild(
        &db,
        &RebuildOptions {
            batch_size: 100,
            ..options(&d, Target::Tasks, false)
        },
        interrupt,
    )
    .await;
    assert!(
        interrupted.is_err(),
        "an interrupted rebuild reports it: {interrupted:?}"
    );
    assert_eq!(views(&d).await, before, "the live view is untouched");
    assert_no_leftover(&d, "interrupted work is dropped").await;
    let control: Vec<Document> = {
        use futures::TryStreamExt;
        db.collection::<Document>(projector::rebuild::CONTROL)
            .find(doc! {})
            .await
            .expect("control")
            .try_collect()
            .await
            .expect("control docs")
    };
    assert!(
        control.is_empty(),
        "no pause or lock is left behind: {control:?}"
    );

    let again = rebuild(
        &db,
        &options(&d, Target::Tasks, false),
        CancellationToken::new(),
    )
    .await
    .expect("the rebuild runs again");
    assert!(again.swapped);
    assert_eq!(again.counts.read, 3000);
    assert_eq!(
        views(&d).await,
        before,
        "the rebuilt view equals the live one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_killed_with_sigkill_leaves_the_live_view_untouched_and_runs_again() {
    let (d, _projector, _query, db) = live_system().await;
    let before = seed_started_tasks(&d, 3000).await;

    let mut child = std::process::Command::new(tests::binary("projector"))
        .args(["rebuild", "tasks", "--quiet", "--batch-size", "200"])
        .env("PROJECTOR_KAFKA_BROKERS", &servers().kafka_brokers)
        .env("PROJECTOR_KAFKA_TOPIC_PREFIX", &d.topic_prefix)
        .env("PROJECTOR_MONGODB_URL", &servers().mongodb_url)
        .env("PROJECTOR_MONGODB_DATABASE", &d.mongodb_database)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start projector rebuild");
    // Kill it once it has written part of its collection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let partial = collection_names(&d)
            .await
            .into_iter()
            .find(|n| n.starts_with("task_views__"));
        let written = match &partial {
            Some(name) => db
                .collection::<Document>(name)
                .count_documents(doc! {})
                .await
                .unwrap_or(0),
            None => 0,
        };
        if written > 0 {
            break;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the rebuild finished before it could be killed"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild wrote nothing within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed, not finished: {status}");

    assert_eq!(
        views(&d).await,
        before,
        "the live view is untouched by the killed rebuild"
    );
    // Run again at once: the dead holder's lock is taken over, its leftover dropped.
    let again = rebuild(
        &db,
        &options(&d, Target::Tasks, false),
        CancellationToken::new(),
    )
    .await
    .expect("the rebuild runs again right after a SIGKILL");
    assert!(again.swapped);
    assert_eq!(again.counts.read, 6000);
    assert_eq!(
        views(&d).await,
        before,
        "the rebuilt view equals the live one"
    );
    assert_no_leftover(&d, "no leftover").await;
}
