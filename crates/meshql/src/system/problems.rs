//! `mesh.system.problems`: one row per document, policy or reload problem; administrators
//! only (others see no rows).

use arrow::datatypes::SchemaRef;

use super::{Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Problems;

/// When (reload problems only), about which product (empty: none), and what.
type Row = (Option<i64>, String, String);

impl SystemTableKind for Problems {
    fn name(&self) -> &'static str {
        "problems"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let mut rows: Vec<Row> = Vec::new();
        if view.admin {
            let def = view.gov.catalog.definition();
            rows.extend(def.problems.iter().map(|p| (None, String::new(), p.to_string())));
            rows.extend(
                view.gov
                    .policies
                    .problems()
                    .iter()
                    .map(|p| (None, String::new(), format!("policies: {p}"))),
            );
            rows.extend(
                view.mesh
                    .reload_problems()
                    .into_iter()
                    .map(|p| (Some(p.at_ms), p.product, p.message)),
            );
        }
        columns(&rows)
    }
}

fn columns(rows: &[Row]) -> Batch {
    Batch::default()
        .timestamp("at", rows.iter().map(|r| r.0))
        .utf8("product", rows.iter().map(|r| (!r.1.is_empty()).then(|| r.1.clone())))
        .utf8("message", rows.iter().map(|r| Some(r.2.clone())))
}
