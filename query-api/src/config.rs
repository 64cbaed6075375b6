//! Configuration, from `QUERY_API_*` environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use access::JwtSettings;
use service::config::{
    env_or, var, ConfigError, ExposeSecret, MongoSettings, PostgresSettings, SecretString,
    ServiceConfig, Settings, ToEnv, DEVELOPMENT_VAR,
};
use service::http::Limits;

/// The prefix of every variable query-api reads.
pub const PREFIX: &str = "QUERY_API";

/// The development value of `QUERY_API_CURSOR_SECRET`, used only in
/// development mode (`TASKSTREAM_DEVELOPMENT=1`); outside it the secret
/// must be set and must not be this.
pub const DEV_CURSOR_SECRET: &str = "taskstream-dev-cursor-secret";

/// The shortest cursor secret accepted outside development mode.
pub const MIN_CURSOR_SECRET_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    /// `QUERY_API_LISTEN_ADDR`, default `127.0.0.1:8083`.
    pub listen_addr: SocketAddr,
    /// `QUERY_API_MONGODB_URL` (default
    /// `mongodb://127.0.0.1:27017/?retryWrites=false`) and
    /// `QUERY_API_MONGODB_DATABASE` (default `taskstream`).
    pub mongo: MongoSettings,
    /// `QUERY_API_DATABASE_URL`: Postgres, for task history.
    pub postgres: PostgresSettings,
    /// `QUERY_API_JWKS_URL` (default
    /// `http://127.0.0.1:8081/.well-known/jwks.json`),
    /// `QUERY_API_JWT_ISSUER` (default `taskstream-auth`) and
    /// `QUERY_API_JWT_AUDIENCE` (default `taskstream`).
    pub jwt: JwtSettings,
    /// `QUERY_API_CURSOR_SECRET`: HMAC key that makes pagination cursors
    /// tamper-evident; required outside development mode.
    pub cursor_secret: SecretString,
    /// `QUERY_API_CONSISTENCY_TIMEOUT_MS`: how long a read carrying
    /// `X-Consistency-Token` waits for the projection, default 2000.
    pub consistency_timeout: Duration,
    /// `QUERY_API_S3_*`: the object store attachments are downloaded from
    /// (presigned GETs on `QUERY_API_S3_PUBLIC_URL`).
    pub s3: objects::S3Settings,
    /// `QUERY_API_HTTP_*`: connection and body timeouts, connection cap;
    /// `QUERY_API_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` is
    /// believed (default none).
    pub http: Limits,
}

// query-api's own variables, after `QUERY_API_`.
const LISTEN_ADDR: &str = "LISTEN_ADDR";
const CURSOR_SECRET: &str = "CURSOR_SECRET";
const CONSISTENCY_TIMEOUT_MS: &str = "CONSISTENCY_TIMEOUT_MS";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let own = |name| var(PREFIX, name);
        Ok(Config {
            listen_addr: env_or(&own(LISTEN_ADDR), SocketAddr::from(([127, 0, 0, 1], 8083)))?,
            mongo: MongoSettings::from_env(PREFIX)?,
            postgres: PostgresSettings::from_env(PREFIX)?,
            jwt: JwtSettings::from_env(PREFIX)?,
            cursor_secret: service::config::secret(
                &own(CURSOR_SECRET),
                DEV_CURSOR_SECRET,
                MIN_CURSOR_SECRET_LEN,
            )?,
            consistency_timeout: Duration::from_millis(env_or(
                &own(CONSISTENCY_TIMEOUT_MS),
                2000u64,
            )?),
            s3: objects::S3Settings::from_env(PREFIX)?,
            http: Limits::from_env(PREFIX)?,
        })
    }
}

impl ServiceConfig for Config {
    const PREFIX: &'static str = PREFIX;
    const OWN_VARS: &'static [&'static str] = &[LISTEN_ADDR, CURSOR_SECRET, CONSISTENCY_TIMEOUT_MS];
    const DEPENDENCY_VARS: &'static [fn(&str) -> Vec<String>] = &[
        MongoSettings::vars,
        PostgresSettings::vars,
        JwtSettings::vars,
        objects::S3Settings::vars,
        Limits::vars,
    ];
    const UNPREFIXED_VARS: &'static [&'static str] = &[DEVELOPMENT_VAR];

    fn own_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (LISTEN_ADDR, self.listen_addr.to_string()),
            (CURSOR_SECRET, self.cursor_secret.expose_secret().to_owned()),
            (
                CONSISTENCY_TIMEOUT_MS,
                self.consistency_timeout.as_millis().to_string(),
            ),
        ]
    }

    fn dependencies(&self) -> Vec<&dyn ToEnv> {
        vec![&self.mongo, &self.postgres, &self.jwt, &self.s3, &self.http]
    }
}
