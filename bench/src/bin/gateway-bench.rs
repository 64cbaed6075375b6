//! Benchmark of the gateway (see `bench/README.md` for figures).
//!
//! Starts auth, command-api, projector and query-api in this process on
//! the local servers, and the real HAProxy with `gateway/haproxy.cfg` in
//! front of them (its budgets raised out of the way: this measures the
//! proxy, not the limits). Then, for `GET /tasks/{id}` and for
//! `POST /tasks`, it runs the same closed-loop load straight to the service
//! and through the gateway, in alternating slices so that a change in the
//! machine's other load falls on both alike, and prints throughput, p50
//! and p99 of each, the throughput ratio, the p50/p99 the gateway adds, and
//! the CPU time HAProxy spent per request it proxied (from
//! `/proc/<pid>/stat`): on a machine whose cores the load already fills,
//! that CPU is what the gateway takes from the services.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::percentile;
use clap::Parser;
use tests::gateway::Settings;
use uuid::Uuid;

/// Turns each path takes per measurement.
const SLICES: u32 = 6;

#[derive(Parser, Debug)]
#[command(about = "taskstream gateway benchmark: through HAProxy against straight to the service")]
struct Args {
    /// Client concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per measurement (per path, split into slices).
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Distinct users (client i is user i mod N).
    #[arg(long, default_value_t = 32)]
    users: usize,
    /// Tasks each user owns for the reads.
    #[arg(long, default_value_t = 20)]
    tasks_per_user: usize,
    /// HAProxy threads (`GATEWAY_THREADS`).
    #[arg(long, default_value_t = 1)]
    gateway_threads: u32,
    /// A configuration to run instead of `gateway/haproxy.cfg`, e.g.
    /// `bench/gateway-bare.cfg` (HAProxy forwarding with no rules, no limits,
    /// no log: the floor any proxy hop costs on this machine).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

/// One user's token and tasks.
struct User {
    token: String,
    tasks: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Read,
    Create,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let system = tests::System::start().await;
    let unlimited = 1_000_000_000;
    let gateway = system
        .start_gateway(&Settings {
            anonymous_per_10s: unlimited,
            user_reads_per_10s: unlimited,
            user_writes_per_10s: unlimited,
            auth_failures_per_10s: unlimited,
            max_connections_per_ip: 10_000,
            threads: args.gateway_threads,
            config: args.config.clone(),
            ..Settings::default()
        })
        .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(512)
        .build()?;

    println!(
        "{} users, {} tasks each, {} s per measurement, HAProxy {} thread(s), {}",
        args.users,
        args.tasks_per_user,
        args.seconds,
        args.gateway_threads,
        args.config
            .as_ref()
            .map_or("gateway/haproxy.cfg".into(), |c| c.display().to_string())
    );
    let users = Arc::new(seed(&client, &system, &args).await?);

    let pid = gateway
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the gateway has no pid"))?;
    println!("| request | clients | direct req/s | gateway req/s | ratio | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | HAProxy CPU µs/request |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for op in [Op::Read, Op::Create] {
        let direct = match op {
            Op::Read => system.query.base.clone(),
            Op::Create => system.command.base.clone(),
        };
        for &c in &args.concurrency {
            // Warm both paths' connections.
            for base in [&direct, &gateway.base] {
                load(&client, base, &users, op, c, Duration::from_secs(1)).await;
            }
            let slice = Duration::from_secs(args.seconds) / SLICES;
            let (mut d, mut g) = (Measured::default(), Measured::default());
            let mut gateway_cpu = Duration::ZERO;
            for _ in 0..SLICES {
                d.add(load(&client, &direct, &users, op, c, slice).await);
                let before = cpu_time(pid)?;
                g.add(load(&client, &gateway.base, &users, op, c, slice).await);
                gateway_cpu += cpu_time(pid)?.saturating_sub(before);
            }
            let (dr, gr) = (d.rate(), g.rate());
            let (d50, d99, g50, g99) = (d.pct(50.0), d.pct(99.0), g.pct(50.0), g.pct(99.0));
            let cpu_per_request =
                gateway_cpu.as_secs_f64() * 1e6 / (g.requests + g.errors).max(1) as f64;
            println!(
                "| {} | {c} | {dr:.0} | {gr:.0} | {:.2} | {d50:.2} / {d99:.2} | {g50:.2} / {g99:.2} | {:.2} / {:.2} | {cpu_per_request:.0} |",
                match op {
                    Op::Read => "GET /tasks/{id}",
                    Op::Create => "POST /tasks",
                },
                gr / dr,
                g50 - d50,
                g99 - d99,
            );
            if d.errors + g.errors > 0 {
                println!("  (errors: direct {}, gateway {})", d.errors, g.errors);
            }
        }
    }
    Ok(())
}

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start at state (3).
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after state.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // Linux reports these in USER_HZ, 100 per second on every mainstream
    // architecture.
    Ok(Duration::from_millis(ticks * 10))
}

/// Users with tokens, each with `tasks_per_user` tasks the views show.
async fn seed(
    client: &reqwest::Client,
    system: &tests::System,
    args: &Args,
) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::with_capacity(args.users);
    for _ in 0..args.users.max(1) {
        let token = system
            .deployment
            .token_for(Uuid::now_v7(), events::Role::User);
        let mut tasks = Vec::with_capacity(args.tasks_per_user);
        for i in 0..args.tasks_per_user.max(1) {
            let r = client
                .post(system.command.url("/tasks"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "title": format!("bench {i}") }))
                .send()
                .await?
                .error_for_status()?;
            let body: serde_json::Value = r.json().await?;
            tasks.push(body["id"].as_str().unwrap_or_default().to_owned());
        }
        users.push(User { token, tasks });
    }
    // Wait until the projector has every task in the views.
    let deadline = Instant::now() + Duration::from_secs(120);
    for user in &users {
        for task in &user.tasks {
            loop {
                let r = client
                    .get(system.query.url(&format!("/tasks/{task}")))
                    .bearer_auth(&user.token)
                    .send()
                    .await?;
                if r.status().is_success() {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "task {task} never projected");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(users)
}

#[derive(Default)]
struct Measured {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies_ms.extend(other.latencies_ms);
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&mut self, p: f64) -> f64 {
        self.latencies_ms.sort_by(f64::total_cmp);
        percentile(&self.latencies_ms, p)
    }
}

/// `clients` closed loops of `op` against `base` for `duration`.
async fn load(
    client: &reqwest::Client,
    base: &str,
    users: &Arc<Vec<User>>,
    op: Op,
    clients: usize,
    duration: Duration,
) -> Measured {
    let start = Instant::now();
    let workers = (0..clients).map(|i| {
        let (client, base, users) = (client.clone(), base.to_owned(), users.clone());
        tokio::spawn(async move {
            let user = &users[i % users.len()];
            let mut m = Measured::default();
            let mut n = 0usize;
            while start.elapsed() < duration {
                let t = Instant::now();
                let request = match op {
                    Op::Read => client.get(format!(
                        "{base}/tasks/{}",
                        user.tasks[(i + n) % user.tasks.len()]
                    )),
                    Op::Create => client
                        .post(format!("{base}/tasks"))
                        .json(&serde_json::json!({ "title": format!("load {i}.{n}") })),
                };
                let ok = match request.bearer_auth(&user.token).send().await {
                    Ok(r) => {
                        let good = r.status().is_success();
                        // Reading the body keeps the connection reusable.
                        let _ = r.bytes().await;
                        good
                    }
                    Err(_) => false,
                };
                if ok {
                    m.requests += 1;
                    m.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    m.errors += 1;
                }
                n += 1;
            }
            m
        })
    });
    let mut total = Measured::default();
    for w in futures::future::join_all(workers).await {
        total.add(w.unwrap_or_default());
    }
    total.elapsed = start.elapsed();
    total
}
