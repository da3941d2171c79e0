//! From a contract to storage: the server chosen for the mesh's environment, its format,
//! location, pinned version or Iceberg catalog table, and the schema object of the port.

use std::path::{Path, PathBuf};

use super::model::{CatalogTable, Format, StorageSpec, VersionPin};
use super::settings::MeshSettings;
use crate::error::ContractError;
use crate::naming::sql_identifier;
use crate::odcs::{DataContract, SchemaObject, Server};
use crate::odps::OutputPort;

/// Whether `location` (a contract's path, relative to the mesh root, or absolute; not a URL) is
/// `dir` or inside it, comparing the lexically normalised paths (`..` resolved).
pub(super) fn location_is_under(location: &str, root: &Path, dir: &Path) -> bool {
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

pub(super) fn choose_server<'a>(
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

pub(super) fn storage_spec(
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

pub(super) fn choose_schema(contract: &DataContract, port: &OutputPort) -> Result<SchemaObject, ContractError> {
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
