//! What a failed view write means: retry it, or set the event aside.
//!
//! A MongoDB write fails for one of three reasons, and the consumer loop
//! treats each differently:
//!
//! - **transient** ([`Failure::Transient`]): the connection, a timeout, a
//!   server that is not (or no longer) primary, an interrupted operation, a
//!   write concern not satisfied yet. The same write succeeds later: the
//!   batch is retried.
//! - **the document is refused** ([`Failure::Refused`]): a value the server
//!   cannot hold (a date outside years 1–9999 on some servers), a document
//!   over the size limit, a validation failure, a field name the server
//!   forbids. The same write fails forever: the event that produced it is
//!   dead-lettered, the rest of the batch is applied.
//! - **anything else** ([`Failure::Other`]): an error that names no document
//!   and is not known to pass (permissions, a full disk, a server bug). It is
//!   retried like a transient one and logged: dead-lettering every event
//!   because of an operator's problem would lose the read side's input.
//!
//! A refusal reaches the projector in two shapes, and both are handled:
//! per document (a write error at the model's index; the other models were
//! written) or for the whole command (the server refused the request body,
//! as SecantusDB does for an out-of-range date; nothing was written and the
//! error says not which document). The second is narrowed by writing halves
//! (see `ViewWriter::write`).

use mongodb::error::{Error, ErrorKind};

/// Server codes of failures that pass: retry. `RETRYABLE_READ_CODES` of
/// the driver and the server's `ErrorCodes::isRetriableError`,
/// `isNetworkError`, `isInterruption`, `isNotPrimaryError`,
/// `isShutdownError`, plus write-concern and lock timeouts.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    202,   // NetworkInterfaceExceededTimeLimit
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11601, // Interrupted
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Server codes that say the document itself cannot be stored.
const REFUSED_CODES: &[i32] = &[
    2,     // BadValue (SecantusDB: a date outside years 1-9999)
    9,     // FailedToParse
    14,    // TypeMismatch
    15,    // Overflow
    22,    // InvalidBSON
    28,    // PathNotViable
    30,    // InvalidPath
    52,    // DollarPrefixedFieldName
    53,    // InvalidIdField
    55,    // InvalidDBRef
    56,    // EmptyFieldName
    57,    // DottedFieldName
    121,   // DocumentValidationFailure
    10334, // BSONObjectTooLarge
    17280, // KeyTooLong
    17419, // document too large after an update
    17420, // document to upsert too large
];

/// Error labels that mark a failure that passes.
const TRANSIENT_LABELS: &[&str] = &[
    "RetryableWriteError",
    "TransientTransactionError",
    "RetryableError",
    "SystemOverloadedError",
];

/// What a failed write means for the event(s) behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Retry the same write later.
    Transient,
    /// The server refuses this document; the reason, for the dead-letter topic.
    Refused(String),
    /// Not known to pass, not about a document: retry, and say so in the log.
    Other,
}

/// Classifies a whole-call failure (not the per-document write errors of a
/// bulk write, see [`classify_code`]). Looks through a bulk write error
/// that only wraps a top-level one.
pub fn classify(e: &Error) -> Failure {
    if TRANSIENT_LABELS.iter().any(|l| e.contains_label(l)) {
        return Failure::Transient;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => Failure::Transient,
        // The driver refuses a document before sending it (e.g. over the
        // server's maximum size).
        ErrorKind::InvalidArgument { message, .. } => Failure::Refused(message.clone()),
        ErrorKind::BsonSerialization(s) => Failure::Refused(s.to_string()),
        ErrorKind::Command(c) => classify_code(c.code, &c.code_name, &c.message),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            classify_code(w.code, w.code_name.as_deref().unwrap_or(""), &w.message)
        }
        ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(_)) => Failure::Transient,
        ErrorKind::BulkWrite(b) => {
            if !b.write_concern_errors.is_empty() {
                return Failure::Transient;
            }
            match inner(e) {
                Some(top) => classify(top),
                None => Failure::Other,
            }
        }
        _ => Failure::Other,
    }
}

/// The error a bulk write error wraps (its top-level failure), if any.
pub fn inner(e: &Error) -> Option<&Error> {
    let source = std::error::Error::source(e)?;
    source
        .downcast_ref::<Error>()
        .or_else(|| source.downcast_ref::<Box<Error>>().map(|b| b.as_ref()))
}

/// Classifies one server error code (with its name and message).
pub fn classify_code(code: i32, name: &str, message: &str) -> Failure {
    if TRANSIENT_CODES.contains(&code) {
        Failure::Transient
    } else if REFUSED_CODES.contains(&code) {
        Failure::Refused(reason(code, name, message))
    } else {
        Failure::Other
    }
}

/// Classifies a per-document write error of a bulk write: the server named
/// this document, so anything not known to pass is a refusal of it.
pub fn classify_write_error(code: i32, name: &str, message: &str) -> Failure {
    match classify_code(code, name, message) {
        Failure::Transient => Failure::Transient,
        _ => Failure::Refused(reason(code, name, message)),
    }
}

fn reason(code: i32, name: &str, message: &str) -> String {
    let name = if name.is_empty() { "error" } else { name };
    format!("the view store refused the write: {name} ({code}): {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(code: i32, name: &str) -> Error {
        let c: mongodb::error::CommandError = bson::from_document(bson::doc! {
            "code": code, "codeName": name, "errmsg": "m",
        })
        .expect("command error");
        Error::from(ErrorKind::Command(c))
    }

    #[test]
    fn connection_and_not_primary_pass() {
        let io = Error::from(ErrorKind::Io(std::sync::Arc::new(
            std::io::ErrorKind::ConnectionReset.into(),
        )));
        assert_eq!(classify(&io), Failure::Transient);
        assert_eq!(
            classify(&command(10107, "NotWritablePrimary")),
            Failure::Transient
        );
        assert_eq!(classify(&command(11601, "Interrupted")), Failure::Transient);
    }

    #[test]
    fn bad_values_and_oversized_documents_are_refusals() {
        let Failure::Refused(why) = classify(&command(2, "BadValue")) else {
            panic!("BadValue is a refusal")
        };
        assert!(why.contains("BadValue (2)"), "{why}");
        assert!(matches!(
            classify_write_error(17420, "", "Document to upsert is larger than 16777216"),
            Failure::Refused(_)
        ));
        assert!(matches!(
            classify(&command(121, "DocumentValidationFailure")),
            Failure::Refused(_)
        ));
    }

    #[test]
    fn unknown_whole_command_failures_are_retried_not_dead_lettered() {
        assert_eq!(classify(&command(13, "Unauthorized")), Failure::Other);
        // Named by a write error, the same code refuses that document.
        assert!(matches!(
            classify_write_error(13, "Unauthorized", "m"),
            Failure::Refused(_)
        ));
    }
}
