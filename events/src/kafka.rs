//! Kafka conventions shared by the writers (relay) and readers (projector,
//! notifier).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::envelope::{DecodeError, EventEnvelope};
use crate::topics::{Topics, EVENT_TOPIC_PARTITIONS, HEADER_SCHEMA, HEADER_TYPE};

/// Producer settings for event publication: idempotent, `acks=all`, so a
/// retry inside the client never duplicates or reorders a partition.
/// Reconnects back off from 100 ms to at most 1 s (librdkafka's ceiling is
/// 10 s), so publication resumes within a second or so of a broker's return.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000");
    c
}

pub fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    producer_config(brokers).create()
}

/// The Kafka record of an envelope: key = stream id, headers = type, schema.
pub struct EnvelopeRecord {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

impl EnvelopeRecord {
    pub fn new(topics: &Topics, env: &EventEnvelope) -> Self {
        let schema = env.schema.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TYPE,
                value: Some(env.event_type.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SCHEMA,
                value: Some(schema.as_bytes()),
            });
        EnvelopeRecord {
            topic: topics.for_stream(env.stream_type),
            key: env.stream_id.to_string(),
            payload: env.to_json(),
            headers,
        }
    }

    pub fn as_future_record(&self) -> FutureRecord<'_, String, Vec<u8>> {
        FutureRecord::to(&self.topic)
            .key(&self.key)
            .payload(&self.payload)
            .headers(self.headers.clone())
    }
}

/// Reads a header as UTF-8 text.
pub fn header_str<'a, M: Message>(msg: &'a M, name: &str) -> Option<&'a str> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Decodes a Kafka message's value as an envelope.
pub fn envelope_of<M: Message>(msg: &M) -> Result<EventEnvelope, DecodeError> {
    let payload = msg.payload().unwrap_or_default();
    EventEnvelope::from_json(payload)
}

/// Creates the event topics (unlimited retention: they are the replay log)
/// and the dead-letter topic, if they do not exist yet.
pub async fn ensure_topics(
    brokers: &str,
    topics: &Topics,
) -> Result<(), rdkafka::error::KafkaError> {
    let names = topics.all();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    ensure_named_topics(brokers, &names).await
}

/// Creates the given topics with [`EVENT_TOPIC_PARTITIONS`] and infinite retention.
pub async fn ensure_named_topics(
    brokers: &str,
    names: &[&str],
) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(name, EVENT_TOPIC_PARTITIONS, TopicReplication::Fixed(1))
                .set("retention.ms", "-1")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "could not create topic");
                })
            }
        }
    }
    Ok(())
}

/// Why a [`ping`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The blocking metadata request did not finish (a panic or shutdown).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// A real round trip to the cluster (metadata request), for readiness checks.
pub async fn ping(brokers: &str) -> Result<(), PingError> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()?;
        consumer.fetch_metadata(None, Duration::from_secs(2))?;
        Ok::<_, PingError>(())
    })
    .await?
}

/// Commits, per partition, the offset after `batch`'s last message. A
/// synchronous commit blocks on the broker's answer, so it runs off the
/// async workers. A failure is logged, not returned: after a rebalance the
/// partitions may belong to another member, which replays from the last
/// commit, and every reader absorbs a replay (version guards, deterministic
/// ids).
pub async fn commit_after<C, X>(
    consumer: &std::sync::Arc<C>,
    batch: &[rdkafka::message::OwnedMessage],
) where
    C: rdkafka::consumer::Consumer<X> + Send + Sync + 'static,
    X: rdkafka::consumer::ConsumerContext + 'static,
{
    use rdkafka::consumer::CommitMode;
    use rdkafka::{Offset, TopicPartitionList};
    let mut next: std::collections::HashMap<(String, i32), i64> = std::collections::HashMap::new();
    for msg in batch {
        let e = next
            .entry((msg.topic().to_owned(), msg.partition()))
            .or_insert(0);
        *e = (*e).max(msg.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &next {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(error = %e, "cannot build the offset commit");
            return;
        }
    }
    let consumer = std::sync::Arc::clone(consumer);
    let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "offset commit failed"),
        Err(e) => tracing::warn!(error = %e, "offset commit task failed"),
    }
}
