//! Errors of contract and mesh loading. Each names the file and, where there is one, the field.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// One way a document breaks its JSON Schema: where in the document, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the document (`/schema/0/properties/2/logicalType`), `/` for the root.
    pub field: String,
    /// What the schema expected, in words.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.field, self.reason)
    }
}

/// Why a mesh document (settings, domain, product or contract) could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ContractError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// Not YAML or JSON, or not the shape a typed document needs; the parser's error is the
    /// source.
    #[error("{path}: not a valid YAML/JSON document: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    #[error("{path}: does not conform to {standard}: {}", join(.violations))]
    Schema {
        path: PathBuf,
        standard: &'static str,
        violations: Vec<Violation>,
    },

    #[error("{path}: at {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },

    #[error("{message}")]
    Conflict { message: String },
}

impl ContractError {
    pub(crate) fn invalid(path: &std::path::Path, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ContractError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A mesh directory that cannot be opened at all (as opposed to one broken product in it).
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{path} is not a mesh directory: {reason}")]
    NotAMesh { path: PathBuf, reason: String },

    #[error(transparent)]
    Settings(#[from] ContractError),
}
