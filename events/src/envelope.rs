//! The envelope every event travels in, in Postgres and on Kafka.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::schema::{current_schema, Event};
use crate::upcast;

/// The kind of stream an event belongs to; decides its Kafka topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamType {
    Task,
    Project,
    User,
}

impl StreamType {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Task => "task",
            StreamType::Project => "project",
            StreamType::User => "user",
        }
    }
}

impl std::str::FromStr for StreamType {
    type Err = crate::schema::UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "task" => Ok(StreamType::Task),
            "project" => Ok(StreamType::Project),
            "user" => Ok(StreamType::User),
            other => Err(crate::schema::UnknownValue(other.to_owned())),
        }
    }
}

/// A stream's version: 1 for its first event, +1 for each next one.
/// Version 0 means "the stream has no events yet".
pub type StreamVersion = u64;

/// Who and what caused a batch of events (copied into each envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    pub actor: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

/// One event as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    /// UUID v7: time-ordered, unique across the system.
    pub event_id: Uuid,
    pub stream_id: Uuid,
    pub stream_type: StreamType,
    /// 1-based, per stream.
    pub version: StreamVersion,
    /// E.g. `task.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` for this `type`.
    pub schema: u32,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: DateTime<Utc>,
    /// The user whose request produced the event.
    pub actor: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an event envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event type `{event_type}` has schema {schema}, newer than this code knows ({known})")]
    FutureSchema {
        event_type: String,
        schema: u32,
        known: u32,
    },
    #[error("no upcaster for `{event_type}` schema {schema}")]
    NoUpcaster { event_type: String, schema: u32 },
    #[error("payload of `{event_type}` does not match its schema: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl EventEnvelope {
    /// Wraps a domain event for a stream at a version.
    pub fn new(stream_id: Uuid, version: StreamVersion, event: &Event, meta: EventMeta) -> Self {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            stream_id,
            stream_type: event.stream_type(),
            version,
            event_type: event.event_type().to_owned(),
            schema: event.schema(),
            // Envelopes carry microsecond precision, the precision Postgres stores.
            occurred_at: truncate_to_micros(meta.occurred_at),
            actor: meta.actor,
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
            data: event.data(),
        }
    }

    /// Parses an envelope from JSON bytes (a Kafka message value).
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map_err(DecodeError::Envelope)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // An envelope is plain data with string keys; serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The typed event, upcasting an older schema to the current one.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        let known = current_schema(&self.event_type)
            .ok_or_else(|| DecodeError::UnknownType(self.event_type.clone()))?;
        if self.schema > known {
            return Err(DecodeError::FutureSchema {
                event_type: self.event_type.clone(),
                schema: self.schema,
                known,
            });
        }
        let data = upcast::to_current(&self.event_type, self.schema, self.data.clone())?;
        Event::from_parts(&self.event_type, data).map_err(|source| DecodeError::Payload {
            event_type: self.event_type.clone(),
            source,
        })
    }

    /// The token a client presents to read its own write.
    pub fn consistency_token(&self) -> ConsistencyToken {
        ConsistencyToken {
            stream_id: self.stream_id,
            version: self.version,
        }
    }
}

fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// RFC 3339 in UTC with a `Z` and microseconds, the wire form of timestamps.
pub mod rfc3339_utc {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// "Read your own write": the stream and the version a write produced.
/// Encoded as `<stream uuid>.<version>`; opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub stream_id: Uuid,
    pub version: StreamVersion,
}

impl std::fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stream_id.simple(), self.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consistency token")]
pub struct MalformedToken;

impl std::str::FromStr for ConsistencyToken {
    type Err = MalformedToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, version) = s.split_once('.').ok_or(MalformedToken)?;
        let stream_id = Uuid::try_parse(id).map_err(|_| MalformedToken)?;
        let version: StreamVersion = version.parse().map_err(|_| MalformedToken)?;
        if version == 0 {
            return Err(MalformedToken);
        }
        Ok(ConsistencyToken { stream_id, version })
    }
}
