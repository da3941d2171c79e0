//! Delta Lake output ports, through delta-rs (`deltalake`).
//!
//! The latest version is served unless the contract pins one (`deltaVersion`) or a query asks
//! for an earlier one ([`AsOf`]). delta-rs's provider prunes partitions and skips files with the
//! statistics in the Delta log, and pushes projections and filters into its Parquet scan.
//!
//! Tables on object stores are read with meshql's client for the bucket (delta-rs's own S3,
//! GCS and Azure integrations are not linked): meshql only reads, so delta-rs's default log
//! store serves every scheme, registered once for the remote ones.

use std::any::Any;
use std::sync::{Arc, Once};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result as DFResult;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::logstore::{
    default_logstore, logstore_factories, LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::delta_stats::{with_column_ranges, ColumnRanges};
use crate::error::{CatalogError, Result};
use crate::ownership::ForeignDirs;
use crate::store::{as_directory, StoreRegistry};
use crate::table::AsOf;

/// delta-rs's default log store, for the remote schemes meshql serves.
#[derive(Debug)]
struct ReadLogStoreFactory;

impl LogStoreFactory for ReadLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = logstore_factories();
        for scheme in [
            "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https",
        ] {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                if !factories.contains_key(&url) {
                    factories.insert(url, Arc::new(ReadLogStoreFactory));
                }
            }
        }
    });
}

/// An opened Delta table.
pub struct DeltaSource {
    pub provider: Arc<dyn TableProvider>,
    table: DeltaTable,
    committed_ms: Option<i64>,
}

impl DeltaSource {
    /// The table version that is served.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// When the served version was committed (milliseconds since the epoch).
    pub fn committed_ms(&self) -> Option<i64> {
        self.committed_ms
    }

    /// The newest version in the log (one listing of `_delta_log/`).
    pub async fn latest_version(&self) -> Result<u64> {
        self.table
            .get_latest_version()
            .await
            .map_err(|e| CatalogError::storage(self.table.table_url(), e))
    }
}

/// When the served version was committed. The snapshot knows it only for the commits it replayed
/// from JSON; after a checkpoint (manual or automatic) of that very version it does not, and the
/// version's commit file is read for its `commitInfo`.
async fn commit_time(table: &DeltaTable) -> Option<i64> {
    let version = table.version()?;
    if let Some(ms) = table.snapshot().ok()?.version_timestamp(version) {
        return Some(ms);
    }
    match table.history(Some(1)).await {
        Ok(mut infos) => infos.next().and_then(|info| info.timestamp),
        Err(e) => {
            tracing::debug!(version, error = %e, "cannot read the Delta commit's info");
            None
        }
    }
}

/// delta-rs's provider, whose scans carry the log's column ranges (see [`crate::delta_stats`]).
#[derive(Debug)]
struct WithColumnRanges {
    inner: Arc<dyn TableProvider>,
    ranges: Arc<ColumnRanges>,
}

#[async_trait]
impl TableProvider for WithColumnRanges {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    /// At most Inexact ([`crate::store::at_most_inexact`]).
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(crate::store::at_most_inexact(
            self.inner.supports_filters_pushdown(filters)?,
        ))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        with_column_ranges(plan, &self.ranges)
    }
}

/// Refuses a table whose log adds a local data file in another domain's directory (a relative
/// path climbing out with `..`, an absolute `file://` URL).
fn check_data_files(
    actions: &arrow::array::RecordBatch,
    table_url: &Url,
    foreign: &ForeignDirs,
    table: &str,
) -> datafusion::error::Result<()> {
    use arrow::array::AsArray;
    let Some(paths) = actions.column_by_name("path") else {
        return Ok(());
    };
    let paths = arrow::compute::cast(paths, &arrow::datatypes::DataType::Utf8)?;
    for path in paths.as_string::<i32>().iter().flatten() {
        let location = match Url::parse(path) {
            Ok(absolute) => absolute,
            Err(_) => match table_url.join(path) {
                Ok(joined) => joined,
                Err(_) => continue,
            },
        };
        foreign.check_location(table, location.as_str())?;
    }
    Ok(())
}

/// Opens the Delta table at `url`: its latest version, or the one `as_of` names (a version
/// number, or the last version committed at or before a time). Scans follow `engine`'s settings.
/// [`crate::format`]'s entrance: the product's Delta table at the version asked for.
pub(crate) async fn open_stored(r: crate::format::OpenRequest<'_>) -> Result<crate::format::Stored> {
    let url = r.stores.resolve(&r.storage.location)?;
    let d = open(r.state, r.stores, &url, r.as_of, &r.foreign, r.table).await?;
    Ok(crate::format::Stored {
        location: url.clone(),
        provider: d.provider.clone(),
        version: d.version().and_then(|v| i64::try_from(v).ok()),
        committed_ms: d.committed_ms(),
        hive_columns: Vec::new(),
        renamed: Vec::new(),
        source: crate::format::Source::Delta(d),
    })
}

pub async fn open(
    engine: Arc<SessionState>,
    stores: &StoreRegistry,
    url: &Url,
    as_of: Option<AsOf>,
    foreign: &ForeignDirs,
    table_name: &str,
) -> Result<DeltaSource> {
    register_log_stores();
    let url = as_directory(url);
    let store = stores.store_for(&url)?;
    let mut builder = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| CatalogError::storage(&url, e))?
        .with_storage_backend(store.clone(), url.clone());
    match as_of {
        None => {}
        Some(AsOf::Version(v)) => {
            let v = u64::try_from(v).map_err(|_| CatalogError::storage(&url, format!("no Delta version {v}")))?;
            // delta-rs 0.32 looks for a version beyond the newest in time linear in the number
            // (21 s for 1e8; i64::MAX never ends): ask for the newest first.
            let newest = DeltaTableBuilder::from_url(url.clone())
                .map_err(|e| CatalogError::storage(&url, e))?
                .with_storage_backend(store.clone(), url.clone())
                .build()
                .map_err(|e| CatalogError::storage(&url, e))?
                .get_latest_version()
                .await
                .map_err(|e| CatalogError::storage(&url, e))?;
            if v > newest {
                return Err(CatalogError::storage(
                    &url,
                    format!("no Delta version {v} (the newest is {newest})"),
                ));
            }
            builder = builder.with_version(v);
        }
        Some(AsOf::Timestamp(ms)) => {
            let at = DateTime::<Utc>::from_timestamp_millis(ms)
                .ok_or_else(|| CatalogError::storage(&url, format!("timestamp {ms} ms is out of range")))?;
            builder = builder.with_timestamp(at);
        }
    }
    let table = builder.load().await.map_err(|e| match e {
        // delta-rs 0.32 also reports a log without commits as NotATable (its kernel gives a
        // generic error, which it recognises by text).
        deltalake::DeltaTableError::NotATable(msg) => {
            CatalogError::storage(&url, format!("not a Delta table (no readable _delta_log): {msg}"))
        }
        other => CatalogError::storage(&url, other.to_string()),
    })?;
    // delta-rs takes its scan settings from the session: without one it pushes every filter
    // into the Parquet decoder (late materialisation), which DataFusion leaves off by default
    // and which made filtered TPC-H scans up to 2x slower than the same data as plain Parquet.
    let inner = table
        .table_provider()
        .with_session(engine)
        .await
        .map_err(|e| CatalogError::storage(&url, e))?;
    let actions = table.snapshot().and_then(|s| s.add_actions_table(true));
    if let Ok(actions) = &actions {
        check_data_files(actions, &url, foreign, table_name).map_err(|e| CatalogError::storage(&url, e))?;
    }
    let ranges = actions
        .map(|actions| ColumnRanges::from_add_actions(&actions))
        .unwrap_or_else(|e| {
            tracing::debug!(table = %url, error = %e, "no column statistics from the Delta log");
            ColumnRanges::default()
        });
    let provider = Arc::new(WithColumnRanges {
        inner,
        ranges: Arc::new(ranges),
    });
    let committed_ms = commit_time(&table).await;
    let source = DeltaSource {
        provider,
        table,
        committed_ms,
    };
    // delta-rs answers a time before the first commit with the first version; there was no
    // table then, so that is an error, as for Iceberg.
    if let (Some(AsOf::Timestamp(ms)), Some(committed)) = (as_of, source.committed_ms()) {
        if committed > ms {
            return Err(CatalogError::storage(
                &url,
                format!(
                    "the table has no version at or before {} (its first is from {})",
                    crate::time::rfc3339(ms),
                    crate::time::rfc3339(committed)
                ),
            ));
        }
    }
    Ok(source)
}
