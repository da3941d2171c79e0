"""Differential test of meshql's access policies against an independent oracle.

The module writes a mesh of its own (three products in two domains, written by pyarrow, DuckDB
and deltalake; `sales.orders` publishes two versions of its port, so `orders_v0_9_0` exists
beside `orders`; `crm.customers` has two ports, `customers_main` and `customers_archive`). Then,
per seeded policy set, it writes random global and domain `policies.yaml` files, starts one
`meshql serve`, and runs random queries as random principals who log in with JWTs.
`policy_oracle` (the semantics of docs/policies.md, written without reading the implementation)
decides what each principal may see; DuckDB applies that by hand to the same files and answers
the same queries. Per principal, grouped in categories (one test per policy set and category,
so `-k explain` selects one kind):

  results   projections, filters, aggregates, GROUP BY, DISTINCT, joins of two products, UNIONs
            of a product's tables, IN subqueries, CTEs, LIMIT (with and without ORDER BY),
            prepared statements, Delta time travel, a failing user cast: rows equal (order
            aside, floats within 1e-9), a refusal exactly when the oracle expects one
  metadata  information_schema.tables/columns, SHOW TABLES, mesh.system.columns/products/ports,
            ADBC get_objects, DESCRIBE: exactly the discoverable tables and non-hidden columns
  explain   EXPLAIN in every format: no row-filter or mask text, no storage paths, no physical
            plan, no undiscoverable names; FORMAT tree, VERBOSE and ANALYZE refused
  errors    no value of a row or column the principal cannot see, no name it cannot discover;
            refusals are PERMISSION_DENIED; an undiscoverable table fails like a missing one
  quality   mesh.system.quality details only for whole-product readers and administrators

Knobs (environment):
  MESHQL_DIFF_SEED   base seed (default 20240601); the data and every policy set derive from it
  MESHQL_DIFF_CASES  data queries to run in total (default 300: 5 policy sets of 60)
  MESHQL_DIFF_SET    run only this policy set index (to reproduce a failure)

A failure prints the seed and the command that reproduces it, per discrepancy the principal, the
query, what was expected and got and the rules that apply, and the policy files.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import json
import math
import os
import pathlib
import random
import re
import secrets
import shutil
import signal
import string
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import deltalake
import duckdb
import jwt
import policy_oracle as po
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from policy_oracle import Column, Principal, Table

# ADBC warns that Flight SQL connections cannot turn autocommit off; meshql is read-only.
pytestmark = pytest.mark.filterwarnings("ignore:Cannot disable autocommit")

ROOT = pathlib.Path(__file__).resolve().parents[2]
JWKS = ROOT / "testdata" / "server" / "jwks.json"
JWT_KEY = ROOT / "testdata" / "server" / "jwt-signing.pem"
ISSUER = "https://idp.meshql-diff.test"
AUDIENCE = "meshql-diff"

SEED = int(os.environ.get("MESHQL_DIFF_SEED", "20240601"))
CASES = int(os.environ.get("MESHQL_DIFF_CASES", "300"))
PRINCIPALS_PER_SET = 6
QUERIES_PER_PRINCIPAL = 10
N_SETS = max(1, math.ceil(CASES / (PRINCIPALS_PER_SET * QUERIES_PER_PRINCIPAL)))
SET_INDICES = [int(os.environ["MESHQL_DIFF_SET"])] if "MESHQL_DIFF_SET" in os.environ else list(range(N_SETS))
CATEGORIES = ["results", "metadata", "explain", "errors", "quality"]

USERS = ["ana", "ben", "cleo", "dev", "eli", "fay", "gus", "hal", "ivy", "jo"]
GROUPS = ["analysts", "support", "contractors", "crm-team", "sales-team", "pii-readers", "vip", "auditors"]
ADMIN_GROUP = "platform-admins"
REGIONS = ["EU", "NA", "APAC", "LATAM"]
TIERS = ["gold", "silver", "bronze"]
STATUSES = ["open", "paid", "shipped", "void"]
BOGUS_COLUMN = "legacy_flag"  # named by some rules, present in no product
UNSET_KEY_ENV = "MESHQL_DIFF_UNSET_HASH_KEY"

# --- the mesh ---------------------------------------------------------------------------------


def _c(name, type_, classification, *tags):
    return Column(name, type_, classification, tuple(tags))


PRODUCT_COLUMNS = {
    "customers": (
        _c("customer_id", "int64", "internal"),
        _c("full_name", "string", "pii", "pii", "name"),
        _c("email", "string", "pii", "pii", "email"),
        _c("region", "string", "internal", "region-scoped"),
        _c("tier", "string", "internal"),
        _c("score", "double", "confidential", "score"),
        _c("birth_date", "date", "pii", "pii", "birthdate"),
        _c("created_ts", "timestamp", "internal"),
        _c("promo_code", "string", "internal", "code"),
    ),
    "segments": (
        _c("segment_id", "int64", "public"),
        _c("label", "string", "public"),
        _c("region", "string", "internal", "region-scoped"),
        _c("discount", "double", "confidential"),
        _c("valid_from", "date", "public"),
        _c("owner_email", "string", "pii", "pii", "email"),
    ),
    "orders": (
        _c("order_id", "int64", "internal"),
        _c("customer_id", "int64", "internal"),
        _c("amount", "double", "confidential"),
        _c("qty", "int64", "internal"),
        _c("status", "string", "internal"),
        _c("region", "string", "internal", "region-scoped"),
        _c("order_date", "date", "internal"),
        _c("note", "string", "pii", "free-text"),
        _c("updated_ts", "timestamp", "internal"),
    ),
}
PRODUCT_DOMAIN = {"customers": "crm", "segments": "crm", "orders": "sales"}
PRODUCTS = [f"{d}.{p}" for p, d in PRODUCT_DOMAIN.items()]
TABLES = [
    Table("crm", "customers", "main", "1.0.0", "customers_main", "customers_main", PRODUCT_COLUMNS["customers"], "raw_customers_main"),
    Table("crm", "customers", "archive", "1.0.0", "customers_archive", "customers_archive", PRODUCT_COLUMNS["customers"], "raw_customers_archive"),
    Table("crm", "segments", "segments", "2.1.0", "segments", "segments", PRODUCT_COLUMNS["segments"], "raw_segments"),
    Table("sales", "orders", "daily", "1.0.0", "orders", "orders", PRODUCT_COLUMNS["orders"], "raw_orders"),
    Table("sales", "orders", "daily", "0.9.0", "orders_v0_9_0", "orders", PRODUCT_COLUMNS["orders"], "raw_orders_v0_9_0"),
]
# Resources narrower than a product: a port, a published version, a port's table name.
NARROW_RESOURCES = ["crm.customers:main", "crm.customers:archive@1.0.0", "crm.customers_archive", "sales.orders:daily@0.9.0", "sales.orders:daily@1.0.0"]
BY_NAME = {t.qualified: t for t in TABLES}
ARROW_TYPES = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(), "date": pa.date32(), "timestamp": pa.timestamp("us")}
LOGICAL_TYPES = {"string": "string", "int64": "integer", "double": "number", "date": "date", "timestamp": "timestamp"}


def _letters(rng, n):
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def _maybe(rng, p_null, value):
    return None if rng.random() < p_null else value


def _day(rng, start, days):
    return start + dt.timedelta(days=rng.randrange(days))


def _moment(rng, start, days):
    return start + dt.timedelta(seconds=rng.randrange(days * 86400))


# Every text value that could identify a row has a distinctive shape (letters and digits, at
# least six characters), so an error message that quotes one can be caught by substring search.
def _customers(rng, ids):
    return [
        {
            "customer_id": i,
            "full_name": f"Nm{i}-{_letters(rng, 4)}",
            "email": _maybe(rng, 0.05, f"u{i}.{_letters(rng, 3)}@ex.org"),
            "region": rng.choice(REGIONS),
            "tier": _maybe(rng, 0.2, rng.choice(TIERS)),
            "score": _maybe(rng, 0.1, round(rng.uniform(0, 1000), 2)),
            "birth_date": _maybe(rng, 0.1, _day(rng, dt.date(1950, 1, 1), 20000)),
            "created_ts": _moment(rng, dt.datetime(2023, 1, 1), 700),
            # Mostly numeric; a few are not, so a cast of this column can fail on them.
            "promo_code": _maybe(
                rng, 0.1, f"QX-{rng.randrange(1000, 9999)}-{_letters(rng, 2)}" if rng.random() < 0.06 else str(rng.randrange(1000, 9999))
            ),
        }
        for i in ids
    ]


def _segments(rng):
    return [
        {
            "segment_id": i,
            "label": f"lbl-{i}-{_letters(rng, 3)}",
            "region": rng.choice(REGIONS),
            "discount": _maybe(rng, 0.1, round(rng.uniform(0, 0.5), 3)),
            "valid_from": _day(rng, dt.date(2023, 1, 1), 700),
            "owner_email": _maybe(rng, 0.15, f"own{i}@{_letters(rng, 4)}.net"),
        }
        for i in range(1, 201)
    ]


def _orders(rng, n):
    customers = list(range(1, 301)) + list(range(1001, 1201)) + [9999]
    return [
        {
            "order_id": i,
            "customer_id": rng.choice(customers),
            "amount": round(rng.uniform(1, 999), 2),
            "qty": _maybe(rng, 0.1, rng.randrange(1, 10)),
            "status": rng.choice(STATUSES),
            "region": rng.choice(REGIONS),
            "order_date": _day(rng, dt.date(2024, 1, 1), 365),
            "note": _maybe(rng, 0.3, f"nt-{_letters(rng, 5)}-{i}"),
            "updated_ts": _moment(rng, dt.datetime(2023, 6, 1), 500),
        }
        for i in range(1, n + 1)
    ]


def _arrow(product, rows):
    schema = pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in PRODUCT_COLUMNS[product]])
    return pa.Table.from_pylist(rows, schema=schema)


def write_data(rng, data_dir: pathlib.Path) -> dict[str, tuple[str, str]]:
    """Writes every table's data with a real writer; returns table name -> (format, path)."""
    data_dir.mkdir(parents=True)
    con = duckdb.connect()
    # crm.customers port `main`: one Parquet file written by pyarrow.
    pq.write_table(_arrow("customers", _customers(rng, range(1, 301))), data_dir / "customers_main.parquet")
    # crm.customers port `archive` and crm.segments: Parquet files written by DuckDB.
    for name, table in (
        ("customers_archive", _arrow("customers", _customers(rng, range(1001, 1201)))),
        ("segments", _arrow("segments", _segments(rng))),
    ):
        con.register("src", table)
        con.execute(f"COPY (SELECT * FROM src) TO '{data_dir / name}.parquet' (FORMAT parquet)")
        con.unregister("src")
    # sales.orders 1.0.0: a directory of two Parquet files written by pyarrow.
    orders = _arrow("orders", _orders(rng, 500))
    (data_dir / "orders").mkdir()
    pq.write_table(orders.slice(0, 250), data_dir / "orders" / "part-0.parquet")
    pq.write_table(orders.slice(250), data_dir / "orders" / "part-1.parquet")
    # sales.orders 0.9.0: a Delta table written by deltalake, other rows.
    deltalake.write_deltalake(str(data_dir / "orders_legacy"), _arrow("orders", _orders(rng, 400)))
    return {
        "customers_main": ("parquet", str(data_dir / "customers_main.parquet")),
        "customers_archive": ("parquet", str(data_dir / "customers_archive.parquet")),
        "segments": ("parquet", str(data_dir / "segments.parquet")),
        "orders": ("parquet", str(data_dir / "orders")),
        "orders_v0_9_0": ("delta", str(data_dir / "orders_legacy")),
    }


def read_back(fmt: str, path: str) -> pa.Table:
    """The rows as stored, read by the writers' own readers (the oracle's input)."""
    if fmt == "delta":
        return deltalake.DeltaTable(path).to_pyarrow_table()
    return pq.read_table(path)


def _contract(table: Table, cid: str, version: str, fmt: str, path: str) -> dict:
    properties = []
    for c in table.columns:
        prop = {"name": c.name, "logicalType": LOGICAL_TYPES[c.type], "classification": c.classification}
        if c.tags:
            prop["tags"] = list(c.tags)
        if c.name == "promo_code":
            # Fails on the non-numeric codes: its result describes rows not everyone may see.
            prop["quality"] = [{"metric": "invalidValues", "arguments": {"pattern": "^[0-9]+$"}, "mustBe": 0}]
        if c.type == "double":
            prop["quality"] = [{"metric": "nullValues", "unit": "percent", "mustBeLessThan": 50}]
        properties.append(prop)
    return {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": cid,
        "name": f"{table.domain} {table.name}",
        "version": version,
        "status": "active",
        "domain": table.domain,
        "dataProduct": table.product,
        "servers": [{"server": "local", "type": "local", "format": fmt, "path": path}],
        "schema": [
            {
                "name": table.product,
                "physicalType": "table",
                "properties": properties,
                "quality": [{"metric": "rowCount", "mustBeGreaterThan": 0}],
            }
        ],
    }


def _product(domain: str, product: str, ports: list[dict]) -> dict:
    return {
        "apiVersion": "v1.0.0",
        "kind": "DataProduct",
        "id": f"urn:dataproduct:{domain}:{product}",
        "name": product,
        "version": "1.0.0",
        "status": "active",
        "domain": domain,
        "description": {"purpose": f"{product} for the policy differential test"},
        # Owners see quality values; no generated principal is one (their names match no group).
        "team": {"name": f"{domain}-owners", "members": [{"username": f"owner@{domain}.example", "role": "owner"}]},
        "support": [{"channel": f"#{domain}", "url": f"https://chat.example.com/{domain}"}],
        "outputPorts": ports,
    }


def write_docs(mesh_dir: pathlib.Path, storage: dict[str, tuple[str, str]]) -> None:
    """mesh.yaml, domains, product descriptors and contracts (JSON is YAML)."""
    mesh_dir.mkdir(parents=True)
    (mesh_dir / "mesh.yaml").write_text(json.dumps({"name": "policy-diff", "metadataRefreshSeconds": 3600}))
    ports = {product: [] for product in PRODUCT_COLUMNS}
    for t in TABLES:
        ports[t.product].append({"name": t.port, "version": t.version, "contractId": f"urn:datacontract:{t.domain}:{t.name}"})
    for domain in ("crm", "sales"):
        d = mesh_dir / "domains" / domain
        (d / "products").mkdir(parents=True)
        (d / "contracts").mkdir()
        (d / "domain.yaml").write_text(
            json.dumps({"name": domain, "title": domain.upper(), "description": f"The {domain} domain.", "owner": f"{domain}-owners", "support": f"#{domain}"})
        )
    for product, domain in PRODUCT_DOMAIN.items():
        (mesh_dir / "domains" / domain / "products" / f"{product}.odps.yaml").write_text(json.dumps(_product(domain, product, ports[product]), indent=1))
    for t in TABLES:
        fmt, path = storage[t.name]
        contract = _contract(t, f"urn:datacontract:{t.domain}:{t.name}", t.version, fmt, path)
        (mesh_dir / "domains" / t.domain / "contracts" / f"{t.name}.odcs.yaml").write_text(json.dumps(contract, indent=1))


@dataclasses.dataclass
class MeshFixture:
    root: pathlib.Path  # the tmp directory everything lives in (no path under it may leak)
    docs: pathlib.Path  # mesh documents and stored quality results, copied per policy set
    storage: dict[str, tuple[str, str]]
    raw: dict[str, pa.Table]
    hash_key: bytes
    hash_key_file: pathlib.Path
    signing_key_file: pathlib.Path
    values: dict[str, list]  # "<table>.<column>" -> raw non-null values (query literals)
    secrets: set[str]  # distinctive raw text values


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, meshql_bin) -> MeshFixture:
    root = tmp_path_factory.mktemp("policy-diff")
    rng = random.Random(f"data-{SEED}")
    storage = write_data(rng, root / "data")
    docs = root / "mesh"
    write_docs(docs, storage)
    # Quality results for mesh.system.quality: `meshql check` stores them in the mesh's state
    # directory (it exits 1 because some checks fail, by design).
    subprocess.run([meshql_bin, "check", "--mesh", str(docs)], capture_output=True, text=True, timeout=300, check=False)
    assert list((docs / ".meshql" / "quality").glob("*.jsonl")), "meshql check stored no quality results"
    hash_key = secrets.token_hex(24).encode()
    (root / "hash.key").write_bytes(hash_key)
    (root / "signing.key").write_text(secrets.token_hex(32))
    raw = {name: read_back(*storage[name]) for name in storage}
    values, distinctive = {}, set()
    for t in TABLES:
        for c in t.columns:
            vals = [v for v in raw[t.name].column(c.name).to_pylist() if v is not None]
            values[f"{t.name}.{c.name}"] = vals
            if c.type == "string":
                distinctive |= {v for v in vals if len(v) >= 6 and re.search(r"\d", v) and re.search(r"[a-z]", v)}
    return MeshFixture(root, docs, storage, raw, hash_key, root / "hash.key", root / "signing.key", values, distinctive)


# --- random policy sets -------------------------------------------------------------------------

# Row-filter atoms per column ({n}: a random number drawn per use). They use only comparisons,
# IN lists, LIKE, IS NULL and principal references, which DuckDB and DataFusion agree on.
FILTER_ATOMS = {
    "region": ["region = ${principal.region}", "region IN ('EU', 'APAC')", "region <> 'NA'", "region = principal_attribute('region')"],
    "customer_id": ["customer_id < {int:60:280}", "customer_id BETWEEN {int:20:120} AND {int:150:1150}"],
    "tier": ["tier = ${principal.tier}", "tier IN ('gold', 'silver')", "tier IS NULL"],
    "score": ["score > {float:100:900}"],
    "birth_date": ["birth_date >= DATE '19{int:55:95}-06-01'"],
    "created_ts": ["created_ts < TIMESTAMP '2024-0{int:1:9}-15 12:00:00'"],
    # The cast fails on the non-numeric codes: a policy expression that can raise an error.
    "promo_code": ["promo_code LIKE '{int:1:9}%'", "CAST(promo_code AS BIGINT) > {int:1000:9000}"],
    "full_name": ["full_name LIKE 'Nm{int:1:9}%'", "full_name <> ${principal.id}"],
    "email": ["email LIKE 'u{int:1:9}%'", "email IS NOT NULL"],
    "segment_id": ["segment_id > {int:20:180}"],
    "label": ["label LIKE 'lbl-{int:1:9}%'"],
    "discount": ["discount < 0.{int:10:45}"],
    "valid_from": ["valid_from >= DATE '2023-{int:10:12}-01'"],
    "owner_email": ["owner_email IS NULL OR owner_email LIKE 'own{int:1:9}%'"],
    "order_id": ["order_id < {int:100:450}"],
    "amount": ["amount >= {float:100:900}"],
    "qty": ["qty > {int:2:8}", "qty IS NULL"],
    "status": ["status IN ('paid', 'shipped')", "status = 'open'", "status <> 'void'"],
    "order_date": ["order_date < DATE '2024-{int:2:11}-15'"],
    "note": ["note IS NOT NULL"],
    "updated_ts": ["updated_ts >= TIMESTAMP '2023-{int:10:12}-01 08:30:00'"],
    BOGUS_COLUMN: [f"{BOGUS_COLUMN} = 'y'"],
}
PRINCIPAL_ATOMS = ["principal_in_group('vip')", "principal_id() IN ('ana', 'ben', 'cleo')"]

# Masks by column type; `sql` masks keep the column's type. The promo_code cast fails on the
# non-numeric codes: a policy expression that can raise an error while reading data.
MASKS = {
    "string": [
        {"type": "nullify"},
        {"type": "redact"},
        {"type": "redact", "value": "XX-redacted"},
        {"type": "hash"},
        {"type": "showFirst", "n": 2},
        {"type": "showLast", "n": 3},
        {"type": "sql", "expression": "upper({column})"},
    ],
    # A redact value is written as text in YAML, and is a constant of the column's type.
    "int64": [{"type": "nullify"}, {"type": "redact", "value": "-7"}, {"type": "sql", "expression": "{column} + 100000"}],
    "double": [{"type": "nullify"}, {"type": "redact", "value": "-1.5"}, {"type": "sql", "expression": "round({column})"}],
    "date": [{"type": "nullify"}, {"type": "year"}],
    "timestamp": [{"type": "nullify"}, {"type": "year"}],
}
FALLIBLE_MASK = {"type": "sql", "expression": "CAST(CAST({column} AS BIGINT) AS VARCHAR)"}
TAG_RULES = [
    {"tag": "email", "mask": {"type": "hash"}},
    {"tag": "name", "mask": {"type": "showFirst", "n": 2}},
    {"tag": "name", "mask": {"type": "showLast", "n": 3}},
    {"tag": "birthdate", "mask": {"type": "year"}},
    {"tag": "free-text", "mask": {"type": "nullify"}},
    {"tag": "code", "mask": FALLIBLE_MASK},
    {"tag": "score", "mask": {"type": "sql", "expression": "round({column})"}},
    {"classification": "confidential", "deny": ["select"]},
    {"classification": "pii", "deny": ["select"]},
    {"tag": "region-scoped", "rowFilter": "{column} = ${principal.region}"},
    {"tag": "region-scoped", "rowFilter": "{column} IN ('EU', 'NA', 'LATAM')"},
    {"classification": "confidential", "rowFilter": "{column} > 1.5 OR {column} IS NULL"},
    {"tag": "code", "rowFilter": "CAST({column} AS BIGINT) > 2000"},
]


class PolicyGenerator:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def number(self, spec: str) -> str:
        kind, lo, hi = spec.split(":")
        if kind == "int":
            return str(self.rng.randint(int(lo), int(hi)))
        return f"{self.rng.uniform(float(lo), float(hi)):.2f}"

    def atom(self, columns: list[str]) -> str:
        if self.rng.random() < 0.12:
            return self.rng.choice(PRINCIPAL_ATOMS)
        template = self.rng.choice(FILTER_ATOMS[self.rng.choice(columns)])
        return re.sub(r"\{((?:int|float):[^}]*)\}", lambda m: self.number(m.group(1)), template)

    def row_filter(self, columns: list[str]) -> str:
        atoms = [self.atom(columns) for _ in range(self.rng.choice([1, 1, 2, 2, 3]))]
        if len(atoms) == 1:
            return atoms[0]
        if len(atoms) == 2:
            return f"{atoms[0]} {self.rng.choice(['AND', 'OR'])} {atoms[1]}"
        return f"({atoms[0]} OR {atoms[1]}) AND {atoms[2]}"

    def subjects(self):
        r = self.rng.random()
        if r < 0.2:
            return "*"
        if r < 0.6:
            return {"groups": self.rng.sample(GROUPS, self.rng.choice([1, 1, 2]))}
        if r < 0.75:
            return {"users": self.rng.sample(USERS, 3)}
        if r < 0.87:
            return {"attributes": {"region": self.rng.choice(REGIONS)}}
        return {"groups": [self.rng.choice(GROUPS)], "attributes": {"tier": self.rng.choice(TIERS)}}

    def resource(self, domain: str | None):
        """A resource the file may govern: any product (global) or its domain's."""
        if domain is None:
            return self.rng.choice(["*", "*", "crm.*", "sales.*", *PRODUCTS, *PRODUCTS, *NARROW_RESOURCES, ["crm.customers", "sales.orders"]])
        own = [p for p in PRODUCTS if p.startswith(domain + ".")]
        narrow = [r for r in NARROW_RESOURCES if r.startswith(domain + ".")]
        return self.rng.choice([f"{domain}.*", *own, *own, *narrow] + ([own] if len(own) > 1 else []))

    @staticmethod
    def columns_of(resource) -> list[str]:
        """Columns every table the resource covers has."""
        return sorted(set.intersection(*({c.name for c in t.columns} for t in TABLES if po.covers(resource, t))))

    def column_resource(self, domain: str | None) -> tuple[str, dict[str, Column]]:
        """A resource for a rule naming columns, and the columns it names them from: one
        product, sometimes its whole domain (where other products may lack them: fail closed)."""
        product = self.rng.choice([p for p in PRODUCTS if domain is None or p.startswith(domain + ".")])
        narrow = [r for r in NARROW_RESOURCES if r.startswith(product)]
        r = self.rng.random()
        resource = f"{product.split('.')[0]}.*" if r < 0.05 else self.rng.choice(narrow) if narrow and r < 0.3 else product
        return resource, {c.name: c for c in PRODUCT_COLUMNS[product.split(".")[1]]}

    def pick_columns(self, columns, k: int) -> list[str]:
        picked = self.rng.sample(sorted(columns), min(k, len(columns)))
        if self.rng.random() < 0.02:
            picked.append(BOGUS_COLUMN)
        return picked

    def mask(self, product_columns: dict[str, Column], name: str, unset_key: bool):
        if name == BOGUS_COLUMN:
            return {"type": "nullify"}
        if name == "promo_code" and self.rng.random() < 0.3:
            return FALLIBLE_MASK
        mask = self.rng.choice(MASKS[product_columns[name].type])
        if mask["type"] == "hash" and unset_key and self.rng.random() < 0.3:
            return {"type": "hash", "key": "unset"}
        return mask

    def rule(self, name: str, domain: str | None, unset_key: bool) -> dict:
        rule = {"name": name, "principals": self.subjects()}
        if self.rng.random() < 0.2:
            rule["except"] = self.rng.choice([{"groups": [self.rng.choice(GROUPS)]}, {"users": [self.rng.choice(USERS)]}])
        kind = self.rng.choices(["grant", "deny", "restriction", "masks"], weights=[4, 2, 2, 2])[0]
        if kind == "grant":
            grant = self.rng.choices([["select"], ["discover"], ["select", "discover"]], weights=[6, 2, 1])[0]
            if "select" in grant and self.rng.random() < 0.3:
                rule["resource"], columns = self.column_resource(domain)
                rule["grant"] = grant
                rule["columns"] = self.pick_columns(columns, self.rng.randint(2, 6))
            else:
                rule["resource"] = self.resource(domain)
                rule["grant"] = grant
            if "select" in grant and self.rng.random() < 0.4:
                rule["rowFilter"] = self.row_filter(self.columns_of(rule["resource"]))
        elif kind == "deny":
            deny = self.rng.choices([["select"], ["discover"]], weights=[3, 2])[0]
            if self.rng.random() < 0.7:
                rule["resource"], columns = self.column_resource(domain)
                rule["deny"] = deny
                rule["columns"] = self.pick_columns(columns, self.rng.randint(1, 2))
            else:
                rule["resource"] = self.resource(domain)
                rule["deny"] = deny
        elif kind == "restriction":
            rule["resource"] = self.resource(domain)
            columns = self.columns_of(rule["resource"])
            if self.rng.random() < 0.02:
                columns = [*columns, BOGUS_COLUMN]
            rule["rowFilter"] = self.row_filter(columns)
        else:
            rule["resource"], columns = self.column_resource(domain)
            rule["masks"] = {c: self.mask(columns, c, unset_key) for c in self.pick_columns(columns, self.rng.randint(1, 2))}
        return rule

    def tag_rule(self, name: str) -> dict:
        rule = {"name": name, **self.rng.choice(TAG_RULES)}
        if self.rng.random() < 0.5:
            rule["principals"] = self.subjects()
        if self.rng.random() < 0.5:
            rule["except"] = {"groups": [self.rng.choice(["pii-readers", *GROUPS])]}
        return rule

    def policy_set(self, hash_key_file: pathlib.Path) -> tuple[dict, dict[str, dict]]:
        unset_key = self.rng.random() < 0.4
        hash_keys = {"default": {"file": str(hash_key_file)}}
        if unset_key:
            hash_keys["unset"] = {"env": UNSET_KEY_ENV}
        rules = []
        if self.rng.random() < 0.8:
            rules.append({"name": "everyone-discovers", "principals": "*", "resource": "*", "grant": ["discover"]})
        if self.rng.random() < 0.85:
            rules.append({"name": "readers", "principals": {"groups": self.rng.sample(GROUPS, 4)}, "resource": "*", "grant": ["select"]})
        rules += [self.rule(f"g{i}", None, unset_key) for i in range(self.rng.randint(2, 6))]
        global_doc = {"hashKeys": hash_keys, "rules": rules}
        if self.rng.random() < 0.7:
            global_doc["admins"] = {"groups": [ADMIN_GROUP]}
        tag_rules = [self.tag_rule(f"t{i}") for i in range(self.rng.randint(0, 3))]
        if tag_rules:
            global_doc["tagRules"] = tag_rules
        domain_docs = {d: {"rules": [self.rule(f"{d}{i}", d, unset_key) for i in range(self.rng.randint(1, 5))]} for d in ("crm", "sales")}
        return global_doc, domain_docs

    def principals(self, n: int) -> list[Principal]:
        out = []
        for user in self.rng.sample(USERS, n):
            groups = self.rng.sample(GROUPS, self.rng.choice([0, 1, 2, 2, 3, 4]))
            if self.rng.random() < 0.15:
                groups.append(ADMIN_GROUP)
            attrs = []
            if self.rng.random() < 0.7:
                attrs.append(("region", self.rng.choice(REGIONS)))
            if self.rng.random() < 0.4:
                attrs.append(("tier", self.rng.choice(TIERS)))
            out.append(Principal(user, tuple(groups), tuple(attrs)))
        return out


def to_yaml(value, indent: int = 0) -> str:
    """A small block-style YAML writer (scalars as JSON, which YAML reads), for readable files."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v and not _flat(v):
                lines.append(f"{pad}{k}:\n{to_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{k}: {_flow(v)}")
        return "\n".join(lines)
    return "\n".join(f"{pad}- " + to_yaml(item, indent + 1).lstrip() for item in value)


def _flat(v) -> bool:
    return isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)


def _flow(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    return json.dumps(v)


# --- queries --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Query:
    sql: str
    reads: dict[str, set[str] | str]  # qualified table -> columns read, or "*" (all visible)
    has_where: bool = False
    duck_sql: str | None = None  # the same query in DuckDB's dialect, when it differs
    params: tuple | None = None  # bound parameters (a prepared statement)
    limit: int | None = None  # LIMIT n: any n of the rows duck_sql returns…
    order: str | None = None  # …whose first column is the first n of them in this order


class QueryGenerator:
    def __init__(self, rng: random.Random, m: MeshFixture):
        self.rng = rng
        self.m = m

    def literal(self, t: Table, c: Column) -> str:
        v = self.rng.choice(self.m.values[f"{t.name}.{c.name}"])
        if c.type == "string":
            return "'" + v.replace("'", "''") + "'"
        if c.type == "date":
            return f"DATE '{v.isoformat()}'"
        if c.type == "timestamp":
            return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
        return repr(v)

    def predicate(self, t: Table, c: Column) -> str:
        col = c.name
        if c.type == "string":
            r = self.rng.random()
            if r < 0.2:
                return f"{col} IS NOT NULL"
            if r < 0.4:
                return f"{col} LIKE '{self.rng.choice(self.m.values[f'{t.name}.{c.name}'])[:2]}%'"
            return f"{col} {self.rng.choice(['=', '<>', '<', '>='])} {self.literal(t, c)}"
        return f"{col} {self.rng.choice(['<', '>=', '<>'])} {self.literal(t, c)}"

    def table(self, product: str | None = None) -> Table:
        return self.rng.choice([t for t in TABLES if product is None or t.product == product])

    def query(self) -> Query:
        rng = self.rng
        t = self.table()
        cols = list(t.columns)
        kind = rng.choices(
            ["star", "project", "filter", "count", "count_where", "agg", "group", "distinct", "join", "join_segments", "union", "in_subquery", "cte",
             "time_travel", "limit", "prepared", "cast"],
            weights=[2, 3, 3, 2, 2, 3, 3, 1, 3, 1, 2, 1, 1, 1, 2, 1, 1],
        )[0]
        q = t.qualified
        if kind == "star":
            if rng.random() < 0.5:
                c = rng.choice(cols)
                return Query(f"SELECT * FROM {q} WHERE {self.predicate(t, c)}", {q: "*"}, has_where=True)
            return Query(f"SELECT * FROM {q}", {q: "*"})
        if kind == "project":
            picked = rng.sample(cols, rng.randint(1, 3))
            return Query(f"SELECT {', '.join(c.name for c in picked)} FROM {q}", {q: {c.name for c in picked}})
        if kind == "filter":
            picked, c = rng.sample(cols, rng.randint(1, 2)), rng.choice(cols)
            return Query(
                f"SELECT {', '.join(p.name for p in picked)} FROM {q} WHERE {self.predicate(t, c)}",
                {q: {p.name for p in picked} | {c.name}},
                has_where=True,
            )
        if kind == "count":
            return Query(f"SELECT count(*) FROM {q}", {q: set()})
        if kind == "count_where":
            c = rng.choice(cols)
            return Query(f"SELECT count(*) FROM {q} WHERE {self.predicate(t, c)}", {q: {c.name}}, has_where=True)
        if kind == "agg":
            c, c2 = rng.choice(cols), rng.choice(cols)
            numeric = [x for x in cols if x.type in ("int64", "double")]
            n = rng.choice(numeric)
            return Query(f"SELECT count({c.name}), min({c2.name}), max({c2.name}), sum({n.name}) FROM {q}", {q: {c.name, c2.name, n.name}})
        if kind == "group":
            g = rng.choice([x for x in cols if x.type in ("string", "date")])
            n = rng.choice([x for x in cols if x.type in ("int64", "double")])
            return Query(f"SELECT {g.name}, count(*), sum({n.name}) FROM {q} GROUP BY {g.name}", {q: {g.name, n.name}})
        if kind == "distinct":
            c = rng.choice(cols)
            return Query(f"SELECT DISTINCT {c.name} FROM {q}", {q: {c.name}})
        if kind == "join":
            o, c = self.table("orders"), self.table("customers")
            g = rng.choice(["region", "tier", "birth_date"])
            return Query(
                f"SELECT c.{g}, count(*), sum(o.amount) FROM {o.qualified} o JOIN {c.qualified} c "
                f"ON o.customer_id = c.customer_id GROUP BY c.{g}",
                {o.qualified: {"customer_id", "amount"}, c.qualified: {"customer_id", g}},
            )
        if kind == "join_segments":
            o, s = self.table("orders"), BY_NAME["mesh.crm.segments"]
            return Query(
                f"SELECT s.label, count(*), max(o.order_date) FROM {o.qualified} o JOIN {s.qualified} s "
                f"ON o.region = s.region WHERE s.segment_id <= {rng.randint(5, 30)} GROUP BY s.label",
                {o.qualified: {"region", "order_date"}, s.qualified: {"region", "label", "segment_id"}},
                has_where=True,
            )
        if kind == "union":
            product = rng.choice(["customers", "orders"])
            a, b = [x for x in TABLES if x.product == product]
            c = rng.choice([x for x in PRODUCT_COLUMNS[product] if x.type in ("string", "date")])
            return Query(
                f"SELECT {c.name}, count(*) FROM (SELECT {c.name} FROM {a.qualified} UNION ALL "
                f"SELECT {c.name} FROM {b.qualified}) u GROUP BY {c.name}",
                {a.qualified: {c.name}, b.qualified: {c.name}},
            )
        if kind == "in_subquery":
            o, c = self.table("orders"), self.table("customers")
            p = rng.choice(c.columns)
            return Query(
                f"SELECT count(*), sum(qty) FROM {o.qualified} WHERE customer_id IN "
                f"(SELECT customer_id FROM {c.qualified} WHERE {self.predicate(c, p)})",
                {o.qualified: {"customer_id", "qty"}, c.qualified: {"customer_id", p.name}},
                has_where=True,
            )
        if kind == "cte":
            c, g = rng.choice(cols), rng.choice([x for x in cols if x.type in ("string", "date")])
            return Query(
                f"WITH picked AS (SELECT {g.name} FROM {q} WHERE {self.predicate(t, c)}) SELECT {g.name}, count(*) FROM picked GROUP BY {g.name}",
                {q: {c.name, g.name}},
                has_where=True,
            )
        if kind == "time_travel":
            # The Delta version, read as of its first commit (the only one): the product's
            # policies apply to every version of it.
            c = rng.choice(PRODUCT_COLUMNS["orders"])
            legacy = BY_NAME["mesh.sales.orders_v0_9_0"]
            spelling = rng.choice([f"{legacy.qualified} FOR VERSION AS OF 0", f'mesh.sales."{legacy.name}@v0"'])
            return Query(
                f"SELECT {c.name}, count(*) FROM {spelling} GROUP BY {c.name}",
                {legacy.qualified: {c.name}},
                duck_sql=f"SELECT {c.name}, count(*) FROM {legacy.qualified} GROUP BY {c.name}",
            )
        if kind == "limit":
            # A limit must not reach below the row filter: any n visible rows.
            picked, n = rng.sample(cols, rng.randint(1, 3)), rng.randint(1, 12)
            sql = f"SELECT {', '.join(c.name for c in picked)} FROM {q}"
            order = rng.choice([None, "ASC", "DESC"])
            by = f" ORDER BY {picked[0].name} {order} NULLS LAST" if order else ""
            return Query(f"{sql}{by} LIMIT {n}", {q: {c.name for c in picked}}, duck_sql=sql, limit=n, order=order)
        if kind == "prepared":
            c = rng.choice([x for x in cols if x.type in ("string", "int64", "double")])
            value = rng.choice(self.m.values[f"{t.name}.{c.name}"])
            return Query(f"SELECT count(*), min({c.name}) FROM {q} WHERE {c.name} >= ?", {q: {c.name}}, has_where=True, params=(value,))
        # A user expression that fails on some values: it may only ever see visible rows.
        c = self.table("customers")
        return Query(
            f"SELECT count(*) FROM {c.qualified} WHERE CAST(promo_code AS BIGINT) > {rng.randint(1000, 9000)}",
            {c.qualified: {"promo_code"}},
            has_where=True,
        )


# --- the oracle over DuckDB ------------------------------------------------------------------------

ERROR = "error"
EITHER = "either"  # the documented semantics do not fix whether this fails


@dataclasses.dataclass
class Expected:
    outcome: str  # "rows" | ERROR | EITHER
    rows: list | None = None
    why: str = ""
    refusal: bool = False  # an ERROR that is an access refusal (Flight SQL PERMISSION_DENIED)


class Oracle:
    """The expected view of the mesh for one principal, materialised in DuckDB."""

    def __init__(self, m: MeshFixture, global_doc: dict, domain_docs: dict, p: Principal):
        keys = {"default"}  # `unset` is declared but its environment variable is never set
        self.decisions = {t.qualified: po.decide(global_doc, domain_docs, keys, p, t) for t in TABLES}
        self.failing: dict[str, frozenset[str]] = {}
        self.con = duckdb.connect()
        po.register_hashes(self.con, m.hash_key, (v for t in TABLES for c in t.columns if c.type == "string" for v in m.values[f"{t.name}.{c.name}"]))
        for t in TABLES:
            self.con.register(f"arrow_{t.name}", m.raw[t.name])
            self.con.execute(f"CREATE TABLE {t.raw} AS SELECT * FROM arrow_{t.name}")
        self.con.execute("ATTACH ':memory:' AS mesh")
        self.con.execute("CREATE SCHEMA mesh.crm")
        self.con.execute("CREATE SCHEMA mesh.sales")
        self.visible: set[str] = set()
        self.empty: dict[str, bool] = {}
        for t in TABLES:
            d = self.decisions[t.qualified]
            if d.state == po.OK:
                self.failing[t.qualified] = self._materialise(t, d)
                self.visible |= self._visible_text(t, d)
                self.empty[t.qualified] = self.con.execute(f"SELECT count(*) FROM {t.qualified}").fetchone()[0] == 0

    def _materialise(self, t: Table, d: po.Decision) -> frozenset[str]:
        """Creates the governed table; a mask that raises on a visible value makes its column
        fail when read (returned)."""
        try:
            self.con.execute(f"CREATE TABLE {t.qualified} AS {po.governed_select(t, d)}")
            return frozenset()
        except duckdb.Error:
            failing = frozenset(n for n, (a, mask) in d.columns.items() if a == po.MASKED and mask == FALLIBLE_MASK)
            assert failing, f"oracle cannot build {t.qualified}: {po.governed_select(t, d)}"
            self.con.execute(f"CREATE TABLE {t.qualified} AS {po.governed_select(t, d, failing)}")
            return failing

    def _visible_text(self, t: Table, d: po.Decision) -> set[str]:
        readable = [c.name for c in t.columns if d.access(c.name) in (po.PLAIN, po.MASKED) and c.name not in self.failing[t.qualified]]
        out = set()
        for name in readable:
            out |= {str(v) for (v,) in self.con.execute(f"SELECT DISTINCT CAST({name} AS VARCHAR) FROM {t.qualified}").fetchall() if v is not None}
        return out

    def expected(self, q: Query) -> Expected:
        missing = [name for name in q.reads if self.decisions[name].state == po.MISSING]
        if missing:
            return Expected(ERROR, why=f"{missing} do not exist for the principal")
        reads = {
            name: [c for c, (a, _) in self.decisions[name].columns.items() if a != po.HIDDEN] if cols == "*" else sorted(cols)
            for name, cols in q.reads.items()
        }
        # A hidden column is unknown to the planner: that error comes before any refusal.
        hidden = [f"{name}.{c}" for name, cols in reads.items() for c in cols if self.decisions[name].access(c) == po.HIDDEN]
        for name in q.reads:
            d = self.decisions[name]
            if d.state != po.OK:
                why = f"{name} is {d.state}" + (f" (rules naming a missing column: {d.broken_by})" if d.broken_by else "")
                return Expected(ERROR, why=why, refusal=not hidden)
        if hidden:
            return Expected(ERROR, why=f"{hidden} are hidden")
        either = []
        for name, cols in reads.items():
            d = self.decisions[name]
            for c in cols:
                access = d.access(c)
                if access in po.UNREADABLE_COLUMN and self.empty[name]:
                    # "if the optimised plan still reads it, the query is refused": a row filter
                    # the optimiser folds to false leaves nothing to read.
                    either.append(f"{name}.{c} ({access}, no visible rows)")
                elif access in po.UNREADABLE_COLUMN:
                    return Expected(ERROR, why=f"{name}.{c} is {access}", refusal=True)
                if c in self.failing[name]:
                    if not q.has_where:
                        return Expected(ERROR, why=f"the mask of {name}.{c} fails on a visible value")
                    either.append(f"{name}.{c} (its mask fails on some visible values)")
        either += [f"{name} (its row filter casts)" for name in reads if self.decisions[name].fallible_filter]
        try:
            rows = self.con.execute(q.duck_sql or q.sql, q.params).fetchall()
        except duckdb.Error as e:
            return Expected(ERROR, why=f"DuckDB: {e}")
        if either:
            return Expected(EITHER, rows, why=f"reads {either}")
        return Expected("rows", rows)

    def undiscoverable_names(self) -> set[str]:
        """Names of tables, products and domains that do not exist for the principal."""
        missing = [t for t in TABLES if self.decisions[t.qualified].state == po.MISSING]
        present = [t for t in TABLES if t not in missing]
        names = {t.name for t in missing} | {t.product for t in missing if all(x.product != t.product for x in present)}
        return names | {t.domain for t in missing if all(x.domain != t.domain for x in present)}

    def hidden_names(self, tables) -> set[str]:
        """Column names a message about `tables` must not contain: hidden columns and columns of
        tables that do not exist for the principal, unless visible in a discoverable table."""
        secret, visible = set(), set()
        for t in TABLES:
            d = self.decisions[t.qualified]
            if d.state == po.MISSING:
                if t.qualified in tables:
                    secret |= {c.name for c in t.columns}
                continue
            if d.state != po.BROKEN:
                visible |= {c for c, (a, _) in d.columns.items() if a != po.HIDDEN}
            if t.qualified in tables:
                secret |= d.hidden
        return secret - visible


# --- meshql serve ----------------------------------------------------------------------------------


class MeshqlServer:
    def __init__(self, meshql_bin: str, mesh_dir: pathlib.Path, m: MeshFixture, work: pathlib.Path):
        config = work / "server.yaml"
        config.write_text(
            to_yaml(
                {
                    "listen": "127.0.0.1:0",
                    "auth": {
                        "signingKey": {"file": str(m.signing_key_file)},
                        "jwt": {
                            "issuer": ISSUER,
                            "audience": AUDIENCE,
                            "jwksFile": str(JWKS),
                            "attributeClaims": {"region": "region", "tier": "tier"},
                        },
                    },
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if k != UNSET_KEY_ENV}
        self.log = work / "server.log"
        self.log_file = open(self.log, "w")  # noqa: SIM115 — the server writes it until stop()
        self.proc = subprocess.Popen(
            [meshql_bin, "serve", "--mesh", str(mesh_dir), "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"meshql serve did not start: {line!r}\n{self.log.read_text()}")
        self.uri = f"grpc://{match.group(1)}"
        self.jwt_key = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(JWT_KEY.read_bytes())

    def connect(self, p: Principal):
        """A Flight SQL connection as `p`, authenticated by a JWT from the test identity provider."""
        claims = {"sub": p.id, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 3600, "groups": list(p.groups), **p.attrs}
        token = jwt.encode(claims, self.jwt_key, algorithm="RS256", headers={"kid": "test-key-1"})
        return flightsql.connect(self.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"})

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


def run_sql(conn, sql: str, params: tuple | None = None):
    """(rows, None) or (None, error text)."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return [tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist()], None
    except adbc_driver_manager.Error as e:
        return None, str(e)


# --- comparing values ------------------------------------------------------------------------------


def _norm(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if hasattr(v, "to_pydatetime"):  # pandas.Timestamp, for nanosecond timestamps
        v = v.to_pydatetime()
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    return v


def _key(v):
    v = _norm(v)
    if v is None:
        return (0, "")
    if isinstance(v, float):
        return (1, round(v, 6))
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int):
        return (1, float(v))
    return (3, str(type(v)), v)


def same_rows(expected: list, got: list) -> bool:
    if len(expected) != len(got):
        return False
    ordered = [sorted(rows, key=lambda r: tuple(_key(v) for v in r)) for rows in (expected, got)]
    for e, g in zip(*ordered):
        if len(e) != len(g):
            return False
        for a, b in zip(e, g):
            a, b = _norm(a), _norm(b)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def limited_rows(rows: list, got: list, limit: int, order: str | None) -> bool:
    """Whether `got` is `limit` (or all) of `rows`, as a multiset (floats rounded), and with
    `order`, the rows first in that order of the first column (NULLs last)."""
    pool = collections.Counter(tuple(_key(v) for v in r) for r in rows)
    taken = collections.Counter(tuple(_key(v) for v in r) for r in got)
    if len(got) != min(limit, len(rows)) or taken - pool:
        return False
    if order is None:
        return True
    keys = [_key(r[0]) for r in rows if r[0] is not None]
    firsts = sorted(keys, reverse=order == "DESC") + [_key(None)] * (len(rows) - len(keys))
    return [_key(r[0]) for r in got] == firsts[:limit]


def _show(rows, limit=8) -> str:
    if rows is None:
        return "None"
    shown = sorted(rows, key=lambda r: tuple(_key(v) for v in r))[:limit]
    return f"{len(rows)} rows: {shown}" + (" …" if len(rows) > limit else "")


# --- one policy set ---------------------------------------------------------------------------------


EXPLAIN_FORMS = ["EXPLAIN", "EXPLAIN", "EXPLAIN FORMAT indent", "EXPLAIN FORMAT pgjson", "EXPLAIN FORMAT graphviz",
                 "EXPLAIN FORMAT tree", "EXPLAIN VERBOSE", "EXPLAIN ANALYZE"]
REFUSED_EXPLAIN_FORMS = {"EXPLAIN FORMAT tree", "EXPLAIN VERBOSE", "EXPLAIN ANALYZE"}  # for non-admins


@dataclasses.dataclass
class Problem:
    category: str
    principal: Principal
    what: str
    query: str
    expected: str
    got: str
    rules: list[str]  # the rules that apply to the principal on the tables involved


class PolicySetRun:
    def __init__(self, index: int, m: MeshFixture, meshql_bin: str, work: pathlib.Path):
        self.index = index
        self.seed = f"{SEED}/{index}"
        rng = random.Random(f"policies-{self.seed}")
        gen = PolicyGenerator(rng)
        self.global_doc, self.domain_docs = gen.policy_set(m.hash_key_file)
        self.principals = gen.principals(PRINCIPALS_PER_SET)
        self.queries = QueryGenerator(random.Random(f"queries-{self.seed}"), m)
        self.m = m
        self.problems: list[Problem] = []
        self.cases = 0
        mesh_dir = work / "mesh"
        shutil.copytree(m.docs, mesh_dir)
        (mesh_dir / "policies.yaml").write_text(to_yaml(self.global_doc) + "\n")
        for d, doc in self.domain_docs.items():
            (mesh_dir / "domains" / d / "policies.yaml").write_text(to_yaml(doc) + "\n")
        server = MeshqlServer(meshql_bin, mesh_dir, m, work)
        try:
            # Generated policies are valid by construction: one that does not load is a bug of
            # this generator (or meshql refusing what docs/policies.md allows), not a finding.
            with server.connect(self.principals[0]) as conn:
                run_sql(conn, "SELECT 1")
            refused = [line for line in server.log.read_text().splitlines() if "do not load" in line]
            assert not refused, f"policy set {self.seed} does not load:\n" + "\n".join(refused)
            for p in self.principals:
                self.run_principal(server, p)
        finally:
            server.stop()
        self.panics = [line for line in server.log.read_text().splitlines() if "panicked" in line]

    def problem(self, oracle: Oracle, category, p, what, query, expected, got, tables=()):
        rules = sorted({r for t in (tables or BY_NAME) for r in oracle.decisions[t].rules})
        self.problems.append(Problem(category, p, what, query, str(expected), str(got), rules))

    def admin(self, p: Principal) -> bool:
        return "admins" in self.global_doc and ADMIN_GROUP in p.groups

    def run_principal(self, server: MeshqlServer, p: Principal):
        oracle = Oracle(self.m, self.global_doc, self.domain_docs, p)
        with server.connect(p) as conn:
            explained = 0
            for _ in range(QUERIES_PER_PRINCIPAL):
                q = self.queries.query()
                self.cases += 1
                got, err = run_sql(conn, q.sql, q.params)
                self.check_result(p, oracle, q, got, err)
                if err is not None:
                    self.check_error(p, oracle, q.sql, err, list(q.reads))
                if not self.admin(p) and explained < 3:
                    explained += 1
                    self.check_explain(conn, p, oracle, q, refused=err is not None)
            self.check_metadata(conn, p, oracle)
            self.check_flight_metadata(conn, p, oracle)
            self.check_missing_tables(conn, p, oracle)
            self.check_quality(conn, p, oracle)

    def check_result(self, p, oracle: Oracle, q: Query, got, err):
        exp = oracle.expected(q)
        tables = tuple(q.reads)
        if exp.outcome == ERROR and err is None:
            self.problem(oracle, "results", p, f"expected a refusal ({exp.why})", q.sql, "error", _show(got), tables)
        elif exp.refusal and "PermissionDenied" not in err:
            self.problem(oracle, "errors", p, f"a refusal ({exp.why}) is not PERMISSION_DENIED", q.sql, "PERMISSION_DENIED", err, tables)
        elif exp.outcome == "rows" and err is not None:
            self.problem(oracle, "results", p, "expected rows, got an error", q.sql, _show(exp.rows), err, tables)
        elif exp.outcome in ("rows", EITHER) and err is None and q.limit is not None:
            if not limited_rows(exp.rows, got, q.limit, q.order):
                self.problem(oracle, "results", p, f"not {q.limit} of the visible rows", q.sql, _show(exp.rows), _show(got), tables)
        elif exp.outcome in ("rows", EITHER) and err is None and not same_rows(exp.rows, got):
            self.problem(oracle, "results", p, "different rows", q.sql + (f" with parameters {q.params}" if q.params else ""), _show(exp.rows), _show(got), tables)

    def check_error(self, p, oracle: Oracle, sql: str, err: str, tables):
        """An error may name what the principal sees, never a hidden column, a table or domain it
        cannot discover, or a value of a row (or column) it cannot see. Administrators get the
        cause of an error appended (docs/policies.md, "Errors"), values included."""
        leaked = sorted(s for s in self.m.secrets - oracle.visible if s in err and s not in sql)
        if leaked and not self.admin(p):
            self.problem(oracle, "errors", p, f"error text carries values the principal cannot see: {leaked[:5]}", sql, "no such values", err, tables)
        names = _named(oracle.hidden_names(tables) | oracle.undiscoverable_names(), err, sql)
        if names:
            self.problem(oracle, "errors", p, f"error text names what the principal cannot discover: {names}", sql, "no such names", err, tables)

    def check_explain(self, conn, p, oracle: Oracle, q: Query, refused: bool):
        """EXPLAIN shows ordinary principals the logical plan, with the governed reads as rule
        names only; formats that show physical plans or row counts are refused. Of a refused query
        it may fail (its text is then checked like any error)."""
        form = self.queries.rng.choice(EXPLAIN_FORMS)
        sql = f"{form} {q.sql}"
        got, err = run_sql(conn, sql)
        if form in REFUSED_EXPLAIN_FORMS:
            if err is None:
                self.problem(oracle, "explain", p, f"{form} answered an ordinary principal", sql, "a refusal", _show(got), tuple(q.reads))
            else:
                self.check_error(p, oracle, sql, err, list(q.reads))
            return
        if err is not None:
            if not refused:
                self.problem(oracle, "explain", p, "EXPLAIN of a readable query failed", sql, "a logical plan", err, tuple(q.reads))
            self.check_error(p, oracle, sql, err, list(q.reads))
            return
        text = "\n".join(" ".join(str(v) for v in row) for row in got)
        findings = []
        if any("physical" in str(row[0]).lower() for row in got):
            findings.append("a physical plan")
        for marker in (str(self.m.root).lstrip("/"), "file://", ".parquet", "_delta_log", "orders_legacy"):
            if marker in text:
                findings.append(f"storage path text {marker!r}")
        for token in self.policy_tokens(oracle, q):
            if form.endswith("graphviz") and token.isdigit():
                continue  # graphviz numbers its nodes
            if token not in q.sql and re.search(rf"(?<![\w.]){re.escape(token)}(?![\w])", text):
                findings.append(f"policy text {token!r}")
        # How a mask is computed: meshql's masking functions, or the expressions a mask is
        # made of (no query of this test calls these).
        for marker in (r"mask_\w*\(", r"hmac", r"sha256", r"repeat\(", r"substr", r"\bleft\(", r"\bright\(", r"date_trunc", r"\*\*\*"):
            if re.search(marker, text, re.IGNORECASE):
                findings.append(f"a mask expression ({marker})")
        names = _named(oracle.hidden_names(list(q.reads)) | oracle.undiscoverable_names(), text, q.sql)
        if names:
            findings.append(f"names the principal cannot discover {names}")
        if findings:
            self.problem(oracle, "explain", p, "EXPLAIN shows " + "; ".join(findings), sql, "rule names only", text, tuple(q.reads))

    def policy_tokens(self, oracle: Oracle, q: Query) -> set[str]:
        """Literals of the row filters and masks that govern the query's tables for `p`."""
        tokens = set()
        for name in q.reads:
            d = oracle.decisions[name]
            if d.row_filter:
                tokens |= set(re.findall(r"'([^']+)'", d.row_filter))
                numbers = re.sub(r"'[^']*'", " ", d.row_filter)
                tokens |= set(re.findall(r"(?<![\w.])(\d+\.\d+|\d{2,})(?![\w.])", numbers))
            for _, mask in d.columns.values():
                if mask and "value" in mask:
                    tokens.add(str(mask["value"]))
                if mask and mask["type"] == "sql":
                    tokens |= set(re.findall(r"[a-z]+(?=\()|\d+", mask["expression"]))
        return {t for t in tokens if len(t) >= 2}

    def expected_columns(self, oracle: Oracle) -> set[tuple[str, str, str]]:
        """(domain, table, column) of every column the principal may discover, for the tables
        whose listing the docs fix: not those a broken rule makes unservable."""
        d = oracle.decisions
        return {
            (t.domain, t.name, c.name)
            for t in TABLES
            if d[t.qualified].state in (po.OK, po.UNREADABLE)
            for c in t.columns
            if d[t.qualified].access(c.name) != po.HIDDEN
        }

    @staticmethod
    def specified(oracle: Oracle, domain: str, table: str) -> bool:
        """Whether the docs fix how `table` is listed for the principal (rows of tables that do
        not exist are never acceptable)."""
        d = oracle.decisions.get(f"mesh.{domain}.{table}")
        return d is None or d.state != po.BROKEN

    def check_metadata(self, conn, p, oracle: Oracle):
        """SQL metadata lists exactly the discoverable tables and their non-hidden columns."""
        d = oracle.decisions
        listed = {(t.domain, t.name) for t in TABLES if d[t.qualified].state != po.MISSING}
        for sql in ("SELECT table_catalog, table_schema, table_name FROM information_schema.tables", "SHOW TABLES"):
            got, err = run_sql(conn, sql)
            got = err or {(r[1], r[2]) for r in got if r[0] == "mesh" and r[1] in ("crm", "sales")}
            if got != listed:
                self.problem(oracle, "metadata", p, "tables listed differ", sql, sorted(listed), err or sorted(got))
        expected = self.expected_columns(oracle)
        sql = "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_catalog = 'mesh' AND table_schema IN ('crm', 'sales')"
        got, err = run_sql(conn, sql)
        got = err or {r for r in got if self.specified(oracle, *r[:2])}
        if got != expected:
            self.problem(oracle, "metadata", p, "information_schema.columns differs", sql, sorted(expected), err or _diff(expected, got))
        sql = "SELECT domain, product, column_name, readable, masked FROM mesh.system.columns WHERE domain IN ('crm', 'sales')"
        got, err = run_sql(conn, sql)
        if err is not None:
            self.problem(oracle, "metadata", p, "mesh.system.columns failed", sql, "rows", err)
            return
        got = [r for r in got if self.specified(oracle, *r[:2])]
        if {r[:3] for r in got} != expected or len(got) != len(expected):
            self.problem(oracle, "metadata", p, "mesh.system.columns lists other columns", sql, _diff(expected, {r[:3] for r in got}), "")
        for domain, table, column, readable, masked in got:
            decision = d.get(f"mesh.{domain}.{table}")
            access = decision.access(column) if decision and column in decision.columns else None
            if access in (None, po.CONFLICT, po.NO_KEY) or column in oracle.failing.get(f"mesh.{domain}.{table}", ()):
                continue  # reported above, or the docs do not say how such a column is flagged
            want = (decision.state == po.OK and access in (po.PLAIN, po.MASKED), decision.state == po.OK and access == po.MASKED)
            if (readable, masked) != want:
                self.problem(
                    oracle, "metadata", p, f"mesh.system.columns flags of {domain}.{table}.{column}", sql,
                    f"readable, masked = {want} ({access})", (readable, masked), (f"mesh.{domain}.{table}",),
                )
        # Products and ports: listed when discoverable; readable, and the storage location shown,
        # only when readable.
        for sql, what in (
            ("SELECT domain, product, readable FROM mesh.system.products WHERE domain IN ('crm', 'sales')", "readable"),
            ("SELECT domain, product, location IS NOT NULL FROM mesh.system.ports WHERE domain IN ('crm', 'sales')", "location shown"),
        ):
            got, err = run_sql(conn, sql)
            if err is not None or {r[:2] for r in got} != listed:
                self.problem(oracle, "metadata", p, "tables listed differ", sql, sorted(listed), err or sorted({r[:2] for r in got}))
                continue
            for domain, table, flag in got:
                state = d[f"mesh.{domain}.{table}"].state
                if state != po.BROKEN and flag != (state == po.OK):
                    self.problem(oracle, "metadata", p, f"{what} of mesh.{domain}.{table} ({state})", sql, state == po.OK, flag, (f"mesh.{domain}.{table}",))

    def check_flight_metadata(self, conn, p, oracle: Oracle):
        """The Flight SQL metadata calls (GetTables with schemas, as ADBC's get_objects asks) and
        DESCRIBE ("its schema can be described") list the same columns as information_schema."""
        expected = self.expected_columns(oracle)
        what = "ADBC get_objects(depth=all)"
        try:
            objects = conn.adbc_get_objects(depth="all", catalog_filter="mesh").read_all().to_pylist()
        except adbc_driver_manager.Error as e:
            self.problem(oracle, "metadata", p, f"{what} failed", what, "columns", str(e))
        else:
            got = {
                (s["db_schema_name"], tb["table_name"], c["column_name"])
                for cat in objects
                for s in cat["catalog_db_schemas"] or []
                if s["db_schema_name"] in ("crm", "sales")
                for tb in s["db_schema_tables"] or []
                if self.specified(oracle, s["db_schema_name"], tb["table_name"])
                for c in tb["table_columns"] or []
            }
            if got != expected:
                self.problem(oracle, "metadata", p, f"{what} lists other columns", what, _diff(expected, got), "")
        described = [t for t in TABLES if oracle.decisions[t.qualified].state in (po.OK, po.UNREADABLE)]
        if described:
            t = self.queries.rng.choice(described)
            sql = f"DESCRIBE {t.qualified}"
            got, err = run_sql(conn, sql)
            want = [c.name for c in t.columns if oracle.decisions[t.qualified].access(c.name) != po.HIDDEN]
            if err is not None or [r[0] for r in got] != want:
                self.problem(oracle, "metadata", p, "DESCRIBE lists other columns", sql, want, err or [r[0] for r in got], (t.qualified,))

    def check_missing_tables(self, conn, p, oracle: Oracle):
        """A table the principal may not discover fails exactly like one that does not exist."""
        for t in TABLES:
            if oracle.decisions[t.qualified].state != po.MISSING:
                continue
            sql = f"SELECT count(*) FROM {t.qualified}"
            _, err = run_sql(conn, sql)
            ghost = f"{t.name}_nosuch"
            _, ghost_err = run_sql(conn, f"SELECT count(*) FROM mesh.{t.domain}.{ghost}")
            if err is None:
                self.problem(oracle, "results", p, "an undiscoverable table answered", sql, "error", "rows", (t.qualified,))
            elif ghost_err is None or err != ghost_err.replace(ghost, t.name):
                self.problem(oracle, "errors", p, "an undiscoverable table fails unlike a nonexistent one", sql, ghost_err, err, (t.qualified,))
            else:
                self.check_error(p, oracle, sql, err, [t.qualified])
            return  # one per principal is enough

    def check_quality(self, conn, p, oracle: Oracle):
        """Quality results are computed over every row and column: their values, expectations,
        messages and durations are for administrators, owners and whole-product readers; others
        see name, severity and outcome, and no check of a column hidden from them."""
        sql = (
            "SELECT domain, product, check_name, column_name, value, expectation, message, duration_ms "
            "FROM mesh.system.quality WHERE domain IN ('crm', 'sales')"
        )
        got, err = run_sql(conn, sql)
        if err is not None:
            self.problem(oracle, "quality", p, "mesh.system.quality failed", sql, "rows", err)
            return
        for domain, table, check, column, *details in got:
            name = f"mesh.{domain}.{table}"
            d = oracle.decisions.get(name)
            if d is None or d.state == po.MISSING:
                self.problem(oracle, "quality", p, f"quality of a table the principal cannot discover ({name})", sql, "no row", f"a row for check {check!r}")
            elif column in d.hidden:
                self.problem(oracle, "quality", p, f"check {check!r} of {name}.{column}, a hidden column", sql, "no row", "a row", (name,))
            elif (d.full_reader or self.admin(p)) and details[0] is None:
                self.problem(oracle, "quality", p, f"{name} check {check!r} hides its value from a whole-product reader", sql, "its value", details, (name,))
            elif not (d.full_reader or self.admin(p)) and any(v is not None for v in details):
                self.problem(
                    oracle, "quality", p, f"{name} check {check!r} shows its details to a principal who cannot read every row and column",
                    sql, "value, expectation, message, duration NULL", details, (name,)
                )

    def report(self, category: str) -> str:
        problems = [x for x in self.problems if x.category == category]
        out = [
            (
                f"{len(problems)} {category} discrepancies in policy set {self.index} (seed {self.seed}); reproduce with "
                f"MESHQL_DIFF_SEED={SEED} MESHQL_DIFF_SET={self.index} .venv/bin/python -m pytest tests/python/test_policy_differential.py"
            )
        ]
        for x in problems[:12]:
            out += [
                "",
                f"- {x.what}",
                f"  principal: {x.principal.describe()}",
                f"  query:     {x.query}",
                f"  expected:  {x.expected}",
                f"  got:       {x.got}",
                f"  rules that apply to the principal there: {', '.join(x.rules) or 'none'}",
            ]
        if len(problems) > 12:
            out.append(f"\n… and {len(problems) - 12} more")
        out += ["", "policies.yaml:", _indent(to_yaml(self.global_doc), "  ")]
        for d, doc in self.domain_docs.items():
            out += [f"domains/{d}/policies.yaml:", _indent(to_yaml(doc), "  ")]
        return "\n".join(out)


def _indent(text: str, pad: str) -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _named(names: set[str], text: str, sql: str) -> list[str]:
    """The names `text` mentions as identifiers, leaving out those the statement wrote."""

    def mentions(s, n):
        return re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", s)

    return sorted(n for n in names if mentions(text, n) and not mentions(sql, n))


def _diff(expected: set, got: set) -> str:
    return f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"


# --- tests -------------------------------------------------------------------------------------------

_runs: dict[int, PolicySetRun] = {}


@pytest.fixture(scope="module")
def policy_set_runs(mesh, meshql_bin, tmp_path_factory):
    """Runs each policy set once (all categories) on first use."""

    def get(index: int) -> PolicySetRun:
        if index not in _runs:
            try:
                _runs[index] = PolicySetRun(index, mesh, meshql_bin, tmp_path_factory.mktemp(f"set{index}"))
            except Exception as e:
                raise RuntimeError(f"policy set {index} (MESHQL_DIFF_SEED={SEED} MESHQL_DIFF_SET={index}) failed to run: {e}") from e
        return _runs[index]

    yield get
    _runs.clear()


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("index", SET_INDICES, ids=lambda i: f"set{i}")
def test_policies_match_the_oracle(policy_set_runs, index, category):
    run = policy_set_runs(index)
    assert run.cases == PRINCIPALS_PER_SET * QUERIES_PER_PRINCIPAL
    if category == "results":
        assert not run.panics, f"meshql serve panicked under policy set {run.seed}:\n" + "\n".join(run.panics)
    if any(x.category == category for x in run.problems):
        pytest.fail(run.report(category), pytrace=False)
