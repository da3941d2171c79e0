//! Counting the memory each query holds, whoever allocated it.
//!
//! DataFusion accounts what its operators reserve (sorts, joins, aggregations), not the
//! arrays functions and joins build, nor what several expressions of one batch add up to. A
//! process-wide allocator, [`Counting`], attributes every allocation of [`COUNTED_FROM`]
//! bytes or more to the query whose work made it: while a query's operators are polled
//! (crate::memory::accounted), a thread-local names the query's [`Account`]; the allocation
//! records that name in a small header in front of the block, so that freeing it — on any
//! thread, inside or outside the query — gives the bytes back to the same account. Queries
//! check their account at every batch and after every function call and fail alone when it
//! holds more than its limit.
//!
//! Smaller allocations (tonic's and the planner's small objects) pass through uncounted and
//! unchanged. Allocations made by a query's work outside its operators' polls (the tasks a
//! repartition spawns hashing rows into partitions) are not counted either: the account is a
//! lower bound of what the query holds, exact for what its operators build.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32, AtomicUsize, Ordering};

/// Allocations of at least this many bytes are counted (arrays of 512 or more 8-byte values).
pub const COUNTED_FROM: usize = 4096;

/// Queries that can hold an account at once; more run uncounted (with a warning).
const SLOTS: usize = 1024;

struct Slot {
    live: AtomicIsize,
    limit: AtomicUsize,
    generation: AtomicU32,
    in_use: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            live: AtomicIsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            generation: AtomicU32::new(0),
            in_use: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Bytes held by all accounts together.
static TOTAL: AtomicIsize = AtomicIsize::new(0);
/// Accounts in use.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The account the running work belongs to (0: none). `const`-initialised and without a
    /// destructor, so the allocator can read it at any time without allocating.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// An account's name: its slot (plus one, so that 0 is no account) and the slot's generation.
fn tag(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | (slot as u64 + 1)
}

fn slot_of(tag: u64) -> Option<(&'static Slot, u32)> {
    let low = (tag & 0xffff_ffff) as usize;
    let slot = TABLE.get(low.checked_sub(1)?)?;
    Some((slot, (tag >> 32) as u32))
}

fn current() -> u64 {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

/// Adds `bytes` to the account named by `tag`, if it is still the account that slot holds.
fn charge(tag: u64, bytes: isize) {
    if let Some((slot, generation)) = slot_of(tag) {
        if slot.generation.load(Ordering::Relaxed) == generation {
            slot.live.fetch_add(bytes, Ordering::Relaxed);
            TOTAL.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// The bytes in front of a counted block: room for its tag, keeping the block's alignment.
fn prefix(layout: Layout) -> usize {
    layout.align().max(16)
}

fn outer(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_add(prefix(layout))?;
    Layout::from_size_align(size, layout.align().max(16)).ok()
}

/// A global allocator that counts each query's memory ([`Account`]) over another allocator.
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: meshql::memory::Counting<std::alloc::System> = meshql::memory::Counting::new(std::alloc::System);
/// ```
/// Without it, queries are held only to what DataFusion accounts ([`crate::memory::QueryPool`]);
/// [`Mesh::open`](crate::Mesh::open) logs a warning.
#[derive(Debug, Default)]
pub struct Counting<A>(A);

impl<A> Counting<A> {
    /// Counts over `inner`.
    pub const fn new(inner: A) -> Counting<A> {
        Counting(inner)
    }
}

/// Whether this process allocates through [`Counting`].
pub fn counting_installed() -> bool {
    if !INSTALLED.load(Ordering::Relaxed) {
        // One block large enough to be counted tells.
        drop(std::hint::black_box(Vec::<u8>::with_capacity(COUNTED_FROM)));
    }
    INSTALLED.load(Ordering::Relaxed)
}

impl<A: GlobalAlloc> Counting<A> {
    unsafe fn alloc_counted(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let Some(outer) = outer(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `outer` has a non-zero size; the caller's contract is the inner allocator's.
        let raw = unsafe {
            if zeroed {
                self.0.alloc_zeroed(outer)
            } else {
                self.0.alloc(outer)
            }
        };
        if raw.is_null() {
            return raw;
        }
        let tag = current();
        // SAFETY: the block has `prefix` bytes (at least 16, a multiple of 8) before the
        // caller's part; the tag goes in the last 8 of them, 8-aligned.
        let block = unsafe {
            let block = raw.add(prefix(layout));
            block.sub(8).cast::<u64>().write(tag);
            block
        };
        if tag != 0 {
            charge(tag, layout.size() as isize);
        }
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        block
    }
}

// SAFETY: every block is allocated by the inner allocator with a layout derived only from the
// caller's layout (`outer`), and freed or grown with the same derived layout; counted blocks are
// exactly those of at least COUNTED_FROM bytes, so dealloc and realloc, given the caller's
// layout, know whether a block has a prefix. Nothing here allocates or unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < COUNTED_FROM {
            // SAFETY: forwarded unchanged.
            return unsafe { self.0.alloc(layout) };
        }
        // SAFETY: as above.
        unsafe { self.alloc_counted(layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < COUNTED_FROM {
            // SAFETY: forwarded unchanged.
            return unsafe { self.0.alloc_zeroed(layout) };
        }
        // SAFETY: as above.
        unsafe { self.alloc_counted(layout, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < COUNTED_FROM {
            // SAFETY: forwarded unchanged.
            return unsafe { self.0.dealloc(ptr, layout) };
        }
        // SAFETY: a counted block (by its size): its tag is 8 bytes before it, its start
        // `prefix` bytes before it, and `outer` succeeded when it was allocated.
        unsafe {
            let tag = ptr.sub(8).cast::<u64>().read();
            if tag != 0 {
                charge(tag, -(layout.size() as isize));
            }
            let outer = Layout::from_size_align_unchecked(layout.size() + prefix(layout), layout.align().max(16));
            self.0.dealloc(ptr.sub(prefix(layout)), outer);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (was, will) = (layout.size() >= COUNTED_FROM, new_size >= COUNTED_FROM);
        if !was && !will {
            // SAFETY: forwarded unchanged.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        if was && will {
            let p = prefix(layout);
            let Some(new_outer) = new_size.checked_add(p) else {
                return std::ptr::null_mut();
            };
            // SAFETY: a counted block staying counted: same alignment, so the same prefix; the
            // inner allocator keeps the prefix (and the tag in it) when it moves the block.
            unsafe {
                let tag = ptr.sub(8).cast::<u64>().read();
                let outer = Layout::from_size_align_unchecked(layout.size() + p, layout.align().max(16));
                let raw = self.0.realloc(ptr.sub(p), outer, new_outer);
                if raw.is_null() {
                    return raw;
                }
                if tag != 0 {
                    charge(tag, new_size as isize - layout.size() as isize);
                }
                return raw.add(p);
            }
        }
        // Crossing COUNTED_FROM: a new block of the other kind, the contents copied.
        // SAFETY: `new_size` with the old alignment is a valid layout (the caller's contract).
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// The memory one query holds: every counted allocation made while its work runs
/// ([`Account::enter`]), until it is freed. At most `limit` bytes ([`Account::check`]).
#[derive(Debug)]
pub struct Account {
    tag: u64,
    limit: usize,
}

impl Account {
    /// An account held to `limit` bytes (`usize::MAX`: unlimited, still counted). When every
    /// slot is taken, an account that counts nothing.
    pub fn new(limit: usize) -> Account {
        for (i, slot) in TABLE.iter().enumerate() {
            if slot
                .in_use
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                slot.live.store(0, Ordering::Relaxed);
                slot.limit.store(limit, Ordering::Relaxed);
                OPEN.fetch_add(1, Ordering::Relaxed);
                return Account {
                    tag: tag(i, slot.generation.load(Ordering::Relaxed)),
                    limit,
                };
            }
        }
        tracing::warn!(
            slots = SLOTS,
            "every memory account is in use; this query's memory is not counted"
        );
        Account { tag: 0, limit }
    }

    /// The bytes this query's allocations hold now.
    pub fn held(&self) -> usize {
        slot_of(self.tag).map_or(0, |(slot, _)| slot.live.load(Ordering::Relaxed).max(0) as usize)
    }

    /// Until the guard is dropped, counted allocations on this thread belong to this account.
    pub fn enter(&self) -> Entered {
        let previous = CURRENT.try_with(|c| c.replace(self.tag)).unwrap_or(0);
        Entered { previous }
    }

    /// Fails when this query holds more than its limit, or when all queries together hold more
    /// than `process_limit` and this one more than its share of it.
    pub fn check(&self) -> datafusion::common::Result<()> {
        check_tag(self.tag, self.limit)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if let Some((slot, _)) = slot_of(self.tag) {
            // Blocks still held (a cache filled by this query) are no longer its: later frees
            // of them find another generation and change nothing.
            slot.generation.fetch_add(1, Ordering::Relaxed);
            let left = slot.live.swap(0, Ordering::Relaxed);
            TOTAL.fetch_sub(left, Ordering::Relaxed);
            OPEN.fetch_sub(1, Ordering::Relaxed);
            slot.in_use.store(false, Ordering::Release);
        }
    }
}

/// Restores the thread's previous account when dropped.
#[derive(Debug)]
pub struct Entered {
    previous: u64,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.previous));
    }
}

/// What all accounts together may hold before the largest are stopped (unlimited until set).
static PROCESS_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

pub(super) fn set_counted_process_limit(bytes: usize) {
    PROCESS_LIMIT.store(bytes, Ordering::Relaxed);
}

fn mib(bytes: usize) -> usize {
    bytes / (1 << 20)
}

fn check_tag(tag: u64, limit: usize) -> datafusion::common::Result<()> {
    let Some((slot, _)) = slot_of(tag) else {
        return Ok(());
    };
    let held = slot.live.load(Ordering::Relaxed).max(0) as usize;
    if held > limit {
        return Err(datafusion::error::DataFusionError::ResourcesExhausted(format!(
            "the query holds about {} MiB of memory, more than its limit of {} MiB \
             (values built by functions and joins count, not only what operators reserve)",
            mib(held),
            mib(limit)
        )));
    }
    let total = TOTAL.load(Ordering::Relaxed).max(0) as usize;
    let process = PROCESS_LIMIT.load(Ordering::Relaxed);
    if total > process && held > total / OPEN.load(Ordering::Relaxed).max(1) {
        return Err(datafusion::error::DataFusionError::ResourcesExhausted(format!(
            "the memory for all running queries ({} MiB) is in use, this query holding about {} MiB of it; try again later",
            mib(process),
            mib(held)
        )));
    }
    Ok(())
}

/// Checks the account of the work running on this thread, if any (from inside a function
/// call or an operator).
pub(crate) fn check_current() -> datafusion::common::Result<()> {
    let tag = current();
    match slot_of(tag) {
        Some((slot, generation)) if slot.generation.load(Ordering::Relaxed) == generation => {
            check_tag(tag, slot.limit.load(Ordering::Relaxed))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::System;

    use super::*;

    // The unit tests of this crate allocate through the counting allocator.
    #[global_allocator]
    static GLOBAL: Counting<System> = Counting::new(System);

    #[test]
    fn blocks_allocated_while_a_query_works_are_its_until_freed_wherever_they_are_freed() {
        assert!(counting_installed());
        let account = Account::new(usize::MAX);
        let block = {
            let _in = account.enter();
            vec![7u8; 1 << 20]
        };
        assert_eq!(account.held(), 1 << 20);
        // Small blocks are not counted; blocks allocated outside are not the query's.
        {
            let _in = account.enter();
            drop(std::hint::black_box(vec![1u8; COUNTED_FROM - 1]));
        }
        let outside = vec![1u8; 1 << 20];
        assert_eq!(account.held(), 1 << 20);
        // Freed on another thread, outside any query: given back all the same.
        std::thread::spawn(move || drop(block)).join().expect("thread");
        assert_eq!(account.held(), 0);
        drop(outside);
        assert_eq!(account.held(), 0);
    }

    #[test]
    fn growing_and_shrinking_a_block_moves_it_between_counted_and_not() {
        let account = Account::new(usize::MAX);
        let mut v: Vec<u64> = Vec::new();
        {
            let _in = account.enter();
            for i in 0..100_000u64 {
                v.push(i); // realloc from a few bytes to ~1 MiB, crossing COUNTED_FROM
            }
        }
        assert_eq!(account.held(), v.capacity() * 8);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64), "contents kept");
        v.truncate(10);
        v.shrink_to_fit(); // below COUNTED_FROM again: no longer counted
        assert_eq!(account.held(), 0);
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn large_alignments_are_kept() {
        let account = Account::new(usize::MAX);
        let _in = account.enter();
        for align in [16usize, 64, 128, 4096] {
            let layout = Layout::from_size_align(COUNTED_FROM * 3, align).expect("layout");
            // SAFETY: a valid non-zero layout; the block is freed with the layout it got.
            unsafe {
                let p = std::alloc::alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "aligned to {align}");
                assert!((0..layout.size()).all(|i| *p.add(i) == 0), "zeroed");
                p.write_bytes(9, layout.size());
                let q = std::alloc::realloc(p, layout, COUNTED_FROM * 8);
                assert_eq!(q as usize % align, 0, "still aligned to {align}");
                assert!((0..layout.size()).all(|i| *q.add(i) == 9), "kept");
                assert_eq!(account.held(), COUNTED_FROM * 8);
                std::alloc::dealloc(q, Layout::from_size_align(COUNTED_FROM * 8, align).expect("layout"));
            }
            assert_eq!(account.held(), 0);
        }
    }

    #[test]
    fn a_query_is_stopped_beyond_its_limit_and_a_finished_query_leaves_nothing_behind() {
        let account = Account::new(4 << 20);
        let kept = {
            let _in = account.enter();
            let small = vec![0u8; 1 << 20];
            assert!(check_current().is_ok());
            let large = vec![0u8; 8 << 20];
            let e = check_current().expect_err("over the limit");
            assert!(e.to_string().contains("more than its limit of 4 MiB"), "{e}");
            assert!(account.check().is_err());
            drop(large);
            assert!(account.check().is_ok());
            small
        };
        drop(account);
        // The slot's next account does not get the old block back when it is freed.
        let next = Account::new(usize::MAX);
        drop(kept);
        assert_eq!(next.held(), 0);
        assert!(check_current().is_ok(), "no account outside a query's work");
    }
}
