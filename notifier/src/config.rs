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

/// How often the scheduler and the dispatchers look for due rows, unless
/// configured.
pub const DEFAULT_TICK: Duration = Duration::from_millis(250);

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
    /// `NOTIFIER_TICK_MS`: how often the scheduler (and each dispatcher)
    /// looks for due rows, default [`DEFAULT_TICK`].
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
    pub email: EmailSettings,
    pub webhooks: WebhookSettings,
    /// `NOTIFIER_RETRY_BASE_MS` (default 5000) and
    /// `NOTIFIER_RETRY_MAX_DELAY_SECONDS` (default 3600): a failed delivery
    /// is retried after about the base, then twice as long each time, never
    /// longer than the maximum, with jitter.
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
    /// `NOTIFIER_RETENTION_DAYS` (default 90, at most 3650): how long
    /// notifications (with their deliveries) and finished schedule rows
    /// are kept. Longer than the catch-up window plus the longest retry
    /// window, so that nothing deleted can be caused again.
    pub retention: Duration,
    /// `NOTIFIER_RETENTION_SWEEP_SECONDS` (default 3600): how often what
    /// is past the retention is deleted.
    pub retention_sweep: Duration,
}

/// E-mail over SMTP.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `NOTIFIER_SMTP_URL`, default `smtp://127.0.0.1:1025` (the local
    /// Mailpit): `smtp://host:port`, `?tls=required` for STARTTLS,
    /// `smtps://` for TLS, `user:password@` to log in.
    pub smtp_url: String,
    /// `NOTIFIER_EMAIL_FROM`, default `taskstream <notifications@taskstream.localhost>`;
    /// its domain is every `Message-ID`'s.
    pub from: String,
    /// `NOTIFIER_EMAIL_TIMEOUT_MS`: one SMTP exchange at most, default 10000.
    pub timeout: Duration,
    /// `NOTIFIER_EMAIL_CONCURRENCY`: messages in flight at once, default 4.
    pub concurrency: usize,
    /// `NOTIFIER_EMAIL_RETRY_WINDOW_SECONDS`: an e-mail is retried for this
    /// long after its first attempt (default 259200, three days), then
    /// marked failed.
    pub retry_window: Duration,
}

/// Outgoing webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `NOTIFIER_WEBHOOK_TIMEOUT_MS`: one request at most, default 10000.
    pub timeout: Duration,
    /// `NOTIFIER_WEBHOOK_CONCURRENCY`: requests in flight at once, default 64.
    pub concurrency: usize,
    /// `NOTIFIER_WEBHOOK_PER_ENDPOINT`: requests in flight to one endpoint
    /// at once, default 4; one while the endpoint's last attempt failed. A
    /// slow endpoint holds only these, a dead one a single slot.
    pub per_endpoint: usize,
    /// `NOTIFIER_WEBHOOK_RETRY_WINDOW_SECONDS`: a delivery is retried for
    /// this long after its first attempt (default 86400), then it fails and
    /// the endpoint is disabled.
    pub retry_window: Duration,
    /// `NOTIFIER_WEBHOOK_MAX_RESPONSE_BYTES`: the most of an answer read,
    /// default 65536.
    pub max_response_bytes: usize,
    /// `NOTIFIER_WEBHOOK_ALLOW_PRIVATE`: whether endpoints may be on
    /// loopback, private, link-local or other non-public addresses; default
    /// false.
    pub allow_private: bool,
}

impl Default for WebhookSettings {
    /// Production's defaults (see each field).
    fn default() -> Self {
        WebhookSettings {
            timeout: Duration::from_secs(10),
            concurrency: 64,
            per_endpoint: 4,
            retry_window: Duration::from_secs(86_400),
            max_response_bytes: 65_536,
            allow_private: false,
        }
    }
}

// The notifier's own variables, after `NOTIFIER_`.
const LISTEN_ADDR: &str = "LISTEN_ADDR";
const GROUP_ID: &str = "GROUP_ID";
const TICK_MS: &str = "TICK_MS";
const LATE_AFTER_SECONDS: &str = "LATE_AFTER_SECONDS";
const CATCH_UP_SECONDS: &str = "CATCH_UP_SECONDS";
const MIN_LEAD_SECONDS: &str = "MIN_LEAD_SECONDS";
const RETRY_BASE_MS: &str = "RETRY_BASE_MS";
const RETRY_MAX_DELAY_SECONDS: &str = "RETRY_MAX_DELAY_SECONDS";
const SMTP_URL: &str = "SMTP_URL";
const EMAIL_FROM: &str = "EMAIL_FROM";
const EMAIL_TIMEOUT_MS: &str = "EMAIL_TIMEOUT_MS";
const EMAIL_CONCURRENCY: &str = "EMAIL_CONCURRENCY";
const EMAIL_RETRY_WINDOW_SECONDS: &str = "EMAIL_RETRY_WINDOW_SECONDS";
const WEBHOOK_TIMEOUT_MS: &str = "WEBHOOK_TIMEOUT_MS";
const WEBHOOK_CONCURRENCY: &str = "WEBHOOK_CONCURRENCY";
const WEBHOOK_PER_ENDPOINT: &str = "WEBHOOK_PER_ENDPOINT";
const WEBHOOK_RETRY_WINDOW_SECONDS: &str = "WEBHOOK_RETRY_WINDOW_SECONDS";
const WEBHOOK_MAX_RESPONSE_BYTES: &str = "WEBHOOK_MAX_RESPONSE_BYTES";
const WEBHOOK_ALLOW_PRIVATE: &str = "WEBHOOK_ALLOW_PRIVATE";
const RETENTION_DAYS: &str = "RETENTION_DAYS";
const RETENTION_SWEEP_SECONDS: &str = "RETENTION_SWEEP_SECONDS";

const DAY: u64 = 86_400;

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
        let hooks = WebhookSettings::default();
        let email_retry_window: u64 = env_or(&own(EMAIL_RETRY_WINDOW_SECONDS), 259_200u64)?;
        let webhook_retry_window: u64 = env_or(
            &own(WEBHOOK_RETRY_WINDOW_SECONDS),
            hooks.retry_window.as_secs(),
        )?;
        let retention_days: u64 = env_or(&own(RETENTION_DAYS), 90u64)?;
        let needed = catch_up
            .saturating_add(email_retry_window.max(webhook_retry_window))
            .div_ceil(DAY)
            .saturating_add(1);
        if !(needed..=3650).contains(&retention_days) {
            return Err(ConfigError {
                var: own(RETENTION_DAYS),
                reason: format!(
                    "must be from {needed} (the catch-up window plus the longest retry \
                     window, and a day) to 3650"
                ),
            });
        }
        Ok(Config {
            listen_addr: env_or(&own(LISTEN_ADDR), SocketAddr::from(([127, 0, 0, 1], 8085)))?,
            postgres: PostgresSettings::from_env(PREFIX)?,
            kafka: KafkaSettings::from_env(PREFIX)?,
            group_id: env_or(&own(GROUP_ID), "taskstream-notifier".to_owned())?,
            jwt: JwtSettings::from_env(PREFIX)?,
            tick: Duration::from_millis(positive(
                TICK_MS,
                env_or(&own(TICK_MS), DEFAULT_TICK.as_millis() as u64)?,
            )?),
            late_after: Duration::from_secs(env_or(&own(LATE_AFTER_SECONDS), 60u64)?),
            catch_up: Duration::from_secs(catch_up),
            min_lead_seconds: min_lead,
            http: Limits::from_env(PREFIX)?,
            email: EmailSettings {
                smtp_url: env_or(&own(SMTP_URL), "smtp://127.0.0.1:1025".to_owned())?,
                from: env_or(
                    &own(EMAIL_FROM),
                    "taskstream <notifications@taskstream.localhost>".to_owned(),
                )?,
                timeout: Duration::from_millis(positive(
                    EMAIL_TIMEOUT_MS,
                    env_or(&own(EMAIL_TIMEOUT_MS), 10_000u64)?,
                )?),
                concurrency: positive(EMAIL_CONCURRENCY, env_or(&own(EMAIL_CONCURRENCY), 4u64)?)?
                    as usize,
                retry_window: Duration::from_secs(email_retry_window),
            },
            webhooks: WebhookSettings {
                timeout: Duration::from_millis(positive(
                    WEBHOOK_TIMEOUT_MS,
                    env_or(&own(WEBHOOK_TIMEOUT_MS), hooks.timeout.as_millis() as u64)?,
                )?),
                concurrency: positive(
                    WEBHOOK_CONCURRENCY,
                    env_or(&own(WEBHOOK_CONCURRENCY), hooks.concurrency as u64)?,
                )? as usize,
                per_endpoint: positive(
                    WEBHOOK_PER_ENDPOINT,
                    env_or(&own(WEBHOOK_PER_ENDPOINT), hooks.per_endpoint as u64)?,
                )? as usize,
                retry_window: Duration::from_secs(webhook_retry_window),
                max_response_bytes: positive(
                    WEBHOOK_MAX_RESPONSE_BYTES,
                    env_or(
                        &own(WEBHOOK_MAX_RESPONSE_BYTES),
                        hooks.max_response_bytes as u64,
                    )?,
                )? as usize,
                allow_private: env_or(&own(WEBHOOK_ALLOW_PRIVATE), hooks.allow_private)?,
            },
            retry_base: Duration::from_millis(positive(
                RETRY_BASE_MS,
                env_or(&own(RETRY_BASE_MS), 5_000u64)?,
            )?),
            retry_max_delay: Duration::from_secs(positive(
                RETRY_MAX_DELAY_SECONDS,
                env_or(&own(RETRY_MAX_DELAY_SECONDS), 3_600u64)?,
            )?),
            retention: Duration::from_secs(retention_days * DAY),
            retention_sweep: Duration::from_secs(positive(
                RETENTION_SWEEP_SECONDS,
                env_or(&own(RETENTION_SWEEP_SECONDS), 3_600u64)?,
            )?),
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
        RETRY_BASE_MS,
        RETRY_MAX_DELAY_SECONDS,
        SMTP_URL,
        EMAIL_FROM,
        EMAIL_TIMEOUT_MS,
        EMAIL_CONCURRENCY,
        EMAIL_RETRY_WINDOW_SECONDS,
        WEBHOOK_TIMEOUT_MS,
        WEBHOOK_CONCURRENCY,
        WEBHOOK_PER_ENDPOINT,
        WEBHOOK_RETRY_WINDOW_SECONDS,
        WEBHOOK_MAX_RESPONSE_BYTES,
        WEBHOOK_ALLOW_PRIVATE,
        RETENTION_DAYS,
        RETENTION_SWEEP_SECONDS,
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
            (RETRY_BASE_MS, self.retry_base.as_millis().to_string()),
            (
                RETRY_MAX_DELAY_SECONDS,
                self.retry_max_delay.as_secs().to_string(),
            ),
            (SMTP_URL, self.email.smtp_url.clone()),
            (EMAIL_FROM, self.email.from.clone()),
            (EMAIL_TIMEOUT_MS, self.email.timeout.as_millis().to_string()),
            (EMAIL_CONCURRENCY, self.email.concurrency.to_string()),
            (
                EMAIL_RETRY_WINDOW_SECONDS,
                self.email.retry_window.as_secs().to_string(),
            ),
            (
                WEBHOOK_TIMEOUT_MS,
                self.webhooks.timeout.as_millis().to_string(),
            ),
            (WEBHOOK_CONCURRENCY, self.webhooks.concurrency.to_string()),
            (WEBHOOK_PER_ENDPOINT, self.webhooks.per_endpoint.to_string()),
            (
                WEBHOOK_RETRY_WINDOW_SECONDS,
                self.webhooks.retry_window.as_secs().to_string(),
            ),
            (
                WEBHOOK_MAX_RESPONSE_BYTES,
                self.webhooks.max_response_bytes.to_string(),
            ),
            (
                WEBHOOK_ALLOW_PRIVATE,
                self.webhooks.allow_private.to_string(),
            ),
            (RETENTION_DAYS, (self.retention.as_secs() / DAY).to_string()),
            (
                RETENTION_SWEEP_SECONDS,
                self.retention_sweep.as_secs().to_string(),
            ),
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
        assert_eq!(config.retention, Duration::from_secs(90 * DAY));

        // A day of catch-up and three days of e-mail retries: a retention of
        // four days could delete what a replay would still cause.
        let (read, _) = read_from(&[kv("NOTIFIER_RETENTION_DAYS", 4)], Config::from_env);
        assert_eq!(
            read.expect_err("too short").to_string(),
            "configuration: NOTIFIER_RETENTION_DAYS: must be from 5 (the catch-up window \
             plus the longest retry window, and a day) to 3650"
        );
        let (read, _) = read_from(&[kv("NOTIFIER_RETENTION_DAYS", 5)], Config::from_env);
        assert_eq!(
            read.expect("5 days").retention,
            Duration::from_secs(5 * DAY)
        );

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
            kv("NOTIFIER_RETENTION_DAYS", 30),
        ];
        let (read, _) = read_from(&vars, Config::from_env);
        let written = read.expect("config").to_env();
        let (again, asked) = read_from(&written, || Config::from_env().map(|c| c.to_env()));
        assert_eq!(again.expect("read back"), written);
        let listed: std::collections::BTreeSet<String> = Config::vars().into_iter().collect();
        assert_eq!(asked, listed);
    }
}
