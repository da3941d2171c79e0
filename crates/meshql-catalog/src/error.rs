//! Errors of the catalog layer: resolving locations, opening tables, checking them against
//! their contracts. Every error keeps the error it came from as its `source`.

use std::sync::Arc;

use meshql_contract::ContractError;

/// The error a storage failure came from: object store, Parquet, Delta, Iceberg, DataFusion, or
/// meshql's own words when there is no underlying error.
pub type StorageSource = Arc<dyn std::error::Error + Send + Sync>;

/// Why a product's table could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Contract(#[from] ContractError),

    #[error("location {location:?}: {reason}")]
    Location { location: String, reason: String },

    /// Reading the table's files or metadata failed. The message is redacted when shown: a
    /// remote service may echo a credential back.
    #[error("{location}: {}", crate::secrets::redact(&.source.to_string()))]
    Storage {
        location: String,
        #[source]
        source: StorageSource,
    },

    /// Retired, or blocked by the governance standards.
    #[error("{0}")]
    NotServed(String),

    /// The mesh has no product of that name.
    #[error("no such product")]
    NoSuchProduct,

    #[error("storage at {location} does not match the contract {contract}: {}", .problems.join("; "))]
    SchemaMismatch {
        location: String,
        contract: String,
        problems: Vec<String>,
    },
}

impl CatalogError {
    /// A storage failure at `location`: `source` is the error it came from (or a message).
    pub(crate) fn storage(
        location: impl std::fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        CatalogError::Storage {
            location: location.to_string(),
            source: Arc::from(source.into()),
        }
    }
}

/// An object-store request that failed, with the store it went to. Its words are chosen by the
/// kind of error (object_store maps HTTP 401/403/404 to its own variants), never by its text.
/// A failed `list` on S3 or GCS comes back as `Generic` whatever the status
/// (apache/arrow-rs-object-store#851, open in 0.13.2): it is shown with the store's own message
/// (which has the status and the S3 error code) and no lead words.
#[derive(Debug, thiserror::Error)]
#[error("{}{source} ({store})", lead(.source))]
pub struct StoreRequestFailed {
    pub store: String,
    #[source]
    pub source: object_store::Error,
}

fn lead(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::NotFound { .. } => "not found: ",
        object_store::Error::PermissionDenied { .. } => {
            "the store refused access (missing permission or rejected credentials): "
        }
        object_store::Error::Unauthenticated { .. } => "the store rejected the credentials: ",
        _ => "",
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
