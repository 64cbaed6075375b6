//! Start-up as a value: build connects and binds; run serves.

use auth::TokenVerifier;
use axum::extract::FromRef;
use axum::Router;
use futures::FutureExt;
use mongodb::Database;
use service::health::Readiness;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub pool: PgPool,
    pub verifier: TokenVerifier,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// `verifier` overrides the JWKS fetch (tests).
    pub async fn build(config: Config, verifier: Option<TokenVerifier>) -> anyhow::Result<Self> {
        let db = projector::mongo::connect(&config.mongodb_url, &config.mongodb_database)
            .await
            .map_err(anyhow::Error::msg)?;
        let pool = events::store::connect_and_migrate(&config.database_url, 10)
            .await
            .map_err(anyhow::Error::msg)?;
        let verifier = match verifier {
            Some(v) => v,
            None => {
                TokenVerifier::from_jwks_url(
                    &config.jwks_url,
                    &config.jwt_issuer,
                    &config.jwt_audience,
                )
                .await?
            }
        };
        let listener = service::http::bind(config.listen_addr).await?;
        let readiness = readiness(&db, &pool);
        let state = AppState { db, pool, verifier };
        let router = service::http::finish(
            Router::new()
                .merge(service::health::routes(readiness))
                .with_state(state),
        );
        Ok(Application { listener, router })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        service::http::serve(self.listener, self.router, shutdown).await
    }
}

fn readiness(db: &Database, pool: &PgPool) -> Readiness {
    let db = db.clone();
    let pool = pool.clone();
    Readiness::new()
        .check("mongodb", move || {
            let db = db.clone();
            async move { projector::mongo::ping(&db).await }.boxed()
        })
        .check("postgres", move || {
            let pool = pool.clone();
            async move { events::store::ping(&pool).await }.boxed()
        })
}
