//! `mesh.system.queries`: one row per audited query; administrators see all of them, others
//! their own.

use arrow::datatypes::SchemaRef;

use super::{join, Batch, SystemTableKind, View};
use crate::AuditRecord;

#[derive(Debug)]
pub(super) struct Queries;

impl SystemTableKind for Queries {
    fn name(&self) -> &'static str {
        "queries"
    }

    fn schema(&self) -> SchemaRef {
        columns(&[]).schema()
    }

    fn build(&self, view: &View) -> Batch {
        let me = view.gov.principal.id();
        let records: Vec<_> = view
            .audit_records()
            .into_iter()
            .filter(|r| view.admin || r.principal == me)
            .collect();
        columns(&records)
    }
}

fn columns(records: &[AuditRecord]) -> Batch {
    Batch::default()
        .utf8("query_id", records.iter().map(|r| Some(r.query_id.clone())))
        .timestamp("started_at", records.iter().map(|r| Some(r.started_ms)))
        .utf8("principal", records.iter().map(|r| Some(r.principal.clone())))
        .utf8("client", records.iter().map(|r| Some(r.client.clone())))
        .utf8("statement", records.iter().map(|r| Some(r.statement.clone())))
        .utf8("products", records.iter().map(|r| join(&r.products)))
        .utf8("columns", records.iter().map(|r| join(&r.columns)))
        .utf8("policies", records.iter().map(|r| join(&r.policies)))
        .utf8("outcome", records.iter().map(|r| Some(r.outcome.clone())))
        .utf8("error", records.iter().map(|r| r.error.clone()))
        .int64("rows", records.iter().map(|r| r.rows as i64))
        .int64("bytes", records.iter().map(|r| r.bytes as i64))
        .float64("duration_ms", records.iter().map(|r| Some(r.duration_ms)))
        .utf8("warnings", records.iter().map(|r| join(&r.warnings)))
}
