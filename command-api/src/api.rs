//! The REST edge: request bodies parsed into domain values (`bodies`), the
//! write's context gathered by one extractor (`write`), `If-Match`,
//! `Idempotency-Key`, `ETag`, `Location` and `X-Consistency-Token`
//! (`headers`), the task resource as answered (`responses`), problem+json
//! refusals (`errors`), the routes (`handlers`), and the OpenAPI document
//! describing all of it.

use events::{Priority, TaskStatus};
use service::{FieldError, Problem};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::startup::AppState;

mod bodies;
mod errors;
mod handlers;
mod headers;
mod responses;
mod write;

#[derive(OpenApi)]
#[openapi(
    components(schemas(Problem, FieldError, TaskStatus, Priority)),
    tags((name = "tasks", description = "Task commands"))
)]
struct ApiDoc;

/// The task routes, health and metrics, and their OpenAPI document (with
/// the Bearer scheme).
pub fn routes(
    readiness: service::health::Readiness,
) -> (OpenApiRouter<AppState>, utoipa::openapi::OpenApi) {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::create_task))
        .routes(routes!(handlers::update_task, handlers::delete_task))
        .routes(routes!(handlers::change_status))
        .merge(service::health::documented_routes(readiness));
    let mut doc = router.to_openapi();
    service::openapi::add_retry_after_response_to_writes(
        &mut doc,
        "429",
        "Over the caller's write budget (`RateLimit-*` headers say the limit)",
    );
    service::openapi::add_retry_after_response_to_writes(
        &mut doc,
        "503",
        "The event store is unreachable; nothing was changed",
    );
    let doc = service::openapi::finish_document(
        doc,
        "taskstream command-api",
        "REST writes: each accepted command is committed as task events in the \
         Postgres event store before it is answered.",
    );
    (router, doc)
}
