//! How a failed read of a store becomes a problem: a store that cannot be
//! reached is a 503 with `Retry-After` (the client should retry), anything
//! else is a logged 500 that tells the client nothing of the cause.

use mongodb::error::ErrorKind;
use service::Problem;

/// A failed MongoDB read.
pub fn mongo(what: &str, e: &mongodb::error::Error) -> Problem {
    if mongo_unavailable(e) {
        tracing::warn!(error = %e, "{what}: the views' database is unavailable");
        Problem::dependency_down("the views' database")
    } else {
        tracing::error!(error = %e, "{what}");
        Problem::internal()
    }
}

/// A failed Postgres read.
pub fn postgres(what: &str, e: &sqlx::Error) -> Problem {
    if events::store::is_unavailable(e) {
        tracing::warn!(error = %e, "{what}: the event store is unavailable");
        Problem::dependency_down("the event store")
    } else {
        tracing::error!(error = %e, "{what}");
        Problem::internal()
    }
}

/// No server to talk to, a broken connection, or a server shutting down
/// or stepping down (the driver's retryable read errors).
pub fn mongo_unavailable(e: &mongodb::error::Error) -> bool {
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
