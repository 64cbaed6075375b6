//! `{PREFIX}_S3_*`: where the object store is, for the services and for
//! their clients, and with which credentials.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use service::config::{development_mode, env_opt, env_or, kv, var, ConfigError, Settings};

/// The object store's settings.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `{PREFIX}_S3_URL`: the store as the services reach it
    /// (default [`S3Settings::DEFAULT_URL`]).
    pub url: String,
    /// `{PREFIX}_S3_PUBLIC_URL`: the store as clients reach it; presigned
    /// URLs name this host (default: `{PREFIX}_S3_URL`).
    pub public_url: String,
    /// `{PREFIX}_S3_REGION` (default `us-east-1`).
    pub region: String,
    /// `{PREFIX}_S3_BUCKET` (default `taskstream-attachments`).
    pub bucket: String,
    /// `{PREFIX}_S3_ACCESS_KEY` (default, development only: `taskstream`).
    pub access_key: String,
    /// `{PREFIX}_S3_SECRET_KEY` (required outside development mode).
    pub secret_key: SecretString,
    /// `{PREFIX}_S3_PRESIGN_SECONDS`: how long a presigned URL is valid
    /// (default 300).
    pub presign_expiry: Duration,
}

impl S3Settings {
    /// The store `scripts/infra` runs for local development.
    pub const DEFAULT_URL: &str = "http://127.0.0.1:9000";
    pub const DEFAULT_BUCKET: &str = "taskstream-attachments";
    pub const DEFAULT_REGION: &str = "us-east-1";
    /// The development credentials `scripts/infra` starts the store with.
    pub const DEV_ACCESS_KEY: &str = "taskstream";
    pub const DEV_SECRET_KEY: &str = "taskstream-dev-secret";
    pub const DEFAULT_PRESIGN: Duration = Duration::from_secs(300);

    const URL: &str = "S3_URL";
    const PUBLIC_URL: &str = "S3_PUBLIC_URL";
    const REGION: &str = "S3_REGION";
    const BUCKET: &str = "S3_BUCKET";
    const ACCESS_KEY: &str = "S3_ACCESS_KEY";
    const SECRET_KEY: &str = "S3_SECRET_KEY";
    const PRESIGN_SECONDS: &str = "S3_PRESIGN_SECONDS";

    /// The development store with the development credentials.
    pub fn development(url: impl Into<String>, bucket: impl Into<String>) -> Self {
        let url = url.into();
        S3Settings {
            public_url: url.clone(),
            url,
            region: Self::DEFAULT_REGION.into(),
            bucket: bucket.into(),
            access_key: Self::DEV_ACCESS_KEY.into(),
            secret_key: SecretString::from(Self::DEV_SECRET_KEY),
            presign_expiry: Self::DEFAULT_PRESIGN,
        }
    }
}

impl Settings for S3Settings {
    fn vars(prefix: &str) -> Vec<String> {
        [
            Self::URL,
            Self::PUBLIC_URL,
            Self::REGION,
            Self::BUCKET,
            Self::ACCESS_KEY,
            Self::SECRET_KEY,
            Self::PRESIGN_SECONDS,
        ]
        .iter()
        .map(|n| var(prefix, n))
        .collect()
    }

    fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        let url: String = env_or(&var(prefix, Self::URL), Self::DEFAULT_URL.to_owned())?;
        let public_url = env_opt::<String>(&var(prefix, Self::PUBLIC_URL))?.unwrap_or(url.clone());
        for (name, value) in [(Self::URL, &url), (Self::PUBLIC_URL, &public_url)] {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(ConfigError {
                    var: var(prefix, name),
                    reason: format!("must be an http(s) URL, got `{value}`"),
                });
            }
            // Buckets are addressed by path from the URL's root: a path here
            // would be dropped from every URL, silently.
            let rest = value.split_once("://").map_or("", |(_, r)| r);
            if rest
                .split_once('/')
                .is_some_and(|(_, path)| !path.is_empty())
            {
                return Err(ConfigError {
                    var: var(prefix, name),
                    reason: format!(
                        "must be the store's root (scheme, host and port, no path), got `{value}`"
                    ),
                });
            }
        }
        let seconds: u64 = env_or(
            &var(prefix, Self::PRESIGN_SECONDS),
            Self::DEFAULT_PRESIGN.as_secs(),
        )?;
        if seconds == 0 || seconds > 7 * 24 * 3600 {
            return Err(ConfigError {
                var: var(prefix, Self::PRESIGN_SECONDS),
                reason: format!("must be between 1 and 604800 (7 days), got {seconds}"),
            });
        }
        Ok(S3Settings {
            url,
            public_url,
            region: env_or(&var(prefix, Self::REGION), Self::DEFAULT_REGION.to_owned())?,
            bucket: env_or(&var(prefix, Self::BUCKET), Self::DEFAULT_BUCKET.to_owned())?,
            access_key: env_or(
                &var(prefix, Self::ACCESS_KEY),
                Self::DEV_ACCESS_KEY.to_owned(),
            )?,
            secret_key: secret_key(&var(prefix, Self::SECRET_KEY))?,
            presign_expiry: Duration::from_secs(seconds),
        })
    }

    fn to_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            kv(var(prefix, Self::URL), &self.url),
            kv(var(prefix, Self::PUBLIC_URL), &self.public_url),
            kv(var(prefix, Self::REGION), &self.region),
            kv(var(prefix, Self::BUCKET), &self.bucket),
            kv(var(prefix, Self::ACCESS_KEY), &self.access_key),
            kv(
                var(prefix, Self::SECRET_KEY),
                self.secret_key.expose_secret(),
            ),
            kv(
                var(prefix, Self::PRESIGN_SECONDS),
                self.presign_expiry.as_secs(),
            ),
        ]
    }
}

/// The store's secret: required unless in development mode. Unlike our own
/// secrets the development value is accepted when given: it is the
/// credential the store was started with, not one we publish as a default.
fn secret_key(name: &str) -> Result<SecretString, ConfigError> {
    match env_opt::<String>(name)? {
        Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ if development_mode()? => Ok(SecretString::from(S3Settings::DEV_SECRET_KEY)),
        _ => Err(ConfigError {
            var: name.to_owned(),
            reason: format!(
                "is required (the object store's secret key); set {}=1 to run with the development value",
                service::config::DEVELOPMENT_VAR
            ),
        }),
    }
}
