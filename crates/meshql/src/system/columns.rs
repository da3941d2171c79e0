//! `mesh.system.columns`: one row per contract column the principal may discover (hidden
//! columns are not shown), with its type, classification, tags and whether it is masked.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use meshql_contract::{SchemaProperty, TableEntry};
use meshql_policy::ColumnAccess;

use super::{join, Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Columns;

/// A column of a product: its ordinal among the visible ones (from 0), whether the principal
/// may read it, and whether masked.
type Row<'a> = (&'a TableEntry, usize, &'a SchemaProperty, bool, bool);

impl SystemTableKind for Columns {
    fn name(&self) -> &'static str {
        "columns"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let mut rows: Vec<Row> = Vec::new();
        for e in view.entries() {
            let Some(decision) = view.gov.decision(&e.domain, &e.name) else {
                continue;
            };
            let Ok(b) = &e.binding else {
                continue;
            };
            let access: BTreeMap<&str, &ColumnAccess> = match &decision.select {
                Ok(a) => a.columns.iter().map(|(n, h)| (n.as_str(), h)).collect(),
                Err(_) => BTreeMap::new(),
            };
            // Ordinals count the columns the principal sees: a gap would place a hidden one.
            let visible = b
                .schema
                .properties
                .iter()
                .filter(|p| !decision.hidden.contains(&p.name));
            for (ordinal, p) in visible.enumerate() {
                let how = access.get(p.name.as_str());
                let readable = matches!(how, Some(ColumnAccess::Plain) | Some(ColumnAccess::Masked { .. }));
                let masked = matches!(how, Some(ColumnAccess::Masked { .. }));
                rows.push((e, ordinal, p, readable, masked));
            }
        }
        columns(&rows)
    }
}

fn columns(rows: &[Row]) -> Batch {
    Batch::default()
        .utf8("domain", rows.iter().map(|r| Some(r.0.domain.clone())))
        .utf8("product", rows.iter().map(|r| Some(r.0.name.clone())))
        .utf8("column_name", rows.iter().map(|r| Some(r.2.name.clone())))
        .int64("ordinal", rows.iter().map(|r| r.1 as i64 + 1))
        .utf8(
            "logical_type",
            rows.iter().map(|r| r.2.logical_type.map(|l| l.to_string())),
        )
        .utf8("physical_type", rows.iter().map(|r| r.2.physical_type.clone()))
        .utf8("description", rows.iter().map(|r| r.2.description.clone()))
        .utf8("classification", rows.iter().map(|r| r.2.classification.clone()))
        .utf8("tags", rows.iter().map(|r| join(&r.2.tags)))
        .boolean("required", rows.iter().map(|r| r.2.required))
        .boolean("is_unique", rows.iter().map(|r| r.2.unique))
        .boolean("primary_key", rows.iter().map(|r| r.2.primary_key))
        .boolean("readable", rows.iter().map(|r| r.3))
        .boolean("masked", rows.iter().map(|r| r.4))
}
