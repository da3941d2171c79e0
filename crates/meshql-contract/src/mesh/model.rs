//! The loaded mesh: domains, storage formats and specs, port bindings, the tables of the mesh, and
//! [`MeshDefinition`], which loads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::documents::{domain_dirs, read_typed};
use super::load::Loader;
use super::settings::{default_domains_dir, MeshSettings};
use super::SETTINGS_FILE;
use crate::error::{ContractError, MeshError};
use crate::governance::{CompiledStandards, Compliance};
use crate::odcs::{DataContract, SchemaObject};
use crate::odps::DataProduct;
use crate::storage::check_settings;

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
    pub(super) fn parse(s: &str) -> Option<Format> {
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
        let domain_dirs = domain_dirs(&domains_dir).map_err(|e| MeshError::NotAMesh {
            path: root.clone(),
            reason: format!("cannot read domains directory {}: {e}", domains_dir.display()),
        })?;
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
