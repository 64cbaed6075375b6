//! Configuration, from `NOTIFIER_*` environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use access::JwtSettings;
use service::config::{
    env_or, var, ConfigError, KafkaSettings, PostgresSettings, ServiceConfig, Settings, ToEnv,
};
use service::http::Limits;

/// The prefix of every variable the notifier reads.
pub const PREFIX: &str = "NOTIFIER";

/// The longest reminder lead time a user may set: 30 days.
pub const MAX_LEAD_SECONDS: u32 = 30 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct Config {
    /// `NOTIFIER_LISTEN_ADDR` (the inbox API, health, metrics), default
    /// `127.0.0.1:8085`.
    pub listen_addr: SocketAddr,
    /// `NOTIFIER_DATABASE_URL`: Postgres, where the schedule and the inbox live.
    pub postgres: PostgresSettings,
    /// `NOTIFIER_KAFKA_BROKERS` (default `127.0.0.1:9092`) and
    /// `NOTIFIER_KAFKA_TOPIC_PREFIX` (default empty).
    pub kafka: KafkaSettings,
    /// `NOTIFIER_GROUP_ID`, default `taskstream-notifier`.
    pub group_id: String,
    /// `NOTIFIER_JWKS_URL`, `NOTIFIER_JWT_ISSUER`, `NOTIFIER_JWT_AUDIENCE`.
    pub jwt: JwtSettings,
    /// `NOTIFIER_TICK_MS`: how often the scheduler looks for due rows,
    /// default 250.
    pub tick: Duration,
    /// `NOTIFIER_LATE_AFTER_SECONDS`: a notification fired more than this
    /// after its time is marked `late`, default 60.
    pub late_after: Duration,
    /// `NOTIFIER_CATCH_UP_SECONDS`: how far in the past a reminder or
    /// overdue notice may lie when it is scheduled (after downtime, or for
    /// an event read late) and still be sent, late; default 86400 (24 h).
    pub catch_up: Duration,
    /// `NOTIFIER_MIN_LEAD_SECONDS`: the shortest reminder lead time a user
    /// may set, default 60.
    pub min_lead_seconds: u32,
    /// `NOTIFIER_HTTP_*`: connection and body timeouts, connection cap;
    /// `NOTIFIER_TRUSTED_PROXIES`.
    pub http: Limits,
}

// The notifier's own variables, after `NOTIFIER_`.
const LISTEN_ADDR: &str = "LISTEN_ADDR";
const GROUP_ID: &str = "GROUP_ID";
const TICK_MS: &str = "TICK_MS";
const LATE_AFTER_SECONDS: &str = "LATE_AFTER_SECONDS";
const CATCH_UP_SECONDS: &str = "CATCH_UP_SECONDS";
const MIN_LEAD_SECONDS: &str = "MIN_LEAD_SECONDS";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let own = |name: &str| var(PREFIX, name);
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(ConfigError {
                    var: own(name),
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let min_lead: u32 = env_or(&own(MIN_LEAD_SECONDS), 60u32)?;
        if min_lead == 0 || min_lead > MAX_LEAD_SECONDS {
            return Err(ConfigError {
                var: own(MIN_LEAD_SECONDS),
                reason: format!("must be from 1 to {MAX_LEAD_SECONDS}"),
            });
        }
        // Bounded, so that "now minus the window" is always a valid instant.
        let catch_up: u64 = env_or(&own(CATCH_UP_SECONDS), 86_400u64)?;
        if catch_up > u64::from(MAX_LEAD_SECONDS) {
            return Err(ConfigError {
                var: own(CATCH_UP_SECONDS),
                reason: format!("must be at most {MAX_LEAD_SECONDS} (30 days)"),
            });
        }
        Ok(Config {
            listen_addr: env_or(&own(LISTEN_ADDR), SocketAddr::from(([127, 0, 0, 1], 8085)))?,
            postgres: PostgresSettings::from_env(PREFIX)?,
            kafka: KafkaSettings::from_env(PREFIX)?,
            group_id: env_or(&own(GROUP_ID), "taskstream-notifier".to_owned())?,
            jwt: JwtSettings::from_env(PREFIX)?,
            tick: Duration::from_millis(positive(TICK_MS, env_or(&own(TICK_MS), 250u64)?)?),
            late_after: Duration::from_secs(env_or(&own(LATE_AFTER_SECONDS), 60u64)?),
            catch_up: Duration::from_secs(catch_up),
            min_lead_seconds: min_lead,
            http: Limits::from_env(PREFIX)?,
        })
    }
}

impl ServiceConfig for Config {
    const PREFIX: &'static str = PREFIX;
    const OWN_VARS: &'static [&'static str] = &[
        LISTEN_ADDR,
        GROUP_ID,
        TICK_MS,
        LATE_AFTER_SECONDS,
        CATCH_UP_SECONDS,
        MIN_LEAD_SECONDS,
    ];
    const DEPENDENCY_VARS: &'static [fn(&str) -> Vec<String>] = &[
        PostgresSettings::vars,
        KafkaSettings::vars,
        JwtSettings::vars,
        Limits::vars,
    ];

    fn own_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (LISTEN_ADDR, self.listen_addr.to_string()),
            (GROUP_ID, self.group_id.clone()),
            (TICK_MS, self.tick.as_millis().to_string()),
            (LATE_AFTER_SECONDS, self.late_after.as_secs().to_string()),
            (CATCH_UP_SECONDS, self.catch_up.as_secs().to_string()),
            (MIN_LEAD_SECONDS, self.min_lead_seconds.to_string()),
        ]
    }

    fn dependencies(&self) -> Vec<&dyn ToEnv> {
        vec![&self.postgres, &self.kafka, &self.jwt, &self.http]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service::config::{kv, read_from};

    #[test]
    fn defaults_and_errors_name_their_variables() {
        let (read, _) = read_from(&[], Config::from_env);
        let config = read.expect("defaults");
        assert_eq!(config.listen_addr.port(), 8085);
        assert_eq!(config.group_id, "taskstream-notifier");
        assert_eq!(config.tick, Duration::from_millis(250));
        assert_eq!(config.late_after, Duration::from_secs(60));
        assert_eq!(config.catch_up, Duration::from_secs(86_400));
        assert_eq!(config.min_lead_seconds, 60);

        let (read, _) = read_from(&[kv("NOTIFIER_TICK_MS", 0)], Config::from_env);
        assert_eq!(
            read.expect_err("zero").to_string(),
            "configuration: NOTIFIER_TICK_MS: must be at least 1"
        );
        let (read, _) = read_from(&[kv("NOTIFIER_MIN_LEAD_SECONDS", 0)], Config::from_env);
        assert!(read
            .expect_err("zero")
            .to_string()
            .contains("NOTIFIER_MIN_LEAD_SECONDS"));
    }

    #[test]
    fn the_variables_written_read_back_the_same_config() {
        let vars = [
            kv("NOTIFIER_TICK_MS", 100),
            kv("NOTIFIER_LATE_AFTER_SECONDS", 2),
            kv("NOTIFIER_MIN_LEAD_SECONDS", 1),
            kv("NOTIFIER_GROUP_ID", "g"),
        ];
        let (read, _) = read_from(&vars, Config::from_env);
        let written = read.expect("config").to_env();
        let (again, asked) = read_from(&written, || Config::from_env().map(|c| c.to_env()));
        assert_eq!(again.expect("read back"), written);
        let listed: std::collections::BTreeSet<String> = Config::vars().into_iter().collect();
        assert_eq!(asked, listed);
    }
}
