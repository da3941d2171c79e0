//! The `mesh` catalog: one schema per domain, one table per product output port.
//!
//! Building the catalog reads nothing from storage; each table opens its storage the first time
//! a query needs it (see [`ProductTable`]), so a mesh of thousands of products is ready at once.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::TableType;
use datafusion::prelude::SessionConfig;
use meshql_contract::{MeshDefinition, TableEntry};

use crate::error::CatalogError;
use crate::store::{StoreConfig, StoreRegistry};
use crate::table::{AsOf, CatalogContext, OpenedTable, ProductTable, UnavailableTable};

/// The name of the catalog that holds the mesh's domains.
pub const MESH_CATALOG: &str = "mesh";

/// The `mesh` catalog over a loaded [`MeshDefinition`].
#[derive(Debug)]
pub struct MeshCatalog {
    definition: Arc<MeshDefinition>,
    schemas: BTreeMap<String, Arc<DomainSchema>>,
    ctx: Arc<CatalogContext>,
}

impl MeshCatalog {
    /// Builds the catalog. `stores` must be the object-store registry of `runtime` (the
    /// DataFusion runtime every session of the mesh shares): see [`MeshCatalog::runtime_for`].
    /// `engine` is the sessions' DataFusion configuration (the mesh's `engine:` options): it
    /// also governs how products are opened — how many groups a product's files are dealt
    /// into, how Parquet schemas are read.
    pub fn new(
        definition: Arc<MeshDefinition>,
        stores: Arc<StoreRegistry>,
        runtime: Arc<RuntimeEnv>,
        engine: SessionConfig,
    ) -> Self {
        Self::build(definition, stores, runtime, engine, |_| None)
    }

    /// The store registry and DataFusion runtime for a mesh: every scan, whatever its format,
    /// gets its object store from the registry.
    pub fn runtime_for(definition: &MeshDefinition) -> DFResult<(Arc<StoreRegistry>, Arc<RuntimeEnv>)> {
        let stores = Arc::new(StoreRegistry::with_settings(&definition.root, &definition.settings));
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(stores.clone())
            .build_arc()?;
        Ok((stores, runtime))
    }

    /// The catalog of a reloaded `definition`: same stores and runtime, and every product whose
    /// documents did not change keeps its opened table (no storage is re-read for them) — unless
    /// the store settings changed, in which case every product is opened anew.
    pub fn reloaded(&self, definition: Arc<MeshDefinition>, engine: SessionConfig) -> Self {
        let engine_changed = !same_engine(&engine, &self.ctx.engine);
        if engine_changed {
            tracing::info!("engine options changed: products are opened anew");
        }
        let stores_changed = self
            .ctx
            .stores
            .reconfigure(StoreConfig::of(&definition.settings, &definition.root));
        if stores_changed {
            tracing::info!("store settings changed: products are opened anew");
        }
        Self::build(
            definition,
            self.ctx.stores.clone(),
            self.ctx.runtime.clone(),
            engine,
            |entry| {
                if stores_changed || engine_changed {
                    return None;
                }
                self.product(&entry.domain, &entry.name)
                    .filter(|old| same_entry(old.entry(), entry))
                    .cloned()
            },
        )
    }

    /// One schema per domain, one table per entry; `reuse` may hand back an already opened
    /// table for an entry.
    fn build(
        definition: Arc<MeshDefinition>,
        stores: Arc<StoreRegistry>,
        runtime: Arc<RuntimeEnv>,
        engine: SessionConfig,
        reuse: impl Fn(&TableEntry) -> Option<Arc<ProductTable>>,
    ) -> Self {
        let refresh = Duration::from_secs(definition.settings.metadata_refresh_seconds);
        // DataFusion caches directory listings, by default forever: new and rewritten Parquet
        // files would never be seen. A listing lives as long as any other product metadata.
        if let Some(listings) = runtime.cache_manager.get_list_files_cache() {
            listings.update_cache_ttl(Some(refresh));
        }
        let ctx = Arc::new(CatalogContext {
            stores,
            runtime,
            engine,
            refresh,
            domains: definition
                .domains
                .iter()
                .map(|d| (d.name.clone(), definition.root.join(&d.dir)))
                .collect(),
        });
        let mut tables: BTreeMap<String, BTreeMap<String, Arc<ProductTable>>> = definition
            .domains
            .iter()
            .map(|d| (d.name.clone(), BTreeMap::new()))
            .collect();
        for entry in &definition.tables {
            let table = reuse(entry).unwrap_or_else(|| Arc::new(ProductTable::new(entry.clone(), ctx.clone())));
            tables
                .entry(entry.domain.clone())
                .or_default()
                .insert(entry.name.clone(), table);
        }
        let schemas = tables
            .into_iter()
            .map(|(domain, tables)| (domain.clone(), Arc::new(DomainSchema { domain, tables })))
            .collect();
        MeshCatalog {
            definition,
            schemas,
            ctx,
        }
    }

    pub fn definition(&self) -> &Arc<MeshDefinition> {
        &self.definition
    }

    pub fn stores(&self) -> &Arc<StoreRegistry> {
        &self.ctx.stores
    }

    /// The product table `domain.name`, if the mesh defines it.
    pub fn product(&self, domain: &str, name: &str) -> Option<&Arc<ProductTable>> {
        self.schemas.get(domain)?.tables.get(name)
    }

    /// Every product table, in catalog order.
    pub fn products(&self) -> impl Iterator<Item = &Arc<ProductTable>> {
        self.schemas.values().flat_map(|s| s.tables.values())
    }

    /// Opens `domain.name`, or says why it cannot be served, naming whom to ask.
    pub async fn open(&self, domain: &str, name: &str) -> Result<OpenedTable, ProductUnavailable> {
        self.open_at(domain, name, None).await
    }

    /// Opens `domain.name` at its served version, or at `as_of` (time travel).
    pub async fn open_at(
        &self,
        domain: &str,
        name: &str,
        as_of: Option<AsOf>,
    ) -> Result<OpenedTable, ProductUnavailable> {
        let Some(product) = self.product(domain, name) else {
            return Err(ProductUnavailable {
                table: format!("mesh.{domain}.{name}"),
                source: Arc::new(CatalogError::NoSuchProduct),
                contact: None,
            });
        };
        product
            .open_at(as_of)
            .await
            .map_err(|e| ProductUnavailable::at(product.entry(), as_of, e))
    }
}

/// Whether two loads of a product describe the same thing (same documents, same outcome).
pub fn same_entry(a: &TableEntry, b: &TableEntry) -> bool {
    let bindings_equal = match (&a.binding, &b.binding) {
        (Ok(x), Ok(y)) => {
            x.contract.raw == y.contract.raw
                && x.contract.source == y.contract.source
                && x.storage.location == y.storage.location
                && x.schema.name == y.schema.name
        }
        (Err(x), Err(y)) => x.to_string() == y.to_string(),
        _ => false,
    };
    bindings_equal
        && a.product.raw == b.product.raw
        && a.product.source == b.product.source
        && a.port == b.port
        && a.port_version == b.port_version
        && a.compliance == b.compliance
}

/// A product that cannot be served, with the reason and whom to ask.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{table} is unavailable: {source}{}", contact_suffix(.contact))]
pub struct ProductUnavailable {
    pub table: String,
    #[source]
    pub source: Arc<CatalogError>,
    pub contact: Option<String>,
}

fn contact_suffix(contact: &Option<String>) -> String {
    contact
        .as_ref()
        .map(|c| format!(" (contact the product owner: {c})"))
        .unwrap_or_default()
}

impl ProductUnavailable {
    /// Why, in words (the source's message).
    pub fn reason(&self) -> String {
        self.source.to_string()
    }

    pub fn new(entry: &TableEntry, err: CatalogError) -> Self {
        Self::at(entry, None, err)
    }

    /// The product at its served version (`None`) or at an earlier one cannot be read.
    pub fn at(entry: &TableEntry, as_of: Option<AsOf>, err: CatalogError) -> Self {
        let suffix = as_of.map(|a| a.suffix()).unwrap_or_default();
        ProductUnavailable {
            table: format!("mesh.{}{suffix}", entry.qualified_name()),
            source: Arc::new(err),
            contact: Self::contact(entry),
        }
    }

    /// Whom to ask about a product: its owner and support channel (the product's own, else the
    /// one its contract names).
    pub fn contact(entry: &TableEntry) -> Option<String> {
        let product = &entry.product;
        let support = product
            .support_channel()
            .or_else(|| entry.binding.as_ref().ok().and_then(|b| b.contract.support_channel()));
        match (product.owner(), support) {
            (Some(o), Some(s)) => Some(format!("{o}, {s}")),
            (Some(o), None) => Some(o.to_string()),
            (None, Some(s)) => Some(s.to_string()),
            (None, None) => None,
        }
    }
}

impl CatalogProvider for MeshCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        self.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas.get(name).map(|s| s.clone() as Arc<dyn SchemaProvider>)
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> DFResult<Option<Arc<dyn SchemaProvider>>> {
        Err(read_only(&format!("schema mesh.{name}")))
    }
}

fn read_only(what: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "cannot create or change {what}: the mesh catalog is defined by the domains' contracts, not by SQL"
    ))
}

/// One domain: the schema `mesh.<domain>`.
#[derive(Debug)]
pub struct DomainSchema {
    domain: String,
    tables: BTreeMap<String, Arc<ProductTable>>,
}

#[async_trait]
impl SchemaProvider for DomainSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// `name`, or `name@<version>` for an earlier version (time travel, see [`AsOf`]).
    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let (base, as_of) = match AsOf::split(name) {
            Ok(split) => split,
            // `@` in a name that is not a version: only a product of that exact name can match
            Err(_) => (name, None),
        };
        let Some(product) = self.tables.get(base) else {
            return Ok(None);
        };
        match product.open_at(as_of).await {
            Ok(t) => Ok(Some(t.provider)),
            Err(e) => {
                let unavailable = ProductUnavailable::at(product.entry(), as_of, e);
                tracing::warn!(domain = %self.domain, table = name, reason = %unavailable, "product unavailable");
                Ok(Some(Arc::new(UnavailableTable::new(product.entry(), unavailable))))
            }
        }
    }

    async fn table_type(&self, name: &str) -> DFResult<Option<TableType>> {
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
            || matches!(AsOf::split(name), Ok((base, Some(_))) if self.tables.contains_key(base))
    }

    fn register_table(&self, name: String, _table: Arc<dyn TableProvider>) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(&format!("table mesh.{}.{name}", self.domain)))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(&format!("table mesh.{}.{name}", self.domain)))
    }
}

/// Whether two engine configurations set every DataFusion option alike.
fn same_engine(a: &SessionConfig, b: &SessionConfig) -> bool {
    let options = |c: &SessionConfig| {
        c.options()
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect::<Vec<_>>()
    };
    options(a) == options(b)
}
