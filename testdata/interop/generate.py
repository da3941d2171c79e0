"""Interop fixtures: the same event data written by other writers.

    python testdata/interop/generate.py [MESH_DIR]

writes, under MESH_DIR/domains/interop/data/ (default: testdata/mesh):

- pyarrow_events/   a directory of three Parquet files written by pyarrow (no partitioning);
- deltars_events/   a Delta table written by the `deltalake` Python package: two commits,
                    partitioned by `kind`;
- pyiceberg_events/ an Iceberg table written by `pyiceberg` through a SQLite SqlCatalog: two
                    snapshots, partitioned by identity(`kind`).

The rows are a pure function of the event id (see `events`), so tests can compute expected
answers without reading any file. Rows with event_id < FIRST_COMMIT are in the first
commit/snapshot, the rest in the second.
"""

import datetime as dt
import decimal
import os
import re
import shutil
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

N_EVENTS = 600
FIRST_COMMIT = 400
KINDS = ["view", "click", "buy"]
BASE_TS = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)

SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("amount", pa.decimal128(10, 2), nullable=False),
        pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def events(lo: int, hi: int) -> pa.Table:
    ids = list(range(lo, hi))
    return pa.table(
        {
            "event_id": ids,
            "user_id": [(i * 7) % 53 for i in ids],
            "kind": [KINDS[i % 3] for i in ids],
            "amount": [decimal.Decimal((i * 7919) % 10000) / 100 for i in ids],
            "event_ts": [BASE_TS + dt.timedelta(seconds=97 * i) for i in ids],
        },
        schema=SCHEMA,
    )


def write_parquet(dest: str) -> None:
    os.makedirs(dest)
    for n, (lo, hi) in enumerate([(0, 200), (200, FIRST_COMMIT), (FIRST_COMMIT, N_EVENTS)]):
        pq.write_table(events(lo, hi), os.path.join(dest, f"part-{n}.parquet"))


def write_delta(dest: str) -> None:
    from deltalake import write_deltalake

    write_deltalake(dest, events(0, FIRST_COMMIT), partition_by=["kind"])
    write_deltalake(dest, events(FIRST_COMMIT, N_EVENTS), mode="append", partition_by=["kind"])


def write_iceberg(dest: str) -> int:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    parent = os.path.dirname(dest)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = SqlCatalog(
            "interop",
            uri=f"sqlite:///{tmp}/catalog.db",
            warehouse=f"file://{parent}",
        )
        catalog.create_namespace("interop")
        table = catalog.create_table(
            "interop.pyiceberg_events",
            schema=SCHEMA,
            location=f"file://{dest}",
        )
        kind_id = table.schema().find_field("kind").field_id
        with table.update_spec() as spec:
            spec.add_identity("kind")
        table.append(events(0, FIRST_COMMIT))
        table.append(events(FIRST_COMMIT, N_EVENTS))
        assert len(table.snapshots()) >= 2 and kind_id > 0
        return table.snapshots()[0].snapshot_id


def pin_first_snapshot(mesh: str, snapshot_id: int) -> None:
    """Points the contract pinned to the first snapshot at the snapshot just written."""
    path = os.path.join(mesh, "domains", "interop", "contracts", "pyiceberg_events_first.odcs.yaml")
    with open(path) as f:
        text = f.read()
    text = re.sub(r"(property: icebergSnapshotId\n\s+value: )\d+", rf"\g<1>{snapshot_id}", text)
    with open(path, "w") as f:
        f.write(text)


def main() -> None:
    mesh = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "testdata/mesh")
    data = os.path.join(mesh, "domains", "interop", "data")
    for name, writer in [
        ("pyarrow_events", write_parquet),
        ("deltars_events", write_delta),
        ("pyiceberg_events", write_iceberg),
    ]:
        dest = os.path.join(data, name)
        shutil.rmtree(dest, ignore_errors=True)
        result = writer(dest)
        if name == "pyiceberg_events":
            pin_first_snapshot(mesh, result)
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
