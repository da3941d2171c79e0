//! Errors of the catalog layer: resolving locations, opening tables, checking them against
//! their contracts.

use meshql_contract::ContractError;

/// Why a product's table could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Contract(#[from] ContractError),

    #[error("location {location:?}: {reason}")]
    Location { location: String, reason: String },

    #[error("{location}: {message}")]
    Storage { location: String, message: String },

    /// Retired, or blocked by the governance standards.
    #[error("{0}")]
    NotServed(String),

    #[error("storage at {location} does not match the contract {contract}: {}", .problems.join("; "))]
    SchemaMismatch {
        location: String,
        contract: String,
        problems: Vec<String>,
    },
}

impl CatalogError {
    pub(crate) fn storage(location: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        // A remote service may echo a credential back; it stops here.
        CatalogError::Storage {
            location: location.to_string(),
            message: crate::secrets::redact(&message.to_string()),
        }
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
