//! `mesh.system.usage`: one row per (product, consumer) from the audit trail, for the
//! products the principal owns (administrators: every product).

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::SchemaRef;
use meshql_contract::TableEntry;

use super::{Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Usage;

/// How a consumer used a product.
#[derive(Default)]
struct Use {
    queries: i64,
    denied: i64,
    last: i64,
    rows: i64,
    bytes: i64,
}

impl SystemTableKind for Usage {
    fn name(&self) -> &'static str {
        "usage"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let def = view.gov.catalog.definition();
        let owned: BTreeSet<String> = def
            .tables
            .iter()
            .filter(|e| view.admin || view.owns(e))
            .map(TableEntry::qualified_name)
            .collect();
        let mut usage: BTreeMap<(String, String), Use> = BTreeMap::new();
        if !owned.is_empty() {
            // Consumers only: meshql's own quality checks are not usage.
            for r in view.audit_records().into_iter().filter(|r| r.client != "check") {
                for p in &r.products {
                    if !owned.contains(p) {
                        continue;
                    }
                    let u = usage.entry((p.clone(), r.principal.clone())).or_default();
                    u.queries += 1;
                    if r.outcome == "denied" {
                        u.denied += 1;
                    }
                    u.last = u.last.max(r.started_ms);
                    // Rows and bytes are per query; with several products they are shared.
                    u.rows += r.rows as i64;
                    u.bytes += r.bytes as i64;
                }
            }
        }
        let rows: Vec<_> = usage.iter().collect();
        columns(&rows)
    }
}

/// Each (`domain.product`, consumer) with its use.
fn columns(rows: &[(&(String, String), &Use)]) -> Batch {
    let split = |p: &str, first: bool| {
        p.split_once('.')
            .map(|(d, n)| if first { d.to_string() } else { n.to_string() })
    };
    Batch::default()
        .utf8("domain", rows.iter().map(|((p, _), _)| split(p, true)))
        .utf8("product", rows.iter().map(|((p, _), _)| split(p, false)))
        .utf8("consumer", rows.iter().map(|((_, c), _)| Some(c.clone())))
        .int64("queries", rows.iter().map(|(_, u)| u.queries))
        .int64("denied", rows.iter().map(|(_, u)| u.denied))
        .timestamp("last_access", rows.iter().map(|(_, u)| Some(u.last)))
        .int64("rows", rows.iter().map(|(_, u)| u.rows))
        .int64("bytes", rows.iter().map(|(_, u)| u.bytes))
}
