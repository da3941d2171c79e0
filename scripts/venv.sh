#!/usr/bin/env bash
# Makes sure .venv holds the Python peers of the tests and benchmarks (tests/python/requirements.txt:
# pyarrow, deltalake, pyiceberg, duckdb, polars, pandas, the ADBC Flight SQL driver, pytest, tpchgen-cli, pyjwt).
# Used by scripts/test.sh and benches/run.sh; run from the repository root.
set -euo pipefail
if ! .venv/bin/python -c "import pyarrow, deltalake, pyiceberg, duckdb, polars, pandas, adbc_driver_flightsql, pytest, jwt" 2>/dev/null \
   || [ ! -x .venv/bin/tpchgen-cli ]; then
  echo "== preparing .venv (tests/python/requirements.txt)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
