//! Kafka topic names and message conventions.

/// All task events, keyed by task id.
pub const TASK_EVENTS: &str = "task-events";
/// All project events, keyed by project id.
pub const PROJECT_EVENTS: &str = "project-events";
/// All user events, keyed by user id.
pub const USER_EVENTS: &str = "user-events";
/// Task events the projector could not decode or apply, with the reason.
pub const TASK_EVENTS_DLQ: &str = "task-events.dlq";

/// Kafka header repeating the envelope's `type`.
pub const HEADER_TYPE: &str = "type";
/// Kafka header repeating the envelope's `schema`.
pub const HEADER_SCHEMA: &str = "schema";
/// Kafka header on dead-lettered messages: why it was rejected.
pub const HEADER_DLQ_REASON: &str = "dlq-reason";

/// Partitions the services create the event topics with.
pub const EVENT_TOPIC_PARTITIONS: i32 = 3;

/// The topic names one deployment uses. A prefix lets several deployments
/// (or test runs) share a cluster without seeing each other's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
}

impl Topics {
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    pub fn task_events(&self) -> String {
        format!("{}{TASK_EVENTS}", self.prefix)
    }

    pub fn project_events(&self) -> String {
        format!("{}{PROJECT_EVENTS}", self.prefix)
    }

    pub fn user_events(&self) -> String {
        format!("{}{USER_EVENTS}", self.prefix)
    }

    pub fn task_events_dlq(&self) -> String {
        format!("{}{TASK_EVENTS_DLQ}", self.prefix)
    }

    pub fn for_stream(&self, stream_type: crate::envelope::StreamType) -> String {
        match stream_type {
            crate::envelope::StreamType::Task => self.task_events(),
            crate::envelope::StreamType::Project => self.project_events(),
            crate::envelope::StreamType::User => self.user_events(),
        }
    }

    /// Every topic taskstream creates.
    pub fn all(&self) -> [String; 4] {
        [
            self.task_events(),
            self.project_events(),
            self.user_events(),
            self.task_events_dlq(),
        ]
    }
}
