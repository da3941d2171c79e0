use meshql_catalog::ProductUnavailable;
use meshql_contract::MeshError;

/// Errors of the embedded API.
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

    /// The audit trail cannot be written: the mesh is not served unrecorded.
    #[error("the audit trail cannot be written at {path}: {reason} (set stateDir in mesh.yaml or MESHQL_STATE_DIR, or audit.enabled: false)")]
    AuditUnavailable { path: std::path::PathBuf, reason: String },

    /// `engine:` in `mesh.yaml` names an option DataFusion does not have, or a bad value.
    #[error("mesh.yaml engine option `{key}`: {reason}")]
    EngineOption { key: String, reason: String },

    /// Parsing, planning or execution failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}
