//! The settings of each dependency, read from `{PREFIX}_*` variables with
//! the service's prefix, and written back as the same variables.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{env_or, kv, prefixed, var, ConfigError};
use crate::http::Limits;

/// Settings read from `{PREFIX}_*` environment variables: every service
/// names a dependency's variables alike, and the test harness writes a
/// service's environment from the same values.
pub trait Settings: Sized {
    /// The variables these settings are read from, for `prefix`.
    fn vars(prefix: &str) -> Vec<String>;

    /// Reads the variables; an unset one takes its default, a malformed one
    /// is an error naming it.
    fn from_env(prefix: &str) -> Result<Self, ConfigError>;

    /// The variables that configure these settings as they are, secrets in
    /// the clear: for a child process's environment, never for a log.
    fn to_env(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The half of [`Settings`] a value answers (a service writes its
/// dependencies' settings back as variables through it).
pub trait ToEnv {
    fn to_env(&self, prefix: &str) -> Vec<(String, String)>;
}

impl<T: Settings> ToEnv for T {
    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        Settings::to_env(self, prefix)
    }
}

/// The event store (Postgres).
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `{PREFIX}_DATABASE_URL`, default [`PostgresSettings::DEFAULT_URL`].
    /// It holds the password, so it never prints.
    pub url: SecretString,
}

impl PostgresSettings {
    /// The database `scripts/infra` runs for local development.
    pub const DEFAULT_URL: &str = "postgres://taskstream:taskstream@127.0.0.1:55432/taskstream";
    const DATABASE_URL: &str = "DATABASE_URL";

    pub fn new(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: SecretString::from(url.into()),
        }
    }
}

impl Settings for PostgresSettings {
    fn vars(prefix: &str) -> Vec<String> {
        vec![var(prefix, Self::DATABASE_URL)]
    }

    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        let url: String = env_or(
            &var(prefix, Self::DATABASE_URL),
            Self::DEFAULT_URL.to_owned(),
        )?;
        Ok(PostgresSettings::new(url))
    }

    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![kv(
            var(prefix, Self::DATABASE_URL),
            self.url.expose_secret(),
        )]
    }
}

/// The event log (Kafka).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `{PREFIX}_KAFKA_BROKERS`, default `127.0.0.1:9092`.
    pub brokers: String,
    /// `{PREFIX}_KAFKA_TOPIC_PREFIX`, default empty: prepended to every
    /// topic name, so deployments can share a cluster.
    pub topic_prefix: String,
}

impl KafkaSettings {
    pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
    const BROKERS: &str = "KAFKA_BROKERS";
    const TOPIC_PREFIX: &str = "KAFKA_TOPIC_PREFIX";
}

impl Settings for KafkaSettings {
    fn vars(prefix: &str) -> Vec<String> {
        vec![var(prefix, Self::BROKERS), var(prefix, Self::TOPIC_PREFIX)]
    }

    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Ok(KafkaSettings {
            brokers: env_or(
                &var(prefix, Self::BROKERS),
                Self::DEFAULT_BROKERS.to_owned(),
            )?,
            topic_prefix: env_or(&var(prefix, Self::TOPIC_PREFIX), String::new())?,
        })
    }

    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            kv(var(prefix, Self::BROKERS), &self.brokers),
            kv(var(prefix, Self::TOPIC_PREFIX), &self.topic_prefix),
        ]
    }
}

/// The read model (MongoDB).
#[derive(Debug, Clone)]
pub struct MongoSettings {
    /// `{PREFIX}_MONGODB_URL`, default [`MongoSettings::DEFAULT_URL`]. It may
    /// hold credentials, so it never prints.
    pub url: SecretString,
    /// `{PREFIX}_MONGODB_DATABASE`, default `taskstream`.
    pub database: String,
}

impl MongoSettings {
    /// The server `scripts/infra` runs for local development.
    pub const DEFAULT_URL: &str = "mongodb://127.0.0.1:27017/?retryWrites=false";
    pub const DEFAULT_DATABASE: &str = "taskstream";
    const URL: &str = "MONGODB_URL";
    const DATABASE: &str = "MONGODB_DATABASE";

    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        MongoSettings {
            url: SecretString::from(url.into()),
            database: database.into(),
        }
    }
}

impl Settings for MongoSettings {
    fn vars(prefix: &str) -> Vec<String> {
        vec![var(prefix, Self::URL), var(prefix, Self::DATABASE)]
    }

    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        let url: String = env_or(&var(prefix, Self::URL), Self::DEFAULT_URL.to_owned())?;
        let database = env_or(
            &var(prefix, Self::DATABASE),
            Self::DEFAULT_DATABASE.to_owned(),
        )?;
        Ok(MongoSettings::new(url, database))
    }

    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            kv(var(prefix, Self::URL), self.url.expose_secret()),
            kv(var(prefix, Self::DATABASE), &self.database),
        ]
    }
}

/// The HTTP edge's connection limits, `{PREFIX}_HTTP_*`, and its trusted
/// proxies, `{PREFIX}_TRUSTED_PROXIES` (comma-separated networks, default
/// none); each defaults to [`Limits::default`].
impl Limits {
    const HEADER_READ_TIMEOUT_MS: &str = "HTTP_HEADER_READ_TIMEOUT_MS";
    const BODY_READ_TIMEOUT_MS: &str = "HTTP_BODY_READ_TIMEOUT_MS";
    const IDLE_TIMEOUT_MS: &str = "HTTP_IDLE_TIMEOUT_MS";
    const MAX_CONNECTIONS: &str = "HTTP_MAX_CONNECTIONS";
    const MAX_CONNECTIONS_PER_IP: &str = "HTTP_MAX_CONNECTIONS_PER_IP";
    const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";
}

impl Settings for Limits {
    fn vars(prefix: &str) -> Vec<String> {
        prefixed(
            prefix,
            &[
                Self::HEADER_READ_TIMEOUT_MS,
                Self::BODY_READ_TIMEOUT_MS,
                Self::IDLE_TIMEOUT_MS,
                Self::MAX_CONNECTIONS,
                Self::MAX_CONNECTIONS_PER_IP,
                Self::TRUSTED_PROXIES,
            ],
        )
    }

    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        let d = Limits::default();
        let ms = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            let var = var(prefix, name);
            let v: u64 = env_or(&var, default.as_millis() as u64)?;
            if v == 0 {
                return Err(ConfigError {
                    var,
                    reason: "must be at least 1 millisecond".into(),
                });
            }
            Ok(Duration::from_millis(v))
        };
        let count = |name: &str, default: usize| -> Result<usize, ConfigError> {
            let var = var(prefix, name);
            match env_or(&var, default)? {
                0 => Err(ConfigError {
                    var,
                    reason: "must be at least 1".into(),
                }),
                n => Ok(n),
            }
        };
        let limits = Limits {
            header_read_timeout: ms(Self::HEADER_READ_TIMEOUT_MS, d.header_read_timeout)?,
            body_read_timeout: ms(Self::BODY_READ_TIMEOUT_MS, d.body_read_timeout)?,
            idle_timeout: ms(Self::IDLE_TIMEOUT_MS, d.idle_timeout)?,
            max_connections: count(Self::MAX_CONNECTIONS, d.max_connections)?,
            max_connections_per_ip: count(Self::MAX_CONNECTIONS_PER_IP, d.max_connections_per_ip)?,
            trusted_proxies: env_or(&var(prefix, Self::TRUSTED_PROXIES), d.trusted_proxies)?,
        };
        // A stalled body must meet the body timeout (408) before the idle
        // timeout silently closes its connection.
        if limits.body_read_timeout >= limits.idle_timeout {
            return Err(ConfigError {
                var: var(prefix, Self::BODY_READ_TIMEOUT_MS),
                reason: format!(
                    "must be below {} ({} ms)",
                    var(prefix, Self::IDLE_TIMEOUT_MS),
                    limits.idle_timeout.as_millis()
                ),
            });
        }
        Ok(limits)
    }

    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            kv(
                var(prefix, Self::HEADER_READ_TIMEOUT_MS),
                self.header_read_timeout.as_millis(),
            ),
            kv(
                var(prefix, Self::BODY_READ_TIMEOUT_MS),
                self.body_read_timeout.as_millis(),
            ),
            kv(
                var(prefix, Self::IDLE_TIMEOUT_MS),
                self.idle_timeout.as_millis(),
            ),
            kv(var(prefix, Self::MAX_CONNECTIONS), self.max_connections),
            kv(
                var(prefix, Self::MAX_CONNECTIONS_PER_IP),
                self.max_connections_per_ip,
            ),
            kv(var(prefix, Self::TRUSTED_PROXIES), &self.trusted_proxies),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::read_from;

    /// `settings` written as variables and read back write the same
    /// variables, which are exactly its `vars`, all read.
    fn round_trip<S: Settings>(settings: &S, prefix: &str) -> S {
        let env = settings.to_env(prefix);
        let written: BTreeSet<String> = env.iter().map(|(k, _)| k.clone()).collect();
        let listed: BTreeSet<String> = S::vars(prefix).into_iter().collect();
        assert_eq!(written, listed, "to_env writes what vars lists");
        let (read, asked) = read_from(&env, || S::from_env(prefix));
        let read = read.expect("reads back");
        assert_eq!(asked, listed, "from_env reads what vars lists");
        assert_eq!(read.to_env(prefix), env);
        read
    }

    #[test]
    fn every_settings_type_reads_back_what_it_writes() {
        round_trip(&PostgresSettings::new("postgres://u:p@db:5432/x"), "SVC");
        round_trip(
            &KafkaSettings {
                brokers: "k1:9092,k2:9092".into(),
                topic_prefix: "t-".into(),
            },
            "SVC",
        );
        round_trip(&MongoSettings::new("mongodb://m:27017/", "views"), "SVC");
        round_trip(
            &Limits {
                header_read_timeout: Duration::from_millis(1500),
                max_connections: 7,
                trusted_proxies: "10.0.0.0/8,::1".parse().expect("networks"),
                ..Limits::default()
            },
            "SVC",
        );
    }

    #[test]
    fn unset_variables_take_the_defaults() {
        let (pg, _) = read_from(&[], || PostgresSettings::from_env("SVC"));
        assert_eq!(
            pg.expect("defaults").url.expose_secret(),
            PostgresSettings::DEFAULT_URL
        );
        let (kafka, _) = read_from(&[], || KafkaSettings::from_env("SVC"));
        let kafka = kafka.expect("defaults");
        assert_eq!(
            (kafka.brokers.as_str(), kafka.topic_prefix.as_str()),
            ("127.0.0.1:9092", "")
        );
        let (mongo, _) = read_from(&[], || MongoSettings::from_env("SVC"));
        assert_eq!(mongo.expect("defaults").database, "taskstream");
    }

    #[test]
    fn urls_with_passwords_never_print() {
        let pg = PostgresSettings::new("postgres://taskstream:hunter2-pg@db:5432/x");
        let mongo = MongoSettings::new("mongodb://reader:hunter2-mongo@m:27017/", "views");
        for shown in [format!("{pg:?}"), format!("{mongo:?}"), format!("{pg:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("[REDACTED]"), "{shown}");
        }
        assert!(format!("{mongo:?}").contains("views"));
    }

    #[test]
    fn malformed_limits_name_their_variable() {
        let (limits, _) = read_from(&[kv("SVC_HTTP_MAX_CONNECTIONS", 0)], || {
            Limits::from_env("SVC")
        });
        let err = limits.expect_err("zero connections");
        assert_eq!(
            err.to_string(),
            "configuration: SVC_HTTP_MAX_CONNECTIONS: must be at least 1"
        );
        let (limits, _) = read_from(&[kv("SVC_HTTP_BODY_READ_TIMEOUT_MS", 60_000)], || {
            Limits::from_env("SVC")
        });
        assert_eq!(
            limits.expect_err("body beyond idle").to_string(),
            "configuration: SVC_HTTP_BODY_READ_TIMEOUT_MS: must be below SVC_HTTP_IDLE_TIMEOUT_MS (60000 ms)"
        );
        let (limits, _) = read_from(&[kv("SVC_TRUSTED_PROXIES", "10.0.0.1/8")], || {
            Limits::from_env("SVC")
        });
        let err = limits.expect_err("host bits").to_string();
        assert!(
            err.starts_with("configuration: SVC_TRUSTED_PROXIES: "),
            "{err}"
        );
        assert!(err.contains("10.0.0.1/8"), "{err}");
    }
}
