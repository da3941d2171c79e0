"""meshql serve, driven by the clients people use: the ADBC Flight SQL driver and pyarrow.flight.

Each test module run starts real `meshql serve` processes on 127.0.0.1 (a free port), with
users whose password hashes and service tokens come from `meshql auth`.
"""

import json
import re
import signal
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute  # noqa: F401 — pa.compute
import pyarrow.flight as flight
import pyarrow.ipc as ipc
import pytest

PASSWORD = "correct horse battery staple"
SUPPORT = ["--user", "sam", "--group", "support", "--attr", "region=EU"]
CROSS_DOMAIN = (
    "SELECT p.region, count(*) AS orders, sum(t.amount) AS revenue "
    "FROM mesh.customer.profiles p JOIN mesh.order.transactions t ON t.customer_id = p.customer_id "
    "JOIN mesh.product.catalog c ON c.product_id = t.product_id "
    "GROUP BY p.region ORDER BY p.region"
)
LONG_QUERY = "SELECT count(*) FROM range(0, 3000000000) a WHERE a.value % 7 = 3"


def run(args, stdin=None):
    out = subprocess.run(args, input=stdin, capture_output=True, text=True, check=True)
    return out.stdout


class Server:
    def __init__(self, meshql_bin, mesh_dir, tmp_path, auth_extra="", extra="", log=None, users=()):
        password_hash = run([meshql_bin, "auth", "hash-password"], stdin=PASSWORD + "\n").strip()
        token_lines = run([meshql_bin, "auth", "new-service-token"]).splitlines()
        self.service_token = token_lines[0].split()[-1]
        token_hash = token_lines[1].split()[-1]
        config = tmp_path / f"server-{time.monotonic_ns()}.yaml"
        more_users = "".join(f"    - {{name: {u}, passwordHash: '{password_hash}', groups: [{g}]}}\n" for u, g in users)
        config.write_text(
            f"""
listen: 127.0.0.1:0
auth:
  users:
    - {{name: alice, passwordHash: '{password_hash}', groups: [analysts, pii-readers]}}
    - {{name: sam, passwordHash: '{password_hash}', groups: [support], attributes: {{region: EU}}}}
    - {{name: carl, passwordHash: '{password_hash}', groups: [contractors]}}
{more_users}  serviceTokens:
    - {{name: dashboards, tokenHash: '{token_hash}', groups: [analysts]}}
{auth_extra}
{extra}
"""
        )
        self.proc = subprocess.Popen(
            [meshql_bin, "serve", "--mesh", str(mesh_dir), "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=open(log, "w") if log else subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.addr = match.group(1)
        self.uri = f"grpc://{self.addr}"

    def stop(self):
        """SIGTERM: the server shuts down gracefully and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, self.proc.stderr.read() if self.proc.stderr else code


@pytest.fixture(scope="module")
def server(meshql_bin, mesh_dir, tmp_path_factory):
    s = Server(meshql_bin, mesh_dir, tmp_path_factory.mktemp("flight"))
    yield s
    s.stop()


def connect(server, user=None, password=PASSWORD, **kwargs):
    db_kwargs = dict(kwargs)
    if user:
        db_kwargs.update({"username": user, "password": password})
    return flightsql.connect(server.uri, db_kwargs=db_kwargs)


def query(conn, sql, parameters=None):
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()


def embedded(meshql_bin, mesh_dir, sql, principal, tmp_path):
    """The same query through the meshql CLI (the embedded API), as an Arrow table."""
    out = tmp_path / f"embedded-{time.monotonic_ns()}.arrow"
    run([meshql_bin, "query", "--mesh", str(mesh_dir), *principal, "--format", "arrow", "-o", str(out), sql])
    with ipc.open_file(out) as f:
        return f.read_all()


def plain(table):
    """The embedded result with view types as the server sends them by default."""
    fields = []
    for f in table.schema:
        t = f.type
        if t == pa.string_view():
            t = pa.string()
        elif t == pa.binary_view():
            t = pa.binary()
        fields.append(pa.field(f.name, t, f.nullable))
    return table.cast(pa.schema(fields))


def test_login_with_password_and_cross_domain_query(server, meshql_bin, mesh_dir, tmp_path):
    with connect(server, "alice") as conn:
        got = query(conn, CROSS_DOMAIN)
    expected = embedded(meshql_bin, mesh_dir, CROSS_DOMAIN, ["--group", "analysts", "--group", "pii-readers"], tmp_path)
    assert got.num_rows > 0
    assert got.to_pylist() == expected.to_pylist()


def test_login_with_a_service_token(server):
    with connect(server, **{"adbc.flight.sql.authorization_header": f"Bearer {server.service_token}"}) as conn:
        assert query(conn, "SELECT count(*) AS n FROM mesh.order.transactions").to_pylist() == [{"n": 2000}]


def test_masked_and_filtered_results_equal_the_embedded_api(server, meshql_bin, mesh_dir, tmp_path):
    sql = (
        "SELECT customer_id, full_name, email, phone, region, country, segment, signup_ts "
        "FROM mesh.customer.profiles ORDER BY customer_id"
    )
    with connect(server, "sam") as conn:
        got = query(conn, sql)
    expected = plain(embedded(meshql_bin, mesh_dir, sql, SUPPORT, tmp_path))
    assert 0 < got.num_rows < 200
    assert got.schema.types == expected.schema.types
    assert got.equals(expected)


def test_prepared_statements_with_bound_parameters(server):
    with connect(server, "alice") as conn, conn.cursor() as cur:
        results = []
        for customer in (7, 42, 99):
            cur.execute("SELECT count(*) AS n FROM mesh.order.transactions WHERE customer_id = $1", (customer,))
            results.append(cur.fetch_arrow_table().to_pylist()[0]["n"])
        for customer, n in zip((7, 42, 99), results):
            literal = query(conn, f"SELECT count(*) AS n FROM mesh.order.transactions WHERE customer_id = {customer}")
            assert literal.to_pylist()[0]["n"] == n
        # JDBC-style `?` placeholders, and a string parameter.
        cur.execute("SELECT count(*) AS n FROM mesh.customer.profiles WHERE region = ? AND customer_id > ?", ("EU", 10))
        n = cur.fetch_arrow_table().to_pylist()[0]["n"]
        assert n == query(conn, "SELECT count(*) AS n FROM mesh.customer.profiles WHERE region = 'EU' AND customer_id > 10").to_pylist()[0]["n"]


def test_get_objects_at_every_depth(server):
    with connect(server, "alice") as conn:
        catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
        assert [c["catalog_name"] for c in catalogs] == ["mesh"]
        schemas = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        domains = [s["db_schema_name"] for s in schemas[0]["catalog_db_schemas"]]
        assert domains == ["customer", "interop", "marketing", "order", "product"]
        tables = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        by_domain = {s["db_schema_name"]: [t["table_name"] for t in s["db_schema_tables"]] for s in tables[0]["catalog_db_schemas"]}
        assert "profiles" in by_domain["customer"] and "transactions" in by_domain["order"]
        columns = conn.adbc_get_objects(depth="all", db_schema_filter="customer", table_name_filter="profiles").read_all()
        profile = columns.to_pylist()[0]["catalog_db_schemas"][0]["db_schema_tables"][0]
        names = [c["column_name"] for c in profile["table_columns"]]
        assert names[:3] == ["customer_id", "full_name", "email"]
        types = {c["column_name"]: c["xdbc_type_name"] for c in profile["table_columns"]}
        assert types["customer_id"] == "BIGINT" and types["email"] == "VARCHAR"
        schema = conn.adbc_get_table_schema("profiles", db_schema_filter="customer", catalog_filter="mesh")
        assert schema.names[0] == "customer_id"
        # The contract's column descriptions travel as Flight SQL remarks (JDBC REMARKS).
        remarks = schema.field("customer_id").metadata[b"ARROW:FLIGHT:SQL:REMARKS"]
        assert remarks == b"Surrogate key of the customer."
    # A support agent does not see the birth date column anywhere.
    with connect(server, "sam") as conn:
        schema = conn.adbc_get_table_schema("profiles", db_schema_filter="customer", catalog_filter="mesh")
        assert "birth_date" not in schema.names
    # A contractor does not see the interop domain.
    with connect(server, "carl") as conn:
        schemas = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        assert "interop" not in [s["db_schema_name"] for s in schemas[0]["catalog_db_schemas"]]


def test_get_info(server):
    with connect(server, "alice") as conn:
        info = conn.adbc_get_info()
    assert info["vendor_name"] == "meshql"
    assert info["vendor_version"] == "0.1.0"
    assert info["vendor_arrow_version"] == "58"


def test_cancellation(server):
    with connect(server, "alice") as conn, conn.cursor() as cur:
        errors = []

        def long_query():
            try:
                cur.execute(LONG_QUERY)
                cur.fetch_arrow_table()
            except Exception as e:  # noqa: BLE001 — the cancellation error is what we want
                errors.append(e)

        t = threading.Thread(target=long_query)
        start = time.monotonic()
        t.start()
        time.sleep(1.0)
        cur.adbc_cancel()
        t.join(timeout=60)
        assert not t.is_alive(), "the query did not stop"
        assert errors, "the query finished instead of being cancelled"
        assert "cancel" in str(errors[0]).lower(), errors
        assert time.monotonic() - start < 60
    # The server still answers.
    with connect(server, "alice") as conn:
        assert query(conn, "SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_wrong_password_and_forged_tokens(server):
    with pytest.raises(adbc_driver_manager.Error) as e:
        with connect(server, "alice", password="wrong") as conn:
            query(conn, "SELECT 1")
    assert "UNAUTHENTICATED" in str(e.value) or "Unauthenticated" in str(e.value)
    assert "password" not in str(e.value).lower().replace("wrong", "")
    # A real token with its signature changed, and a made-up service token.
    client = flight.FlightClient(server.uri)
    key, value = client.authenticate_basic_token("alice", PASSWORD)
    token = value.decode().split(" ", 1)[1]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (forged, "mqs_" + "A" * 43, "not-a-token"):
        with pytest.raises(adbc_driver_manager.Error) as e:
            with connect(server, **{"adbc.flight.sql.authorization_header": f"Bearer {bad}"}) as conn:
                query(conn, "SELECT 1")
        assert "authentication failed" in str(e.value), str(e.value)


def test_expired_tokens(meshql_bin, mesh_dir, tmp_path):
    s = Server(meshql_bin, mesh_dir, tmp_path, auth_extra="  tokenTtl: 1")
    try:
        client = flight.FlightClient(s.uri)
        header = client.authenticate_basic_token("alice", PASSWORD)
        time.sleep(2.1)
        with pytest.raises(flight.FlightUnauthenticatedError):
            pyarrow_sql(client, "SELECT 1", header)
    finally:
        s.stop()


def test_a_denied_query_reaches_the_client_intact(server):
    with connect(server, "carl") as conn:
        with pytest.raises(adbc_driver_manager.Error) as e:
            query(conn, "SELECT * FROM mesh.customer.profiles")
    message = str(e.value)
    assert "access denied: 'carl' may not read mesh.customer.profiles" in message, message
    assert "customer-data-team" in message, message


def test_read_only(server):
    with connect(server, "alice") as conn:
        with pytest.raises(adbc_driver_manager.Error) as e:
            query(conn, "DROP TABLE mesh.order.transactions")
        assert "only queries are allowed" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e, conn.cursor() as cur:
            cur.adbc_ingest("t", pa.table({"a": [1]}), mode="create")
        assert "read-only" in str(e.value)


# pyarrow.flight speaks plain Flight: build the Flight SQL command by hand (protobuf `Any`
# wrapping CommandStatementQuery), as any Flight client could.
def _field(number, data):
    key = (number << 3) | 2
    length = len(data)
    varint = bytearray()
    while True:
        b = length & 0x7F
        length >>= 7
        varint.append(b | (0x80 if length else 0))
        if not length:
            break
    return bytes([key]) + bytes(varint) + data


def pyarrow_sql(client, sql, header):
    command = _field(1, sql.encode())
    any_ = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + _field(2, command)
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(any_), options)
    return pa.concat_tables(client.do_get(e.ticket, options).read_all() for e in info.endpoints)


def test_pyarrow_flight_client(server, meshql_bin, mesh_dir, tmp_path):
    client = flight.FlightClient(server.uri)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", "wrong")
    header = client.authenticate_basic_token("sam", PASSWORD)
    sql = "SELECT customer_id, email, phone, region FROM mesh.customer.profiles ORDER BY customer_id"
    got = pyarrow_sql(client, sql, header)
    assert got.equals(plain(embedded(meshql_bin, mesh_dir, sql, SUPPORT, tmp_path)))
    with pytest.raises(flight.FlightUnauthenticatedError):
        pyarrow_sql(client, "SELECT 1", (b"authorization", b"Bearer mqt_forged"))


def test_discovery_audit_and_live_reload_over_flight(meshql_bin, mesh_copy, tmp_path):
    """System tables answer any Flight SQL client; the server records queries and picks up a
    product published while it runs."""
    s = Server(meshql_bin, mesh_copy, tmp_path)
    try:
        with connect(s, "carl") as conn:
            products = query(conn, "SELECT domain, product, readable FROM mesh.system.products ORDER BY 1, 2").to_pylist()
            assert {"domain": "customer", "product": "profiles", "readable": False} in products
            assert all(p["domain"] != "interop" for p in products)
            with pytest.raises(adbc_driver_manager.Error):
                query(conn, "SELECT * FROM mesh.customer.profiles")
        with connect(s, "alice") as conn:
            assert query(conn, "SELECT count(*) AS n FROM mesh.order.transactions").to_pylist() == [{"n": 2000}]
            # Publishing a product is writing its files: queryable within seconds, no restart.
            order = mesh_copy / "domains" / "order" / "products"
            text = (order / "shipments.odps.yaml").read_text()
            (order / "parcels.odps.yaml").write_text(
                text.replace("urn:dataproduct:order:shipments", "urn:dataproduct:order:parcels").replace(
                    "name: shipments", "name: parcels"
                )
            )
            deadline = time.monotonic() + 15
            while True:
                try:
                    n = query(conn, "SELECT count(*) AS n FROM mesh.order.parcels").to_pylist()
                    break
                except adbc_driver_manager.Error:
                    assert time.monotonic() < deadline, "the new product was not served within 15 s"
                    time.sleep(0.3)
            assert n == query(conn, "SELECT count(*) AS n FROM mesh.order.shipments").to_pylist()
            # Everyone sees their own queries, recorded by the server with its query ids.
            mine = query(conn, "SELECT principal, client, outcome, statement FROM mesh.system.queries").to_pylist()
            assert {r["principal"] for r in mine} == {"alice"}
            assert any(r["client"] == "flight" and r["outcome"] == "ok" and "order.transactions" in r["statement"] for r in mine)
        audit = mesh_copy / ".meshql" / "audit"
        lines = [json.loads(line) for f in sorted(audit.glob("audit-*.jsonl")) for line in f.read_text().splitlines()]
        denied = [r for r in lines if r["principal"] == "carl" and r["statement"] == "SELECT * FROM mesh.customer.profiles"]
        assert [r["outcome"] for r in denied] == ["denied"], denied
        assert denied and denied[0]["products"] == ["customer.profiles"], denied
    finally:
        s.stop()


def _sorted(table):
    return table.sort_by([(k, "ascending") for k in table.column_names])


def test_scans_are_served_over_several_endpoints(meshql_bin, mesh_copy, tmp_path):
    """With `results.maxEndpoints`, a scan's independent partitions become endpoints that a client
    may fetch in parallel: together exactly the governed result, never a mix of two versions."""
    from deltalake import DeltaTable, write_deltalake

    mesh_yaml = mesh_copy / "mesh.yaml"
    mesh_yaml.write_text(
        mesh_yaml.read_text().replace("metadataRefreshSeconds: 5", "metadataRefreshSeconds: 0")
        # The sample's files are tiny: let DataFusion split scans of any size over 4 partitions.
        + "engine:\n  datafusion.execution.target_partitions: 4\n  datafusion.optimizer.repartition_file_min_size: 1\n"
    )
    # A desk that sees only large orders, with the customer hidden: policies must hold in every
    # endpoint, not only in a single stream.
    (mesh_copy / "domains" / "order" / "policies.yaml").write_text(
        """
rules:
  - name: order-desk-large-orders
    principals: { groups: [order-desk] }
    resource: order.transactions
    grant: [select]
    rowFilter: "amount > 100"
  - name: order-desk-no-customers
    principals: { groups: [order-desk] }
    resource: order.transactions
    masks:
      customer_id: { type: nullify }
"""
    )
    s = Server(meshql_bin, mesh_copy, tmp_path, users=[("olga", "order-desk")], extra="results: {maxEndpoints: 8}")
    try:
        client = flight.FlightClient(s.uri)
        alice = flight.FlightCallOptions(headers=[client.authenticate_basic_token("alice", PASSWORD)])
        olga = flight.FlightCallOptions(headers=[client.authenticate_basic_token("olga", PASSWORD)])

        def info_of(sql, options):
            command = _field(1, sql.encode())
            any_ = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + _field(2, command)
            return client.get_flight_info(flight.FlightDescriptor.for_command(any_), options)

        def fetch_parallel(info, options):
            parts = [None] * len(info.endpoints)

            def get(i):
                parts[i] = client.do_get(info.endpoints[i].ticket, options).read_all()

            threads = [threading.Thread(target=get, args=(i,)) for i in range(len(info.endpoints))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert all(p is not None for p in parts), "an endpoint failed"
            return pa.concat_tables(parts)

        cases = [
            ("alice", alice, ["--user", "alice", "--group", "analysts", "--group", "pii-readers"],
             "SELECT * FROM mesh.order.transactions"),
            ("olga", olga, ["--user", "olga", "--group", "order-desk"],
             "SELECT order_id, customer_id, amount FROM mesh.order.transactions"),
            ("alice", alice, ["--user", "alice", "--group", "analysts", "--group", "pii-readers"],
             "SELECT * FROM mesh.order.shipments WHERE status = 'delivered'"),
            ("alice", alice, ["--user", "alice", "--group", "analysts", "--group", "pii-readers"],
             "SELECT campaign_id, channel, clicks FROM mesh.marketing.campaign_performance"),
        ]
        for who, options, principal, sql in cases:
            info = info_of(sql, options)
            assert len(info.endpoints) > 1, (who, sql, len(info.endpoints))
            assert not info.ordered
            got = fetch_parallel(info, options)
            expected = plain(embedded(meshql_bin, mesh_copy, sql, principal, tmp_path))
            assert got.num_rows == expected.num_rows, (who, sql)
            assert _sorted(got).equals(_sorted(expected)), (who, sql)
        # And against an independent reader: pyarrow over the product's files, filtered by hand.
        import pyarrow.dataset as ds

        files = ds.dataset(mesh_copy / "domains" / "order" / "data" / "transactions", format="parquet",
                           partitioning="hive").to_table(columns=["order_id", "amount"])
        large = files.filter(pa.compute.greater(files.column("amount"), 100))
        olga_rows = fetch_parallel(info_of(cases[1][3], olga), olga)
        assert 0 < olga_rows.num_rows < files.num_rows
        assert sorted(olga_rows.column("order_id").to_pylist()) == sorted(large.column("order_id").to_pylist())
        assert olga_rows.column("customer_id").null_count == olga_rows.num_rows

        # Anything but a scan (here a sort and an aggregate) keeps one ordered endpoint.
        for sql in ["SELECT * FROM mesh.order.transactions ORDER BY order_id",
                    "SELECT count(*) FROM mesh.order.transactions"]:
            info = info_of(sql, alice)
            assert len(info.endpoints) == 1 and info.ordered, sql

        # ADBC reads every endpoint.
        with connect(s, "alice") as conn:
            n = query(conn, "SELECT * FROM mesh.order.transactions").num_rows
            assert n == query(conn, "SELECT count(*) AS n FROM mesh.order.transactions").to_pylist()[0]["n"]

        # A commit between GetFlightInfo and DoGet: the old endpoints refuse to run rather
        # than return part of one version and part of another.
        delivered = "SELECT * FROM mesh.order.shipments WHERE status = 'delivered'"
        info = info_of(delivered, alice)
        assert len(info.endpoints) > 1
        first = client.do_get(info.endpoints[0].ticket, alice).read_all()
        assert first.num_rows > 0
        shipments = mesh_copy / "domains" / "order" / "data" / "shipments"
        write_deltalake(str(shipments), DeltaTable(str(shipments)).to_pyarrow_table().slice(0, 10), mode="append")
        with pytest.raises(pa.ArrowInvalid) as e:  # FAILED_PRECONDITION
            client.do_get(info.endpoints[1].ticket, alice).read_all()
        assert "changed since its endpoints were issued" in str(e.value), e.value
        # Run again, the query is served from the new version.
        again = fetch_parallel(info_of(delivered, alice), alice)
        table = DeltaTable(str(shipments)).to_pyarrow_table()
        assert again.num_rows == table.filter(pa.compute.equal(table.column("status"), "delivered")).num_rows
        # A ticket is still only its principal's.
        with pytest.raises(flight.FlightUnauthorizedError):
            client.do_get(info_of(cases[0][3], alice).endpoints[0].ticket, olga).read_all()
    finally:
        s.stop()


def test_current_schema_with_adbc_defaults_and_no_cookies(server):
    """ADBC keeps no cookies by default; the current domain still sticks (issue 22, item 14)."""
    with connect(server, "alice") as conn:
        # Before any choice the driver reads an empty current schema, not NOT_FOUND.
        assert conn.adbc_current_db_schema == ""
        assert conn.adbc_current_catalog == "mesh"
        # An unqualified name without a current domain: the error says how to name it and never
        # mentions a schema that does not exist.
        with pytest.raises(adbc_driver_manager.Error) as e:
            query(conn, "SELECT count(*) FROM transactions")
        assert "public" not in str(e.value)
        assert "<domain>.transactions" in str(e.value)
        conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "order"})
        assert conn.adbc_current_db_schema == "order"
        counted = query(conn, "SELECT count(*) AS n FROM transactions").column("n")[0].as_py()
        qualified = query(conn, "SELECT count(*) AS n FROM mesh.order.transactions").column("n")[0].as_py()
        assert counted == qualified > 0
        # Another domain, then a domain that does not exist (refused; the choice stays).
        conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "customer"})
        assert conn.adbc_current_db_schema == "customer"
        assert query(conn, "SELECT count(*) AS n FROM profiles").column("n")[0].as_py() > 0
        with pytest.raises(adbc_driver_manager.Error):
            conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "nowhere"})
        assert conn.adbc_current_db_schema == "customer"
    # A new connection starts without a current domain.
    with connect(server, "alice") as conn:
        assert conn.adbc_current_db_schema == ""
    # Another principal cannot use alice's session part: it is bound to her.
    with connect(server, "carl") as conn:
        assert conn.adbc_current_db_schema == ""


def test_pandas_and_polars_read_through_adbc(server):
    """The README's pandas and polars snippets, against the ADBC driver's own answer."""
    import pandas as pd
    import polars as pl

    sql = "SELECT * FROM mesh.order.transactions ORDER BY order_id"
    with connect(server, "alice") as conn:
        expected = query(conn, sql)
        frame = pd.read_sql(sql, conn)
        assert frame.shape == (expected.num_rows, expected.num_columns)
        assert frame["order_id"].tolist() == expected.column("order_id").to_pylist()
        lazy = pl.read_database(sql, connection=conn)
        assert lazy.shape == (expected.num_rows, expected.num_columns)
        assert lazy["order_id"].to_list() == expected.column("order_id").to_pylist()
