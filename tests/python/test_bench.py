"""The benchmark suite (benches/run.py) end to end at a tiny scale: every section runs, and every
engine — raw DataFusion, meshql on Parquet, Delta and Iceberg, governed meshql, DuckDB and Flight
SQL through ADBC — gives the same answers to all 22 TPC-H queries. Timings are not asserted."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_benchmark_suite_runs_and_every_engine_agrees(meshql_bin, tmp_path):
    out = tmp_path / "RESULTS.md"
    data = tmp_path / "data"
    bin_dir = pathlib.Path(meshql_bin).parent
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benches" / "run.py"), "--sf", "0.01", "--iterations", "1",
         "--products", "300", "--clients", "1,4", "--concurrency-seconds", "2",
         "--data", str(data), "--output", str(out), "--bin-dir", str(bin_dir), "--profile", "debug", "--strict"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r = json.loads((data / "results-sf0.01.json").read_text())
    assert r["errors"] == []
    engines = ["datafusion", "meshql", "governed", "delta", "iceberg"]
    assert sorted(r["embedded"]["times_ms"]) == [f"q{n:02d}" for n in range(1, 23)]
    for q, by_engine in r["embedded"]["times_ms"].items():
        assert sorted(by_engine) == sorted(engines), q
    assert len(r["duckdb"]["times_ms"]) == 22 and len(r["flight"]["times_ms"]) == 22
    # Flight runs are compared with embedded runs of the same query timed just after them.
    assert sorted(r["flight"]["embedded_times_ms"]) == sorted(r["flight"]["times_ms"])
    # Answers are not empty where TPC-H promises rows (Q1 has 4 groups at every scale).
    assert r["embedded"]["rows"]["q01"]["meshql"] == 4
    # The whole lineitem product went through the wire, as many rows as embedded.
    t = r["transfer"]
    assert t["adbc"]["rows"] == t["embedded"]["rows"] == t["pyarrow_flight"]["rows"] == 60175
    # The machine's ceiling read the same rows, as many bytes as meshql sent (same plain types).
    assert t["ceiling"]["rows"] == 60175 and t["ceiling"]["bytes"] == t["pyarrow_flight"]["bytes"]
    for key in ("ceiling", "adbc", "pyarrow_flight"):
        assert t[key]["server_cpu_s_per_gb"] >= 0 and t[key]["client_cpu_s_per_gb"] > 0, key
    assert set(r["concurrency"]) == {"1", "4"}
    assert all(c["error_count"] == 0 and c["queries"] > 0 for c in r["concurrency"].values())
    s = r["scale"]
    assert s["embedded"]["products"] == 300 and s["get_tables_rows"] >= 300
    assert s["flight_query_rows"] == 20
    text = out.read_text()
    assert "| q22 |" in text and "meshql / raw DataFusion" in text
    assert "ceiling: pyarrow.flight server" in text and "server CPU s/GB" in text
