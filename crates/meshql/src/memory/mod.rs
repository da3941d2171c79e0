//! Memory: each query's own limit, and one ceiling for all queries of the process.
//!
//! A per-query limit alone does not keep a server alive: 32 queries of 4 GiB each is more than
//! most machines have. Every query's operators therefore reserve their memory (sorts, joins,
//! aggregations, spill buffers: what DataFusion accounts) from a pool of their own
//! ([`QueryPool`]) that also draws on the process's budget ([`set_process_limit`]): a
//! reservation fails, and spillable operators spill, when either is used up. An application
//! embedding meshql sets the budget once; `meshql serve` sets it from `limits.memoryTotal`.
//!
//! Memory DataFusion does not account — the values functions build, the batches joins repeat
//! a value into, many expressions of one batch adding up — is counted by the allocator
//! ([`Counting`], installed by the program: the `meshql` binary does) to the query whose
//! operators allocated it ([`Account`]). A query may hold [`HELD_FACTOR`] times its memory
//! limit that way, all queries together as many times the process's budget; the check runs at
//! every batch an operator produces and after every function call, so a single value is
//! still bounded first by [`crate::limits::MAX_VALUE_BYTES`].

mod accounted;
mod counting;

pub(crate) use accounted::accounted;
pub(crate) use counting::check_current;
pub use counting::{counting_installed, Account, Counting, Entered, COUNTED_FROM};

/// How many times its memory limit a query may hold, counting everything it allocated (the
/// limit itself bounds what its operators reserve, which they reach before spilling).
pub const HELD_FACTOR: usize = 2;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};

/// The memory all queries of the process may reserve together.
#[derive(Debug)]
struct ProcessBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

fn budget() -> &'static ProcessBudget {
    static BUDGET: OnceLock<ProcessBudget> = OnceLock::new();
    BUDGET.get_or_init(|| ProcessBudget {
        limit: AtomicUsize::new(usize::MAX),
        used: AtomicUsize::new(0),
    })
}

/// Sets how many bytes all running queries of this process may reserve together (unlimited
/// until set).
pub fn set_process_limit(bytes: usize) {
    budget().limit.store(bytes, Ordering::Relaxed);
    counting::set_counted_process_limit(bytes.saturating_mul(HELD_FACTOR));
}

/// The account a query with this memory limit gets.
pub(crate) fn account_for(limit: Option<usize>) -> Account {
    Account::new(limit.map_or(usize::MAX, |l| l.saturating_mul(HELD_FACTOR)))
}

/// The bytes running queries have reserved, all together.
pub fn process_reserved() -> usize {
    budget().used.load(Ordering::Relaxed)
}

/// The physical memory of the machine, or the cgroup's limit when the process has a lower one
/// (a container); `None` when neither can be read.
pub fn available_memory() -> Option<usize> {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    match (physical, cgroup) {
        (Some(p), Some(c)) => Some(p.min(c)),
        (p, c) => p.or(c),
    }
}

/// One query's memory: at most `limit` bytes, and only as long as the process's budget has room.
#[derive(Debug)]
pub struct QueryPool {
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A pool of at most `limit` bytes (`usize::MAX`: only the process's budget limits it).
    pub fn new(limit: usize) -> Self {
        QueryPool {
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // Reservations give their bytes back when dropped; whatever is left goes back too.
        let left = self.used.swap(0, Ordering::Relaxed);
        budget().used.fetch_sub(left, Ordering::Relaxed);
    }
}

fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

impl MemoryPool for QueryPool {
    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        budget().used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        budget().used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|new| *new <= self.limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query needs more memory than its limit of {} ({} in use, {} more asked for by {})",
                    mib(self.limit),
                    mib(used),
                    mib(additional),
                    reservation.consumer().name()
                ))
            })?;
        let process = budget();
        let limit = process.limit.load(Ordering::Relaxed);
        let granted = process.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(additional).filter(|new| *new <= limit)
        });
        if granted.is_err() {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the memory for all running queries ({}) is in use by other queries; try again later",
                mib(limit)
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::memory_pool::MemoryConsumer;

    use super::*;

    #[test]
    fn a_query_is_held_to_its_own_limit_and_all_queries_to_the_process_budget() {
        // The budget is process-wide: this is the only test in this binary that sets it (not
        // through set_process_limit, which would hold the counted memory of other tests to it).
        budget().limit.store(1000, Ordering::Relaxed);
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(600));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(1000));
        let ra = MemoryConsumer::new("sort").register(&a);
        let rb = MemoryConsumer::new("join").register(&b);
        ra.try_grow(500).expect("within both");
        let e = ra.try_grow(200).expect_err("beyond the query's limit");
        assert!(e.to_string().contains("its limit of"), "{e}");
        let e = rb.try_grow(600).expect_err("beyond the process's budget");
        assert!(e.to_string().contains("all running queries"), "{e}");
        assert_eq!(b.reserved(), 0, "a refused reservation takes nothing");
        rb.try_grow(500).expect("the rest of the budget");
        drop(ra);
        drop(a);
        rb.try_grow(400).expect("freed by the other query");
        assert_eq!(process_reserved(), 900);
        drop(rb);
        drop(b);
        assert_eq!(process_reserved(), 0);
        budget().limit.store(usize::MAX, Ordering::Relaxed);
    }
}
