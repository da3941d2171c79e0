#!/usr/bin/env bash
# meshql's benchmark suite, one command: builds meshql and meshql-bench with the `quick` profile
# (optimised, no LTO), generates the TPC-H mesh (tpchgen-cli, deltalake, pyiceberg), runs every
# comparison and writes benches/RESULTS.md. Arguments go to benches/run.py:
#   benches/run.sh            # TPC-H SF1, 5 runs per query (~8 min on 2 cores after the build)
#   benches/run.sh --quick    # 2 runs per query, short concurrency rounds (a few minutes)
#   benches/run.sh --sf 10    # scale factor 10 (~10 GB of Parquet, Delta and Iceberg)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh

echo "== building meshql and meshql-bench (profile quick; a clean build takes ~30 min on 2 cores)"
cargo build --workspace --bins --profile quick

exec .venv/bin/python benches/run.py --command "benches/run.sh $*" "$@"
