//! Start-up as a value: build connects and binds; run serves.

use std::time::Duration;

use auth::TokenVerifier;
use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use futures::FutureExt;
use mongodb::Database;
use service::health::Readiness;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::cursor::CursorKey;
use crate::openapi::ApiDoc;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub pool: PgPool,
    pub verifier: TokenVerifier,
    pub cursor_key: CursorKey,
    /// Bound on a read's wait for its consistency token.
    pub consistency_timeout: Duration,
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
        if config.cursor_secret.is_empty() {
            anyhow::bail!("configuration: QUERY_API_CURSOR_SECRET: must not be empty");
        }
        let cursor_key = CursorKey::new(&config.cursor_secret)
            .map_err(|e| anyhow::anyhow!("configuration: QUERY_API_CURSOR_SECRET: {e}"))?;
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
        let state = AppState {
            db,
            pool,
            verifier,
            cursor_key,
            consistency_timeout: config.consistency_timeout,
        };
        let router = service::http::finish(routes(state, readiness));
        Ok(Application { listener, router })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        service::http::serve(self.listener, self.router, shutdown).await
    }
}

/// The API routes (documented in the OpenAPI document), `/openapi.json`,
/// and health.
pub fn routes(state: AppState, readiness: Readiness) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::tasks::list_tasks))
        .routes(routes!(crate::tasks::get_task))
        .routes(routes!(crate::tasks::task_history))
        .split_for_parts();
    let doc = std::sync::Arc::new(doc);
    api.route(
        "/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .merge(service::health::routes(readiness))
    .with_state(state)
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
