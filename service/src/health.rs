//! `GET /healthz` (the process is alive), `GET /readyz` (its dependencies
//! answer), `GET /metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// The dependency checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Arc<CheckFn>)>,
}

/// How long one dependency may take to answer before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; it should make a real round trip (a query, not a
    /// port probe). Its error is shown in `/readyz` as its message.
    pub fn check<F, E>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), E>> + Send + Sync + 'static,
        E: std::fmt::Display + 'static,
    {
        let check = move || {
            let outcome = f();
            async move { outcome.await.map_err(|e| e.to_string()) }.boxed()
        };
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`].
    pub async fn run(&self) -> Vec<(&'static str, Result<(), String>)> {
        let futures = self.checks.iter().map(|(name, f)| {
            let fut = f();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                (*name, outcome)
            }
        });
        join_all(futures).await
    }
}

/// Routes `/healthz`, `/readyz` and `/metrics`, undocumented (the
/// projector's admin port has no API document).
pub fn routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    let (router, _) = documented_routes(readiness).split_for_parts();
    router
}

/// The same routes with their OpenAPI operations, for services that
/// publish a document: merge into the service's `OpenApiRouter`.
pub fn documented_routes<S: Clone + Send + Sync + 'static>(
    readiness: Readiness,
) -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .layer(Extension(readiness))
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive", body = Object))
)]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "alive" }))
}

/// Readiness: every dependency answered a real query within its time limit.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = Object),
        (status = 503, description = "A dependency did not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(Extension(readiness): Extension<Readiness>) -> Response {
    ready(&readiness).await
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics() -> Response {
    crate::metrics::render().await
}

async fn ready(readiness: &Readiness) -> Response {
    let results = readiness.run().await;
    let mut checks = serde_json::Map::new();
    let mut failed = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Ok(()) => {
                checks.insert(name.into(), json!("ok"));
            }
            Err(e) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                checks.insert(name.into(), json!(e));
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        (
            StatusCode::OK,
            axum::Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        Problem::unavailable(format!("not ready: {} did not answer", failed.join(", ")))
            .with_extension("checks", checks)
            .into_response()
    }
}
