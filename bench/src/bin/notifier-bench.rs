//! Notifier benchmark (figures in bench/README.md): 10,000 tasks falling
//! due at the same instant, created through command-api (so their events
//! go through the event store, the outbox relay and Kafka to the notifier,
//! which schedules an overdue notice for each). Measured from the due
//! instant:
//!
//! - to the last inbox entry (the scheduler's claim, re-check, insert,
//!   delivery rows and mark-sent, in batches);
//! - to the last webhook delivery received (the dispatcher's claim, signed
//!   POST, and record), at one endpoint per user;
//!
//! against, in the same run, a raw loop doing the same work with nothing
//! around it: the same inserts into a table shaped like the inbox, in
//! transactions of the scheduler's batch size (the inbox's yardstick), then
//! the same number of signed POSTs to the same receiver at the same
//! concurrency (inserts plus posts: the webhooks' yardstick). What the raw
//! loop leaves out is the point of the notifier: the re-check of each task
//! against the event store, the delivery rows, the claim with its lease and
//! the recorded outcome that make each delivery durable and once.
//!
//! Needs the local servers (`scripts/infra up`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use bench::percentile;
use chrono::{DateTime, Utc};
use clap::Parser;
use events::Role;
use futures::stream::{self, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tests::Deployment;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "taskstream notifier benchmark")]
struct Args {
    /// Tasks falling due at the same instant.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Users owning them (round-robin), each with one webhook endpoint.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Concurrent task creations while seeding.
    #[arg(long, default_value_t = 16)]
    seed_concurrency: usize,
    /// The due instant is this many seconds after the start: enough to
    /// create and schedule every task first.
    #[arg(long, default_value_t = 90)]
    lead_seconds: i64,
}

/// What the receiver saw: the first arrival of each `webhook-id`.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    arrivals: Vec<DateTime<Utc>>,
    repeats: u64,
}

type Receiver = Arc<Mutex<Seen>>;

async fn receive(State(seen): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut seen = seen.lock().expect("receiver lock");
    if seen.ids.insert(id) {
        seen.arrivals.push(Utc::now());
    } else {
        seen.repeats += 1;
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> anyhow::Result<(String, Receiver)> {
    let seen: Receiver = Arc::default();
    let app = Router::new()
        .route("/hooks/{user}", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, seen))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("load average at start: {}", loadavg());
    let d = Deployment::fresh().await;
    let mut command_config = d.command_api_config(tests::NO_JWKS);
    command_config.max_live_tasks = std::num::NonZeroU32::MAX;
    command_config.write_quota = service::rate_limit::Quota {
        per_minute: std::num::NonZeroU32::MAX,
        burst: std::num::NonZeroU32::MAX,
    };
    let command = d.spawn_command_api_with(command_config).await;
    let mut notifier_config = d.notifier_config(tests::NO_JWKS);
    // Production's dispatcher settings and scheduler tick; only loopback
    // receivers are allowed, as in the tests.
    notifier_config.tick = notifier::config::DEFAULT_TICK;
    notifier_config.webhooks = notifier::config::WebhookSettings {
        allow_private: true,
        ..Default::default()
    };
    notifier_config.late_after = Duration::from_secs(3600);
    let webhook_concurrency = notifier_config.webhooks.concurrency;
    let notifier = d.spawn_notifier_with(notifier_config).await;
    let (receiver, seen) = start_receiver().await?;
    let http = tests::http();

    // Users, each opted out of e-mail (this measures the inbox and the
    // webhooks), with one endpoint subscribed to overdue notices.
    let users: Vec<Uuid> = (0..args.users).map(|_| Uuid::now_v7()).collect();
    let tokens: Vec<String> = users.iter().map(|u| d.token_for(*u, Role::User)).collect();
    for (user, token) in users.iter().zip(&tokens) {
        http.put(notifier.url("/me/notification-settings"))
            .bearer_auth(token)
            .json(&json!({ "reminder_lead_times_seconds": [2_592_000], "email_opt_out": ["overdue"] }))
            .send()
            .await?
            .error_for_status()?;
        http.post(notifier.url("/webhooks"))
            .bearer_auth(token)
            .json(&json!({ "url": format!("{receiver}/hooks/{user}"), "events": ["overdue"] }))
            .send()
            .await?
            .error_for_status()?;
    }

    let due = Utc::now() + chrono::Duration::seconds(args.lead_seconds);
    let due_text = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let seeding = Instant::now();
    let created = stream::iter(0..args.tasks)
        .map(|i| {
            let (http, url, token, due) = (
                &http,
                command.url("/tasks"),
                &tokens[i % args.users],
                &due_text,
            );
            async move {
                http.post(url)
                    .bearer_auth(token)
                    .json(&json!({ "title": format!("due together {i}"), "due_at": due }))
                    .send()
                    .await?
                    .error_for_status()
                    .map(|_| ())
            }
        })
        .buffer_unordered(args.seed_concurrency)
        .collect::<Vec<_>>()
        .await;
    let failed = created.iter().filter(|r| r.is_err()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} creations failed: {:?}",
        created.iter().find(|r| r.is_err())
    );
    println!(
        "seeded {} tasks in {:.1?}; waiting for the notifier to schedule them",
        args.tasks,
        seeding.elapsed()
    );
    let pool = sqlx::PgPool::connect(&d.database_url).await?;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifier_schedule WHERE state = 'pending' AND kind = 'overdue'",
        )
        .fetch_one(&pool)
        .await?;
        if pending as usize >= args.tasks {
            break;
        }
        anyhow::ensure!(
            Utc::now() < due,
            "only {pending} scheduled by the due time: raise --lead-seconds"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "scheduled {} rows {:.1} s before they fall due",
        args.tasks,
        (due - Utc::now()).num_milliseconds() as f64 / 1000.0
    );

    // --- ours: wait for every inbox entry and every webhook.
    let expected = args.tasks;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifier_notifications WHERE kind = 'overdue'",
        )
        .fetch_one(&pool)
        .await?;
        if n as usize >= expected {
            break;
        }
        anyhow::ensure!(
            Utc::now() < due + chrono::Duration::seconds(600),
            "only {n} inbox entries 10 min after due"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inbox: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT created_at FROM notifier_notifications WHERE kind = 'overdue' ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await?;
    loop {
        let n = seen.lock().expect("receiver lock").arrivals.len();
        if n >= expected {
            break;
        }
        anyhow::ensure!(
            Utc::now() < due + chrono::Duration::seconds(900),
            "only {n} webhooks 15 min after due"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (hooks, repeats) = {
        let s = seen.lock().expect("receiver lock");
        (s.arrivals.clone(), s.repeats)
    };
    let since_due = |t: &DateTime<Utc>| (*t - due).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let inbox_s: Vec<f64> = inbox.iter().map(since_due).collect();
    let mut hook_s: Vec<f64> = hooks.iter().map(since_due).collect();
    hook_s.sort_by(f64::total_cmp);
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifier_deliveries WHERE channel = 'webhook' AND state <> 'delivered'",
    )
    .fetch_one(&pool)
    .await?;
    drop(notifier);

    // --- raw: the same inserts and posts, nothing around them.
    let raw_inbox = raw_inserts(&pool, expected).await?;
    let raw_posts = raw_posts(&http, &receiver, &users, expected, webhook_concurrency).await?;

    let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    println!();
    println!(
        "{} tasks due at one instant, {} users with one endpoint each",
        expected, args.users
    );
    println!(
        "inbox:    last entry {:.2} s after due (p50 {:.2} s); raw inserts, batches of 500: {:.2} s; ratio {:.2}×",
        last(&inbox_s),
        percentile(&inbox_s, 50.0),
        raw_inbox,
        last(&inbox_s) / raw_inbox
    );
    let raw_both = raw_inbox + raw_posts;
    println!(
        "webhooks: last delivery {:.2} s after due (p50 {:.2} s); raw loop, the inserts then the signed posts at {webhook_concurrency} in flight: {:.2} s (posts alone {:.2} s); ratio {:.2}×",
        last(&hook_s),
        percentile(&hook_s, 50.0),
        raw_both,
        raw_posts,
        last(&hook_s) / raw_both
    );
    println!("webhook deliveries not delivered: {failed}; repeated webhook-ids at the receiver: {repeats}");
    println!("load average at end: {}", loadavg());
    Ok(())
}

/// `n` rows into a table shaped like the inbox, 500 per transaction.
async fn raw_inserts(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE raw_inbox (LIKE notifier_notifications INCLUDING ALL)")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let user = Uuid::now_v7();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut tx = pool.begin().await?;
        for i in chunk {
            sqlx::query(
                "INSERT INTO raw_inbox (id, user_id, kind, task_id, title, body, data)
                 VALUES ($1, $2, 'overdue', $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(user)
            .bind(Uuid::new_v4())
            .bind(format!("Overdue: due together {i}"))
            .bind("\"due together\" was due and is not done.")
            .bind(json!({ "lead_seconds": 0 }))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `n` Standard-Webhooks-signed POSTs to the receiver, `concurrency` in flight.
async fn raw_posts(
    http: &reqwest::Client,
    receiver: &str,
    users: &[Uuid],
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let key = [7u8; 32];
    let started = Instant::now();
    let results = stream::iter(0..n)
        .map(|i| {
            let url = format!("{receiver}/hooks/{}", users[i % users.len()]);
            async move {
                let id = Uuid::new_v4().to_string();
                let ts = Utc::now().timestamp().to_string();
                let body = json!({ "type": "overdue", "timestamp": Utc::now(), "data": { "id": id, "title": format!("Overdue: due together {i}") } }).to_string();
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
                mac.update(format!("{id}.{ts}.{body}").as_bytes());
                let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                http.post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts)
                    .header("webhook-signature", format!("v1,{signature}"))
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    anyhow::ensure!(results.iter().all(Result::is_ok), "a raw post failed");
    Ok(started.elapsed().as_secs_f64())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}
