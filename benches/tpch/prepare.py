"""Writes the TPC-H mesh: TPC-H data at a scale factor as data products of three domains.

    python benches/tpch/prepare.py --sf 1 --dir benches/data/sf1 [--formats parquet,delta,iceberg]

Layout (one mesh per storage format, same products, same contracts apart from the server):

    <dir>/parquet/           mesh.yaml, policies.yaml, domains/<domain>/{domain.yaml,products,contracts}
    <dir>/parquet/data/      <table>.parquet, written by tpchgen-cli (the files DuckDB reads too)
    <dir>/delta/data/<table> Delta tables written by the `deltalake` package from those files
    <dir>/iceberg/data/...   Iceberg tables written by `pyiceberg` (SqlCatalog on SQLite)

Domains: customer (customer, nation, region), order (orders, lineitem), supply (part, partsupp,
supplier). Every product has an ODPS descriptor and an ODCS contract whose schema is the table's
(phone and address columns classified `pii`). Existing data is kept: delete <dir> to regenerate.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DOMAINS = {
    "customer": ["customer", "nation", "region"],
    "order": ["orders", "lineitem"],
    "supply": ["part", "partsupp", "supplier"],
}
TABLES = [t for ts in DOMAINS.values() for t in ts]
PRIMARY_KEYS = {
    "customer": ["c_custkey"],
    "nation": ["n_nationkey"],
    "region": ["r_regionkey"],
    "orders": ["o_orderkey"],
    "lineitem": ["l_orderkey", "l_linenumber"],
    "part": ["p_partkey"],
    "partsupp": ["ps_partkey", "ps_suppkey"],
    "supplier": ["s_suppkey"],
}
PII = {"c_phone", "c_address", "s_phone", "s_address"}

# The policies the benchmark measures. `analysts` read everything unfiltered (meshql's own
# layers, no policy work); the credit desk reads through a realistic governed view: a row filter
# on customers by a principal attribute (its balance threshold) and masks on every phone and
# address. The threshold the benchmark gives admits every customer, so both principals get the
# same rows and the difference is the cost of evaluating the policies, not of reading less.
POLICIES = """\
# TPC-H mesh policies (written by benches/tpch/prepare.py).
admins:
  groups: [platform-admins]
rules:
  - name: everyone-discovers
    principals: "*"
    resource: "*"
    grant: [discover]
  - name: analysts-read-the-mesh
    principals: { groups: [analysts, credit-desk] }
    resource: "*"
    grant: [select]
  - name: credit-desk-balance-threshold
    description: The credit desk sees customers whose balance is at least its threshold.
    principals: { groups: [credit-desk] }
    resource: customer.customer
    rowFilter: "c_acctbal >= CAST(${principal.min_balance} AS DECIMAL(15, 2))"
tagRules:
  - name: phones-show-country-code
    tag: phone
    except: { groups: [analysts] }
    mask: { type: showFirst, n: 3 }
  - name: addresses-redacted
    tag: address
    except: { groups: [analysts] }
    mask: { type: redact, value: "(redacted)" }
"""


def logical_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_decimal(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_date(t):
        return "date"
    return "string"


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """The schema with string views as plain strings and no field ids (for other writers)."""
    fields = []
    for f in schema:
        t = pa.string() if pa.types.is_string_view(f.type) else f.type
        fields.append(pa.field(f.name, t, nullable=f.nullable))
    return pa.schema(fields)


def generate_parquet(sf: float, data: Path) -> None:
    if all((data / f"{t}.parquet").exists() for t in TABLES):
        return
    data.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    print(f"  tpchgen-cli parquet -s {sf} -o {data}", flush=True)
    subprocess.run([exe, "parquet", "-s", str(sf), "-o", str(data), "--overwrite"], check=True)


def batches(path: Path, schema: pa.Schema):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256 * 1024):
        yield batch.cast(schema)


# The Delta and Iceberg copies are written with the Parquet layout of the source files (rows per
# row group, Snappy), so that the format comparison compares formats and not writer defaults:
# the writers' defaults (1M+ rows per row group, ZSTD for PyIceberg) leave 2–3 row groups per
# table, which a scan cannot spread over cores. Data written before this layout is rewritten.
LAYOUT = "rows-per-row-group-of-source+snappy"


def layout(source: Path, table: str) -> int:
    """Rows per row group of the source file."""
    return pq.ParquetFile(source / f"{table}.parquet").metadata.row_group(0).num_rows


def current(target: Path) -> bool:
    """Whether `target` holds data written with this LAYOUT; if not, it is cleared."""
    marker = target / "LAYOUT"
    if marker.exists() and marker.read_text().strip() == LAYOUT:
        return True
    if target.exists():
        shutil.rmtree(target)
    return False


def write_delta(source: Path, target: Path) -> None:
    from deltalake import WriterProperties, write_deltalake

    if not current(target):
        target.mkdir(parents=True)
    for table in TABLES:
        dest = target / table
        if (dest / "_delta_log").exists():
            continue
        schema = plain_schema(pq.read_schema(source / f"{table}.parquet"))
        reader = pa.RecordBatchReader.from_batches(schema, batches(source / f"{table}.parquet", schema))
        print(f"  delta {table}", flush=True)
        props = WriterProperties(max_row_group_size=layout(source, table), compression="SNAPPY")
        write_deltalake(str(dest), reader, mode="overwrite", writer_properties=props)
    (target / "LAYOUT").write_text(LAYOUT)


def write_iceberg(source: Path, target: Path) -> dict[str, Path]:
    """Writes each table with pyiceberg; returns the table directories."""
    from pyiceberg.catalog.sql import SqlCatalog

    if not current(target):
        target.mkdir(parents=True)
    catalog = SqlCatalog(
        "bench",
        uri=f"sqlite:///{target / 'catalog.db'}",
        warehouse=f"file://{target.resolve()}",
    )
    if ("tpch",) not in catalog.list_namespaces():
        catalog.create_namespace("tpch")
    locations = {}
    for table in TABLES:
        ident = f"tpch.{table}"
        if catalog.table_exists(ident):
            t = catalog.load_table(ident)
        else:
            schema = plain_schema(pq.read_schema(source / f"{table}.parquet"))
            print(f"  iceberg {table}", flush=True)
            properties = {
                "write.parquet.row-group-limit": str(layout(source, table)),
                "write.parquet.compression-codec": "snappy",
            }
            t = catalog.create_table(ident, schema=schema, properties=properties)
            chunk: list[pa.RecordBatch] = []
            rows = 0
            # One commit per ~2M rows: a table of a few snapshots, as a pipeline would leave it.
            for batch in batches(source / f"{table}.parquet", schema):
                chunk.append(batch)
                rows += batch.num_rows
                if rows >= 2_000_000:
                    t.append(pa.Table.from_batches(chunk, schema))
                    chunk, rows = [], 0
            if chunk:
                t.append(pa.Table.from_batches(chunk, schema))
        locations[table] = Path(t.location().removeprefix("file://"))
    (target / "LAYOUT").write_text(LAYOUT)
    return locations


def write_mesh(root: Path, fmt: str, location: dict[str, str], schemas: dict[str, pa.Schema]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mesh.yaml").write_text(
        f"# TPC-H mesh ({fmt}), written by benches/tpch/prepare.py.\n"
        f"name: tpch-{fmt}\ndomainsDir: domains\nmetadataRefreshSeconds: 60\nreloadSeconds: 3600\n"
    )
    (root / "policies.yaml").write_text(POLICIES)
    for domain, tables in DOMAINS.items():
        d = root / "domains" / domain
        (d / "products").mkdir(parents=True, exist_ok=True)
        (d / "contracts").mkdir(parents=True, exist_ok=True)
        (d / "domain.yaml").write_text(
            f"name: {domain}\ntitle: {domain.title()}\ndescription: TPC-H {domain} domain.\n"
            f"owner: {domain}-team\nsupport: \"#{domain}-data\"\n"
        )
        for table in tables:
            contract = f"urn:datacontract:{domain}:{table}"
            (d / "products" / f"{table}.odps.yaml").write_text(
                "apiVersion: v1.0.0\nkind: DataProduct\n"
                f"id: urn:dataproduct:{domain}:{table}\nname: {table}\nversion: 1.0.0\nstatus: active\n"
                f"domain: {domain}\ndescription:\n  purpose: TPC-H {table}.\nteam:\n  name: {domain}-team\n"
                f"support:\n  - channel: \"#{domain}-data\"\n    url: https://chat.example.com/channels/{domain}-data\n"
                f"outputPorts:\n  - name: {table}\n    version: 1.0.0\n    contractId: {contract}\n"
            )
            lines = [
                "apiVersion: v3.1.0",
                "kind: DataContract",
                f"id: {contract}",
                f"name: {table}",
                "version: 1.0.0",
                "status: active",
                f"domain: {domain}",
                f"dataProduct: {table}",
                "servers:",
                f"  - server: local-{fmt}",
                "    type: local",
                f"    format: {fmt}",
                f"    path: {location[table]}",
                "schema:",
                f"  - name: {table}",
                "    physicalType: table",
                "    properties:",
            ]
            keys = PRIMARY_KEYS[table]
            for field in schemas[table]:
                lines += [f"      - name: {field.name}", f"        logicalType: {logical_type(field.type)}"]
                if not field.nullable:
                    lines.append("        required: true")
                if field.name in keys:
                    lines += ["        primaryKey: true", f"        primaryKeyPosition: {keys.index(field.name) + 1}"]
                if field.name in PII:
                    tag = "phone" if field.name.endswith("phone") else "address"
                    lines += ["        classification: pii", f"        tags: [{tag}]"]
                else:
                    lines.append("        classification: internal")
            (d / "contracts" / f"{table}.odcs.yaml").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--formats", default="parquet,delta,iceberg")
    args = ap.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    root: Path = args.dir.resolve()
    data = root / "parquet" / "data"
    generate_parquet(args.sf, data)
    schemas = {t: pq.read_schema(data / f"{t}.parquet") for t in TABLES}
    write_mesh(root / "parquet", "parquet", {t: f"data/{t}.parquet" for t in TABLES}, schemas)
    if "delta" in formats:
        write_delta(data, root / "delta" / "data")
        write_mesh(root / "delta", "delta", {t: f"data/{t}" for t in TABLES}, schemas)
    if "iceberg" in formats:
        dirs = write_iceberg(data, root / "iceberg" / "data")
        rel = {t: str(p.relative_to(root / "iceberg")) for t, p in dirs.items()}
        write_mesh(root / "iceberg", "iceberg", rel, schemas)
    print(f"TPC-H SF{args.sf:g} mesh ready under {root}", flush=True)


if __name__ == "__main__":
    main()
