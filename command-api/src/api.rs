//! The REST edge: request bodies parsed into domain values (`bodies`), the
//! write's context gathered by one extractor (`write`), `If-Match`,
//! `Idempotency-Key`, `ETag`, `Location` and `X-Consistency-Token`
//! (`headers`), the task, project and member resources as answered
//! (`responses`), problem+json refusals (`errors`), the routes (`handlers`
//! for tasks, `project_handlers` for projects and members), and the
//! OpenAPI document describing all of it.

use events::{Priority, ProjectRole, TaskStatus};
use service::{FieldError, Problem};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::startup::AppState;

mod attachment_handlers;
mod bodies;
mod errors;
mod handlers;
mod headers;
mod project_handlers;
mod responses;
mod write;

#[derive(OpenApi)]
#[openapi(
    components(schemas(Problem, FieldError, TaskStatus, Priority, ProjectRole)),
    tags(
        (name = "tasks", description = "Task commands"),
        (name = "attachments", description = "Files on tasks: presigned uploads to the object store, completion, removal"),
        (name = "projects", description = "Project commands: create, edit, archive, delete, transfer"),
        (name = "members", description = "Project membership: add, change role, remove, leave"),
    )
)]
struct ApiDoc;

/// The task, project and member routes, health and metrics, and their OpenAPI document (with
/// the Bearer scheme).
pub fn routes(
    readiness: service::health::Readiness,
) -> (OpenApiRouter<AppState>, utoipa::openapi::OpenApi) {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::create_task))
        .routes(routes!(handlers::update_task, handlers::delete_task))
        .routes(routes!(handlers::change_status))
        .routes(routes!(handlers::move_task))
        .routes(routes!(attachment_handlers::create_attachment))
        .routes(routes!(attachment_handlers::complete_attachment))
        .routes(routes!(attachment_handlers::delete_attachment))
        .routes(routes!(project_handlers::create_project))
        .routes(routes!(
            project_handlers::update_project,
            project_handlers::delete_project
        ))
        .routes(routes!(project_handlers::archive_project))
        .routes(routes!(project_handlers::unarchive_project))
        .routes(routes!(project_handlers::transfer_ownership))
        .routes(routes!(project_handlers::add_member))
        .routes(routes!(
            project_handlers::change_member_role,
            project_handlers::remove_member
        ))
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
        "REST writes: each accepted command is committed as task or project \
         events in the Postgres event store before it is answered.",
    );
    (router, doc)
}
