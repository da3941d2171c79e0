//! The `mesh` catalog for DataFusion: object stores, one table provider per format, and the
//! check of every product's storage against its contract.
//!
//! - [`store`]: locations → URLs → object stores; [`cloud`]: S3/GCS/Azure/HTTP clients;
//!   [`secrets`]: credentials from the environment, redacted everywhere;
//! - [`parquet`], [`delta`], [`iceberg`]: one file per format ([`iceberg_scan`]: Iceberg scans
//!   spread over partitions);
//! - [`conform`]: storage schema vs contract; [`hive`]: partition directory values;
//! - [`table`]: a product's lazily opened, cached, refreshed table;
//! - [`catalog`]: the `mesh` catalog and its domain schemas.

pub mod catalog;
pub mod cloud;
pub mod conform;
pub mod convert;
pub mod delta;
pub mod delta_stats;
pub mod error;
mod format;
pub mod glob;
pub mod hive;
pub mod iceberg;
pub mod iceberg_catalog;
pub mod iceberg_scan;
pub mod ownership;
pub mod parquet;
pub mod secrets;
pub mod store;
pub mod table;
pub mod time;

pub use catalog::{same_entry, DomainSchema, MeshCatalog, ProductUnavailable, MESH_CATALOG};
pub use error::CatalogError;
pub use table::{AsOf, OpenedTable, ProductTable};
