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
    /// `PROJECTOR_MONGODB_WRITE_CONCERN`: `journaled` (default: `w: 1,
    /// j: true`), `majority` (`w: "majority", j: true`) or `acknowledged`
    /// (`w: 1`, the server's journaling policy decides). The projector
    /// commits a Kafka offset once the view write is acknowledged, so an
    /// acknowledged write the server loses in a crash is lost for good
    /// unless a later event of its stream reveals the gap: durable by default.
    pub mongodb_write_concern: WriteConcernSetting,
}

/// How durable a view write is before the projector moves on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteConcernSetting {
    /// `w: 1, j: true`: on the primary's journal.
    #[default]
    Journaled,
    /// `w: "majority", j: true`: on a majority's journals.
    Majority,
    /// `w: 1`: acknowledged by the primary, journaled when it decides.
    Acknowledged,
}

impl WriteConcernSetting {
    /// The driver's write concern.
    pub fn write_concern(self) -> mongodb::options::WriteConcern {
        use mongodb::options::{Acknowledgment, WriteConcern};
        match self {
            WriteConcernSetting::Journaled => WriteConcern::builder()
                .w(Acknowledgment::Nodes(1))
                .journal(true)
                .build(),
            WriteConcernSetting::Majority => WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build(),
            WriteConcernSetting::Acknowledged => {
                WriteConcern::builder().w(Acknowledgment::Nodes(1)).build()
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WriteConcernSetting::Journaled => "journaled",
            WriteConcernSetting::Majority => "majority",
            WriteConcernSetting::Acknowledged => "acknowledged",
        }
    }
}

impl std::fmt::Display for WriteConcernSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WriteConcernSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "journaled" => Ok(WriteConcernSetting::Journaled),
            "majority" => Ok(WriteConcernSetting::Majority),
            "acknowledged" => Ok(WriteConcernSetting::Acknowledged),
            other => Err(format!(
                "`{other}` is not one of journaled, majority, acknowledged"
            )),
        }
    }
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
            mongodb_write_concern: env_or(
                "PROJECTOR_MONGODB_WRITE_CONCERN",
                WriteConcernSetting::default(),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::WriteConcernSetting;

    #[test]
    fn write_concerns_parse_and_default_to_journaled() {
        assert_eq!(
            WriteConcernSetting::default(),
            WriteConcernSetting::Journaled
        );
        let journaled = WriteConcernSetting::Journaled.write_concern();
        assert_eq!(journaled.journal, Some(true));
        assert_eq!("majority".parse(), Ok(WriteConcernSetting::Majority));
        assert_eq!(
            "acknowledged".parse(),
            Ok(WriteConcernSetting::Acknowledged)
        );
        assert!("w2".parse::<WriteConcernSetting>().is_err());
        assert_eq!(
            WriteConcernSetting::Majority.write_concern().w,
            Some(mongodb::options::Acknowledgment::Majority)
        );
    }
}
