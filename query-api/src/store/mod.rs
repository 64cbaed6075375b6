//! Storage for the read side: every read query-api makes of the views
//! (MongoDB) and of the event store (Postgres), and the one error they fail
//! with. Handlers call these functions and `?` a [`StoreError`], which
//! becomes a problem in one place ([`From<StoreError> for Problem`]).

use mongodb::error::ErrorKind;
use service::Problem;

pub mod analytics;
pub mod events;
pub mod members;
pub mod projects;
pub mod tasks;
pub mod users;

/// Which store a read went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// MongoDB, which holds the projector's views.
    Views,
    /// Postgres, the event store.
    Events,
}

impl Store {
    /// How a problem names the store to a client.
    fn described(self) -> &'static str {
        match self {
            Store::Views => "the views' database",
            Store::Events => "the event store",
        }
    }
}

/// A failed read of a store. `what` says which read, for the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached, timed out or is shutting down: the
    /// client should retry (503 with `Retry-After`).
    #[error("{what}: {} is unavailable", .store.described())]
    Unavailable {
        what: &'static str,
        store: Store,
        #[source]
        cause: Cause,
    },
    /// The read failed for a reason of its own (a refused query, a
    /// document that does not decode): a logged 500.
    #[error("{what}")]
    Failed {
        what: &'static str,
        #[source]
        cause: Cause,
    },
}

/// The driver's error behind a [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
}

impl StoreError {
    /// Classifies a failed MongoDB read (`what`: which read).
    pub fn views(what: &'static str) -> impl FnOnce(mongodb::error::Error) -> Self {
        move |e| {
            if mongo_unavailable(&e) {
                StoreError::Unavailable {
                    what,
                    store: Store::Views,
                    cause: e.into(),
                }
            } else {
                StoreError::Failed {
                    what,
                    cause: e.into(),
                }
            }
        }
    }

    /// Classifies a failed Postgres read (`what`: which read).
    pub fn events(what: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |e| {
            if ::events::store::is_unavailable(&e) {
                StoreError::Unavailable {
                    what,
                    store: Store::Events,
                    cause: e.into(),
                }
            } else {
                StoreError::Failed {
                    what,
                    cause: e.into(),
                }
            }
        }
    }
}

/// A store that cannot be reached is a 503 with `Retry-After` (the client
/// should retry); anything else is a logged 500 that tells the client
/// nothing of the cause.
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { what, store, cause } => {
                tracing::warn!(error = %cause, "{what}: {} is unavailable", store.described());
                Problem::dependency_down(store.described())
            }
            StoreError::Failed { what, cause } => {
                tracing::error!(error = %cause, "{what}");
                Problem::internal()
            }
        }
    }
}

/// No server to talk to, a broken connection, or a server shutting down
/// or stepping down (the driver's retryable read errors).
fn mongo_unavailable(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => true,
        ErrorKind::Command(c) => matches!(
            c.code,
            // HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress,
            // PrimarySteppedDown, SocketException, NotWritablePrimary,
            // InterruptedAtShutdown, InterruptedDueToReplStateChange,
            // NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary.
            6 | 7 | 89 | 91 | 189 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436
        ),
        _ => e.contains_label("RetryableReadError"),
    }
}
