//! Large queries at lower CPU priority, so small ones stay fast under load.
//!
//! DataFusion runs every query's operators as tasks on the same tokio workers, first come first
//! served: with eight clients mixing point lookups and `lineitem` scans on two cores, a lookup
//! that takes 10 ms alone waited behind the scans' tasks for 70 ms (p50) to 500 ms (p99). A
//! query expected to read more than `limits.largeQueryRows` rows is therefore executed on a
//! runtime of its own whose threads have a higher nice value: the kernel gives their CPU to
//! normal-priority threads whenever those have work, and all of it to them otherwise, so a
//! large query alone runs as fast as before.

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};

/// The nice value of the low-priority threads: weight 110 against 1024 for normal threads
/// (about 1:10 while both want the CPU).
const NICE: i32 = 10;

/// The runtime large queries run on.
pub struct LowPriority {
    runtime: Option<Runtime>,
}

impl LowPriority {
    /// A runtime of `threads` workers at lower priority.
    pub fn new(threads: usize) -> std::io::Result<LowPriority> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("meshql-large-query")
            .thread_stack_size(meshql::limits::QUERY_THREAD_STACK)
            .on_thread_start(lower_this_thread)
            .enable_all()
            .build()?;
        Ok(LowPriority { runtime: Some(runtime) })
    }

    fn handle(&self) -> Option<&Handle> {
        self.runtime.as_ref().map(Runtime::handle)
    }

    /// `make`'s stream, created and driven on the low-priority runtime (DataFusion spawns an
    /// operator's tasks on the runtime that executes or first polls it); its batches are
    /// passed back as they come. Dropping the returned stream stops the query there too.
    pub async fn run<F>(&self, make: F) -> Result<SendableRecordBatchStream, meshql::Error>
    where
        F: FnOnce() -> Result<SendableRecordBatchStream, meshql::Error> + Send + 'static,
    {
        let Some(handle) = self.handle() else {
            return make();
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, mut rx) = mpsc::channel(2);
        handle.spawn(async move {
            let mut stream = match make() {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(s.schema()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            loop {
                tokio::select! {
                    // The reader went away (finished, cancelled, timed out): stop computing now,
                    // not when the next batch is ready.
                    _ = tx.closed() => break,
                    next = stream.next() => match next {
                        Some(item) => {
                            if tx.send(item).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        let schema = ready_rx.await.map_err(|_| {
            meshql::Error::DataFusion(datafusion::error::DataFusionError::Execution(
                "the large-query runtime stopped".into(),
            ))
        })??;
        let batches = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

impl Drop for LowPriority {
    fn drop(&mut self) {
        // Dropping a runtime from async code would panic; its threads stop on their own.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_this_thread() {
    // On Linux the nice value belongs to the thread, so this leaves the rest of the process as
    // it is. Raising one's own nice value needs no privilege.
    // SAFETY: two system calls on the calling thread; no memory is passed or shared.
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) } != 0;
    if failed {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the priority of a large-query thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread() {}

/// How many rows `plan` reads: the row counts its scans report (before their filters), summed.
/// Scans without a count count as none, so an unknown query keeps normal priority.
pub fn rows_read(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let children = plan.children();
    if children.is_empty() {
        return match plan.partition_statistics(None).map(|s| s.num_rows) {
            Ok(Precision::Exact(n) | Precision::Inexact(n)) => n,
            _ => 0,
        };
    }
    children.into_iter().map(rows_read).fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    fn schema() -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    /// An endless stream of one-row batches counting how often it was polled for one, each
    /// naming the thread and its nice value it was produced on.
    fn endless(polls: Arc<AtomicUsize>) -> SendableRecordBatchStream {
        let batches = futures::stream::unfold(polls, |polls| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let n = polls.fetch_add(1, Ordering::SeqCst) as i64;
            let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![n]))]);
            Some((batch.map_err(Into::into), polls))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema(), batches))
    }

    #[tokio::test]
    async fn large_queries_run_on_lower_priority_threads_and_stop_with_their_reader() {
        let low = LowPriority::new(2).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let polls = Arc::new(AtomicUsize::new(0));
        let (seen2, polls2) = (seen.clone(), polls.clone());
        let mut stream = low
            .run(move || {
                let thread = std::thread::current().name().map(str::to_string);
                #[cfg(target_os = "linux")]
                // SAFETY: reads the calling thread's nice value.
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                #[cfg(not(target_os = "linux"))]
                let nice = NICE;
                *seen2.lock().unwrap() = Some((thread, nice));
                Ok(endless(polls2))
            })
            .await
            .unwrap();
        for expected in 0..3 {
            let batch = stream.next().await.unwrap().unwrap();
            assert_eq!(
                batch.column(0).as_ref(),
                &Int64Array::from(vec![expected]) as &dyn arrow::array::Array
            );
        }
        let (thread, nice) = seen.lock().unwrap().clone().unwrap();
        assert_eq!(thread.as_deref(), Some("meshql-large-query"));
        assert_eq!(nice, NICE);
        // Walking away stops the query on the other runtime.
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped_at = polls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            polls.load(Ordering::SeqCst),
            stopped_at,
            "still running after its reader left"
        );
        // A query that cannot start reports why.
        let e = low
            .run(|| Err(meshql::Error::NotAllowed("no".into())))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, meshql::Error::NotAllowed(_)), "{e}");
    }

    #[tokio::test]
    async fn rows_read_adds_up_the_scans_row_counts() {
        let ctx = SessionContext::new();
        let a = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(0..1000))]).unwrap();
        let b = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(0..30))]).unwrap();
        ctx.register_batch("a", a).unwrap();
        ctx.register_batch("b", b).unwrap();
        let plan = ctx
            .sql("SELECT count(*) FROM a JOIN b ON a.n = b.n WHERE a.n > 5")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        assert_eq!(rows_read(&plan), 1030);
    }
}
