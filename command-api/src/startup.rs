//! Start-up as a value: build binds the port and connects; run serves.

use access::TokenVerifier;
use axum::extract::FromRef;
use axum::Router;
use events::kafka;
use events::relay::{OutboxRelay, RelayConfig};
use events::topics::Topics;
use futures::FutureExt;
use service::config::ExposeSecret;
use service::health::Readiness;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::idempotency;
use crate::write_limit::{self, WriteLimiter};

/// Postgres connections of the request path per command-api process.
pub const POOL_SIZE: u32 = 20;
/// Postgres connections of the outbox relay (it also holds its lock and
/// listener connections).
pub const RELAY_POOL_SIZE: u32 = 3;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: TokenVerifier,
    pub write_limiter: WriteLimiter,
    /// Live tasks one user may have at once.
    pub max_live_tasks: u32,
    pub project_limits: crate::projects::Limits,
    /// Where attachments' bytes live.
    pub store: objects::ObjectStore,
    pub attachment_limits: crate::attachments::Limits,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    http_limits: service::http::Limits,
    write_limiter: WriteLimiter,
    relay: OutboxRelay,
    cleanup_pool: PgPool,
    store: objects::ObjectStore,
    upload_ttl: std::time::Duration,
    sweep_every: Option<std::time::Duration>,
    /// An object older than this with no row is an orphan: the URL
    /// lifetime plus the grace.
    settle: std::time::Duration,
}

impl Application {
    /// Connects to Postgres (and migrates), prepares Kafka, fetches the
    /// token keys, binds the port. `verifier` overrides the JWKS fetch (tests).
    pub async fn build(config: Config, verifier: Option<TokenVerifier>) -> anyhow::Result<Self> {
        let pool =
            events::store::connect_and_migrate(config.postgres.url.expose_secret(), POOL_SIZE)
                .await?;
        let topics = Topics::with_prefix(config.kafka.topic_prefix.clone());
        kafka::ensure_topics(&config.kafka.brokers, &topics)
            .await
            .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", config.kafka.brokers))?;
        let producer = kafka::producer(&config.kafka.brokers)?;
        // The relay gets connections of its own: queued behind a burst of
        // requests in the shared pool, publication would lag behind the load.
        let relay_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(RELAY_POOL_SIZE)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy_with((*pool.connect_options()).clone());
        let relay = OutboxRelay::new(relay_pool, producer, topics, RelayConfig::default());
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
        // Deactivations and role changes apply here as soon as auth has
        // recorded them, not when the caller's token expires.
        let verifier = access::accounts::AccountDirectory::attach(verifier, &pool)
            .await
            .map_err(|e| anyhow::anyhow!("postgres: cannot read the accounts: {e}"))?;
        let listener = service::http::bind(config.listen_addr).await?;
        let readiness = readiness(&pool);
        let cleanup_pool = pool.clone();
        let write_limiter = write_limit::limiter(config.write_quota);
        let store = objects::ObjectStore::new(&config.s3)
            .map_err(|e| anyhow::anyhow!("configuration: COMMAND_API_S3_URL: {e}"))?;
        let state = AppState {
            pool,
            verifier,
            write_limiter: write_limiter.clone(),
            max_live_tasks: config.max_live_tasks.get(),
            project_limits: crate::projects::Limits {
                max_members: config.projects.max_members.get(),
                max_projects_per_user: config.projects.max_projects_per_user.get(),
            },
            store: store.clone(),
            attachment_limits: config.attachments.clone(),
        };
        let (tasks, openapi) = api::routes(readiness);
        let router = service::http::finish(
            Router::from(tasks)
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    write_limit::limit_writes,
                ))
                .merge(service::openapi::routes(openapi))
                .with_state(state),
        );
        Ok(Application {
            listener,
            router,
            http_limits: config.http.clone(),
            write_limiter,
            relay,
            cleanup_pool,
            store,
            upload_ttl: config.attachments.upload_ttl,
            sweep_every: config.attachments.sweep_every,
            settle: config.s3.presign_expiry + config.attachments.upload_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves and relays events until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let cleanup = tokio::spawn(idempotency::clean_up_until(
            self.cleanup_pool.clone(),
            shutdown.clone(),
        ));
        // The object store is not a readiness dependency: while it is down
        // only attachments answer 503; these loops wait for it.
        let bucket = tokio::spawn(crate::attachments::ensure_bucket_until(
            self.store.clone(),
            shutdown.clone(),
        ));
        let sweep = self.sweep_every.map(|every| {
            tokio::spawn(crate::attachments::sweep_orphans_until(
                self.cleanup_pool.clone(),
                self.store.clone(),
                every,
                self.settle,
                shutdown.clone(),
            ))
        });
        let attachments = tokio::spawn(crate::attachments::clean_up_until(
            self.cleanup_pool,
            self.store,
            self.upload_ttl,
            crate::attachments::CLEANUP_TICK,
            shutdown.clone(),
        ));
        self.write_limiter
            .prune_every(std::time::Duration::from_secs(30), shutdown.clone());
        let served = service::http::serve_with(
            self.listener,
            self.router,
            shutdown.clone(),
            self.http_limits,
        )
        .await;
        shutdown.cancel();
        let _ = relay.await;
        let _ = cleanup.await;
        let _ = bucket.await;
        let _ = attachments.await;
        if let Some(sweep) = sweep {
            let _ = sweep.await;
        }
        served
    }
}

/// Ready means "can serve its requests": every write needs Postgres, and
/// only Postgres. Kafka is not checked: while it is down, writes still
/// commit to the event store and wait in the outbox for the relay, so an
/// orchestrator must not take command-api out of service for it (the
/// relay's lag and errors show in `/metrics`).
fn readiness(pool: &PgPool) -> Readiness {
    let pool = pool.clone();
    Readiness::new().check("postgres", move || {
        let pool = pool.clone();
        async move { events::store::ping(&pool).await }.boxed()
    })
}
