//! Data products and their contracts, as meshql reads them.
//!
//! - [`odps`]: ODPS v1.0 product descriptors; [`odcs`]: ODCS v3.1 data contracts. Documents are
//!   validated against the official JSON Schemas ([`validate`]) before meshql reads them, so any
//!   document that conforms loads and any that does not is rejected with the file, the field and
//!   the reason.
//! - [`mesh`]: a mesh directory — settings, domains, products — and the tables it defines.
//! - [`naming`]: how names become SQL identifiers.
//! - [`quality`]: ODCS data-quality rules, typed.
//!
//! This crate knows nothing about query engines; it is the model every other meshql crate shares.

pub mod error;
pub mod governance;
pub mod mesh;
pub mod naming;
pub mod odcs;
pub mod odps;
pub mod quality;
pub mod storage;
pub mod validate;

pub use error::{ContractError, MeshError, Violation};
pub use governance::{Compliance, Enforcement, GovernanceStandards, Lifecycle, RuleFailure};
pub use mesh::{
    AuditSettings, CatalogTable, Domain, DomainDescriptor, Format, MeshDefinition, MeshSettings, PortBinding,
    QualitySettings, StorageSpec, TableEntry, VersionPin,
};
pub use odcs::{DataContract, LogicalType, SchemaObject, SchemaProperty};
pub use odps::DataProduct;
pub use quality::{QualityRule, Severity};
pub use storage::{IcebergCatalogKind, IcebergCatalogSettings, OptionValue, StoreSettings};
