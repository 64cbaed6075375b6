//! `GET /projects`, `GET /projects/{id}`, `GET /projects/{id}/members`.
//!
//! Who may read a project is decided by `project_members` (Postgres, read
//! on every request: no cache, no lag); what is shown comes from the
//! projector's `project_views` and `users`. A non-member, a deleted
//! project and an id that never existed all get the same 404, byte for
//! byte. A member whose project the projector has not shown yet also gets
//! that 404 until it has (pass the write's consistency token to wait).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use events::ProjectRole;
use read_model::views::ProjectView;
use resources::{MemberResource, ProjectResource};
use serde::{Deserialize, Serialize};
use service::http::Path;
use service::{FieldError, Problem};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use access::AuthUser;

use crate::consistency::wait_for_token;
use crate::params::{invalid, query_pairs, Sort, DEFAULT_LIMIT, MAX_LIMIT};
use crate::startup::AppState;
use crate::store;
use crate::tasks::{if_none_match, internal};

/// One page of projects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectPage {
    pub items: Vec<ProjectResource>,
    /// Pass as `cursor` (with the same `archived`) for the next page;
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Every member of a project, in the order they joined.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberResource>,
}

/// The query parameters of `GET /projects`, for the OpenAPI document
/// (parsing is [`ProjectsQuery::parse`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListProjectsParams {
    /// `true`: only archived projects; `false`: only active ones; absent:
    /// both.
    archived: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page, with the same `archived`.
    cursor: Option<String>,
}

/// A parsed `GET /projects` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectsQuery {
    pub archived: Option<bool>,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// The order of `GET /projects` (oldest first, ties by id), as the cursor
/// names it.
const PROJECT_SORT: Sort = Sort::CreatedAt;

impl ProjectsQuery {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Problem> {
        let mut q = ProjectsQuery {
            archived: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
        };
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let name = name.as_str();
            if !matches!(name, "archived" | "limit" | "cursor") {
                errors.push(FieldError::new(name, "unknown query parameter"));
                continue;
            }
            if seen.contains(&name) {
                errors.push(FieldError::new(name, "given more than once"));
                continue;
            }
            seen.push(name);
            match name {
                "archived" => match value.as_str() {
                    "true" => q.archived = Some(true),
                    "false" => q.archived = Some(false),
                    _ => errors.push(FieldError::new(name, "expected `true` or `false`")),
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = n,
                    _ => errors.push(FieldError::new(
                        name,
                        format!("expected an integer from 1 to {MAX_LIMIT}"),
                    )),
                },
                _ if value.is_empty() => errors.push(FieldError::new(name, "must not be empty")),
                _ => q.cursor = Some(value.clone()),
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(invalid(errors))
        }
    }

    /// What a cursor is bound to: the caller and the filter.
    fn fingerprint(&self, caller: Uuid) -> String {
        serde_json::json!(["projects", caller.to_string(), self.archived]).to_string()
    }
}

fn no_such_project() -> Problem {
    Problem::not_found("no project with this id")
}

fn uuid_of(s: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(s).map_err(|e| internal("a project view holds a malformed id", e))
}

/// The resource of a view, with the caller's role from their membership row.
fn project_resource(v: &ProjectView, my_role: ProjectRole) -> Result<ProjectResource, Problem> {
    Ok(ProjectResource {
        id: uuid_of(&v.id)?,
        name: v.name.clone(),
        description: v.description.clone(),
        owner_id: uuid_of(&v.owner_id)?,
        archived: v.archived,
        my_role,
        member_count: u32::try_from(v.members.len()).unwrap_or(u32::MAX),
        created_at: v.created_at.to_chrono(),
        updated_at: v.updated_at.to_chrono(),
        version: v.version.max(0) as u64,
    })
}

/// The caller's role in `id` and the project's live view; the one 404
/// otherwise (not a member, deleted, never existed, not projected yet).
async fn readable_project(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
) -> Result<(ProjectRole, ProjectView), Problem> {
    let role = store::members::role_in(&state.pool, id, user.id)
        .await?
        .ok_or_else(no_such_project)?;
    let view = store::projects::find(&state.db, id)
        .await?
        .ok_or_else(no_such_project)?;
    Ok((role, view))
}

/// The projects the caller belongs to, oldest first, keyset-paginated.
#[utoipa::path(
    get,
    path = "/projects",
    tag = "projects",
    params(
        ListProjectsParams,
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token: wait (bounded) until the views reflect that write"),
    ),
    responses(
        (status = 200, description = "A page of the caller's projects, each with `my_role`", body = ProjectPage),
        (status = 400, description = "Unknown parameter, bad value, bad cursor, or a consistency token that names no write of the caller's",
         body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable, or too many reads wait on consistency tokens", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 504, description = "The projection did not catch up with the consistency token in time",
         body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_projects(
    user: AuthUser,
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    let query = ProjectsQuery::parse(&query_pairs(&uri)?)?;
    let fingerprint = query.fingerprint(user.id);
    let after = query
        .cursor
        .as_deref()
        .map(|c| state.cursor_key.decode(c, PROJECT_SORT, &fingerprint))
        .transpose()?;
    wait_for_token(&state, &user, &headers).await?;
    let memberships = store::members::of_user(&state.pool, user.id).await?;
    let ids: Vec<Uuid> = memberships.iter().map(|m| m.project_id).collect();
    let (views, more) =
        store::projects::page(&state.db, &ids, query.archived, after.as_ref(), query.limit).await?;
    let next_cursor = views.last().filter(|_| more).map(|last| {
        state.cursor_key.encode(
            PROJECT_SORT,
            Some(last.created_at.timestamp_millis()),
            &last.id,
            &fingerprint,
        )
    });
    let items = views
        .iter()
        .filter_map(|v| {
            let id = Uuid::try_parse(&v.id).ok()?;
            let m = memberships.iter().find(|m| m.project_id == id)?;
            Some(project_resource(v, m.role))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(ProjectPage { items, next_cursor }).into_response())
}

/// One project the caller belongs to, with its version as `ETag`.
#[utoipa::path(
    get,
    path = "/projects/{id}",
    tag = "projects",
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag seen before: 304 if it is still current"),
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token: wait (bounded) until the project reflects that write"),
    ),
    responses(
        (status = 200, description = "The project, with the caller's role", body = ProjectResource,
         headers(("ETag" = String, description = "The project's version, quoted"))),
        (status = 304, description = "Not modified since the given ETag"),
        (status = 400, description = "A malformed consistency token, or one that names no write of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project, deleted, or the caller is not a member (the same answer)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable, or too many reads wait on consistency tokens", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 504, description = "The projection did not catch up with the consistency token in time",
         body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_project(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    wait_for_token(&state, &user, &headers).await?;
    let (role, view) = readable_project(&state, &user, id).await?;
    let etag = format!("\"{}\"", view.version);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| internal("bad ETag", e))?;
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let resource = project_resource(&view, role)?;
    Ok(([(header::ETAG, etag_value)], axum::Json(resource)).into_response())
}

/// Every member of a project the caller belongs to, with their address
/// and name from the users view.
#[utoipa::path(
    get,
    path = "/projects/{id}/members",
    tag = "projects",
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("X-Consistency-Token" = Option<String>, Header,
         description = "A write's consistency token: wait (bounded) until the project reflects that write"),
    ),
    responses(
        (status = 200, description = "Every member (at most the member cap), in the order they joined; `email` and `display_name` are empty for a user the users view does not know yet", body = MemberList),
        (status = 400, description = "A malformed consistency token, or one that names no write of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project, deleted, or the caller is not a member (the same answer)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable, or too many reads wait on consistency tokens", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 504, description = "The projection did not catch up with the consistency token in time",
         body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_members(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    wait_for_token(&state, &user, &headers).await?;
    let (_, view) = readable_project(&state, &user, id).await?;
    let ids = view
        .members
        .iter()
        .map(|m| uuid_of(&m.user_id))
        .collect::<Result<Vec<_>, _>>()?;
    let users = store::users::by_ids(&state.db, &ids).await?;
    let items = view
        .members
        .iter()
        .zip(ids)
        .map(|(m, user_id)| {
            let u = users.get(&user_id);
            MemberResource {
                user_id,
                email: u.map(|u| u.email.clone()).unwrap_or_default(),
                display_name: u.map(|u| u.display_name.clone()).unwrap_or_default(),
                role: m.role,
            }
        })
        .collect();
    Ok(axum::Json(MemberList { items }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ProjectsQuery, Problem> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        ProjectsQuery::parse(&owned)
    }

    #[test]
    fn list_parameters_are_checked() {
        let q = parse(&[]).expect("defaults");
        assert_eq!((q.archived, q.limit), (None, DEFAULT_LIMIT));
        let q = parse(&[("archived", "true"), ("limit", "200")]).expect("valid");
        assert_eq!((q.archived, q.limit), (Some(true), 200));
        for bad in [
            vec![("archived", "yes")],
            vec![("limit", "0")],
            vec![("limit", "201")],
            vec![("cursor", "")],
            vec![("sort", "name")],
            vec![("limit", "5"), ("limit", "6")],
        ] {
            assert_eq!(parse(&bad).expect_err("rejected").status, 400, "{bad:?}");
        }
    }

    #[test]
    fn the_cursor_binds_the_caller_and_the_filter() {
        let q = parse(&[]).unwrap();
        let a = parse(&[("archived", "false")]).unwrap();
        let me = Uuid::new_v4();
        assert_ne!(q.fingerprint(me), a.fingerprint(me));
        assert_ne!(q.fingerprint(me), q.fingerprint(Uuid::new_v4()));
    }
}
