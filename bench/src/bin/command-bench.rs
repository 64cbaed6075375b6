//! Benchmark of the command side (see `bench/README.md` for figures).
//!
//! Starts command-api in this process against a fresh database and topic
//! prefix on the local servers, then measures:
//! 1. create-task commands per second over HTTP at each concurrency, p50/p99;
//! 2. raw Postgres single-row-insert transactions per second through sqlx
//!    with the service's pool size and the same concurrency (the ceiling),
//!    both as `BEGIN; INSERT; COMMIT` and as a lone autocommit `INSERT`
//!    (what a create without an idempotency key is: one statement);
//!    the three loads take turns in short slices, so that a change in the
//!    machine's other load falls on all of them alike;
//! 3. publication lag p50/p99 with commands paced at half the peak rate:
//!    from the client receiving the 201 (after the commit) to the event's
//!    arrival at a Kafka consumer, and, as an upper bound that includes
//!    the command's own transaction, from the event's `occurred_at`.
//!
//! With `--project` it measures instead creating a task in a project
//! against creating a personal task, in the same run, in alternating
//! slices: each user owns a project and creates in it (without an
//! idempotency key: the membership row lock, the live-task slot, the
//! `project_tasks` row and the append in one statement).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use command_api::{Application, Config};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Turns each load takes per concurrency (each `seconds / SLICES` long).
const SLICES: u32 = 5;

#[derive(Parser, Debug)]
#[command(about = "taskstream command-side benchmark")]
struct Args {
    /// Admin database URL; a fresh database is created next to it.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://taskstream:taskstream@127.0.0.1:55432/postgres"
    )]
    database_url: String,
    #[arg(long, env = "BENCH_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Client concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinct users the clients write as (client i is user i mod N). One
    /// user's creates take turns on that user's live-task count, as the
    /// per-user write limit (10/s by default, off here) expects; 1 measures
    /// that serialised path.
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Compare creates in a project with personal creates, and stop there.
    #[arg(long)]
    project: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = Uuid::new_v4().simple().to_string();
    let db_url = fresh_database(&args.database_url, &format!("bench_{run}")).await?;
    let prefix = format!("bench-{run}-");

    let keys = auth::keys::SigningKeys::generate();
    // A run can outlast an access token's 15 minutes; the verifier accepts
    // this bench's longer token, as it would if auth issued such tokens.
    let verifier = access::TokenVerifier::from_jwks(
        &keys.jwks(),
        access::DEFAULT_ISSUER,
        access::DEFAULT_AUDIENCE,
    )?
    .with_max_lifetime(std::time::Duration::from_secs(2 * 3600));
    let mut tokens = Vec::with_capacity(args.users.max(1));
    for _ in 0..args.users.max(1) {
        let (token, _) = auth::tokens::issue(
            &keys,
            &auth::tokens::AccessTokenRequest {
                user_id: Uuid::now_v7(),
                email: "bench@example.test",
                role: events::Role::User,
                issuer: access::DEFAULT_ISSUER,
                audience: access::DEFAULT_AUDIENCE,
                ttl: chrono::Duration::hours(2),
            },
        )?;
        tokens.push(token);
    }
    let config = Config {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        postgres: service::config::PostgresSettings::new(db_url.clone()),
        kafka: service::config::KafkaSettings {
            brokers: args.kafka_brokers.clone(),
            topic_prefix: prefix.clone(),
        },
        jwt: access::JwtSettings::new(tests::NO_JWKS),
        // The bench measures the write path itself, not the per-user limit.
        write_quota: service::rate_limit::Quota {
            per_minute: std::num::NonZeroU32::MAX,
            burst: std::num::NonZeroU32::MAX,
        },
        max_live_tasks: std::num::NonZeroU32::MAX,
        projects: Default::default(),
        s3: objects::S3Settings::development(
            objects::S3Settings::DEFAULT_URL,
            objects::S3Settings::DEFAULT_BUCKET,
        ),
        attachments: Default::default(),
        http: service::http::Limits::default(),
    };
    let app = Application::build(config, Some(verifier)).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()?;
    let duration = Duration::from_secs(args.seconds);
    // Installs the metrics recorder, so the relay's own lag histogram fills.
    client.get(format!("{base}/metrics")).send().await?;

    println!(
        "pool size {}, {} s per measurement, {} users",
        command_api::startup::POOL_SIZE,
        args.seconds,
        tokens.len()
    );
    if args.project {
        compare_project_creates(&client, &base, &tokens, &args.concurrency, duration).await?;
        stop.cancel();
        let _ = server.await;
        let mut admin = sqlx::PgConnection::connect(&args.database_url).await?;
        sqlx::query(&format!("DROP DATABASE bench_{run} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        return Ok(());
    }
    let raw_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(command_api::startup::POOL_SIZE)
        .connect(&db_url)
        .await?;
    sqlx::query("CREATE TABLE bench_rows (id UUID PRIMARY KEY, body JSONB NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .execute(&raw_pool)
        .await?;

    let mut peak: f64 = 0.0;
    println!("| clients | create/s (HTTP) | p50 ms | p99 ms | raw tx/s (BEGIN, INSERT, COMMIT) | ratio | raw autocommit INSERT/s | ratio |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &c in &args.concurrency {
        // Warm up connections and caches.
        http_load(
            &client,
            &base,
            &tokens,
            c,
            Duration::from_secs(1),
            None,
            None,
            None,
        )
        .await;
        let slice = duration / SLICES;
        let (mut http_rate, mut tx_rate, mut single_rate) = (0.0, 0.0, 0.0);
        let mut lat = Vec::new();
        for _ in 0..SLICES {
            let (rate, l) = http_load(&client, &base, &tokens, c, slice, None, None, None).await;
            http_rate += rate / SLICES as f64;
            lat.extend(l);
            tx_rate += raw_inserts(&raw_pool, c, slice, true).await / SLICES as f64;
            single_rate += raw_inserts(&raw_pool, c, slice, false).await / SLICES as f64;
        }
        lat.sort_by(f64::total_cmp);
        peak = peak.max(http_rate);
        println!(
            "| {c} | {http_rate:.0} | {:.1} | {:.1} | {tx_rate:.0} | {:.2} | {single_rate:.0} | {:.2} |",
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            http_rate / tx_rate,
            http_rate / single_rate,
        );
    }

    // Lag at half the peak rate: the consumer is assigned first, so what it
    // measures is the write path, not a consumer-group join.
    let topic = events::topics::Topics::with_prefix(prefix).task_events();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("group.id", format!("bench-{run}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..events::topics::EVENT_TOPIC_PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    // Let the consumer reach the end offsets before writing.
    let _ = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    let rate = (peak / 2.0).max(1.0);
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let done = done.clone();
        tokio::spawn(async move {
            // (stream, occurred_at, received)
            let mut seen = Vec::new();
            loop {
                match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                    Ok(Ok(m)) => {
                        if let Ok(env) = events::kafka::envelope_of(&m) {
                            seen.push((env.stream_id, env.occurred_at, chrono::Utc::now()));
                        }
                    }
                    Ok(Err(_)) => {}
                    Err(_) if done.load(Ordering::Relaxed) => return seen,
                    Err(_) => {}
                }
            }
        })
    };
    let answered: Answered = Arc::default();
    http_load(
        &client,
        &base,
        &tokens,
        64,
        duration,
        Some(rate),
        Some(answered.clone()),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    let seen = collector.await?;
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let mut from_stamp: Vec<f64> = seen.iter().map(|(_, at, got)| ms(*got - *at)).collect();
    let mut from_answer: Vec<f64> = {
        let answered = answered.lock().map(|m| m.clone()).unwrap_or_default();
        seen.iter()
            .filter_map(|(id, _, got)| answered.get(id).map(|a| ms(*got - *a).max(0.0)))
            .collect()
    };
    from_stamp.sort_by(f64::total_cmp);
    from_answer.sort_by(f64::total_cmp);
    println!();
    println!(
        "publication lag at {rate:.0} commands/s (half the peak), {} events:",
        seen.len()
    );
    println!(
        "| measured from | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: |\n| client got 201 (after commit) | {:.1} | {:.1} | {:.1} |\n| occurred_at (before the transaction) | {:.1} | {:.1} | {:.1} |",
        pct(&from_answer, 0.50),
        pct(&from_answer, 0.99),
        from_answer.last().copied().unwrap_or(0.0),
        pct(&from_stamp, 0.50),
        pct(&from_stamp, 0.99),
        from_stamp.last().copied().unwrap_or(0.0),
    );

    // The relay's view: Kafka ack time minus occurred_at, whole run.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let relay_lag: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("relay_commit_to_publish_seconds")
                || l.starts_with("relay_round_phase_seconds_sum")
                || l.starts_with("relay_round_phase_seconds_count")
                || l.starts_with("relay_batch_size_sum")
                || l.starts_with("relay_batch_size_count")
                || l.starts_with("relay_vacuum_seconds_sum")
                || l.starts_with("relay_vacuum_seconds_count")
        })
        .collect();
    println!();
    println!("relay histogram (ack − occurred_at, whole run):");
    for line in relay_lag {
        println!("    {line}");
    }

    stop.cancel();
    let _ = server.await;
    raw_pool.close().await;
    // The run's database is of no further use; its topics stay (they are
    // cheap, and deleting topics is not something taskstream does).
    let mut admin = sqlx::PgConnection::connect(&args.database_url).await?;
    sqlx::query(&format!("DROP DATABASE bench_{run} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// When each created task's 201 reached the client.
type Answered =
    Arc<std::sync::Mutex<std::collections::HashMap<Uuid, chrono::DateTime<chrono::Utc>>>>;

async fn fresh_database(admin: &str, name: &str) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let (base, _) = admin
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("database URL has no database path: {admin}"))?;
    Ok(format!("{base}/{name}"))
}

/// Creates in a project against personal creates: each user's project
/// first, then per concurrency alternating slices of each; prints a table.
async fn compare_project_creates(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
    concurrency: &[usize],
    duration: Duration,
) -> anyhow::Result<()> {
    let mut projects = Vec::with_capacity(tokens.len());
    for token in tokens {
        let r = client
            .post(format!("{base}/projects"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "bench"}))
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == reqwest::StatusCode::CREATED,
            "create project: {}",
            r.status()
        );
        let body: serde_json::Value = r.json().await?;
        let id = body["id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .ok_or_else(|| anyhow::anyhow!("no project id in {body}"))?;
        projects.push(id);
    }
    println!("| clients | personal create/s | p50 ms | project create/s | p50 ms | ratio |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &c in concurrency {
        let warm = Duration::from_secs(1);
        http_load(client, base, tokens, c, warm, None, None, None).await;
        http_load(client, base, tokens, c, warm, None, None, Some(&projects)).await;
        let slice = duration / SLICES;
        let (mut personal, mut project) = (0.0, 0.0);
        let (mut lat_personal, mut lat_project) = (Vec::new(), Vec::new());
        for _ in 0..SLICES {
            let (rate, l) = http_load(client, base, tokens, c, slice, None, None, None).await;
            personal += rate / SLICES as f64;
            lat_personal.extend(l);
            let (rate, l) =
                http_load(client, base, tokens, c, slice, None, None, Some(&projects)).await;
            project += rate / SLICES as f64;
            lat_project.extend(l);
        }
        lat_personal.sort_by(f64::total_cmp);
        lat_project.sort_by(f64::total_cmp);
        println!(
            "| {c} | {personal:.0} | {:.1} | {project:.0} | {:.1} | **{:.2}** |",
            pct(&lat_personal, 0.50),
            pct(&lat_project, 0.50),
            project / personal,
        );
    }
    Ok(())
}

/// `clients` loops posting creates for `duration`; with `rate`, the whole
/// load is paced to that many requests per second; with `projects`, client
/// i creates in `projects[i mod n]` (its user's project). Returns (rate,
/// sorted ms).
#[allow(clippy::too_many_arguments)]
async fn http_load(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    answered: Option<Answered>,
    projects: Option<&[Uuid]>,
) -> (f64, Vec<f64>) {
    let start = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
    let workers = (0..clients).map(|i| {
        let client = client.clone();
        let url = format!("{base}/tasks");
        let token = tokens[i % tokens.len()].clone();
        let project = projects.map(|p| p[i % tokens.len()]);
        let answered = answered.clone();
        async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut n = 0u64;
            if let Some(iv) = interval {
                // Spread the paced clients over one interval.
                tokio::time::sleep(iv.mul_f64(i as f64 / clients as f64)).await;
            }
            let begun = Instant::now();
            while start.elapsed() < duration {
                let t = Instant::now();
                let mut body =
                    serde_json::json!({"title": format!("bench {i}.{n}"), "tags": ["bench"]});
                if let Some(p) = project {
                    body["project_id"] = serde_json::json!(p);
                }
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let ok = match res {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        let at = chrono::Utc::now();
                        // Reading the body keeps the connection reusable.
                        let body = r.bytes().await.unwrap_or_default();
                        if let Some(answered) = &answered {
                            let id = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|b| b["id"].as_str().and_then(|s| s.parse().ok()));
                            if let (Some(id), Ok(mut map)) = (id, answered.lock()) {
                                map.insert(id, at);
                            }
                        }
                        true
                    }
                    Ok(r) => {
                        let _ = r.bytes().await;
                        false
                    }
                    _ => false,
                };
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                n += 1;
                if let Some(iv) = interval {
                    let next = begun + iv.mul_f64(n as f64);
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            (lat, errors)
        }
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = start.elapsed().as_secs_f64();
    let errors: usize = results.iter().map(|(_, e)| e).sum();
    if errors > 0 {
        eprintln!("{errors} requests failed");
    }
    let mut lat: Vec<f64> = results.into_iter().flat_map(|(l, _)| l).collect();
    lat.sort_by(f64::total_cmp);
    (lat.len() as f64 / elapsed, lat)
}

/// `clients` loops of one-row INSERT transactions for `duration`, inside
/// `BEGIN`/`COMMIT` or (`explicit_tx` false) autocommit; returns tx/s.
async fn raw_inserts(
    pool: &sqlx::PgPool,
    clients: usize,
    duration: Duration,
    explicit_tx: bool,
) -> f64 {
    let start = Instant::now();
    let workers = (0..clients).map(|_| {
        let pool = pool.clone();
        async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                let insert = sqlx::query("INSERT INTO bench_rows (id, body) VALUES ($1, $2)")
                    .bind(Uuid::now_v7())
                    .bind(serde_json::json!({"title": "bench", "tags": ["bench"]}));
                let ok = if explicit_tx {
                    async {
                        let mut tx = pool.begin().await?;
                        insert.execute(&mut *tx).await?;
                        tx.commit().await
                    }
                    .await
                    .is_ok()
                } else {
                    insert.execute(&pool).await.is_ok()
                };
                if ok {
                    n += 1;
                }
            }
            n
        }
    });
    let total: u64 = futures::future::join_all(workers).await.into_iter().sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
