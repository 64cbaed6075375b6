//! Configuration, from `COMMAND_API_*` environment variables.

use std::net::SocketAddr;

use service::config::{env_or, ConfigError};
use service::http::Limits;
use service::rate_limit::Quota;

use crate::write_limit;

#[derive(Debug, Clone)]
pub struct Config {
    /// `COMMAND_API_LISTEN_ADDR`, default `127.0.0.1:8082`.
    pub listen_addr: SocketAddr,
    /// `COMMAND_API_DATABASE_URL`.
    pub database_url: String,
    /// `COMMAND_API_KAFKA_BROKERS`, default `127.0.0.1:9092`.
    pub kafka_brokers: String,
    /// `COMMAND_API_KAFKA_TOPIC_PREFIX`, default empty.
    pub topic_prefix: String,
    /// `COMMAND_API_JWKS_URL`, default `http://127.0.0.1:8081/.well-known/jwks.json`.
    pub jwks_url: String,
    /// `COMMAND_API_JWT_ISSUER`, default `taskstream-auth`.
    pub jwt_issuer: String,
    /// `COMMAND_API_JWT_AUDIENCE`, default `taskstream`.
    pub jwt_audience: String,
    /// `COMMAND_API_WRITES_PER_MINUTE` (default 600) and
    /// `COMMAND_API_WRITE_BURST` (default 100): each user's write budget.
    pub write_quota: Quota,
    /// `COMMAND_API_MAX_LIVE_TASKS` (default 10,000): live tasks per user;
    /// a create beyond it is a 409.
    pub max_live_tasks: std::num::NonZeroU32,
    /// `COMMAND_API_HTTP_*`: connection and body timeouts, connection cap.
    pub http: Limits,
}

/// Live tasks per user unless configured: far above what a person or a
/// team's integration keeps open, far below what fills a disk.
pub const DEFAULT_MAX_LIVE_TASKS: u32 = 10_000;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Config {
            listen_addr: env_or(
                "COMMAND_API_LISTEN_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8082)),
            )?,
            database_url: env_or(
                "COMMAND_API_DATABASE_URL",
                "postgres://taskstream:taskstream@127.0.0.1:55432/taskstream".to_owned(),
            )?,
            kafka_brokers: env_or("COMMAND_API_KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
            topic_prefix: env_or("COMMAND_API_KAFKA_TOPIC_PREFIX", String::new())?,
            jwks_url: env_or(
                "COMMAND_API_JWKS_URL",
                "http://127.0.0.1:8081/.well-known/jwks.json".to_owned(),
            )?,
            jwt_issuer: env_or("COMMAND_API_JWT_ISSUER", access::DEFAULT_ISSUER.to_owned())?,
            jwt_audience: env_or(
                "COMMAND_API_JWT_AUDIENCE",
                access::DEFAULT_AUDIENCE.to_owned(),
            )?,
            write_quota: Quota {
                per_minute: env_or(
                    "COMMAND_API_WRITES_PER_MINUTE",
                    write_limit::default_quota().per_minute,
                )?,
                burst: env_or(
                    "COMMAND_API_WRITE_BURST",
                    write_limit::default_quota().burst,
                )?,
            },
            max_live_tasks: env_or(
                "COMMAND_API_MAX_LIVE_TASKS",
                std::num::NonZeroU32::new(DEFAULT_MAX_LIVE_TASKS).expect("non-zero"),
            )?,
            http: Limits::from_env("COMMAND_API")?,
        })
    }
}
