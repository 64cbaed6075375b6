//! Configuration, from `AUTH_*` environment variables.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};

use service::config::{
    env_or, var, ConfigError, KafkaSettings, PostgresSettings, ServiceConfig, Settings, ToEnv,
};
use service::http::Limits;

use access::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// The prefix of every variable auth reads.
pub const PREFIX: &str = "AUTH";

/// `AUTH_ADMIN_PASSWORD`: read only by `auth create-admin`, never by the server.
pub const ADMIN_PASSWORD_VAR: &str = "AUTH_ADMIN_PASSWORD";

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN_ADDR`, default `127.0.0.1:8081`.
    pub listen_addr: SocketAddr,
    /// `AUTH_DATABASE_URL`.
    pub postgres: PostgresSettings,
    /// `AUTH_KAFKA_BROKERS` (default `127.0.0.1:9092`) and
    /// `AUTH_KAFKA_TOPIC_PREFIX` (default empty).
    pub kafka: KafkaSettings,
    /// `AUTH_SIGNING_KEY_PATH`: Ed25519 PKCS#8 PEM, default `.dev/jwt-signing.pem`.
    pub signing_key_path: String,
    /// `AUTH_ISSUER`, default `taskstream-auth`.
    pub issuer: String,
    /// `AUTH_AUDIENCE`, default `taskstream`.
    pub audience: String,
    /// `AUTH_RATE_LIMIT_PER_MINUTE`, default 30: login attempts, and
    /// separately registrations, one client IP may make per minute.
    pub rate_limit_per_minute: NonZeroU32,
    /// `AUTH_RATE_LIMIT_PER_EMAIL_PER_MINUTE`, default 10: login attempts,
    /// and separately registrations, naming one email per minute (from any IP).
    pub rate_limit_per_email_per_minute: NonZeroU32,
    /// `AUTH_RATE_LIMIT_CAPACITY`, default 100,000: the most keys (client
    /// IPs, and separately emails) the limiters hold at once; beyond it a new
    /// key evicts the one closest to expiry. About 100 bytes a key.
    pub rate_limit_capacity: NonZeroUsize,
    /// `AUTH_HTTP_*`: header-read, body-read and idle timeouts and the
    /// connection cap (see `service::http::Limits`; defaults as the APIs');
    /// `AUTH_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` names the
    /// client its per-IP limits count (default none).
    pub http: Limits,
}

// auth's own variables, after `AUTH_`.
const LISTEN_ADDR: &str = "LISTEN_ADDR";
const SIGNING_KEY_PATH: &str = "SIGNING_KEY_PATH";
const ISSUER: &str = "ISSUER";
const AUDIENCE: &str = "AUDIENCE";
const RATE_LIMIT_PER_MINUTE: &str = "RATE_LIMIT_PER_MINUTE";
const RATE_LIMIT_PER_EMAIL_PER_MINUTE: &str = "RATE_LIMIT_PER_EMAIL_PER_MINUTE";
const RATE_LIMIT_CAPACITY: &str = "RATE_LIMIT_CAPACITY";

pub const DEFAULT_RATE_LIMIT_PER_MINUTE: NonZeroU32 = NonZeroU32::new(30).unwrap();
pub const DEFAULT_RATE_LIMIT_PER_EMAIL_PER_MINUTE: NonZeroU32 = NonZeroU32::new(10).unwrap();
pub const DEFAULT_RATE_LIMIT_CAPACITY: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let own = |name| var(PREFIX, name);
        Ok(Config {
            listen_addr: env_or(&own(LISTEN_ADDR), SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            postgres: PostgresSettings::from_env(PREFIX)?,
            kafka: KafkaSettings::from_env(PREFIX)?,
            signing_key_path: env_or(&own(SIGNING_KEY_PATH), ".dev/jwt-signing.pem".to_owned())?,
            issuer: env_or(&own(ISSUER), DEFAULT_ISSUER.to_owned())?,
            audience: env_or(&own(AUDIENCE), DEFAULT_AUDIENCE.to_owned())?,
            rate_limit_per_minute: env_or(
                &own(RATE_LIMIT_PER_MINUTE),
                DEFAULT_RATE_LIMIT_PER_MINUTE,
            )?,
            rate_limit_per_email_per_minute: env_or(
                &own(RATE_LIMIT_PER_EMAIL_PER_MINUTE),
                DEFAULT_RATE_LIMIT_PER_EMAIL_PER_MINUTE,
            )?,
            rate_limit_capacity: env_or(&own(RATE_LIMIT_CAPACITY), DEFAULT_RATE_LIMIT_CAPACITY)?,
            http: Limits::from_env(PREFIX)?,
        })
    }
}

impl ServiceConfig for Config {
    const PREFIX: &'static str = PREFIX;
    const OWN_VARS: &'static [&'static str] = &[
        LISTEN_ADDR,
        SIGNING_KEY_PATH,
        ISSUER,
        AUDIENCE,
        RATE_LIMIT_PER_MINUTE,
        RATE_LIMIT_PER_EMAIL_PER_MINUTE,
        RATE_LIMIT_CAPACITY,
    ];
    const DEPENDENCY_VARS: &'static [fn(&str) -> Vec<String>] =
        &[PostgresSettings::vars, KafkaSettings::vars, Limits::vars];

    fn own_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (LISTEN_ADDR, self.listen_addr.to_string()),
            (SIGNING_KEY_PATH, self.signing_key_path.clone()),
            (ISSUER, self.issuer.clone()),
            (AUDIENCE, self.audience.clone()),
            (
                RATE_LIMIT_PER_MINUTE,
                self.rate_limit_per_minute.to_string(),
            ),
            (
                RATE_LIMIT_PER_EMAIL_PER_MINUTE,
                self.rate_limit_per_email_per_minute.to_string(),
            ),
            (RATE_LIMIT_CAPACITY, self.rate_limit_capacity.to_string()),
        ]
    }

    fn dependencies(&self) -> Vec<&dyn ToEnv> {
        vec![&self.postgres, &self.kafka, &self.http]
    }
}
