//! `mesh.system.products`: one row per product table the principal may discover, with its
//! descriptor, compliance, lifecycle and whether it is served and readable.

use arrow::datatypes::SchemaRef;
use meshql_contract::TableEntry;

use super::{join, Batch, SystemTableKind, View};

#[derive(Debug)]
pub(super) struct Products;

impl SystemTableKind for Products {
    fn name(&self) -> &'static str {
        "products"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let rows: Vec<_> = view.entries().into_iter().map(|e| (e, view.readable(e))).collect();
        columns(&rows)
    }
}

/// Each product with whether the principal may read it.
fn columns(rows: &[(&TableEntry, bool)]) -> Batch {
    let entries = || rows.iter().map(|(e, _)| *e);
    Batch::default()
        .utf8("domain", entries().map(|e| Some(e.domain.clone())))
        .utf8("product", entries().map(|e| Some(e.name.clone())))
        .utf8(
            "table_name",
            entries().map(|e| Some(format!("mesh.{}", e.qualified_name()))),
        )
        .utf8("name", entries().map(|e| Some(e.product.display_name().to_string())))
        .utf8("id", entries().map(|e| Some(e.product.id.clone())))
        .utf8("version", entries().map(|e| e.product.version.clone()))
        .utf8("status", entries().map(|e| Some(e.product.status.clone())))
        .utf8("lifecycle", entries().map(|e| Some(e.compliance.lifecycle.as_str())))
        .utf8("owner", entries().map(|e| e.product.owner()))
        .utf8(
            "description",
            entries().map(|e| e.product.description.as_ref().and_then(|d| d.purpose.clone())),
        )
        .utf8("tags", entries().map(|e| join(&e.product.tags)))
        .utf8(
            "format",
            entries().map(|e| e.binding.as_ref().ok().map(|b| b.storage.format.as_str())),
        )
        .boolean("compliant", entries().map(|e| e.compliance.is_compliant()))
        .utf8(
            "compliance_failures",
            entries().map(|e| {
                join(
                    &e.compliance
                        .failures
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                )
            }),
        )
        .boolean(
            "served",
            entries().map(|e| e.binding.is_ok() && e.compliance.refusal().is_none()),
        )
        .utf8(
            "not_served_reason",
            entries().map(|e| match &e.binding {
                Err(err) => Some(err.to_string()),
                Ok(_) => e.compliance.refusal(),
            }),
        )
        .boolean("readable", rows.iter().map(|(_, readable)| *readable))
        .utf8("contact", entries().map(crate::ProductUnavailable::contact))
}
