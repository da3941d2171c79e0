//! Broken contracts, drifted schemas, missing and corrupt files, name collisions: each breaks
//! only its own product, with a message that says what and where, and the rest of the mesh
//! keeps answering.

use std::path::Path;

use meshql::Mesh;

use crate::common::*;

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

/// The rest of the mesh still answers, exactly.
async fn rest_still_answers(mesh: &Mesh) {
    let got = query(mesh, "SELECT count(*) FROM mesh.marketing.campaign_performance").await;
    assert_eq!(got, vec![vec!["186".to_string()]]);
    let got = query(
        mesh,
        "SELECT count(*) FROM mesh.order.transactions t JOIN mesh.product.catalog p USING (product_id)",
    )
    .await;
    assert_eq!(got, vec![vec!["2000".to_string()]]);
}

#[tokio::test]
async fn a_contract_that_breaks_its_json_schema_is_rejected_with_file_field_and_reason() {
    let dir = copy_of_sample();
    let contract = dir.path().join("domains/customer/contracts/profiles.odcs.yaml");
    edit(&contract, "logicalType: date", "logicalType: calendar-day");
    let mesh = Mesh::open(dir.path()).expect("the mesh still opens");
    let err = query_error(&mesh, "SELECT * FROM mesh.customer.profiles").await;
    assert!(err.contains("mesh.customer.profiles is unavailable"), "{err}");
    assert!(err.contains("profiles.odcs.yaml"), "{err}");
    assert!(err.contains("/schema/0/properties/4/logicalType"), "{err}");
    assert!(err.contains("calendar-day"), "{err}");
    assert!(err.contains("customer-data-team"), "whom to ask: {err}");
    let report = mesh.check(&meshql::CheckOptions::default()).await;
    assert!(!report.is_ok());
    rest_still_answers(&mesh).await;
}

#[tokio::test]
async fn a_product_descriptor_that_breaks_odps_is_reported_under_its_name() {
    let dir = copy_of_sample();
    let product = dir.path().join("domains/order/products/shipments.odps.yaml");
    edit(&product, "status: active", "status: active\nshippingColour: blue");
    let mesh = Mesh::open(dir.path()).expect("opens");
    let err = query_error(&mesh, "SELECT * FROM mesh.order.shipments").await;
    assert!(
        err.contains("shipments.odps.yaml") && err.contains("shippingColour"),
        "{err}"
    );
    rest_still_answers(&mesh).await;
}

#[tokio::test]
async fn schema_drift_makes_only_that_product_unavailable() {
    let dir = copy_of_sample();
    // a renamed column and a changed type
    edit(
        &dir.path().join("domains/product/contracts/catalog.odcs.yaml"),
        "- name: sku",
        "- name: stock_keeping_unit",
    );
    edit(
        &dir.path().join("domains/product/contracts/inventory.odcs.yaml"),
        "- name: quantity\n        logicalType: integer",
        "- name: quantity\n        logicalType: string",
    );
    let mesh = Mesh::open(dir.path()).expect("opens");
    let err = query_error(&mesh, "SELECT product_id FROM mesh.product.catalog").await;
    assert!(
        err.contains("`stock_keeping_unit` is in the contract but not in storage"),
        "{err}"
    );
    assert!(err.contains("sku"), "lists what storage has: {err}");
    let err = query_error(&mesh, "SELECT product_id FROM mesh.product.inventory").await;
    assert!(
        err.contains("column `quantity`: the contract says string, storage has Int32"),
        "{err}"
    );
    let got = query(&mesh, "SELECT count(*) FROM mesh.marketing.campaign_performance").await;
    assert_eq!(got, vec![vec!["186".to_string()]]);
    let got = query(&mesh, "SELECT count(*) FROM mesh.order.transactions").await;
    assert_eq!(got, vec![vec!["2000".to_string()]]);
}

#[tokio::test]
async fn missing_and_corrupt_storage_fail_alone() {
    let dir = copy_of_sample();
    std::fs::remove_file(dir.path().join("domains/customer/data/profiles.parquet")).expect("rm");
    std::fs::remove_dir_all(dir.path().join("domains/order/data/shipments/_delta_log")).expect("rm");
    std::fs::write(
        dir.path().join("domains/interop/data/pyarrow_events/part-1.parquet"),
        b"not parquet at all",
    )
    .expect("corrupt");
    let mesh = Mesh::open(dir.path()).expect("opens");

    let err = query_error(&mesh, "SELECT count(*) FROM mesh.customer.profiles").await;
    assert!(
        err.contains("mesh.customer.profiles is unavailable") && err.contains("profiles"),
        "{err}"
    );
    let err = query_error(&mesh, "SELECT count(*) FROM mesh.order.shipments").await;
    assert!(err.contains("mesh.order.shipments is unavailable"), "{err}");
    assert!(err.to_lowercase().contains("delta"), "{err}");
    let err = query_error(&mesh, "SELECT count(*) FROM mesh.interop.pyarrow_events").await;
    assert!(err.contains("pyarrow_events"), "{err}");

    let report = mesh.check(&meshql::CheckOptions::default()).await;
    let failed: Vec<&str> = report
        .products
        .iter()
        .filter(|p| matches!(p.status, meshql::ProductStatus::Unavailable(_)))
        .map(|p| p.table.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "mesh.customer.profiles",
            "mesh.interop.pyarrow_events",
            "mesh.order.shipments"
        ]
    );
    let got = query(&mesh, "SELECT count(*) FROM mesh.product.inventory").await;
    assert_eq!(got, vec![vec!["150".to_string()]]);
    let got = query(&mesh, "SELECT count(*) FROM mesh.order.transactions").await;
    assert_eq!(got, vec![vec!["2000".to_string()]]);
}

#[tokio::test]
async fn colliding_table_names_are_rejected_at_load() {
    let dir = copy_of_sample();
    let products = dir.path().join("domains/customer/products");
    let text = std::fs::read_to_string(products.join("profiles.odps.yaml")).expect("read");
    let twin = text
        .replace(
            "id: urn:dataproduct:customer:profiles",
            "id: urn:dataproduct:customer:profiles-2",
        )
        .replace("name: profiles\n", "name: Profiles!\n");
    std::fs::write(products.join("profiles-copy.odps.yaml"), twin).expect("write");
    let mesh = Mesh::open(dir.path()).expect("opens");
    let err = query_error(&mesh, "SELECT * FROM mesh.customer.profiles").await;
    assert!(err.contains("would be defined 2 times"), "{err}");
    assert!(
        err.contains("profiles-copy.odps.yaml") && err.contains("profiles.odps.yaml"),
        "{err}"
    );
    rest_still_answers(&mesh).await;
}

#[tokio::test]
async fn a_product_in_the_wrong_domain_is_refused() {
    let dir = copy_of_sample();
    edit(
        &dir.path().join("domains/order/products/shipments.odps.yaml"),
        "domain: order",
        "domain: logistics",
    );
    let mesh = Mesh::open(dir.path()).expect("opens");
    let err = query_error(&mesh, "SELECT * FROM mesh.order.shipments").await;
    assert!(
        err.contains("belongs to domain \"logistics\"") && err.contains("/domain"),
        "{err}"
    );
}

#[tokio::test]
async fn a_directory_that_is_not_a_mesh_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Mesh::open(dir.path()).expect_err("not a mesh");
    assert!(err.to_string().contains("mesh.yaml"), "{err}");
}

#[tokio::test]
async fn whom_to_ask_falls_back_to_the_contract_support_channel() {
    let dir = copy_of_sample();
    edit(
        &dir.path().join("domains/product/products/catalog.odps.yaml"),
        "support:\n  - channel: \"#merchandising-data\"\n    url: https://chat.example.com/channels/merchandising-data\n",
        "",
    );
    edit(
        &dir.path().join("domains/product/contracts/catalog.odcs.yaml"),
        "- name: sku",
        "- name: stock_keeping_unit",
    );
    let mesh = Mesh::open(dir.path()).expect("opens");
    let err = query_error(&mesh, "SELECT * FROM mesh.product.catalog").await;
    assert!(
        err.contains(
            "contact the product owner: merchandising-team, https://chat.example.com/channels/merchandising-data"
        ),
        "{err}"
    );
}

/// `engine:` options in mesh.yaml reach every session; a bad one stops the mesh from opening, and
/// on a live reload it is rejected while the previous settings keep serving.
#[tokio::test]
async fn engine_options_apply_and_a_bad_one_fails_alone() {
    let dir = copy_of_sample();
    let settings = dir.path().join("mesh.yaml");
    let original = std::fs::read_to_string(&settings).expect("mesh.yaml");
    let show = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";

    std::fs::write(
        &settings,
        format!("{original}\nengine:\n  datafusion.execution.batch_size: 1234\n"),
    )
    .expect("write");
    let mesh = Mesh::open(dir.path()).expect("opens with a valid engine option");
    assert_eq!(query(&mesh, show).await, vec![vec!["1234".to_string()]]);
    let answer = query(&mesh, "SELECT count(*) FROM mesh.customer.profiles").await;

    std::fs::write(
        &settings,
        format!("{original}\nengine:\n  datafusion.execution.batch_sise: 1234\n"),
    )
    .expect("write");
    let err = Mesh::open(dir.path()).expect_err("unknown option").to_string();
    assert!(err.contains("engine option `datafusion.execution.batch_sise`"), "{err}");
    // the running mesh rejects the same edit and keeps its settings and answers
    let outcome = mesh.reload().await;
    assert_eq!(outcome.rejected, vec!["mesh"], "{outcome:?}");
    assert_eq!(query(&mesh, show).await, vec![vec!["1234".to_string()]]);
    assert_eq!(
        query(&mesh, "SELECT count(*) FROM mesh.customer.profiles").await,
        answer
    );
}

#[tokio::test]
async fn a_delta_port_without_a_log_says_it_is_not_a_delta_table() {
    let dir = copy_of_sample();
    let d = dir.path();
    for (name, make) in [("no_log", false), ("empty_log", true)] {
        let data = d.join(format!("domains/marketing/data/{name}"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::copy(
            d.join("domains/customer/data/profiles.parquet"),
            data.join("part-0.parquet"),
        )
        .expect("a file");
        if make {
            std::fs::create_dir_all(data.join("_delta_log")).expect("log dir");
        }
        std::fs::write(
            d.join(format!("domains/marketing/products/{name}.odps.yaml")),
            format!("apiVersion: v1.0.0\nkind: DataProduct\nid: urn:dataproduct:marketing:{name}\nname: {name}\nstatus: active\ndomain: marketing\noutputPorts:\n  - {{name: main, version: 1.0.0, contractId: urn:datacontract:marketing:{name}}}\n"),
        )
        .expect("descriptor");
        std::fs::write(
            d.join(format!("domains/marketing/contracts/{name}.odcs.yaml")),
            format!("apiVersion: v3.1.0\nkind: DataContract\nid: urn:datacontract:marketing:{name}\nversion: 1.0.0\nstatus: active\nservers:\n  - {{server: local, type: local, format: delta, path: domains/marketing/data/{name}}}\nschema:\n  - name: {name}\n    properties:\n      - {{name: customer_id, logicalType: integer}}\n"),
        )
        .expect("contract");
    }
    let mesh = Mesh::open(d).expect("opens");
    for name in ["no_log", "empty_log"] {
        let err = query_error(&mesh, &format!("SELECT * FROM mesh.marketing.{name}")).await;
        assert!(
            err.contains("not a Delta table (no readable _delta_log)"),
            "{name}: {err}"
        );
    }
    rest_still_answers(&mesh).await;
}
