//! The task routes: each handler turns its body into a domain action and
//! hands the command to the storage adapter (`crate::tasks`). What every
//! write needs comes with [`WriteRequest`]; refusals are problems. The
//! answers of the shared edge (401, 413, 415, and 400/422 where a handler
//! says nothing more) are documented once, by
//! `service::openapi::add_edge_responses`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use resources::TaskResource;
use service::Problem;
use uuid::Uuid;

use super::bodies::{
    ChangeStatusRequest, CreateTaskRequest, MoveTaskRequest, NoBody, UpdateTaskRequest,
};
use super::headers::{IdempotencyKeyHeader, IfMatchHeader};
use super::responses;
use super::write::WriteRequest;
use crate::domain::Action;
use crate::idempotency::StoredResponse;
use crate::startup::AppState;
use crate::tasks::{self, Written};

/// Create a task owned by the caller: personal, or in a project.
///
/// With `project_id` the caller must be a member of the project with a
/// write right (owner, admin or member) and the project must not be
/// archived; `assignee_ids` must be members of it (for a personal task,
/// only the caller).
#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    request_body = CreateTaskRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The task was created", body = TaskResource, headers(
            ("Location" = String, description = "`/tasks/{id}`"),
            ("ETag" = String, description = "The task's version, quoted: `\"1\"`"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a viewer of the project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller already has the most live tasks one user may have (`live-task-limit`, with `limit`), or the project is archived (`project-archived`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (with pointers; `/project_id`: no such project for the caller, `/assignee_ids/{i}`: not a member), unknown field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_task(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<CreateTaskRequest>,
) -> Result<Response, Problem> {
    let command = write.command(body.into_action()?);
    execute(&state, command, responses::created).await
}

/// Change a task's title, description, priority, due date, tags or assignees.
///
/// One request may record several events (`task.updated`,
/// `task.priority_changed`, `task.due_date_changed`,
/// `task.assignees_changed`); a request that changes nothing records none
/// and returns the current version.
#[utoipa::path(
    patch,
    path = "/tasks/{id}",
    tag = "tasks",
    request_body = UpdateTaskRequest,
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The task after the update", body = TaskResource, headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a viewer of the task's project", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: deleted, in a project the caller is not a member of, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task kept changing concurrently; retry (`concurrent-modification`), or its project is archived (`project-archived`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (with pointers), unknown field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_task(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<UpdateTaskRequest>,
) -> Result<Response, Problem> {
    let command = write.command(body.into_action()?);
    execute(&state, command, responses::changed).await
}

/// Move a task through its status machine.
///
/// todo → in_progress → done; todo or in_progress → cancelled; done or
/// cancelled → todo. Anything else is 409 with the allowed transitions.
#[utoipa::path(
    post,
    path = "/tasks/{id}/status",
    tag = "tasks",
    request_body = ChangeStatusRequest,
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The task after the change", body = TaskResource, headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a viewer of the task's project", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: deleted, in a project the caller is not a member of, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Transition not allowed: `from`, `to` and `allowed` say which are; or the project is archived (`project-archived`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown status or field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn change_status(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<ChangeStatusRequest>,
) -> Result<Response, Problem> {
    let command = write.command(body.into_action());
    execute(&state, command, responses::changed).await
}

/// Delete a task. Afterwards every write to it is 404.
#[utoipa::path(
    delete,
    path = "/tasks/{id}",
    tag = "tasks",
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 204, description = "The task was deleted", headers(
            ("ETag" = String, description = "The version of the deletion, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A viewer of the task's project, or a member deleting a task they did not create", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: already deleted, in a project the caller is not a member of, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task kept changing concurrently; retry (`concurrent-modification`), or its project is archived (`project-archived`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_task(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    execute(&state, write.command(Action::Delete), responses::deleted).await
}

/// Move a task into a project, between projects, or out to personal.
///
/// Needs a write right (owner, admin, member) on the source and the
/// target, neither archived; to `null` (personal) only the task's creator.
/// Records `task.moved`, plus `task.assignees_changed` when some assignees
/// are not members of the target (they are dropped).
#[utoipa::path(
    post,
    path = "/tasks/{id}/move",
    tag = "tasks",
    request_body = MoveTaskRequest,
    params(TaskId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The task after the move (unchanged when already there)", body = TaskResource, headers(
            ("ETag" = String, description = "The task's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No write right on the source or the target, or a move to personal by someone other than the creator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task for this user (also: deleted, in a project the caller is not a member of, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The source or the target project is archived (`project-archived`), or the task kept changing concurrently", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/project_id` missing, or no such project for the caller; unknown field; or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn move_task(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<MoveTaskRequest>,
) -> Result<Response, Problem> {
    let command = write.command(body.into_action()?);
    execute(&state, command, responses::changed).await
}

/// Runs the command and answers what it rendered (or replays the first answer).
async fn execute(
    state: &AppState,
    write: tasks::Write,
    render: fn(&Written) -> StoredResponse,
) -> Result<Response, Problem> {
    let outcome = tasks::execute(&state.pool, write, state.max_live_tasks, render).await?;
    Ok(outcome.into_response())
}

/// The task id (a UUID); anything else is 404.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
struct TaskId(Uuid);
