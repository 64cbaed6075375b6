//! Start-up as a value: build connects and binds; run serves.

use std::time::Duration;

use access::TokenVerifier;
use anyhow::Context;
use axum::extract::FromRef;
use axum::Router;
use futures::FutureExt;
use mongodb::Database;
use service::config::ExposeSecret;
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
    /// Permits for reads waiting on a consistency token (see `consistency`).
    pub token_waits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Where attachments' bytes live (downloads are presigned GETs).
    pub store: objects::ObjectStore,
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
}

impl Application {
    /// `verifier` overrides the JWKS fetch (tests).
    pub async fn build(config: Config, verifier: Option<TokenVerifier>) -> anyhow::Result<Self> {
        if config.cursor_secret.expose_secret().is_empty() {
            anyhow::bail!("configuration: QUERY_API_CURSOR_SECRET: must not be empty");
        }
        let cursor_key = CursorKey::new(config.cursor_secret.expose_secret())
            .map_err(|e| anyhow::anyhow!("configuration: QUERY_API_CURSOR_SECRET: {e}"))?;
        let db =
            read_model::mongo::connect(config.mongo.url.expose_secret(), &config.mongo.database)
                .await?;
        let pool =
            events::store::connect_and_migrate(config.postgres.url.expose_secret(), 10).await?;
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
            .context("postgres: cannot read the accounts")?;
        let store = objects::ObjectStore::new(&config.s3)
            .map_err(|e| anyhow::anyhow!("configuration: QUERY_API_S3_URL: {e}"))?;
        let listener = service::http::bind(config.listen_addr).await?;
        let readiness = readiness(&db, &pool);
        let state = AppState {
            db,
            pool,
            verifier,
            cursor_key,
            consistency_timeout: config.consistency_timeout,
            token_waits: std::sync::Arc::new(tokio::sync::Semaphore::new(
                crate::consistency::MAX_TOKEN_WAITS,
            )),
            store,
        };
        let router = service::http::finish(routes(state, readiness));
        Ok(Application {
            listener,
            router,
            http_limits: config.http,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        service::http::serve_with(self.listener, self.router, shutdown, self.http_limits).await
    }
}

/// The API routes (documented in the OpenAPI document), `/openapi.json`,
/// and health.
pub fn routes(state: AppState, readiness: Readiness) -> Router {
    let (api, doc) = documented_routes(readiness);
    api.merge(service::openapi::routes(doc)).with_state(state)
}

/// The API routes and health, and the OpenAPI document describing them: the
/// one `/openapi.json` serves and [`crate::openapi`] returns.
pub(crate) fn documented_routes(
    readiness: Readiness,
) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (api, doc) = api_routes()
        .merge(service::health::documented_routes(readiness))
        .split_for_parts();
    let doc = service::openapi::finish_document(
        doc,
        "taskstream query-api",
        "Filtered, paginated reads over the task and project views, task history, analytics; \
         access follows project membership; read-your-writes via X-Consistency-Token.",
    );
    (api, doc)
}

fn readiness(db: &Database, pool: &PgPool) -> Readiness {
    let db = db.clone();
    let pool = pool.clone();
    Readiness::new()
        .check("mongodb", move || {
            let db = db.clone();
            async move { read_model::mongo::ping(&db).await }.boxed()
        })
        .check("postgres", move || {
            let pool = pool.clone();
            async move { events::store::ping(&pool).await }.boxed()
        })
}

/// The documented API routes; their `#[utoipa::path]`s make the document.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::tasks::list_tasks))
        .routes(routes!(crate::tasks::get_task))
        .routes(routes!(crate::tasks::task_history))
        .routes(routes!(crate::attachments::list_attachments))
        .routes(routes!(crate::attachments::download_attachment))
        .routes(routes!(crate::analytics::get_summary))
        .routes(routes!(crate::analytics::get_cycle_time))
        .routes(routes!(crate::analytics::get_throughput))
        .routes(routes!(crate::analytics::get_assignees))
        .routes(routes!(crate::projects::list_projects))
        .routes(routes!(crate::projects::get_project))
        .routes(routes!(crate::projects::list_members))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_describes_the_list_parameters_with_their_values() {
        let doc = serde_json::to_value(super::api_routes().into_openapi()).unwrap();
        let params = doc["paths"]["/tasks"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let param = |name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{name} undocumented"))
                .clone()
        };
        let text = |v: serde_json::Value| v.to_string();
        assert!(
            text(param("status")).contains("in_progress"),
            "{}",
            param("status")
        );
        assert!(
            text(param("priority")).contains("urgent"),
            "{}",
            param("priority")
        );
        assert!(text(param("sort")).contains("-due_at"), "{}", param("sort"));
        assert_eq!(param("status")["explode"], false);
        for code in ["200", "400", "401", "504"] {
            assert!(
                doc["paths"]["/tasks"]["get"]["responses"][code].is_object(),
                "{code}"
            );
        }
        assert!(doc["paths"]["/tasks/{id}"]["get"]["responses"]["304"].is_object());
        for p in ["project_id", "assignee", "owner_id"] {
            param(p);
        }
    }

    #[test]
    fn the_document_describes_projects_and_assignee_analytics() {
        let doc = serde_json::to_value(super::api_routes().into_openapi()).unwrap();
        for path in ["/projects", "/projects/{id}", "/projects/{id}/members"] {
            let get = &doc["paths"][path]["get"];
            assert_eq!(get["tags"][0], "projects", "{path}");
            assert!(get["responses"]["200"].is_object(), "{path}");
            if path != "/projects" {
                assert!(get["responses"]["404"].is_object(), "{path}");
            }
        }
        assert!(doc["paths"]["/projects/{id}"]["get"]["responses"]["304"].is_object());
        let assignees = &doc["paths"]["/analytics/assignees"]["get"];
        assert!(assignees["responses"]["404"].is_object());
        assert!(assignees["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "project_id"));
        let schemas = &doc["components"]["schemas"];
        for s in [
            "ProjectResource",
            "MemberResource",
            "ProjectPage",
            "MemberList",
            "HistoryItem",
            "AssigneeReport",
        ] {
            assert!(schemas[s].is_object(), "{s}");
        }
    }
}
