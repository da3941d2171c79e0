"""Soak benchmark: many Flight SQL clients against one `meshql serve` for a long time.

    .venv/bin/python benches/soak.py                      # 32 clients, 30 minutes
    .venv/bin/python benches/soak.py --minutes 2          # a short run
    .venv/bin/python benches/soak.py --write-results      # and put a "## Soak" section in RESULTS.md

It starts its own `meshql serve` (the binary from --bin, MESHQL_BIN or target/debug/meshql) on
a free 127.0.0.1 port, over a copy of testdata/mesh in a temporary directory, with the demo
configuration testdata/server/server.yaml (only the listen address changed). Then 32 client
threads (--clients), each with its own ADBC Flight SQL connection, run a mix for --minutes:

  lookup    point lookups by key (literal and bound parameters), checked against the row the
            same principal read at warm-up
  metadata  ADBC GetObjects (GetCatalogs/GetDbSchemas/GetTables, with columns), GetTableSchema,
            GetInfo, mesh.system.products
  scan      scans and aggregates over the sample products (Parquet, Delta, Iceberg)
  join      joins across domains
  error     queries that fail on purpose: syntax error, denied table or column, nonexistent
            column or table, a write, EXPLAIN ANALYZE as a non-admin, a division by zero
            while streaming; the error must be the expected one

Clients are alice (analyst, PII reader), sam (support: row-filtered to region EU, masked), carl
(contractor: no customer data, no confidential columns), admin and the dashboards service token,
in turn; every third client logs in again every --reconnect-seconds (jittered). Every answer is
compared with the one the same principal got at warm-up; a wrong answer, a failure of a query
meant to succeed, or a failure of the wrong kind is an *unexpected error*.

Every 10 s (--interval) it prints a sample: queries done, expected and unexpected errors, the
server's RSS (VmRSS), open file descriptors (/proc/<pid>/fd), threads and CPU, and p50/p99 per
query class over that window. At the end: a summary (RSS first/last/max, fds, totals, p50/p99 by
class over the run). Exit status 1 if there was any unexpected error, the server died or did not
shut down cleanly, or a client hung; 2 if the set-up failed. Flat memory is the target.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / "testdata" / "mesh"
SERVER_DIR = ROOT / "testdata" / "server"
CLASSES = ("lookup", "metadata", "scan", "join", "error")
WEIGHTS = {"lookup": 45, "metadata": 10, "scan": 20, "join": 10, "error": 15}
# Principals in the order clients take them (client i plays ROLE_CYCLE[i % 8]).
ROLE_CYCLE = ["alice", "sam", "carl", "dashboards", "admin", "alice", "sam", "carl"]
ANALYSTS = ("alice", "admin", "dashboards")

warnings.filterwarnings("ignore", message="Cannot disable autocommit")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]


def fmt_ms(x: float) -> str:
    if x != x:  # nan
        return "—"
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


# ---------------------------------------------------------------- the server
class Server:
    """`meshql serve` over a copy of testdata/mesh, config = testdata/server/server.yaml with
    the listen address moved to a free 127.0.0.1 port."""

    def __init__(self, binary: Path, work: Path, rust_log: str | None):
        self.mesh = work / "mesh"
        # Not the records (audit trail, quality results) other runs left in the committed mesh.
        shutil.copytree(MESH, self.mesh, ignore=shutil.ignore_patterns(".meshql"))
        conf_dir = work / "server"
        shutil.copytree(SERVER_DIR, conf_dir)  # signing.key is relative to the config file
        config = conf_dir / "server.yaml"
        text, n = re.subn(r"(?m)^listen:.*$", "listen: 127.0.0.1:0", config.read_text())
        if n != 1:
            raise RuntimeError(f"no `listen:` line in {SERVER_DIR / 'server.yaml'}")
        config.write_text(text)
        self.service_token = (conf_dir / "service-token.txt").read_text().strip()
        self.log_path = work / "server.log"
        env = dict(os.environ)
        if rust_log:
            env["RUST_LOG"] = rust_log
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--mesh", str(self.mesh), "--config", str(config)],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), text=True, env=env,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the server did not start: {line!r}\n{self.log_tail()}")
        self.addr = match.group(1)
        self.uri = f"grpc://{self.addr}"
        # Keep reading its standard output so that it can never block on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait: the server shuts down gracefully and exits 0. Returns the exit
        status (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) * 1024  # noqa: E731
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss": kb("VmRSS"), "anon": kb("RssAnon"), "hwm": kb("VmHWM"), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": threads, "cpu_s": cpu}


# ---------------------------------------------------------------- the workload
class Unexpected(Exception):
    """A query that should have succeeded failed, or answered differently than at warm-up, or
    one meant to fail failed the wrong way."""


def connect(server: Server, role: str, timeout: float):
    import adbc_driver_flightsql.dbapi as flightsql

    kwargs = {"adbc.flight.sql.rpc.timeout_seconds.query": str(timeout),
              "adbc.flight.sql.rpc.timeout_seconds.fetch": str(timeout)}
    if role == "dashboards":
        kwargs["adbc.flight.sql.authorization_header"] = f"Bearer {server.service_token}"
    else:
        kwargs.update({"username": role, "password": f"{role}-demo"})
    conn = flightsql.connect(server.uri, db_kwargs=kwargs)
    # The driver logs in lazily: make the handshake happen now, so its time counts as connect.
    conn.adbc_get_info()
    return conn


def run_sql(conn, sql: str, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def rows_of(table) -> list[dict]:
    return table.to_pylist()


@dataclass
class Op:
    """One kind of request. `run(conn, rng)` returns nothing when all is well, raises the
    driver's error (an expected error is checked by the caller) or Unexpected."""

    cls: str
    label: str
    run: Callable
    expect_error: re.Pattern | None = None
    prepare: Callable | None = None  # computes the reference answer at warm-up


class Lookup:
    """`<select> WHERE <key> = k` for random k; the answer must be the rows of the full
    `<select>` (same principal, read at warm-up) with that key — none for keys out of range
    or hidden by a row filter."""

    def __init__(self, select: str, key: str, lo: int, hi: int, param: bool):
        self.select, self.key, self.lo, self.hi, self.param = select, key, lo, hi, param
        self.by_key: dict = {}

    def prepare(self, conn) -> None:
        self.by_key = collections.defaultdict(list)
        for r in rows_of(run_sql(conn, self.select)):
            self.by_key[r[self.key]].append(r)
        if not self.by_key:
            raise RuntimeError(f"no rows for the lookup reference {self.select!r}")

    def __call__(self, conn, rng: random.Random) -> None:
        k = rng.randint(self.lo, self.hi)
        if self.param:
            got = rows_of(run_sql(conn, f"{self.select} WHERE {self.key} = $1", (k,)))
        else:
            got = rows_of(run_sql(conn, f"{self.select} WHERE {self.key} = {k}"))
        want = self.by_key.get(k, [])
        if sorted(map(repr, got)) != sorted(map(repr, want)):
            raise Unexpected(f"wrong answer for {self.key} = {k}: {len(got)} rows {repr(got)[:200]}, "
                             f"expected {len(want)} rows {repr(want)[:200]}")


class Same:
    """A query whose answer must equal the one it gave at warm-up."""

    def __init__(self, sql: str):
        self.sql, self.ref = sql, None

    def prepare(self, conn) -> None:
        self.ref = run_sql(conn, self.sql)
        if self.ref.num_rows == 0:
            raise RuntimeError(f"empty reference answer for {self.sql!r}")

    def __call__(self, conn, rng) -> None:
        got = run_sql(conn, self.sql)
        if not got.equals(self.ref):
            raise Unexpected(f"answer changed: {got.num_rows} rows vs {self.ref.num_rows} at warm-up "
                             f"({repr(got.slice(0, 2).to_pylist())[:200]})")


class Meta:
    """A catalog call whose result (made comparable by `key`) must equal the warm-up one."""

    def __init__(self, call: Callable, key: Callable = lambda x: x):
        self.call, self.key, self.ref = call, key, None

    def prepare(self, conn) -> None:
        self.ref = self.key(self.call(conn))

    def __call__(self, conn, rng) -> None:
        got = self.key(self.call(conn))
        if got != self.ref:
            raise Unexpected(f"catalog answer changed: {repr(got)[:200]} vs {repr(self.ref)[:200]}")


class Fails:
    """A query that must fail (with the error its Op's `expect_error` matches)."""

    def __init__(self, sql: str):
        self.sql = sql

    def __call__(self, conn, rng) -> None:
        table = run_sql(conn, self.sql)
        raise Unexpected(f"succeeded ({table.num_rows} rows) but should have failed")


def tables_of(objects) -> list:
    out = []
    for cat in objects.read_all().to_pylist():
        for s in cat["catalog_db_schemas"] or []:
            for t in s["db_schema_tables"] or []:
                cols = [c["column_name"] for c in (t.get("table_columns") or [])]
                out.append((cat["catalog_name"], s["db_schema_name"], t["table_name"], t["table_type"], cols))
    return sorted(out)


def workload(role: str) -> list[Op]:
    """The requests one principal makes, by class."""
    ops: list[Op] = []

    def add(cls, label, run, expect=None):
        ops.append(Op(cls, label, run, re.compile(expect, re.S) if expect else None,
                      getattr(run, "prepare", None)))

    analyst = role in ANALYSTS
    # ---- lookups
    profiles = "SELECT * FROM mesh.customer.profiles"
    if role == "carl":
        tx = ("SELECT order_id, customer_id, product_id, quantity, unit_price, channel, order_ts, order_date "
              "FROM mesh.order.transactions")
    else:
        tx = "SELECT * FROM mesh.order.transactions"
    if analyst or role == "sam":
        # Keys 0 and 201-205 do not exist; sam's row filter hides most of the others.
        add("lookup", "profile by id", Lookup(profiles, "customer_id", 0, 205, param=False))
        add("lookup", "profile by id ($1)", Lookup(profiles, "customer_id", 0, 205, param=True))
    if role != "sam":
        add("lookup", "order by id", Lookup(tx, "order_id", 1, 2010, param=False))
        add("lookup", "order by id ($1)", Lookup(tx, "order_id", 1, 2010, param=True))
        add("lookup", "product by id", Lookup("SELECT * FROM mesh.product.catalog", "product_id", 1, 52, param=False))
        add("lookup", "shipment by order (Delta)", Lookup("SELECT * FROM mesh.order.shipments", "order_id", 1, 2010, param=True))

    # ---- metadata
    add("metadata", "GetObjects tables", Meta(lambda c: c.adbc_get_objects(depth="tables"), tables_of))
    add("metadata", "GetObjects db_schemas", Meta(lambda c: c.adbc_get_objects(depth="db_schemas"), tables_of))
    own = ("customer", "profiles") if role == "sam" else ("order", "transactions")
    add("metadata", "GetObjects columns", Meta(
        lambda c: c.adbc_get_objects(depth="all", db_schema_filter=own[0], table_name_filter=own[1]), tables_of))
    add("metadata", "GetTableSchema", Meta(
        lambda c: c.adbc_get_table_schema(own[1], db_schema_filter=own[0], catalog_filter="mesh"), lambda s: s.names))
    add("metadata", "GetInfo", Meta(lambda c: c.adbc_get_info(), lambda i: (i.get("vendor_name"), i.get("vendor_version"))))
    add("metadata", "system.products", Same("SELECT domain, product, readable FROM mesh.system.products ORDER BY 1, 2"))

    # ---- scans and aggregates
    if role == "sam":
        scans = ["SELECT region, segment, count(*) AS n, min(signup_ts) AS first FROM mesh.customer.profiles "
                 "GROUP BY 1, 2 ORDER BY 1, 2",
                 "SELECT * FROM mesh.customer.profiles ORDER BY customer_id"]
    else:
        scans = [
            "SELECT category, count(*) AS n, sum(unit_price) AS total, min(unit_price) AS lowest, "
            "max(unit_price) AS highest FROM mesh.product.catalog GROUP BY category ORDER BY category",
            "SELECT status, carrier, count(*) AS n FROM mesh.order.shipments GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT warehouse, count(*) AS items, sum(quantity) AS units FROM mesh.product.inventory "
            "GROUP BY 1 ORDER BY 1",
            f"{tx} WHERE order_date BETWEEN DATE '2024-03-10' AND DATE '2024-03-20' ORDER BY order_id",
        ]
        if analyst:
            scans += [
                "SELECT channel, count(*) AS orders, sum(amount) AS revenue, max(order_ts) AS last "
                "FROM mesh.order.transactions GROUP BY channel ORDER BY channel",
                "SELECT channel, sum(impressions) AS impressions, sum(clicks) AS clicks, "
                "sum(conversions) AS conversions, sum(spend) AS spend "
                "FROM mesh.marketing.campaign_performance GROUP BY channel ORDER BY channel",
                "SELECT kind, count(*) AS n, sum(amount) AS amount FROM mesh.interop.pyiceberg_events_latest "
                "GROUP BY kind ORDER BY kind",
                "SELECT kind, count(*) AS n, sum(amount) AS amount FROM mesh.interop.deltars_events_latest "
                "GROUP BY kind ORDER BY kind",
                "SELECT kind, count(*) AS n FROM mesh.interop.pyarrow_events GROUP BY kind ORDER BY kind",
            ]
        else:  # carl: no confidential columns (amount, spend); impressions are NULL to him
            scans += [
                "SELECT channel, count(*) AS orders, sum(quantity) AS units FROM mesh.order.transactions "
                "GROUP BY channel ORDER BY channel",
                "SELECT channel, count(*) AS days, sum(clicks) AS clicks, sum(impressions) AS impressions "
                "FROM mesh.marketing.campaign_performance GROUP BY channel ORDER BY channel",
            ]
    for sql in scans:
        add("scan", sql[:40], Same(sql))

    # ---- joins across domains
    if analyst:
        joins = [
            "SELECT p.region, count(*) AS orders, sum(t.amount) AS revenue FROM mesh.customer.profiles p "
            "JOIN mesh.order.transactions t ON t.customer_id = p.customer_id "
            "JOIN mesh.product.catalog c ON c.product_id = t.product_id GROUP BY p.region ORDER BY p.region",
            "SELECT c.region, p.category, count(*) AS orders, sum(t.amount) AS revenue "
            "FROM mesh.order.transactions t JOIN mesh.customer.profiles c USING (customer_id) "
            "JOIN mesh.product.catalog p USING (product_id) WHERE t.order_date IN "
            "(SELECT day FROM mesh.marketing.campaign_performance WHERE channel = 'email' AND conversions > 40) "
            "GROUP BY 1, 2 ORDER BY revenue DESC, 1, 2 LIMIT 10",
            "SELECT s.status, c.segment, count(*) AS orders FROM mesh.order.shipments s "
            "JOIN mesh.order.transactions t USING (order_id) JOIN mesh.customer.profiles c USING (customer_id) "
            "GROUP BY 1, 2 ORDER BY 1, 2",
        ]
    elif role == "carl":
        joins = [
            "SELECT p.category, count(*) AS orders, sum(t.quantity) AS units FROM mesh.order.transactions t "
            "JOIN mesh.product.catalog p USING (product_id) GROUP BY 1 ORDER BY 1",
            "SELECT m.channel, count(*) AS pairs FROM mesh.marketing.campaign_performance m "
            "JOIN mesh.order.transactions t ON t.order_date = m.day GROUP BY 1 ORDER BY 1",
        ]
    else:  # sam reads one product: a self-join, row filter and masks on both sides
        joins = [
            "SELECT a.region, a.segment, count(*) AS pairs FROM mesh.customer.profiles a "
            "JOIN mesh.customer.profiles b ON a.region = b.region AND a.segment = b.segment "
            "GROUP BY 1, 2 ORDER BY 1, 2",
        ]
    for sql in joins:
        add("join", sql[:40], Same(sql))

    # ---- errors on purpose, each with the error it must be
    readable = "mesh.customer.profiles" if role == "sam" else "mesh.product.catalog"
    key = "customer_id" if role == "sam" else "product_id"
    add("error", "syntax", Fails("SELEC 1"), r"INVALID_ARGUMENT.*sql parser error")
    add("error", "no such column", Fails(f"SELECT no_such_column FROM {readable}"),
        r"INVALID_ARGUMENT.*No field named no_such_column")
    add("error", "no such table", Fails("SELECT * FROM mesh.product.no_such_product"),
        r"INVALID_ARGUMENT.*table 'mesh\.product\.no_such_product' not found")
    add("error", "write refused", Fails(f"DROP TABLE {readable}"), r"INVALID_ARGUMENT.*only queries are allowed")
    add("error", "division by zero (while streaming)", Fails(f"SELECT {key} / ({key} - {key}) FROM {readable}"),
        r"INVALID_ARGUMENT.*Divide by zero")
    if role == "sam":
        add("error", "denied table", Fails("SELECT * FROM mesh.order.transactions"),
            r"UNAUTHORIZED.*access denied: 'sam' may not read mesh\.order\.transactions")
        add("error", "hidden column", Fails("SELECT birth_date FROM mesh.customer.profiles"),
            r"INVALID_ARGUMENT.*No field named birth_date")
    elif role == "carl":
        add("error", "denied table", Fails("SELECT * FROM mesh.customer.profiles"),
            r"UNAUTHORIZED.*access denied: 'carl' may not read mesh\.customer\.profiles")
        add("error", "denied column", Fails("SELECT order_id, amount FROM mesh.order.transactions WHERE order_id < 10"),
            r"UNAUTHORIZED.*access denied: column 'amount' of mesh\.order\.transactions")
    if role != "admin":
        add("error", "EXPLAIN ANALYZE (not an admin)",
            Fails("EXPLAIN ANALYZE SELECT count(*) FROM " + readable),
            r"EXPLAIN ANALYZE and EXPLAIN VERBOSE are for administrators")
    return ops


def run_op(op: Op, conn, rng) -> tuple[str, str | None]:
    """('ok' | 'expected' | 'unexpected', message)."""
    import adbc_driver_manager

    try:
        op.run(conn, rng)
    except Unexpected as e:
        return "unexpected", str(e)
    except adbc_driver_manager.Error as e:
        msg = str(e)
        if op.expect_error is not None and op.expect_error.search(msg):
            return "expected", None
        return "unexpected", msg if op.expect_error is None else f"wrong error: {msg}"
    except Exception as e:  # noqa: BLE001 — anything else is a failure too, reported
        return "unexpected", f"{type(e).__name__}: {e}"
    if op.expect_error is not None:  # Fails raises Unexpected; kept for safety
        return "unexpected", "succeeded but should have failed"
    return "ok", None


# ---------------------------------------------------------------- statistics
class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.window = {c: [] for c in CLASSES + ("connect",)}
        self.all = {c: [] for c in CLASSES + ("connect",)}
        self.counts = collections.Counter()  # outcome totals
        self.win_counts = collections.Counter()
        self.unexpected = collections.Counter()  # (class, label, message) -> n
        self.printed = 0

    def record(self, cls: str, label: str, ms: float, outcome: str, msg: str | None) -> None:
        with self.lock:
            self.window[cls].append(ms)
            self.all[cls].append(ms)
            self.counts[outcome] += 1
            self.win_counts[outcome] += 1
            if outcome == "unexpected":
                k = (cls, label, (msg or "")[:300])
                self.unexpected[k] += 1
                if self.unexpected[k] == 1 and self.printed < 20:
                    self.printed += 1
                    log(f"UNEXPECTED [{cls}: {label}] {(msg or '')[:300]}")

    def take_window(self) -> tuple[dict, collections.Counter]:
        with self.lock:
            w, c = self.window, self.win_counts
            self.window = {k: [] for k in w}
            self.win_counts = collections.Counter()
        return w, c


@dataclass
class Client:
    index: int
    role: str
    reconnect: bool
    ops: list[Op]
    conn: object = None
    queries: int = 0
    reconnects: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def client_loop(cl: Client, server: Server, stats: Stats, stop: threading.Event, args, seed: int) -> None:
    rng = random.Random(seed)
    by_class = {c: [op for op in cl.ops if op.cls == c] for c in CLASSES}
    classes = [c for c in CLASSES if by_class[c]]
    weights = [WEIGHTS[c] for c in classes]
    next_reconnect = time.monotonic() + args.reconnect_seconds * rng.uniform(0.5, 1.5)
    try:
        while not stop.is_set():
            if cl.conn is None or (cl.reconnect and time.monotonic() >= next_reconnect):
                if cl.conn is not None:
                    try:
                        cl.conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    cl.conn = None
                started = time.perf_counter()
                try:
                    cl.conn = connect(server, cl.role, args.timeout)
                    outcome, msg = "ok", None
                except Exception as e:  # noqa: BLE001
                    outcome, msg = "unexpected", f"connect: {e}"
                stats.record("connect", f"login as {cl.role}", (time.perf_counter() - started) * 1000, outcome, msg)
                cl.reconnects += 1
                next_reconnect = time.monotonic() + args.reconnect_seconds * rng.uniform(0.5, 1.5)
                if cl.conn is None:
                    stop.wait(1.0)
                    continue
            cls = rng.choices(classes, weights)[0]
            op = rng.choice(by_class[cls])
            started = time.perf_counter()
            outcome, msg = run_op(op, cl.conn, rng)
            stats.record(cls, op.label, (time.perf_counter() - started) * 1000, outcome, msg)
            cl.queries += 1
            if outcome == "unexpected":
                stop.wait(0.1)  # no hot loop of failures if the server is gone
    finally:
        if cl.conn is not None:
            try:
                cl.conn.close()
            except Exception:  # noqa: BLE001
                pass
        cl.done.set()


# ---------------------------------------------------------------- report
def machine() -> str:
    cpu = "?"
    try:
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
    except (OSError, AttributeError):
        mem = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}"


def sample_line(s: dict) -> str:
    lat = " ".join(f"{c[:4]} {fmt_ms(s['p50'][c])}/{fmt_ms(s['p99'][c])}" for c in CLASSES + ("connect",)
                   if s["n"].get(c))
    return (f"[{s['t']:6.0f}s] q {s['queries']:6d} ({s['qps']:5.1f}/s) exp.err {s['expected']:5d} "
            f"UNEXP {s['unexpected']:3d} | RSS {mib(s['rss'])} MiB (anon {mib(s['anon'])}) fds {s['fds']} thr {s['threads']} "
            f"cpu {s['cpu_pct']:3.0f}% | p50/p99 ms: {lat or '—'}")


def slope_mib_per_10min(samples: list[dict]) -> float:
    """Least-squares slope of RSS over the second half of the run, MiB per 10 minutes."""
    if samples[-1]["t"] < 300:  # a shorter run's second half says nothing about a trend
        return float("nan")
    pts = [(s["t"], s["rss"] / 2**20) for s in samples if s["t"] >= samples[-1]["t"] / 2]
    if len(pts) < 3:
        return float("nan")
    mt = sum(t for t, _ in pts) / len(pts)
    mr = sum(r for _, r in pts) / len(pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (r - mr) for t, r in pts) / den * 600 if den else float("nan")


def fmt_slope(x: float) -> str:
    return "n/a under 5 min" if x != x else f"{x:+.1f} MiB per 10 min"


def summarize(r: dict) -> list[str]:
    samples, stats = r["samples"], r["stats"]
    first, last = samples[0], samples[-1]
    rss_max = max(s["rss"] for s in samples)
    minute = next((s for s in samples if s["t"] >= 60), None)
    at_minute = f"{mib(minute['rss'])} MiB at {minute['t']:.0f} s, " if minute and minute is not last else ""
    lines = [
        f"- Duration {r['elapsed_s']:.0f} s, {r['clients']} clients; {r['queries']:,} queries "
        f"({r['queries'] / max(r['elapsed_s'], 1e-9):.1f}/s), {r['expected']:,} expected errors, "
        f"**{r['unexpected']} unexpected errors**; {r['connects']} logins (start-up included).",
        f"- Server RSS: first {mib(first['rss'])} MiB (t=0, after start-up and warm-up), {at_minute}"
        f"last {mib(last['rss'])} MiB, max {mib(rss_max)} MiB "
        f"(last − first {(last['rss'] - first['rss']) / 2**20:+.1f} MiB; "
        f"slope over the second half {fmt_slope(slope_mib_per_10min(samples))}); "
        f"anonymous memory (RssAnon) first {mib(first['anon'])}, last {mib(last['anon'])}, "
        f"max {mib(max(s['anon'] for s in samples))} MiB; peak RSS (VmHWM) {mib(max(last['hwm'], rss_max))} MiB.",
        f"- Open fds: first {first['fds']}, last {last['fds']}, max {max(s['fds'] for s in samples)}; "
        f"threads first {first['threads']}, last {last['threads']}; "
        f"CPU during the run: server {last['cpu_s'] - first['cpu_s']:.0f} s, clients (this process, same "
        f"machine) {r['client_cpu_s']:.0f} s.",
        f"- Server: {r['server_end']}.",
    ]
    if r.get("stuck"):
        lines.append(f"- Clients that did not finish their last request: {r['stuck']}")
    lines += ["", "| class | requests | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for c in CLASSES + ("connect",):
        v = stats.all[c]
        if v:
            lines.append(f"| {c} | {len(v):,} | {fmt_ms(pct(v, .5))} | {fmt_ms(pct(v, .99))} | {fmt_ms(max(v))} |")
    if stats.unexpected:
        lines += ["", "Unexpected errors (first messages):", ""]
        for (cls, label, msg), n in stats.unexpected.most_common(10):
            lines.append(f"- {n} × [{cls}: {label}] {msg[:240]}")
    return lines


def decimate(samples: list[dict], rows: int) -> list[dict]:
    if len(samples) <= rows:
        return samples
    idx = sorted({round(i * (len(samples) - 1) / (rows - 1)) for i in range(rows)})
    return [samples[i] for i in idx]


def results_section(r: dict) -> str:
    lines = [
        "## Soak",
        "",
        f"`{r['command']}`: {r['clients']} ADBC clients ({r['roles']}; every third one logs in "
        f"again every ~{r['reconnect_seconds']:g} s) against one `meshql serve` for {r['minutes']:g} min, "
        "a mix of point lookups, catalog calls (GetObjects, GetTableSchema, GetInfo), scans and "
        "aggregates, cross-domain joins and queries that fail on purpose; every answer checked "
        "against the principal's warm-up answer. Samples every "
        f"{r['interval']:g} s: the window's queries, errors and p50/p99, the server's RSS, open "
        "file descriptors and threads at that moment. Flat memory is the target.",
        "",
        f"- Date: {r['date']}; commit {r['commit']}; binary `{r['binary']}`",
        f"- Machine: {r['machine']}",
        "",
    ]
    head = ["t (s)", "queries", "q/s", "expected errors", "unexpected", "RSS MiB", "anon MiB", "fds", "threads", "CPU %"]
    head += [f"{c} p50/p99 ms" for c in CLASSES]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    shown = decimate(r["samples"], 20)
    for s in shown:
        cells = [f"{s['t']:.0f}", f"{s['queries']:,}", f"{s['qps']:.1f}", f"{s['expected']:,}", str(s["unexpected"]),
                 mib(s["rss"]), mib(s["anon"]), str(s["fds"]), str(s["threads"]), f"{s['cpu_pct']:.0f}"]
        cells += [f"{fmt_ms(s['p50'][c])} / {fmt_ms(s['p99'][c])}" if s["n"].get(c) else "—" for c in CLASSES]
        lines.append("| " + " | ".join(cells) + " |")
    if len(shown) < len(r["samples"]):
        lines += ["", f"{len(shown)} of {len(r['samples'])} samples shown (evenly spaced, first and last "
                  "included); each row's counts and latencies are its own {r['interval']:g} s window."]
    lines += ["", "Summary:", ""] + summarize(r) + [""]
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# meshql benchmark results\n"
    m = re.search(r"(?m)^## Soak\s*$", text)
    if m:
        nxt = re.search(r"(?m)^## ", text[m.end():])
        end = m.end() + nxt.start() if nxt else len(text)
        text = text[:m.start()] + section + ("\n" + text[end:] if nxt else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# ---------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    ap.add_argument("--clients", type=int, default=32, help="client threads, one ADBC connection each (default 32)")
    ap.add_argument("--bin", type=Path, default=Path(os.environ.get("MESHQL_BIN") or ROOT / "target" / "debug" / "meshql"),
                    help="the meshql binary (default MESHQL_BIN or target/debug/meshql)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--reconnect-seconds", type=float, default=30.0,
                    help="every third client logs in again about this often (default 30, ±50%%)")
    ap.add_argument("--timeout", type=float, default=120.0, help="client-side timeout of one request, s (default 120)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rust-log", help="RUST_LOG for the server (default: the server's own, info)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (mesh copy, config, server.log)")
    ap.add_argument("--write-results", action="store_true", help="put a '## Soak' section in --results")
    ap.add_argument("--results", type=Path, default=ROOT / "benches" / "RESULTS.md")
    args = ap.parse_args()
    command = shlex.join([".venv/bin/python", "benches/soak.py", *sys.argv[1:]])
    if not (args.bin.is_file() and os.access(args.bin, os.X_OK)):
        log(f"meshql binary not found at {args.bin} (--bin or MESHQL_BIN)")
        return 2

    work = Path(tempfile.mkdtemp(prefix="meshql-soak-"))
    server = None
    clients: list[Client] = []
    try:
        try:
            server = Server(args.bin, work, args.rust_log)
        except Exception as e:  # noqa: BLE001
            log(f"set-up failed: {e}")
            return 2
        log(f"meshql serve (pid {server.pid}) on {server.addr}; mesh copy and server.log in {work}")

        stats = Stats()
        ops_by_role: dict[str, list[Op]] = {}
        for i in range(args.clients):
            role = ROLE_CYCLE[i % len(ROLE_CYCLE)]
            if role not in ops_by_role:
                ops_by_role[role] = workload(role)
            clients.append(Client(i, role, reconnect=(i % 3 == 2), ops=ops_by_role[role]))

        # Log everyone in one by one (password checks take a core each, and the server runs
        # only as many at once as it has cores), then warm up: every request once per
        # principal, which also records the reference answers and checks the expected errors.
        started = time.perf_counter()
        for cl in clients:
            t0 = time.perf_counter()
            try:
                cl.conn = connect(server, cl.role, args.timeout)
            except Exception as e:  # noqa: BLE001
                log(f"set-up failed: client {cl.index} ({cl.role}) cannot connect: {e}")
                return 2
            stats.all["connect"].append((time.perf_counter() - t0) * 1000)
        log(f"{len(clients)} clients connected in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{n} × {r}" for r, n in collections.Counter(c.role for c in clients).items())
            + f"; {sum(c.reconnect for c in clients)} of them log in again every ~{args.reconnect_seconds:g} s")
        warm = time.perf_counter()
        warm_rng = random.Random(args.seed)
        for role, ops in ops_by_role.items():
            conn = next(c.conn for c in clients if c.role == role)
            for op in ops:
                try:
                    if op.prepare:
                        op.prepare(conn)
                except Exception as e:  # noqa: BLE001
                    log(f"set-up failed: warm-up of [{op.cls}: {op.label}] as {role}: {e}")
                    return 2
                outcome, msg = run_op(op, conn, warm_rng)
                if outcome == "unexpected":
                    log(f"set-up failed: warm-up of [{op.cls}: {op.label}] as {role}: {msg}")
                    return 2
        log(f"warm-up: {sum(len(o) for o in ops_by_role.values())} requests checked for "
            f"{len(ops_by_role)} principals in {time.perf_counter() - warm:.1f} s")

        stop = threading.Event()
        died = threading.Event()

        def watch():
            server.proc.wait()
            if not stop.is_set():
                died.set()
                stop.set()

        threading.Thread(target=watch, daemon=True).start()
        samples: list[dict] = []
        first = proc_sample(server.pid)
        samples.append({"t": 0.0, "queries": 0, "qps": 0.0, "expected": 0, "unexpected": 0,
                        "cpu_pct": 0.0, "p50": {}, "p99": {}, "n": {}, **first})
        log(sample_line(samples[0]))
        begin = time.monotonic()
        client_cpu0 = time.process_time()
        threads = []
        for cl in clients:
            t = threading.Thread(target=client_loop, name=f"client-{cl.index}", daemon=True,
                                 args=(cl, server, stats, stop, args, args.seed * 1000 + cl.index))
            t.start()
            threads.append(t)
        end_at = begin + args.minutes * 60
        k = 1
        prev_t, prev_cpu = 0.0, first["cpu_s"]
        while True:
            due = min(begin + k * args.interval, end_at)
            stop.wait(max(0.0, due - time.monotonic()))
            if died.is_set():
                break
            t = time.monotonic() - begin
            try:
                p = proc_sample(server.pid)
            except (OSError, AttributeError):
                died.set()
                stop.set()
                break
            window, counts = stats.take_window()
            n_q = sum(len(window[c]) for c in CLASSES)
            s = {"t": t, "queries": n_q, "qps": n_q / max(t - prev_t, 1e-9),
                 "expected": counts["expected"], "unexpected": counts["unexpected"],
                 "cpu_pct": 100 * (p["cpu_s"] - prev_cpu) / max(t - prev_t, 1e-9),
                 "p50": {c: pct(window[c], .5) for c in window}, "p99": {c: pct(window[c], .99) for c in window},
                 "n": {c: len(window[c]) for c in window}, **p}
            samples.append(s)
            log(sample_line(s))
            prev_t, prev_cpu = t, p["cpu_s"]
            k += 1
            if time.monotonic() >= end_at - 1e-3:
                break
        stop.set()
        elapsed = time.monotonic() - begin
        client_cpu = time.process_time() - client_cpu0
        deadline = time.monotonic() + max(30.0, args.timeout + 10)
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        stuck = [c.index for c, t in zip(clients, threads) if t.is_alive()]

        if died.is_set():
            server_end = f"DIED during the run (exit status {server.proc.returncode})"
        else:
            code = server.stop()
            server_end = ("shut down cleanly on SIGTERM (exit 0)" if code == 0 else
                          f"did NOT shut down cleanly on SIGTERM (exit status {code}; None = killed after 30 s)")
        warnings_by_kind = server_warnings(server.log_tail(10**9))
        totals = stats.counts
        r = {
            "command": command, "clients": args.clients, "minutes": args.minutes, "interval": args.interval,
            "reconnect_seconds": args.reconnect_seconds, "samples": samples, "stats": stats,
            "roles": ", ".join(f"{n} × {r}" for r, n in collections.Counter(c.role for c in clients).items()),
            "queries": sum(len(stats.all[c]) for c in CLASSES), "expected": totals["expected"],
            "unexpected": totals["unexpected"], "connects": len(stats.all["connect"]),
            "elapsed_s": elapsed, "client_cpu_s": client_cpu, "server_end": server_end, "stuck": stuck,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "binary": str(args.bin), "commit": git_commit(),
        }
        print()
        print("Soak summary")
        print("\n".join(summarize(r)))
        if warnings_by_kind:
            print("\nserver.log, WARN and ERROR lines by kind (the divisions by zero are the expected errors):")
            for kind, n in warnings_by_kind.most_common(15):
                print(f"  {n:6d} × {kind}")
        if died.is_set():
            print("\nThe server died; the end of its log:\n" + re.sub(r"\x1b\[[0-9;]*m", "", server.log_tail()))
        if args.write_results:
            write_results(args.results, results_section(r))
            log(f"wrote the Soak section of {args.results}")
        failed = r["unexpected"] > 0 or died.is_set() or stuck or not server_end.startswith("shut down cleanly")
        log("FAILED" if failed else "OK")
        return 1 if failed else 0
    finally:
        if server is not None and server.alive():
            server.stop()
        if args.keep or (server is not None and server.proc.returncode not in (0, None)):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def server_warnings(text: str) -> collections.Counter:
    """WARN/ERROR lines of the server's log, without timestamps and ids, counted by kind (the
    demo signing key warning left out)."""
    kinds = collections.Counter()
    for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        m = re.match(r"\S+\s+(WARN|ERROR)\s+(.*)", ln)
        if not m or "demo key" in ln:
            continue
        msg = re.sub(r'\b(query_id|principal|peer|addr|remote)=("[^"]*"|\S+)\s*', "", m.group(2))
        kinds[f"{m.group(1)} {msg[:200]}"] += 1
    return kinds


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
    return (commit + " with uncommitted changes" if commit and dirty else commit) or "?"


if __name__ == "__main__":
    sys.exit(main())
