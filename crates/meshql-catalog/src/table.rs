//! One product's table: opened on first use, checked against its contract, cached, refreshed.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::{provider_as_source, ViewTable};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use meshql_contract::{PortBinding, TableEntry, VersionPin};
use tokio::sync::Mutex;

use crate::conform::{self, Conformance};
use crate::error::{CatalogError, Result};
use crate::format::{self, OpenRequest, Source};
use crate::ownership::ForeignDirs;
use crate::store::StoreRegistry;

/// What every product table shares: where the mesh is, its stores, the runtime, the refresh rule.
#[derive(Debug)]
pub struct CatalogContext {
    pub stores: Arc<StoreRegistry>,
    pub runtime: Arc<RuntimeEnv>,
    /// The sessions' DataFusion configuration, also used to open products (how many groups
    /// a product's files are dealt into, how Parquet schemas are read).
    pub engine: SessionConfig,
    /// How old a check for new commits may be before the next query checks again.
    pub refresh: Duration,
    /// Every domain and its directory: a product reads no file in another domain's.
    pub domains: Vec<(String, std::path::PathBuf)>,
}

/// A product's table as served: the contract's columns over the storage scan.
#[derive(Debug, Clone)]
pub struct OpenedTable {
    pub provider: Arc<dyn TableProvider>,
    pub conformance: Conformance,
    /// The storage version served: Delta version or Iceberg snapshot, when the format has one.
    pub version: Option<i64>,
    /// When the served version was committed (ms since the epoch), for Delta and Iceberg.
    pub committed_ms: Option<i64>,
}

/// Which version of a product a query reads, when not the served one: `FOR VERSION AS OF`
/// (a Delta version or an Iceberg snapshot id) or `FOR TIMESTAMP AS OF` (the version that was
/// current at that time, in milliseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsOf {
    Version(i64),
    Timestamp(i64),
}

impl AsOf {
    /// The suffix of a table name that asks for this version: `@v12`, `@2024-06-01T00:00:00Z`.
    pub fn suffix(&self) -> String {
        match self {
            AsOf::Version(v) => format!("@v{v}"),
            AsOf::Timestamp(ms) => format!("@{}", crate::time::rfc3339(*ms)),
        }
    }

    /// `name@v12` / `name@2024-06-01T00:00:00Z` / `name@2024-06-01` → (`name`, the version).
    /// Names without `@` are `(name, None)`; a malformed suffix is an error.
    pub fn split(name: &str) -> std::result::Result<(&str, Option<AsOf>), String> {
        let Some((base, spec)) = name.rsplit_once('@') else {
            return Ok((name, None));
        };
        Ok((base, Some(AsOf::parse(spec)?)))
    }

    /// `v12` / `12` → a version; an RFC 3339 time, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) or a date
    /// → a time.
    pub fn parse(spec: &str) -> std::result::Result<AsOf, String> {
        let spec = spec.trim();
        let digits = spec.strip_prefix('v').unwrap_or(spec);
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
            return digits
                .parse()
                .map(AsOf::Version)
                .map_err(|_| format!("version `{spec}` is out of range"));
        }
        crate::time::parse(spec).map(AsOf::Timestamp).ok_or_else(|| {
            format!("`{spec}` is neither a version (v12) nor a time (2024-06-01T12:00:00Z, 2024-06-01 12:00:00, 2024-06-01)")
        })
    }
}

/// Versions read by time travel, kept open; bounded.
const HISTORY_CACHE: usize = 16;

/// The version a contract pins its port to, as a time-travel target.
fn pinned(storage: &meshql_contract::StorageSpec) -> Option<AsOf> {
    match storage.pin? {
        VersionPin::DeltaVersion(v) => i64::try_from(v).ok().map(AsOf::Version),
        VersionPin::IcebergSnapshot(s) => Some(AsOf::Version(s)),
    }
}

struct Loaded {
    opened: OpenedTable,
    source: Source,
    checked: Instant,
}

/// One table of the mesh with its lazily opened storage.
pub struct ProductTable {
    entry: TableEntry,
    ctx: Arc<CatalogContext>,
    cache: Mutex<Option<Loaded>>,
    /// Earlier versions queries asked for, with when they were opened: a version number
    /// always names the same data; a time is re-resolved after the refresh interval (a time in
    /// the future names newer commits as they arrive).
    history: Mutex<HashMap<AsOf, (OpenedTable, Instant)>>,
}

impl std::fmt::Debug for ProductTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductTable")
            .field("table", &self.entry.qualified_name())
            .finish()
    }
}

impl ProductTable {
    pub fn new(entry: TableEntry, ctx: Arc<CatalogContext>) -> Self {
        ProductTable {
            entry,
            ctx,
            cache: Mutex::new(None),
            history: Mutex::new(HashMap::new()),
        }
    }

    pub fn entry(&self) -> &TableEntry {
        &self.entry
    }

    /// The table, opening storage on first use and re-opening it when newer commits exist.
    pub async fn open(&self) -> Result<OpenedTable> {
        let binding = self.servable()?;
        let mut cache = self.cache.lock().await;
        if let Some(loaded) = cache.as_mut() {
            if loaded.checked.elapsed() < self.ctx.refresh || !self.may_change(binding) {
                return Ok(loaded.opened.clone());
            }
            if !self.has_new_commits(loaded).await? {
                loaded.checked = Instant::now();
                return Ok(loaded.opened.clone());
            }
            tracing::info!(table = %self.entry.qualified_name(), "new commits: re-opening");
        }
        let loaded = self.load(binding, None).await?;
        let opened = loaded.opened.clone();
        *cache = Some(loaded);
        Ok(opened)
    }

    /// The table at its served version, or at `as_of`.
    pub async fn open_at(&self, as_of: Option<AsOf>) -> Result<OpenedTable> {
        match as_of {
            None => self.open().await,
            Some(as_of) => self.open_as_of(as_of).await,
        }
    }

    /// The table at an earlier version (time travel), checked against the contract like the
    /// served one. Parquet products have no versions; a port the contract pins serves that
    /// version only (its contract describes no other).
    pub async fn open_as_of(&self, as_of: AsOf) -> Result<OpenedTable> {
        let binding = self.servable()?;
        if !format::has_versions(binding.storage.format) {
            return Err(CatalogError::storage(
                &binding.storage.location,
                "a Parquet product has no versions to travel to (only Delta and Iceberg products do)",
            ));
        }
        if let Some(pin @ AsOf::Version(v)) = pinned(&binding.storage) {
            if as_of != pin {
                return Err(CatalogError::storage(
                    &binding.storage.location,
                    format!("the contract pins this output port to version {v}; it serves no other version"),
                ));
            }
        }
        // Both the readability check and the planner open the table: the second is served here.
        if let Some((t, opened)) = self.history.lock().await.get(&as_of) {
            if matches!(as_of, AsOf::Version(_)) || opened.elapsed() < self.ctx.refresh {
                return Ok(t.clone());
            }
        }
        let opened = self.load(binding, Some(as_of)).await?.opened;
        let mut history = self.history.lock().await;
        if history.len() >= HISTORY_CACHE {
            history.clear();
        }
        history.insert(as_of, (opened.clone(), Instant::now()));
        Ok(opened)
    }

    /// The binding of a product that may be served at all (its contract loaded; not retired or
    /// blocked by the governance standards).
    fn servable(&self) -> Result<&Arc<PortBinding>> {
        let binding = self
            .entry
            .binding
            .as_ref()
            .map_err(|e| CatalogError::Contract(e.clone()))?;
        if let Some(reason) = self.entry.compliance.refusal() {
            return Err(CatalogError::NotServed(reason));
        }
        Ok(binding)
    }

    /// Pinned versions and metadata-file locations never change.
    fn may_change(&self, binding: &PortBinding) -> bool {
        binding.storage.pin.is_none() && !format::fixed_location(&binding.storage)
    }

    async fn has_new_commits(&self, loaded: &Loaded) -> Result<bool> {
        let binding = self.servable()?;
        loaded.source.has_new_commits(&self.ctx.stores, &binding.storage).await
    }

    async fn load(&self, binding: &PortBinding, as_of: Option<AsOf>) -> Result<Loaded> {
        let started = Instant::now();
        let storage = &binding.storage;
        let as_of = as_of.or_else(|| pinned(storage));
        // The engine's options decide how storage is read (parallelism, Parquet options).
        let state = Arc::new(
            SessionStateBuilder::new()
                .with_config(self.ctx.engine.clone())
                .with_runtime_env(self.ctx.runtime.clone())
                .build(),
        );
        let table = format!("mesh.{}", self.entry.qualified_name());
        let foreign = ForeignDirs::new(
            self.ctx.domains.iter().map(|(d, dir)| (d.as_str(), dir.as_path())),
            &self.entry.domain,
        );
        let stored = format::open(OpenRequest {
            state,
            stores: &self.ctx.stores,
            storage,
            as_of,
            foreign,
            table: &table,
            ident: (self.entry.domain.as_str(), self.entry.name.as_str()),
        })
        .await?;
        let url = stored.location;
        let (provider, source, version, committed_ms) =
            (stored.provider, stored.source, stored.version, stored.committed_ms);
        let (hive, renamed) = (stored.hive_columns, stored.renamed);
        // Partition directories hold text that the view turns into the contract's type.
        let hive: Vec<(String, DataType)> = hive
            .into_iter()
            .map(|name| {
                let typed = binding
                    .schema
                    .properties
                    .iter()
                    .find(|p| p.storage_name() == name)
                    .map(conform::arrow_type)
                    .unwrap_or(DataType::Utf8);
                (name, typed)
            })
            .collect();
        let stored = provider.schema();
        let typed = arrow::datatypes::Schema::new(
            stored
                .fields()
                .iter()
                .map(|f| match hive.iter().find(|(n, _)| n == f.name()) {
                    Some((_, t)) => Arc::new(f.as_ref().clone().with_data_type(t.clone()).with_nullable(true)),
                    // Renamed since this (older) snapshot: under its current name.
                    None => match renamed.iter().find(|(_, then)| then == f.name()) {
                        Some((now, _)) => Arc::new(f.as_ref().clone().with_name(now)),
                        None => f.clone(),
                    },
                })
                .collect::<Vec<_>>(),
        );
        let conformance = conform::check_version(&typed, &binding.schema, as_of.is_some());
        if !conformance.is_ok() {
            return Err(CatalogError::SchemaMismatch {
                location: url.to_string(),
                contract: binding.contract.source.display().to_string(),
                problems: conformance.errors,
            });
        }
        let view = contract_view(&self.entry, provider, &conformance, &hive, &renamed)
            .map_err(|e| CatalogError::storage(&url, e))?;
        tracing::debug!(table = %self.entry.qualified_name(), elapsed = ?started.elapsed(), "opened");
        Ok(Loaded {
            opened: OpenedTable {
                provider: view,
                conformance,
                version,
                committed_ms,
            },
            source,
            checked: Instant::now(),
        })
    }
}

/// `SELECT <storage col> AS <contract col>, … FROM <storage>`: the contract's shape over the
/// storage scan. DataFusion inlines it at planning, so projections and filters still reach the
/// storage scan.
fn contract_view(
    entry: &TableEntry,
    storage: Arc<dyn TableProvider>,
    conformance: &Conformance,
    hive: &[(String, DataType)],
    renamed: &[(String, String)],
) -> DFResult<Arc<dyn TableProvider>> {
    let table_ref = TableReference::full("mesh", entry.domain.as_str(), entry.name.as_str());
    let table = format!("mesh.{}", entry.qualified_name());
    let exprs: Vec<Expr> = conformance
        .columns
        .iter()
        .map(|(stored, name)| {
            if conformance.absent.contains(name) {
                // Not in this (older) version of the table.
                let typed = contract_type(entry, name).unwrap_or(DataType::Utf8);
                return Expr::Literal(
                    datafusion::common::ScalarValue::try_from(&typed).unwrap_or(datafusion::common::ScalarValue::Null),
                    None,
                )
                .alias(name);
            }
            // The column's name in the version read (it may have been renamed since).
            let stored = renamed
                .iter()
                .find(|(now, _)| now == stored)
                .map_or(stored, |(_, then)| then);
            let c = Expr::Column(Column::new(Some(table_ref.clone()), stored));
            let stored_type = storage
                .schema()
                .field_with_name(stored)
                .ok()
                .map(|f| f.data_type().clone());
            let contract = contract_type(entry, name);
            match (hive.iter().find(|(n, _)| n == stored), stored_type) {
                // A partition directory's text, as the contract's value.
                (Some((_, typed)), _) => crate::hive::HiveValue::call(c, stored, &table, typed.clone()).alias(name),
                (None, Some(DataType::Null)) => Expr::Cast(datafusion::logical_expr::Cast::new(
                    Box::new(c),
                    contract.unwrap_or(DataType::Utf8),
                ))
                .alias(name),
                (None, Some(t)) if crate::convert::is_uuid(&t) && contract == Some(DataType::Utf8) => {
                    crate::convert::UuidText::call(c).alias(name)
                }
                // One spelling of UTC whatever the format (Iceberg's `timestamptz` reads as
                // "+00:00", Parquet's and Delta's as "UTC"): the same instants.
                (None, Some(DataType::Timestamp(unit, Some(tz)))) if is_utc_alias(&tz) => Expr::Cast(
                    datafusion::logical_expr::Cast::new(Box::new(c), DataType::Timestamp(unit, Some("UTC".into()))),
                )
                .alias(name),
                (None, _) if stored == name => c,
                (None, _) => c.alias(name),
            }
        })
        .collect();
    let plan = LogicalPlanBuilder::scan(table_ref.clone(), provider_as_source(storage), None)?
        .project(exprs)?
        .build()?;
    Ok(Arc::new(ContractTable {
        view: ViewTable::new(plan, None),
    }))
}

/// Zone names that mean UTC but are not spelled `UTC`.
fn is_utc_alias(tz: &str) -> bool {
    matches!(
        tz,
        "+00:00" | "+0000" | "+00" | "Z" | "Etc/UTC" | "Etc/GMT" | "GMT" | "Zulu"
    )
}

/// The Arrow type meshql gives contract column `name` where storage does not decide it.
fn contract_type(entry: &TableEntry, name: &str) -> Option<DataType> {
    let binding = entry.binding.as_ref().ok()?;
    let prop = binding.schema.properties.iter().find(|p| p.name == name)?;
    Some(conform::arrow_type(prop))
}

/// A [`ViewTable`] that presents itself as a base table: to clients it is the product's table.
#[derive(Debug)]
struct ContractTable {
    view: ViewTable,
}

#[async_trait]
impl TableProvider for ContractTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.view.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.view.scan(state, projection, filters, limit).await
    }
}

/// Stands in for a product that cannot be served: it has the contract's columns (so metadata
/// queries keep working) and fails any scan with the reason.
#[derive(Debug)]
pub struct UnavailableTable {
    schema: SchemaRef,
    why: crate::ProductUnavailable,
}

impl UnavailableTable {
    pub fn new(entry: &TableEntry, why: crate::ProductUnavailable) -> Self {
        let schema = match &entry.binding {
            Ok(b) => conform::contract_schema(&b.schema),
            Err(_) => arrow::datatypes::Schema::empty(),
        };
        UnavailableTable {
            schema: Arc::new(schema),
            why,
        }
    }
}

#[async_trait]
impl TableProvider for UnavailableTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::External(Box::new(self.why.clone())))
    }
}
