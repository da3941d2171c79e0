"""meshql's benchmark suite: one command, every comparison, results in benches/RESULTS.md.

    benches/run.sh [--quick] [--sf 10]        (builds the binaries, then runs this)

Sections (all in one run, on the same machine, each engine's per-query median):
  1. TPC-H, embedded: raw DataFusion vs meshql (no policies) vs meshql governed (row filter by a
     principal attribute + masks on phones and addresses) vs meshql on Delta and on Iceberg
     (`meshql-bench tpch`, engines alternating in one process);
  2. DuckDB (Python package) on the same Parquet files;
  3. meshql over Flight SQL with the ADBC driver;
  4. transfer: SELECT * FROM the lineitem product into pyarrow, embedded vs Flight SQL, one
     stream and several endpoints;
  5. concurrency: 1, 8, 32 ADBC clients running a mix of short and long queries;
  6. catalog scale: a mesh of 10,000 products — open, server start-up, GetTables, planning, memory.
Every engine's answers are cross-checked against the others; a mismatch is reported in RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches" / "tpch"))
import prepare  # noqa: E402

PASSWORD = "bench-password"
QUERIES = ROOT / "benches" / "tpch" / "queries"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(v):
    return statistics.median(v) if v else float("nan")


def geomean(ratios):
    ratios = [r for r in ratios if r and r > 0 and math.isfinite(r)]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else float("nan")


def load_queries(sf: float, only: list[int]) -> dict[str, str]:
    out = {}
    for n in range(1, 23):
        if only and n not in only:
            continue
        text = (QUERIES / f"q{n:02d}.sql").read_text()
        out[f"q{n:02d}"] = text.replace("${FRACTION}", f"{0.0001 / sf}")
    return out


# ---------------------------------------------------------------- answers, normalised for comparison
def norm(v):
    if v is None:
        return None
    if isinstance(v, (int, float, Decimal)):
        return float(v)
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return str(v)


def same_answer(a: list[list], b: list[list]) -> str | None:
    """None if the answers agree (numbers to 1e-6 relative), else what differs."""
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for i, (ra, rb) in enumerate(zip(a, b)):
        if len(ra) != len(rb):
            return f"row {i}: {len(ra)} columns vs {len(rb)}"
        for x, y in zip(map(norm, ra), map(norm, rb)):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6):
                    return f"row {i}: {x} vs {y}"
            elif x != y:
                return f"row {i}: {x!r} vs {y!r}"
    return None


# ---------------------------------------------------------------- engines
def embedded(bench_bin: Path, sf_dir: Path, sf: float, iterations: int, only, dump: Path) -> dict:
    args = [str(bench_bin), "tpch", "--sf-dir", str(sf_dir), "--sf", str(sf),
            "--queries", str(QUERIES), "--iterations", str(iterations), "--dump", str(dump)]
    if only:
        args += ["--only", ",".join(map(str, only))]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    for line in out.stderr.splitlines():
        log(f"  {line}")
    return json.loads(out.stdout)


def duckdb_run(sf_dir: Path, queries: dict[str, str], iterations: int) -> dict:
    import duckdb

    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute("ATTACH ':memory:' AS mesh")
    for domain, tables in prepare.DOMAINS.items():
        con.execute(f'CREATE SCHEMA mesh."{domain}"')
        for t in tables:
            path = sf_dir / "parquet" / "data" / f"{t}.parquet"
            con.execute(f"CREATE VIEW mesh.\"{domain}\".{t} AS SELECT * FROM read_parquet('{path}')")
    times, answers = {}, {}
    for name, sql in queries.items():
        answers[name] = [list(r) for r in con.execute(sql).fetchall()]
        runs = []
        for _ in range(iterations):
            started = time.perf_counter()
            con.sql(sql).to_arrow_table()
            runs.append((time.perf_counter() - started) * 1000)
        times[name] = runs
        log(f"  {name}: duckdb {median(runs):.0f} ms")
    return {"times_ms": times, "answers": answers, "threads": threads, "version": duckdb.__version__}


class Server:
    """`meshql serve` on 127.0.0.1 with the benchmark's principals (password auth)."""

    def __init__(self, meshql_bin: Path, mesh_dir: Path, work: Path, extra: str = ""):
        hash_ = subprocess.run([str(meshql_bin), "auth", "hash-password"], input=PASSWORD + "\n",
                               capture_output=True, text=True, check=True).stdout.strip()
        config = work / f"server-{time.monotonic_ns()}.yaml"
        config.write_text(
            "listen: 127.0.0.1:0\nauth:\n  users:\n"
            f"    - {{name: analyst, passwordHash: '{hash_}', groups: [analysts]}}\n"
            f"    - {{name: credit, passwordHash: '{hash_}', groups: [credit-desk], attributes: {{min_balance: '-1000'}}}}\n"
            + extra
        )
        self.log = work / f"server-{time.monotonic_ns()}.log"
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(meshql_bin), "serve", "--mesh", str(mesh_dir), "--config", str(config)],
            stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True,
            env={**os.environ, "RUST_LOG": "warn", "MESHQL_STATE_DIR": str(work / "state")},
        )
        line = self.proc.stdout.readline()
        self.startup_ms = (time.perf_counter() - started) * 1000
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}: {self.log.read_text()[-2000:]}")
        self.uri = f"grpc://{match.group(1)}"

    def connect(self, user: str = "analyst"):
        import adbc_driver_flightsql.dbapi as flightsql

        return flightsql.connect(self.uri, db_kwargs={"username": user, "password": PASSWORD})

    def memory(self) -> dict:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        field = lambda k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) * 1024  # noqa: E731
        return {"peak_rss_bytes": field("VmHWM"), "rss_bytes": field("VmRSS")}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def adbc_query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def flight_run(server: Server, queries: dict[str, str], iterations: int, adjacent=None) -> dict:
    """Each query through ADBC: one warm-up run (its answer is kept), then timed runs. A query
    that fails (a memory limit, say) is recorded under "errors" and the others still run.

    `adjacent(query_name)`, when given, times the same query embedded right after its Flight
    runs, so the Flight/embedded ratio compares runs seconds apart rather than minutes apart
    (this machine's speed drifts 15-25% between the sections of a run)."""
    times, answers, embedded_times, errors = {}, {}, {}, {}
    with server.connect() as conn:
        for name, sql in queries.items():
            try:
                answers[name] = [list(r.values()) for r in adbc_query(conn, sql).to_pylist()]
                runs = []
                for _ in range(iterations):
                    started = time.perf_counter()
                    adbc_query(conn, sql)
                    runs.append((time.perf_counter() - started) * 1000)
            except Exception as e:  # noqa: BLE001 — a failing query is reported, the others run
                errors[name] = str(e).splitlines()[0][:300]
                log(f"  {name}: flight failed: {errors[name]}")
                continue
            times[name] = runs
            after = adjacent(name) if adjacent else []
            if after:
                embedded_times[name] = after
            log(f"  {name}: flight {median(runs):.0f} ms"
                + (f", embedded just after {median(after):.0f} ms" if after else ""))
    return {"times_ms": times, "answers": answers, "embedded_times_ms": embedded_times, "errors": errors}


def embedded_adjacent(bench_bin: Path, sf_dir: Path, sf: float, iterations: int):
    """A function timing one query on embedded meshql (`meshql-bench tpch --engines meshql`);
    no times when the query fails there (the embedded section reports that failure)."""
    def run(name: str) -> list[float]:
        args = [str(bench_bin), "tpch", "--sf-dir", str(sf_dir), "--sf", str(sf), "--queries", str(QUERIES),
                "--iterations", str(iterations), "--engines", "meshql", "--only", str(int(name[1:]))]
        out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        return out["times_ms"].get(name, {}).get("meshql", [])
    return run


# ---------------------------------------------------------------- transfer
def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return bytes([(num << 3) | 2]) + _varint(len(payload)) + payload


def flight_sql_command(message_name: str, fields: bytes = b"") -> bytes:
    """A Flight SQL command (protobuf `Any`) encoded by hand: no generated code needed."""
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{message_name}".encode()
    return _field(1, type_url) + _field(2, fields)


def statement(sql: str) -> bytes:
    return flight_sql_command("CommandStatementQuery", _field(1, sql.encode()))


def flight_client(server: Server, user: str = "analyst"):
    import pyarrow.flight as flight

    client = flight.FlightClient(server.uri)
    header = client.authenticate_basic_token(user, PASSWORD)
    return client, flight.FlightCallOptions(headers=[header])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time and the CPU time the server process and this (client) process spend on each run."""

    def __init__(self, server_pid: int):
        self.pid, self.runs = server_pid, []

    def __enter__(self):
        self.t0, self.s0, self.c0 = time.perf_counter(), cpu_seconds(self.pid), time.process_time()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.runs.append(((time.perf_counter() - self.t0) * 1000, cpu_seconds(self.pid) - self.s0,
                              time.process_time() - self.c0))

    def result(self, nbytes: int, rows: int, **extra) -> dict:
        """Median wall time; server and client CPU seconds per GB of Arrow data (medians)."""
        gb = nbytes / 1e9
        return {"times_ms": [r[0] for r in self.runs], "median_ms": median([r[0] for r in self.runs]),
                "server_cpu_s_per_gb": median([r[1] / gb for r in self.runs]),
                "client_cpu_s_per_gb": median([r[2] / gb for r in self.runs]),
                "bytes": nbytes, "rows": rows, **extra}


def transfer(server: Server, split_server: Server, bench_bin: Path, mesh_dir: Path, iterations: int) -> dict:
    import pyarrow as pa

    sql = 'SELECT * FROM mesh."order".lineitem'
    emb = json.loads(subprocess.run([str(bench_bin), "scan", "--mesh", str(mesh_dir), "--sql", sql,
                                     "--iterations", str(iterations)],
                                    check=True, capture_output=True, text=True).stdout)
    out = {"embedded": emb}

    def adbc_transfer(server: Server) -> dict:
        meter = Meter(server.proc.pid)
        with server.connect() as conn:
            adbc_query(conn, sql)  # warm
            nbytes, rows = 0, 0
            for _ in range(iterations):
                with meter:
                    table = adbc_query(conn, sql)
                nbytes, rows = table.nbytes, table.num_rows
                del table
        return meter.result(nbytes, rows)

    out["ceiling"] = flight_ceiling(mesh_dir / "data" / "lineitem.parquet", iterations)
    out["adbc"] = adbc_transfer(server)
    out["adbc_endpoints"] = adbc_transfer(split_server)
    out["pyarrow_flight"] = flight_transfer(server, [sql], iterations)
    out["pyarrow_flight_endpoints"] = flight_transfer(split_server, [sql], iterations)
    # Several streams the client asks for: the product split into disjoint parts, one query
    # each, read in parallel (every part scans the file and keeps its share).
    for n in (2, 4):
        parts = [f"{sql} WHERE l_orderkey % {n} = {i}" for i in range(n)]
        out[f"pyarrow_flight_{n}_streams"] = flight_transfer(server, parts, iterations)
    pa.default_memory_pool().release_unused()
    return out


def flight_ceiling(parquet: Path, iterations: int) -> dict:
    """The same rows from benches/flight_ceiling.py (pyarrow's own Flight server, rows decoded
    in memory beforehand) into the same pyarrow.flight client: what the machine's loopback, gRPC
    and IPC allow when the server does no work."""
    import pyarrow.flight as flight

    proc = subprocess.Popen([sys.executable, str(ROOT / "benches" / "flight_ceiling.py"), str(parquet)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            raise RuntimeError(f"the ceiling server did not start: {line!r}")
        client = flight.FlightClient(f"grpc://{match.group(1)}")
        ticket = flight.Ticket(b"lineitem")
        client.do_get(ticket).read_all()  # warm
        meter = Meter(proc.pid)
        for _ in range(iterations):
            with meter:
                table = client.do_get(ticket).read_all()
            nbytes, rows = table.nbytes, table.num_rows
            del table
        client.close()
        return meter.result(nbytes, rows, streams=1)
    finally:
        proc.kill()
        proc.wait()


def flight_transfer(server: Server, statements: list[str], iterations: int) -> dict:
    """Each statement's FlightInfo, then all their endpoints' streams on threads, all at once;
    median of runs."""
    import pyarrow.flight as flight

    client, options = flight_client(server)

    def read_all(endpoints):
        """Every endpoint's stream, each on its own thread; returns (bytes, rows)."""
        results = [None] * len(endpoints)

        def one(i, ep):
            results[i] = client.do_get(ep.ticket, options).read_all()

        threads = [threading.Thread(target=one, args=(i, ep)) for i, ep in enumerate(endpoints)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(t.nbytes for t in results), sum(t.num_rows for t in results)

    def one_run(statements):
        infos = [None] * len(statements)

        def info_of(i, sql):
            infos[i] = client.get_flight_info(flight.FlightDescriptor.for_command(statement(sql)), options)

        threads = [threading.Thread(target=info_of, args=(i, s)) for i, s in enumerate(statements)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        nbytes, rows = read_all([ep for info in infos for ep in info.endpoints])
        return nbytes, rows, sum(len(i.endpoints) for i in infos)

    try:
        one_run(statements)  # warm
        meter = Meter(server.proc.pid)
        for _ in range(iterations):
            with meter:
                nbytes, rows, streams = one_run(statements)
        return meter.result(nbytes, rows, streams=streams)
    finally:
        client.close()


# ---------------------------------------------------------------- concurrency
SHORT = [
    "SELECT c_name, c_mktsegment, c_acctbal FROM mesh.customer.customer WHERE c_custkey = {k}",
    "SELECT o_orderstatus, o_totalprice, o_orderdate FROM mesh.\"order\".orders WHERE o_orderkey = {k4}",
    "SELECT n_name, r_name FROM mesh.customer.nation JOIN mesh.customer.region ON n_regionkey = r_regionkey ORDER BY n_name",
    "SELECT s_name, s_acctbal FROM mesh.supply.supplier WHERE s_suppkey = {s}",
]


def concurrency(server: Server, queries: dict[str, str], clients: list[int], seconds: float) -> dict:
    long = [queries[q] for q in ("q01", "q06", "q14") if q in queries]
    out = {}
    for n in clients:
        lat = {"short": [], "long": []}
        errors = []
        lock = threading.Lock()
        stop_at = [0.0]
        barrier = threading.Barrier(n + 1)

        def client(i):
            try:
                conn = server.connect()
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
                barrier.wait()
                return
            barrier.wait()
            k = 0
            with conn:
                while time.perf_counter() < stop_at[0]:
                    # Nine short queries for every long one (a dashboard's mix).
                    kind = "long" if k % 10 == 9 and long else "short"
                    if kind == "long":
                        sql = long[(k // 10 + i) % len(long)]
                    else:
                        key = 1 + (i * 7919 + k * 104729) % 150000
                        sql = SHORT[k % len(SHORT)].format(k=key, k4=key * 4 - 3, s=1 + key % 10000)
                    k += 1
                    started = time.perf_counter()
                    try:
                        adbc_query(conn, sql)
                    except Exception as e:  # noqa: BLE001
                        errors.append(str(e)[:200])
                        continue
                    with lock:
                        lat[kind].append((time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        stop_at[0] = time.perf_counter() + seconds + 1e9  # set properly once everyone connected
        barrier.wait()
        began = time.perf_counter()
        stop_at[0] = began + seconds
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        q = lambda v, p: (sorted(v)[min(len(v) - 1, int(p * len(v)))] if v else float("nan"))  # noqa: E731
        allq = lat["short"] + lat["long"]
        out[str(n)] = {
            "clients": n, "seconds": elapsed, "queries": len(allq), "qps": len(allq) / elapsed,
            "p50_ms": q(allq, 0.5), "p99_ms": q(allq, 0.99),
            "short": {"count": len(lat["short"]), "p50_ms": q(lat["short"], 0.5), "p99_ms": q(lat["short"], 0.99)},
            "long": {"count": len(lat["long"]), "p50_ms": q(lat["long"], 0.5), "p99_ms": q(lat["long"], 0.99)},
            "errors": errors[:5], "error_count": len(errors),
        }
        log(f"  {n} clients: {out[str(n)]['qps']:.1f} q/s, p50 {out[str(n)]['p50_ms']:.0f} ms, "
            f"p99 {out[str(n)]['p99_ms']:.0f} ms, {len(errors)} errors")
    return out


# ---------------------------------------------------------------- catalog scale
def scale(meshql_bin: Path, bench_bin: Path, work: Path, products: int) -> dict:
    import pyarrow.flight as flight

    mesh_dir = work / f"scale-{products}"
    emb = json.loads(subprocess.run([str(bench_bin), "scale", "--dir", str(mesh_dir), "--products", str(products)],
                                    check=True, capture_output=True, text=True).stdout)
    out = {"embedded": emb}
    server = Server(meshql_bin, mesh_dir, work)
    try:
        out["server_startup_ms"] = server.startup_ms
        out["server_memory_after_start"] = server.memory()
        client, options = flight_client(server)
        runs, count = [], 0
        for _ in range(6):
            started = time.perf_counter()
            info = client.get_flight_info(flight.FlightDescriptor.for_command(flight_sql_command("CommandGetTables")), options)
            table = client.do_get(info.endpoints[0].ticket, options).read_all()
            runs.append((time.perf_counter() - started) * 1000)
            count = table.num_rows
        out["get_tables_first_ms"] = runs[0]
        out["get_tables_median_ms"] = median(runs[1:])
        out["get_tables_rows"] = count
        with server.connect() as conn:
            started = time.perf_counter()
            objects = conn.adbc_get_objects(depth="tables").read_all()
            out["adbc_get_objects_ms"] = (time.perf_counter() - started) * 1000
            out["adbc_get_objects_catalogs"] = objects.num_rows
            started = time.perf_counter()
            rows = adbc_query(conn, emb["query"]).num_rows
            out["flight_query_ms"] = (time.perf_counter() - started) * 1000
            out["flight_query_rows"] = rows
        out["server_memory"] = server.memory()
        client.close()
    finally:
        server.stop()
    log(f"  {products} products: open {emb['open_ms']:.0f} ms, server start {out['server_startup_ms']:.0f} ms, "
        f"GetTables {out['get_tables_median_ms']:.0f} ms ({out['get_tables_rows']} rows), "
        f"server peak {out['server_memory']['peak_rss_bytes'] / 2**20:.0f} MiB")
    return out


# ---------------------------------------------------------------- report
def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def fmt_ms(v):
    return "—" if v is None or not math.isfinite(v) else (f"{v:.0f}" if v >= 10 else f"{v:.1f}")


def mbps(x: dict) -> float:
    """MB/s of Arrow data of a transfer result."""
    return x["bytes"] / 1e6 / (x["median_ms"] / 1000)


def fmt_ratio(v):
    return "—" if v is None or not math.isfinite(v) else f"{v:.2f}"


def report(r: dict) -> str:
    emb = r["embedded"]
    med = {}  # engine -> query -> median ms
    for q, by in emb["times_ms"].items():
        for e, v in by.items():
            med.setdefault(e, {})[q] = median(v)
    if "duckdb" in r:
        med["duckdb"] = {q: median(v) for q, v in r["duckdb"]["times_ms"].items()}
    if "flight" in r:
        med["flight"] = {q: median(v) for q, v in r["flight"]["times_ms"].items()}
        # Embedded meshql timed right before each query's Flight runs (older results: none).
        med["adjacent"] = {q: median(v) for q, v in r["flight"].get("embedded_times_ms", {}).items()}
        if not med["adjacent"]:
            med["adjacent"] = med["meshql"]
    queries = sorted(set().union(*[m.keys() for m in med.values()]))

    def ratio(a, b):
        return {q: med[a][q] / med[b][q] for q in queries if q in med.get(a, {}) and q in med.get(b, {}) and med[b][q] > 0}

    comparisons = [
        ("meshql / raw DataFusion", "meshql", "datafusion", "≤ 1.05"),
        ("governed / meshql (cost of policies)", "governed", "meshql", "≤ 1.10"),
        ("meshql / DuckDB", "meshql", "duckdb", "report"),
        ("Flight SQL (ADBC) / embedded meshql", "flight", "adjacent", "≤ 1.20"),
        ("Delta / Parquet (meshql)", "delta", "meshql", "report"),
        ("Iceberg / Parquet (meshql)", "iceberg", "meshql", "report"),
        ("raw DataFusion / DuckDB (baseline)", "datafusion", "duckdb", "report"),
    ]
    geo = {label: geomean(list(ratio(a, b).values())) for label, a, b, _ in comparisons}
    r["geomeans"] = geo

    lines = [
        "# meshql benchmark results",
        "",
        f"- Date: {r['date']}",
        f"- Machine: {r['machine']}",
        f"- Command: `{r['command']}`",
        f"- Commit: {r['commit']}; build profile `{r['profile']}`"
        + (" (opt-level 3, no LTO)" if r["profile"] == "quick" else " (unoptimised dependencies: not for numbers)")
        + " for meshql and raw "
        "DataFusion alike; DuckDB is the PyPI wheel " + r.get("duckdb", {}).get("version", "") + ".",
        f"- TPC-H scale factor {r['sf']:g} (tpchgen-cli Parquet, one file per table); {r['iterations']} timed runs "
        "per query and engine after one warm-up run; medians in milliseconds, wall clock, planning included.",
        f"- Settings: DataFusion defaults (target_partitions = {os.cpu_count()}), DuckDB threads = "
        f"{r.get('duckdb', {}).get('threads', '?')}.",
        "",
        "## Headline (geometric mean of per-query ratios; < 1 means faster)",
        "",
        "| comparison | geomean | target |",
        "|---|---|---|",
    ]
    for label, _, _, target in comparisons:
        lines.append(f"| {label} | {fmt_ratio(geo[label])} | {target} |")
    if "transfer" in r:
        t = r["transfer"]
        ceiling = mbps(t["ceiling"]) if "ceiling" in t else None
        for key, label in (("adbc", "ADBC driver, 1 endpoint"), ("pyarrow_flight", "pyarrow.flight, 1 endpoint"),
                           ("pyarrow_flight_endpoints", "pyarrow.flight, server endpoints in parallel")):
            if key in t:
                share = f" ({mbps(t[key]) / ceiling:.0%} of the machine's ceiling)" if ceiling else ""
                lines.append(f"| Flight SQL transfer, lineitem via {label} | {mbps(t[key]):,.0f} MB/s{share} | ≥ 1000 MB/s |")
        if ceiling:
            lines.append(f"| Flight ceiling of this machine (pyarrow.flight server, rows already in memory) | "
                         f"{ceiling:,.0f} MB/s | — |")
    if "scale" in r:
        s = r["scale"]
        lines.append(f"| 10,000 products: open (embedded) | {fmt_ms(s['embedded']['open_ms'])} ms | < 1000 ms |")
        lines.append(f"| 10,000 products: GetTables | {fmt_ms(s['get_tables_median_ms'])} ms | < 200 ms |")
        lines.append(f"| 10,000 products: server memory (peak) | {s['server_memory']['peak_rss_bytes'] / 2**20:.0f} MiB | < 500 MB |")
    lines += ["", "## TPC-H per query (median ms)", ""]
    cols = [c for c in ("datafusion", "meshql", "governed", "duckdb", "flight", "delta", "iceberg") if c in med]
    header = {"datafusion": "raw DataFusion", "meshql": "meshql", "governed": "meshql governed",
              "duckdb": "DuckDB", "flight": "Flight SQL", "delta": "meshql Delta", "iceberg": "meshql Iceberg"}
    lines.append("| query | " + " | ".join(header[c] for c in cols) + " | meshql/DF | governed/meshql | meshql/DuckDB | Flight/embedded |")
    lines.append("|---" * (len(cols) + 5) + "|")
    rs = [ratio("meshql", "datafusion"), ratio("governed", "meshql"), ratio("meshql", "duckdb"), ratio("flight", "adjacent")]
    for q in queries:
        cells = [fmt_ms(med[c].get(q)) for c in cols] + [fmt_ratio(x.get(q)) for x in rs]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    totals = [fmt_ms(sum(med[c].get(q, 0) for q in queries)) for c in cols]
    lines.append("| total | " + " | ".join(totals) + " | | | | |")
    lines += ["", f"Answers cross-checked: {r['checks']}", ""]

    if "transfer" in r:
        t = r["transfer"]
        e = t["embedded"]
        lines += ["## Transfer: `SELECT * FROM mesh.\"order\".lineitem`", "",
                  "| path | rows | Arrow bytes | median ms | MB/s | server CPU s/GB | client CPU s/GB |",
                  "|---|---|---|---|---|---|---|"]
        lines.append(f"| embedded (collect) | {e['rows']:,} | {e['bytes']:,} | {fmt_ms(e['median_ms'])} | "
                     f"{mbps(e):,.0f} | — | — |")
        paths = []
        if "ceiling" in t:
            paths.append(("ceiling", "ceiling: pyarrow.flight server → pyarrow.flight, rows decoded in memory beforehand"))
        paths.append(("adbc", "Flight SQL, ADBC driver → pyarrow, 1 endpoint"))
        if "adbc_endpoints" in t:
            paths.append(("adbc_endpoints", "Flight SQL, ADBC driver → pyarrow, server endpoints (`maxEndpoints: 8`)"))
        for k in t:
            if k == "pyarrow_flight_endpoints":
                paths.append((k, f"Flight SQL, pyarrow.flight, {t[k]['streams']} server endpoint(s) in parallel"))
            elif k.startswith("pyarrow_flight"):
                how = "1 endpoint" if k == "pyarrow_flight" else "client-split queries"
                paths.append((k, f"Flight SQL, pyarrow.flight, {t[k]['streams']} stream(s) in parallel ({how})"))
        for key, label in paths:
            x = t[key]
            cpu = [fmt_ratio(x.get(c)) for c in ("server_cpu_s_per_gb", "client_cpu_s_per_gb")]
            lines.append(f"| {label} | {x['rows']:,} | {x['bytes']:,} | {fmt_ms(x['median_ms'])} | "
                         f"{mbps(x):,.0f} | {cpu[0]} | {cpu[1]} |")
        lines += ["", TRANSFER_NOTES]
    if "concurrency" in r:
        lines += ["## Concurrency (ADBC clients, 9 short queries for each long one)", "",
                  "| clients | queries | q/s | p50 ms | p99 ms | short p50 / p99 | long p50 / p99 | errors |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, c in r["concurrency"].items():
            lines.append(f"| {n} | {c['queries']} | {c['qps']:.1f} | {fmt_ms(c['p50_ms'])} | {fmt_ms(c['p99_ms'])} | "
                         f"{fmt_ms(c['short']['p50_ms'])} / {fmt_ms(c['short']['p99_ms'])} | "
                         f"{fmt_ms(c['long']['p50_ms'])} / {fmt_ms(c['long']['p99_ms'])} | {c['error_count']} |")
        lines.append("")
    if "scale" in r:
        s, e = r["scale"], r["scale"]["embedded"]
        lines += [f"## Catalog scale: {e['products']:,} products", "",
                  "| measure | value |", "|---|---|",
                  f"| open the mesh (embedded, `Mesh::open`) | {fmt_ms(e['open_ms'])} ms |",
                  f"| memory added by opening | {(e['rss_after_open_bytes'] - e['rss_before_open_bytes']) / 2**20:.0f} MiB |",
                  f"| list every table (information_schema, embedded) | first {fmt_ms(e['list_first_ms'])} ms, then {fmt_ms(e['list_median_ms'])} ms |",
                  f"| plan a governed query on one product | first {fmt_ms(e['plan_first_ms'])} ms (opens it), then {fmt_ms(e['plan_median_ms'])} ms |",
                  f"| server start-up (spawn → listening) | {fmt_ms(s['server_startup_ms'])} ms |",
                  f"| Flight SQL GetTables, all products | first {fmt_ms(s['get_tables_first_ms'])} ms, then {fmt_ms(s['get_tables_median_ms'])} ms ({s['get_tables_rows']:,} rows) |",
                  f"| ADBC GetObjects(depth=tables) | {fmt_ms(s['adbc_get_objects_ms'])} ms |",
                  f"| a query on one product over Flight SQL (first) | {fmt_ms(s['flight_query_ms'])} ms |",
                  f"| server resident memory after start / peak at end | {s['server_memory_after_start']['rss_bytes'] / 2**20:.0f} MiB / {s['server_memory']['peak_rss_bytes'] / 2**20:.0f} MiB |",
                  ""]
    if r.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in r["errors"]] + [""]
    lines += ["## Notes", "", NOTES]
    return "\n".join(lines) + "\n"


TRANSFER_NOTES = """\
Server CPU is the server process's user + system time during the run (/proc), client CPU this
Python process's (the ADBC driver's Go threads and pyarrow's gRPC threads run in it), both per GB
of Arrow data received. Client and server share the machine's cores, so MB/s cannot exceed
cores / (server + client CPU per GB); the ceiling row is the same client reading the same rows
from a server that does no work (benches/flight_ceiling.py).
"""


NOTES = """\
- "meshql" is the analyst principal: a grant on every product, no row filter or mask, so the
  ratio to raw DataFusion is the cost of meshql's own layers (catalog, contract projection, policy
  decision and plan barrier, audit record).
- "governed" is the credit desk: a row filter on `customer.customer` by the principal's
  `min_balance` attribute and masks on `c_phone`, `c_address`, `s_phone`, `s_address` (tag rules).
  The threshold admits every customer, so both principals read the same rows: the ratio is the
  cost of evaluating the policies, not of reading less.
- DuckDB reads the same Parquet files through views named like the products, so the query text is
  identical for every engine.
- Flight SQL times are measured in the Python client (ADBC driver, `fetch_arrow_table`), so they
  include the wire, IPC encoding and decoding, and the driver. The Flight SQL / embedded ratio
  divides them by embedded meshql times of the same query measured just after its Flight runs
  (`meshql-bench tpch --engines meshql --only N`), not by the embedded section's, which ran
  minutes earlier on a machine whose speed drifts.
- Queries are the TPC-H ones with the qualification parameters, table names domain-qualified,
  Q15's view as a common table expression, and tie-breakers added to the ORDER BY of Q10, Q11 and
  Q18 so answers compare row by row.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs and shorter concurrency rounds (a few minutes)")
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, help="timed runs per query (default 5, quick 2)")
    ap.add_argument("--only", type=lambda s: [int(x) for x in s.split(",")], default=[], help="e.g. 1,3,18")
    ap.add_argument("--skip", default="", help="comma list of: duckdb,flight,transfer,concurrency,scale")
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--clients", default="1,8,32", help="concurrency rounds, e.g. 1,8,32")
    ap.add_argument("--concurrency-seconds", type=float, help="length of each round (default 30, quick 10)")
    ap.add_argument("--data", type=Path, default=ROOT / "benches" / "data", help="generated data and scratch")
    ap.add_argument("--profile", default="quick", help="the cargo profile the binaries were built with")
    ap.add_argument("--bin-dir", type=Path, help="where meshql and meshql-bench are (default: target/<profile>)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any query failed or answers differ")
    ap.add_argument("--output", type=Path, default=ROOT / "benches" / "RESULTS.md")
    ap.add_argument("--command", default="benches/run.sh " + " ".join(sys.argv[1:]))
    args = ap.parse_args()
    iterations = args.iterations or (2 if args.quick else 5)
    skip = set(filter(None, args.skip.split(",")))
    target = args.bin_dir or Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / args.profile
    meshql_bin, bench_bin = target / "meshql", target / "meshql-bench"
    data: Path = args.data.resolve()
    sf_dir = data / f"sf{args.sf:g}"
    work = data / "work"
    work.mkdir(parents=True, exist_ok=True)

    log(f"preparing the TPC-H SF{args.sf:g} mesh under {sf_dir}")
    subprocess.run([sys.executable, str(ROOT / "benches" / "tpch" / "prepare.py"), "--sf", str(args.sf),
                    "--dir", str(sf_dir)], check=True)
    queries = load_queries(args.sf, args.only)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if commit and dirty:
        commit += " with uncommitted changes"
    r = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
         "command": args.command.strip(), "commit": commit or "?", "profile": args.profile, "sf": args.sf,
         "iterations": iterations, "errors": []}

    log("embedded: raw DataFusion, meshql, governed, Delta, Iceberg")
    dump = work / "answers"
    r["embedded"] = embedded(bench_bin, sf_dir, args.sf, iterations, args.only, dump)
    for q, by in r["embedded"]["errors"].items():
        for e, msg in by.items():
            r["errors"].append(f"{q} on {e}: {msg}")
    r["errors"] += [f"answers differ: {m}" for m in r["embedded"]["mismatches"]]
    # Rows as Arrow's display strings (null shown as NULL, which no TPC-H value is).
    meshql_answers = {q: [[None if v == "NULL" else v for v in row]
                          for row in json.loads((dump / "meshql" / f"{q}.json").read_text())]
                      for q in queries if (dump / "meshql" / f"{q}.json").exists()}
    checks = ["raw DataFusion = meshql = Delta = Iceberg (exact)"]

    def check(answers: dict, who: str) -> None:
        """Records every query whose answer differs from embedded meshql's."""
        for q, answer in answers.items():
            if q in meshql_answers and (diff := same_answer(meshql_answers[q], answer)):
                r["errors"].append(f"{q}: {who} differ: {diff}")

    if "duckdb" not in skip:
        log("DuckDB on the same Parquet files")
        r["duckdb"] = duckdb_run(sf_dir, queries, iterations)
        check(r["duckdb"].pop("answers"), "meshql and DuckDB")
        checks.append("meshql = DuckDB (numbers to 1e-6)")

    if not skip >= {"flight", "transfer", "concurrency"}:
        # The server's per-query memory limit (4 GiB by default), with room for scale factors
        # above 10: hash joins do not spill.
        limits = f"limits: {{memoryPerQuery: {max(4, math.ceil(args.sf))}GiB}}\n"
        server = Server(meshql_bin, sf_dir / "parquet", work, extra=limits)
        try:
            if "flight" not in skip:
                log("Flight SQL (ADBC) on the same queries")
                r["flight"] = flight_run(server, queries, iterations,
                                         embedded_adjacent(bench_bin, sf_dir, args.sf, iterations))
                r["errors"] += [f"{q} over Flight SQL: {e}" for q, e in r["flight"]["errors"].items()]
                check(r["flight"].pop("answers"), "Flight SQL and embedded")
                checks.append("Flight SQL = embedded")
            if "transfer" not in skip:
                log("transfer: SELECT * FROM lineitem")
                # The same server offering one endpoint per independent partition of a scan.
                split = Server(meshql_bin, sf_dir / "parquet", work, extra=limits + "results: {maxEndpoints: 8}\n")
                try:
                    r["transfer"] = transfer(server, split, bench_bin, sf_dir / "parquet", iterations)
                finally:
                    split.stop()
            if "concurrency" not in skip:
                log("concurrency")
                seconds = args.concurrency_seconds or (10 if args.quick else 30)
                clients = [int(c) for c in args.clients.split(",") if c]
                r["concurrency"] = concurrency(server, queries, clients, seconds)
            r["flight_server_memory"] = server.memory()
        finally:
            server.stop()

    if "scale" not in skip:
        log(f"catalog scale: {args.products} products")
        r["scale"] = scale(meshql_bin, bench_bin, work, args.products)

    r["checks"] = "; ".join(checks) + (" — all agree." if not any("differ" in e for e in r["errors"]) else " — see Errors.")
    text = report(r)
    # Keep the soak benchmark's section (benches/soak.py --write-results), which this run does
    # not measure.
    if args.output.exists():
        old = args.output.read_text()
        m = re.search(r"(?m)^## Soak\s*$", old)
        if m:
            end = re.search(r"(?m)^## (?!Soak)", old[m.end():])
            soak = old[m.start(): m.end() + end.start()] if end else old[m.start():]
            text = text.rstrip("\n") + "\n\n" + soak.rstrip("\n") + "\n"
    args.output.write_text(text)
    (data / f"results-sf{args.sf:g}.json").write_text(json.dumps(r, indent=1, default=str))
    log(f"wrote {args.output}")
    for label, g in r["geomeans"].items():
        log(f"  {label}: {fmt_ratio(g)}")
    for e in r["errors"]:
        log(f"  ERROR {e}")
    if args.strict and r["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
