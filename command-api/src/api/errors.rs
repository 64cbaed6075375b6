//! Why a write was refused, as a problem: each storage or domain error is
//! mapped here, once. Infrastructure failures are logged with their cause
//! and answered without it.

use axum::http::StatusCode;
use service::{FieldError, Problem};

use crate::attachments::{AttachmentError, Limit};
use crate::domain::DomainError;
use crate::project::ProjectError;
use crate::projects::ProjectWriteError;
use crate::tasks::WriteError;

impl From<WriteError> for Problem {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Domain(DomainError::NotFound) => Problem::not_found("no such task"),
            WriteError::Domain(DomainError::AlreadyExists) => {
                Problem::conflict("task-exists", "the task already exists")
            }
            WriteError::Domain(DomainError::IllegalTransition { from, to, allowed }) => {
                let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                Problem::conflict(
                    "illegal-transition",
                    format!(
                        "a task cannot go from {} to {}; allowed from {}: {}",
                        from.as_str(),
                        to.as_str(),
                        from.as_str(),
                        names.join(", ")
                    ),
                )
                .with_extension("from", from)
                .with_extension("to", to)
                .with_extension("allowed", allowed)
            }
            WriteError::Domain(DomainError::NoSuchProject) => {
                Problem::validation(vec![FieldError::new("/project_id", "no such project")])
            }
            WriteError::Domain(DomainError::Forbidden(why)) => Problem::forbidden(why),
            WriteError::Domain(DomainError::ProjectArchived) => Problem::conflict(
                "project-archived",
                "the project is archived: its tasks are read-only until it is unarchived",
            ),
            WriteError::Domain(DomainError::NotAssignable { index, personal }) => {
                let why = if personal {
                    "a personal task can be assigned only to its owner"
                } else {
                    "not a member of the task's project"
                };
                Problem::validation(vec![FieldError::new(format!("/assignee_ids/{index}"), why)])
            }
            WriteError::Domain(DomainError::NoSuchAttachment)
            | WriteError::Attachment(AttachmentError::NoSuchUpload) => {
                Problem::not_found("no such attachment")
            }
            WriteError::Attachment(AttachmentError::Limit(Limit::PerTask(max))) => {
                attachment_limit(
                    "max_per_task",
                    u64::from(max),
                    "the task already has the most attachments one task may have",
                )
            }
            WriteError::Attachment(AttachmentError::Limit(Limit::PendingPerUser(max))) => {
                attachment_limit(
                    "max_pending_per_user",
                    u64::from(max),
                    "the caller has the most uploads one user may have pending: \
                     complete or cancel (DELETE) one first",
                )
            }
            WriteError::Attachment(AttachmentError::Limit(Limit::PerUser(max))) => {
                attachment_limit(
                    "max_bytes_per_user",
                    max,
                    "this upload would take the caller past the bytes one user may store",
                )
            }
            WriteError::Project(e) => project_problem(e),
            WriteError::PreconditionFailed { current } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                format!("the task is at version {current}, not the one given in If-Match"),
            )
            .with_extension("current_version", current),
            WriteError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request body",
            ),
            WriteError::Contended | WriteError::Deadlock => Problem::conflict(
                "concurrent-modification",
                "the task kept changing while this write was decided; retry",
            ),
            WriteError::LiveTaskLimit { cap } => Problem::conflict(
                "live-task-limit",
                format!(
                    "you already have {cap} live tasks, the most one user may have; \
                     delete some before creating more"
                ),
            )
            .with_extension("limit", cap),
            WriteError::Unavailable(e) => {
                tracing::warn!(error = %e, "command refused: the event store is unavailable");
                Problem::dependency_down("the event store")
            }
            WriteError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "command failed");
                Problem::internal()
            }
        }
    }
}

/// 422 naming the attachment limit (`limit`) and its value (`max`).
pub fn attachment_limit(limit: &str, max: u64, detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "attachment-limit",
        "Attachment limit",
        format!("{detail} (`{limit}`: {max})"),
    )
    .with_extension("limit", limit)
    .with_extension("max", max)
}

fn project_problem(e: ProjectWriteError) -> Problem {
    match e {
        ProjectWriteError::Project(e) => match e {
            // One answer for "does not exist", "deleted" and "not yours".
            ProjectError::NotFound => Problem::not_found("no such project"),
            ProjectError::AlreadyExists => {
                Problem::conflict("project-exists", "the project already exists")
            }
            ProjectError::Forbidden(why) => Problem::forbidden(why),
            ProjectError::NoSuchMember => Problem::not_found("no such member"),
            ProjectError::AlreadyMember => Problem::conflict(
                "already-member",
                "the user is already a member of the project",
            ),
            ProjectError::OwnerCannotLeave => Problem::conflict(
                "owner-cannot-leave",
                "the owner cannot leave the project; transfer ownership first",
            ),
            ProjectError::OwnerRole => Problem::conflict(
                "owner-role",
                "the owner's role changes only by transferring ownership",
            ),
            ProjectError::TransferToNonMember => Problem::validation(vec![FieldError::new(
                "/user_id",
                "not a member of the project",
            )]),
            ProjectError::MemberLimit { cap } => Problem::conflict(
                "member-limit",
                format!("the project already has {cap} members, the most one project may have"),
            )
            .with_extension("limit", cap),
        },
        ProjectWriteError::NoSuchUser { field } => Problem::validation(vec![FieldError::new(
            format!("/{field}"),
            format!("no active user with this {}", field.replace('_', " ")),
        )]),
        ProjectWriteError::ProjectsPerUser { cap } => Problem::conflict(
            "project-limit",
            format!("the user already belongs to {cap} projects, the most one user may"),
        )
        .with_extension("limit", cap),
    }
}
