//! `mesh.system.quality`: one row per stored quality result (history; `latest` marks each
//! check's last), of products the principal may discover. Values, expectations, messages and
//! durations only to those who may read the whole product; checks of hidden columns not at all.

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::SchemaRef;
use meshql_contract::TableEntry;

use super::{Batch, SystemTableKind, View};
use crate::QualityResult;

#[derive(Debug)]
pub(super) struct Quality;

/// A result with its domain and product, whether its values are shown, and whether it is its
/// check's latest.
type Row<'a> = (&'a QualityResult, &'a str, &'a str, bool, bool);

impl SystemTableKind for Quality {
    fn name(&self) -> &'static str {
        "quality"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let history = view.mesh.quality().history();
        let mut latest_index: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (idx, r) in history.iter().enumerate() {
            latest_index.insert((r.product.as_str(), r.check.as_str()), idx);
        }
        let latest: BTreeSet<usize> = latest_index.into_values().collect();
        let def = view.gov.catalog.definition();
        // Per product: whether values are shown, and the columns the principal may not discover.
        let mut views: BTreeMap<String, Option<(bool, BTreeSet<String>)>> = BTreeMap::new();
        let mut view_of = |product: &str| -> Option<(bool, BTreeSet<String>)> {
            if let Some(v) = views.get(product) {
                return v.clone();
            }
            let v = product.split_once('.').and_then(|(d, p)| {
                let decision = view.gov.decision(d, p).filter(|x| x.discover)?;
                let entry = def.tables.iter().find(|e| e.domain == d && e.name == p)?;
                Some((sees_values(view, entry), decision.hidden.clone()))
            });
            views.insert(product.to_string(), v.clone());
            v
        };
        let mut rows: Vec<Row> = Vec::new();
        for (idx, r) in history.iter().enumerate() {
            let Some((d, p)) = r.product.split_once('.') else {
                continue;
            };
            let Some((values, hidden)) = view_of(&r.product) else {
                continue;
            };
            // A check about a column the principal may not discover is not shown at all.
            if r.column.as_ref().is_some_and(|c| hidden.contains(c)) {
                continue;
            }
            rows.push((r, d, p, values, latest.contains(&idx)));
        }
        columns(&rows)
    }
}

/// Whether the principal may see quality values of `e`: computed over every row and column
/// of the product, they are for those who may read all of it anyway — administrators, the
/// product's owners, and principals whose access has no row filter and every column as
/// stored. Everyone else who may discover the product sees each check's outcome only.
fn sees_values(view: &View, e: &TableEntry) -> bool {
    if view.admin || view.owns(e) {
        return true;
    }
    view.gov
        .decision(&e.domain, &e.name)
        .is_some_and(|d| d.select.as_ref().is_ok_and(|a| a.unrestricted()))
}

fn columns(rows: &[Row]) -> Batch {
    let shown = |r: &Row| r.3;
    Batch::default()
        .utf8("domain", rows.iter().map(|r| Some(r.1)))
        .utf8("product", rows.iter().map(|r| Some(r.2)))
        .utf8("check_name", rows.iter().map(|r| Some(r.0.check.clone())))
        .utf8("column_name", rows.iter().map(|r| r.0.column.clone()))
        .utf8("kind", rows.iter().map(|r| Some(r.0.kind.clone())))
        .utf8("dimension", rows.iter().map(|r| r.0.dimension.clone()))
        .utf8("severity", rows.iter().map(|r| Some(r.0.severity.as_str())))
        .utf8("outcome", rows.iter().map(|r| Some(r.0.outcome.as_str())))
        .float64("value", rows.iter().map(|r| r.0.value.filter(|_| shown(r))))
        .utf8(
            "expectation",
            rows.iter().map(|r| shown(r).then(|| r.0.expectation.clone())),
        )
        .utf8("message", rows.iter().map(|r| shown(r).then(|| r.0.message.clone())))
        .timestamp("run_at", rows.iter().map(|r| Some(r.0.run_at_ms)))
        // How long a check took says how much data it read: values only.
        .float64("duration_ms", rows.iter().map(|r| shown(r).then_some(r.0.duration_ms)))
        .boolean("latest", rows.iter().map(|r| r.4))
}
