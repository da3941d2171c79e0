//! Delta Lake output ports, through delta-rs (`deltalake`).
//!
//! The latest version is served unless the contract pins one (`deltaVersion`). delta-rs's
//! provider prunes partitions and skips files with the statistics in the Delta log, and pushes
//! projections and filters into its Parquet scan.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::error::{CatalogError, Result};
use crate::store::{as_directory, StoreRegistry};

/// An opened Delta table.
pub struct DeltaSource {
    pub provider: Arc<dyn TableProvider>,
    table: DeltaTable,
}

impl DeltaSource {
    /// The table version that is served.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// When the served version was committed (milliseconds since the epoch).
    pub fn committed_ms(&self) -> Option<i64> {
        let version = self.table.version()?;
        self.table.snapshot().ok()?.version_timestamp(version)
    }

    /// The newest version in the log (one listing of `_delta_log/`).
    pub async fn latest_version(&self) -> Result<u64> {
        self.table
            .get_latest_version()
            .await
            .map_err(|e| CatalogError::storage(self.table.table_url(), e))
    }
}

/// Opens the Delta table at `url`, at `version` if given.
pub async fn open(stores: &StoreRegistry, url: &Url, version: Option<u64>) -> Result<DeltaSource> {
    let url = as_directory(url);
    let store = stores.store_for(&url)?;
    let mut builder = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| CatalogError::storage(&url, e))?
        .with_storage_backend(store, url.clone());
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    let table = builder.load().await.map_err(|e| {
        let msg = e.to_string();
        if msg.contains("Not a Delta table") || msg.contains("No files in log segment") {
            CatalogError::storage(&url, format!("not a Delta table (no readable _delta_log): {msg}"))
        } else {
            CatalogError::storage(&url, msg)
        }
    })?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| CatalogError::storage(&url, e))?;
    Ok(DeltaSource { provider, table })
}
