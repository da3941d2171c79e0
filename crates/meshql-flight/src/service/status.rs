//! Errors as gRPC statuses: the one place that maps meshql's errors (by their class) and the
//! server's own refusals (by what they mean) to status codes, bounding and redacting every
//! message. Nothing else in the crate names a status code.

use datafusion::error::DataFusionError;
use tonic::Status;

/// gRPC carries the status message in a header; keep it well under common header limits.
const MAX_STATUS_MESSAGE: usize = 4000;

pub(super) fn read_only() -> Status {
    unsupported("meshql serves the mesh read-only: updates, ingestion and transactions are not supported")
}

/// The gRPC status for an embedded-API error: the code from the error's class (its type, never
/// its text), the message the embedded API gives (already redacted for the principal).
pub(crate) fn status_of(e: meshql::Error) -> Status {
    use meshql::ErrorClass;
    let message = e.to_string();
    let status = match e.class() {
        ErrorClass::AccessDenied => Status::permission_denied(message),
        ErrorClass::NotAllowed | ErrorClass::InvalidQuery => Status::invalid_argument(message),
        ErrorClass::PolicyEvaluation => Status::failed_precondition(message),
        ErrorClass::Unavailable => Status::unavailable(message),
        ErrorClass::ResourcesExhausted => Status::resource_exhausted(message),
        ErrorClass::Internal => Status::internal(message),
    };
    truncate(status)
}

/// [`status_of`] for an error from a session's result stream (a session error inside it).
pub(super) fn status_of_df(e: DataFusionError) -> Status {
    status_of(meshql::Error::from(e))
}

/// Bounds a status message and blots out any registered secret (a credential a remote store
/// echoed back in an error never reaches a client).
fn truncate(status: Status) -> Status {
    let redacted = meshql::redact_secrets(status.message());
    let status = if redacted != status.message() {
        Status::new(status.code(), redacted)
    } else {
        status
    };
    if status.message().len() <= MAX_STATUS_MESSAGE {
        return status;
    }
    let mut end = MAX_STATUS_MESSAGE;
    while !status.message().is_char_boundary(end) {
        end -= 1;
    }
    Status::new(status.code(), format!("{} …", &status.message()[..end]))
}

pub(crate) fn arrow_status(e: impl std::fmt::Display) -> Status {
    internal(e.to_string())
}

pub(super) fn planning_lost(why: String) -> Status {
    internal(format!("the query's planning task ended abnormally: {why}"))
}

/// Every status the server sends, by what it means. Each bounds and redacts its message.
macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name(message: impl Into<String>) -> Status {
                truncate(Status::$code(message.into()))
            }
        )*
    };
}

statuses! {
    /// The request is malformed, or names a handle, ticket or option that is not valid.
    bad_request => invalid_argument;
    /// Something Flight SQL defines that a read-only mesh does not do.
    unsupported => unimplemented;
    /// The caller cancelled the query (or its handle was cancelled).
    cancelled => cancelled;
    /// The query ran past its time limit.
    deadline => deadline_exceeded;
    /// The server is at a limit (running queries, request size).
    busy => resource_exhausted;
    /// The server is shutting down or cannot serve the request now.
    unavailable => unavailable;
    /// The caller has no (valid) credentials.
    unauthenticated => unauthenticated;
    /// The caller may not do this.
    denied => permission_denied;
    /// The request needs a state the session is not in.
    precondition => failed_precondition;
    /// A fault of the server.
    internal => internal;
}
