#!/usr/bin/env python3
"""The crate arrows hold, and no crate declares a dependency it does not use.

Arrows (normal dependencies between the workspace's crates), as README's "Layout" draws them:

    cli -> {meshql, flight}; flight -> meshql; meshql -> {catalog, policy, contract};
    catalog -> contract; policy -> contract; contract, testdata -> nothing of the workspace;
    benches -> {meshql, testdata}

Tests and benchmarks (dev-dependencies) may also use meshql-testdata. A declared dependency is
used when its library name appears in the crate's sources (`name::…`, `use name`), the way
cargo-machete finds them, without installing it; a crate that needs one only for its features
lists it under `[package.metadata.meshql] features-only = [...]` with a comment saying why.

Also: the crates `cargo run -p meshql-cli` builds (the README's first command) must be resolved
with the same features as in a workspace build with tests (`scripts/test.sh`), or each rebuilds
the other's workspace crates (a dev-dependency that turns on a default feature is enough).

Run by .ci/run before the build; exits 1 and names each violation.
"""

import json
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]

ALLOWED = {
    "meshql-cli": {"meshql", "meshql-flight"},
    "meshql-flight": {"meshql"},
    "meshql": {"meshql-catalog", "meshql-policy", "meshql-contract"},
    "meshql-catalog": {"meshql-contract"},
    "meshql-policy": {"meshql-contract"},
    "meshql-contract": set(),
    "meshql-testdata": set(),
    "meshql-benches": {"meshql", "meshql-testdata"},
}
DEV_EXTRA = {"meshql-testdata"}


def sources(package_dir, kinds):
    """The Rust sources of a package for dependency `kinds` (normal: src/ and build.rs; dev: also
    tests/, benches/, examples/)."""
    dirs = ["src"] + (["tests", "benches", "examples"] if "dev" in kinds else [])
    files = [package_dir / "build.rs"] if (package_dir / "build.rs").exists() else []
    for d in dirs:
        files += sorted((package_dir / d).rglob("*.rs")) if (package_dir / d).is_dir() else []
    # A package whose library or binaries live elsewhere (benches/: lib.rs at its root).
    files += [p for p in package_dir.glob("*.rs") if p.name != "build.rs"]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def features(*args):
    """Each package of a `cargo tree` (with `args`) and the features it is built with."""
    out = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "-f", "{p}|{f}", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        package, _, feats = line.partition("|")
        found.setdefault(package.strip(), set()).add(feats.replace("(*)", "").strip())
    return found


def unification_differences():
    cli = features("-p", "meshql-cli", "-e", "normal")
    workspace = features("--workspace", "-e", "normal,dev")
    return [
        f"{package}: built with features {sorted(cli[package])} by `cargo run -p meshql-cli` but "
        f"{sorted(workspace[package])} in a workspace build (align them in Cargo.toml)"
        for package in sorted(cli)
        if package in workspace and cli[package] != workspace[package]
    ]


def main():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = {p["name"] for p in meta["packages"]}
    problems = []
    for package in meta["packages"]:
        name = package["name"]
        manifest = pathlib.Path(package["manifest_path"])
        package_dir = manifest.parent
        allowed = ALLOWED.get(name)
        if allowed is None:
            problems.append(f"{name}: a new crate; give it its arrows in scripts/check-deps.py")
            continue
        declared = tomllib.loads(manifest.read_text(encoding="utf-8"))
        features_only = set(declared.get("package", {}).get("metadata", {}).get("meshql", {}).get("features-only", []))
        normal_src = sources(package_dir, {"normal"})
        dev_src = sources(package_dir, {"normal", "dev"})
        for dep in package["dependencies"]:
            dep_name, kind = dep["name"], dep["kind"] or "normal"
            if kind == "build":
                continue
            if dep_name in members:
                ok = allowed | (DEV_EXTRA if kind == "dev" else set())
                if dep_name not in ok:
                    problems.append(f"{name} -> {dep_name} ({kind}): not an arrow of the architecture")
            if dep_name in features_only:
                continue
            lib = (dep.get("rename") or dep_name).replace("-", "_")
            text = normal_src if kind == "normal" else dev_src
            if not re.search(rf"\b{re.escape(lib)}(::|\s*;|\s*as\b|\s*\{{|!)", text) and not re.search(
                rf"\buse\s+{re.escape(lib)}\b", text
            ):
                problems.append(f"{name}: declares {dep_name} ({kind}) but never uses it")
    problems += unification_differences()
    for p in problems:
        print(f"check-deps: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-deps: {len(meta['packages'])} crates, arrows hold, every dependency is used")


if __name__ == "__main__":
    main()
