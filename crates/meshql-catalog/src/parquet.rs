//! Parquet output ports: a file, a directory, a glob, or a hive-partitioned directory.
//!
//! Served through DataFusion's `ListingTable`, so projection, filter pushdown, row-group pruning
//! by statistics and partition pruning all come from DataFusion. Hive partition columns
//! (`dir/order_date=2024-01-01/part-0.parquet`) are discovered from the directory names and
//! typed from the contract (a `date` column becomes `Date32`), so they can be filtered on and
//! prune whole directories.

use std::sync::Arc;

use std::any::Any;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use meshql_contract::SchemaObject;
use url::Url;

use crate::conform::arrow_type;
use crate::error::{CatalogError, Result};
use crate::ownership::ForeignDirs;
use crate::store::{as_directory, StoreRegistry};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;

/// Opens the Parquet data at `url`.
pub async fn open(
    state: &dyn Session,
    stores: &StoreRegistry,
    url: &Url,
    contract: &SchemaObject,
    table: &str,
    foreign: ForeignDirs,
) -> Result<Arc<dyn TableProvider>> {
    let err = |e: datafusion::error::DataFusionError| CatalogError::storage(url, e);
    let is_glob = url.path().contains(['*', '?', '[']);
    let single_file = !is_glob && stores.is_object(url).await?;
    let table_url = if is_glob && url.scheme() == "file" {
        // DataFusion expands globs in local paths, not in URLs
        let path = url
            .to_file_path()
            .map_err(|()| CatalogError::storage(url, "not a local path"))?;
        ListingTableUrl::parse(path.to_string_lossy()).map_err(err)?
    } else if single_file || is_glob {
        ListingTableUrl::parse(url.as_str()).map_err(err)?
    } else {
        ListingTableUrl::parse(as_directory(url).as_str()).map_err(err)?
    };
    // The engine's Parquet options (`datafusion.execution.parquet.*` in mesh.yaml): pushdown,
    // view types, metadata hints. `ParquetFormat::default()` would ignore them.
    let format = ParquetFormat::default().with_options(state.default_table_options().parquet);
    let mut options = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_collect_stat(true)
        // The session's parallelism (ListingOptions' own default is one group of files; the
        // optimiser re-splits only scans above 10 MB, so small multi-file products stayed serial).
        .with_target_partitions(state.config().target_partitions());
    if !single_file && !is_glob {
        let partition_names = options.infer_partitions(state, &table_url).await.map_err(err)?;
        let partition_cols: Vec<(String, DataType)> = partition_names
            .into_iter()
            .map(|name| {
                let dt = contract
                    .properties
                    .iter()
                    .find(|p| p.storage_name() == name)
                    .map(arrow_type)
                    .unwrap_or(DataType::Utf8);
                (name, dt)
            })
            .collect();
        options = options.with_table_partition_cols(partition_cols);
    }
    let file_schema = options
        .infer_schema(state, &table_url)
        .await
        .map_err(|e| CatalogError::storage(url, format!("cannot read the Parquet schema: {e}")))?;
    if file_schema.fields().is_empty() {
        return Err(CatalogError::storage(url, "no Parquet files found"));
    }
    let partition_columns = options
        .table_partition_cols
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(file_schema);
    let listing = ListingTable::try_new(config).map_err(err)?;
    Ok(Arc::new(ParquetTable {
        listing,
        location: url.to_string(),
        table: table.to_string(),
        single_file,
        partition_columns,
        foreign,
    }))
}

/// DataFusion's listing table, which lists the files on every scan, and treats "no files" as an
/// empty table. For a product that had data when it was opened, no files means they were deleted
/// (or the listing failed quietly): that must be an error, never an empty answer. The one
/// legitimate case — a filter on partition columns matching no directory — is let through.
#[derive(Debug)]
struct ParquetTable {
    listing: ListingTable,
    location: String,
    /// `mesh.<domain>.<product>`, for messages.
    table: String,
    single_file: bool,
    partition_columns: Vec<String>,
    /// Other domains' directories: no file listed may lie in one (through a link).
    foreign: ForeignDirs,
}

#[async_trait]
impl TableProvider for ParquetTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn table_type(&self) -> TableType {
        self.listing.table_type()
    }

    /// At most Inexact ([`crate::store::at_most_inexact`]).
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(crate::store::at_most_inexact(
            self.listing.supports_filters_pushdown(filters)?,
        ))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let plan = self.listing.scan(state, projection, filters, limit).await?;
        let files = plan
            .as_any()
            .downcast_ref::<DataSourceExec>()
            .and_then(|d| d.data_source().as_any().downcast_ref::<FileScanConfig>());
        if let Some(config) = files {
            if config.object_store_url.as_str().starts_with("file://") {
                for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                    let path = std::path::Path::new("/").join(file.object_meta.location.as_ref());
                    self.foreign.check_path(&self.table, &path)?;
                }
            }
        }
        if plan.as_any().is::<EmptyExec>() && limit != Some(0) {
            // A filter on a partition column, or a constant one (`NULL`, `false`), may prune
            // every file: that is an empty answer, not missing data.
            let pruned_by_partition = filters.iter().any(|f| {
                let columns = f.column_refs();
                columns.is_empty()
                    || (!self.single_file
                        && columns
                            .iter()
                            .any(|c| self.partition_columns.iter().any(|p| p == &c.name)))
            });
            if !pruned_by_partition {
                return Err(DataFusionError::Execution(format!(
                    "{}: its Parquet data at {} was not found (deleted since the product was opened?)",
                    self.table, self.location
                )));
            }
        }
        Ok(plan)
    }
}
