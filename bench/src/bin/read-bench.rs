//! Read-side benchmark (see bench/README.md for figures), each measurement
//! next to the raw driver doing the same work in the same run:
//!
//! (a) the projector (`projector::Application`, in-process, fresh group and
//!     database) applying a backlog of task events until every view is at
//!     its final version, next to the raw `mongodb` driver writing the same
//!     documents with the same version-guarded replace-one upserts, batch
//!     size and indexes, from the same events already decoded in memory;
//! (b) `GET /tasks` (filtered, sorted, page of 50) through query-api,
//!     alternating with the raw driver issuing the find query-api issues;
//! (c) command→visible lag: creates through command-api at a steady rate,
//!     each followed by `GET /tasks/{id}` with its consistency token.
//!
//! Needs the local servers (`scripts/infra up`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bench::{percentile, produce, replace_upsert, task_events, Order};
use clap::Parser;
use events::topics::{Topics, EVENT_TOPIC_PARTITIONS};
use events::{Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskEvent, TaskStatus};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Database;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use read_model::analytics::{ensure_facts_indexes, TaskFacts, TASK_FACTS};
use read_model::views::{task_indexes, Applied, TaskView, View, TASK_VIEWS};
use tests::Deployment;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// (a) projector events/s vs the raw driver's upserts.
    Projector,
    /// (b) `GET /tasks` latency vs the raw driver's find.
    Query,
    /// (c) command→visible lag at a steady rate.
    Lag,
}

#[derive(Parser)]
#[command(about = "taskstream read-side benchmark")]
struct Args {
    /// Measurements to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "projector,query,lag"
    )]
    parts: Vec<Part>,
    /// (a) Task events in the backlog.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// (a) Events per task: a creation, then status changes.
    #[arg(long, default_value_t = 5)]
    events_per_task: usize,
    /// (a) Owners the tasks are spread over.
    #[arg(long, default_value_t = 100)]
    owners: usize,
    /// (a) Messages per projector batch (its default) = events per raw bulk write.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// (a) Also time the raw driver reading each batch's documents back
    /// first (the projector's `$in` find), as a second raw row.
    #[arg(long)]
    read_back: bool,
    /// (b) Task views in the collection.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// (b) How many of them the reading user owns (the rest: 90 other users).
    #[arg(long, default_value_t = 10_000)]
    owned: usize,
    /// (b) Requests each way (query-api and raw driver, alternating).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// (c) Creates per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// (c) Seconds at that rate.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The process-wide recorder, so the projector's batch sizes are kept.
    service::metrics::handle();
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if args.parts.contains(&Part::Projector) {
        projector_backlog(&args).await?;
    }
    if args.parts.contains(&Part::Query) {
        list_latency(&args).await?;
    }
    if args.parts.contains(&Part::Lag) {
        visible_lag(&args).await?;
    }
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

async fn connect(database: &str) -> anyhow::Result<Database> {
    read_model::mongo::connect(&tests::servers().mongodb_url, database)
        .await
        .map_err(anyhow::Error::msg)
}

// ------------------------------------------------------------------ (a)

async fn projector_backlog(args: &Args) -> anyhow::Result<()> {
    let brokers = tests::servers().kafka_brokers.clone();
    let d = Deployment::fresh().await;
    let topics = Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(&brokers, &topics).await?;
    let owners: Vec<Uuid> = (0..args.owners.max(1)).map(|_| Uuid::new_v4()).collect();
    let envelopes = task_events(
        args.events,
        args.events_per_task,
        &owners,
        Order::Interleaved,
    );
    eprintln!(
        "(a) producing {} task events ({} per task, interleaved)…",
        envelopes.len(),
        args.events_per_task
    );
    produce(&brokers, &topics, &envelopes).await?;
    let ends = end_offsets(&brokers, &topics.task_events())?;
    let n = envelopes.len() as f64;

    let raw_db = connect(&tests::unique("bench_raw_")).await?;
    eprintln!("(a) raw driver…");
    let t_raw = raw_projection(&raw_db, &envelopes, args.batch, false).await?;
    let read_back = if args.read_back {
        eprintln!("(a) raw driver with read-back…");
        let db = connect(&tests::unique("bench_rawrb_")).await?;
        let t = raw_projection(&db, &envelopes, args.batch, true).await?;
        db.drop().await?;
        Some(t)
    } else {
        None
    };
    drop(envelopes);

    eprintln!("(a) projector…");
    let mut config = d.projector_config();
    config.batch_max_messages = args.batch;
    let started = Instant::now();
    let app = projector::Application::build(config.clone()).await?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));
    let group = config.group_id.clone();
    let topic = topics.task_events();
    tokio::task::spawn_blocking(move || wait_committed(&brokers, &group, &topic, &ends)).await??;
    let t_projector = started.elapsed();
    stop.cancel();
    running.await??;

    // The same work: both databases must hold the same documents.
    let projected = connect(&d.mongodb_database).await?;
    let views = all::<TaskView>(&projected).await?;
    let documents = views.len();
    let same_views = views == all::<TaskView>(&raw_db).await?;
    let same_facts = all::<TaskFacts>(&projected).await? == all::<TaskFacts>(&raw_db).await?;
    anyhow::ensure!(
        same_views && same_facts,
        "the projector's and the raw driver's views differ (task_views same: {same_views}, task_facts same: {same_facts})"
    );
    raw_db.drop().await?;
    projected.drop().await?;

    let rendered = service::metrics::handle().render();
    let sample = |name: &str| {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let mean_batch = sample("projector_batch_size_sum") / sample("projector_batch_size_count");

    let rate = |t: Duration| n / t.as_secs_f64();
    println!();
    println!(
        "(a) backlog: {} task events, {} tasks over {} owners, interleaved by version; \
         {} documents per view, identical in both databases (task_views and task_facts)",
        n as u64,
        documents,
        owners.len(),
        documents
    );
    println!(
        "projector batches: {mean_batch:.0} messages on average (max {})",
        args.batch
    );
    println!("| what | time s | events/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| raw driver: guarded bulk upserts, {} events per batch, from decoded events in memory | {:.2} | {:.0} |",
        args.batch,
        t_raw.as_secs_f64(),
        rate(t_raw)
    );
    if let Some(t) = read_back {
        println!(
            "| raw driver, also reading each batch's documents back first (`$in`) | {:.2} | {:.0} |",
            t.as_secs_f64(),
            rate(t)
        );
    }
    println!(
        "| projector, from start to the last offset committed | {:.2} | {:.0} |",
        t_projector.as_secs_f64(),
        rate(t_projector)
    );
    println!(
        "ratio projector / raw driver: {:.2}",
        rate(t_projector) / rate(t_raw)
    );
    if let Some(t) = read_back {
        println!(
            "ratio projector / raw driver with read-back: {:.2}",
            rate(t_projector) / rate(t)
        );
    }
    Ok(())
}

/// The high watermark of every partition of `topic`.
fn end_offsets(brokers: &str, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let mut ends = HashMap::new();
    for p in 0..EVENT_TOPIC_PARTITIONS {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// Blocks until `group` has committed `ends` on every partition of `topic`
/// (the projector commits only after the batch's MongoDB writes), polling
/// the group's committed offsets without joining it.
fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &HashMap<i32, i64>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition(topic, *p);
    }
    loop {
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        let done = committed.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => ends.get(&e.partition()).is_some_and(|end| o >= *end),
            _ => ends.get(&e.partition()) == Some(&0),
        });
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The raw driver doing the projector's writes for `events` into `db`: the
/// same indexes, then per batch of `batch` events one bulk write per view
/// (`task_facts`, then `task_views`, as the projector does) of replace-one
/// upserts guarded by the version the document had before the batch. The
/// views are kept in memory, so nothing is read back unless `read_back`.
async fn raw_projection(
    db: &Database,
    events: &[EventEnvelope],
    batch: usize,
    read_back: bool,
) -> anyhow::Result<Duration> {
    db.collection::<Document>(TASK_VIEWS)
        .create_indexes(task_indexes())
        .await?;
    ensure_facts_indexes(db, TASK_FACTS).await?;
    let mut facts: HashMap<Uuid, TaskFacts> = HashMap::new();
    let mut views: HashMap<Uuid, TaskView> = HashMap::new();
    let started = Instant::now();
    for chunk in events.chunks(batch.max(1)) {
        guarded_upserts(db, &mut facts, chunk, read_back).await?;
        guarded_upserts(db, &mut views, chunk, read_back).await?;
    }
    Ok(started.elapsed())
}

async fn guarded_upserts<V: View>(
    db: &Database,
    state: &mut HashMap<Uuid, V>,
    chunk: &[EventEnvelope],
    read_back: bool,
) -> anyhow::Result<()> {
    let collection = db.collection::<V>(V::COLLECTION);
    let namespace = collection.namespace();
    let mut before: HashMap<Uuid, u64> = HashMap::new();
    let mut touched = Vec::new();
    for e in chunk {
        let current = state.get(&e.stream_id);
        let have = current.map(View::version).unwrap_or(0);
        before.entry(e.stream_id).or_insert_with(|| {
            touched.push(e.stream_id);
            have
        });
        if let Applied::Advanced(v) = V::apply(current, e)? {
            state.insert(e.stream_id, v);
        }
    }
    if read_back {
        let ids: Vec<String> = touched.iter().map(Uuid::to_string).collect();
        let _: Vec<V> = collection
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect()
            .await?;
    }
    let models = touched
        .iter()
        .map(|id| {
            replace_upsert(
                &namespace,
                doc! { "_id": id.to_string(), "version": before[id] as i64 },
                &state[id],
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    db.client().bulk_write(models).ordered(false).await?;
    Ok(())
}

async fn all<V: View>(db: &Database) -> anyhow::Result<HashMap<String, V>> {
    let docs: Vec<V> = db
        .collection::<V>(V::COLLECTION)
        .find(doc! {})
        .await?
        .try_collect()
        .await?;
    Ok(docs.into_iter().map(|v| (v.id().to_owned(), v)).collect())
}

// ------------------------------------------------------------------ (b)

/// The list request measured, and the find query-api issues for it
/// (query-api/src/tasks.rs: `filter`, then `fetch_page`'s dated phase).
const LIST_QUERY: &str = "status=todo,in_progress&priority=high,urgent&sort=-due_at&limit=50";

fn raw_list_filter(owner: Uuid) -> Document {
    doc! { "$and": [
        { "$and": [
            { "owner_id": owner.to_string(), "deleted": false },
            { "status": { "$in": ["todo", "in_progress"] } },
            { "priority": { "$in": ["high", "urgent"] } },
        ] },
        { "due_at": { "$ne": Bson::Null } },
    ] }
}

async fn raw_list(db: &Database, owner: Uuid) -> anyhow::Result<Vec<TaskView>> {
    Ok(db
        .collection::<TaskView>(TASK_VIEWS)
        .find(raw_list_filter(owner))
        .sort(doc! { "due_at": -1, "_id": -1 })
        .limit(51)
        .await?
        .try_collect()
        .await?)
}

/// Task views written with the projector's fold: `owned` for `reader`, the
/// rest spread over 90 other users; statuses and priorities cycle
/// independently, nine in ten have a due date.
fn seeded_views(tasks: usize, owned: usize, reader: Uuid) -> anyhow::Result<Vec<TaskView>> {
    let others: Vec<Uuid> = (0..90).map(|_| Uuid::new_v4()).collect();
    let now = chrono::Utc::now();
    (0..tasks)
        .map(|i| {
            let owner = if i < owned {
                reader
            } else {
                others[i % others.len()]
            };
            let created = Event::Task(TaskEvent::Created(TaskCreated {
                owner_id: owner,
                project_id: None,
                assignee_ids: vec![],
                title: format!("bench task {i}"),
                description: "seeded for the read benchmark".into(),
                status: TaskStatus::ALL[i % 4],
                priority: Priority::ALL[(i / 4) % 4],
                due_at: (i % 10 != 0)
                    .then(|| now + chrono::Duration::minutes(((i * 7919) % 525_600) as i64)),
                tags: vec!["bench".into()],
            }));
            let meta = EventMeta {
                actor: owner,
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                occurred_at: now - chrono::Duration::seconds((tasks - i) as i64),
            };
            match TaskView::apply(None, &EventEnvelope::new(Uuid::new_v4(), 1, &created, meta))? {
                Applied::Advanced(v) => Ok(v),
                other => anyhow::bail!("a creation did not create a view: {other:?}"),
            }
        })
        .collect()
}

async fn list_latency(args: &Args) -> anyhow::Result<()> {
    let d = Deployment::fresh().await;
    let db = connect(&d.mongodb_database).await?;
    read_model::ensure_indexes(&db).await?;
    let reader = Uuid::new_v4();
    let views = seeded_views(args.tasks, args.owned.min(args.tasks), reader)?;
    eprintln!(
        "(b) writing {} task views ({} owned by the reader)…",
        views.len(),
        args.owned
    );
    let seeding = Instant::now();
    let collection = db.collection::<TaskView>(TASK_VIEWS);
    for chunk in views.chunks(5000) {
        collection.insert_many(chunk).ordered(false).await?;
    }
    eprintln!("(b) seeded in {:.1?}", seeding.elapsed());
    drop(views);

    let query = d.spawn_query_api_standalone().await;
    let token = d.token_for(reader, Role::User);
    let client = tests::http();
    // Warm up both paths, and prove they return the same page.
    let page = bench::listed_task_ids(&client, &query.base, LIST_QUERY, &token).await?;
    let raw = raw_list(&db, reader).await?;
    let raw_ids: Vec<String> = raw.iter().take(50).map(|v| v.id.clone()).collect();
    anyhow::ensure!(
        page.len() == 50 && page == raw_ids && raw.len() == 51,
        "query-api and the raw find disagree ({} vs {} items)",
        page.len(),
        raw.len()
    );
    eprintln!("(b) {} requests each way…", args.requests);
    let (mut http_ms, mut raw_ms) = (Vec::new(), Vec::new());
    for i in 0..args.requests {
        // Alternate which goes first, so neither always follows the other.
        for http_first in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if http_first {
                bench::listed_task_ids(&client, &query.base, LIST_QUERY, &token).await?;
                http_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            } else {
                raw_list(&db, reader).await?;
                raw_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    http_ms.sort_by(f64::total_cmp);
    raw_ms.sort_by(f64::total_cmp);
    drop(query);
    db.drop().await?;

    let (hp50, rp50) = (percentile(&http_ms, 50.0), percentile(&raw_ms, 50.0));
    println!();
    println!(
        "(b) GET /tasks?{LIST_QUERY} over {} task views, {} owned by the reader \
         (a quarter of them match; the page is their 50 latest due dates)",
        args.tasks, args.owned
    );
    println!("| path | requests | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| query-api over HTTP | {} | {hp50:.1} | {:.1} |",
        http_ms.len(),
        percentile(&http_ms, 99.0)
    );
    println!(
        "| raw driver, the same find (filter, sort, limit 51) | {} | {rp50:.1} | {:.1} |",
        raw_ms.len(),
        percentile(&raw_ms, 99.0)
    );
    println!(
        "query-api adds {:.1}% at p50 ({:+.1} ms)",
        (hp50 / rp50 - 1.0) * 100.0,
        hp50 - rp50
    );
    Ok(())
}

// ------------------------------------------------------------------ (c)

struct Visible {
    /// Write start → the read with the token answered 200.
    total_ms: f64,
    /// Write start → 201.
    write_ms: f64,
    /// 504s before the 200 (each one a full consistency wait).
    timeouts: u32,
}

async fn create_then_read(
    client: &reqwest::Client,
    command: &str,
    query: &str,
    token: &str,
    n: u64,
) -> anyhow::Result<Visible> {
    let started = Instant::now();
    let r = client
        .post(format!("{command}/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "title": format!("lag {n}"), "tags": ["bench"] }))
        .send()
        .await?
        .error_for_status()?;
    let consistency = r
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("a create answered without a consistency token"))?;
    let body: serde_json::Value = r.json().await?;
    let write_ms = started.elapsed().as_secs_f64() * 1000.0;
    let id = body["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("a create answered without an id"))?;
    let mut timeouts = 0;
    loop {
        let r = client
            .get(format!("{query}/tasks/{id}"))
            .bearer_auth(token)
            .header("x-consistency-token", &consistency)
            .send()
            .await?;
        match r.status() {
            reqwest::StatusCode::OK => break,
            reqwest::StatusCode::GATEWAY_TIMEOUT if timeouts < 10 => timeouts += 1,
            s => anyhow::bail!("GET /tasks/{id} with the token answered {s}"),
        }
    }
    Ok(Visible {
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
        write_ms,
        timeouts,
    })
}

async fn visible_lag(args: &Args) -> anyhow::Result<()> {
    let d = Deployment::fresh().await;
    let app = command_api::Application::build(
        d.command_api_config(tests::NO_JWKS),
        Some(d.token_verifier()),
    )
    .await?;
    let command = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let command_running = tokio::spawn(app.run_until_stopped(stop.clone()));
    let projector = d.spawn_projector().await;
    let query = d.spawn_query_api_standalone().await;
    let token = d.token_for(Uuid::now_v7(), Role::User);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;
    // The projector has joined its group once a first write is visible.
    create_then_read(&client, &command, &query.base, &token, 0).await?;

    let count = (args.rate * args.seconds as f64).round() as u64;
    eprintln!(
        "(c) {count} creates at {} per second, each read back with its token…",
        args.rate
    );
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let begun = tokio::time::Instant::now();
    let mut running = Vec::with_capacity(count as usize);
    for n in 1..=count {
        tokio::time::sleep_until(begun + interval.mul_f64((n - 1) as f64)).await;
        let (client, command, base, token) = (
            client.clone(),
            command.clone(),
            query.base.clone(),
            token.clone(),
        );
        running.push(tokio::spawn(async move {
            create_then_read(&client, &command, &base, &token, n).await
        }));
    }
    let achieved = count as f64 / begun.elapsed().as_secs_f64();
    let mut results = Vec::with_capacity(running.len());
    let mut errors = 0;
    for r in running {
        match r.await? {
            Ok(v) => results.push(v),
            Err(e) => {
                errors += 1;
                eprintln!("(c) {e}");
            }
        }
    }
    stop.cancel();
    command_running.await??;
    drop(projector);
    drop(query);

    let sorted = |f: fn(&Visible) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let total = sorted(|v| v.total_ms);
    let write = sorted(|v| v.write_ms);
    let read = sorted(|v| v.total_ms - v.write_ms);
    let timeouts: u32 = results.iter().map(|v| v.timeouts).sum();
    println!();
    println!(
        "(c) {} creates at {:.1}/s for {} s (issued at {achieved:.1}/s), each followed by \
         GET /tasks/{{id}} with its X-Consistency-Token; {errors} failed, {timeouts} reads answered 504 first",
        results.len(),
        args.rate,
        args.seconds
    );
    println!("| from the write's start to | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, v) in [
        ("201 from command-api", &write),
        ("200 from query-api (visible)", &total),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!(
        "| (the read alone, 201 → 200) | {:.1} | {:.1} | {:.1} |",
        percentile(&read, 50.0),
        percentile(&read, 99.0),
        read.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
