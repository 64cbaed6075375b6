//! Configuration, from `PROJECTOR_*` environment variables.

use std::net::SocketAddr;

use service::config::{env_or, ConfigError};

#[derive(Debug, Clone)]
pub struct Config {
    /// `PROJECTOR_LISTEN_ADDR` (health and metrics), default `127.0.0.1:8084`.
    pub listen_addr: SocketAddr,
    /// `PROJECTOR_KAFKA_BROKERS`, default `127.0.0.1:9092`.
    pub kafka_brokers: String,
    /// `PROJECTOR_KAFKA_TOPIC_PREFIX`, default empty.
    pub topic_prefix: String,
    /// `PROJECTOR_GROUP_ID`, default `taskstream-projector`.
    pub group_id: String,
    /// `PROJECTOR_MONGODB_URL`, default `mongodb://127.0.0.1:27017/?retryWrites=false`.
    pub mongodb_url: String,
    /// `PROJECTOR_MONGODB_DATABASE`, default `taskstream`.
    pub mongodb_database: String,
    /// `PROJECTOR_BATCH_MAX_MESSAGES`: events applied per MongoDB round trip, default 500.
    pub batch_max_messages: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Config {
            listen_addr: env_or(
                "PROJECTOR_LISTEN_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8084)),
            )?,
            kafka_brokers: env_or("PROJECTOR_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            topic_prefix: env_or("PROJECTOR_KAFKA_TOPIC_PREFIX", String::new())?,
            group_id: env_or("PROJECTOR_GROUP_ID", "taskstream-projector".to_owned())?,
            mongodb_url: env_or(
                "PROJECTOR_MONGODB_URL",
                "mongodb://127.0.0.1:27017/?retryWrites=false".to_owned(),
            )?,
            mongodb_database: env_or("PROJECTOR_MONGODB_DATABASE", "taskstream".to_owned())?,
            batch_max_messages: match env_or("PROJECTOR_BATCH_MAX_MESSAGES", 500usize)? {
                0 => {
                    return Err(ConfigError {
                        var: "PROJECTOR_BATCH_MAX_MESSAGES".into(),
                        reason: "must be at least 1".into(),
                    })
                }
                n => n,
            },
        })
    }
}
