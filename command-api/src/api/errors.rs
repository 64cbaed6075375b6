//! Why a write was refused, as a problem: each storage or domain error is
//! mapped here, once. Infrastructure failures are logged with their cause
//! and answered without it.

use axum::http::StatusCode;
use service::Problem;

use crate::domain::DomainError;
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
            WriteError::Contended => Problem::conflict(
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
