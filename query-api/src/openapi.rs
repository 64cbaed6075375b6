//! The OpenAPI document's frame: schemas and the Bearer scheme. Paths are
//! added from the handlers' `#[utoipa::path]` by the router.

use service::openapi::BearerAuth;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskstream query-api",
        description = "Filtered, paginated reads over the task and project views, with read-your-writes via X-Consistency-Token."
    ),
    components(schemas(
        resources::TaskResource,
        resources::AttachmentResource,
        crate::attachments::AttachmentList,
        crate::tasks::TaskPage,
        crate::tasks::TaskHistory,
        crate::tasks::HistoryItem,
        resources::ProjectResource,
        resources::MemberResource,
        events::ProjectRole,
        crate::projects::ProjectPage,
        crate::projects::MemberList,
        crate::params::Sort,
        events::TaskStatus,
        events::Priority,
        events::EventEnvelope,
        service::Problem,
        service::FieldError,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "tasks", description = "Reading tasks: personal ones and those of the caller's projects"),
        (name = "attachments", description = "Listing a task's files and downloading them through presigned URLs"),
        (name = "projects", description = "Reading the caller's projects and their members; a non-member gets 404"),
        (name = "analytics", description = "Figures from the analytics projection")
    )
)]
pub struct ApiDoc;
