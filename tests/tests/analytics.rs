//! `/analytics/...` against figures computed here, independently, from the
//! very events the test publishes (reopened tasks included); and the same
//! figures again after `projector rebuild analytics`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as TimeDelta, DurationRound, Utc};
use events::kafka::EnvelopeRecord;
use events::topics::Topics;
use events::{
    Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskDeleted, TaskDueDateChanged,
    TaskEvent, TaskPriorityChanged, TaskStatus, TaskStatusChanged,
};
use futures::future::join_all;
use projector::rebuild::{rebuild, RebuildOptions, Target};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tests::clients::QueryClient;
use tests::{eventually, servers, Deployment};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the test knows of one task, from the events it produced.
#[derive(Clone)]
struct Truth {
    owner: Uuid,
    created_at: DateTime<Utc>,
    status: TaskStatus,
    priority: Priority,
    due_at: Option<DateTime<Utc>>,
    deleted: bool,
    completions: Vec<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    /// (cycle, work) seconds of the last completion while done.
    last_cycle: Option<(f64, Option<f64>)>,
}

#[derive(Default)]
struct Log {
    envelopes: Vec<EventEnvelope>,
    truth: HashMap<Uuid, Truth>,
    versions: HashMap<Uuid, u64>,
}

impl Log {
    fn push(&mut self, id: Uuid, owner: Uuid, at: DateTime<Utc>, event: TaskEvent) {
        let v = self.versions.entry(id).or_insert(0);
        *v += 1;
        let meta = EventMeta {
            actor: owner,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            occurred_at: at,
        };
        self.envelopes.push(EventEnvelope::new(
            id,
            *v,
            &Event::Task(event.clone()),
            meta,
        ));
        match event {
            TaskEvent::Created(c) => {
                self.truth.insert(
                    id,
                    Truth {
                        owner,
                        created_at: at,
                        status: c.status,
                        priority: c.priority,
                        due_at: c.due_at,
                        deleted: false,
                        completions: vec![],
                        started_at: None,
                        last_cycle: None,
                    },
                );
            }
            TaskEvent::StatusChanged(s) => {
                let t = self.truth.get_mut(&id).expect("created first");
                t.status = s.to;
                match s.to {
                    TaskStatus::InProgress => t.started_at = Some(at),
                    TaskStatus::Done => {
                        t.completions.push(at);
                        let secs =
                            |from: DateTime<Utc>| (at - from).num_milliseconds() as f64 / 1000.0;
                        t.last_cycle = Some((secs(t.created_at), t.started_at.map(secs)));
                    }
                    _ => {
                        t.started_at = None;
                        t.last_cycle = None;
                    }
                }
            }
            TaskEvent::PriorityChanged(p) => self.truth.get_mut(&id).expect("task").priority = p.to,
            TaskEvent::DueDateChanged(d) => {
                self.truth.get_mut(&id).expect("task").due_at = d.due_at
            }
            TaskEvent::Deleted(_) => self.truth.get_mut(&id).expect("task").deleted = true,
            // This log has personal, unassigned tasks only.
            TaskEvent::Updated(_)
            | TaskEvent::AssigneesChanged(_)
            | TaskEvent::Moved(_)
            | TaskEvent::AttachmentAdded(_)
            | TaskEvent::AttachmentRemoved(_) => {}
        }
    }

    fn create(
        &mut self,
        owner: Uuid,
        at: DateTime<Utc>,
        priority: Priority,
        due_at: Option<DateTime<Utc>>,
    ) -> Uuid {
        let id = Uuid::new_v4();
        self.push(
            id,
            owner,
            at,
            TaskEvent::Created(TaskCreated {
                owner_id: owner,
                project_id: None,
                assignee_ids: vec![],
                title: "analytics".into(),
                description: String::new(),
                status: TaskStatus::Todo,
                priority,
                due_at,
                tags: vec![],
            }),
        );
        id
    }

    fn status(&mut self, id: Uuid, at: DateTime<Utc>, to: TaskStatus) {
        let t = &self.truth[&id];
        let (owner, from) = (t.owner, t.status);
        self.push(
            id,
            owner,
            at,
            TaskEvent::StatusChanged(TaskStatusChanged { from, to }),
        );
    }
}

fn nearest_rank(sorted: &[f64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    serde_json::json!(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn stats(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    let mean = if values.is_empty() {
        Value::Null
    } else {
        serde_json::json!(values.iter().sum::<f64>() / values.len() as f64)
    };
    serde_json::json!({
        "count": values.len(),
        "p50_seconds": nearest_rank(&values, 50.0),
        "p90_seconds": nearest_rank(&values, 90.0),
        "mean_seconds": mean,
    })
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The figures the endpoints must report, from the test's own bookkeeping.
fn expected(
    log: &Log,
    owner: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Value, Value, Value) {
    let tasks: Vec<&Truth> = log
        .truth
        .values()
        .filter(|t| !t.deleted && owner.is_none_or(|o| t.owner == o))
        .collect();
    let in_range = |t: DateTime<Utc>| t >= from && t < to;
    let mut by_status: BTreeMap<&str, u64> =
        TaskStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut by_priority: BTreeMap<&str, u64> =
        Priority::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut d = from.duration_trunc(TimeDelta::days(1)).expect("trunc");
    while d < to {
        days.insert(day(d), (0, 0));
        d += TimeDelta::days(1);
    }
    let (mut created, mut done_of_created, mut overdue) = (0u64, 0u64, 0u64);
    for t in &tasks {
        *by_status.get_mut(t.status.as_str()).expect("status") += 1;
        *by_priority.get_mut(t.priority.as_str()).expect("priority") += 1;
        if in_range(t.created_at) {
            created += 1;
            days.get_mut(&day(t.created_at)).expect("day").0 += 1;
            if t.status == TaskStatus::Done {
                done_of_created += 1;
            }
        }
        for c in t.completions.iter().filter(|c| in_range(**c)) {
            days.get_mut(&day(*c)).expect("day").1 += 1;
        }
        if t.status.is_open() && t.due_at.is_some_and(|d| d < now) {
            overdue += 1;
        }
    }
    let per_day = |pick: fn(&(u64, u64)) -> u64| -> Value {
        days.iter()
            .map(|(d, c)| serde_json::json!({ "date": d, "count": pick(c) }))
            .collect()
    };
    let summary = serde_json::json!({
        "by_status": by_status,
        "by_priority": by_priority,
        "created_per_day": per_day(|c| c.0),
        "completed_per_day": per_day(|c| c.1),
        "completion_rate": if created == 0 { Value::Null } else { serde_json::json!(done_of_created as f64 / created as f64) },
        "overdue": overdue,
    });

    let done: Vec<&&Truth> = tasks
        .iter()
        .filter(|t| {
            t.status == TaskStatus::Done && t.completions.last().is_some_and(|c| in_range(*c))
        })
        .collect();
    let times = |ts: &[&&Truth]| {
        serde_json::json!({
            "cycle": stats(ts.iter().filter_map(|t| t.last_cycle.map(|c| c.0)).collect()),
            "work": stats(ts.iter().filter_map(|t| t.last_cycle.and_then(|c| c.1)).collect()),
        })
    };
    let by_priority: BTreeMap<&str, Value> = Priority::ALL
        .iter()
        .map(|p| {
            let of: Vec<&&Truth> = done.iter().copied().filter(|t| t.priority == *p).collect();
            (p.as_str(), times(&of))
        })
        .collect();
    let cycle = serde_json::json!({ "overall": times(&done), "by_priority": by_priority });

    let mut weeks: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    let monday = |t: DateTime<Utc>| {
        let d = t.duration_trunc(TimeDelta::days(1)).expect("trunc");
        d - TimeDelta::days(i64::from(d.weekday().num_days_from_monday()))
    };
    let mut w = monday(from);
    while w < to {
        weeks.insert(w, 0);
        w += TimeDelta::days(7);
    }
    for t in &tasks {
        for c in t.completions.iter().filter(|c| in_range(**c)) {
            *weeks.get_mut(&monday(*c)).expect("week") += 1;
        }
    }
    let throughput: Value = weeks
        .iter()
        .map(|(start, n)| serde_json::json!({ "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "completed": n }))
        .collect();
    (summary, cycle, throughput)
}

/// Compares JSON numbers loosely (means are float sums) and the rest exactly.
fn assert_same(what: &str, got: &Value, want: &Value) {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            assert!((a - b).abs() < 1e-6, "{what}: got {a}, want {b}");
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                assert_same(&format!("{what}.{k}"), a.get(k).unwrap_or(&Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{what}: {got} vs {want}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(&format!("{what}[{i}]"), x, y);
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            // Timestamps may differ in notation only.
            let (x, y) = (
                DateTime::parse_from_rfc3339(a),
                DateTime::parse_from_rfc3339(b),
            );
            assert!(x.is_ok() && x == y, "{what}: got {a}, want {b}");
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn figures_match_the_events_including_reopened_tasks_and_survive_a_rebuild() {
    let d = Deployment::fresh().await;
    let topics = Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(&servers().kafka_brokers, &topics)
        .await
        .expect("topics");
    let _projector = d.spawn_projector().await;
    let query = d.spawn_query_api_standalone().await;
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongo");

    let now = Utc::now();
    let d0 = (now - TimeDelta::days(12))
        .duration_trunc(TimeDelta::days(1))
        .expect("trunc")
        + TimeDelta::hours(9);
    let h = TimeDelta::hours;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut log = Log::default();

    // Done after a start.
    let t1 = log.create(alice, d0, Priority::High, None);
    log.status(t1, d0 + h(1), TaskStatus::InProgress);
    log.status(t1, d0 + h(26), TaskStatus::Done);
    // Done, reopened, started again, done again: two completions; the
    // cycle uses the last one.
    let t2 = log.create(alice, d0, Priority::Low, None);
    log.status(t2, d0 + h(48), TaskStatus::Done);
    log.status(t2, d0 + h(72), TaskStatus::Todo);
    log.status(t2, d0 + h(96), TaskStatus::InProgress);
    log.status(t2, d0 + h(120), TaskStatus::Done);
    // Overdue: due in the past, still open.
    log.create(alice, d0 + h(24), Priority::Medium, Some(d0 + h(48)));
    // Cancelled.
    let t4 = log.create(alice, d0 + h(48), Priority::Urgent, None);
    log.status(t4, d0 + h(72), TaskStatus::Cancelled);
    // Deleted: leaves every figure.
    let t5 = log.create(alice, d0 + h(48), Priority::High, None);
    log.status(t5, d0 + h(50), TaskStatus::Done);
    log.push(t5, alice, d0 + h(60), TaskEvent::Deleted(TaskDeleted {}));
    // Open, due later; priority and due date changed.
    let t6 = log.create(
        alice,
        d0 + h(96),
        Priority::Low,
        Some(now + TimeDelta::days(3)),
    );
    log.push(
        t6,
        alice,
        d0 + h(97),
        TaskEvent::PriorityChanged(TaskPriorityChanged {
            from: Priority::Low,
            to: Priority::Urgent,
        }),
    );
    log.push(
        t6,
        alice,
        d0 + h(98),
        TaskEvent::DueDateChanged(TaskDueDateChanged {
            due_at: Some(d0 + h(99)),
        }),
    );
    // Done, then reopened and left open: a completion, but no current cycle.
    let t7 = log.create(alice, d0 + h(10), Priority::Medium, None);
    log.status(t7, d0 + h(30), TaskStatus::Done);
    log.status(t7, d0 + h(31), TaskStatus::Todo);
    // Many more for the percentiles, with pseudo-random but fixed shapes.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..30 {
        let created = d0 + TimeDelta::minutes(rng.gen_range(0..(9 * 24 * 60)));
        let p = Priority::ALL[rng.gen_range(0..4)];
        let id = log.create(alice, created, p, None);
        if rng.gen_bool(0.7) {
            let start = created + TimeDelta::minutes(rng.gen_range(1..600));
            log.status(id, start, TaskStatus::InProgress);
            log.status(
                id,
                start + TimeDelta::minutes(rng.gen_range(1..3000)),
                TaskStatus::Done,
            );
        }
    }
    // Bob's tasks never show in Alice's figures.
    for i in 0..3 {
        let id = log.create(bob, d0 + h(i), Priority::Urgent, None);
        log.status(id, d0 + h(i + 5), TaskStatus::Done);
    }

    let producer = events::kafka::producer(&servers().kafka_brokers).expect("producer");
    let records: Vec<EnvelopeRecord> = log
        .envelopes
        .iter()
        .map(|e| EnvelopeRecord::new(&topics, e))
        .collect();
    for r in join_all(
        records
            .iter()
            .map(|r| producer.send(r.as_future_record(), Duration::from_secs(30))),
    )
    .await
    {
        r.map_err(|(e, _)| e).expect("publish");
    }

    let alice_token = d.token_for(alice, Role::User);
    let admin_token = d.token_for(Uuid::new_v4(), Role::Admin);
    let from = d0.duration_trunc(TimeDelta::days(1)).expect("trunc") - TimeDelta::days(1);
    let to = now;
    let range = format!(
        "from={}&to={}",
        from.format("%Y-%m-%d"),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .replace('+', "%2B")
    );
    let to = DateTime::parse_from_rfc3339(&to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .expect("to")
        .with_timezone(&Utc);
    let (want_summary, want_cycle, want_weeks) = expected(&log, Some(alice), from, to, Utc::now());
    let total_alice = log
        .truth
        .values()
        .filter(|t| t.owner == alice && !t.deleted)
        .count() as u64;

    let check = |base: String| {
        let (alice_token, range, want_summary, want_cycle, want_weeks) = (
            alice_token.clone(),
            range.clone(),
            want_summary.clone(),
            want_cycle.clone(),
            want_weeks.clone(),
        );
        async move {
            // Wait for the projection: every task counted and every event applied.
            eventually(
                "the analytics projection to catch up",
                Duration::from_secs(60),
                || {
                    let (base, token, range, want) = (
                        base.clone(),
                        alice_token.clone(),
                        range.clone(),
                        want_summary.clone(),
                    );
                    async move {
                        let (status, body) = QueryClient::new(&base, &token)
                            .analytics(&format!("summary?{range}"))
                            .await
                            .status_and_body();
                        let total: u64 = body["by_status"]
                            .as_object()?
                            .values()
                            .filter_map(Value::as_u64)
                            .sum();
                        (status == 200
                            && total == total_alice
                            && body["by_status"] == want["by_status"]
                            && body["completed_per_day"] == want["completed_per_day"])
                            .then_some(())
                    }
                },
            )
            .await;
            let (status, summary) = QueryClient::new(&base, &alice_token)
                .analytics(&format!("summary?{range}"))
                .await
                .status_and_body();
            assert_eq!(status, 200);
            assert_same("summary", &summary, &want_summary);
            let (status, cycle) = QueryClient::new(&base, &alice_token)
                .analytics(&format!("cycle-time?{range}"))
                .await
                .status_and_body();
            assert_eq!(status, 200);
            assert_same("cycle-time", &cycle, &want_cycle);
            let (status, weeks) = QueryClient::new(&base, &alice_token)
                .analytics(&format!("throughput?bucket=week&{range}"))
                .await
                .status_and_body();
            assert_eq!(status, 200);
            assert_same("throughput", &weeks["buckets"], &want_weeks);
            let (status, days) = QueryClient::new(&base, &alice_token)
                .analytics(&format!("throughput?bucket=day&{range}"))
                .await
                .status_and_body();
            assert_eq!(status, 200);
            let per_day: Vec<u64> = days["buckets"]
                .as_array()
                .expect("buckets")
                .iter()
                .filter_map(|b| b["completed"].as_u64())
                .collect();
            let want_per_day: Vec<u64> = want_summary["completed_per_day"]
                .as_array()
                .expect("days")
                .iter()
                .filter_map(|b| b["count"].as_u64())
                .collect();
            assert_eq!(
                per_day, want_per_day,
                "daily throughput = completions per day"
            );
        }
    };
    check(query.base.clone()).await;
    // The reopened task counts twice among completions, once in the cycle times.
    assert_eq!(log.truth[&t2].completions.len(), 2);

    // Admin across all users; a user may not.
    let (_, all) = QueryClient::new(&query.base, &admin_token)
        .analytics(&format!("summary?all=true&{range}"))
        .await
        .status_and_body();
    let (want_all, _, _) = expected(&log, None, from, to, Utc::now());
    assert_same("summary for all", &all, &want_all);
    let (status, _) = QueryClient::new(&query.base, &alice_token)
        .analytics("summary?all=true")
        .await
        .status_and_body();
    assert_eq!(status, 403);
    let (status, body) = QueryClient::new(&query.base, &alice_token)
        .analytics("throughput?bucket=month")
        .await
        .status_and_body();
    assert_eq!(status, 400, "{body}");

    // The projection rebuilt from the log gives the same figures.
    let report = rebuild(
        &db,
        &RebuildOptions {
            brokers: servers().kafka_brokers.clone(),
            topics: topics.clone(),
            target: Target::Analytics,
            dry_run: false,
            progress: false,
            batch_size: 1000,
        },
        CancellationToken::new(),
    )
    .await
    .expect("rebuild analytics");
    assert!(report.swapped);
    assert_eq!(report.counts.read as usize, log.envelopes.len());
    check(query.base.clone()).await;
}
