//! meshql's benchmarks live in `benches/` (run `cargo bench -p meshql-benches`).
