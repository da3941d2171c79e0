import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MESH = ROOT / "testdata" / "mesh"


@pytest.fixture(scope="session")
def meshql_bin() -> str:
    """The meshql binary built by scripts/test.sh (or MESHQL_BIN)."""
    path = os.environ.get("MESHQL_BIN") or str(ROOT / "target" / "debug" / "meshql")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"meshql binary not found at {path}; build it with `cargo build -p meshql-cli`")
    return path


@pytest.fixture(scope="session")
def mesh_dir() -> pathlib.Path:
    return MESH


@pytest.fixture()
def mesh_copy(tmp_path) -> pathlib.Path:
    dest = tmp_path / "mesh"
    # Not the records (audit trail, quality results) other runs left in the committed mesh.
    shutil.copytree(MESH, dest, ignore=shutil.ignore_patterns(".meshql"))
    return dest
