"""The writer corpus: tables written on the fly by the tools domain teams use, served by meshql.

Each fixture writes a small table (a few hundred rows) with a real writer — DuckDB, polars,
pandas, pyarrow, the `deltalake` package, PyIceberg — into a fresh mesh in a temporary
directory, wraps it in an ODPS descriptor and an ODCS v3.1 contract the way a domain team would,
and the tests query it through the `meshql` CLI. Every expected answer is the writer's own reader
on the same files (DuckDB's `read_parquet`, `pl.read_parquet`, `pd.read_parquet`,
`pyarrow.dataset`, `DeltaTable(..., version=v)`, PyIceberg's `scan(snapshot_id=...)`), compared
value by value with what meshql returns — never with meshql's own output.

The cases are the writer quirks of issue 22: percent-encoded and NULL hive partition values,
NULL in a typed partition, partition columns that polars also keeps inside the files, globs in a
contract's path, int64 extremes, timestamps beyond 2262, Spark's INT96 timestamps, Delta
checkpoints/optimize/delete/overwrite and time travel across schema changes, Iceberg renames,
type promotion and partition evolution, UUID and all-null columns, ODCS physical names in SLA
elements and SQL quality rules, time-zone spelling and log noise on stderr.

Contracts and descriptors are written as JSON, which is YAML.
"""

import datetime
import decimal
import json
import math
import os
import re
import subprocess
import uuid

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from test_object_store import s3  # noqa: F401 (the S3 server fixture)

DOMAIN = "writers"
UTC = datetime.timezone.utc
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

# ---------------------------------------------------------------------------------------------
# A mesh in a temporary directory, and the meshql CLI over it
# ---------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A tracing line: `2026-01-01T00:00:00.000000Z ERROR some::target: message`
LOG_LINE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}T\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+([A-Za-z0-9_:]+)")


def dependency_log_lines(stderr):
    """Log lines on stderr that come from a dependency (any target outside meshql's crates)."""
    out = []
    for line in ANSI.sub("", stderr).splitlines():
        m = LOG_LINE.match(line)
        if m and not m.group(2).startswith("meshql"):
            out.append(line.strip())
    return out


class Mesh:
    """A one-domain mesh (`writers`) whose products the fixtures add; everyone may read it."""

    def __init__(self, root, binary):
        self.root = root
        self.bin = binary
        self.catalogs = {}
        self.domain = root / "domains" / DOMAIN
        for sub in ("products", "contracts", "data"):
            (self.domain / sub).mkdir(parents=True)
        self._write_mesh_yaml()
        (root / "policies.yaml").write_text(
            json.dumps(
                {
                    "rules": [
                        {"name": "everyone-reads", "principals": "*", "resource": "*", "grant": ["select"]}
                    ]
                },
                indent=2,
            )
        )
        (self.domain / "domain.yaml").write_text(
            json.dumps(
                {
                    "name": DOMAIN,
                    "title": "Writer corpus",
                    "description": "Tables written by the tools domain teams use.",
                    "owner": "writers-team",
                    "support": "https://example.com/writers/issues",
                },
                indent=2,
            )
        )

    def _write_mesh_yaml(self):
        doc = {"name": "writer-corpus", "metadataRefreshSeconds": 0}
        doc.update(getattr(self, "settings", {}))
        if self.catalogs:
            doc["icebergCatalogs"] = self.catalogs
        (self.root / "mesh.yaml").write_text(json.dumps(doc, indent=2))

    def configure(self, **settings):
        """More mesh.yaml settings (stores, dataRoot)."""
        self.settings = settings
        self._write_mesh_yaml()

    def add_sql_catalog(self, name, db_path):
        self.catalogs[name] = {"type": "sql", "uri": f"sqlite:///{db_path}"}
        self._write_mesh_yaml()

    def data(self, name):
        return self.domain / "data" / name

    def rel(self, path):
        """A path relative to the mesh directory, as the sample contracts write them."""
        return os.path.relpath(path, self.root)

    def add_product(self, name, server, properties, *, table=None, schema_extra=None, contract_extra=None):
        """Writes the product's descriptor and contract; returns its table name."""
        contract_id = f"urn:datacontract:{DOMAIN}:{name}"
        product = {
            "apiVersion": "v1.0.0",
            "kind": "DataProduct",
            "id": f"urn:dataproduct:{DOMAIN}:{name}",
            "name": name,
            "version": "1.0.0",
            "status": "active",
            "domain": DOMAIN,
            "description": {"purpose": f"{name}, written by a domain team's own tool."},
            "team": {"name": "writers-team"},
            "support": [{"channel": "issues", "url": "https://example.com/writers/issues"}],
            "outputPorts": [{"name": "main", "version": "1.0.0", "contractId": contract_id}],
        }
        schema_object = {
            "name": table or name,
            "physicalType": "table",
            "description": f"{name} as its writer wrote it.",
            "properties": properties,
        }
        schema_object.update(schema_extra or {})
        contract = {
            "apiVersion": "v3.1.0",
            "kind": "DataContract",
            "id": contract_id,
            "name": name,
            "version": "1.0.0",
            "status": "active",
            "domain": DOMAIN,
            "dataProduct": name,
            "servers": [server],
            "schema": [schema_object],
        }
        contract.update(contract_extra or {})
        (self.domain / "products" / f"{name}.odps.yaml").write_text(json.dumps(product, indent=2))
        (self.domain / "contracts" / f"{name}.odcs.yaml").write_text(json.dumps(contract, indent=2))
        return f"mesh.{DOMAIN}.{name}"

    def run(self, *args):
        return subprocess.run([self.bin, *args], capture_output=True, text=True, timeout=120)

    def try_query(self, sql):
        """(result table or None, stderr)."""
        out = self.root.parent / f"result-{os.getpid()}.arrow"
        if out.exists():
            out.unlink()
        done = self.run("query", "--mesh", str(self.root), "--format", "arrow", "--output", str(out), sql)
        if done.returncode != 0:
            return None, done.stderr
        with ipc.open_file(out) as reader:
            return reader.read_all(), done.stderr

    def query(self, sql):
        table, stderr = self.try_query(sql)
        if table is None:
            pytest.fail(f"meshql failed on:\n  {sql}\nstderr:\n{short(stderr)}", pytrace=False)
        return table

    def scalar(self, sql):
        table = self.query(sql)
        assert table.num_rows == 1 and table.num_columns == 1, f"{sql}: expected one value, got {table}"
        return table.column(0)[0].as_py()

    def check(self, product):
        """`meshql check --product` as JSON: (exit code, report, stderr)."""
        done = self.run("check", "--mesh", str(self.root), "--product", f"{DOMAIN}.{product}", "--format", "json")
        try:
            report = json.loads(done.stdout)
        except ValueError:
            pytest.fail(f"meshql check printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.returncode, report, done.stderr


def short(stderr):
    """stderr without a panic's backtrace: the error lines and the panic's message."""
    lines = ANSI.sub("", stderr).strip().splitlines()
    keep = []
    for i, line in enumerate(lines):
        if line.startswith("error:") or line.startswith("caused by") or "panicked at" in line:
            keep.extend(lines[i : i + 2] if "panicked at" in line else [line])
        elif keep and keep[-1].startswith("caused by"):
            keep.append(line)
    text = "\n".join(dict.fromkeys(keep)) if keep else "\n".join(lines)
    return text if len(text) < 3000 else text[:3000] + " …"


def new_mesh(tmp_path_factory, meshql_bin, name):
    return Mesh(tmp_path_factory.mktemp(name) / "mesh", meshql_bin)


# ---------------------------------------------------------------------------------------------
# Value-by-value comparison
# ---------------------------------------------------------------------------------------------


def norm(v):
    """One spelling per value: UTC-naive datetimes, None for NaN, canonical UUID strings."""
    if v is None:
        return None
    if type(v).__name__ == "Timestamp":  # pandas
        v = v.to_pydatetime()
    if isinstance(v, datetime.datetime) and v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, uuid.UUID):
        return str(v)
    if hasattr(v, "item") and not isinstance(v, (bytes, str)):  # numpy scalars
        v = v.item()
    return v


def records(table):
    """A pyarrow table's rows as dicts."""
    return table.to_pylist()


def sorted_keys(keys):
    try:
        return sorted(keys, key=lambda k: (k is None, k))
    except TypeError:
        return sorted(keys, key=repr)


def assert_same_rows(got, want, *, reader, key="id", columns=None, what=""):
    """meshql's rows (`got`, a pyarrow table) against the writer's reader's (`want`, dicts).

    Every column of `columns` (default: meshql's) of every row, matched by `key`."""
    columns = columns or got.column_names
    missing_cols = [c for c in columns if c not in got.column_names]
    assert not missing_cols, f"{what}: meshql's result lacks columns {missing_cols} (it has {got.column_names})"
    got_rows = {}
    for r in records(got):
        k = norm(r[key])
        assert k not in got_rows, f"{what}: meshql returned {key}={k!r} twice"
        got_rows[k] = r
    want_rows = {norm(r[key]): r for r in want}
    problems = []
    missing = sorted_keys(set(want_rows) - set(got_rows))
    extra = sorted_keys(set(got_rows) - set(want_rows))
    if missing:
        problems.append(f"{len(missing)} rows {reader} has are missing from meshql's answer, e.g. {key}={missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} rows meshql returned that {reader} does not have, e.g. {key}={extra[:5]}")
    diffs = []
    for k in sorted_keys(set(got_rows) & set(want_rows)):
        for c in columns:
            g, w = norm(got_rows[k].get(c)), norm(want_rows[k].get(c))
            if g != w or type(g) is bytes and type(w) is str:
                diffs.append(f"{key}={k!r} {c}: meshql {g!r}, {reader} {w!r}")
    if diffs:
        problems.append(f"{len(diffs)} values differ, e.g.\n    " + "\n    ".join(diffs[:8]))
    assert not problems, f"{what} ({len(want_rows)} rows expected, {len(got_rows)} returned):\n  " + "\n  ".join(problems)


def assert_ids(got, want_ids, *, what, key="id"):
    got_ids = [norm(v) for v in got.column(key).to_pylist()]
    want_ids = sorted(want_ids)
    assert sorted(got_ids) == want_ids, (
        f"{what}: expected {len(want_ids)} rows (ids {want_ids[:10]}{'…' if len(want_ids) > 10 else ''}), "
        f"meshql returned {len(got_ids)} (ids {sorted(got_ids)[:10]}{'…' if len(got_ids) > 10 else ''})"
    )


def duckdb_dicts(con, sql):
    rel = con.sql(sql)
    cols = rel.columns
    return [dict(zip(cols, row)) for row in rel.fetchall()]


def is_string_type(t):
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


# ---------------------------------------------------------------------------------------------
# DuckDB: COPY … PARTITION_BY with encoded and NULL partition values; UUIDs; globs
# ---------------------------------------------------------------------------------------------

CARRIERS = ["la poste", "dhl/express", "100% post", None, "ups"]


@pytest.fixture(scope="module")
def duck(tmp_path_factory, meshql_bin):
    mesh = new_mesh(tmp_path_factory, meshql_bin, "duckdb")
    con = duckdb.connect()
    carriers = ", ".join("NULL" if c is None else f"'{c}'" for c in CARRIERS)
    con.execute(
        f"""CREATE TABLE parcels AS SELECT
              i AS id,
              ([{carriers}])[1 + i % {len(CARRIERS)}] AS carrier,
              round(i * 0.37, 2)::DOUBLE AS weight_kg,
              DATE '2026-01-01' + (i % 30)::INTEGER AS shipped_on,
              TIMESTAMP '2026-01-01 00:00:00' + to_minutes(i * 7) AS scanned_at,
              'parcel-' || i AS label
            FROM range(300) r(i)"""
    )
    parcels = mesh.data("parcels")
    con.execute(f"COPY parcels TO '{parcels}' (FORMAT parquet, PARTITION_BY (carrier))")
    mesh.parcels = mesh.add_product(
        "parcels",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(parcels)},
        [
            {"name": "id", "logicalType": "integer", "required": True},
            {"name": "carrier", "logicalType": "string", "partitioned": True, "partitionKeyPosition": 1},
            {"name": "weight_kg", "logicalType": "number"},
            {"name": "shipped_on", "logicalType": "date"},
            {"name": "scanned_at", "logicalType": "timestamp"},
            {"name": "label", "logicalType": "string"},
        ],
    )
    mesh.parcels_reader = f"read_parquet('{parcels}/*/*.parquet', hive_partitioning = true)"

    # UUIDs, among them the edge values and NULLs (DuckDB stores UUIDs with the top bit flipped).
    tags = mesh.data("parcel_tags.parquet")
    con.execute(
        f"""COPY (SELECT i AS id,
                   CASE WHEN i = 0 THEN '00000000-0000-0000-0000-000000000000'::UUID
                        WHEN i = 1 THEN 'ffffffff-ffff-ffff-ffff-ffffffffffff'::UUID
                        WHEN i = 2 THEN '80000000-0000-0000-0000-000000000000'::UUID
                        WHEN i = 3 THEN '7fffffff-ffff-ffff-ffff-ffffffffffff'::UUID
                        WHEN i % 10 = 9 THEN NULL
                        ELSE md5('parcel-' || i)::UUID END AS parcel_id,
                   'tag-' || (i % 5) AS tag
                 FROM range(200) r(i)) TO '{tags}' (FORMAT parquet)"""
    )
    mesh.tags = mesh.add_product(
        "parcel_tags",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(tags)},
        [
            {"name": "id", "logicalType": "integer", "required": True},
            {
                "name": "parcel_id",
                "logicalType": "string",
                "logicalTypeOptions": {"format": "uuid"},
                "physicalType": "UUID",
                "description": "A DuckDB UUID; served as its canonical text.",
            },
            {"name": "tag", "logicalType": "string"},
        ],
    )
    mesh.tags_reader = f"read_parquet('{tags}')"

    # Globs. site_events/<site>/part-0.parquet (plain directories, not hive), with files the glob
    # must not pick up: a deeper archive and a marker file.
    sites = mesh.data("site_events")
    for n, site in enumerate(["paris", "lyon", "nantes"]):
        (sites / site).mkdir(parents=True)
        con.execute(
            f"""COPY (SELECT i AS event_id, '{site}' AS site, i * 0.5 AS amount
                      FROM range({n * 100}, {n * 100 + 60}) r(i)) TO '{sites / site / "part-0.parquet"}' (FORMAT parquet)"""
        )
        (sites / site / "_SUCCESS").write_text("")
    (sites / "archive" / "2025").mkdir(parents=True)
    con.execute(
        f"COPY (SELECT 9999 AS event_id, 'old' AS site, 1.0 AS amount) TO '{sites / 'archive' / '2025' / 'old.parquet'}' (FORMAT parquet)"
    )
    mesh.site_glob = f"{sites}/*/*.parquet"
    mesh.site_events = mesh.add_product(
        "site_events",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(sites) + "/*/*.parquet"},
        [
            {"name": "event_id", "logicalType": "integer"},
            {"name": "site", "logicalType": "string"},
            {"name": "amount", "logicalType": "number"},
        ],
    )

    # daily/day=2026-01-0N/data_0.parquet; the contract takes the first two days by a glob.
    daily = mesh.data("daily")
    con.execute(
        f"""COPY (SELECT i AS event_id, DATE '2026-01-01' + (i % 5)::INTEGER AS day, i * 1.25 AS amount
                  FROM range(250) r(i)) TO '{daily}' (FORMAT parquet, PARTITION_BY (day))"""
    )
    mesh.daily_glob = f"{daily}/day=2026-01-0[12]/*.parquet"
    daily_path = mesh.rel(daily) + "/day=2026-01-0[12]/*.parquet"
    file_columns = [{"name": "event_id", "logicalType": "integer"}, {"name": "amount", "logicalType": "number"}]
    mesh.daily = mesh.add_product(
        "daily_glob", {"server": "local", "type": "local", "format": "parquet", "path": daily_path}, file_columns
    )
    mesh.daily_hive = mesh.add_product(
        "daily_glob_hive",
        {"server": "local", "type": "local", "format": "parquet", "path": daily_path},
        file_columns + [{"name": "day", "logicalType": "date", "partitioned": True, "partitionKeyPosition": 1}],
    )

    # batches/part-N.parquet; `part-?.parquet` takes the one-digit ones only.
    batches = mesh.data("batches")
    batches.mkdir()
    for n in (1, 2, 3, 10):
        con.execute(
            f"""COPY (SELECT {n} * 1000 + i AS id, {n} AS batch, 'b' || i AS payload FROM range(40) r(i))
                TO '{batches / f"part-{n}.parquet"}' (FORMAT parquet)"""
        )
    # A copy kept under another name, which a glob naming the extension itself picks up.
    con.execute(
        f"""COPY (SELECT 9000 + i AS id, 9 AS batch, 'bak' || i AS payload FROM range(5) r(i))
            TO '{batches / "part-9.parquet.bak"}' (FORMAT parquet)"""
    )
    mesh.batch_glob = f"{batches}/part-?.parquet"
    mesh.batch_any_glob = f"{batches}/part-*.parquet*"
    mesh.batches_any = mesh.add_product(
        "batches_any",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(batches) + "/part-*.parquet*"},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "batch", "logicalType": "integer"},
            {"name": "payload", "logicalType": "string"},
        ],
    )
    mesh.batches = mesh.add_product(
        "batches",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(batches) + "/part-?.parquet"},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "batch", "logicalType": "integer"},
            {"name": "payload", "logicalType": "string"},
        ],
    )
    # The whole daily directory, beside its glob (listings are cached by path).
    mesh.daily_all = mesh.add_product(
        "daily_all",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(daily)},
        file_columns + [{"name": "day", "logicalType": "date", "partitioned": True, "partitionKeyPosition": 1}],
    )

    # Directory names that need escaping in URLs and object paths.
    odd = mesh.data("odd names")
    for n, name in enumerate(["a b", "100%", "x#y", "données"]):
        (odd / name).mkdir(parents=True)
        con.execute(
            f"""COPY (SELECT {n} * 100 + i AS event_id, '{name}' AS dir FROM range(10) r(i))
                TO '{odd / name / "part.parquet"}' (FORMAT parquet)"""
        )
    mesh.odd_glob = f"{odd}/*/*.parquet"
    mesh.odd = mesh.add_product(
        "odd_names",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(odd) + "/*/*.parquet"},
        [{"name": "event_id", "logicalType": "integer"}, {"name": "dir", "logicalType": "string"}],
    )
    mesh.no_match = mesh.add_product(
        "no_match",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(batches) + "/part-??.csv"},
        [{"name": "id", "logicalType": "integer"}],
    )
    mesh.bad_glob = mesh.add_product(
        "bad_glob",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(batches) + "/p**t/*.parquet"},
        [{"name": "id", "logicalType": "integer"}],
    )
    mesh.con = con
    return mesh


def test_duckdb_hive_partition_values_are_decoded(duck):
    """`carrier=la%20poste`, `carrier=dhl%2Fexpress`, `carrier=100%25%20post`,
    `carrier=__HIVE_DEFAULT_PARTITION__`: served as DuckDB reads them back."""
    want = duckdb_dicts(duck.con, f"SELECT * FROM {duck.parcels_reader}")
    assert len(want) == 300 and {r["carrier"] for r in want} == set(CARRIERS)
    got = duck.query(f"SELECT * FROM {duck.parcels}")
    assert_same_rows(got, want, reader="DuckDB", what="DuckDB hive-partitioned parcels")


@pytest.mark.parametrize(
    "predicate",
    [
        "carrier = 'la poste'",
        "carrier = 'dhl/express'",
        "carrier = '100% post'",
        "carrier IS NULL",
        "carrier IS NOT NULL",
        "carrier IN ('la poste', 'ups')",
        "carrier LIKE '% post'",
        "coalesce(carrier, 'none') = 'none'",
    ],
)
def test_duckdb_partition_filters(duck, predicate):
    want = [r["id"] for r in duckdb_dicts(duck.con, f"SELECT id FROM {duck.parcels_reader} WHERE {predicate}")]
    assert want, f"DuckDB finds no row for {predicate}: the fixture is wrong"
    n = duck.scalar(f"SELECT count(*) FROM {duck.parcels} WHERE {predicate}")
    assert n == len(want), f"count(*) WHERE {predicate}: expected {len(want)} (DuckDB), meshql says {n}"
    got = duck.query(f"SELECT id FROM {duck.parcels} WHERE {predicate}")
    assert_ids(got, want, what=f"WHERE {predicate}")


def test_duckdb_partition_group_by(duck):
    want = dict(duck.con.sql(f"SELECT carrier, count(*) FROM {duck.parcels_reader} GROUP BY 1").fetchall())
    got = duck.query(f"SELECT carrier, count(*) AS n FROM {duck.parcels} GROUP BY 1")
    got = dict(zip(got.column("carrier").to_pylist(), got.column("n").to_pylist()))
    assert got == want, f"count per carrier: expected {want} (DuckDB), meshql says {got}"


def test_duckdb_uuid_served_as_canonical_string(duck):
    """The contract says `logicalType: string` (`format: uuid`): each UUID is served as its
    canonical lower-case 8-4-4-4-12 text (docs/ and the README say nothing about UUIDs; a string
    is what a `string` column carries); NULL stays NULL."""
    want = duckdb_dicts(duck.con, f"SELECT * FROM {duck.tags_reader}")
    assert len(want) == 200
    got = duck.query(f"SELECT id, parcel_id, tag FROM {duck.tags}")
    assert is_string_type(got.schema.field("parcel_id").type), (
        f"parcel_id (contract: string, DuckDB UUID): expected a string column, meshql served {got.schema.field('parcel_id').type}"
    )
    assert_same_rows(got, want, reader="DuckDB", what="DuckDB UUID column")


def test_duckdb_uuid_filter_by_text(duck):
    wanted = "ffffffff-ffff-ffff-ffff-ffffffffffff"
    got = duck.query(f"SELECT id FROM {duck.tags} WHERE parcel_id = '{wanted}'")
    assert got.column("id").to_pylist() == [1], f"WHERE parcel_id = '{wanted}': expected id 1, meshql returned {got.column('id').to_pylist()}"
    n = duck.scalar(f"SELECT count(*) FROM {duck.tags} WHERE parcel_id IS NULL")
    assert n == 20, f"count(*) WHERE parcel_id IS NULL: expected 20, meshql says {n}"


def test_glob_over_site_directories(duck):
    """`site_events/*/*.parquet`: one directory per site, not the archive two levels down."""
    want = duckdb_dicts(duck.con, f"SELECT * FROM read_parquet('{duck.site_glob}')")
    assert len(want) == 180
    got = duck.query(f"SELECT * FROM {duck.site_events}")
    assert_same_rows(got, want, key="event_id", reader="DuckDB", what="glob site_events/*/*.parquet")


def test_glob_with_a_character_class(duck):
    """`day=2026-01-0[12]/*.parquet`: two of the five days."""
    want = duckdb_dicts(duck.con, f"SELECT event_id, amount FROM read_parquet('{duck.daily_glob}')")
    assert len(want) == 100
    got = duck.query(f"SELECT * FROM {duck.daily}")
    assert_same_rows(got, want, key="event_id", reader="DuckDB", what="glob day=2026-01-0[12]/*.parquet")


@pytest.mark.parametrize(
    "layout",
    [
        # `a/k=1/…` beside `k=3/…` under `**` (the stranger's case): DuckDB reads k=1 from a
        # deeper directory, DataFusion gave a file no partition value.
        ["k=1/f.parquet", "a/k=2/f.parquet", "k=3/f.parquet"],
        # Twelve partitions and one file outside them: DataFusion infers the keys from ten files.
        [f"k={i}/f.parquet" for i in range(12)] + ["zz-loose.parquet"],
        # Another key at the same depth.
        ["k=1/f.parquet", "j=2/f.parquet"],
        # A directory that is not a partition, and one below a partition, under a plain
        # directory location: DataFusion's listing skipped them without a word (the stranger's
        # fifth run).
        ["k=1/f.parquet", "other/f.parquet", "DIR"],
        ["k=1/f.parquet", "k=2/sub/f.parquet", "DIR"],
    ],
    ids=["deeper", "one-of-thirteen", "other-key", "plain-directory-beside", "below-a-partition"],
)
def test_hive_directories_that_disagree_are_refused_naming_the_file(tmp_path_factory, meshql_bin, layout):
    """Partition directories at different depths or with other keys: the product is refused with
    the file named, never served with rows missing or partition values left empty."""
    mesh = new_mesh(tmp_path_factory, meshql_bin, "hive-depths")
    con = duckdb.connect()
    root = mesh.data("mixed")
    as_directory = layout[-1] == "DIR"
    layout = [rel for rel in layout if rel != "DIR"]
    for n, rel in enumerate(layout):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT {n} * 10 + i AS id FROM range(5) r(i)) TO '{path}' (FORMAT parquet)")
    name = mesh.add_product(
        "mixed",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(root) + ("" if as_directory else "/**/*.parquet")},
        [{"name": "id", "logicalType": "integer"}, {"name": "k", "logicalType": "string", "partitioned": True, "partitionKeyPosition": 1}],
    )
    table, stderr = mesh.try_query(f"SELECT count(*) FROM {name}")
    assert table is None, f"meshql served {name} over disagreeing partition directories {layout}: {table}"
    text = ANSI.sub("", stderr)
    assert "not below the hive partition directories" in text, short(stderr)
    odd = [rel for rel in layout if not rel.startswith("k=") or rel.count("/") > 1]
    assert any(o in text for o in odd), f"the message names none of {odd}: {short(stderr)}"


def test_glob_with_a_character_class_and_its_hive_partition(duck):
    """The same glob, with the `day` partition column in the contract: typed from the path."""
    want = duckdb_dicts(
        duck.con, f"SELECT event_id, amount, day FROM read_parquet('{duck.daily_glob}', hive_partitioning = true)"
    )
    got = duck.query(f"SELECT * FROM {duck.daily_hive}")
    assert_same_rows(got, want, key="event_id", reader="DuckDB", what="glob day=2026-01-0[12]/*.parquet with day")
    n = duck.scalar(f"SELECT count(*) FROM {duck.daily_hive} WHERE day = DATE '2026-01-02'")
    assert n == 50, f"count(*) WHERE day = DATE '2026-01-02': expected 50, meshql says {n}"


def test_glob_with_a_single_character_wildcard(duck):
    """`part-?.parquet`: part-1, -2, -3, not part-10."""
    want = duckdb_dicts(duck.con, f"SELECT * FROM read_parquet('{duck.batch_glob}')")
    assert len(want) == 120
    got = duck.query(f"SELECT * FROM {duck.batches}")
    assert_same_rows(got, want, reader="DuckDB", what="glob part-?.parquet")


def test_glob_products_share_no_listing_with_their_directory(duck):
    """A glob and a plain product over one directory, queried in one process: DataFusion caches
    listings by path, so each must keep its own files."""
    whole = duck.scalar(f"SELECT count(*) FROM {duck.daily_all}")
    picked = duck.scalar(f"SELECT count(*) FROM {duck.daily}")
    both = duck.query(f"SELECT (SELECT count(*) FROM {duck.daily_all}) AS whole, (SELECT count(*) FROM {duck.daily}) AS picked")
    assert (whole, picked) == (250, 100)
    assert both.to_pylist() == [{"whole": 250, "picked": 100}], both.to_pylist()


def test_glob_over_names_that_need_escaping(duck):
    """Directory names with a space, `%`, `#` and non-ASCII text, matched by `*`."""
    want = duckdb_dicts(duck.con, f"SELECT * FROM read_parquet('{duck.odd_glob}')")
    assert len(want) == 4 * 10
    got = duck.query(f"SELECT * FROM {duck.odd}")
    assert_same_rows(got, want, key="event_id", reader="DuckDB", what="glob over odd names")


def test_a_glob_that_matches_nothing_or_is_malformed_fails_alone(duck):
    for product, why in ((duck.no_match, "no Parquet files found"), (duck.bad_glob, "`**` must be a whole path segment")):
        table, stderr = duck.try_query(f"SELECT * FROM {product}")
        assert table is None, f"{product}: expected an error, got {table}"
        assert why in stderr, stderr
        assert product.split(".")[-1] in stderr, stderr
    assert duck.scalar(f"SELECT count(*) FROM {duck.batches}") == 120


def test_globs_over_s3_match_as_on_disk(duck, s3, tmp_path_factory, meshql_bin, monkeypatch):
    """The duck fixture's glob products, their files uploaded to a real S3 server by pyarrow's
    client: relative locations under an S3 `dataRoot` and absolute `s3://` ones (with `?`)."""
    import pyarrow.fs as pafs

    from test_object_store import KEY, SECRET

    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=s3, scheme="http", region="us-east-1")
    for name in ("site_events", "daily", "batches"):
        pafs.copy_files(str(duck.data(name)), f"meshql/lake/{name}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    mesh = new_mesh(tmp_path_factory, meshql_bin, "s3-globs")
    mesh.configure(
        dataRoot="s3://meshql/lake/",
        stores={
            "lake": {
                "url": "s3://meshql",
                "options": {
                    "endpoint": f"http://{s3}",
                    "region": "us-east-1",
                    "allowHttp": True,
                    "accessKeyId": "${MESHQL_S3_KEY}",
                    "secretAccessKey": "${MESHQL_S3_SECRET}",
                },
            }
        },
    )
    monkeypatch.setenv("MESHQL_S3_KEY", KEY)
    monkeypatch.setenv("MESHQL_S3_SECRET", SECRET)
    columns = {
        "site_events": [{"name": "event_id", "logicalType": "integer"}, {"name": "site", "logicalType": "string"}, {"name": "amount", "logicalType": "number"}],
        "daily": [{"name": "event_id", "logicalType": "integer"}, {"name": "amount", "logicalType": "number"}, {"name": "day", "logicalType": "date", "partitioned": True, "partitionKeyPosition": 1}],
        "batches": [{"name": "id", "logicalType": "integer"}, {"name": "batch", "logicalType": "integer"}, {"name": "payload", "logicalType": "string"}],
    }
    sites = mesh.add_product("sites", {"server": "local", "type": "local", "format": "parquet", "path": "site_events/*/*.parquet"}, columns["site_events"])
    daily = mesh.add_product("daily", {"server": "local", "type": "local", "format": "parquet", "path": "daily/day=2026-01-0[12]/*.parquet"}, columns["daily"])
    batches = mesh.add_product(
        "batches", {"server": "lake", "type": "s3", "format": "parquet", "location": "s3://meshql/lake/batches/part-?.parquet"}, columns["batches"]
    )
    relative_batches = mesh.add_product(
        "relative_batches", {"server": "local", "type": "local", "format": "parquet", "path": "batches/part-?.parquet"}, columns["batches"]
    )
    cases = [
        (relative_batches, f"SELECT * FROM read_parquet('{duck.batch_glob}')", "id"),
        (sites, f"SELECT * FROM read_parquet('{duck.site_glob}')", "event_id"),
        (daily, f"SELECT event_id, amount, day FROM read_parquet('{duck.daily_glob}', hive_partitioning = true)", "event_id"),
        (batches, f"SELECT * FROM read_parquet('{duck.batch_glob}')", "id"),
    ]
    for table, oracle, key in cases:
        want = duckdb_dicts(duck.con, oracle)
        assert want
        assert_same_rows(mesh.query(f"SELECT * FROM {table}"), want, key=key, reader="DuckDB (on disk)", what=f"{table} over S3")
    assert mesh.scalar(f"SELECT count(*) FROM {daily} WHERE day = DATE '2026-01-02'") == 50


def test_a_glob_naming_the_extension_chooses_the_files_alone(duck):
    """`part-*.parquet*`: `part-9.parquet.bak` too, as DuckDB reads it."""
    want = duckdb_dicts(duck.con, f"SELECT * FROM read_parquet('{duck.batch_any_glob}')")
    assert len(want) == 4 * 40 + 5
    got = duck.query(f"SELECT * FROM {duck.batches_any}")
    assert_same_rows(got, want, reader="DuckDB", what="glob part-*.parquet*")


# ---------------------------------------------------------------------------------------------
# pyarrow: hive write_dataset with a NULL date partition; a Spark-flavoured INT96 file;
# int64 extremes and timestamps beyond 2262
# ---------------------------------------------------------------------------------------------

REGIONS = ["EU", "US", "APAC"]


@pytest.fixture(scope="module")
def arrow_mesh(tmp_path_factory, meshql_bin):
    mesh = new_mesh(tmp_path_factory, meshql_bin, "pyarrow")

    # hive: region=…/day=…/, a quarter of the rows with a NULL day
    n = 240
    visits = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "region": pa.array([REGIONS[i % 3] for i in range(n)], pa.string()),
            "day": pa.array(
                [None if i % 4 == 0 else datetime.date(2026, 1, 1) + datetime.timedelta(days=i % 5) for i in range(n)],
                pa.date32(),
            ),
            "amount": pa.array([round(i * 0.75, 2) for i in range(n)], pa.float64()),
        }
    )
    visits_dir = mesh.data("visits")
    ds.write_dataset(visits, visits_dir, format="parquet", partitioning=["region", "day"], partitioning_flavor="hive")
    assert (visits_dir / "region=EU" / "day=__HIVE_DEFAULT_PARTITION__").is_dir()
    mesh.visits = mesh.add_product(
        "visits",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(visits_dir)},
        [
            {"name": "id", "logicalType": "integer", "required": True},
            {"name": "region", "logicalType": "string", "partitioned": True, "partitionKeyPosition": 1},
            {"name": "day", "logicalType": "date", "partitioned": True, "partitionKeyPosition": 2},
            {"name": "amount", "logicalType": "number"},
        ],
    )
    partitioning = ds.partitioning(pa.schema([("region", pa.string()), ("day", pa.date32())]), flavor="hive")
    mesh.visits_read = ds.dataset(visits_dir, format="parquet", partitioning=partitioning).to_table()

    # Spark-flavoured: INT96 timestamps, a decimal, a date
    spark_ts = [
        datetime.datetime(1900, 1, 1, 0, 0, 0),
        datetime.datetime(1969, 12, 31, 23, 59, 59, 999000),
        datetime.datetime(1970, 1, 1),
        datetime.datetime(2000, 2, 29, 12, 30, 0, 123000),
        datetime.datetime(2200, 12, 31, 23, 59, 59),
    ]
    n = 200
    spark = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "event_ts": pa.array(
                [
                    None
                    if i % 17 == 16
                    else spark_ts[i] if i < len(spark_ts) else datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=37 * i, milliseconds=i)
                    for i in range(n)
                ],
                pa.timestamp("ms"),
            ),
            "price": pa.array([decimal.Decimal(i * 7).scaleb(-2) for i in range(n)], pa.decimal128(12, 2)),
            "day": pa.array([datetime.date(2024, 1, 1) + datetime.timedelta(days=i) for i in range(n)], pa.date32()),
        }
    )
    spark_file = mesh.data("spark_events.parquet")
    pq.write_table(spark, spark_file, use_deprecated_int96_timestamps=True, flavor="spark")
    assert "int96" in str(pq.ParquetFile(spark_file).schema).lower(), "pyarrow wrote no INT96 column"
    mesh.spark = mesh.add_product(
        "spark_events",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(spark_file)},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "event_ts", "logicalType": "timestamp"},
            {"name": "price", "logicalType": "number", "physicalType": "decimal(12,2)"},
            {"name": "day", "logicalType": "date"},
        ],
    )
    mesh.spark_read = pq.read_table(spark_file)

    # int64 extremes (several row groups, so statistics matter) and SCD2-style validity ranges
    # whose open end is 9999-12-31 (microseconds).
    n = 300
    special = {5: I64_MIN, 7: I64_MAX, 70: I64_MIN + 1, 140: I64_MAX - 1, 200: -1, 201: 0, 202: 1, 299: None}
    special.update({i: I64_MIN for i in range(256, 270)})  # a row group of negatives only
    big = [special.get(i, (i * 1_000_003) * (-1 if i % 2 else 1)) for i in range(n)]
    valid_from = [datetime.datetime(2020, 1, 1) + datetime.timedelta(days=i, seconds=i) for i in range(n)]
    open_end = datetime.datetime(9999, 12, 31)
    last_micro = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)
    valid_to = [
        None if i == 298 else open_end if i % 3 == 0 else last_micro if i % 7 == 1 else valid_from[i] + datetime.timedelta(days=30)
        for i in range(n)
    ]
    extremes = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "big": pa.array(big, pa.int64()),
            "valid_from": pa.array(valid_from, pa.timestamp("us")),
            "valid_to": pa.array(valid_to, pa.timestamp("us")),
        }
    )
    extremes_file = mesh.data("extremes.parquet")
    pq.write_table(extremes, extremes_file, row_group_size=64)
    mesh.extremes = mesh.add_product(
        "extremes",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(extremes_file)},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "big", "logicalType": "integer"},
            {"name": "valid_from", "logicalType": "timestamp"},
            {"name": "valid_to", "logicalType": "timestamp"},
        ],
    )
    mesh.extremes_read = pq.read_table(extremes_file)
    return mesh


def test_pyarrow_hive_dataset_with_a_null_date_partition(arrow_mesh):
    want = records(arrow_mesh.visits_read)
    assert sum(r["day"] is None for r in want) == 60
    got = arrow_mesh.query(f"SELECT * FROM {arrow_mesh.visits}")
    assert_same_rows(got, want, reader="pyarrow.dataset", what="pyarrow hive dataset (region, day)")


def visit_days(rows):
    return [r["day"] for r in rows if r["day"] is not None]


VISIT_CASES = [
    ("SELECT count(*) FROM {t}", len),
    ("SELECT count(day) FROM {t}", lambda rows: len(visit_days(rows))),
    ("SELECT count(*) FROM {t} WHERE day IS NULL", lambda rows: sum(r["day"] is None for r in rows)),
    (
        "SELECT count(*) FROM {t} WHERE day IS NOT NULL AND region = 'EU'",
        lambda rows: sum(r["day"] is not None and r["region"] == "EU" for r in rows),
    ),
    ("SELECT count(*) FROM {t} WHERE day = DATE '2026-01-02'", lambda rows: visit_days(rows).count(datetime.date(2026, 1, 2))),
    (
        "SELECT count(*) FROM {t} WHERE day >= DATE '2026-01-04'",
        lambda rows: sum(d >= datetime.date(2026, 1, 4) for d in visit_days(rows)),
    ),
    ("SELECT count(DISTINCT day) FROM {t}", lambda rows: len(set(visit_days(rows)))),
    ("SELECT CAST(max(day) AS VARCHAR) FROM {t}", lambda rows: max(visit_days(rows)).isoformat()),
]


@pytest.mark.parametrize("sql, expect", [pytest.param(s, f, id=s.format(t="visits")) for s, f in VISIT_CASES])
def test_pyarrow_null_typed_partition_aggregates(arrow_mesh, sql, expect):
    expected = expect(records(arrow_mesh.visits_read))
    got = arrow_mesh.scalar(sql.format(t=arrow_mesh.visits))
    assert got == expected, f"{sql.format(t='visits')}: expected {expected!r} (pyarrow), meshql says {got!r}"


def test_spark_int96_timestamps(arrow_mesh):
    want = records(arrow_mesh.spark_read)
    got = arrow_mesh.query(f"SELECT * FROM {arrow_mesh.spark}")
    assert_same_rows(got, want, reader="pyarrow", what="Spark-flavoured file with INT96 timestamps")
    cut = datetime.datetime(2000, 1, 1)
    expected = sum(r["event_ts"] is not None and norm(r["event_ts"]) >= cut for r in want)
    n = arrow_mesh.scalar(f"SELECT count(*) FROM {arrow_mesh.spark} WHERE event_ts >= TIMESTAMP '2000-01-01T00:00:00'")
    assert n == expected, f"count(*) WHERE event_ts >= 2000-01-01 (INT96): expected {expected}, meshql says {n}"


def test_int64_extremes_values(arrow_mesh):
    want = records(arrow_mesh.extremes_read)
    got = arrow_mesh.query(f"SELECT * FROM {arrow_mesh.extremes}")
    assert_same_rows(got, want, reader="pyarrow", what="int64 extremes and 9999-12-31 timestamps")


def by_predicate(*cases):
    return [pytest.param(predicate, keep, id=predicate) for predicate, keep in cases]


@pytest.mark.parametrize(
    "predicate, keep",
    by_predicate(
        ("big < 0", lambda b: b < 0),
        ("big > 0", lambda b: b > 0),
        ("big <= 0", lambda b: b <= 0),
        ("big >= 0", lambda b: b >= 0),
        ("big = 0", lambda b: b == 0),
        ("big <> 0", lambda b: b != 0),
        ("big < -1", lambda b: b < -1),
        ("big > 1", lambda b: b > 1),
        (f"big = {I64_MAX}", lambda b: b == I64_MAX),
        (f"big < {I64_MAX}", lambda b: b < I64_MAX),
        (f"big >= {I64_MAX - 1}", lambda b: b >= I64_MAX - 1),
        (f"big = {I64_MIN}", lambda b: b == I64_MIN),
        (f"big > {I64_MIN}", lambda b: b > I64_MIN),
        (f"big <= {I64_MIN + 1}", lambda b: b <= I64_MIN + 1),
        (f"big BETWEEN {I64_MIN} AND -1", lambda b: I64_MIN <= b <= -1),
        ("big IS NULL", None),
    ),
)
def test_int64_extremes_comparisons(arrow_mesh, predicate, keep):
    rows = records(arrow_mesh.extremes_read)
    want = [r["id"] for r in rows if (r["big"] is None if keep is None else r["big"] is not None and keep(r["big"]))]
    n = arrow_mesh.scalar(f"SELECT count(*) FROM {arrow_mesh.extremes} WHERE {predicate}")
    assert n == len(want), f"count(*) WHERE {predicate}: expected {len(want)} (pyarrow), meshql says {n}"
    got = arrow_mesh.query(f"SELECT id FROM {arrow_mesh.extremes} WHERE {predicate}")
    assert_ids(got, want, what=f"WHERE {predicate}")


def test_int64_extremes_aggregates(arrow_mesh):
    got = arrow_mesh.query(
        f"SELECT min(big) AS lo, max(big) AS hi, count(big) AS n, "
        f"sum(CASE WHEN big < 0 THEN 1 ELSE 0 END) AS negatives FROM {arrow_mesh.extremes}"
    ).to_pylist()[0]
    bigs = [r["big"] for r in records(arrow_mesh.extremes_read) if r["big"] is not None]
    want = {"lo": I64_MIN, "hi": I64_MAX, "n": len(bigs), "negatives": sum(b < 0 for b in bigs)}
    assert got == want, f"min/max/count over int64 extremes: expected {want}, meshql says {got}"


OPEN_END = datetime.datetime(9999, 12, 31)
LAST_MICRO = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)


@pytest.mark.parametrize(
    "predicate, keep",
    by_predicate(
        ("valid_to = TIMESTAMP '9999-12-31T00:00:00'", lambda t: t == OPEN_END),
        ("valid_to = TIMESTAMP '9999-12-31 23:59:59.999999'", lambda t: t == LAST_MICRO),
        ("valid_to < TIMESTAMP '9999-12-31T00:00:00'", lambda t: t < OPEN_END),
        ("valid_to > TIMESTAMP '2262-04-12T00:00:00'", lambda t: t > datetime.datetime(2262, 4, 12)),
        ("valid_to >= TIMESTAMP '3000-01-01T00:00:00'", lambda t: t >= datetime.datetime(3000, 1, 1)),
        ("valid_to < TIMESTAMP '2100-01-01T00:00:00'", lambda t: t < datetime.datetime(2100, 1, 1)),
    ),
)
def test_timestamp_literals_beyond_2262(arrow_mesh, predicate, keep):
    rows = records(arrow_mesh.extremes_read)
    want = [r["id"] for r in rows if r["valid_to"] is not None and keep(norm(r["valid_to"]))]
    assert want, f"no row for {predicate}: the fixture is wrong"
    got = arrow_mesh.query(f"SELECT id FROM {arrow_mesh.extremes} WHERE {predicate}")
    assert_ids(got, want, what=f"WHERE {predicate}")


# ---------------------------------------------------------------------------------------------
# polars and pandas
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames(tmp_path_factory, meshql_bin):
    import pandas as pd
    import polars as pl

    mesh = new_mesh(tmp_path_factory, meshql_bin, "frames")

    n = 300
    sales = pl.DataFrame(
        {
            "id": list(range(n)),
            "country": [["FR", "DE", "IT", "ES"][i % 4] for i in range(n)],
            "year": [2024 + i % 3 for i in range(n)],
            "amount": [round(i * 1.1, 2) for i in range(n)],
            "sold_at": [datetime.datetime(2024, 1, 1) + datetime.timedelta(hours=5 * i) for i in range(n)],
        }
    )
    sales_dir = mesh.data("sales")
    sales.write_parquet(sales_dir, partition_by=["country", "year"])
    some_file = next(sales_dir.glob("*/*/*.parquet"))
    assert {"country", "year"} <= set(pq.read_schema(some_file).names), "polars no longer keeps partition columns in files"
    mesh.sales = mesh.add_product(
        "polars_sales",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(sales_dir)},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "country", "logicalType": "string", "partitioned": True, "partitionKeyPosition": 1},
            {"name": "year", "logicalType": "integer", "partitioned": True, "partitionKeyPosition": 2},
            {"name": "amount", "logicalType": "number"},
            {"name": "sold_at", "logicalType": "timestamp"},
        ],
    )
    mesh.sales_read = pl.read_parquet(sales_dir, hive_partitioning=True).to_dicts()

    n = 200
    people = pd.DataFrame(
        {
            "id": range(n),
            "name": [None if i % 9 == 0 else f"person {i}" for i in range(n)],
            "nickname": [None] * n,
            "score": [None if i % 11 == 0 else i / 8 for i in range(n)],
            "created": pd.date_range("2025-06-01", periods=n, freq="37min"),
            "active": [i % 2 == 0 for i in range(n)],
        }
    )
    people_file = mesh.data("people.parquet")
    people.to_parquet(people_file)
    assert pa.types.is_null(pq.read_schema(people_file).field("nickname").type), "pandas no longer writes an all-None column as null"
    mesh.people = mesh.add_product(
        "pandas_people",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(people_file)},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "name", "logicalType": "string"},
            {"name": "nickname", "logicalType": "string", "description": "Never filled yet: all None in pandas."},
            {"name": "score", "logicalType": "number"},
            {"name": "created", "logicalType": "timestamp"},
            {"name": "active", "logicalType": "boolean"},
        ],
    )
    mesh.people_read = pd.read_parquet(people_file).to_dict("records")
    return mesh


def test_polars_partitioned_output_with_partition_columns_in_the_files(frames):
    want = frames.sales_read
    assert len(want) == 300
    got = frames.query(f"SELECT * FROM {frames.sales}")
    assert_same_rows(got, want, reader="polars", what="polars write_parquet(partition_by=[country, year])")
    fr = sum(r["country"] == "FR" and r["year"] == 2025 for r in want)
    n = frames.scalar(f"SELECT count(*) FROM {frames.sales} WHERE country = 'FR' AND year = 2025")
    assert n == fr, f"count(*) WHERE country = 'FR' AND year = 2025: expected {fr} (polars), meshql says {n}"


def test_pandas_file_with_an_all_none_column(frames):
    """An all-None pandas column (Parquet type null) under a contract that says string: served
    as NULLs of type string."""
    want = frames.people_read
    got = frames.query(f"SELECT * FROM {frames.people}")
    assert_same_rows(got, want, reader="pandas", what="pandas to_parquet with an all-None column")
    field = got.schema.field("nickname")
    assert is_string_type(field.type), f"nickname (contract: string, all None): expected a string column, meshql served {field.type}"
    n = frames.scalar(f"SELECT count(*) FROM {frames.people} WHERE nickname IS NULL")
    assert n == 200, f"count(*) WHERE nickname IS NULL: expected 200, meshql says {n}"


# ---------------------------------------------------------------------------------------------
# deltalake: write, schema change, checkpoint, optimize, delete, overwrite, checkpoint again
# ---------------------------------------------------------------------------------------------

DELTA_VERSIONS = 6  # versions 0..5, see the fixture


@pytest.fixture(scope="module")
def delta(tmp_path_factory, meshql_bin):
    from deltalake import DeltaTable, write_deltalake

    mesh = new_mesh(tmp_path_factory, meshql_bin, "delta")
    path = mesh.data("orders")
    now = datetime.datetime.now(UTC).replace(microsecond=0)

    def batch(lo, hi, note=False):
        cols = {
            "id": pa.array(range(lo, hi), pa.int64()),
            "region": pa.array([REGIONS[i % 3] for i in range(lo, hi)], pa.string()),
            "amount": pa.array([i * 2.5 for i in range(lo, hi)], pa.float64()),
            "updated_at": pa.array([now - datetime.timedelta(minutes=i) for i in range(lo, hi)], pa.timestamp("us", tz="UTC")),
        }
        if note:
            cols["note"] = pa.array([None if i % 5 == 0 else f"note {i}" for i in range(lo, hi)], pa.string())
        return pa.table(cols)

    write_deltalake(path, batch(0, 100), partition_by=["region"])  # v0
    write_deltalake(path, batch(100, 200), mode="append")  # v1
    write_deltalake(path, batch(200, 300, note=True), mode="append", schema_mode="merge")  # v2: adds `note`
    DeltaTable(path).create_checkpoint()
    DeltaTable(path).optimize.compact()  # v3
    DeltaTable(path).delete("id < 50")  # v4
    write_deltalake(path, batch(1000, 1150, note=True), mode="overwrite")  # v5
    table = DeltaTable(path)
    table.create_checkpoint()
    assert table.version() == DELTA_VERSIONS - 1
    ops = [h["operation"] for h in sorted(table.history(), key=lambda h: h["version"])]
    assert len(ops) == DELTA_VERSIONS and ops[3:5] == ["OPTIMIZE", "DELETE"], ops
    assert any(p.name.endswith(".checkpoint.parquet") for p in (path / "_delta_log").iterdir())
    mesh.path = path
    mesh.orders = mesh.add_product(
        "delta_orders",
        {"server": "local", "type": "local", "format": "delta", "path": mesh.rel(path)},
        [
            {"name": "id", "logicalType": "integer"},
            {"name": "region", "logicalType": "string", "partitioned": True},
            {"name": "amount", "logicalType": "number"},
            {"name": "updated_at", "logicalType": "timestamp"},
            {"name": "note", "logicalType": "string", "description": "Added in version 2."},
        ],
        contract_extra={"slaProperties": [{"property": "latency", "value": 1, "unit": "d"}]},
    )
    return mesh


def delta_rows(path, version=None):
    from deltalake import DeltaTable

    table = DeltaTable(str(path)) if version is None else DeltaTable(str(path), version=version)
    return records(table.to_pyarrow_table())


COLUMNS = ["id", "region", "amount", "updated_at", "note"]


def test_delta_latest_matches_the_deltalake_package(delta):
    want = delta_rows(delta.path)
    assert len(want) == 150
    got = delta.query(f"SELECT * FROM {delta.orders}")
    assert_same_rows(got, want, columns=COLUMNS, reader="deltalake", what="Delta table, latest version")


@pytest.mark.parametrize("version", range(DELTA_VERSIONS))
def test_delta_time_travel(delta, version):
    """Versions 0 and 1 predate the `note` column: the contract has it (nullable), so it is NULL."""
    want = delta_rows(delta.path, version)
    got = delta.query(f"SELECT * FROM {delta.orders} FOR VERSION AS OF {version}")
    assert_same_rows(got, want, columns=COLUMNS, reader=f"deltalake (version {version})", what=f"Delta version {version}")


def test_delta_freshness_after_a_checkpoint(delta):
    """The SLA's latency without an element: the age of the served commit, which a checkpoint
    must not hide."""
    rc, report, stderr = delta.check("delta_orders")
    [product] = report["products"]
    assert product["status"] == "ok", f"delta_orders: expected available, meshql check says {product}"
    fresh = [q for q in product["quality"] if q["kind"] == "freshness"]
    assert len(fresh) == 1, f"expected one freshness check, got {product['quality']}"
    assert fresh[0]["outcome"] == "passed", (
        f"freshness after a checkpoint: expected passed (the last commit is seconds old), "
        f"meshql check says {fresh[0]['outcome']}: {fresh[0]['message']}"
    )
    assert rc == 0, f"meshql check exited {rc}: {json.dumps(report)[:2000]}"
    got = delta.query(
        f"SELECT outcome, message FROM mesh.system.quality WHERE product = 'delta_orders' AND kind = 'freshness' AND latest"
    ).to_pylist()
    assert [r["outcome"] for r in got] == ["passed"], f"mesh.system.quality: expected one passed freshness row, got {got}"


def test_delta_runs_leave_no_dependency_logs_on_stderr(delta):
    """Normal CLI runs, a successful one and one asking for a version that does not exist: the
    answer or meshql's error, and no log lines of the Delta kernel (or any other dependency)."""
    noisy = {}
    _, err = delta.try_query(f"SELECT count(*) FROM {delta.orders}")
    noisy["latest"] = dependency_log_lines(err)
    _, err = delta.try_query(f"SELECT count(*) FROM {delta.orders} FOR VERSION AS OF 0")
    noisy["version 0"] = dependency_log_lines(err)
    table, err = delta.try_query(f"SELECT count(*) FROM {delta.orders} FOR VERSION AS OF 99")
    assert table is None, "version 99 does not exist, yet meshql answered"
    assert "error" in err.lower(), f"version 99: expected an error message, stderr was {err!r}"
    noisy["version 99"] = dependency_log_lines(err)
    noisy = {k: v for k, v in noisy.items() if v}
    assert not noisy, f"dependency log lines on stderr of normal CLI runs: {json.dumps(noisy, indent=2)}"


# ---------------------------------------------------------------------------------------------
# PyIceberg: SQL catalog on SQLite; rename, int -> long, a new column, partition evolution, delete
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iceberg(tmp_path_factory, meshql_bin):
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, IntegerType, LongType, NestedField, StringType, TimestamptzType

    mesh = new_mesh(tmp_path_factory, meshql_bin, "iceberg")
    warehouse = mesh.root.parent / "warehouse"
    warehouse.mkdir()
    db = mesh.root.parent / "catalog.db"
    catalog = SqlCatalog("lake", uri=f"sqlite:///{db}", warehouse=f"file://{warehouse}")
    catalog.create_namespace("sales")
    table = catalog.create_table(
        "sales.orders",
        schema=Schema(
            NestedField(1, "id", LongType(), required=True),
            NestedField(2, "region", StringType(), required=False),
            NestedField(3, "qty", IntegerType(), required=False),
            NestedField(4, "amt", DoubleType(), required=False),
            NestedField(5, "ordered_at", TimestamptzType(), required=False),
        ),
    )

    def batch(lo, hi):
        cols = {
            "id": list(range(lo, hi)),
            "region": [REGIONS[i % 3] for i in range(lo, hi)],
            "qty": [i % 7 for i in range(lo, hi)],
            "amount" if lo else "amt": [i * 0.5 for i in range(lo, hi)],
            "ordered_at": [datetime.datetime(2026, 1, 1, tzinfo=UTC) + datetime.timedelta(minutes=13 * i) for i in range(lo, hi)],
        }
        if lo:
            cols["note"] = [None if i % 4 == 0 else f"note {i}" for i in range(lo, hi)]
        return pa.Table.from_pydict(cols, schema=table.schema().as_arrow())

    table.append(batch(0, 120))  # snapshot 0: id, region, qty int, amt, ordered_at
    with table.update_schema() as update:
        update.rename_column("amt", "amount")
        update.update_column("qty", LongType())
        update.add_column("note", StringType())
    with table.update_spec() as spec:
        spec.add_identity("region")
    table.append(batch(120, 260))  # snapshot 1: new schema, partitioned by region
    table.delete("id < 30")  # snapshot 2
    table = catalog.load_table("sales.orders")
    assert len(table.snapshots()) >= 3
    mesh.add_sql_catalog("lake", db)
    mesh.table = table
    mesh.orders = mesh.add_product(
        "iceberg_orders",
        {"server": "lake", "type": "custom", "format": "iceberg", "catalog": "lake", "schema": "sales"},
        [
            {"name": "id", "logicalType": "integer", "required": True},
            {"name": "region", "logicalType": "string"},
            {"name": "qty", "logicalType": "integer", "description": "int until snapshot 1, long since"},
            {"name": "amount", "logicalType": "number", "description": "called amt in snapshot 0"},
            {"name": "ordered_at", "logicalType": "timestamp"},
            {"name": "note", "logicalType": "string", "description": "added with snapshot 1"},
        ],
        table="orders",
    )
    return mesh


ICEBERG_COLUMNS = ["id", "region", "qty", "amount", "ordered_at", "note"]


def iceberg_rows(table, snapshot_id=None):
    """PyIceberg's read of a snapshot (in that snapshot's schema), under the current names,
    matched by field id; a field the snapshot's schema lacks is None."""
    current = table.schema()
    if snapshot_id is None:
        schema, arrow = current, table.scan().to_arrow()
    else:
        snapshot = table.snapshot_by_id(snapshot_id)
        schema = table.schemas()[snapshot.schema_id]
        arrow = table.scan(snapshot_id=snapshot_id).to_arrow()
    then = {f.field_id: f.name for f in schema.fields}
    out = []
    for r in records(arrow):
        out.append({c: r.get(then.get(current.find_field(c).field_id)) for c in ICEBERG_COLUMNS})
    return out


def test_iceberg_current_snapshot(iceberg):
    want = iceberg_rows(iceberg.table)
    assert len(want) == 230
    got = iceberg.query(f"SELECT * FROM {iceberg.orders}")
    assert_same_rows(got, want, columns=ICEBERG_COLUMNS, reader="PyIceberg", what="Iceberg, current snapshot")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_iceberg_time_travel_across_schema_changes(iceberg, index):
    """Snapshot 0 predates the rename amt -> amount (followed by field id), the promotion of qty
    to long and the column `note` (NULL there)."""
    snapshot = iceberg.table.snapshots()[index]
    want = iceberg_rows(iceberg.table, snapshot.snapshot_id)
    got = iceberg.query(f"SELECT * FROM {iceberg.orders} FOR VERSION AS OF {snapshot.snapshot_id}")
    assert_same_rows(
        got, want, columns=ICEBERG_COLUMNS, reader=f"PyIceberg (snapshot {index})", what=f"Iceberg snapshot {index}"
    )


def test_timestamp_zone_spelling_is_the_same_for_iceberg_delta_and_parquet(iceberg, delta, arrow_mesh):
    """A UTC-adjusted timestamp is `Timestamp(µs, "UTC")` whichever format stored it."""
    utc_file = arrow_mesh.data("utc_events.parquet")
    pq.write_table(
        pa.table(
            {
                "id": pa.array([1, 2], pa.int64()),
                "at": pa.array([datetime.datetime(2026, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
            }
        ),
        utc_file,
    )
    utc_events = arrow_mesh.add_product(
        "utc_events",
        {"server": "local", "type": "local", "format": "parquet", "path": arrow_mesh.rel(utc_file)},
        [{"name": "id", "logicalType": "integer"}, {"name": "at", "logicalType": "timestamp"}],
    )
    zones = {
        "parquet": arrow_mesh.query(f"SELECT at FROM {utc_events}").schema.field("at").type,
        "delta": delta.query(f"SELECT updated_at FROM {delta.orders} LIMIT 1").schema.field("updated_at").type,
        "iceberg": iceberg.query(f"SELECT ordered_at FROM {iceberg.orders} LIMIT 1").schema.field("ordered_at").type,
    }
    spelled = {k: getattr(t, "tz", None) for k, t in zones.items()}
    assert spelled == {"parquet": "UTC", "delta": "UTC", "iceberg": "UTC"}, (
        f"time zone of UTC timestamps by format: expected UTC everywhere, meshql serves {spelled} ({zones})"
    )


def test_iceberg_runs_leave_no_dependency_logs_on_stderr(iceberg):
    noisy = {}
    _, err = iceberg.try_query(f"SELECT count(*) FROM {iceberg.orders}")
    noisy["current"] = dependency_log_lines(err)
    first = iceberg.table.snapshots()[0].snapshot_id
    _, err = iceberg.try_query(f"SELECT count(*) FROM {iceberg.orders} FOR VERSION AS OF {first}")
    noisy["first snapshot"] = dependency_log_lines(err)
    noisy = {k: v for k, v in noisy.items() if v}
    assert not noisy, f"dependency log lines on stderr of normal CLI runs: {json.dumps(noisy, indent=2)}"


# ---------------------------------------------------------------------------------------------
# ODCS physical names: an SLA element and a SQL quality rule that use them
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def physical(tmp_path_factory, meshql_bin):
    """A pyarrow file whose columns have other names in storage than in the contract; the
    schema object's physicalName is `shp_events`."""
    mesh = new_mesh(tmp_path_factory, meshql_bin, "physical")
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    n = 150
    path = mesh.data("shp_events.parquet")
    pq.write_table(
        pa.table(
            {
                "shp_id": pa.array(range(n), pa.int64()),
                "upd_ts": pa.array([now - datetime.timedelta(minutes=3 * i) for i in range(n)], pa.timestamp("us", tz="UTC")),
                "amount": pa.array([1.0 + i for i in range(n)], pa.float64()),
            }
        ),
        path,
    )
    mesh.shipments = mesh.add_product(
        "shipment_events",
        {"server": "local", "type": "local", "format": "parquet", "path": mesh.rel(path)},
        [
            {"name": "shipment_id", "physicalName": "shp_id", "logicalType": "integer", "required": True},
            {"name": "updated_at", "physicalName": "upd_ts", "logicalType": "timestamp"},
            {"name": "amount", "logicalType": "number"},
        ],
        table="shipments",
        schema_extra={
            "physicalName": "shp_events",
            "quality": [
                {
                    "name": "no negative amounts (physical table name)",
                    "type": "sql",
                    "query": "SELECT count(*) FROM shp_events WHERE amount < 0",
                    "mustBe": 0,
                },
                {
                    "name": "no negative amounts (${table})",
                    "type": "sql",
                    "query": "SELECT count(*) FROM ${table} WHERE amount < 0",
                    "mustBe": 0,
                },
            ],
        },
        contract_extra={
            "slaProperties": [
                {"property": "latency", "value": 1, "unit": "d", "element": "shp_events.upd_ts"},
                {"property": "frequency", "value": 1, "unit": "d", "element": "shipments.updated_at"},
            ]
        },
    )
    mesh.rows = n
    return mesh


def quality_results(mesh, product):
    rc, report, stderr = mesh.check(product)
    [entry] = report["products"]
    assert entry["status"] == "ok", f"{product}: expected available, meshql check says {json.dumps(entry)}"
    return rc, {q["check"]: q for q in entry["quality"]}


def test_sla_element_may_name_the_physical_column(physical):
    rc, checks = quality_results(physical, "shipment_events")
    control = checks.get("freshness (frequency)")
    assert control and control["outcome"] == "passed", f"control (element by contract name): {control}"
    latency = checks.get("freshness (latency)")
    assert latency is not None, f"no freshness check for the SLA latency: {list(checks)}"
    assert latency["outcome"] == "passed", (
        f"SLA latency with element shp_events.upd_ts (physical names): expected passed, "
        f"meshql check says {latency['outcome']}: {latency['message']}"
    )


def test_sql_quality_rule_may_name_the_physical_table(physical):
    rc, checks = quality_results(physical, "shipment_events")
    control = checks.get("no negative amounts (${table})")
    assert control and control["outcome"] == "passed", f"control (${{table}}): {control}"
    rule = checks.get("no negative amounts (physical table name)")
    assert rule is not None, f"the rule did not run: {list(checks)}"
    assert rule["outcome"] == "passed", (
        f"type: sql rule `SELECT count(*) FROM shp_events …`: expected passed, "
        f"meshql check says {rule['outcome']}: {rule['message']}"
    )


def test_physical_names_contract_passes_meshql_check(physical):
    rc, checks = quality_results(physical, "shipment_events")
    bad = {k: f"{v['outcome']}: {v['message']}" for k, v in checks.items() if v["outcome"] != "passed"}
    assert rc == 0 and not bad, f"meshql check: expected exit 0 with every check passed, got exit {rc}, {bad}"
    n = physical.scalar(f"SELECT count(*) FROM {physical.shipments} WHERE updated_at IS NOT NULL AND shipment_id >= 0")
    assert n == physical.rows, f"count(*): expected {physical.rows}, meshql says {n}"
