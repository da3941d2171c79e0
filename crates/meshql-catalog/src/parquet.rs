//! Parquet output ports: a file, a directory, a glob, or a hive-partitioned directory.
//!
//! Served through DataFusion's `ListingTable`, so projection, filter pushdown, row-group pruning
//! by statistics and partition pruning all come from DataFusion. Hive partition columns
//! (`dir/order_date=2024-01-01/part-0.parquet`) are discovered from the directory names (also
//! below a glob), read as their text and decoded and typed from the contract in the product's
//! view ([`crate::hive`]), so they can be filtered on and prune whole directories.

use std::sync::Arc;

use std::any::Any;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::{FileFormat, FileMeta};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::physical_plan::{wrap_partition_type_in_dict, FileSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::{ObjectMeta, ObjectStore};
use url::Url;

use crate::error::{CatalogError, Result};
use crate::glob::GlobLocation;
use crate::ownership::ForeignDirs;
use crate::store::{as_directory, StoreRegistry};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;

/// Opens the Parquet data at `url`.
pub async fn open(
    state: &dyn Session,
    stores: &StoreRegistry,
    url: &Url,
    table: &str,
    foreign: ForeignDirs,
) -> Result<Parquet> {
    let err = |e: datafusion::error::DataFusionError| CatalogError::storage(url, e);
    let glob = GlobLocation::parse(url).map_err(|e| CatalogError::Location {
        location: url.to_string(),
        reason: e.to_string(),
    })?;
    let single_file = glob.is_none() && stores.is_object(url).await?;
    let table_url = match &glob {
        // The directory before the first wildcard, listed through a view that holds only the
        // matching objects (crate::glob). DataFusion ignores files in subdirectories unless
        // a glob admits them: `*` admits every name, the view has chosen.
        Some(glob) => {
            let view = stores.glob_view(glob)?;
            let every_name = glob::Pattern::new("*").map_err(|e| CatalogError::storage(url, e.to_string()))?;
            ListingTableUrl::try_new(view, Some(every_name)).map_err(err)?
        }
        None if single_file => ListingTableUrl::parse(url.as_str()).map_err(err)?,
        None => ListingTableUrl::parse(as_directory(url).as_str()).map_err(err)?,
    }
    // DataFusion caches listings by path, scoped only by the table reference (53.1; the scope
    // came with apache/datafusion#19616): two stores or two globs over one directory would
    // share one listing. The location names the cache entry.
    .with_table_ref(TableReference::bare(url.as_str()));
    // The engine's Parquet options (`datafusion.execution.parquet.*` in mesh.yaml): pushdown,
    // view types, metadata hints. `ParquetFormat::default()` would ignore them.
    let format = ParquetFormat::default().with_options(state.default_table_options().parquet);
    let extension = match &glob {
        Some(g) if g.glob.names_extension() => "",
        _ => ".parquet",
    };
    let mut options = ListingOptions::new(Arc::new(SaneStats(Arc::new(format))))
        .with_file_extension(extension)
        .with_collect_stat(true)
        // The session's parallelism (ListingOptions' own default is one group of files; the
        // optimiser re-splits only scans above 10 MB, so small multi-file products stayed serial).
        .with_target_partitions(state.config().target_partitions());
    // Files in another domain's directory (through a link, a glob) are refused before anything
    // of them is read: their schema would otherwise reach the product's readers in a mismatch
    // error, even for a domain they may not discover.
    if url.scheme() == "file" {
        use futures::TryStreamExt;
        let store = state.runtime_env().object_store(&table_url).map_err(err)?;
        let files: Vec<ObjectMeta> = table_url
            .list_all_files(state, store.as_ref(), extension)
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        for file in &files {
            let path = std::path::Path::new("/").join(file.location.as_ref());
            foreign.check_path(table, &path).map_err(err)?;
        }
    }
    // Hive partition columns (`key=value` directories), read as the directories' text: the
    // contract's view decodes and types them (crate::hive). A column that the files hold too
    // (polars writes both) is read from the files.
    let partition_names = if single_file {
        Vec::new()
    } else {
        options.infer_partitions(state, &table_url).await.map_err(err)?
    };
    let file_schema = options
        .infer_schema(state, &table_url)
        .await
        .map_err(|e| CatalogError::storage(url, format!("cannot read the Parquet schema: {e}")))?;
    if file_schema.fields().is_empty() {
        return Err(CatalogError::storage(url, "no Parquet files found"));
    }
    let partition_columns: Vec<String> = partition_names
        .into_iter()
        .filter(|name| file_schema.field_with_name(name).is_err())
        .collect();
    options = options.with_table_partition_cols(
        partition_columns
            .iter()
            .map(|name| (name.clone(), wrap_partition_type_in_dict(DataType::Utf8)))
            .collect(),
    );
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(file_schema);
    let listing = ListingTable::try_new(config).map_err(err)?;
    Ok(Parquet {
        provider: Arc::new(ParquetTable {
            listing,
            location: url.to_string(),
            table: table.to_string(),
            single_file,
            local: url.scheme() == "file",
            partition_columns: partition_columns.clone(),
            foreign,
        }),
        hive_columns: partition_columns,
    })
}

/// Parquet as DataFusion reads it, with file statistics that its planner can use
/// ([`crate::store::sane_statistics`]).
#[derive(Debug)]
struct SaneStats(Arc<dyn FileFormat>);

#[async_trait]
impl FileFormat for SaneStats {
    fn as_any(&self) -> &dyn Any {
        // Whoever looks for Parquet's own options finds them.
        self.0.as_any()
    }

    fn get_ext(&self) -> String {
        self.0.get_ext()
    }

    fn get_ext_with_compression(&self, c: &FileCompressionType) -> DFResult<String> {
        self.0.get_ext_with_compression(c)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.0.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> DFResult<SchemaRef> {
        self.0.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> DFResult<Statistics> {
        let stats = self.0.infer_stats(state, store, table_schema, object).await?;
        Ok(crate::store::sane_statistics(stats))
    }

    async fn infer_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> DFResult<Option<datafusion::physical_expr::LexOrdering>> {
        self.0.infer_ordering(state, store, table_schema, object).await
    }

    async fn infer_stats_and_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> DFResult<FileMeta> {
        let mut meta = self
            .0
            .infer_stats_and_ordering(state, store, table_schema, object)
            .await?;
        meta.statistics = crate::store::sane_statistics(meta.statistics);
        Ok(meta)
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.0.create_physical_plan(state, conf).await
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        self.0.file_source(table_schema)
    }
}

/// An opened Parquet port.
/// [`crate::format`]'s entrance: the product's Parquet files as a table.
pub(crate) async fn open_stored(r: crate::format::OpenRequest<'_>) -> Result<crate::format::Stored> {
    let url = r.stores.resolve(&r.storage.location)?;
    let p = open(r.state.as_ref(), r.stores, &url, r.table, r.foreign).await?;
    Ok(crate::format::Stored {
        location: url.clone(),
        provider: p.provider,
        version: None,
        committed_ms: None,
        hive_columns: p.hive_columns,
        renamed: Vec::new(),
        source: crate::format::Source::Parquet,
    })
}

pub struct Parquet {
    pub provider: Arc<dyn TableProvider>,
    /// The hive partition columns, whose values are the directories' text (see crate::hive).
    pub hive_columns: Vec<String>,
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
    /// On the local disk (maybe through a glob view).
    local: bool,
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
            if self.local {
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
