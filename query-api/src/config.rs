//! Configuration, from `QUERY_API_*` environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use service::config::{env_or, ConfigError};
use service::http::Limits;

/// The development value of `QUERY_API_CURSOR_SECRET`, used only in
/// development mode (`TASKSTREAM_DEVELOPMENT=1`); outside it the secret
/// must be set and must not be this.
pub const DEV_CURSOR_SECRET: &str = "taskstream-dev-cursor-secret";

/// The shortest cursor secret accepted outside development mode.
pub const MIN_CURSOR_SECRET_LEN: usize = 32;

#[derive(Clone)]
pub struct Config {
    /// `QUERY_API_LISTEN_ADDR`, default `127.0.0.1:8083`.
    pub listen_addr: SocketAddr,
    /// `QUERY_API_MONGODB_URL`, default `mongodb://127.0.0.1:27017/?retryWrites=false`.
    pub mongodb_url: String,
    /// `QUERY_API_MONGODB_DATABASE`, default `taskstream`.
    pub mongodb_database: String,
    /// `QUERY_API_DATABASE_URL`: Postgres, for task history.
    pub database_url: String,
    /// `QUERY_API_JWKS_URL`, default `http://127.0.0.1:8081/.well-known/jwks.json`.
    pub jwks_url: String,
    /// `QUERY_API_JWT_ISSUER`, default `taskstream-auth`.
    pub jwt_issuer: String,
    /// `QUERY_API_JWT_AUDIENCE`, default `taskstream`.
    pub jwt_audience: String,
    /// `QUERY_API_CURSOR_SECRET`: HMAC key that makes pagination cursors
    /// tamper-evident; required outside development mode.
    pub cursor_secret: String,
    /// `QUERY_API_CONSISTENCY_TIMEOUT_MS`: how long a read carrying
    /// `X-Consistency-Token` waits for the projection, default 2000.
    pub consistency_timeout: Duration,
    /// `QUERY_API_HTTP_*`: connection and body timeouts, connection cap.
    pub http: Limits,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("mongodb_url", &self.mongodb_url)
            .field("mongodb_database", &self.mongodb_database)
            .field("database_url", &"<redacted>")
            .field("jwks_url", &self.jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("cursor_secret", &"<redacted>")
            .field("consistency_timeout", &self.consistency_timeout)
            .field("http", &self.http)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Config {
            listen_addr: env_or(
                "QUERY_API_LISTEN_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8083)),
            )?,
            mongodb_url: env_or(
                "QUERY_API_MONGODB_URL",
                "mongodb://127.0.0.1:27017/?retryWrites=false".to_owned(),
            )?,
            mongodb_database: env_or("QUERY_API_MONGODB_DATABASE", "taskstream".to_owned())?,
            database_url: env_or(
                "QUERY_API_DATABASE_URL",
                "postgres://taskstream:taskstream@127.0.0.1:55432/taskstream".to_owned(),
            )?,
            jwks_url: env_or(
                "QUERY_API_JWKS_URL",
                "http://127.0.0.1:8081/.well-known/jwks.json".to_owned(),
            )?,
            jwt_issuer: env_or("QUERY_API_JWT_ISSUER", access::DEFAULT_ISSUER.to_owned())?,
            jwt_audience: env_or(
                "QUERY_API_JWT_AUDIENCE",
                access::DEFAULT_AUDIENCE.to_owned(),
            )?,
            cursor_secret: service::config::secret(
                "QUERY_API_CURSOR_SECRET",
                DEV_CURSOR_SECRET,
                MIN_CURSOR_SECRET_LEN,
            )?,
            consistency_timeout: Duration::from_millis(env_or(
                "QUERY_API_CONSISTENCY_TIMEOUT_MS",
                2000u64,
            )?),
            http: Limits::from_env("QUERY_API")?,
        })
    }
}
