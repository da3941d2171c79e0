//! Running a query's operators under its [`Account`]: each operator of the physical plan is
//! wrapped so that its work — creating its stream and every poll of it — is counted to the
//! query, and the account is checked after every batch it produces.
//!
//! The wrapper is transparent: it displays, names and measures as the operator it wraps, and
//! its children are the wrapped operator's children (themselves wrapped), so `EXPLAIN ANALYZE`
//! reads as without it. It is applied to the plan that runs, after every optimiser rule.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{Result, Statistics};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

use super::counting::Account;

/// `plan` with every operator counted to `account`.
pub(crate) fn accounted(plan: Arc<dyn ExecutionPlan>, account: &Arc<Account>) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan
        .children()
        .into_iter()
        .map(|child| accounted(Arc::clone(child), account))
        .collect::<Result<Vec<_>>>()?;
    let inner = if children.is_empty() {
        plan
    } else {
        plan.with_new_children(children)?
    };
    Ok(Arc::new(AccountedExec {
        inner,
        account: Arc::clone(account),
    }))
}

#[derive(Debug)]
struct AccountedExec {
    inner: Arc<dyn ExecutionPlan>,
    account: Arc<Account>,
}

impl DisplayAs for AccountedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for AccountedExec {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inner.children()
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(AccountedExec {
            inner: Arc::clone(&self.inner).with_new_children(children)?,
            account: Arc::clone(&self.account),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = {
            let _entered = self.account.enter();
            self.inner.execute(partition, context)?
        };
        Ok(Box::pin(AccountedStream {
            inner,
            account: Arc::clone(&self.account),
            done: false,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.inner.metrics()
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Statistics> {
        self.inner.partition_statistics(partition)
    }
}

struct AccountedStream {
    inner: SendableRecordBatchStream,
    account: Arc<Account>,
    done: bool,
}

impl Stream for AccountedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = {
            let _entered = self.account.enter();
            self.inner.poll_next_unpin(cx)
        };
        match polled {
            Poll::Ready(Some(Ok(batch))) => match self.account.check() {
                Ok(()) => Poll::Ready(Some(Ok(batch))),
                Err(e) => {
                    // The batch is dropped here, its memory with it; the query ends.
                    self.done = true;
                    Poll::Ready(Some(Err(e)))
                }
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl RecordBatchStream for AccountedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
