//! The `meshql` binary, run as a user would run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mesh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/mesh")
}

/// Runs `meshql`; `query` runs as an analyst who may read the whole sample mesh unmasked.
fn meshql(args: &[&str]) -> Output {
    let mut args: Vec<&str> = args.to_vec();
    if args.first() == Some(&"query") {
        args.splice(1..1, ["--group", "analysts", "--group", "pii-readers"]);
    }
    Command::new(env!("CARGO_BIN_EXE_meshql"))
        .args(args)
        .env_remove("MESHQL_MESH")
        .output()
        .expect("run meshql")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const REGION_COUNTS: &str = "SELECT region, count(*) AS n FROM mesh.customer.profiles GROUP BY region ORDER BY region";

#[test]
fn query_prints_a_table() {
    let m = mesh();
    let o = meshql(&["query", "--mesh", m.to_str().unwrap(), REGION_COUNTS]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| region | n "), "{out}");
    assert!(out.contains("| APAC "), "{out}");
    assert!(out.trim_end().ends_with("4 rows"), "{out}");
}

#[test]
fn query_writes_csv_json_arrow_and_parquet() {
    let m = mesh();
    let m = m.to_str().unwrap();
    let csv = meshql(&["query", "-m", m, "-f", "csv", REGION_COUNTS]);
    assert!(csv.status.success(), "{}", stderr(&csv));
    let csv = stdout(&csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "region,n");
    assert_eq!(lines.len(), 5);

    let json = meshql(&["query", "-m", m, "-f", "json", REGION_COUNTS]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("a JSON array");
    let rows = parsed.as_array().expect("array");
    assert_eq!(rows.len(), 4);
    let total: i64 = rows.iter().map(|r| r["n"].as_i64().expect("n")).sum();
    assert_eq!(total, 200);

    let dir = tempfile::tempdir().expect("tempdir");
    let arrow_path = dir.path().join("r.arrow");
    let o = meshql(&[
        "query",
        "-m",
        m,
        "-f",
        "arrow",
        "-o",
        arrow_path.to_str().unwrap(),
        REGION_COUNTS,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reader = arrow::ipc::reader::FileReader::try_new(std::fs::File::open(&arrow_path).unwrap(), None).unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 4);

    let pq_path = dir.path().join("r.parquet");
    let o = meshql(&[
        "query",
        "-m",
        m,
        "-f",
        "parquet",
        "-o",
        pq_path.to_str().unwrap(),
        REGION_COUNTS,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&pq_path).unwrap())
            .unwrap()
            .build()
            .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 4);

    let o = meshql(&["query", "-m", m, "-f", "parquet", REGION_COUNTS]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--output"), "{}", stderr(&o));
}

#[test]
fn catalog_list_and_show() {
    let m = mesh();
    let m = m.to_str().unwrap();
    let o = meshql(&["catalog", "list", "--mesh", m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "mesh.customer.profiles",
        "customer-data-team",
        "mesh.product.catalog",
        "delta",
        "mesh.product.inventory",
        "iceberg",
        "domains/order/data/transactions",
    ] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }

    let o = meshql(&["catalog", "show", "--mesh", m, "customer.profiles"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("urn:datacontract:customer:profiles"), "{out}");
    assert!(out.contains("email") && out.contains("pii"), "{out}");
    assert!(out.contains("storage matches the contract"), "{out}");

    let o = meshql(&["catalog", "show", "--mesh", m, "customer.nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no product mesh.customer.nope"), "{}", stderr(&o));
}

#[test]
fn check_reports_what_a_domain_team_must_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    meshql_testdata::copy_dir(&mesh(), dir.path()).expect("copy the sample mesh");
    let _ = std::fs::remove_dir_all(dir.path().join(".meshql"));
    let m = dir.path().to_str().unwrap();
    // The sample has products that pass and two that fail a quality check of severity error.
    let o = meshql(&["check", "--mesh", m]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("9 products ok, 2 failed, 0 documents not loaded"), "{out}");
    assert!(out.contains("ok      mesh.order.transactions"), "{out}");
    assert!(out.contains("FAILED  mesh.order.shipments"), "{out}");
    assert!(
        out.contains("quality FAILED  [error] shipped_date set for 90% of shipments: null values: 19.55 %, expected mustBeLessOrEqualTo 10"),
        "{out}"
    );
    assert!(out.contains("ask: order-platform-team"), "{out}");
    assert!(out.contains("FAILED  mesh.product.inventory"), "{out}");

    // One product, passing: exit 0.
    let o = meshql(&["check", "--mesh", m, "--product", "order.transactions"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("1 products ok, 0 failed"), "{}", stdout(&o));

    // JSON for scripts.
    let o = meshql(&["check", "--mesh", m, "--domain", "order", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(report["ok"], false);
    let products = report["products"].as_array().unwrap();
    assert_eq!(products.len(), 2);
    let shipments = products.iter().find(|p| p["table"] == "mesh.order.shipments").unwrap();
    let failed: Vec<&serde_json::Value> = shipments["quality"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["severity"], "error");

    // JUnit XML for CI: one suite per product, one failure.
    let junit = dir.path().join("report.xml");
    let o = meshql(&[
        "check",
        "--mesh",
        m,
        "--domain",
        "order",
        "--format",
        "junit",
        "--output",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("<testsuite name=\"mesh.order.shipments\" tests=\"4\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase name=\"quality: shipped_date set for 90% of shipments\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testsuite name=\"mesh.order.transactions\" tests=\"4\" failures=\"0\""),
        "{xml}"
    );

    // The results were kept, with history: two runs of the order domain above.
    let o = meshql(&[
        "query",
        "--mesh",
        m,
        "--user",
        "admin",
        "--group",
        "platform-admins",
        "--group",
        "analysts",
        "--format",
        "csv",
        "SELECT count(*) AS runs FROM mesh.system.quality WHERE check_name = 'order ids are unique'",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "runs\n4", "{}", stdout(&o));

    // A broken contract fails alone.
    std::fs::write(
        dir.path().join("domains/product/contracts/catalog.odcs.yaml"),
        "kind: DataContract\n",
    )
    .unwrap();
    let o = meshql(&["check", "--mesh", m, "--no-quality"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("catalog.odcs.yaml"), "{out}");
    assert!(out.contains("FAILED  mesh.product.catalog"), "{out}");
    assert!(out.contains("ok      mesh.order.shipments"), "{out}");

    let o = meshql(&["check", "--mesh", m, "--product", "order.nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no product mesh.order.nope"), "{}", stderr(&o));
}

#[test]
fn catalog_search_finds_products_by_text_owner_tag_and_classification() {
    let m = mesh();
    let m = m.to_str().unwrap();
    let o = meshql(&["catalog", "search", "--mesh", m, "e-mail"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mesh.customer.profiles"), "{}", stdout(&o));
    let o = meshql(&["catalog", "search", "--mesh", m, "--classification", "pii"]);
    let out = stdout(&o);
    assert!(
        out.contains("mesh.customer.profiles") && !out.contains("mesh.order.transactions"),
        "{out}"
    );
    let o = meshql(&["catalog", "search", "--mesh", m, "--owner", "order-platform-team"]);
    let out = stdout(&o);
    assert!(
        out.contains("mesh.order.shipments") && !out.contains("mesh.customer"),
        "{out}"
    );
    let o = meshql(&["catalog", "search", "--mesh", m, "--tag", "pii", "--domain", "order"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no product matches"));
}

#[test]
fn bad_invocations_explain_themselves() {
    let o = meshql(&["query", "--mesh", "/nonexistent", "SELECT 1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("mesh.yaml"), "{}", stderr(&o));

    let m = mesh();
    let o = meshql(&["query", "--mesh", m.to_str().unwrap(), "SELEC nonsense"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("error"), "{}", stderr(&o));

    let o = meshql(&["--help"]);
    assert!(stdout(&o).contains("query") && stdout(&o).contains("catalog") && stdout(&o).contains("check"));
}

#[test]
fn query_is_held_to_its_time_and_memory_limits() {
    let m = mesh();
    let m = m.to_str().unwrap();
    let o = meshql(&[
        "query",
        "--mesh",
        m,
        "--timeout",
        "1",
        "SELECT count(*) FROM range(100000000000)",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("time limit of 1 s"), "{}", stderr(&o));
    // Planning is under the limit too, even work that never yields (constant folding of a
    // computation that takes seconds in a debug build).
    let started = std::time::Instant::now();
    let o = meshql(&[
        "query",
        "--mesh",
        m,
        "--timeout",
        "1",
        "SELECT levenshtein(repeat('a', 16000), repeat('b', 16000))",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("time limit of 1 s"), "{}", stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let o = meshql(&[
        "query",
        "--mesh",
        m,
        "--memory",
        "1MiB",
        "SELECT array_agg(value) FROM range(10000000)",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("memory"), "{}", stderr(&o));
    let o = meshql(&["query", "--mesh", m, "--memory", "lots", "SELECT 1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a size"), "{}", stderr(&o));
    // Within the limits, as before.
    let o = meshql(&[
        "query",
        "--mesh",
        m,
        "--timeout",
        "60",
        "--memory",
        "256MiB",
        REGION_COUNTS,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
