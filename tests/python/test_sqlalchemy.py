"""The client Apache Superset uses: flightsql-dbapi with SQLAlchemy 1.4 (issue 22).

flightsql-dbapi needs SQLAlchemy < 2, so it lives in its own virtual environment
(`.venv-sqlalchemy`, made by scripts/venv.sh); tests/python/sqlalchemy_client.py runs there
against a real `meshql serve` and reports what it saw, which is compared here with the ADBC
driver's answers to the same questions.
"""

import json
import pathlib
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from test_flight import PASSWORD, Server, connect, query

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-sqlalchemy" / "bin" / "python"


@pytest.fixture(scope="module")
def server(meshql_bin, mesh_dir, tmp_path_factory):
    s = Server(meshql_bin, mesh_dir, tmp_path_factory.mktemp("sqlalchemy"))
    yield s
    s.stop()


def test_flightsql_dbapi_and_sqlalchemy_see_what_adbc_sees(server):
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing: run scripts/venv.sh")
    address = urlparse(server.uri)
    out = subprocess.run(
        [str(PYTHON), str(ROOT / "tests/python/sqlalchemy_client.py"), address.hostname, str(address.port), "alice", PASSWORD],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    seen = json.loads(out.stdout)
    with connect(server, "alice") as conn:
        objects = conn.adbc_get_objects(depth="columns", catalog_filter="mesh").read_all().to_pylist()[0]
        schemas = {s["db_schema_name"]: s for s in objects["catalog_db_schemas"]}
        assert seen["schemas"] == sorted(schemas)
        customer = {t["table_name"]: t for t in schemas["customer"]["db_schema_tables"]}
        assert seen["tables"] == sorted(customer)
        columns = [c["column_name"] for c in customer["profiles"]["table_columns"]]
        assert [c["name"] for c in seen["columns"]] == columns
        assert seen["has_table"] == [True, False]
        keys = query(conn, "SELECT column_name FROM mesh.system.columns WHERE domain = 'customer' AND product = 'profiles' AND primary_key ORDER BY ordinal")
        assert seen["primary_key"] == keys.column(0).to_pylist()

        expected = query(
            conn,
            "SELECT customer_id, region FROM mesh.customer.profiles WHERE customer_id BETWEEN 3 AND 7 ORDER BY customer_id",
        ).to_pylist()
        assert seen["prepared"] == [[r["customer_id"], r["region"]] for r in expected]
        count = query(conn, "SELECT count(*) AS n FROM mesh.order.transactions WHERE customer_id = 5").column("n")[0].as_py()
        assert (seen["prepared_count"], seen["literal_count"]) == (count, count)
        core = query(conn, "SELECT region, count(*) AS n FROM mesh.customer.profiles GROUP BY region ORDER BY region").to_pylist()
        assert seen["core"] == [[r["region"], r["n"]] for r in core]
        joined = query(
            conn,
            "SELECT p.region, count(*) AS orders FROM mesh.customer.profiles p "
            "JOIN mesh.order.transactions t ON t.customer_id = p.customer_id GROUP BY p.region ORDER BY p.region",
        ).to_pylist()
        assert seen["read_sql"] == [[r["region"], r["orders"]] for r in joined]
        total = query(conn, "SELECT count(*) AS n FROM mesh.order.transactions").column("n")[0].as_py()
        assert seen["all_rows"] == total
