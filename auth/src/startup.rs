//! Start-up as a value: build binds the port and connects; run serves.

use std::sync::Arc;

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

use crate::config::Config;
use crate::keys::SigningKeys;
use crate::rate_limit::AttemptLimits;
use crate::tokens::ACCESS_TOKEN_TTL;
use access::TokenVerifier;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SigningKeys,
    pub config: Config,
    /// Verifies access tokens against auth's own keys (no JWKS round trip).
    pub verifier: TokenVerifier,
    pub limits: Arc<AttemptLimits>,
    /// What logins for unknown emails verify against (see [`crate::password::dummy_hash`]).
    pub dummy_hash: Arc<str>,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    relay: OutboxRelay,
    limits: Arc<AttemptLimits>,
    http: service::http::Limits,
}

impl Application {
    /// Connects to Postgres (and migrates), prepares Kafka, binds the port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let keys = SigningKeys::from_pem_file(&config.signing_key_path)?;
        let pool =
            events::store::connect_and_migrate(config.postgres.url.expose_secret(), 10).await?;
        let filled = crate::users::backfill_skeletons(&pool).await?;
        if filled > 0 {
            tracing::info!(accounts = filled, "email skeletons filled in");
        }
        let topics = Topics::with_prefix(config.kafka.topic_prefix.clone());
        kafka::ensure_topics(&config.kafka.brokers, &topics)
            .await
            .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", config.kafka.brokers))?;
        let producer = kafka::producer(&config.kafka.brokers)?;
        let relay = OutboxRelay::new(pool.clone(), producer, topics, RelayConfig::default());
        let verifier = TokenVerifier::from_jwks(&keys.jwks(), &config.issuer, &config.audience)?
            .with_max_lifetime(ACCESS_TOKEN_TTL.to_std()?);
        let limits = Arc::new(AttemptLimits::new(
            config.rate_limit_per_minute,
            config.rate_limit_per_email_per_minute,
            config.rate_limit_capacity,
        ));
        let dummy_hash = crate::password::dummy_hash().await?.into();
        let listener = service::http::bind(config.listen_addr).await?;
        let http = config.http.clone();
        let state = AppState {
            pool,
            keys,
            config,
            verifier,
            limits: limits.clone(),
            dummy_hash,
        };
        let router = service::http::finish(routes(state));
        Ok(Application {
            listener,
            router,
            relay,
            limits,
            http,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves and relays events until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        crate::rate_limit::spawn_pruning(&self.limits, shutdown.clone());
        let served =
            service::http::serve_with(self.listener, self.router, shutdown.clone(), self.http)
                .await;
        shutdown.cancel();
        let _ = relay.await;
        served
    }
}

/// Ready means "can serve its requests": every account change and login
/// needs Postgres. Kafka is not checked: user events wait in the outbox
/// while it is down, so auth keeps serving.
fn readiness(state: &AppState) -> Readiness {
    let pool = state.pool.clone();
    Readiness::new().check("postgres", move || {
        let pool = pool.clone();
        async move { events::store::ping(&pool).await }.boxed()
    })
}

fn routes(state: AppState) -> Router {
    let (api, openapi) = crate::api::routes(readiness(&state));
    api.merge(service::openapi::routes(openapi))
        .with_state(state)
}
