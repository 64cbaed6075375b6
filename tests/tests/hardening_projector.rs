//! Hardening of the projector (issue 11): an event the view store refuses
//! is dead-lettered instead of stopping the read side; the projector
//! recovers promptly from a Kafka outage; lag is exported only for the
//! partitions a projector owns; views are written durably and a view left
//! behind its stream is repaired from the log.
//!
//! Every test runs the real services against the real servers; events the
//! API would refuse are produced straight to Kafka with the envelope and
//! record helpers of `events`, as a faulty or older writer could.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use events::kafka::EnvelopeRecord;
use events::topics::{Topics, HEADER_DLQ_REASON};
use events::{
    Event, EventEnvelope, EventMeta, Priority, Role, TaskCreated, TaskDueDateChanged, TaskEvent,
    TaskStatus, TaskUpdated,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tests::{eventually, http, servers, unique, System};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn meta(actor: Uuid, at: DateTime<Utc>) -> EventMeta {
    EventMeta {
        actor,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: at,
    }
}

fn created(owner: Uuid, title: &str, due_at: Option<DateTime<Utc>>) -> Event {
    TaskEvent::Created(TaskCreated {
        owner_id: owner,
        title: title.into(),
        description: String::new(),
        status: TaskStatus::Todo,
        priority: Priority::Medium,
        due_at,
        tags: vec![],
    })
    .into()
}

/// Produces envelopes to their topic, keyed by stream, as the relay would.
async fn produce(brokers: &str, topics: &Topics, envs: &[EventEnvelope]) {
    let producer: FutureProducer = events::kafka::producer(brokers).expect("producer");
    for env in envs {
        let record = EnvelopeRecord::new(topics, env);
        producer
            .send(record.as_future_record(), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// One dead-lettered message: key, payload, `dlq-reason`.
struct DeadLetter {
    key: String,
    payload: Vec<u8>,
    reason: String,
}

/// Reads `n` messages from the dead-letter topic (fails after [`WAIT`]).
async fn dead_letters(brokers: &str, topics: &Topics, n: usize) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("dlq-reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&topics.task_events_dlq()])
        .expect("subscribe");
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("dead letters within the wait")
            .expect("kafka");
        let reason = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_DLQ_REASON))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        out.push(DeadLetter {
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            reason,
        });
    }
    out
}

async fn metrics_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of an unlabelled series on a Prometheus page.
fn metric(page: &str, name: &str) -> Option<f64> {
    tests::process::metric(page, name)
}

/// Events whose view the MongoDB-wire server refuses (dates outside years
/// 1-9999: the server cannot hold them) are produced straight to Kafka,
/// ahead of other users' writes made through the API. The other writes
/// appear, the refused events are on the dead-letter topic with the
/// store's reason, a stream whose later event was refused keeps applying
/// the events after it, and a metric counts the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_view_store_refuses_is_dead_lettered_and_other_writes_still_appear() {
    let sys = System::start().await;
    let brokers = servers().kafka_brokers.clone();
    let topics = Topics::with_prefix(sys.deployment.topic_prefix.clone());
    let client = http();

    // Mallory's events, as a writer that skipped the edge's checks could
    // publish them: a task created due in year 0 (`0001-01-01T00:00:00+01:00`
    // is such an instant), and a task whose second event moves its due
    // date to year 0, followed by a rename that must still apply.
    let mallory = Uuid::new_v4();
    let t0 = Utc::now();
    let year_0 = Utc.with_ymd_and_hms(0, 12, 31, 23, 0, 0).unwrap();
    let refused_create = EventEnvelope::new(
        Uuid::new_v4(),
        1,
        &created(mallory, "due in year 0", Some(year_0)),
        meta(mallory, t0),
    );
    let task = Uuid::new_v4();
    let fine = EventEnvelope::new(task, 1, &created(mallory, "fine", None), meta(mallory, t0));
    let refused_change = EventEnvelope::new(
        task,
        2,
        &TaskEvent::DueDateChanged(TaskDueDateChanged {
            due_at: Some(year_0),
        })
        .into(),
        meta(mallory, t0),
    );
    let renamed = EventEnvelope::new(
        task,
        3,
        &TaskEvent::Updated(TaskUpdated {
            title: Some("renamed after the refused change".into()),
            description: None,
            tags: None,
        })
        .into(),
        meta(mallory, t0),
    );
    produce(
        &brokers,
        &topics,
        &[
            refused_create.clone(),
            fine,
            refused_change.clone(),
            renamed,
        ],
    )
    .await;

    // Other users write through the API meanwhile and afterwards.
    let mut written = Vec::new();
    for i in 0..6 {
        let user = Uuid::new_v4();
        let token = sys.deployment.token_for(user, Role::User);
        let res = client
            .post(sys.command.url("/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "title": format!("other user's task {i}") }))
            .send()
            .await
            .expect("command-api answers");
        assert_eq!(res.status(), 201, "create {i}");
        let body: Value = res.json().await.expect("json");
        written.push((token, body["id"].as_str().expect("id").to_owned()));
    }
    for (token, id) in &written {
        let url = sys.query.url(&format!("/tasks/{id}"));
        eventually(
            "another user's task to appear in its view",
            Duration::from_secs(30),
            || async {
                let res = client.get(&url).bearer_auth(token).send().await.ok()?;
                (res.status() == 200).then_some(())
            },
        )
        .await;
    }

    // The stream whose second event was refused went on with its third.
    let mallory_token = sys.deployment.token_for(mallory, Role::User);
    let url = sys.query.url(&format!("/tasks/{task}"));
    let view: Value = eventually("the rename after the refused event", WAIT, || async {
        let res = client
            .get(&url)
            .bearer_auth(&mallory_token)
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        (body["version"] == 3).then_some(body)
    })
    .await;
    assert_eq!(view["title"], "renamed after the refused change");
    assert_eq!(
        view["due_at"],
        Value::Null,
        "the refused change is not applied"
    );
    // The refused creation made no view.
    let res = client
        .get(
            sys.query
                .url(&format!("/tasks/{}", refused_create.stream_id)),
        )
        .bearer_auth(&mallory_token)
        .send()
        .await
        .expect("query-api answers");
    assert_eq!(res.status(), 404);

    // Both refused events are on the dead-letter topic with the store's reason.
    let dead = dead_letters(&brokers, &topics, 2).await;
    for refused in [&refused_create, &refused_change] {
        let letter = dead
            .iter()
            .find(|d| d.payload == refused.to_json())
            .unwrap_or_else(|| {
                panic!(
                    "v{} of {} not dead-lettered",
                    refused.version, refused.stream_id
                )
            });
        assert_eq!(letter.key, refused.stream_id.to_string());
        assert!(
            letter.reason.contains("refused"),
            "reason names the refusal: {}",
            letter.reason
        );
    }
    let page = metrics_text(&client, &sys.projector.url("/metrics")).await;
    let refused = metric(&page, "projector_refused_writes_total").unwrap_or(0.0);
    assert!(refused >= 2.0, "projector_refused_writes_total = {refused}");
}
