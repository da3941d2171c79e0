#!/usr/bin/env bash
# Runs the whole test suite: every Rust test (cargo nextest if installed, else cargo test) and the
# Python end-to-end tests, which drive the meshql binary and compare it with real peers (DuckDB,
# the deltalake and pyiceberg packages). Creates .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import pyarrow, deltalake, pyiceberg, duckdb, pytest" 2>/dev/null; then
  echo "== creating .venv (tests/python/requirements.txt)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
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
