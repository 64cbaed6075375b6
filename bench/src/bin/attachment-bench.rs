//! Attachment benchmark (figures in bench/README.md): files uploaded and
//! downloaded through the API's flow, against the raw S3 client doing the
//! same in the same run, on the same store.
//!
//! - API upload: `POST /tasks/{id}/attachments` (a presigned PUT) → PUT the
//!   bytes to the store → `POST …/complete` (HEAD, then the event);
//! - API download: `GET …/download` (302) → GET the presigned URL;
//! - raw: a signed PUT, then a signed GET, of the same bytes, once before
//!   the API's run and once after it.
//!
//! The bytes bypass the services either way, so the ratio shows what the
//! API's round trips (and the completion's HEAD and event) add per file.
//! Every download is compared with its upload by SHA-256.
//!
//! Needs the local servers (`scripts/infra up postgres kafka mongo s3`).

use std::time::{Duration, Instant};

use bench::percentile;
use clap::Parser;
use events::Role;
use futures::stream::{self, StreamExt};
use objects::{sha256_hex, sha256_hex_to_base64, ObjectStore};
use serde_json::{json, Value};
use tests::{unique, Deployment};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "taskstream attachment benchmark")]
struct Args {
    /// Files, each uploaded and downloaded once per path.
    #[arg(long, default_value_t = 100)]
    files: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 1024 * 1024)]
    size: usize,
    /// Files in flight at once (both paths).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Tasks the files are attached to (round-robin): the writes of one
    /// task take turns on its lock, so one task serialises its uploads'
    /// create and complete.
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// Users the tasks belong to (round-robin): one user's uploads take
    /// turns on the lock of their byte and pending quotas.
    #[arg(long, default_value_t = 1)]
    users: usize,
}

fn file(i: usize, size: usize) -> Vec<u8> {
    let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..size)
        .map(|j| (seed.wrapping_add(j as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Per-file latencies (ms) and the phase's wall time (s).
struct Phase {
    per_file: Vec<f64>,
    wall: f64,
}

impl Phase {
    fn median(&self) -> f64 {
        let mut v = self.per_file.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    }
    fn p95(&self) -> f64 {
        let mut v = self.per_file.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 95.0)
    }
}

async fn run<F, Fut>(n: usize, concurrency: usize, one: F) -> Phase
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let per_file: Vec<f64> = stream::iter(0..n)
        .map(|i| {
            let fut = one(i);
            async move {
                let t = Instant::now();
                fut.await.unwrap_or_else(|e| panic!("file {i}: {e:#}"));
                t.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Phase {
        per_file,
        wall: start.elapsed().as_secs_f64(),
    }
}

fn ok(r: &reqwest::Response, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(r.status().is_success(), "{what}: {}", r.status());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dep = Deployment::fresh().await;
    let s3 = dep.s3_bucket(&unique("bench"));
    let store = ObjectStore::new(&s3).map_err(anyhow::Error::msg)?;
    store.ensure_bucket().await?;
    let mut command = dep.command_api_config(tests::NO_JWKS);
    command.s3 = s3.clone();
    command.attachments.max_bytes = args.size as u64;
    command.attachments.max_per_task = args.files as u32;
    let cmd = dep.spawn_command_api_with(command).await;
    let _projector = dep.spawn_projector().await;
    let query = dep
        .spawn_query_api_with(query_api::Config {
            s3,
            ..dep.query_api_config(tests::NO_JWKS)
        })
        .await;
    let tokens: Vec<String> = (0..args.users.max(1))
        .map(|_| dep.token_for(Uuid::now_v7(), Role::User))
        .collect();
    // Task `j` belongs to user `j % users`; file `i` goes to task `i % tasks`.
    let owner_of = |task: usize| tokens[task % tokens.len()].clone();
    let http = client();
    let mut tasks = Vec::new();
    for j in 0..args.tasks.max(1) {
        let created: Value = http
            .post(cmd.url("/tasks"))
            .bearer_auth(owner_of(j))
            .json(&json!({"title": "bench"}))
            .send()
            .await?
            .json()
            .await?;
        tasks.push(created["id"].as_str().unwrap_or_default().parse::<Uuid>()?);
    }
    let task_of = |i: usize| tasks[i % tasks.len()];
    let token_of = |i: usize| owner_of(i % tasks.len());
    let files: Vec<Vec<u8>> = (0..args.files).map(|i| file(i, args.size)).collect();
    let sums: Vec<String> = files.iter().map(|f| sha256_hex(f)).collect();
    println!(
        "{} files of {} bytes, {} in flight, on {} task(s) of {} user(s)",
        args.files,
        args.size,
        args.concurrency,
        tasks.len(),
        tokens.len()
    );

    // The raw S3 client: a signed PUT, then a signed GET, before the API's
    // run and again after it (under `round`), so neither path gains from
    // going first; the ratios are against the mean of the two raw runs.
    let raw = |round: usize| {
        let (http, store, files, sums) = (&http, &store, &files, &sums);
        async move {
            // With the checksum header too: the store hashes the bytes either way.
            let up = run(args.files, args.concurrency, |i| {
                let (http, store, body) = (http.clone(), store.clone(), files[i].clone());
                let checksum = sha256_hex_to_base64(&sums[i]).unwrap_or_default();
                async move {
                    let url =
                        store.presign_put_internal(&format!("raw{round}/{i}"), Some(&checksum));
                    let put = http
                        .put(url)
                        .header("x-amz-checksum-sha256", checksum)
                        .body(body)
                        .send()
                        .await?;
                    ok(&put, "raw PUT")
                }
            })
            .await;
            let down = run(args.files, args.concurrency, |i| {
                let (http, store, sum) = (http.clone(), store.clone(), sums[i].clone());
                async move {
                    let url = store.presign_get_internal(&format!("raw{round}/{i}"));
                    let r = http.get(url).send().await?;
                    ok(&r, "raw GET")?;
                    anyhow::ensure!(sha256_hex(&r.bytes().await?) == sum, "raw bytes differ");
                    Ok(())
                }
            })
            .await;
            (up, down)
        }
    };
    let (raw_up, raw_down) = raw(1).await;

    // The API: create → PUT → complete, then download → 302 → GET.
    let ids: Vec<std::sync::Mutex<Option<Uuid>>> = (0..args.files)
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let last_token = std::sync::Mutex::new(Vec::<String>::new());
    // Per file: (create, PUT, complete) in ms.
    let steps = std::sync::Mutex::new(Vec::<[f64; 3]>::new());
    let api_up = run(args.files, args.concurrency, |i| {
        let (http, token, body, sum) = (http.clone(), token_of(i), files[i].clone(), sums[i].clone());
        let (base, ids, last_token, steps) = (cmd.base.clone(), &ids, &last_token, &steps);
        let task = task_of(i);
        async move {
            let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
            let t0 = Instant::now();
            let started = http
                .post(format!("{base}/tasks/{task}/attachments"))
                .bearer_auth(&token)
                .json(&json!({"filename": format!("f{i}.bin"), "content_type": "application/octet-stream",
                               "size": body.len(), "sha256": sum}))
                .send()
                .await?;
            ok(&started, "create")?;
            let started: Value = started.json().await?;
            let id: Uuid = started["id"].as_str().unwrap_or_default().parse()?;
            let (create_ms, t1) = (ms(t0), Instant::now());
            let put = http
                .put(started["upload"]["url"].as_str().unwrap_or_default())
                .header("content-type", "application/octet-stream")
                .header("x-amz-checksum-sha256", sha256_hex_to_base64(&sum).unwrap_or_default())
                .body(body)
                .send()
                .await?;
            ok(&put, "PUT")?;
            let (put_ms, t2) = (ms(t1), Instant::now());
            let done = http
                .post(format!("{base}/tasks/{task}/attachments/{id}/complete"))
                .bearer_auth(&token)
                .send()
                .await?;
            ok(&done, "complete")?;
            steps.lock().expect("lock").push([create_ms, put_ms, ms(t2)]);
            if let Some(t) = done.headers().get("x-consistency-token") {
                last_token.lock().expect("lock").push(t.to_str()?.to_owned());
            }
            *ids[i].lock().expect("lock") = Some(id);
            Ok(())
        }
    })
    .await;
    // Every completion is listed before the downloads start (each task's
    // last completion: the wait is for a version at least that one).
    let mut listed = 0;
    for (j, task) in tasks.iter().enumerate() {
        let token = last_token
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|t| t.parse::<events::ConsistencyToken>().ok())
            .filter(|t| t.stream_id == *task)
            .max_by_key(|t| t.version)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let page: Value = http
            .get(query.url(&format!("/tasks/{task}/attachments")))
            .bearer_auth(owner_of(j))
            .header("x-consistency-token", token)
            .send()
            .await?
            .json()
            .await?;
        listed += page["items"].as_array().map_or(0, Vec::len);
    }
    anyhow::ensure!(
        listed == args.files,
        "{listed} of {} attachments listed",
        args.files
    );
    let api_down = run(args.files, args.concurrency, |i| {
        let (http, token, sum) = (http.clone(), token_of(i), sums[i].clone());
        let id = ids[i].lock().expect("lock").expect("uploaded");
        let base = query.base.clone();
        let task = task_of(i);
        async move {
            let r = http
                .get(format!("{base}/tasks/{task}/attachments/{id}/download"))
                .bearer_auth(&token)
                .send()
                .await?;
            anyhow::ensure!(
                r.status() == reqwest::StatusCode::FOUND,
                "download: {}",
                r.status()
            );
            let location = r.headers()["location"].to_str()?.to_owned();
            let got = http.get(location).send().await?;
            ok(&got, "GET")?;
            anyhow::ensure!(sha256_hex(&got.bytes().await?) == sum, "bytes differ");
            Ok(())
        }
    })
    .await;

    let (raw_up_again, raw_down_again) = raw(2).await;

    let mb = (args.files * args.size) as f64 / (1024.0 * 1024.0);
    println!("| path | wall (s) | MiB/s | median per file (ms) | p95 (ms) |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, p) in [
        ("raw S3 PUT, before", &raw_up),
        ("API upload (create → PUT → complete)", &api_up),
        ("raw S3 PUT, after", &raw_up_again),
        ("raw S3 GET, before", &raw_down),
        ("API download (302 → GET)", &api_down),
        ("raw S3 GET, after", &raw_down_again),
    ] {
        println!(
            "| {name} | {:.2} | {:.1} | {:.1} | {:.1} |",
            p.wall,
            mb / p.wall,
            p.median(),
            p.p95()
        );
    }
    let steps = steps.into_inner().expect("lock");
    let median_of = |k: usize| {
        let mut v: Vec<f64> = steps.iter().map(|s| s[k]).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    println!(
        "API upload, median per step (ms): create {:.1}, PUT {:.1}, complete {:.1}",
        median_of(0),
        median_of(1),
        median_of(2)
    );
    let mean = |a: f64, b: f64| (a + b) / 2.0;
    println!(
        "ratio API / raw (mean of the two raw runs): upload wall {:.2}, median {:.2}; \
         download wall {:.2}, median {:.2}",
        api_up.wall / mean(raw_up.wall, raw_up_again.wall),
        api_up.median() / mean(raw_up.median(), raw_up_again.median()),
        api_down.wall / mean(raw_down.wall, raw_down_again.wall),
        api_down.median() / mean(raw_down.median(), raw_down_again.median())
    );
    Ok(())
}
