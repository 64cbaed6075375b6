//! Configuration, from `COMMAND_API_*` environment variables.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use access::JwtSettings;
use service::config::{
    env_or, var, ConfigError, KafkaSettings, PostgresSettings, ServiceConfig, Settings, ToEnv,
};
use service::http::Limits;
use service::rate_limit::Quota;

use crate::write_limit;

/// The prefix of every variable command-api reads.
pub const PREFIX: &str = "COMMAND_API";

#[derive(Debug, Clone)]
pub struct Config {
    /// `COMMAND_API_LISTEN_ADDR`, default `127.0.0.1:8082`.
    pub listen_addr: SocketAddr,
    /// `COMMAND_API_DATABASE_URL`.
    pub postgres: PostgresSettings,
    /// `COMMAND_API_KAFKA_BROKERS` (default `127.0.0.1:9092`) and
    /// `COMMAND_API_KAFKA_TOPIC_PREFIX` (default empty).
    pub kafka: KafkaSettings,
    /// `COMMAND_API_JWKS_URL` (default
    /// `http://127.0.0.1:8081/.well-known/jwks.json`),
    /// `COMMAND_API_JWT_ISSUER` (default `taskstream-auth`) and
    /// `COMMAND_API_JWT_AUDIENCE` (default `taskstream`).
    pub jwt: JwtSettings,
    /// `COMMAND_API_WRITES_PER_MINUTE` (default 600) and
    /// `COMMAND_API_WRITE_BURST` (default 100): each user's write budget.
    pub write_quota: Quota,
    /// `COMMAND_API_MAX_LIVE_TASKS` (default 10,000): live tasks per user;
    /// a create beyond it is a 409.
    pub max_live_tasks: NonZeroU32,
    /// `COMMAND_API_MAX_PROJECT_MEMBERS` (default 500) and
    /// `COMMAND_API_MAX_PROJECTS_PER_USER` (default 1,000): an addition
    /// (or a create) beyond either is a 409 naming the limit.
    pub projects: ProjectLimits,
    /// `COMMAND_API_S3_*`: the object store attachments live in (see
    /// `objects::S3Settings`).
    pub s3: objects::S3Settings,
    /// `COMMAND_API_ATTACHMENT_MAX_BYTES` (25 MiB), `_MAX_PER_TASK` (100),
    /// `_MAX_BYTES_PER_USER` (1 GiB, pending uploads included),
    /// `_MAX_PENDING_PER_USER` (20), `_CONTENT_TYPES` (comma-separated allowlist) and
    /// `_UPLOAD_TTL_SECONDS` (3600: an upload never completed is removed)
    /// `_UPLOAD_GRACE_SECONDS` (900: how long after its URL expired an
    /// upload may still land) and `_SWEEP_SECONDS` (3600: how often the
    /// bucket is swept for objects no row names; 0: never).
    pub attachments: crate::attachments::Limits,
    /// `COMMAND_API_HTTP_*`: connection and body timeouts, connection cap;
    /// `COMMAND_API_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For`
    /// is believed (default none).
    pub http: Limits,
}

/// Live tasks per user unless configured: far above what a person or a
/// team's integration keeps open, far below what fills a disk.
pub const DEFAULT_MAX_LIVE_TASKS: u32 = 10_000;

/// The bounds of projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectLimits {
    /// Members one project may have, its owner included.
    pub max_members: NonZeroU32,
    /// Projects one user may belong to.
    pub max_projects_per_user: NonZeroU32,
}

pub const DEFAULT_MAX_PROJECT_MEMBERS: u32 = 500;
pub const DEFAULT_MAX_PROJECTS_PER_USER: u32 = access::MAX_PROJECTS_PER_USER;

impl Default for ProjectLimits {
    fn default() -> Self {
        ProjectLimits {
            max_members: NonZeroU32::new(DEFAULT_MAX_PROJECT_MEMBERS).expect("non-zero"),
            max_projects_per_user: NonZeroU32::new(DEFAULT_MAX_PROJECTS_PER_USER)
                .expect("non-zero"),
        }
    }
}

// command-api's own variables, after `COMMAND_API_`.
const LISTEN_ADDR: &str = "LISTEN_ADDR";
const WRITES_PER_MINUTE: &str = "WRITES_PER_MINUTE";
const WRITE_BURST: &str = "WRITE_BURST";
const MAX_LIVE_TASKS: &str = "MAX_LIVE_TASKS";
const MAX_PROJECT_MEMBERS: &str = "MAX_PROJECT_MEMBERS";
const MAX_PROJECTS_PER_USER: &str = "MAX_PROJECTS_PER_USER";
const ATTACHMENT_MAX_BYTES: &str = "ATTACHMENT_MAX_BYTES";
const ATTACHMENT_MAX_PER_TASK: &str = "ATTACHMENT_MAX_PER_TASK";
const ATTACHMENT_MAX_BYTES_PER_USER: &str = "ATTACHMENT_MAX_BYTES_PER_USER";
const ATTACHMENT_MAX_PENDING_PER_USER: &str = "ATTACHMENT_MAX_PENDING_PER_USER";
const ATTACHMENT_CONTENT_TYPES: &str = "ATTACHMENT_CONTENT_TYPES";
const ATTACHMENT_UPLOAD_TTL_SECONDS: &str = "ATTACHMENT_UPLOAD_TTL_SECONDS";
const ATTACHMENT_UPLOAD_GRACE_SECONDS: &str = "ATTACHMENT_UPLOAD_GRACE_SECONDS";
const ATTACHMENT_SWEEP_SECONDS: &str = "ATTACHMENT_SWEEP_SECONDS";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let own = |name| var(PREFIX, name);
        Ok(Config {
            listen_addr: env_or(&own(LISTEN_ADDR), SocketAddr::from(([127, 0, 0, 1], 8082)))?,
            postgres: PostgresSettings::from_env(PREFIX)?,
            kafka: KafkaSettings::from_env(PREFIX)?,
            jwt: JwtSettings::from_env(PREFIX)?,
            write_quota: Quota {
                per_minute: env_or(
                    &own(WRITES_PER_MINUTE),
                    write_limit::default_quota().per_minute,
                )?,
                burst: env_or(&own(WRITE_BURST), write_limit::default_quota().burst)?,
            },
            max_live_tasks: env_or(
                &own(MAX_LIVE_TASKS),
                NonZeroU32::new(DEFAULT_MAX_LIVE_TASKS).expect("non-zero"),
            )?,
            projects: ProjectLimits {
                max_members: env_or(
                    &own(MAX_PROJECT_MEMBERS),
                    ProjectLimits::default().max_members,
                )?,
                max_projects_per_user: at_most(
                    &own(MAX_PROJECTS_PER_USER),
                    env_or(
                        &own(MAX_PROJECTS_PER_USER),
                        ProjectLimits::default().max_projects_per_user,
                    )?,
                    access::MAX_PROJECTS_PER_USER,
                    "query-api reads at most that many memberships per request",
                )?,
            },
            s3: objects::S3Settings::from_env(PREFIX)?,
            attachments: attachment_limits()?,
            http: Limits::from_env(PREFIX)?,
        })
    }
}

fn attachment_limits() -> Result<crate::attachments::Limits, ConfigError> {
    let own = |name| var(PREFIX, name);
    let d = crate::attachments::Limits::default();
    let types: String = env_or(
        &own(ATTACHMENT_CONTENT_TYPES),
        crate::attachments::DEFAULT_CONTENT_TYPES.join(","),
    )?;
    let content_types: std::collections::BTreeSet<String> = types
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(bad) = content_types
        .iter()
        .find(|t| !t.contains('/') || t.contains(';'))
    {
        return Err(ConfigError {
            var: own(ATTACHMENT_CONTENT_TYPES),
            reason: format!("`{bad}` is not a content type without parameters"),
        });
    }
    let ttl: NonZeroU32 = env_or(
        &own(ATTACHMENT_UPLOAD_TTL_SECONDS),
        NonZeroU32::new(d.upload_ttl.as_secs() as u32).expect("non-zero"),
    )?;
    Ok(crate::attachments::Limits {
        max_bytes: env_or(&own(ATTACHMENT_MAX_BYTES), d.max_bytes)?,
        max_per_task: env_or(&own(ATTACHMENT_MAX_PER_TASK), d.max_per_task)?,
        max_bytes_per_user: env_or(&own(ATTACHMENT_MAX_BYTES_PER_USER), d.max_bytes_per_user)?,
        max_pending_per_user: env_or(
            &own(ATTACHMENT_MAX_PENDING_PER_USER),
            d.max_pending_per_user,
        )?,
        content_types,
        upload_ttl: std::time::Duration::from_secs(u64::from(ttl.get())),
        upload_grace: std::time::Duration::from_secs(u64::from(env_or::<u32>(
            &own(ATTACHMENT_UPLOAD_GRACE_SECONDS),
            d.upload_grace.as_secs() as u32,
        )?)),
        sweep_every: match env_or::<u32>(
            &own(ATTACHMENT_SWEEP_SECONDS),
            d.sweep_every.map_or(0, |every| every.as_secs() as u32),
        )? {
            0 => None,
            seconds => Some(std::time::Duration::from_secs(u64::from(seconds))),
        },
    })
}

/// `value` of `var` when it is at most `max`; else an error saying why.
fn at_most(var: &str, value: NonZeroU32, max: u32, why: &str) -> Result<NonZeroU32, ConfigError> {
    if value.get() > max {
        return Err(ConfigError {
            var: var.to_owned(),
            reason: format!("must be at most {max} ({why}), got {value}"),
        });
    }
    Ok(value)
}

impl ServiceConfig for Config {
    const PREFIX: &'static str = PREFIX;
    const OWN_VARS: &'static [&'static str] = &[
        LISTEN_ADDR,
        WRITES_PER_MINUTE,
        WRITE_BURST,
        MAX_LIVE_TASKS,
        MAX_PROJECT_MEMBERS,
        MAX_PROJECTS_PER_USER,
        ATTACHMENT_MAX_BYTES,
        ATTACHMENT_MAX_PER_TASK,
        ATTACHMENT_MAX_BYTES_PER_USER,
        ATTACHMENT_MAX_PENDING_PER_USER,
        ATTACHMENT_CONTENT_TYPES,
        ATTACHMENT_UPLOAD_TTL_SECONDS,
        ATTACHMENT_UPLOAD_GRACE_SECONDS,
        ATTACHMENT_SWEEP_SECONDS,
    ];
    const DEPENDENCY_VARS: &'static [fn(&str) -> Vec<String>] = &[
        PostgresSettings::vars,
        KafkaSettings::vars,
        JwtSettings::vars,
        objects::S3Settings::vars,
        Limits::vars,
    ];

    fn own_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (LISTEN_ADDR, self.listen_addr.to_string()),
            (WRITES_PER_MINUTE, self.write_quota.per_minute.to_string()),
            (WRITE_BURST, self.write_quota.burst.to_string()),
            (MAX_LIVE_TASKS, self.max_live_tasks.to_string()),
            (MAX_PROJECT_MEMBERS, self.projects.max_members.to_string()),
            (
                MAX_PROJECTS_PER_USER,
                self.projects.max_projects_per_user.to_string(),
            ),
            (ATTACHMENT_MAX_BYTES, self.attachments.max_bytes.to_string()),
            (
                ATTACHMENT_MAX_PER_TASK,
                self.attachments.max_per_task.to_string(),
            ),
            (
                ATTACHMENT_MAX_BYTES_PER_USER,
                self.attachments.max_bytes_per_user.to_string(),
            ),
            (
                ATTACHMENT_MAX_PENDING_PER_USER,
                self.attachments.max_pending_per_user.to_string(),
            ),
            (
                ATTACHMENT_CONTENT_TYPES,
                self.attachments
                    .content_types
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                ATTACHMENT_UPLOAD_TTL_SECONDS,
                self.attachments.upload_ttl.as_secs().to_string(),
            ),
            (
                ATTACHMENT_UPLOAD_GRACE_SECONDS,
                self.attachments.upload_grace.as_secs().to_string(),
            ),
            (
                ATTACHMENT_SWEEP_SECONDS,
                self.attachments
                    .sweep_every
                    .map_or(0, |every| every.as_secs())
                    .to_string(),
            ),
        ]
    }

    fn dependencies(&self) -> Vec<&dyn ToEnv> {
        vec![&self.postgres, &self.kafka, &self.jwt, &self.s3, &self.http]
    }
}
