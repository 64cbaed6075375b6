//! What every write needs, gathered once before its handler runs: the
//! caller, the task or project (and member), the body, `If-Match`, the idempotency scope, the
//! correlation id and the instant of the command.

use access::AuthUser;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use chrono::{DateTime, Utc};
use events::StreamVersion;
use service::http::{CorrelationId, Path};
use service::Problem;
use uuid::Uuid;

use super::bodies::WriteBody;
use super::headers;
use crate::domain::{Action, Command};
use crate::idempotency::Scope;
use crate::projects;
use crate::startup::AppState;
use crate::tasks;

/// A write request: its context and its body `B`.
///
/// Refusals come in one order: no valid token (401), a path naming no task
/// or project (404), a body that is not the JSON asked for (400/408/413/415/422), then
/// a malformed `If-Match` or `Idempotency-Key` (400). The body's field
/// errors (422) are the handler's.
pub struct WriteRequest<B>(pub WriteContext, pub B);

/// Everything about a write but its body.
pub struct WriteContext {
    pub caller: AuthUser,
    /// The task or project named in the path, or a fresh UUID v7 for
    /// `POST /tasks` and `POST /projects`.
    pub id: Uuid,
    /// The member named in the path (`/projects/{id}/members/{user_id}`).
    pub member_id: Option<Uuid>,
    /// The attachment named in the path (`/tasks/{id}/attachments/{attachment_id}…`).
    pub attachment_id: Option<Uuid>,
    /// `If-Match`: the version the client saw (never read for a create).
    pub if_match: Option<StreamVersion>,
    /// Present when the client sent an `Idempotency-Key`.
    pub idempotency: Option<Scope>,
    /// The request id when it is a UUID, so one request's events can be traced.
    pub correlation_id: Uuid,
    /// The one clock read of a write: it becomes the events' `occurred_at`.
    pub at: DateTime<Utc>,
}

impl WriteContext {
    /// The command for the storage adapter.
    pub fn command(self, action: Action) -> tasks::Write {
        tasks::Write {
            task_id: self.id,
            command: Command {
                actor: self.caller.id,
                at: self.at,
                action,
                access: Default::default(),
            },
            if_match: self.if_match,
            correlation_id: self.correlation_id,
            idempotency: self.idempotency,
        }
    }

    /// The project command for the storage adapter.
    pub fn project(self, request: projects::Request) -> projects::Write {
        projects::Write {
            project_id: self.id,
            actor: self.caller.id,
            at: self.at,
            request,
            if_match: self.if_match,
            correlation_id: self.correlation_id,
            idempotency: self.idempotency,
        }
    }
}

impl<B: WriteBody> FromRequest<AppState> for WriteRequest<B> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let caller = AuthUser::from_request_parts(&mut parts, state).await?;
        let Some(route) = parts.extensions.get::<MatchedPath>().cloned() else {
            tracing::error!(
                path = parts.uri.path(),
                "a write reached its handler unrouted"
            );
            return Err(Problem::internal());
        };
        // A route with `{id}` writes to that task or project; `POST /tasks`
        // and `POST /projects` create one.
        let existing = route.as_str().contains("{id}");
        let second = ["{user_id}", "{attachment_id}"]
            .into_iter()
            .find(|name| route.as_str().contains(name));
        let (id, member_id) = if second.is_some() {
            let (id, member) = Path::<(Uuid, Uuid)>::from_request_parts(&mut parts, state)
                .await?
                .0;
            (id, Some(member))
        } else if existing {
            (
                Path::<Uuid>::from_request_parts(&mut parts, state).await?.0,
                None,
            )
        } else {
            (Uuid::now_v7(), None)
        };
        let Ok(CorrelationId(correlation_id)) =
            CorrelationId::from_request_parts(&mut parts, state).await;
        // Read now, answered after the body's own refusals.
        let if_match = if existing {
            headers::if_match(&parts.headers)
        } else {
            Ok(None)
        };
        let key = headers::idempotency_key(&parts.headers);
        let method = parts.method.as_str().to_owned();
        let (body, request_hash) = B::read(Request::from_parts(parts, body), state).await?;
        let if_match = if_match?;
        // Keys are scoped by the path with the ids as parsed, so every
        // spelling of one resource's path shares them.
        let mut path = route.as_str().replace("{id}", &id.to_string());
        if let (Some(name), Some(second_id)) = (second, member_id) {
            path = path.replace(name, &second_id.to_string());
        }
        let (member_id, attachment_id) = match second {
            Some("{attachment_id}") => (None, member_id),
            _ => (member_id, None),
        };
        let idempotency = key?.map(|key| Scope {
            user_id: caller.id,
            method,
            path,
            key,
            request_hash,
        });
        let context = WriteContext {
            caller,
            id,
            member_id,
            attachment_id,
            if_match,
            idempotency,
            correlation_id,
            at: Utc::now(),
        };
        Ok(WriteRequest(context, body))
    }
}
