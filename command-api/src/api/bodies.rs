//! Request bodies: what each write accepts, how it is read (with the digest
//! idempotency compares), and how it parses into the domain's values.
//! Every field error is collected with its JSON pointer (422).

use std::future::Future;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use events::{Priority, ProjectRole, TaskStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use service::json::Json;
use service::time::Instant;
use service::{FieldError, Problem};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{
    Action, Assignees, CreateTask, Description, Invalid, Tags, TaskTitle, UpdateTask,
};
use crate::project::{GrantableRole, ProjectAction, ProjectName};
use crate::projects::{Request as ProjectRequest, Who};

/// `POST /tasks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// 1 to 200 characters after trimming.
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// Up to 10,000 characters; default empty.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    /// Default `medium`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// RFC 3339 within the years 1 to 9999 (UTC), or null for none.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub due_at: Option<Instant>,
    /// Up to 20 tags of 1 to 40 characters; duplicates are dropped.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// The project the task belongs to (the caller must be a member with
    /// a write right); null or absent: a personal task.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// Up to 10 users, each a member of the project (for a personal task,
    /// only the caller); duplicates are dropped.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub assignee_ids: Option<Vec<Uuid>>,
}

/// `PATCH /tasks/{id}`: absent fields stay as they are. `null` clears
/// `description`, `tags` and `due_at`; `title` and `priority` cannot be null.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<Option<Priority>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub due_at: Option<Option<Instant>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, nullable, max_items = 20)]
    pub tags: Option<Option<Vec<String>>>,
    /// The whole new set of assignees (members of the task's project; for
    /// a personal task only its owner); `null` or `[]` clears.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<Uuid>>, nullable, max_items = 10)]
    pub assignee_ids: Option<Option<Vec<Uuid>>>,
}

/// Tells "field absent" (`None`) from "field is null" (`Some(None)`).
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /tasks/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeStatusRequest {
    pub status: TaskStatus,
}

/// `POST /tasks/{id}/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTaskRequest {
    /// The target project, or `null` to make the task personal (only its
    /// creator may). Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub project_id: Option<Option<Uuid>>,
}

/// `POST /projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    /// 1 to 100 characters after trimming, one line.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Up to 10,000 characters; default empty.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: Option<String>,
}

/// `PATCH /projects/{id}`: absent fields stay as they are; `null` clears
/// the description; the name cannot be null.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, max_length = 10000)]
    pub description: Option<Option<String>>,
}

/// `POST /projects/{id}/members`: exactly one of `email` and `user_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// An active account's email (compared as auth compares them).
    #[serde(default)]
    pub email: Option<String>,
    /// An active account's id.
    #[serde(default)]
    pub user_id: Option<Uuid>,
    /// `admin`, `member` or `viewer` (`owner` moves only by transfer).
    pub role: Option<ProjectRole>,
}

/// `PATCH /projects/{id}/members/{user_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    /// `admin`, `member` or `viewer`.
    pub role: Option<ProjectRole>,
}

/// `POST /projects/{id}/owner`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwnershipRequest {
    /// A member of the project; they become its owner, the caller an admin.
    pub user_id: Option<Uuid>,
}

/// `DELETE /tasks/{id}` carries no body; none is read.
pub struct NoBody;

/// A write's body as read from the request, with the SHA-256 of its bytes
/// (a retry under the same idempotency key must repeat them).
pub trait WriteBody: Sized + Send {
    fn read<S: Send + Sync>(
        req: Request,
        state: &S,
    ) -> impl Future<Output = Result<(Self, [u8; 32]), Problem>> + Send;
}

/// The bodies read as JSON.
pub trait JsonBody: DeserializeOwned + Send {}

impl JsonBody for CreateTaskRequest {}
impl JsonBody for UpdateTaskRequest {}
impl JsonBody for ChangeStatusRequest {}
impl JsonBody for MoveTaskRequest {}
impl JsonBody for CreateProjectRequest {}
impl JsonBody for UpdateProjectRequest {}
impl JsonBody for AddMemberRequest {}
impl JsonBody for ChangeRoleRequest {}
impl JsonBody for TransferOwnershipRequest {}

/// Rejections are those of `service::json::Json` (400/408/413/415/422).
impl<T: JsonBody> WriteBody for T {
    async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<(Self, [u8; 32]), Problem> {
        let (parts, body) = req.into_parts();
        let bytes =
            service::json::read_body(Request::from_parts(parts.clone(), body), state).await?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let Json(value) =
            Json::<T>::from_request(Request::from_parts(parts, Body::from(bytes)), state).await?;
        Ok((value, sha256))
    }
}

impl WriteBody for NoBody {
    async fn read<S: Send + Sync>(_: Request, _: &S) -> Result<(Self, [u8; 32]), Problem> {
        // Every retry of a DELETE "has the same body": the empty one.
        Ok((NoBody, Sha256::digest(b"").into()))
    }
}

impl CreateTaskRequest {
    pub fn into_action(self) -> Result<Action, Problem> {
        let mut errors = Vec::new();
        let title = required_title(self.title.as_deref(), &mut errors);
        let description = collect(
            Description::parse(self.description.as_deref().unwrap_or("")),
            "/description",
            &mut errors,
        );
        let tags = tags(self.tags.as_deref().unwrap_or(&[]), &mut errors);
        let assignees = collect(
            Assignees::parse(self.assignee_ids.as_deref().unwrap_or(&[])),
            "/assignee_ids",
            &mut errors,
        );
        match (title, description, tags, assignees) {
            (Some(title), Some(description), Some(tags), Some(assignees)) if errors.is_empty() => {
                Ok(Action::Create(CreateTask {
                    project_id: self.project_id,
                    assignees,
                    title,
                    description,
                    priority: self.priority.unwrap_or_default(),
                    due_at: self.due_at.map(Into::into),
                    tags,
                }))
            }
            _ => Err(Problem::validation(errors)),
        }
    }
}

impl UpdateTaskRequest {
    pub fn into_action(self) -> Result<Action, Problem> {
        let mut errors = Vec::new();
        let mut update = UpdateTask::default();
        match self.title {
            None => {}
            Some(None) => errors.push(FieldError::new("/title", "must not be null")),
            Some(Some(t)) => update.title = collect(TaskTitle::parse(&t), "/title", &mut errors),
        }
        if let Some(d) = self.description {
            update.description = collect(
                Description::parse(d.as_deref().unwrap_or("")),
                "/description",
                &mut errors,
            );
        }
        match self.priority {
            None => {}
            Some(None) => errors.push(FieldError::new("/priority", "must not be null")),
            Some(Some(p)) => update.priority = Some(p),
        }
        update.due_at = self.due_at.map(|d| d.map(Into::into));
        if let Some(t) = self.tags {
            update.tags = tags(t.as_deref().unwrap_or(&[]), &mut errors);
        }
        if let Some(a) = self.assignee_ids {
            update.assignees = collect(
                Assignees::parse(a.as_deref().unwrap_or(&[])),
                "/assignee_ids",
                &mut errors,
            );
        }
        if errors.is_empty() {
            Ok(Action::Update(update))
        } else {
            Err(Problem::validation(errors))
        }
    }
}

impl ChangeStatusRequest {
    pub fn into_action(self) -> Action {
        Action::ChangeStatus(self.status)
    }
}

impl MoveTaskRequest {
    pub fn into_action(self) -> Result<Action, Problem> {
        match self.project_id {
            Some(to) => Ok(Action::Move(to)),
            None => Err(Problem::validation(vec![FieldError::new(
                "/project_id",
                "is required (null makes the task personal)",
            )])),
        }
    }
}

impl CreateProjectRequest {
    pub fn into_request(self) -> Result<ProjectRequest, Problem> {
        let mut errors = Vec::new();
        let name = match self.name.as_deref() {
            None => {
                errors.push(FieldError::new("/name", "is required"));
                None
            }
            Some(n) => collect(ProjectName::parse(n), "/name", &mut errors),
        };
        let description = collect(
            Description::parse(self.description.as_deref().unwrap_or("")),
            "/description",
            &mut errors,
        );
        match (name, description) {
            (Some(name), Some(description)) if errors.is_empty() => {
                Ok(ProjectRequest::Action(ProjectAction::Create {
                    name,
                    description,
                }))
            }
            _ => Err(Problem::validation(errors)),
        }
    }
}

impl UpdateProjectRequest {
    pub fn into_request(self) -> Result<ProjectRequest, Problem> {
        let mut errors = Vec::new();
        let name = match self.name {
            None => None,
            Some(None) => {
                errors.push(FieldError::new("/name", "must not be null"));
                None
            }
            Some(Some(n)) => collect(ProjectName::parse(&n), "/name", &mut errors),
        };
        let description = self.description.and_then(|d| {
            collect(
                Description::parse(d.as_deref().unwrap_or("")),
                "/description",
                &mut errors,
            )
        });
        if errors.is_empty() {
            Ok(ProjectRequest::Action(ProjectAction::Update {
                name,
                description,
            }))
        } else {
            Err(Problem::validation(errors))
        }
    }
}

/// A grantable role from a body's `role` (422 on `/role` otherwise).
fn grantable(role: Option<ProjectRole>, errors: &mut Vec<FieldError>) -> Option<GrantableRole> {
    match role {
        None => {
            errors.push(FieldError::new("/role", "is required"));
            None
        }
        Some(r) => collect(GrantableRole::parse(r), "/role", errors),
    }
}

impl AddMemberRequest {
    pub fn into_request(self) -> Result<ProjectRequest, Problem> {
        let mut errors = Vec::new();
        let who = match (self.email, self.user_id) {
            (Some(email), None) => Some(Who::Email(access::email::normalise_email(&email))),
            (None, Some(id)) => Some(Who::UserId(id)),
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "/user_id",
                    "give exactly one of `email` and `user_id`",
                ));
                None
            }
            (None, None) => {
                errors.push(FieldError::new(
                    "/email",
                    "is required (or `user_id`): whom to add",
                ));
                None
            }
        };
        let role = grantable(self.role, &mut errors);
        match (who, role) {
            (Some(who), Some(role)) if errors.is_empty() => {
                Ok(ProjectRequest::AddMember { who, role })
            }
            _ => Err(Problem::validation(errors)),
        }
    }
}

impl ChangeRoleRequest {
    pub fn into_request(self, user_id: Uuid) -> Result<ProjectRequest, Problem> {
        let mut errors = Vec::new();
        match grantable(self.role, &mut errors) {
            Some(role) => Ok(ProjectRequest::Action(ProjectAction::ChangeRole {
                user_id,
                role,
            })),
            None => Err(Problem::validation(errors)),
        }
    }
}

impl TransferOwnershipRequest {
    pub fn into_request(self) -> Result<ProjectRequest, Problem> {
        match self.user_id {
            Some(to) => Ok(ProjectRequest::Action(ProjectAction::TransferOwnership {
                to,
            })),
            None => Err(Problem::validation(vec![FieldError::new(
                "/user_id",
                "is required",
            )])),
        }
    }
}

fn required_title(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<TaskTitle> {
    match raw {
        None => {
            errors.push(FieldError::new("/title", "is required"));
            None
        }
        Some(t) => collect(TaskTitle::parse(t), "/title", errors),
    }
}

fn collect<T>(r: Result<T, Invalid>, pointer: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    r.map_err(|e| errors.push(FieldError::new(pointer, e.0)))
        .ok()
}

fn tags(raw: &[String], errors: &mut Vec<FieldError>) -> Option<Tags> {
    match Tags::parse(raw) {
        Ok(t) => Some(t),
        Err(bad) => {
            for (index, why) in bad {
                let pointer = match index {
                    Some(i) => format!("/tags/{i}"),
                    None => "/tags".to_owned(),
                };
                errors.push(FieldError::new(pointer, why.0));
            }
            None
        }
    }
}
