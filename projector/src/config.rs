//! Configuration, from `PROJECTOR_*` environment variables.

use std::net::SocketAddr;

use service::config::{
    env_or, var, ConfigError, KafkaSettings, MongoSettings, ServiceConfig, Settings, ToEnv,
};

/// The prefix of every variable the projector reads.
pub const PREFIX: &str = "PROJECTOR";

#[derive(Debug, Clone)]
pub struct Config {
    /// `PROJECTOR_LISTEN_ADDR` (health and metrics), default `127.0.0.1:8084`.
    pub listen_addr: SocketAddr,
    /// `PROJECTOR_KAFKA_BROKERS` (default `127.0.0.1:9092`) and
    /// `PROJECTOR_KAFKA_TOPIC_PREFIX` (default empty).
    pub kafka: KafkaSettings,
    /// `PROJECTOR_GROUP_ID`, default `taskstream-projector`.
    pub group_id: String,
    /// `PROJECTOR_MONGODB_URL` (default
    /// `mongodb://127.0.0.1:27017/?retryWrites=false`) and
    /// `PROJECTOR_MONGODB_DATABASE` (default `taskstream`).
    pub mongo: MongoSettings,
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

// The projector's own variables, after `PROJECTOR_`.
const LISTEN_ADDR: &str = "LISTEN_ADDR";
const GROUP_ID: &str = "GROUP_ID";
const BATCH_MAX_MESSAGES: &str = "BATCH_MAX_MESSAGES";
const MONGODB_WRITE_CONCERN: &str = "MONGODB_WRITE_CONCERN";

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
        let own = |name| var(PREFIX, name);
        Ok(Config {
            listen_addr: env_or(&own(LISTEN_ADDR), SocketAddr::from(([127, 0, 0, 1], 8084)))?,
            kafka: KafkaSettings::from_env(PREFIX)?,
            group_id: env_or(&own(GROUP_ID), "taskstream-projector".to_owned())?,
            mongo: MongoSettings::from_env(PREFIX)?,
            batch_max_messages: match env_or(&own(BATCH_MAX_MESSAGES), 500usize)? {
                0 => {
                    return Err(ConfigError {
                        var: own(BATCH_MAX_MESSAGES),
                        reason: "must be at least 1".into(),
                    })
                }
                n => n,
            },
            mongodb_write_concern: env_or(
                &own(MONGODB_WRITE_CONCERN),
                WriteConcernSetting::default(),
            )?,
        })
    }
}

impl ServiceConfig for Config {
    const PREFIX: &'static str = PREFIX;
    const OWN_VARS: &'static [&'static str] = &[
        LISTEN_ADDR,
        GROUP_ID,
        BATCH_MAX_MESSAGES,
        MONGODB_WRITE_CONCERN,
    ];
    const DEPENDENCY_VARS: &'static [fn(&str) -> Vec<String>] =
        &[KafkaSettings::vars, MongoSettings::vars];

    fn own_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (LISTEN_ADDR, self.listen_addr.to_string()),
            (GROUP_ID, self.group_id.clone()),
            (BATCH_MAX_MESSAGES, self.batch_max_messages.to_string()),
            (
                MONGODB_WRITE_CONCERN,
                self.mongodb_write_concern.to_string(),
            ),
        ]
    }

    fn dependencies(&self) -> Vec<&dyn ToEnv> {
        vec![&self.kafka, &self.mongo]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service::config::{kv, read_from};

    #[test]
    fn a_batch_of_zero_names_its_variable() {
        let (read, _) = read_from(&[kv("PROJECTOR_BATCH_MAX_MESSAGES", 0)], Config::from_env);
        assert_eq!(
            read.expect_err("zero").to_string(),
            "configuration: PROJECTOR_BATCH_MAX_MESSAGES: must be at least 1"
        );
    }

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
