use std::path::{Path, PathBuf};

use meshql::{Mesh, Principal};

/// A runtime whose two workers have the stack meshql's binaries give query threads.
pub fn query_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(meshql::limits::QUERY_THREAD_STACK)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A lookup another user runs after something hostile: it must still answer.
pub async fn bystander_answers(mesh: &Mesh) {
    assert_eq!(
        query(
            mesh,
            "SELECT count(*) FROM mesh.customer.profiles WHERE customer_id = 7"
        )
        .await,
        [["1"]]
    );
}

/// The committed sample mesh.
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/mesh")
}

pub fn sample_mesh() -> Mesh {
    Mesh::open(sample_dir()).expect("the sample mesh opens")
}

/// A private copy of the sample mesh, to break or to commit to. Being somewhere else, it also
/// exercises reading relocated Iceberg tables.
pub fn copy_of_sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&sample_dir(), dir.path());
    // Not the records other tests left in the committed mesh.
    let _ = std::fs::remove_dir_all(dir.path().join(".meshql"));
    dir
}

/// Adds `yaml` (top-level keys) to the end of the mesh's `mesh.yaml`.
pub fn add_to_mesh_yaml(dir: &Path, yaml: &str) {
    let path = dir.join("mesh.yaml");
    let text = std::fs::read_to_string(&path).expect("read mesh.yaml");
    std::fs::write(&path, format!("{text}\n{yaml}\n")).expect("write mesh.yaml");
}

pub fn copy_dir(from: &Path, to: &Path) {
    meshql_testdata::copy_dir(from, to).expect("copy the sample mesh");
}

/// Reads every product of the sample mesh unmasked (the sample policies grant `analysts`
/// select everywhere; `pii-readers` lifts the PII masks).
pub fn analyst() -> Principal {
    Principal::new("test-analyst").with_groups(["analysts", "pii-readers"])
}

/// An administrator who can also read everything: sees physical plans in EXPLAIN.
pub fn admin() -> Principal {
    Principal::new("test-admin").with_groups(["platform-admins", "analysts", "pii-readers"])
}

/// Runs `sql` as `principal` and returns the rows, or the error text.
pub async fn query_as(mesh: &Mesh, principal: Principal, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let result = mesh.session(principal).sql(sql).await.map_err(|e| e.to_string())?;
    let batches = result.collect().await.map_err(|e| e.to_string())?;
    Ok(rows(&batches))
}

/// Runs `sql` and returns the rows as strings (Arrow's display formatting).
pub async fn query(mesh: &Mesh, sql: &str) -> Vec<Vec<String>> {
    let batches = mesh
        .session(analyst())
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\nfailed to plan: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}\nfailed to run: {e}"));
    rows(&batches)
}

/// The error text of a query expected to fail (at planning or while running).
pub async fn query_error(mesh: &Mesh, sql: &str) -> String {
    match mesh.session(analyst()).sql(sql).await {
        Err(e) => e.to_string(),
        Ok(q) => match q.collect().await {
            Err(e) => e.to_string(),
            Ok(b) => panic!(
                "{sql}\nunexpectedly succeeded with {} rows",
                b.iter().map(|b| b.num_rows()).sum::<usize>()
            ),
        },
    }
}

pub use meshql_testdata::rows;

/// The EXPLAIN text (logical and physical plan) of `sql`.
pub async fn explain(mesh: &Mesh, sql: &str) -> String {
    query_as(mesh, admin(), &format!("EXPLAIN {sql}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
        .into_iter()
        .map(|r| r.join("\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Cents as the decimal text Arrow prints for scale 2.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

pub fn date(days: i32) -> String {
    meshql_testdata::write::iso_date(days)
}

// The sample mesh's principals (`testdata/mesh/policies.yaml` and the domains' `policies.yaml`).

/// Analyst without PII rights: PII masked.
pub fn ana() -> Principal {
    Principal::new("ana").with_group("analysts")
}

/// Support agent in EU: her region's customers plus business accounts, some columns only.
pub fn sam() -> Principal {
    Principal::new("sam")
        .with_group("support")
        .with_attribute("region", "EU")
}

/// Contractor: no customer data, no interop products, no confidential columns.
pub fn carl() -> Principal {
    Principal::new("carl").with_group("contractors")
}

/// Authenticated, in no group: may discover, may read nothing.
pub fn nobody() -> Principal {
    Principal::new("nobody")
}

/// Regional analyst in APAC: the tag row filter on `region-scoped` columns applies.
pub fn rita() -> Principal {
    Principal::new("rita")
        .with_groups(["analysts", "regional-analysts"])
        .with_attribute("region", "APAC")
}
