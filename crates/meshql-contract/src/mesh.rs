//! A mesh on disk: settings, domains, products, contracts, and the tables they define.
//!
//! Layout (every file is YAML, or JSON with a `.json` ending):
//!
//! ```text
//! <mesh>/mesh.yaml                          mesh-wide settings (MeshSettings)
//! <mesh>/domains/<dir>/domain.yaml          a domain descriptor (DomainDescriptor)
//! <mesh>/domains/<dir>/[products/]*.odps.yaml   ODPS v1.0 data products of that domain
//! <mesh>/domains/<dir>/[contracts/]*.odcs.yaml  ODCS v3.1 data contracts of that domain
//! ```
//!
//! Loading reads only these documents — never data or table metadata — so a mesh of thousands of
//! products opens quickly. A broken document breaks only what depends on it: the problem is kept
//! with the file, the field and the reason, and every other product loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ContractError, MeshError};
use crate::governance::{CompiledStandards, Compliance, GovernanceStandards};
use crate::naming::{compare_versions, sql_identifier};
use crate::odcs::{DataContract, SchemaObject, Server};
use crate::odps::{DataProduct, OutputPort};
use crate::storage::{check_settings, IcebergCatalogSettings, StoreSettings};
use crate::validate::{validate, Standard};

/// Name of the mesh-wide settings file at the mesh root.
pub const SETTINGS_FILE: &str = "mesh.yaml";
/// The schema of meshql's own tables (`mesh.system.*`); no domain may take its name.
pub const RESERVED_SCHEMA: &str = "system";
/// Name of the domain descriptor in each domain directory.
pub const DOMAIN_FILE: &str = "domain.yaml";

/// Mesh-wide settings (`mesh.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSettings {
    /// The mesh's name, for people.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Directory holding one sub-directory per domain, relative to the mesh root.
    #[serde(default = "default_domains_dir")]
    pub domains_dir: String,
    /// Which contract server to use when a contract lists several (matched against
    /// `servers[].environment`); without it, the first server of a supported format is used.
    #[serde(default)]
    pub environment: Option<String>,
    /// How old cached Delta/Iceberg metadata may get before meshql looks for new commits.
    /// `0` checks on every query.
    #[serde(default = "default_refresh_seconds")]
    pub metadata_refresh_seconds: u64,
    /// Mesh-wide standards every product is assessed against.
    #[serde(default)]
    pub governance: GovernanceStandards,
    /// Where meshql keeps what it records (quality results, audit trail), relative to the mesh
    /// root unless absolute.
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Audit trail settings.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Quality check settings.
    #[serde(default)]
    pub quality: QualitySettings,
    /// How often a server looks for edited documents (contracts, descriptors, policies);
    /// `0` turns live reload off.
    #[serde(default = "default_reload_seconds")]
    pub reload_seconds: u64,
    /// Where relative output-port locations resolve (a directory or URL such as
    /// `s3://lake/mesh/`); the mesh directory when absent.
    #[serde(default)]
    pub data_root: Option<String>,
    /// Object stores by name (see [`crate::storage`]).
    #[serde(default)]
    pub stores: BTreeMap<String, StoreSettings>,
    /// Iceberg catalogs products may name.
    #[serde(default)]
    pub iceberg_catalogs: BTreeMap<String, IcebergCatalogSettings>,
    /// DataFusion configuration options for every query of the mesh, by their `datafusion.…`
    /// keys (e.g. `datafusion.execution.parquet.pushdown_filters: true`); on top of meshql's
    /// defaults. An unknown key or a bad value makes the mesh fail to open.
    #[serde(default)]
    pub engine: BTreeMap<String, crate::storage::OptionValue>,
}

impl MeshSettings {
    /// The state directory as an absolute path.
    pub fn state_path(&self, root: &Path) -> PathBuf {
        root.join(&self.state_dir)
    }
}

/// `audit:` in `mesh.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSettings {
    /// Record every query (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A file is closed and a new one started beyond this size.
    #[serde(default = "default_audit_file_bytes")]
    pub max_file_bytes: u64,
    /// Closed files kept; the oldest are deleted beyond this.
    #[serde(default = "default_audit_files")]
    pub max_files: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            max_file_bytes: default_audit_file_bytes(),
            max_files: default_audit_files(),
        }
    }
}

/// `quality:` in `mesh.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualitySettings {
    /// How often a server runs every product's checks; `0` (default) only on demand.
    #[serde(default)]
    pub schedule_seconds: u64,
}

fn yes() -> bool {
    true
}

fn default_state_dir() -> String {
    ".meshql".to_string()
}

fn default_audit_file_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_audit_files() -> usize {
    20
}

fn default_reload_seconds() -> u64 {
    2
}

fn default_domains_dir() -> String {
    "domains".to_string()
}

fn default_refresh_seconds() -> u64 {
    5
}

/// A domain descriptor (`domain.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainDescriptor {
    /// The domain's name; its SQL identifier is the schema name (`mesh.<domain>`).
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The owning team.
    #[serde(default)]
    pub owner: Option<String>,
    /// Where to ask the domain team (a channel or URL).
    #[serde(default)]
    pub support: Option<String>,
}

/// A loaded domain.
#[derive(Debug, Clone)]
pub struct Domain {
    /// SQL identifier of the domain: the schema name in the `mesh` catalog.
    pub name: String,
    pub descriptor: DomainDescriptor,
    pub dir: PathBuf,
}

/// Storage formats meshql reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Parquet,
    Delta,
    Iceberg,
}

impl Format {
    fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "delta" | "deltalake" | "delta_lake" => Some(Format::Delta),
            "iceberg" => Some(Format::Iceberg),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Delta => "delta",
            Format::Iceberg => "iceberg",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table version fixed by the contract (server custom properties `deltaVersion` /
/// `icebergSnapshotId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPin {
    DeltaVersion(u64),
    IcebergSnapshot(i64),
}

/// Where an output port's data lives and in what format.
#[derive(Debug, Clone)]
pub struct StorageSpec {
    pub format: Format,
    /// The location as written in the contract (a path or URL; relative paths are relative to the
    /// mesh root).
    pub location: String,
    /// The contract server's `type` (`local`, `s3`, …).
    pub server_type: String,
    /// The contract server's `server` name.
    pub server_name: Option<String>,
    pub pin: Option<VersionPin>,
    /// For Iceberg tables found through a catalog: which catalog, namespace and table. The
    /// location is then the catalog's name for display only.
    pub catalog_table: Option<CatalogTable>,
}

/// A table in an Iceberg catalog of the mesh settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    /// The name of the catalog in `mesh.yaml` (`icebergCatalogs`).
    pub catalog: String,
    pub namespace: Vec<String>,
    pub table: String,
}

impl std::fmt::Display for CatalogTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Iceberg catalog `{}` table {}.{}",
            self.catalog,
            self.namespace.join("."),
            self.table
        )
    }
}

/// Everything needed to serve one output port as a table.
#[derive(Debug, Clone)]
pub struct PortBinding {
    pub contract: Arc<DataContract>,
    /// The contract's schema object that describes this port's table.
    pub schema: SchemaObject,
    pub storage: StorageSpec,
}

/// One table of the mesh: `mesh.<domain>.<name>`.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub domain: String,
    /// The table's SQL name: `mesh.<domain>.<name>`.
    pub name: String,
    /// The product's SQL name, shared by every table of the product (each output port, each
    /// version): what access policies name.
    pub product_name: String,
    /// The SQL name of the newest version of this table's port (`name` itself for the newest
    /// version; `<product>_<port>` when the product has several ports).
    pub port_table: String,
    pub product: Arc<DataProduct>,
    /// The output port's name and version; empty when the descriptor itself is broken.
    pub port: String,
    pub port_version: String,
    /// The binding, or why this table cannot be served.
    pub binding: Result<Arc<PortBinding>, ContractError>,
    /// How the product measures up to the mesh's governance standards, and its lifecycle.
    pub compliance: Compliance,
}

impl TableEntry {
    /// `<domain>.<name>`, how people refer to the product.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.domain, self.name)
    }
}

/// A loaded mesh: the result of reading every document under the mesh root.
#[derive(Debug, Clone)]
pub struct MeshDefinition {
    /// Absolute mesh root directory.
    pub root: PathBuf,
    pub settings: MeshSettings,
    pub domains: Vec<Domain>,
    pub tables: Vec<TableEntry>,
    /// Valid contracts by `id`.
    pub contracts: BTreeMap<String, Arc<DataContract>>,
    /// Documents that could not be used and are not tied to one table (a broken domain
    /// descriptor, a product with no output ports, a duplicate contract id, …).
    pub problems: Vec<ContractError>,
}

impl MeshDefinition {
    /// Reads the mesh at `root`. Fails only when `root` is not a mesh (no readable settings);
    /// every other problem is recorded and isolated.
    pub fn load(root: impl AsRef<Path>) -> Result<MeshDefinition, MeshError> {
        let root = root.as_ref();
        let root = std::path::absolute(root).map_err(|e| MeshError::NotAMesh {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
        let settings_path = root.join(SETTINGS_FILE);
        if !settings_path.is_file() {
            return Err(MeshError::NotAMesh {
                path: root,
                reason: format!("no {SETTINGS_FILE} settings file"),
            });
        }
        let settings: MeshSettings = read_typed(&settings_path)?;
        check_settings(
            settings.data_root.as_deref(),
            &settings.stores,
            &settings.iceberg_catalogs,
        )
        .map_err(|(field, reason)| ContractError::invalid(&settings_path, field, reason))?;
        let standards = CompiledStandards::new(settings.governance.clone())
            .map_err(|reason| ContractError::invalid(&settings_path, "/governance", reason))?;
        let mut loader = Loader::default();
        let domains_dir = root.join(&settings.domains_dir);
        let mut domain_dirs: Vec<PathBuf> = match std::fs::read_dir(&domains_dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !is_hidden(p))
                .collect(),
            Err(e) => {
                return Err(MeshError::NotAMesh {
                    path: root,
                    reason: format!("cannot read domains directory {}: {e}", domains_dir.display()),
                })
            }
        };
        domain_dirs.sort();
        for dir in domain_dirs {
            loader.load_domain(&dir);
        }
        Ok(loader.finish(root, settings, &standards))
    }

    /// The domains directory of the mesh at `root` as its settings name it (the default when
    /// the settings cannot be read).
    pub fn domains_dir_of(root: &Path) -> PathBuf {
        let dir = read_typed::<MeshSettings>(&root.join(SETTINGS_FILE))
            .map(|s| s.domains_dir)
            .unwrap_or_else(|_| default_domains_dir());
        root.join(dir)
    }

    /// Looks a table up by domain and table identifier.
    pub fn table(&self, domain: &str, name: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| t.domain == domain && t.name == name)
    }

    /// The tables of one domain.
    pub fn tables_in<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a TableEntry> + 'a {
        self.tables.iter().filter(move |t| t.domain == domain)
    }

    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// A product descriptor read from disk, valid or not.
struct ProductFile {
    domain: String,
    path: PathBuf,
    parsed: Result<DataProduct, (ContractError, Option<String>)>,
}

#[derive(Clone, Copy)]
enum DocKind {
    Product,
    Contract,
}

enum Parsed {
    Product(ProductFile),
    Contract(Result<DataContract, (ContractError, Option<String>)>),
}

fn parse_product(file: &Path) -> Result<DataProduct, (ContractError, Option<String>)> {
    let doc = read_document(file)?;
    validate(Standard::Odps, file, &doc).map_err(|e| (e, best_effort_name(&doc)))?;
    let mut product: DataProduct = from_value(file, &doc).map_err(|e| (e, None))?;
    product.raw = doc;
    product.source = file.to_path_buf();
    Ok(product)
}

/// A contract, or why not with the id it declares (when one can be read).
fn parse_contract(file: &Path) -> Result<DataContract, (ContractError, Option<String>)> {
    let doc = read_document(file).map_err(|(e, _)| (e, None))?;
    let declared_id = || doc.get("id").and_then(Value::as_str).map(str::to_string);
    validate(Standard::Odcs, file, &doc).map_err(|e| (e, declared_id()))?;
    let mut contract: DataContract = from_value(file, &doc).map_err(|e| (e, declared_id()))?;
    contract.raw = doc;
    contract.source = file.to_path_buf();
    Ok(contract)
}

/// `f` over `items` on every available core, results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 64 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[derive(Default)]
struct Loader {
    domains: Vec<Domain>,
    /// Documents found, not yet parsed: (domain, kind, file).
    pending: Vec<(String, DocKind, PathBuf)>,
    products: Vec<ProductFile>,
    /// Valid contracts by id, with every file that defined the id.
    contracts: HashMap<String, Vec<Arc<DataContract>>>,
    /// Contracts that failed validation, by the id they declare (when one can be read).
    broken_contracts: HashMap<String, ContractError>,
    problems: Vec<ContractError>,
}

impl Loader {
    fn load_domain(&mut self, dir: &Path) {
        let descriptor_path = dir.join(DOMAIN_FILE);
        let descriptor: DomainDescriptor = match read_typed(&descriptor_path) {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(e);
                return;
            }
        };
        let Some(name) = sql_identifier(&descriptor.name) else {
            self.problems.push(ContractError::invalid(
                &descriptor_path,
                "/name",
                format!("domain name {:?} has no usable SQL identifier", descriptor.name),
            ));
            return;
        };
        if name == RESERVED_SCHEMA {
            self.problems.push(ContractError::invalid(
                &descriptor_path,
                "/name",
                format!(
                    "domain name {:?} is reserved: mesh.{RESERVED_SCHEMA} holds meshql's system tables",
                    descriptor.name
                ),
            ));
            return;
        }
        if let Some(other) = self.domains.iter().find(|d| d.name == name) {
            self.problems.push(ContractError::Conflict {
                message: format!(
                    "{}: domain `{name}` is already defined by {}; domain names must be unique",
                    descriptor_path.display(),
                    other.dir.join(DOMAIN_FILE).display()
                ),
            });
            return;
        }
        for file in documents(dir, "products", ".odps") {
            self.pending.push((name.clone(), DocKind::Product, file));
        }
        for file in documents(dir, "contracts", ".odcs") {
            self.pending.push((name.clone(), DocKind::Contract, file));
        }
        self.domains.push(Domain {
            name,
            descriptor,
            dir: dir.to_path_buf(),
        });
    }

    /// Reads, validates and deserializes every collected document, on all cores: parsing YAML
    /// and validating against the JSON Schemas is most of the cost of opening a large mesh.
    fn parse_documents(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let parsed = parallel_map(&pending, |(domain, kind, file)| match kind {
            DocKind::Product => Parsed::Product(ProductFile {
                domain: domain.clone(),
                path: file.clone(),
                parsed: parse_product(file),
            }),
            DocKind::Contract => Parsed::Contract(parse_contract(file)),
        });
        for p in parsed {
            match p {
                Parsed::Product(f) => self.products.push(f),
                Parsed::Contract(Ok(c)) => self.contracts.entry(c.id.clone()).or_default().push(Arc::new(c)),
                Parsed::Contract(Err((e, declared_id))) => {
                    self.problems.push(e.clone());
                    if let Some(id) = declared_id {
                        self.broken_contracts.insert(id, e);
                    }
                }
            }
        }
    }

    fn finish(mut self, root: PathBuf, settings: MeshSettings, standards: &CompiledStandards) -> MeshDefinition {
        self.parse_documents();
        // Contract ids are global (input ports of one domain reference contracts of another), so
        // a duplicate id is ambiguous everywhere: neither definition is used.
        let mut contracts = BTreeMap::new();
        for (id, defs) in std::mem::take(&mut self.contracts) {
            if defs.len() == 1 {
                contracts.insert(id, defs.into_iter().next().expect("one element"));
            } else {
                let files: Vec<String> = defs.iter().map(|c| c.source.display().to_string()).collect();
                let err = ContractError::Conflict {
                    message: format!("contract id `{id}` is defined more than once: {}", files.join(", ")),
                };
                self.problems.push(err.clone());
                self.broken_contracts.insert(id, err);
            }
        }

        let mut tables = Vec::new();
        for file in std::mem::take(&mut self.products) {
            match file.parsed {
                Ok(product) => {
                    let product = Arc::new(product);
                    self.bind_product(&file.domain, &product, &contracts, &settings, &mut tables);
                }
                Err((err, name)) => {
                    // Register the broken product under the name it tried to have, so querying it
                    // says why it is unavailable instead of "table not found".
                    match name.as_deref().and_then(sql_identifier) {
                        Some(ident) => tables.push(TableEntry {
                            domain: file.domain.clone(),
                            name: ident.clone(),
                            product_name: ident.clone(),
                            port_table: ident,
                            product: Arc::new(DataProduct::placeholder(&file.path, name.unwrap_or_default())),
                            port: String::new(),
                            port_version: String::new(),
                            binding: Err(err),
                            compliance: Compliance::default(),
                        }),
                        None => self.problems.push(err),
                    }
                }
            }
        }

        // Two entries with the same table name: neither is served.
        let mut seen: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            seen.entry((t.domain.clone(), t.name.clone())).or_default().push(i);
        }
        for ((domain, name), idx) in seen {
            if idx.len() < 2 {
                continue;
            }
            let sources: Vec<String> = idx
                .iter()
                .map(|&i| {
                    let t = &tables[i];
                    if t.port.is_empty() {
                        t.product.source.display().to_string()
                    } else {
                        format!("{} (port `{}` {})", t.product.source.display(), t.port, t.port_version)
                    }
                })
                .collect();
            let err = ContractError::Conflict {
                message: format!(
                    "table mesh.{domain}.{name} would be defined {} times, by {}; rename a product or port so their SQL names differ",
                    idx.len(),
                    sources.join(" and ")
                ),
            };
            for i in idx {
                tables[i].binding = Err(err.clone());
            }
        }
        // A product serves its own domain's data: a contract pointing into another domain's
        // directory would let that domain's data be read under this domain's (laxer) policies.
        for t in &mut tables {
            let Ok(binding) = &t.binding else { continue };
            if binding.storage.catalog_table.is_some() {
                continue;
            }
            let Some(owner) = self
                .domains
                .iter()
                .find(|d| d.name != t.domain && location_is_under(&binding.storage.location, &root, &d.dir))
            else {
                continue;
            };
            t.binding = Err(ContractError::invalid(
                &binding.contract.source,
                "/servers",
                format!(
                    "the data location `{}` is in the directory of domain `{}`: a product of domain `{}` may only serve data under its own domain's directory or outside every domain's directory, so that another domain's data is never read under this domain's policies",
                    binding.storage.location, owner.name, t.domain
                ),
            ));
        }
        tables.sort_by(|a, b| (&a.domain, &a.name).cmp(&(&b.domain, &b.name)));
        for t in &mut tables {
            let domain = self.domains.iter().find(|d| d.name == t.domain);
            t.compliance = standards.assess(t, domain);
        }

        MeshDefinition {
            root,
            settings,
            domains: self.domains,
            tables,
            contracts,
            problems: self.problems,
        }
    }

    fn bind_product(
        &mut self,
        domain: &str,
        product: &Arc<DataProduct>,
        contracts: &BTreeMap<String, Arc<DataContract>>,
        settings: &MeshSettings,
        tables: &mut Vec<TableEntry>,
    ) {
        let path = &product.source;
        let Some(product_ident) = sql_identifier(product.display_name()) else {
            self.problems.push(ContractError::invalid(
                path,
                "/name",
                format!("product name {:?} has no usable SQL identifier", product.display_name()),
            ));
            return;
        };
        if product.output_ports.is_empty() {
            self.problems.push(ContractError::invalid(
                path,
                "/outputPorts",
                "the product declares no output ports, so there is nothing to serve",
            ));
            return;
        }
        let domain_error = product.domain.as_deref().and_then(|d| {
            (sql_identifier(d).as_deref() != Some(domain)).then(|| {
                ContractError::invalid(
                    path,
                    "/domain",
                    format!("product says it belongs to domain {d:?} but is published in domain `{domain}`"),
                )
            })
        });

        // Group ports by name; the newest version of each gets the plain table name.
        let mut by_name: BTreeMap<&str, Vec<&OutputPort>> = BTreeMap::new();
        for port in &product.output_ports {
            by_name.entry(port.name.as_str()).or_default().push(port);
        }
        let several_names = by_name.len() > 1;
        for (port_name, mut versions) in by_name {
            versions.sort_by(|a, b| compare_versions(&b.version, &a.version));
            let base = if several_names {
                match sql_identifier(port_name) {
                    Some(p) => format!("{product_ident}_{p}"),
                    None => {
                        self.problems.push(ContractError::invalid(
                            path,
                            "/outputPorts",
                            format!("port name {port_name:?} has no usable SQL identifier"),
                        ));
                        continue;
                    }
                }
            } else {
                product_ident.clone()
            };
            for (i, port) in versions.into_iter().enumerate() {
                let name = if i == 0 {
                    base.clone()
                } else {
                    format!(
                        "{base}_v{}",
                        sql_identifier(&port.version)
                            .unwrap_or_default()
                            .trim_start_matches('_')
                    )
                };
                let binding = match &domain_error {
                    Some(e) => Err(e.clone()),
                    None => self.bind_port(product, port, contracts, settings).map(Arc::new),
                };
                tables.push(TableEntry {
                    domain: domain.to_string(),
                    name,
                    product_name: product_ident.clone(),
                    port_table: base.clone(),
                    product: product.clone(),
                    port: port.name.clone(),
                    port_version: port.version.clone(),
                    binding,
                    compliance: Compliance::default(),
                });
            }
        }
    }

    fn bind_port(
        &self,
        product: &DataProduct,
        port: &OutputPort,
        contracts: &BTreeMap<String, Arc<DataContract>>,
        settings: &MeshSettings,
    ) -> Result<PortBinding, ContractError> {
        let path = &product.source;
        let port_field = format!("/outputPorts[name={}]", port.name);
        let Some(contract_id) = &port.contract_id else {
            return Err(ContractError::invalid(
                path,
                format!("{port_field}/contractId"),
                "the output port names no contract; meshql serves only contracted ports",
            ));
        };
        let contract = match contracts.get(contract_id) {
            Some(c) => c.clone(),
            None => {
                return Err(match self.broken_contracts.get(contract_id) {
                    Some(e) => e.clone(),
                    None => ContractError::invalid(
                        path,
                        format!("{port_field}/contractId"),
                        format!("no contract with id `{contract_id}` was found in the mesh"),
                    ),
                })
            }
        };
        let (server_idx, server) = choose_server(&contract, settings.environment.as_deref())?;
        let schema = choose_schema(&contract, port)?;
        let storage = storage_spec(&contract, server_idx, server, &schema, settings)?;
        Ok(PortBinding {
            contract,
            schema,
            storage,
        })
    }
}

/// Whether `location` (a contract's path, relative to the mesh root, or absolute; not a URL) is
/// `dir` or inside it, comparing the lexically normalised paths (`..` resolved).
fn location_is_under(location: &str, root: &Path, dir: &Path) -> bool {
    if location.contains("://") {
        return false;
    }
    lexically_normal(&root.join(location)).starts_with(lexically_normal(&root.join(dir)))
}

/// `path` with `.` and `..` resolved on the text alone (no file system access, links kept).
pub fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn choose_server<'a>(
    contract: &'a DataContract,
    environment: Option<&str>,
) -> Result<(usize, &'a Server), ContractError> {
    let usable = |s: &Server| s.format.as_deref().and_then(Format::parse).is_some();
    let mut candidates = contract.servers.iter().enumerate().filter(|(_, s)| usable(s));
    let found = match environment {
        Some(env) => candidates.find(|(_, s)| s.environment.as_deref() == Some(env)),
        None => candidates.next(),
    };
    found.ok_or_else(|| {
        let wanted = match environment {
            Some(env) => format!(" for environment `{env}` (set in mesh.yaml)"),
            None => String::new(),
        };
        ContractError::invalid(
            &contract.source,
            "/servers",
            format!("no server{wanted} with format parquet, delta or iceberg"),
        )
    })
}

fn storage_spec(
    contract: &DataContract,
    idx: usize,
    server: &Server,
    schema: &SchemaObject,
    settings: &MeshSettings,
) -> Result<StorageSpec, ContractError> {
    let field = |f: &str| format!("/servers/{idx}/{f}");
    let format = server
        .format
        .as_deref()
        .and_then(Format::parse)
        .ok_or_else(|| ContractError::invalid(&contract.source, field("format"), "unsupported format"))?;
    let catalog_table = catalog_table(contract, idx, server, schema, settings)?;
    if let Some(table) = &catalog_table {
        if format != Format::Iceberg {
            return Err(ContractError::invalid(
                &contract.source,
                field("catalog"),
                format!("catalogs serve Iceberg tables; this server's format is {format}"),
            ));
        }
        return Ok(StorageSpec {
            format,
            location: table.to_string(),
            server_type: server.server_type.clone(),
            server_name: server.server.clone(),
            pin: iceberg_pin(contract, idx, server)?,
            catalog_table,
        });
    }
    let location = if server.server_type == "local" {
        server.path.clone()
    } else {
        server.location.clone().or_else(|| server.path.clone())
    };
    let location = location.filter(|l| !l.trim().is_empty()).ok_or_else(|| {
        ContractError::invalid(
            &contract.source,
            field("location"),
            "the server gives no path or location",
        )
    })?;
    let int_prop = |name: &str| -> Result<Option<i64>, ContractError> {
        match server.custom_property(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| {
                    ContractError::invalid(
                        &contract.source,
                        field("customProperties"),
                        format!("`{name}` must be a non-negative integer, found {v}"),
                    )
                }),
        }
    };
    let delta = int_prop("deltaVersion")?;
    let iceberg = int_prop("icebergSnapshotId")?;
    let pin = match (format, delta, iceberg) {
        (_, None, None) => None,
        (Format::Delta, Some(v), None) => Some(VersionPin::DeltaVersion(v.unsigned_abs())),
        (Format::Iceberg, None, Some(s)) => Some(VersionPin::IcebergSnapshot(s)),
        _ => {
            return Err(ContractError::invalid(
                &contract.source,
                field("customProperties"),
                format!("`deltaVersion` applies only to delta and `icebergSnapshotId` only to iceberg servers (this server is {format})"),
            ))
        }
    };
    Ok(StorageSpec {
        format,
        location,
        server_type: server.server_type.clone(),
        server_name: server.server.clone(),
        pin,
        catalog_table: None,
    })
}

/// A pinned snapshot of an Iceberg server found through a catalog.
fn iceberg_pin(contract: &DataContract, idx: usize, server: &Server) -> Result<Option<VersionPin>, ContractError> {
    match server.custom_property("icebergSnapshotId") {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n >= 0)
            .map(|n| Some(VersionPin::IcebergSnapshot(n)))
            .ok_or_else(|| {
                ContractError::invalid(
                    &contract.source,
                    format!("/servers/{idx}/customProperties"),
                    format!("`icebergSnapshotId` must be a non-negative integer, found {v}"),
                )
            }),
    }
}

/// The catalog table of a server that names a `catalog`: namespace from `schema` (or
/// `database`), table from the custom property `icebergTable`, else the schema object's
/// physical name, else its name.
fn catalog_table(
    contract: &DataContract,
    idx: usize,
    server: &Server,
    schema: &SchemaObject,
    settings: &MeshSettings,
) -> Result<Option<CatalogTable>, ContractError> {
    let Some(catalog) = server.catalog.as_deref() else {
        return Ok(None);
    };
    let field = |f: &str| format!("/servers/{idx}/{f}");
    if !settings.iceberg_catalogs.contains_key(catalog) {
        let known: Vec<&str> = settings.iceberg_catalogs.keys().map(String::as_str).collect();
        return Err(ContractError::invalid(
            &contract.source,
            field("catalog"),
            format!(
                "no Iceberg catalog `{catalog}` in mesh.yaml (icebergCatalogs: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let namespace: Vec<String> = server
        .schema
        .as_deref()
        .or(server.database.as_deref())
        .map(|ns| ns.split('.').map(str::to_string).collect())
        .filter(|ns: &Vec<String>| ns.iter().all(|p| !p.trim().is_empty()))
        .ok_or_else(|| {
            ContractError::invalid(
                &contract.source,
                field("schema"),
                "a server in an Iceberg catalog names its namespace in `schema` (or `database`)",
            )
        })?;
    let table = match server.custom_property("icebergTable") {
        Some(v) => v.as_str().map(str::to_string).ok_or_else(|| {
            ContractError::invalid(
                &contract.source,
                field("customProperties"),
                "`icebergTable` must be text",
            )
        })?,
        None => schema.physical_name.clone().unwrap_or_else(|| schema.name.clone()),
    };
    Ok(Some(CatalogTable {
        catalog: catalog.to_string(),
        namespace,
        table,
    }))
}

fn choose_schema(contract: &DataContract, port: &OutputPort) -> Result<SchemaObject, ContractError> {
    match contract.schema.as_slice() {
        [] => Err(ContractError::invalid(
            &contract.source,
            "/schema",
            "the contract declares no schema object, so there is nothing to check the data against",
        )),
        [only] => Ok(only.clone()),
        many => many
            .iter()
            .find(|s| s.name == port.name || sql_identifier(&s.name) == sql_identifier(&port.name))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = many.iter().map(|s| s.name.as_str()).collect();
                ContractError::invalid(
                    &contract.source,
                    "/schema",
                    format!(
                        "the contract has several schema objects ({}) and none is named like output port `{}`",
                        names.join(", "),
                        port.name
                    ),
                )
            }),
    }
}

/// Files ending in `<kind>.yaml|.yml|.json` directly in `dir` or in `dir/<sub>`, sorted.
fn documents(dir: &Path, sub: &str, kind: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join(sub)] {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for entry in rd.filter_map(Result::ok) {
            let p = entry.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || !p.is_file() {
                continue;
            }
            if [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(&format!("{kind}{ext}")))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads a YAML or JSON document into a JSON value.
pub fn read_document(path: &Path) -> Result<Value, (ContractError, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            ContractError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            None,
        )
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str::<Value>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| {
        (
            ContractError::Parse {
                path: path.to_path_buf(),
                message,
            },
            None,
        )
    })
}

fn from_value<T: serde::de::DeserializeOwned>(path: &Path, doc: &Value) -> Result<T, ContractError> {
    T::deserialize(doc).map_err(|e| ContractError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_typed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ContractError> {
    let doc = read_document(path).map_err(|(e, _)| e)?;
    from_value(path, &doc).map_err(|e| match e {
        ContractError::Parse { path, message } => ContractError::Invalid {
            path,
            field: "/".into(),
            reason: message,
        },
        other => other,
    })
}

fn best_effort_name(doc: &Value) -> Option<String> {
    doc.get("name")
        .or_else(|| doc.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = "apiVersion: v3.1.0\nkind: DataContract\nid: ID\nversion: 1.0.0\nstatus: active\n\
        servers:\n  - server: s\n    type: local\n    format: parquet\n    path: data/x.parquet\n\
        schema:\n  - name: t\n    properties:\n      - name: a\n        logicalType: integer\n";

    fn mesh_with(product: &str, contracts: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mesh.yaml"), "name: t\n").expect("write");
        let d = dir.path().join("domains/sales");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("domain.yaml"), "name: Sales\n").expect("write");
        std::fs::write(d.join("p.odps.yaml"), product).expect("write");
        for id in contracts {
            std::fs::write(d.join(format!("{id}.odcs.yaml")), CONTRACT.replace("ID", id)).expect("write");
        }
        dir
    }

    #[test]
    fn ports_and_versions_become_table_names() {
        let dir = mesh_with(
            "apiVersion: v1.0.0\nkind: DataProduct\nid: p\nname: Order Lines\nstatus: active\noutputPorts:\n\
             \x20 - {name: daily, version: 1.9.0, contractId: c1}\n\
             \x20 - {name: daily, version: 1.10.0, contractId: c2}\n\
             \x20 - {name: raw-events, version: 2.0.0, contractId: c1}\n",
            &["c1", "c2"],
        );
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let names: Vec<String> = mesh.tables.iter().map(TableEntry::qualified_name).collect();
        assert_eq!(
            names,
            [
                "sales.order_lines_daily",
                "sales.order_lines_daily_v1_9_0",
                "sales.order_lines_raw_events"
            ]
        );
        let newest = mesh.table("sales", "order_lines_daily").expect("table");
        assert_eq!(newest.port_version, "1.10.0");
        assert!(mesh.tables.iter().all(|t| t.binding.is_ok()));
    }

    #[test]
    fn missing_contract_and_bad_pin_are_reported_per_port() {
        let dir = mesh_with(
            "apiVersion: v1.0.0\nkind: DataProduct\nid: p\nname: p\nstatus: active\noutputPorts:\n\
             \x20 - {name: a, version: 1.0.0, contractId: nowhere}\n\
             \x20 - {name: b, version: 1.0.0, contractId: c1}\n\
             \x20 - {name: c, version: 1.0.0}\n",
            &["c1"],
        );
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let err = |t: &str| match &mesh.table("sales", t).expect("table").binding {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(err("p_a").contains("no contract with id `nowhere`"), "{}", err("p_a"));
        assert!(err("p_b").is_empty());
        assert!(err("p_c").contains("names no contract"), "{}", err("p_c"));

        let text = std::fs::read_to_string(dir.path().join("domains/sales/c1.odcs.yaml")).expect("read");
        let text = text.replace(
            "path: data/x.parquet\n",
            "path: data/x.parquet\n    customProperties:\n      - {property: deltaVersion, value: 3}\n",
        );
        std::fs::write(dir.path().join("domains/sales/c1.odcs.yaml"), text).expect("write");
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let b = &mesh.table("sales", "p_b").expect("table").binding;
        let msg = b.as_ref().err().map(ToString::to_string).unwrap_or_default();
        assert!(
            msg.contains("/servers/0/customProperties") && msg.contains("deltaVersion"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_contract_ids_are_ambiguous() {
        let dir = mesh_with(
            "apiVersion: v1.0.0\nkind: DataProduct\nid: p\nname: p\nstatus: active\noutputPorts:\n\
             \x20 - {name: a, version: 1.0.0, contractId: c1}\n",
            &["c1"],
        );
        let d = dir.path().join("domains/sales/contracts");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("again.odcs.yaml"), CONTRACT.replace("ID", "c1")).expect("write");
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let msg = mesh.tables[0]
            .binding
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(msg.contains("`c1` is defined more than once"), "{msg}");
        assert_eq!(mesh.problems.len(), 1);
    }
}
