"""meshql's answers against DuckDB's on the same files.

DuckDB reads the Parquet files directly; for Delta tables, the `deltalake` Python package says
which files are live; for the (append-only) Iceberg tables every data file is live. So the
expected answers are computed by other engines and readers than meshql's.
"""

import decimal
import hashlib
import hmac
import subprocess

import duckdb
import pyarrow.ipc as ipc
import pytest
from deltalake import DeltaTable

CROSS_DOMAIN = """
SELECT c.region, p.category, count(*) AS orders, sum(t.amount) AS revenue
FROM {transactions} t
JOIN {profiles} c ON t.customer_id = c.customer_id
JOIN {catalog} p ON t.product_id = p.product_id
JOIN {shipments} s ON s.order_id = t.order_id
WHERE s.status = 'delivered'
GROUP BY c.region, p.category
ORDER BY c.region, p.category
"""

MARKETING = """
SELECT m.day, m.spend, sum(t.amount) AS revenue
FROM (SELECT day, sum(spend) AS spend FROM {campaigns} GROUP BY day) m
JOIN {transactions} t ON t.order_date = m.day
GROUP BY m.day, m.spend
ORDER BY m.day
"""

MESHQL_TABLES = {
    "transactions": "mesh.order.transactions",
    "profiles": "mesh.customer.profiles",
    "catalog": "mesh.product.catalog",
    "shipments": "mesh.order.shipments",
    "campaigns": "mesh.marketing.campaign_performance",
}


def duckdb_tables(mesh):
    data = lambda d, p: mesh / "domains" / d / "data" / p  # noqa: E731

    def delta(path):
        files = ", ".join(f"'{u}'" for u in DeltaTable(str(path)).file_uris())
        return f"read_parquet([{files}], hive_partitioning = true)"

    return {
        "transactions": f"read_parquet('{data('order', 'transactions')}/*/*.parquet', hive_partitioning = true)",
        "profiles": f"read_parquet('{data('customer', 'profiles.parquet')}')",
        "catalog": delta(data("product", "catalog")),
        "shipments": delta(data("order", "shipments")),
        "campaigns": f"read_parquet('{data('marketing', 'campaign_performance')}/data/*/*.parquet')",
    }


# The sample policies let `analysts` read every product; `pii-readers` lifts the PII masks.
ANALYST = ["--group", "analysts", "--group", "pii-readers"]


def meshql_rows(meshql_bin, mesh, sql, tmp_path, principal=ANALYST):
    out = tmp_path / "result.arrow"
    subprocess.run(
        [meshql_bin, "query", "--mesh", str(mesh), *principal, "--format", "arrow", "--output", str(out), sql],
        check=True,
        capture_output=True,
        text=True,
    )
    with ipc.open_file(out) as reader:
        table = reader.read_all()
    return [tuple(r.values()) for r in table.to_pylist()]


def normalise(rows):
    return [tuple(str(v) if isinstance(v, decimal.Decimal) else v for v in r) for r in rows]


@pytest.mark.parametrize("query", [CROSS_DOMAIN, MARKETING], ids=["cross_domain", "marketing"])
def test_meshql_agrees_with_duckdb(meshql_bin, mesh_dir, tmp_path, query):
    expected = duckdb.sql(query.format(**duckdb_tables(mesh_dir))).fetchall()
    got = meshql_rows(meshql_bin, mesh_dir, query.format(**MESHQL_TABLES), tmp_path)
    assert len(expected) > 5
    assert normalise(got) == normalise(expected)


def test_cli_reports_a_broken_product_and_serves_the_rest(meshql_bin, mesh_copy, tmp_path):
    contract = mesh_copy / "domains" / "order" / "contracts" / "shipments.odcs.yaml"
    contract.write_text(contract.read_text().replace("- name: status", "- name: state"))
    check = subprocess.run([meshql_bin, "check", "--mesh", str(mesh_copy)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "FAILED  mesh.order.shipments" in check.stdout
    assert "`state` is in the contract but not in storage" in check.stdout

    broken = subprocess.run(
        [meshql_bin, "query", "--mesh", str(mesh_copy), *ANALYST, "SELECT * FROM mesh.order.shipments"],
        capture_output=True,
        text=True,
    )
    assert broken.returncode != 0
    assert "mesh.order.shipments is unavailable" in broken.stderr
    assert "order-platform-team" in broken.stderr

    rows = meshql_rows(meshql_bin, mesh_copy, "SELECT count(*) AS n FROM mesh.order.transactions", tmp_path)
    assert rows == [(2000,)]


def test_masks_and_row_filters_match_an_independent_computation(meshql_bin, mesh_dir, tmp_path):
    """A support agent in EU: the sample's policies, recomputed here with Python's hmac and DuckDB."""
    key = (mesh_dir / "secrets" / "demo-hash.key").read_bytes().strip()
    profiles = mesh_dir / "domains" / "customer" / "data" / "profiles.parquet"
    expected = [
        (cid, hmac.new(key, email.encode(), hashlib.sha256).hexdigest(), "*" * (len(phone) - 4) + phone[-4:], region)
        for cid, email, phone, region in duckdb.sql(
            f"SELECT customer_id, email, phone, region FROM read_parquet('{profiles}') "
            "WHERE (region = 'EU' OR segment = 'business') AND customer_id > 0 ORDER BY customer_id"
        ).fetchall()
    ]
    got = meshql_rows(
        meshql_bin,
        mesh_dir,
        "SELECT customer_id, email, phone, region FROM mesh.customer.profiles ORDER BY customer_id",
        tmp_path,
        principal=["--user", "sam", "--group", "support", "--attr", "region=EU"],
    )
    assert got == expected
    assert 0 < len(got) < 200


def test_a_denied_query_fails_and_names_whom_to_ask(meshql_bin, mesh_dir):
    denied = subprocess.run(
        [meshql_bin, "query", "--mesh", str(mesh_dir), "--group", "contractors", "SELECT * FROM mesh.customer.profiles"],
        capture_output=True,
        text=True,
    )
    assert denied.returncode != 0
    assert "access denied" in denied.stderr and "customer-data-team" in denied.stderr, denied.stderr
