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
//!
//! The code is split by concern: `settings` (`mesh.yaml`), `model` (the loaded mesh and its
//! tables), `load` (reading every document into that model), `binding` (an output port's contract
//! server to storage), `documents` (finding and reading YAML/JSON documents).

mod binding;
mod documents;
mod load;
mod model;
mod settings;

pub use binding::lexically_normal;
pub use documents::{mesh_documents, read_document};
pub use model::{
    CatalogTable, Domain, DomainDescriptor, Format, MeshDefinition, PortBinding, StorageSpec, TableEntry, VersionPin,
};
pub use settings::{AuditSettings, MeshSettings, QualitySettings};

/// Name of the mesh-wide settings file at the mesh root.
pub const SETTINGS_FILE: &str = "mesh.yaml";
/// The schema of meshql's own tables (`mesh.system.*`); no domain may take its name.
pub const RESERVED_SCHEMA: &str = "system";
/// Name of the domain descriptor in each domain directory.
pub const DOMAIN_FILE: &str = "domain.yaml";
