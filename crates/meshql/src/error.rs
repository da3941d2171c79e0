use datafusion::error::DataFusionError;
use meshql_catalog::ProductUnavailable;
use meshql_contract::MeshError;
use meshql_policy::error::{find_in, AccessDenied, PolicyEvaluationFailed};

/// Errors of the embedded API.
///
/// Every error a session returns has passed through the session's redaction (see
/// `redact.rs`): it names nothing the principal may not discover and carries no value of a row
/// or column the principal may not read. Classify errors with [`Error::class`], never by text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is not a mesh (no readable `mesh.yaml`, no domains directory).
    #[error(transparent)]
    Mesh(#[from] MeshError),

    /// The query touches a product that cannot be served right now.
    #[error(transparent)]
    Unavailable(#[from] ProductUnavailable),

    /// The principal may not read a product the query names. Says which, why and whom to ask.
    #[error("{0}")]
    AccessDenied(String),

    /// The statement is not one meshql runs (DDL, DML, settings, …).
    #[error("{0}")]
    NotAllowed(String),

    /// Reading a product failed below its access policies, on data the principal may not see;
    /// the cause is withheld (administrators and the server log get it).
    #[error(transparent)]
    PolicyEvaluation(#[from] PolicyEvaluationFailed),

    /// An error whose message was cut of names the principal may not discover, or that carries
    /// a withheld cause for an administrator. `class` is the original error's.
    #[error("{message}")]
    Redacted { class: ErrorClass, message: String },

    /// The statement does not parse: the parser's message, as text.
    #[error("{0}")]
    Syntax(String),

    /// Beyond one of meshql's limits: the statement's size or its expressions' size or nesting
    /// (refused before it is parsed), or a value a function would build. The message says
    /// which. See `crates/meshql/src/limits.rs`.
    #[error("{0}")]
    LimitExceeded(String),

    /// The engine panicked while planning or running this query: the query fails alone, the
    /// panic's message goes to the server log only (it may quote values).
    #[error("the query failed inside the query engine (an internal fault, recorded in the server log); other queries are not affected")]
    EngineFault,

    /// The audit trail cannot be written: the mesh is not served unrecorded.
    #[error("the audit trail cannot be written at {path}: {reason} (set stateDir in mesh.yaml or MESHQL_STATE_DIR, or audit.enabled: false)")]
    AuditUnavailable { path: std::path::PathBuf, reason: String },

    /// `engine:` in `mesh.yaml` names an option DataFusion does not have, or a bad value.
    #[error("mesh.yaml engine option `{key}`: {reason}")]
    EngineOption { key: String, reason: String },

    /// Parsing, planning or execution failed.
    #[error(transparent)]
    DataFusion(DataFusionError),
}

/// What kind of failure an error is: what a protocol maps to its status codes and the audit
/// trail to its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A policy refuses it (audited as `denied`).
    AccessDenied,
    /// A statement meshql does not run.
    NotAllowed,
    /// The query is wrong: syntax, names, types, a value that does not convert.
    InvalidQuery,
    /// Reading a product failed below its policies; details withheld.
    PolicyEvaluation,
    /// A product, its storage or the audit trail is unavailable: retrying later may work.
    Unavailable,
    /// A limit was reached (memory, …).
    ResourcesExhausted,
    /// Anything else: a fault of meshql or of the mesh's configuration.
    Internal,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::AccessDenied(_) => ErrorClass::AccessDenied,
            Error::NotAllowed(_) => ErrorClass::NotAllowed,
            Error::Syntax(_) => ErrorClass::InvalidQuery,
            Error::PolicyEvaluation(_) => ErrorClass::PolicyEvaluation,
            Error::Redacted { class, .. } => *class,
            Error::Unavailable(_) | Error::AuditUnavailable { .. } => ErrorClass::Unavailable,
            Error::LimitExceeded(_) => ErrorClass::ResourcesExhausted,
            Error::Mesh(_) | Error::EngineOption { .. } | Error::EngineFault => ErrorClass::Internal,
            Error::DataFusion(e) => classify(e),
        }
    }
}

/// The class of a DataFusion error, by the types in its chain: a meshql error carried through
/// a result stream, a policy refusal, a withheld policy failure, an unavailable product, else
/// DataFusion's own kind of error.
pub fn classify(e: &DataFusionError) -> ErrorClass {
    if let Some(inner) = find_in::<Error>(e) {
        return inner.class();
    }
    if find_in::<AccessDenied>(e).is_some() {
        return ErrorClass::AccessDenied;
    }
    if find_in::<PolicyEvaluationFailed>(e).is_some() {
        return ErrorClass::PolicyEvaluation;
    }
    if find_in::<ProductUnavailable>(e).is_some() {
        return ErrorClass::Unavailable;
    }
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => ErrorClass::ResourcesExhausted,
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => ErrorClass::InvalidQuery,
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => ErrorClass::Unavailable,
        _ => ErrorClass::Internal,
    }
}

impl From<DataFusionError> for Error {
    /// Recognises meshql's own errors inside DataFusion's: an error a session already returned
    /// (carried through a result stream), a refusal, a withheld policy failure, an unavailable
    /// product.
    fn from(e: DataFusionError) -> Self {
        let e = match e {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => return *ours,
                Err(other) => DataFusionError::External(other),
            },
            other => other,
        };
        if let Some(denied) = find_in::<AccessDenied>(&e) {
            return Error::AccessDenied(denied.message.clone());
        }
        if let Some(failed) = find_in::<PolicyEvaluationFailed>(&e) {
            return Error::PolicyEvaluation(failed.clone());
        }
        if let Some(unavailable) = find_in::<ProductUnavailable>(&e) {
            return Error::Unavailable(unavailable.clone());
        }
        // `SQL error: ParserError("Expected: …")` is the parser's error in Rust's debug form;
        // its own message reads `sql parser error: Expected: …`.
        if let DataFusionError::SQL(parser, _) = e.find_root() {
            return Error::Syntax(parser.to_string());
        }
        Error::DataFusion(without_planner_steps(e))
    }
}

/// `e` without the names of the planning steps it failed in: a constant that overflows while
/// it is folded reads `Optimizer rule 'simplify_expressions' failed caused by …`, one of meshql's
/// checks `meshql_bound_functions caused by …`. The cause is what the user needs. DataFusion
/// names the step only as text (`DataFusionError::Context(String, _)`, 53.1), so the step is
/// recognised by its name; this shapes the message and never decides an error's class.
fn without_planner_steps(e: DataFusionError) -> DataFusionError {
    match e {
        DataFusionError::Context(step, inner)
            if step.starts_with("meshql_") || step.starts_with("Optimizer rule '") =>
        {
            without_planner_steps(*inner)
        }
        other => other,
    }
}

impl From<Error> for DataFusionError {
    /// A session's error inside a result stream; [`Error::from`] takes it out again.
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
