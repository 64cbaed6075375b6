//! What the benchmark binaries share: seeded task events, producing them
//! through the `events` crate, raw-driver upsert models, percentiles.

use std::time::Duration;

use chrono::Utc;
use events::kafka::EnvelopeRecord;
use events::topics::Topics;
use events::{
    Event, EventEnvelope, EventMeta, Priority, TaskCreated, TaskEvent, TaskStatus,
    TaskStatusChanged,
};
use futures::future::join_all;
use mongodb::bson::Document;
use mongodb::options::{ReplaceOneModel, WriteModel};
use mongodb::Namespace;
use uuid::Uuid;

/// How seeded events are laid out in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Each task's events one after the other (a replayed history).
    TaskByTask,
    /// Version 1 of every task, then version 2 of every task, … (live
    /// traffic over many tasks at once: a batch touches as many tasks as it
    /// has events).
    Interleaved,
}

/// `events` task events: tasks of `per_task` events each (a creation, then
/// status changes around todo → in_progress → done), owned round-robin by
/// `owners`, with priorities cycling through every value.
pub fn task_events(
    events: usize,
    per_task: usize,
    owners: &[Uuid],
    order: Order,
) -> Vec<EventEnvelope> {
    let per_task = per_task.max(1);
    let tasks = events.div_ceil(per_task);
    let ids: Vec<Uuid> = (0..tasks).map(|_| Uuid::new_v4()).collect();
    let meta = |actor| EventMeta {
        actor,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: Utc::now(),
    };
    let cycle = [TaskStatus::Todo, TaskStatus::InProgress, TaskStatus::Done];
    let event = |i: usize, v: usize| {
        let owner = owners[i % owners.len()];
        let e = if v == 1 {
            Event::Task(TaskEvent::Created(TaskCreated {
                owner_id: owner,
                project_id: None,
                assignee_ids: vec![],
                title: format!("bench task {i}"),
                description: "seeded for a benchmark".into(),
                status: TaskStatus::Todo,
                priority: Priority::ALL[i % 4],
                due_at: None,
                tags: vec!["bench".into()],
            }))
        } else {
            Event::Task(TaskEvent::StatusChanged(TaskStatusChanged {
                from: cycle[(v - 2) % 3],
                to: cycle[(v - 1) % 3],
            }))
        };
        EventEnvelope::new(ids[i], v as u64, &e, meta(owner))
    };
    let mut out = Vec::with_capacity(events);
    match order {
        Order::TaskByTask => {
            for i in 0..tasks {
                out.extend((1..=per_task).map(|v| event(i, v)));
            }
        }
        Order::Interleaved => {
            for v in 1..=per_task {
                out.extend((0..tasks).map(|i| event(i, v)));
            }
        }
    }
    // Either order ends with the last versions, so trimming leaves no gap.
    out.truncate(events);
    out
}

/// Produces `envelopes` to their topics (task or user events) and waits for
/// every acknowledgement.
pub async fn produce(
    brokers: &str,
    topics: &Topics,
    envelopes: &[EventEnvelope],
) -> anyhow::Result<()> {
    let producer = events::kafka::producer(brokers)?;
    for chunk in envelopes.chunks(20_000) {
        let records: Vec<EnvelopeRecord> = chunk
            .iter()
            .map(|e| EnvelopeRecord::new(topics, e))
            .collect();
        for r in join_all(
            records
                .iter()
                .map(|r| producer.send(r.as_future_record(), Duration::from_secs(60))),
        )
        .await
        {
            r.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// A replace-one upsert of `replacement` where `filter` matches.
pub fn replace_upsert<T: serde::Serialize>(
    namespace: &Namespace,
    filter: Document,
    replacement: &T,
) -> anyhow::Result<WriteModel> {
    Ok(ReplaceOneModel::builder()
        .namespace(namespace.clone())
        .filter(filter)
        .replacement(mongodb::bson::to_document(replacement)?)
        .upsert(true)
        .build()
        .into())
}

/// `GET {base}/tasks?{query}` as `token`; the ids of the page's items, in order.
pub async fn listed_task_ids(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    token: &str,
) -> anyhow::Result<Vec<String>> {
    let r = client
        .get(format!("{base}/tasks?{query}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let page: serde_json::Value = r.json().await?;
    Ok(page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The value at percentile `p` (0–100) of ascending `sorted` (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
