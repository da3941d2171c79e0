#!/usr/bin/env bash
# Runs the whole test suite: every Rust test (cargo nextest if installed, else cargo test) and the
# Python end-to-end tests, which drive the meshql binary and compare it with real peers (DuckDB,
# the deltalake and pyiceberg packages), and the object-store tests against a real S3 server
# (s3s-fs, installed on first use). Creates .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh

# A real S3 server for the object-store tests (crates/meshql/tests/it/object_stores.rs).
if ! command -v s3s-fs >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "== installing s3s-fs (S3-compatible server over a directory)"
  cargo install s3s-fs@0.14.1 --features binary --locked
fi

echo "== building"
cargo build --workspace --all-targets

echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

echo "== Python end-to-end tests"
MESHQL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/meshql" .venv/bin/python -m pytest tests/python -q
