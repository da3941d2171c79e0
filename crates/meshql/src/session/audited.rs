//! Audit plumbing: a statement's audit record from planning to the end of its result, the
//! result stream that writes it (and redacts errors), query ids and failure outcomes.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use meshql_catalog::MESH_CATALOG;
use meshql_contract::mesh::RESERVED_SCHEMA;
use meshql_policy::enforce::as_barrier;
use meshql_policy::ColumnAccess;

use crate::audit::{AuditLog, AuditRecord};
use crate::error::ErrorClass;
use crate::governed::AccessView;
use crate::limits::engine_fault;
use crate::redact::Redactor;
use crate::Error;

/// The audit outcome of a failed statement: `denied` for policy refusals — whether raised before
/// planning or inside DataFusion (a denied column) — else `error`.
fn failure_outcome(e: &Error) -> &'static str {
    match e.class() {
        ErrorClass::AccessDenied => "denied",
        _ => "error",
    }
}

pub(super) fn new_query_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}-{seq:x}", crate::time::now_ms(), std::process::id())
}

/// A statement's audit record, waiting for its end.
pub(super) struct Pending {
    pub(super) log: Arc<AuditLog>,
    pub(super) record: AuditRecord,
    pub(super) started: Instant,
    pub(super) governance: Arc<AccessView>,
}

impl Pending {
    /// Notes what the optimised plan scans and which policies shape it.
    pub(super) fn observe(&mut self, plan: &LogicalPlan) {
        let mut columns = BTreeSet::new();
        let mut products = BTreeSet::new();
        let _ = plan.apply_with_subqueries(|node| {
            // The columns the query reads are those it takes from each product's barrier: what
            // the principal sees. (The scans below also read what row filters and masks need;
            // naming those would tell the principal which columns, hidden ones included, its
            // policies look at.)
            if let Some(barrier) = as_barrier(node) {
                let product = barrier.table.strip_prefix("mesh.").unwrap_or(&barrier.table);
                for f in node.schema().fields() {
                    columns.insert(format!("{product}.{}", f.name()));
                }
            }
            if let LogicalPlan::TableScan(scan) = node {
                if let TableReference::Full { catalog, schema, table } = &scan.table_name {
                    if catalog.as_ref() == MESH_CATALOG && schema.as_ref() != RESERVED_SCHEMA {
                        products.insert(format!("{schema}.{table}"));
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let mut policies = BTreeSet::new();
        for p in products.iter().chain(self.record.products.iter()) {
            let Some((domain, name)) = p.split_once('.') else {
                continue;
            };
            let Some(decision) = self.governance.decision(domain, name) else {
                continue;
            };
            if let Ok(access) = &decision.select {
                policies.extend(access.grant_filters.iter().flatten().map(|f| f.rule.clone()));
                policies.extend(access.restrictions.iter().map(|f| f.rule.clone()));
                for (_, how) in &access.columns {
                    if let ColumnAccess::Masked { rule, .. } = how {
                        policies.insert(rule.clone());
                    }
                }
            }
        }
        for p in products {
            if !self.record.products.contains(&p) {
                self.record.products.push(p);
            }
        }
        self.record.columns = columns.into_iter().collect();
        self.record.policies = policies.into_iter().collect();
    }

    /// Records a statement that failed before returning rows.
    pub(super) fn fail(self, e: &Error) {
        if let Err(w) = self.finish(failure_outcome(e), Some(e.to_string()), 0, 0) {
            tracing::error!(error = %w, "audit record not written");
        }
    }

    /// Records, durably, that the query's first rows are about to leave: a result is never
    /// delivered unless the trail holds a record of it.
    fn announce(&self) -> std::io::Result<()> {
        let mut record = self.record.clone();
        record.outcome = crate::audit::STARTED.to_string();
        record.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.log.append(&record)
    }

    fn finish(mut self, outcome: &str, error: Option<String>, rows: u64, bytes: u64) -> std::io::Result<()> {
        if self.log.take_settled(&self.record.query_id) {
            return Ok(());
        }
        self.record.outcome = outcome.to_string();
        // Last barrier: a credential a remote service echoed back never reaches the trail.
        self.record.error = error
            .map(|e| crate::audit::bounded(&meshql_catalog::secrets::redact(&e), crate::audit::MAX_RECORDED_ERROR));
        self.record.rows = rows;
        self.record.bytes = bytes;
        self.record.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.log.append(&self.record)
    }
}

/// `stream` as the principal gets it: its errors redacted, and recorded in the audit trail when
/// it ends (or its failure to start, at once).
pub(super) fn audited(
    stream: Result<SendableRecordBatchStream, Error>,
    audit: Option<Pending>,
    redactor: Redactor,
) -> Result<SendableRecordBatchStream, Error> {
    match stream {
        Ok(stream) => Ok(Box::pin(AuditedStream {
            schema: stream.schema(),
            inner: stream,
            pending: audit,
            redactor,
            rows: 0,
            bytes: 0,
            faulted: false,
            announced: false,
        })),
        Err(e) => {
            let e = redactor.error(e);
            if let Some(p) = audit {
                p.fail(&e);
            }
            Err(e)
        }
    }
}

/// A result stream whose errors are redacted for the principal and that records the query in
/// the audit trail (when the mesh keeps one) when it ends: `ok` when it finishes, `error` or
/// `denied` when it fails, `cancelled` when it is dropped early. If the record cannot be written
/// the stream ends with an error.
struct AuditedStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    pending: Option<Pending>,
    redactor: Redactor,
    rows: u64,
    bytes: u64,
    /// The inner stream panicked: it is not polled again.
    faulted: bool,
    /// The `started` record is written (before the first batch left).
    announced: bool,
}

impl AuditedStream {
    fn finish(&mut self, outcome: &str, error: Option<String>) -> std::io::Result<()> {
        match self.pending.take() {
            Some(p) => p.finish(outcome, error, self.rows, self.bytes),
            None => Ok(()),
        }
    }
}

impl futures::Stream for AuditedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.faulted {
            return Poll::Ready(None);
        }
        // A panic inside an operator ends this query with an error, not the process; the
        // stream is not polled again.
        let polled = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll_next(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                self.faulted = true;
                Poll::Ready(Some(Err(DataFusionError::from(engine_fault(panic)))))
            }
        };
        match polled {
            Poll::Ready(Some(Ok(batch))) => {
                if !self.announced {
                    self.announced = true;
                    if let Some(Err(w)) = self.pending.as_ref().map(Pending::announce) {
                        tracing::error!(error = %w, "audit record not written");
                        let withheld = format!("the audit trail cannot be written, so the result is withheld: {w}");
                        if let Err(w) = self.finish("error", Some(withheld.clone())) {
                            tracing::error!(error = %w, "audit record not written");
                        }
                        self.faulted = true;
                        return Poll::Ready(Some(Err(DataFusionError::External(Box::new(std::io::Error::other(
                            withheld,
                        ))))));
                    }
                }
                self.rows += batch.num_rows() as u64;
                self.bytes += batch.get_array_memory_size() as u64;
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = self.redactor.error(Error::from(e));
                if let Err(w) = self.finish(failure_outcome(&e), Some(e.to_string())) {
                    tracing::error!(error = %w, "audit record not written");
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => match self.finish("ok", None) {
                Ok(()) => Poll::Ready(None),
                Err(w) => {
                    tracing::error!(error = %w, "audit record not written");
                    Poll::Ready(Some(Err(datafusion::error::DataFusionError::External(Box::new(
                        std::io::Error::other(format!(
                            "the audit trail cannot be written, so the result is withheld: {w}"
                        )),
                    )))))
                }
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

impl datafusion::physical_plan::RecordBatchStream for AuditedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Drop for AuditedStream {
    fn drop(&mut self) {
        if self.pending.is_some() {
            if let Err(w) = self.finish("cancelled", None) {
                tracing::error!(error = %w, "audit record not written");
            }
        }
    }
}
