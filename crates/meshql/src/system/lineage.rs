//! `mesh.system.lineage`: one row per input-port edge from a product to the product reading
//! it, when the principal may discover both ends.

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::SchemaRef;
use meshql_contract::TableEntry;

use super::{Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Lineage;

impl SystemTableKind for Lineage {
    fn name(&self) -> &'static str {
        "lineage"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let def = view.gov.catalog.definition();
        // Which tables publish each contract.
        let mut by_contract: BTreeMap<&str, Vec<&TableEntry>> = BTreeMap::new();
        for e in &def.tables {
            if let Ok(b) = &e.binding {
                by_contract.entry(b.contract.id.as_str()).or_default().push(e);
            }
        }
        let mut rows = Vec::new();
        let mut seen = BTreeSet::new();
        for to in view.entries() {
            for input in &to.product.input_ports {
                for from in by_contract.get(input.contract_id.as_str()).into_iter().flatten() {
                    if !view.gov.discoverable(&from.domain, &from.name) {
                        continue;
                    }
                    let key = (from.qualified_name(), to.qualified_name(), input.name.clone());
                    if seen.insert(key) {
                        rows.push((*from, to, input.name.as_str(), input.contract_id.as_str()));
                    }
                }
            }
        }
        columns(&rows)
    }
}

/// Each edge: the product read, the product reading it, and the input port's name and contract.
fn columns(rows: &[(&TableEntry, &TableEntry, &str, &str)]) -> Batch {
    Batch::default()
        .utf8("from_domain", rows.iter().map(|r| Some(r.0.domain.clone())))
        .utf8("from_product", rows.iter().map(|r| Some(r.0.name.clone())))
        .utf8("to_domain", rows.iter().map(|r| Some(r.1.domain.clone())))
        .utf8("to_product", rows.iter().map(|r| Some(r.1.name.clone())))
        .utf8("input_port", rows.iter().map(|r| Some(r.2)))
        .utf8("contract_id", rows.iter().map(|r| Some(r.3)))
}
