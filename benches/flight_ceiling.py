"""The machine's Flight ceiling: a pyarrow.flight server (Arrow C++, gRPC C++) that answers every
DoGet with one Parquet file's rows, decoded into memory before the first request.

    python benches/flight_ceiling.py <file.parquet>      # prints "listening on 127.0.0.1:<port>"

benches/run.py reads the same rows from it with the same client as from meshql: no scan, no
decoding, no planning — only IPC framing, gRPC and the loopback socket. What meshql reaches is
quoted against it, because on a 2-core machine the client and the server share the cores and the
ceiling moves with the machine's load.

The rows are sent as meshql sends them with `results.plainTypes: true` (the default): strings as
Utf8, not Utf8View, in batches of DataFusion's default 8192 rows.
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

BATCH_ROWS = 8192


def plain(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    return t


def load(path: str) -> pa.Table:
    table = pq.read_table(path)
    schema = pa.schema([f.with_type(plain(f.type)) for f in table.schema])
    table = table.cast(schema).combine_chunks()
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), schema)


class Ceiling(flight.FlightServerBase):
    def __init__(self, table: pa.Table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main() -> None:
    server = Ceiling(load(sys.argv[1]))
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
