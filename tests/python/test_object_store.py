"""The sample mesh served over Flight SQL from a real S3 server.

`s3s-fs` (a real S3 protocol server, installed by scripts/test.sh) runs on 127.0.0.1; pyarrow's
S3 client (another implementation than meshql's) uploads the sample mesh's data; the local data is
deleted from the mesh copy; `meshql serve` reads everything over S3 with the settings
docker-compose.yml uses. ADBC answers must equal the embedded answers on the local sample mesh,
for an analyst and for a row-filtered, masked support agent; the secret appears in no answer,
metadata response or server log (at debug level).
"""

import os
import pathlib
import shutil
import subprocess

import pyarrow.fs as pafs
import pytest

from servers import free_port, wait_for_port
from test_flight import SUPPORT, Server, connect, embedded, plain, query

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "AKIDMESHQLPYTEST"
SECRET = "py-s3-secret-never-shown-42"


def s3s_binary():
    found = os.environ.get("MESHQL_S3S_FS") or shutil.which("s3s-fs")
    if not found:
        candidate = pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo")) / "bin" / "s3s-fs"
        found = str(candidate) if candidate.is_file() else None
    if not found:
        pytest.fail("s3s-fs is not installed: cargo install s3s-fs@0.14.1 --features binary --locked (scripts/test.sh does)")
    return found


@pytest.fixture()
def s3(tmp_path):
    storage = tmp_path / "s3"
    (storage / "meshql").mkdir(parents=True)  # the bucket: the server's own set-up
    port = free_port()
    proc = subprocess.Popen(
        [s3s_binary(), "--host", "127.0.0.1", "--port", str(port), "--access-key", KEY, "--secret-key", SECRET, str(storage)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, "s3s-fs")
    yield f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def test_flight_over_s3_equals_local_and_never_shows_the_secret(s3, meshql_bin, mesh_dir, mesh_copy, tmp_path, monkeypatch):
    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=s3, scheme="http", region="us-east-1")
    uploaded = 0
    for data in sorted((mesh_dir / "domains").glob("*/data")):
        domain = data.parent.name
        pafs.copy_files(str(data), f"meshql/mesh/domains/{domain}/data", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        shutil.rmtree(mesh_copy / "domains" / domain / "data")
        uploaded += 1
    assert uploaded >= 5
    settings = (ROOT / "testdata" / "docker" / "mesh.yaml").read_text().replace("http://minio:9000", f"http://{s3}")
    (mesh_copy / "mesh.yaml").write_text(settings)
    monkeypatch.setenv("MESHQL_S3_KEY", KEY)
    monkeypatch.setenv("MESHQL_S3_SECRET", SECRET)
    monkeypatch.setenv("RUST_LOG", "debug")
    log = tmp_path / "server.log"
    server = Server(meshql_bin, mesh_copy, tmp_path, log=log)
    seen = []
    try:
        cross = (
            "SELECT c.region, p.category, count(*) AS orders, sum(t.amount) AS revenue "
            "FROM mesh.order.transactions t JOIN mesh.customer.profiles c USING (customer_id) "
            "JOIN mesh.product.catalog p USING (product_id) JOIN mesh.order.shipments s ON s.order_id = t.order_id "
            "WHERE t.order_date IN (SELECT day FROM mesh.marketing.campaign_performance WHERE channel = 'email') "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        masked = "SELECT customer_id, full_name, email, region FROM mesh.customer.profiles ORDER BY customer_id"
        history = "SELECT count(*) AS n FROM mesh.product.inventory FOR VERSION AS OF 0"
        with connect(server, "alice") as conn:
            got = query(conn, cross)
            want = embedded(meshql_bin, mesh_dir, cross, ["--group", "analysts", "--group", "pii-readers"], tmp_path)
            assert got.num_rows > 0
            assert got.to_pylist() == plain(want).to_pylist()
            got = query(conn, "SELECT count(*) AS n FROM mesh.product.catalog FOR VERSION AS OF 0")
            want = embedded(meshql_bin, mesh_dir, "SELECT count(*) AS n FROM mesh.product.catalog FOR VERSION AS OF 0", ["--group", "analysts"], tmp_path)
            assert got.to_pylist() == want.to_pylist()
            # metadata RPCs and system tables
            seen.append(str(conn.adbc_get_objects(depth="all").read_all().to_pylist()))
            seen.append(str(conn.adbc_get_table_schema("inventory", db_schema_filter="product", catalog_filter="mesh")))
            ports = query(conn, "SELECT product, location FROM mesh.system.ports ORDER BY 1").to_pylist()
            assert all(p["location"].startswith("s3://meshql/mesh/") for p in ports), ports
            seen.append(str(ports))
            seen.append(str(query(conn, "SELECT * FROM mesh.system.products").to_pylist()))
            # an Iceberg snapshot that does not exist: an error for that query only
            with pytest.raises(Exception) as e:
                query(conn, history)
            seen.append(str(e.value))
            assert "no snapshot 0" in str(e.value)
        with connect(server, "sam") as conn:
            got = query(conn, masked)
            want = embedded(meshql_bin, mesh_dir, masked, SUPPORT, tmp_path)
            assert got.num_rows > 0
            assert got == plain(want)
    finally:
        server.stop()
    seen.append(log.read_text())
    assert "s3://meshql" in seen[-1] or "object store" in seen[-1], "the debug log shows S3 activity"
    for text in seen:
        assert SECRET not in text
