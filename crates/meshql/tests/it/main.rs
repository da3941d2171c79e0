//! Integration tests of the embedded API over the sample mesh (`testdata/mesh`) and over
//! broken copies of it. Expected answers come from the generator's rows
//! ([`meshql_testdata::sample::Sample`]) or from the interop fixtures' defining formula — never
//! from meshql itself.

// As in the `meshql` binary: every query's memory is counted (meshql::memory).
#[global_allocator]
static GLOBAL: meshql::memory::Counting<std::alloc::System> = meshql::memory::Counting::new(std::alloc::System);

mod bad_input;
mod common;
mod formats;
mod fuzz;
mod governance;
mod hostile;
mod interop;
mod leaks;
mod object_stores;
mod policies;
mod sample;
mod scale;
mod time_travel;
