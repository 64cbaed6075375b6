//! The published language of taskstream.
//!
//! Everything that goes on the wire (Postgres `events` rows, Kafka messages)
//! is defined here and only here. The [`schema`] module is pure data: no I/O.
//! The `postgres` feature adds the append-only event store, the `kafka`
//! feature adds the Kafka plumbing and the outbox relay, so that `auth` and
//! `command-api` append events the same way.

mod envelope;
pub mod schema;
pub mod topics;
mod upcast;

#[cfg(feature = "postgres")]
pub mod store;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod relay;

pub use envelope::{
    ConsistencyToken, DecodeError, EventEnvelope, EventMeta, StreamType, StreamVersion,
};
pub use schema::{
    Event, Priority, ProjectArchived, ProjectCreated, ProjectDeleted, ProjectEvent,
    ProjectMemberAdded, ProjectMemberRemoved, ProjectMemberRoleChanged, ProjectOwnerChanged,
    ProjectRole, ProjectUnarchived, ProjectUpdated, Role, TaskAssigneesChanged,
    TaskAttachmentAdded, TaskAttachmentRemoved, TaskCreated, TaskDeleted, TaskDueDateChanged,
    TaskEvent, TaskMoved, TaskPriorityChanged, TaskStatus, TaskStatusChanged, TaskUpdated,
    UserDeactivated, UserEvent, UserReactivated, UserRegistered, UserRoleChanged,
};
