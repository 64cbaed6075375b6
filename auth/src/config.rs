//! Configuration, from `AUTH_*` environment variables.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};

use service::config::{env_or, ConfigError};
use service::http::Limits;

pub use access::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

#[derive(Debug, Clone)]
pub struct Config {
    /// `AUTH_LISTEN_ADDR`, default `127.0.0.1:8081`.
    pub listen_addr: SocketAddr,
    /// `AUTH_DATABASE_URL`.
    pub database_url: String,
    /// `AUTH_KAFKA_BROKERS`, default `127.0.0.1:9092`.
    pub kafka_brokers: String,
    /// `AUTH_KAFKA_TOPIC_PREFIX`, default empty.
    pub topic_prefix: String,
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
    /// connection cap (see `service::http::Limits`; defaults as the APIs').
    pub http: Limits,
}

pub const DEFAULT_RATE_LIMIT_PER_MINUTE: NonZeroU32 = NonZeroU32::new(30).unwrap();
pub const DEFAULT_RATE_LIMIT_PER_EMAIL_PER_MINUTE: NonZeroU32 = NonZeroU32::new(10).unwrap();
pub const DEFAULT_RATE_LIMIT_CAPACITY: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Config {
            listen_addr: env_or("AUTH_LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database_url: env_or(
                "AUTH_DATABASE_URL",
                "postgres://taskstream:taskstream@127.0.0.1:55432/taskstream".to_owned(),
            )?,
            kafka_brokers: env_or("AUTH_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            topic_prefix: env_or("AUTH_KAFKA_TOPIC_PREFIX", String::new())?,
            signing_key_path: env_or("AUTH_SIGNING_KEY_PATH", ".dev/jwt-signing.pem".to_owned())?,
            issuer: env_or("AUTH_ISSUER", DEFAULT_ISSUER.to_owned())?,
            audience: env_or("AUTH_AUDIENCE", DEFAULT_AUDIENCE.to_owned())?,
            rate_limit_per_minute: env_or(
                "AUTH_RATE_LIMIT_PER_MINUTE",
                DEFAULT_RATE_LIMIT_PER_MINUTE,
            )?,
            rate_limit_per_email_per_minute: env_or(
                "AUTH_RATE_LIMIT_PER_EMAIL_PER_MINUTE",
                DEFAULT_RATE_LIMIT_PER_EMAIL_PER_MINUTE,
            )?,
            rate_limit_capacity: env_or("AUTH_RATE_LIMIT_CAPACITY", DEFAULT_RATE_LIMIT_CAPACITY)?,
            http: Limits::from_env("AUTH")?,
        })
    }
}
