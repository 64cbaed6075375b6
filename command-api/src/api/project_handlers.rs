//! The project and member routes: each handler turns its body into a
//! project request and hands it to the storage adapter
//! (`crate::projects`). A caller who is not a member of the project gets
//! the 404 of a project that does not exist; a member without the right,
//! 403 (the roles table is in `crate::project`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use resources::{MemberResource, ProjectResource};
use service::Problem;
use uuid::Uuid;

use super::bodies::{
    AddMemberRequest, ChangeRoleRequest, CreateProjectRequest, NoBody, TransferOwnershipRequest,
    UpdateProjectRequest,
};
use super::headers::{IdempotencyKeyHeader, IfMatchHeader};
use super::responses;
use super::write::{WriteContext, WriteRequest};
use crate::idempotency::StoredResponse;
use crate::project::ProjectAction;
use crate::projects::{self, Request, Written};
use crate::startup::AppState;

/// Create a project; the caller becomes its owner.
#[utoipa::path(
    post,
    path = "/projects",
    tag = "projects",
    request_body = CreateProjectRequest,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The project was created (`my_role: owner`, `member_count: 1`)", body = ProjectResource, headers(
            ("Location" = String, description = "`/projects/{id}`"),
            ("ETag" = String, description = "The project's version, quoted: `\"1\"`"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller already belongs to the most projects one user may (`project-limit`, with `limit`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (with pointers), unknown field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_project(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<CreateProjectRequest>,
) -> Result<Response, Problem> {
    let request = body.into_request()?;
    execute(&state, write, request, responses::project_created).await
}

/// Rename a project or change its description (owner or admin).
#[utoipa::path(
    patch,
    path = "/projects/{id}",
    tag = "projects",
    request_body = UpdateProjectRequest,
    params(ProjectId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The project after the update (unchanged when nothing changed)", body = ProjectResource, headers(
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a member or a viewer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user (also: deleted, not a member, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The project kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (with pointers), unknown field, or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_project(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<UpdateProjectRequest>,
) -> Result<Response, Problem> {
    let request = body.into_request()?;
    execute(&state, write, request, responses::project_changed).await
}

/// Delete a project (owner only). Its tasks vanish from every read at once;
/// afterwards every write to it is 404.
#[utoipa::path(
    delete,
    path = "/projects/{id}",
    tag = "projects",
    params(ProjectId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 204, description = "The project was deleted", headers(
            ("ETag" = String, description = "The version of the deletion, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not the owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user (also: already deleted, not a member, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The project kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_project(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    let request = Request::Action(ProjectAction::Delete);
    execute(&state, write, request, responses::project_no_content).await
}

/// Archive a project (owner or admin): its tasks become read-only (every
/// task write in it is 409 `project-archived`). Already archived: 200, no event.
#[utoipa::path(
    post,
    path = "/projects/{id}/archive",
    tag = "projects",
    params(ProjectId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The project, archived", body = ProjectResource, headers(
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a member or a viewer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user (also: deleted, not a member, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The project kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn archive_project(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    let request = Request::Action(ProjectAction::Archive);
    execute(&state, write, request, responses::project_changed).await
}

/// Unarchive a project (owner or admin): its tasks take writes again.
/// Not archived: 200, no event.
#[utoipa::path(
    post,
    path = "/projects/{id}/unarchive",
    tag = "projects",
    params(ProjectId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The project, not archived", body = ProjectResource, headers(
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is a member or a viewer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user (also: deleted, not a member, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The project kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn unarchive_project(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    let request = Request::Action(ProjectAction::Unarchive);
    execute(&state, write, request, responses::project_changed).await
}

/// Transfer the project to another member (owner only): they become its
/// owner, the caller an admin.
#[utoipa::path(
    post,
    path = "/projects/{id}/owner",
    tag = "projects",
    request_body = TransferOwnershipRequest,
    params(ProjectId, IfMatchHeader, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The project after the transfer (the caller's `my_role` is now `admin`)", body = ProjectResource, headers(
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not the owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user (also: deleted, not a member, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The project kept changing concurrently; retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not name the current version; `current_version` says which is", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/user_id` missing or not a member; unknown field; or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn transfer_ownership(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<TransferOwnershipRequest>,
) -> Result<Response, Problem> {
    let request = body.into_request()?;
    execute(&state, write, request, responses::project_changed).await
}

/// Add an active user to the project, by email or id.
///
/// The owner and admins add members and viewers; only the owner adds admins.
#[utoipa::path(
    post,
    path = "/projects/{id}/members",
    tag = "members",
    request_body = AddMemberRequest,
    params(ProjectId, IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The member was added", body = MemberResource, headers(
            ("Location" = String, description = "`/projects/{id}/members/{user_id}`"),
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not add members (or admins)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user (also: deleted, not a member, or malformed id)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already a member (`already-member`), the project is full (`member-limit`) or the user belongs to the most projects one may (`project-limit`), both with `limit`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not exactly one of `email`/`user_id`, no active user by it, `role` missing or `owner`; unknown field; or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn add_member(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<AddMemberRequest>,
) -> Result<Response, Problem> {
    let request = body.into_request()?;
    execute(&state, write, request, responses::member_added).await
}

/// Change a member's role (not the owner's: ownership moves by transfer).
///
/// The owner and admins switch members and viewers; only the owner makes,
/// changes or demotes admins.
#[utoipa::path(
    patch,
    path = "/projects/{id}/members/{user_id}",
    tag = "members",
    request_body = ChangeRoleRequest,
    params(ProjectId, MemberId, IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The member with their role (unchanged when already so)", body = MemberResource, headers(
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not change this member's role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user, or no such member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The member is the owner (`owner-role`), or the project kept changing concurrently", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`role` missing or `owner`; unknown field; or idempotency key reused with another body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn change_member_role(
    State(state): State<AppState>,
    WriteRequest(write, body): WriteRequest<ChangeRoleRequest>,
) -> Result<Response, Problem> {
    let member = write.member_id.ok_or_else(Problem::internal)?;
    let request = body.into_request(member)?;
    execute(&state, write, request, responses::member_changed).await
}

/// Remove a member, or leave (any member may remove themselves but the
/// owner). Their assignments in the project are removed, with a
/// `task.assignees_changed` on each task.
#[utoipa::path(
    delete,
    path = "/projects/{id}/members/{user_id}",
    tag = "members",
    params(ProjectId, MemberId, IdempotencyKeyHeader),
    responses(
        (status = 204, description = "The member was removed", headers(
            ("ETag" = String, description = "The project's version, quoted"),
            ("X-Consistency-Token" = String, description = "Present it to the query side to read this write"),
        )),
        (status = 400, description = "Malformed header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not remove this member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project for this user, or no such member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The owner cannot leave (`owner-cannot-leave`: transfer first), or the project kept changing concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove_member(
    State(state): State<AppState>,
    WriteRequest(write, NoBody): WriteRequest<NoBody>,
) -> Result<Response, Problem> {
    let user_id = write.member_id.ok_or_else(Problem::internal)?;
    let request = Request::Action(ProjectAction::RemoveMember { user_id });
    execute(&state, write, request, responses::project_no_content).await
}

async fn execute(
    state: &AppState,
    write: WriteContext,
    request: Request,
    render: fn(&Written) -> StoredResponse,
) -> Result<Response, Problem> {
    let outcome = projects::execute(
        &state.pool,
        write.project(request),
        state.project_limits,
        render,
    )
    .await?;
    Ok(outcome.into_response())
}

/// The project id (a UUID); anything else is 404.
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
struct ProjectId(Uuid);

/// The member's user id (a UUID); anything else is 404.
#[derive(utoipa::IntoParams)]
#[into_params(names("user_id"), parameter_in = Path)]
#[allow(dead_code)]
struct MemberId(Uuid);
