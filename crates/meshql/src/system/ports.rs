//! `mesh.system.ports`: one row per output port the principal may discover, with its contract
//! and storage; the storage location only if the principal may read the product.

use arrow::datatypes::SchemaRef;
use meshql_contract::TableEntry;

use super::{Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Ports;

impl SystemTableKind for Ports {
    fn name(&self) -> &'static str {
        "ports"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let stores = view.gov.catalog.stores();
        let rows: Vec<_> = view
            .entries()
            .into_iter()
            .map(|e| {
                // Where it is read from: relative locations resolved (against `dataRoot`).
                let location =
                    e.binding
                        .as_ref()
                        .ok()
                        .filter(|_| view.readable(e))
                        .map(|b| match &b.storage.catalog_table {
                            Some(_) => b.storage.location.clone(),
                            None => stores
                                .resolve(&b.storage.location)
                                .map(|u| u.to_string())
                                .unwrap_or_else(|_| b.storage.location.clone()),
                        });
                (e, location)
            })
            .collect();
        columns(&rows)
    }
}

/// Each port with its storage location, if the principal may read it.
fn columns(rows: &[(&TableEntry, Option<String>)]) -> Batch {
    let entries = || rows.iter().map(|(e, _)| *e);
    let bindings = || entries().map(|e| e.binding.as_ref().ok());
    Batch::default()
        .utf8("domain", entries().map(|e| Some(e.domain.clone())))
        .utf8("product", entries().map(|e| Some(e.name.clone())))
        .utf8("port", entries().map(|e| Some(e.port.clone())))
        .utf8("port_version", entries().map(|e| Some(e.port_version.clone())))
        .utf8("contract_id", bindings().map(|b| b.map(|b| b.contract.id.clone())))
        .utf8(
            "contract_version",
            bindings().map(|b| b.map(|b| b.contract.version.clone())),
        )
        .utf8(
            "contract_status",
            bindings().map(|b| b.map(|b| b.contract.status.clone())),
        )
        .utf8("format", bindings().map(|b| b.map(|b| b.storage.format.as_str())))
        .utf8("location", rows.iter().map(|(_, location)| location.clone()))
        .utf8(
            "problem",
            entries().map(|e| e.binding.as_ref().err().map(ToString::to_string)),
        )
}
