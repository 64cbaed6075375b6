//! `projector replay`: a bounded NDJSON dump of the log, from the beginning
//! or from a time (offsets-for-times), with a type filter, that joins no
//! consumer group.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use events::kafka::{producer, EnvelopeRecord};
use events::topics::Topics;
use events::{Event, EventEnvelope, EventMeta, TaskEvent, TaskStatus, TaskStatusChanged};
use projector::replay::{replay, ReplayFrom, ReplayOptions};
use tests::{servers, unique};
use uuid::Uuid;

fn created(owner: Uuid, title: &str) -> Event {
    Event::Task(TaskEvent::Created(events::TaskCreated {
        owner_id: owner,
        project_id: None,
        assignee_ids: vec![],
        title: title.into(),
        description: String::new(),
        status: TaskStatus::Todo,
        priority: Default::default(),
        due_at: None,
        tags: vec![],
    }))
}

fn started() -> Event {
    Event::Task(TaskEvent::StatusChanged(TaskStatusChanged {
        from: TaskStatus::Todo,
        to: TaskStatus::InProgress,
    }))
}

async fn publish(topics: &Topics, envelopes: &[EventEnvelope]) {
    let p = producer(&servers().kafka_brokers).expect("producer");
    for env in envelopes {
        let record = EnvelopeRecord::new(topics, env);
        p.send(record.as_future_record(), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
    }
}

/// `streams` tasks, each with a created and a status_changed event.
fn stream_events(streams: usize) -> Vec<EventEnvelope> {
    let owner = Uuid::new_v4();
    let meta = EventMeta {
        actor: owner,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: Utc::now(),
    };
    let mut out = Vec::new();
    for i in 0..streams {
        let id = Uuid::new_v4();
        out.push(EventEnvelope::new(
            id,
            1,
            &created(owner, &format!("task {i}")),
            meta,
        ));
        out.push(EventEnvelope::new(id, 2, &started(), meta));
    }
    out
}

fn options(topics: &Topics, from: ReplayFrom, types: Option<&[&str]>) -> ReplayOptions {
    ReplayOptions {
        brokers: servers().kafka_brokers.clone(),
        topics: vec![topics.task_events()],
        from,
        types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
        progress: false,
    }
}

fn parse(ndjson: &[u8]) -> Vec<EventEnvelope> {
    String::from_utf8_lossy(ndjson)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an envelope: {l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_everything_in_per_stream_order_and_filters_by_type() {
    let topics = Topics::with_prefix(unique("t") + "-");
    events::kafka::ensure_topics(&servers().kafka_brokers, &topics)
        .await
        .expect("topics");
    let sent = stream_events(40);
    publish(&topics, &sent).await;

    let opts = options(&topics, ReplayFrom::Beginning, None);
    let (summary, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let s = replay(&opts, &mut out).expect("replay");
        (s, out)
    })
    .await
    .expect("join");
    let got = parse(&out);
    assert_eq!(summary.read, 80);
    assert_eq!(summary.written, 80);
    assert_eq!(got.len(), 80, "every event once");
    let mut last: HashMap<Uuid, u64> = HashMap::new();
    for env in &got {
        let prev = last.insert(env.stream_id, env.version).unwrap_or(0);
        assert_eq!(
            env.version,
            prev + 1,
            "stream {} out of order",
            env.stream_id
        );
    }
    let mut sent_ids: Vec<Uuid> = sent.iter().map(|e| e.event_id).collect();
    let mut got_ids: Vec<Uuid> = got.iter().map(|e| e.event_id).collect();
    sent_ids.sort();
    got_ids.sort();
    assert_eq!(sent_ids, got_ids);

    let opts = options(
        &topics,
        ReplayFrom::Beginning,
        Some(&["task.status_changed"]),
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        replay(&opts, &mut out).expect("replay");
        out
    })
    .await
    .expect("join");
    let filtered = parse(&out);
    assert_eq!(filtered.len(), 40);
    assert!(filtered
        .iter()
        .all(|e| e.event_type == "task.status_changed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_from_a_time_starts_at_that_time() {
    let topics = Topics::with_prefix(unique("t") + "-");
    events::kafka::ensure_topics(&servers().kafka_brokers, &topics)
        .await
        .expect("topics");
    let before = stream_events(10);
    publish(&topics, &before).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = stream_events(5);
    publish(&topics, &after).await;

    let opts = options(&topics, ReplayFrom::Time(cut), None);
    let out = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        replay(&opts, &mut out).expect("replay");
        out
    })
    .await
    .expect("join");
    let got = parse(&out);
    let mut got_ids: Vec<Uuid> = got.iter().map(|e| e.event_id).collect();
    let mut want: Vec<Uuid> = after.iter().map(|e| e.event_id).collect();
    got_ids.sort();
    want.sort();
    assert_eq!(got_ids, want, "only the events published after the cut");

    // A time after the last event replays nothing, and finishes.
    let opts = options(
        &topics,
        ReplayFrom::Time(Utc::now() + chrono::Duration::hours(1)),
        None,
    );
    let summary =
        tokio::task::spawn_blocking(move || replay(&opts, &mut Vec::new()).expect("replay"))
            .await
            .expect("join");
    assert_eq!(summary.read, 0);
}

#[test]
fn replay_rejects_a_malformed_start() {
    assert!("yesterday".parse::<ReplayFrom>().is_err());
    assert_eq!("beginning".parse::<ReplayFrom>(), Ok(ReplayFrom::Beginning));
    assert!(matches!(
        "2026-11-25T10:00:00Z".parse::<ReplayFrom>(),
        Ok(ReplayFrom::Time(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_subcommand_writes_pure_ndjson_to_stdout_and_a_summary_to_stderr() {
    let prefix = unique("t") + "-";
    let topics = Topics::with_prefix(prefix.clone());
    events::kafka::ensure_topics(&servers().kafka_brokers, &topics)
        .await
        .expect("topics");
    let sent = stream_events(3);
    publish(&topics, &sent).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(tests::binary("projector"))
            .args([
                "replay",
                "--from",
                "beginning",
                "--type",
                "task.created",
                "--streams",
                "tasks",
            ])
            .env("PROJECTOR_KAFKA_BROKERS", &servers().kafka_brokers)
            .env("PROJECTOR_KAFKA_TOPIC_PREFIX", &prefix)
            .output()
            .expect("run projector replay")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = parse(&out.stdout);
    assert_eq!(got.len(), 3, "three task.created events");
    assert!(got.iter().all(|e| e.event_type == "task.created"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6 events read, 3 written"),
        "summary on stderr: {stderr}"
    );

    let help = std::process::Command::new(tests::binary("projector"))
        .arg("--help")
        .output()
        .expect("projector --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for sub in ["run", "replay"] {
        assert!(
            help.contains(sub),
            "`projector --help` does not document {sub}:\n{help}"
        );
    }
}
