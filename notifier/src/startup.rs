//! Start-up as a value: build connects (running the migrations), prepares
//! the topics, joins the consumer group and binds; run consumes, fires the
//! schedule and serves the API until stopped.

use std::sync::{Arc, Mutex};

use access::TokenVerifier;
use anyhow::Context;
use axum::extract::FromRef;
use axum::Router;
use events::kafka;
use events::topics::Topics;
use futures::FutureExt;
use service::config::ExposeSecret;
use service::health::Readiness;
use service::openapi::BearerAuth;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::consumer::EventLoop;
use crate::delivery::{DispatchSettings, Dispatcher, RetryPolicy};
use crate::email::EmailSender;
use crate::retention::Retention;
use crate::scheduler::Scheduler;
use crate::webhooks::sender::WebhookSender;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: TokenVerifier,
    /// The shortest reminder lead time a user may set, in seconds.
    pub min_lead_seconds: u32,
    /// See [`Config::catch_up`].
    pub catch_up: chrono::Duration,
    /// See [`crate::config::WebhookSettings::allow_private`].
    pub webhooks_allow_private: bool,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Whether each background loop (consumer, scheduler, dispatchers,
/// retention) still runs: a loop only ends on shutdown, so one that ended
/// otherwise (a panic) makes `/readyz` fail, naming it.
#[derive(Clone, Default)]
struct Loops(Arc<Mutex<Vec<&'static str>>>);

impl Loops {
    /// Runs `work` as the loop `name`, noting if it ends.
    fn spawn<F>(&self, name: &'static str, work: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let ended = self.0.clone();
        tokio::spawn(async move {
            let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
            ended.lock().unwrap_or_else(|e| e.into_inner()).push(name);
            if outcome.is_err() {
                tracing::error!(task = name, "a background loop panicked");
            }
        })
    }

    fn check(&self) -> Result<(), String> {
        let ended = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_empty() {
            Ok(())
        } else {
            Err(format!("stopped: {}", ended.join(", ")))
        }
    }
}

pub struct Application {
    loops: Loops,
    listener: TcpListener,
    router: Router,
    http_limits: service::http::Limits,
    events: EventLoop,
    scheduler: Scheduler,
    email: Dispatcher<EmailSender>,
    webhooks: Dispatcher<WebhookSender>,
    retention: Retention,
}

impl Application {
    /// Connects to Postgres (and migrates), creates the Kafka topics if
    /// needed, joins the consumer group, binds the port. `verifier`
    /// overrides the JWKS fetch (tests).
    pub async fn build(config: Config, verifier: Option<TokenVerifier>) -> anyhow::Result<Self> {
        let pool = events::store::connect_and_migrate(
            config.postgres.url.expose_secret(),
            pool_size(&config),
        )
        .await?;
        let topics = Topics::with_prefix(config.kafka.topic_prefix.clone());
        kafka::ensure_topics(&config.kafka.brokers, &topics)
            .await
            .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", config.kafka.brokers))?;
        let catch_up = chrono::Duration::from_std(config.catch_up)
            .context("configuration: NOTIFIER_CATCH_UP_SECONDS: out of range")?;
        let consumer = crate::consumer::consumer(&config.kafka.brokers, &config.group_id)?;
        let events = EventLoop::new(consumer, pool.clone(), topics, catch_up)?;
        let verifier = match verifier {
            Some(v) => v,
            None => {
                TokenVerifier::from_jwks_url(
                    &config.jwt.jwks_url,
                    &config.jwt.issuer,
                    &config.jwt.audience,
                )
                .await?
            }
        };
        // Deactivations apply here as soon as auth has recorded them.
        let verifier = access::accounts::AccountDirectory::attach(verifier, &pool)
            .await
            .context("postgres: cannot read the accounts")?;
        let listener = service::http::bind(config.listen_addr).await?;
        let loops = Loops::default();
        let readiness = readiness(&pool, &config.kafka.brokers, &loops);
        let state = AppState {
            pool: pool.clone(),
            verifier,
            min_lead_seconds: config.min_lead_seconds,
            catch_up,
            webhooks_allow_private: config.webhooks.allow_private,
        };
        let router = service::http::finish(routes(state, readiness));
        let from = config
            .email
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("configuration: NOTIFIER_EMAIL_FROM: {e}"))?;
        let email_sender = EmailSender::new(&config.email.smtp_url, from, config.email.timeout)
            .map_err(|e| anyhow::anyhow!("configuration: NOTIFIER_SMTP_URL: {e}"))?;
        let email = Dispatcher {
            pool: pool.clone(),
            sender: std::sync::Arc::new(email_sender),
            settings: DispatchSettings {
                concurrency: config.email.concurrency,
                per_target: config.email.concurrency,
                lease: lease_for(config.email.timeout),
                tick: config.tick,
                retry: RetryPolicy {
                    base: config.retry_base,
                    max_delay: config.retry_max_delay,
                    window: config.email.retry_window,
                },
            },
        };
        let webhook_sender =
            WebhookSender::new(&config.webhooks).context("cannot build the webhook HTTP client")?;
        let webhooks = Dispatcher {
            pool: pool.clone(),
            sender: std::sync::Arc::new(webhook_sender),
            settings: DispatchSettings {
                concurrency: config.webhooks.concurrency,
                per_target: config.webhooks.per_endpoint,
                lease: lease_for(config.webhooks.timeout),
                tick: config.tick,
                retry: RetryPolicy {
                    base: config.retry_base,
                    max_delay: config.retry_max_delay,
                    window: config.webhooks.retry_window,
                },
            },
        };
        Ok(Application {
            loops,
            listener,
            router,
            http_limits: config.http,
            events,
            retention: Retention {
                pool: pool.clone(),
                keep: config.retention,
                every: config.retention_sweep,
            },
            scheduler: Scheduler {
                pool,
                tick: config.tick,
                late_after: config.late_after,
                catch_up: config.catch_up,
            },
            email,
            webhooks,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes, fires and serves until `shutdown`; the batch in hand is
    /// finished and committed, and the scheduler round in hand committed,
    /// before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let loops = &self.loops;
        let consuming = loops.spawn("consumer", self.events.run(shutdown.clone()));
        let firing = loops.spawn("scheduler", self.scheduler.run(shutdown.clone()));
        let emailing = loops.spawn("e-mail dispatcher", self.email.run(shutdown.clone()));
        let posting = loops.spawn("webhook dispatcher", self.webhooks.run(shutdown.clone()));
        let sweeping = loops.spawn("retention", self.retention.run(shutdown.clone()));
        let served = service::http::serve_with(
            self.listener,
            self.router,
            shutdown.clone(),
            self.http_limits,
        )
        .await;
        shutdown.cancel();
        for (what, task) in [
            ("consumer", consuming),
            ("scheduler", firing),
            ("e-mail dispatcher", emailing),
            ("webhook dispatcher", posting),
            ("retention", sweeping),
        ] {
            // A panic was logged and noted by `Loops::spawn`.
            if task.await.is_err() {
                tracing::error!("the {what} loop was cancelled");
            }
        }
        served
    }
}

/// Connections for the consumer, the scheduler and the API (10), plus one
/// per delivery that may be recording its outcome at once, so that no
/// outcome waits for a connection past its lease; at most 100.
fn pool_size(config: &Config) -> u32 {
    let deliveries = config.email.concurrency + config.webhooks.concurrency;
    u32::try_from(10 + deliveries).unwrap_or(u32::MAX).min(100)
}

/// A claim's lease for a channel whose one attempt takes at most
/// `timeout`: the attempt is abandoned at 80 % of the lease, so it ends
/// (and is recorded) before the row can be claimed again.
fn lease_for(timeout: std::time::Duration) -> std::time::Duration {
    timeout.mul_f64(1.5) + std::time::Duration::from_secs(2)
}

/// The API routes (documented), `/openapi.json`, and health.
fn routes(state: AppState, readiness: Readiness) -> Router {
    let (api, doc) = documented_routes(readiness);
    api.merge(service::openapi::routes(doc)).with_state(state)
}

/// The API routes and health, and the OpenAPI document describing them: the
/// one `/openapi.json` serves and [`crate::openapi`] returns.
pub(crate) fn documented_routes(
    readiness: Readiness,
) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::api::list_notifications))
        .routes(routes!(crate::api::mark_read))
        .routes(routes!(crate::api::mark_all_read))
        .routes(routes!(crate::api::get_settings, crate::api::put_settings))
        .routes(routes!(
            crate::webhooks::api::create_webhook,
            crate::webhooks::api::list_webhooks
        ))
        .routes(routes!(
            crate::webhooks::api::get_webhook,
            crate::webhooks::api::update_webhook,
            crate::webhooks::api::delete_webhook
        ))
        .routes(routes!(crate::webhooks::api::list_deliveries))
        .routes(routes!(crate::webhooks::api::retry_delivery))
        .merge(service::health::documented_routes(readiness))
        .split_for_parts();
    let doc = service::openapi::finish_document(
        doc,
        "taskstream notifier",
        "The caller's inbox (due-date reminders, overdue notices, assignments, project \
         membership), notification settings, and signed webhooks (the caller's own and \
         their projects'); only one's own notifications.",
    );
    (api, doc)
}

fn readiness(pool: &PgPool, brokers: &str, loops: &Loops) -> Readiness {
    let pool = pool.clone();
    let brokers = brokers.to_owned();
    let loops = loops.clone();
    Readiness::new()
        .check("loops", move || {
            let alive = loops.check();
            async move { alive }.boxed()
        })
        .check("postgres", move || {
            let pool = pool.clone();
            async move { events::store::ping(&pool).await }.boxed()
        })
        .check("kafka", move || {
            let brokers = brokers.clone();
            async move { kafka::ping(&brokers).await }.boxed()
        })
}

/// The OpenAPI document's frame: schemas and tags. Paths come from the
/// handlers' `#[utoipa::path]`.
#[derive(OpenApi)]
#[openapi(
    components(schemas(
        crate::api::NotificationResource,
        crate::api::NotificationPage,
        crate::api::DeliveryResource,
        crate::api::NotificationKind,
        crate::api::NotificationSettings,
        crate::api::NotificationSettingsRequest,
        crate::webhooks::api::WebhookEvent,
        crate::webhooks::api::WebhookResource,
        crate::webhooks::api::WebhookCreated,
        crate::webhooks::api::WebhookList,
        crate::webhooks::api::CreateWebhookRequest,
        crate::webhooks::api::UpdateWebhookRequest,
        crate::webhooks::api::WebhookDeliveryResource,
        crate::webhooks::api::WebhookDeliveryPage,
        service::Problem,
        service::FieldError,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "notifications", description = "The caller's inbox and notification settings"),
        (name = "webhooks", description = "Signed HTTP deliveries of notifications to the caller's endpoints and their projects'")
    )
)]
struct ApiDoc;

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_loop_that_ended_makes_readiness_fail_naming_it() {
        let loops = super::Loops::default();
        loops.spawn("steady", std::future::pending()).abort();
        assert_eq!(loops.check(), Ok(()));
        loops
            .spawn("fragile", async { panic!("boom") })
            .await
            .unwrap();
        assert_eq!(loops.check(), Err("stopped: fragile".to_owned()));
    }

    #[test]
    fn the_document_describes_every_route() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        for (path, method, code) in [
            ("/notifications", "get", "200"),
            ("/notifications/{id}/read", "post", "404"),
            ("/notifications/read-all", "post", "204"),
            ("/me/notification-settings", "get", "200"),
            ("/me/notification-settings", "put", "422"),
            ("/webhooks", "post", "201"),
            ("/webhooks", "get", "200"),
            ("/webhooks/{id}", "get", "404"),
            ("/webhooks/{id}", "patch", "422"),
            ("/webhooks/{id}", "delete", "204"),
            ("/webhooks/{id}/deliveries", "get", "200"),
        ] {
            let op = &doc["paths"][path][method];
            let tag = if path.starts_with("/webhooks") {
                "webhooks"
            } else {
                "notifications"
            };
            assert_eq!(op["tags"][0], tag, "{method} {path}");
            assert!(op["responses"][code].is_object(), "{method} {path} {code}");
        }
        for s in [
            "NotificationPage",
            "NotificationResource",
            "NotificationSettings",
            "WebhookCreated",
            "WebhookDeliveryPage",
        ] {
            assert!(doc["components"]["schemas"][s].is_object(), "{s}");
        }
    }
}
