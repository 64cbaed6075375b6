//! Projects benchmark (figures in bench/README.md), each measurement next
//! to the direct path doing the same work in the same run:
//!
//! (list) `GET /tasks` for a user who belongs to 20 projects holding
//!     10,000 tasks in all (plus tasks of other projects and other users'
//!     personal tasks in the same collection), through query-api (which
//!     reads the caller's memberships from Postgres, then runs one find),
//!     alternating with the raw `mongodb` driver running that same find with
//!     the project ids already in hand;
//! (create) `POST /tasks` into a project (the membership row locked in the
//!     write's transaction, the project's task bookkeeping) against
//!     `POST /tasks` of a personal task, in alternating slices at the same
//!     concurrency.
//!
//! Needs the local servers (`scripts/infra up`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::percentile;
use clap::Parser;
use events::{Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskEvent, TaskStatus};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Database;
use read_model::views::{Applied, TaskView, View, TASK_VIEWS};
use serde_json::json;
use tests::Deployment;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// `GET /tasks` across 20 projects vs the raw driver's find.
    List,
    /// Creating a task in a project vs a personal one.
    Create,
}

#[derive(Parser)]
#[command(about = "taskstream projects benchmark")]
struct Args {
    #[arg(long, value_enum, value_delimiter = ',', default_value = "list,create")]
    parts: Vec<Part>,
    /// (list) Projects the reader belongs to.
    #[arg(long, default_value_t = 20)]
    projects: usize,
    /// (list) Tasks in those projects, in all.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// (list) Tasks elsewhere in the collection (other projects, other
    /// users' personal tasks) that the reader must not see.
    #[arg(long, default_value_t = 10_000)]
    others: usize,
    /// (list) Requests each way.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// (create) Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// (create) Seconds in all (five slices each way).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("load average at start: {}", loadavg());
    if args.parts.contains(&Part::List) {
        list(&args).await?;
    }
    if args.parts.contains(&Part::Create) {
        create(&args).await?;
    }
    println!("load average at end: {}", loadavg());
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------- list

/// A task view as the projector would fold its creation.
fn view(owner: Uuid, project: Option<Uuid>, i: usize, total: usize) -> anyhow::Result<TaskView> {
    let now = chrono::Utc::now();
    let created = Event::Task(TaskEvent::Created(TaskCreated {
        owner_id: owner,
        project_id: project,
        assignee_ids: if i.is_multiple_of(3) {
            vec![owner]
        } else {
            vec![]
        },
        title: format!("bench task {i}"),
        description: "seeded for the projects benchmark".into(),
        status: TaskStatus::ALL[i % 4],
        priority: Priority::ALL[(i / 4) % 4],
        due_at: None,
        tags: vec!["bench".into()],
    }));
    let meta = EventMeta {
        actor: owner,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: now - chrono::Duration::seconds((total - i) as i64),
    };
    match TaskView::apply(None, &EventEnvelope::new(Uuid::new_v4(), 1, &created, meta))? {
        Applied::Advanced(v) => Ok(v),
        other => anyhow::bail!("a creation did not create a view: {other:?}"),
    }
}

/// The find query-api issues for `GET /tasks` (default sort `-created_at`,
/// page of 50 plus one to know whether more follow) for a caller with
/// these projects.
fn raw_filter(reader: Uuid, projects: &[String]) -> Document {
    doc! { "$and": [
        { "$and": [
            { "$or": [
                { "owner_id": reader.to_string(), "project_id": null },
                { "project_id": { "$in": projects } },
            ] },
            { "deleted": false },
        ] },
    ] }
}

async fn raw_list(db: &Database, reader: Uuid, projects: &[String]) -> anyhow::Result<Vec<String>> {
    let views: Vec<TaskView> = db
        .collection::<TaskView>(TASK_VIEWS)
        .find(raw_filter(reader, projects))
        .sort(doc! { "created_at": -1, "_id": -1 })
        .limit(51)
        .await?
        .try_collect()
        .await?;
    Ok(views.into_iter().map(|v| v.id).collect())
}

async fn list(args: &Args) -> anyhow::Result<()> {
    let d = Deployment::fresh().await;
    let db = read_model::mongo::connect(&tests::servers().mongodb_url, &d.mongodb_database)
        .await
        .map_err(anyhow::Error::msg)?;
    read_model::ensure_indexes(&db).await?;
    // query-api migrates the database at start; the memberships go in after.
    let query = d.spawn_query_api_standalone().await;
    let pool = sqlx::PgPool::connect(&d.database_url).await?;

    let reader = Uuid::new_v4();
    let mine: Vec<Uuid> = (0..args.projects).map(|_| Uuid::now_v7()).collect();
    let theirs: Vec<Uuid> = (0..args.projects).map(|_| Uuid::now_v7()).collect();
    for p in &mine {
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'member')",
        )
        .bind(p)
        .bind(reader)
        .execute(&pool)
        .await?;
    }
    let total = args.tasks + args.others;
    let mut views = Vec::with_capacity(total);
    for i in 0..args.tasks {
        let owner = if i.is_multiple_of(5) {
            reader
        } else {
            Uuid::new_v4()
        };
        views.push(view(owner, Some(mine[i % mine.len()]), i, total)?);
    }
    for i in 0..args.others {
        let project = i.is_multiple_of(2).then(|| theirs[i % theirs.len()]);
        views.push(view(Uuid::new_v4(), project, args.tasks + i, total)?);
    }
    eprintln!("(list) writing {} task views…", views.len());
    let collection = db.collection::<TaskView>(TASK_VIEWS);
    for chunk in views.chunks(5000) {
        collection.insert_many(chunk).ordered(false).await?;
    }
    drop(views);

    let token = d.token_for(reader, Role::User);
    let client = tests::http();
    let ids: Vec<String> = mine.iter().map(Uuid::to_string).collect();
    let page = bench::listed_task_ids(&client, &query.base, "limit=50", &token).await?;
    let raw = raw_list(&db, reader, &ids).await?;
    anyhow::ensure!(
        page.len() == 50 && raw.len() == 51 && page[..] == raw[..50],
        "query-api and the raw find disagree ({} vs {} items)",
        page.len(),
        raw.len()
    );
    eprintln!("(list) {} requests each way…", args.requests);
    let (mut http_ms, mut raw_ms) = (Vec::new(), Vec::new());
    for i in 0..args.requests {
        for http_first in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if http_first {
                bench::listed_task_ids(&client, &query.base, "limit=50", &token).await?;
                http_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            } else {
                raw_list(&db, reader, &ids).await?;
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
        "(list) GET /tasks?limit=50 for a member of {} projects holding {} tasks \
         ({} more tasks in the collection that the reader cannot see)",
        args.projects, args.tasks, args.others
    );
    println!("| path | requests | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| query-api over HTTP (memberships from Postgres, then the find) | {} | {hp50:.1} | {:.1} |",
        http_ms.len(),
        percentile(&http_ms, 99.0)
    );
    println!(
        "| raw driver, the same find (project ids in hand) | {} | {rp50:.1} | {:.1} |",
        raw_ms.len(),
        percentile(&raw_ms, 99.0)
    );
    println!("ratio at p50: **{:.2}x** (target <= 1.3x)", hp50 / rp50);
    Ok(())
}

// ---------------------------------------------------------------- create

/// Runs `concurrency` clients creating tasks (in `project` when given) for
/// `length`; returns the creates done and their latencies in ms.
async fn slice(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
    project: Option<Uuid>,
    length: Duration,
) -> anyhow::Result<(u64, Vec<f64>)> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let mut clients = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        let (client, base, token, done) =
            (client.clone(), base.to_owned(), token.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = match project {
                    Some(p) => json!({"title": format!("task {n}.{i}"), "project_id": p}),
                    None => json!({"title": format!("task {n}.{i}")}),
                };
                let t = Instant::now();
                let r = client
                    .post(format!("{base}/tasks"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "create answered {}", r.status());
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await??);
    }
    Ok((done.load(Ordering::Relaxed), all))
}

async fn create(args: &Args) -> anyhow::Result<()> {
    let d = Deployment::fresh().await;
    let mut config = d.command_api_config(tests::NO_JWKS);
    config.max_live_tasks = std::num::NonZeroU32::MAX;
    // The bench measures the write path itself, not the per-user limit.
    config.write_quota = service::rate_limit::Quota {
        per_minute: std::num::NonZeroU32::MAX,
        burst: std::num::NonZeroU32::MAX,
    };
    let command = d.spawn_command_api_with(config).await;
    let client = tests::http();
    // One user per client, all members of one project (the owner adds them).
    let users: Vec<Uuid> = (0..args.concurrency).map(|_| Uuid::now_v7()).collect();
    let tokens: Vec<String> = users.iter().map(|u| d.token_for(*u, Role::User)).collect();
    let created: serde_json::Value = client
        .post(command.url("/projects"))
        .bearer_auth(&tokens[0])
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let project: Uuid = created["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no project id in {created}"))?;
    // Members join through the membership table the command side keeps
    // (adding by id needs an account in auth, which this bench does not run).
    let pool = sqlx::PgPool::connect(&d.database_url).await?;
    for u in &users[1..] {
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'member')",
        )
        .bind(project)
        .bind(u)
        .execute(&pool)
        .await?;
    }
    // Warm up both paths.
    slice(
        &client,
        &command.base,
        &tokens,
        Some(project),
        Duration::from_secs(1),
    )
    .await?;
    slice(
        &client,
        &command.base,
        &tokens,
        None,
        Duration::from_secs(1),
    )
    .await?;
    let each = Duration::from_secs(args.seconds.max(10)) / 10;
    let (mut in_project, mut personal) = ((0u64, Vec::new()), (0u64, Vec::new()));
    for round in 0..5 {
        for project_first in [round % 2 == 0, round % 2 != 0] {
            if project_first {
                let (n, l) = slice(&client, &command.base, &tokens, Some(project), each).await?;
                in_project.0 += n;
                in_project.1.extend(l);
            } else {
                let (n, l) = slice(&client, &command.base, &tokens, None, each).await?;
                personal.0 += n;
                personal.1.extend(l);
            }
        }
    }
    in_project.1.sort_by(f64::total_cmp);
    personal.1.sort_by(f64::total_cmp);
    let secs = (each * 5).as_secs_f64();
    let (rate_p, rate_s) = (in_project.0 as f64 / secs, personal.0 as f64 / secs);
    println!();
    println!(
        "(create) POST /tasks at {} concurrent clients, five {:.1?} slices each way, alternating",
        args.concurrency, each
    );
    println!("| create | per second | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| in a project (membership row locked, project bookkeeping) | {rate_p:.0} | {:.1} | {:.1} |",
        percentile(&in_project.1, 50.0),
        percentile(&in_project.1, 99.0)
    );
    println!(
        "| personal | {rate_s:.0} | {:.1} | {:.1} |",
        percentile(&personal.1, 50.0),
        percentile(&personal.1, 99.0)
    );
    println!("ratio: **{:.2}x** (target >= 0.9x)", rate_p / rate_s);
    Ok(())
}
