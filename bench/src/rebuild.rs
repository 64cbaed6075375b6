//! Rebuild benchmark: `projector rebuild tasks` over N events, next to, in
//! the same run and on the same servers, (a) a bare rdkafka consumer reading
//! the same topic into nothing and (b) the raw MongoDB driver bulk-upserting
//! the same final documents. The figure is the rebuild rate over the slower
//! of the two. Also measures `GET /tasks` latency before and during the rebuild.
//!
//! Needs the local servers (`scripts/infra up`); see bench/README.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bench::{percentile, produce, replace_upsert, task_events, Order};
use clap::Parser;
use events::topics::Topics;
use events::{EventEnvelope, Role};
use futures::future::join_all;
use mongodb::bson::doc;
use projector::rebuild::{rebuild, RebuildOptions, Target};
use projector::replay::{detached_consumer, plan, ReplayFrom};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use read_model::views::{Applied, TaskView, View};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Events in the log (tasks × events per task).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per task: a creation and status changes around the cycle.
    #[arg(long, default_value_t = 5)]
    events_per_task: usize,
    /// Events per MongoDB round trip in the rebuild, documents per bulk write for the raw driver.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Concurrent `GET /tasks` readers during the latency measurement.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Pause between one reader's requests, in ms (paced, not saturating:
    /// the MongoDB-wire test server is single-threaded).
    #[arg(long, default_value_t = 200)]
    read_pause_ms: u64,
}

/// The final view of every task, folded in memory (what a rebuild must write).
fn final_views(envelopes: &[EventEnvelope]) -> Vec<TaskView> {
    let mut views: HashMap<Uuid, TaskView> = HashMap::new();
    for e in envelopes {
        if let Ok(Applied::Advanced(v)) = TaskView::apply(views.get(&e.stream_id), e) {
            views.insert(e.stream_id, v);
        }
    }
    views.into_values().collect()
}

fn bare_consume(brokers: &str, topic: &str) -> anyhow::Result<(u64, Duration)> {
    let consumer: BaseConsumer = detached_consumer(brokers)?;
    let ranges = plan(&consumer, &[topic.to_owned()], ReplayFrom::Beginning)?;
    let started = Instant::now();
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for ((t, p), r) in &ranges {
        if r.end > r.start {
            tpl.add_partition_offset(t, *p, Offset::Offset(r.start))?;
            remaining.insert(*p, r.end);
        }
    }
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    while !remaining.is_empty() {
        if let Some(m) = consumer.poll(Duration::from_secs(5)) {
            let m = m?;
            use rdkafka::message::Message;
            n += 1;
            if remaining
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                remaining.remove(&m.partition());
            }
        }
    }
    Ok((n, started.elapsed()))
}

/// Bulk-upserts `views` into a fresh `name` collection (optionally with the
/// task view's indexes first) with the raw driver; returns the time taken.
async fn raw_upserts(
    db: &mongodb::Database,
    name: &str,
    views: &[TaskView],
    batch: usize,
    indexed: bool,
) -> anyhow::Result<Duration> {
    let scratch = db.collection::<TaskView>(name);
    if indexed {
        scratch
            .create_indexes(read_model::views::task_indexes())
            .await?;
    }
    let namespace = scratch.namespace();
    let started = Instant::now();
    for chunk in views.chunks(batch.max(1)) {
        let models = chunk
            .iter()
            .map(|v| replace_upsert(&namespace, doc! { "_id": &v.id }, v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        db.client().bulk_write(models).ordered(false).await?;
    }
    let took = started.elapsed();
    scratch.drop().await?;
    Ok(took)
}

/// `GET /tasks` latencies (ms) from `readers` loops until `stop`.
async fn measure_reads(
    base: String,
    token: String,
    readers: usize,
    pause: Duration,
    stop: CancellationToken,
) -> (Vec<f64>, u64) {
    let tasks = (0..readers).map(|_| {
        let (base, token, stop) = (base.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            let client = tests::http();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while !stop.is_cancelled() {
                let t = Instant::now();
                match client
                    .get(format!("{base}/tasks?limit=50&sort=-created_at"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
                tokio::time::sleep(pause).await;
            }
            (lat, errors)
        })
    });
    let mut all = Vec::new();
    let mut errors = 0;
    for r in join_all(tasks).await.into_iter().flatten() {
        all.extend(r.0);
        errors += r.1;
    }
    all.sort_by(f64::total_cmp);
    (all, errors)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let brokers = tests::servers().kafka_brokers.clone();
    let d = tests::Deployment::fresh().await;
    let topics = Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(&brokers, &topics).await?;
    let db = read_model::mongo::connect(&tests::servers().mongodb_url, &d.mongodb_database)
        .await
        .map_err(anyhow::Error::msg)?;

    eprintln!(
        "seeding {} events ({} per task)…",
        args.events, args.events_per_task
    );
    let envelopes = task_events(
        args.events,
        args.events_per_task,
        &[Uuid::new_v4()],
        Order::TaskByTask,
    );
    produce(&brokers, &topics, &envelopes).await?;
    let finals = final_views(&envelopes);
    let n = envelopes.len() as f64;
    drop(envelopes);

    // (a) bare consumer.
    let topic = topics.task_events();
    let (read, t_consume) = {
        let (b, t) = (brokers.clone(), topic.clone());
        tokio::task::spawn_blocking(move || bare_consume(&b, &t)).await??
    };
    eprintln!("bare consumer: {read} messages in {t_consume:.2?}");

    // (b) raw driver: bulk upserts of the final documents into a scratch
    // collection, bare (b1) and with the task view's indexes in place (b2).
    let (t_raw_bare, t_raw) = (
        raw_upserts(&db, "bench_raw_bare", &finals, args.batch, false).await?,
        raw_upserts(&db, "bench_raw_indexed", &finals, args.batch, true).await?,
    );
    eprintln!("raw driver: {} documents bulk-upserted in {t_raw_bare:.2?} (no secondary index), {t_raw:.2?} (with the view's indexes)", finals.len());
    // Seed the live view through a first rebuild, and serve it.
    let options = RebuildOptions {
        brokers: brokers.clone(),
        topics: topics.clone(),
        target: Target::Tasks,
        dry_run: false,
        progress: false,
        batch_size: args.batch,
    };
    let first = rebuild(&db, &options, CancellationToken::new()).await?;
    eprintln!("rebuild (1st, builds the live view): {:.2?}", first.elapsed);
    let query = d.spawn_query_api_standalone().await;
    let owner = finals
        .first()
        .map(|v| v.owner_id.clone())
        .unwrap_or_default();
    let token = d.token_for(Uuid::parse_str(&owner)?, Role::User);

    // Baseline read latency, then (c) the measured rebuild with readers running.
    let stop = CancellationToken::new();
    let baseline = tokio::spawn(measure_reads(
        query.base.clone(),
        token.clone(),
        args.readers,
        Duration::from_millis(args.read_pause_ms),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    let (base_lat, base_err) = baseline.await?;
    let stop = CancellationToken::new();
    let during = tokio::spawn(measure_reads(
        query.base.clone(),
        token,
        args.readers,
        Duration::from_millis(args.read_pause_ms),
        stop.clone(),
    ));
    let report = rebuild(&db, &options, CancellationToken::new()).await?;
    stop.cancel();
    let (during_lat, during_err) = during.await?;
    let t_rebuild = report.elapsed;

    let rate = |t: Duration| n / t.as_secs_f64();
    let (ra, rb, rc) = (rate(t_consume), rate(t_raw), rate(t_rebuild));
    let slower = ra.min(rb);
    println!(
        "events: {}  tasks (final documents): {}",
        n as u64,
        finals.len()
    );
    println!("| what | time s | events/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| (a) bare rdkafka consumer, read into nothing | {:.2} | {:.0} |",
        t_consume.as_secs_f64(),
        ra
    );
    println!(
        "| (b1) raw driver bulk upsert of the final documents, no secondary index | {:.2} | {:.0} |",
        t_raw_bare.as_secs_f64(),
        rate(t_raw_bare)
    );
    println!(
        "| (b2) raw driver bulk upsert of the final documents, the view's indexes in place | {:.2} | {:.0} |",
        t_raw.as_secs_f64(),
        rb
    );
    println!(
        "| (c) projector rebuild tasks | {:.2} | {:.0} |",
        t_rebuild.as_secs_f64(),
        rc
    );
    println!("ratio (c) / slower of (a), (b2): {:.2}", rc / slower);
    println!(
        "ratio (c) / slower of (a), (b1): {:.2}",
        rc / ra.min(rate(t_raw_bare))
    );
    println!(
        "rebuild paused the live projector for {:.2?}",
        report.paused
    );
    println!("| GET /tasks | requests | errors | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, lat, err) in [
        ("before the rebuild (10 s)", &base_lat, base_err),
        ("during the rebuild", &during_lat, during_err),
    ] {
        println!(
            "| {name} | {} | {err} | {:.1} | {:.1} |",
            lat.len(),
            percentile(lat, 50.0),
            percentile(lat, 99.0)
        );
    }
    Ok(())
}
