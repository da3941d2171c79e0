//! Where queries run: threads of their own, apart from the ones answering calls, and large
//! queries at lower CPU priority.
//!
//! Planning and running a query is CPU work that DataFusion does not always interrupt (a long
//! expression's planning, an accumulator's inner loop). On the threads that also accept
//! connections and answer handshakes and metadata calls, a few such queries would stop the
//! server answering anyone. So every statement is planned and run on the query runtime, whose
//! threads only do that; the server's own runtime stays free for calls, and a query past its
//! time limit is abandoned there (its client is answered at the deadline and its stream is
//! dropped, which stops it at its next await point).
//!
//! DataFusion runs every query's operators as tasks on the same workers, first come first
//! served: with eight clients mixing point lookups and `lineitem` scans on two cores, a lookup
//! that takes 10 ms alone waited behind the scans' tasks for 70 ms (p50) to 500 ms (p99). A
//! query expected to read more than `limits.largeQueryRows` rows is therefore executed on a
//! runtime of its own whose threads have a higher nice value: the kernel gives their CPU to
//! normal-priority threads whenever those have work, and all of it to them otherwise, so a
//! large query alone runs as fast as before.

use std::future::Future;
use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::physical_plan::ExecutionPlan;
use tokio::runtime::{Handle, Runtime};

/// The nice value of the low-priority threads: weight 110 against 1024 for normal threads
/// (about 1:10 while both want the CPU).
const NICE: i32 = 10;

/// The runtimes queries are planned and run on.
pub struct QueryThreads {
    normal: Option<Runtime>,
    low: Option<Runtime>,
    /// Where statements are planned: each on a blocking thread of its own, and the tasks its
    /// planning spawns (reading a Delta log, listing files) on these workers. Apart from the
    /// queries' workers, which a computation that does not yield can hold past its deadline
    /// (`levenshtein` of long strings, an accumulator's inner loop): before, two such queries
    /// kept every other statement's planning waiting for their end (45 s).
    planning: Option<Runtime>,
}

impl QueryThreads {
    /// `threads` workers for queries, and as many at low priority if `low_priority`.
    pub fn new(threads: usize, low_priority: bool) -> std::io::Result<QueryThreads> {
        let build = |name: &str, low: bool| {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder
                .worker_threads(threads.max(1))
                .thread_name(name)
                .thread_stack_size(meshql::limits::QUERY_THREAD_STACK)
                // Statements are planned on blocking threads: at most this many at once, the
                // others wait for one (within their time limit).
                .max_blocking_threads(64)
                .enable_all();
            if low {
                builder.on_thread_start(lower_this_thread);
            }
            builder.build()
        };
        Ok(QueryThreads {
            normal: Some(build("meshql-query", false)?),
            planning: Some(build("meshql-plan", false)?),
            low: if low_priority {
                Some(build("meshql-large-query", true)?)
            } else {
                None
            },
        })
    }

    /// The runtime for planning and for queries of normal priority.
    pub fn normal(&self) -> Handle {
        self.normal
            .as_ref()
            .map_or_else(Handle::current, |r| r.handle().clone())
    }

    /// The runtime statements are planned on.
    pub fn planning(&self) -> Handle {
        self.planning
            .as_ref()
            .map_or_else(Handle::current, |r| r.handle().clone())
    }

    /// The runtime for large queries (none when they run at normal priority).
    pub fn low(&self) -> Option<Handle> {
        self.low.as_ref().map(|r| r.handle().clone())
    }

    /// Runs `work` (a statement's planning) on a thread of its own of the query runtime, waiting
    /// for it at most until `deadline`; past it, `late` is returned and the work is left to end
    /// on its own.
    pub async fn run<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>> + Send + 'static,
        deadline: tokio::time::Instant,
        late: impl FnOnce() -> E,
        lost: impl FnOnce(String) -> E,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let task = self.planning().spawn(on_own_thread(work));
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(lost(e.to_string())),
            Err(_) => Err(late()),
        }
    }
}

/// Runs `work` to completion on a thread of the runtime's blocking pool, and waits for it.
///
/// Planning is CPU work DataFusion does not interrupt: planning a 100,000-value `IN` list
/// takes seconds in a debug build. On the runtime's workers, two such statements would keep
/// every other query's planning waiting; on threads of their own the kernel shares the cores
/// between them all, so a lookup is planned in its few milliseconds whatever else is planned.
pub async fn on_own_thread<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let handle = Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(work)).await {
        Ok(out) => out,
        // The work panicked: let it go on unwinding here (the server catches panics per call).
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Drop for QueryThreads {
    fn drop(&mut self) {
        // Dropping a runtime from async code would panic; their threads stop on their own.
        for rt in [self.normal.take(), self.low.take(), self.planning.take()]
            .into_iter()
            .flatten()
        {
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
    use std::time::Duration;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;

    fn schema() -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    #[tokio::test]
    async fn queries_run_on_their_own_threads_large_ones_at_lower_priority() {
        let threads = QueryThreads::new(2, true).unwrap();
        let where_ = || {
            let thread = std::thread::current().name().map(str::to_string);
            #[cfg(target_os = "linux")]
            // SAFETY: reads the calling thread's nice value.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            #[cfg(not(target_os = "linux"))]
            let nice = 0;
            (thread, nice)
        };
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        let normal = threads
            .run(
                async move { Ok::<_, String>(where_()) },
                far,
                || "late".to_string(),
                |e| e,
            )
            .await
            .unwrap();
        assert_eq!(normal.0.as_deref(), Some("meshql-plan"));
        let low = threads.low().unwrap().spawn(async move { where_() }).await.unwrap();
        assert_eq!(low.0.as_deref(), Some("meshql-large-query"));
        #[cfg(target_os = "linux")]
        assert_eq!((normal.1, low.1), (0, NICE));
        // Work that outlives its deadline is answered at the deadline, and does not hold up
        // the caller's runtime while it burns a query thread.
        let started = std::time::Instant::now();
        let busy = threads
            .run(
                async {
                    std::thread::sleep(Duration::from_secs(2));
                    Ok::<_, String>(())
                },
                tokio::time::Instant::now() + Duration::from_millis(200),
                || "late".to_string(),
                |e| e,
            )
            .await;
        assert_eq!(busy, Err("late".to_string()));
        assert!(started.elapsed() < Duration::from_secs(2), "waited for the work");
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
