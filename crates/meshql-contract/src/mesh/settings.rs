//! Mesh-wide settings (`mesh.yaml`): the settings, their `audit:` and `quality:` sections, and
//! their defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::governance::GovernanceStandards;
use crate::storage::{IcebergCatalogSettings, StoreSettings};

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

pub(super) fn default_domains_dir() -> String {
    "domains".to_string()
}

fn default_refresh_seconds() -> u64 {
    5
}
