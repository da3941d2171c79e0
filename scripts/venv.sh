#!/usr/bin/env bash
# Makes sure .venv (and .venv-sqlalchemy) hold the Python peers of the tests and benchmarks (tests/python/requirements.txt:
# pyarrow, deltalake, pyiceberg, duckdb, polars, pandas, the ADBC Flight SQL driver, pytest, tpchgen-cli, pyjwt).
# Used by scripts/test.sh and benches/run.sh; run from the repository root.
set -euo pipefail
if ! .venv/bin/python -c "import pyarrow, deltalake, pyiceberg, duckdb, polars, pandas, adbc_driver_flightsql, pytest, jwt" 2>/dev/null \
   || [ ! -x .venv/bin/tpchgen-cli ]; then
  echo "== preparing .venv (tests/python/requirements.txt)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
# The client Apache Superset uses (flightsql-dbapi needs SQLAlchemy < 2): a virtual environment
# of its own, for tests/python/test_sqlalchemy.py.
if ! .venv-sqlalchemy/bin/python -c "import flightsql.sqlalchemy, sqlalchemy, pandas" 2>/dev/null; then
  echo "== preparing .venv-sqlalchemy (tests/python/requirements-sqlalchemy.txt)"
  [ -x .venv-sqlalchemy/bin/python ] || python3 -m venv .venv-sqlalchemy
  .venv-sqlalchemy/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements-sqlalchemy.txt
fi
