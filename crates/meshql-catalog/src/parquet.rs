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
    let mut listed: Option<Vec<ObjectMeta>> = None;
    let list_all = || async {
        use futures::TryStreamExt;
        let store = state.runtime_env().object_store(&table_url).map_err(err)?;
        let files = table_url
            .list_all_files(state, store.as_ref(), extension)
            .await
            .map_err(err)?
            .try_collect::<Vec<ObjectMeta>>()
            .await
            .map_err(err);
        files
    };
    if url.scheme() == "file" {
        let files = listed.insert(list_all().await?);
        for file in files.iter() {
            let path = std::path::Path::new("/").join(file.location.as_ref());
            foreign.check_path(table, &path).map_err(err)?;
        }
    }
    // Hive partition columns (`key=value` directories), read as the directories' text: the
    // contract's view decodes and types them (crate::hive). A column that the files hold too
    // (polars writes both) is read from the files.
    // DataFusion infers them from ten files and reads a file's values only from `key=value`
    // directories directly below the location, in that order: a file elsewhere (`a/k=1/…`
    // beside `k=3/…`, the eleventh file, another key) would get no values and fail the query,
    // or be left out. Every file is looked at here, and a product whose files disagree is
    // refused, naming a file that does not fit.
    let partition_names = if single_file {
        Vec::new()
    } else {
        let files = match listed.take() {
            Some(files) => files,
            None => list_all().await?,
        };
        let names = hive_keys(&table_url, &files).map_err(|e| CatalogError::storage(url, e))?;
        listed = Some(files);
        names
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
    if let Some(files) = listed.as_deref().filter(|_| !partition_columns.is_empty()) {
        check_partition_directories(&table_url, files, &partition_columns)
            .map_err(|e| CatalogError::storage(url, e))?;
        // DataFusion's listing of a partitioned directory skips, without a word, files in
        // directories that are not `key=value` (`other/f.parquet` beside `k=1/`): refused too.
        if glob.is_none() {
            use futures::TryStreamExt;
            let store = state.runtime_env().object_store(&table_url).map_err(err)?;
            let all: Vec<ObjectMeta> = store
                .list(Some(table_url.prefix()))
                .try_collect()
                .await
                .map_err(|e| CatalogError::storage(url, e))?;
            if let Some(skipped) = all
                .iter()
                .find(|f| f.location.as_ref().ends_with(extension) && !table_url.contains(&f.location, true))
            {
                return Err(CatalogError::storage(
                    url,
                    not_below(&relative(&table_url, skipped), &partition_columns),
                ));
            }
        }
    }
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

fn relative(table_url: &ListingTableUrl, file: &ObjectMeta) -> String {
    table_url
        .strip_prefix(&file.location)
        .map(|parts| parts.collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

fn not_below(file: &str, columns: &[String]) -> String {
    format!(
        "the file {file} is not below the hive partition directories {} that the other files are in \
         (meshql reads `key=value` directories directly below the location, in the same order for every file)",
        if columns.is_empty() {
            "(none)".to_string()
        } else {
            columns.iter().map(|c| format!("{c}=…")).collect::<Vec<_>>().join("/")
        }
    )
}

/// The partition keys of the files' `key=value` directories, which must be the same for every
/// file: those of most files; the message names a file with others.
fn hive_keys(table_url: &ListingTableUrl, files: &[ObjectMeta]) -> std::result::Result<Vec<String>, String> {
    let keys_of = |file: &ObjectMeta| -> Vec<String> {
        let parts: Vec<&str> = table_url
            .strip_prefix(&file.location)
            .map(|p| p.collect())
            .unwrap_or_default();
        parts[..parts.len().saturating_sub(1)]
            .iter()
            .filter_map(|part| part.split_once('=').map(|(key, _)| key.to_string()))
            .collect()
    };
    let keyed: Vec<(Vec<String>, &ObjectMeta)> = files.iter().map(|f| (keys_of(f), f)).collect();
    let mut counts: std::collections::BTreeMap<&[String], usize> = Default::default();
    for (keys, _) in &keyed {
        *counts.entry(keys.as_slice()).or_default() += 1;
    }
    let Some((common, _)) = counts.iter().max_by_key(|(keys, n)| (**n, keys.len())) else {
        return Ok(Vec::new());
    };
    let common = common.to_vec();
    match keyed.iter().find(|(keys, _)| *keys != common) {
        Some((_, file)) => Err(not_below(&relative(table_url, file), &common)),
        None => Ok(common),
    }
}

/// Whether every file lies below the partition directories `columns` (`k1=…/k2=…/`), directly
/// under the location; the message names the first that does not.
fn check_partition_directories(
    table_url: &ListingTableUrl,
    files: &[ObjectMeta],
    columns: &[String],
) -> std::result::Result<(), String> {
    use datafusion::datasource::listing::helpers::parse_partitions_for_path;
    for file in files {
        let values = parse_partitions_for_path(table_url, &file.location, columns.iter().map(String::as_str));
        if values.is_none_or(|v| v.len() != columns.len()) {
            return Err(not_below(&relative(table_url, file), columns));
        }
    }
    Ok(())
}
