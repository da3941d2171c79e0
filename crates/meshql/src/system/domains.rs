//! `mesh.system.domains`: one row per domain with a product the principal may discover.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use meshql_contract::Domain;

use super::{Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Domains;

impl SystemTableKind for Domains {
    fn name(&self) -> &'static str {
        "domains"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let def = view.gov.catalog.definition();
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for e in view.entries() {
            *counts.entry(e.domain.as_str()).or_default() += 1;
        }
        let domains: Vec<_> = def
            .domains
            .iter()
            .filter_map(|d| counts.get(d.name.as_str()).map(|&n| (d, n)))
            .collect();
        columns(&domains)
    }
}

/// Each domain with the number of its products the principal may discover.
fn columns(domains: &[(&Domain, i64)]) -> Batch {
    Batch::default()
        .utf8("domain", domains.iter().map(|(d, _)| Some(d.name.clone())))
        .utf8("title", domains.iter().map(|(d, _)| d.descriptor.title.clone()))
        .utf8(
            "description",
            domains.iter().map(|(d, _)| d.descriptor.description.clone()),
        )
        .utf8("owner", domains.iter().map(|(d, _)| d.descriptor.owner.clone()))
        .utf8("support", domains.iter().map(|(d, _)| d.descriptor.support.clone()))
        .int64("products", domains.iter().map(|(_, n)| *n))
}
