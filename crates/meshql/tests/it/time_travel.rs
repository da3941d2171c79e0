//! Time travel: Delta versions and Iceberg snapshots by number and by time, in every spelling,
//! under the product's policies. Expected answers come from the generator's commits.

use meshql::contract::MeshDefinition;
use meshql::{Mesh, PolicySet, Principal};
use meshql_testdata::sample::{Sample, PRODUCTS_FIRST_COMMIT, SHIPMENTS_FIRST_COMMIT};

use crate::common::*;

fn count(n: usize) -> Vec<Vec<String>> {
    vec![vec![n.to_string()]]
}

/// (snapshot id, commit time in ms) of the sample's `product.inventory`, oldest first, read
/// from the table's newest metadata file.
fn inventory_snapshots() -> Vec<(i64, i64)> {
    let dir = sample_dir().join("domains/product/data/inventory/metadata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("metadata dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .collect();
    files.sort();
    let newest = files.last().expect("a metadata file");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest).expect("read metadata")).expect("json");
    let mut snapshots: Vec<(i64, i64)> = metadata["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            (
                s["snapshot-id"].as_i64().expect("id"),
                s["timestamp-ms"].as_i64().expect("ts"),
            )
        })
        .collect();
    snapshots.sort_by_key(|s| s.1);
    snapshots
}

/// An RFC 3339 time (meshql's own formatter: only the parsing side is under test here).
fn iso(ms: i64) -> String {
    meshql_catalog::time::rfc3339(ms)
}

#[tokio::test]
async fn delta_versions_in_every_spelling() {
    let mesh = sample_mesh();
    let s = Sample::generate();
    for sql in [
        "SELECT count(*) FROM mesh.product.catalog FOR VERSION AS OF 0",
        "SELECT count(*) FROM mesh.product.catalog VERSION AS OF 0",
        "select count(*) from mesh.product.catalog for version as of 0",
        "SELECT count(*) FROM mesh.product.\"catalog@v0\"",
        "SELECT count(*) FROM product.\"catalog@0\"",
    ] {
        assert_eq!(query(&mesh, sql).await, count(PRODUCTS_FIRST_COMMIT), "{sql}");
    }
    assert_eq!(
        query(&mesh, "SELECT count(*) FROM mesh.product.catalog FOR VERSION AS OF 1").await,
        count(s.products.len())
    );
    assert_eq!(
        query(&mesh, "SELECT count(*) FROM mesh.product.catalog").await,
        count(s.products.len()),
        "the served version is unchanged"
    );
    // two versions of one product in one query
    assert_eq!(
        query(
            &mesh,
            "SELECT (SELECT count(*) FROM mesh.\"order\".shipments FOR VERSION AS OF 1) - (SELECT count(*) FROM mesh.\"order\".shipments FOR VERSION AS OF 0)"
        )
        .await,
        count(s.shipments.len() - SHIPMENTS_FIRST_COMMIT)
    );
    // by time: far in the future is the latest; before the first commit there is nothing
    assert_eq!(
        query(
            &mesh,
            "SELECT count(*) FROM mesh.product.catalog FOR TIMESTAMP AS OF '2999-01-01'"
        )
        .await,
        count(s.products.len())
    );
    let e = query_error(
        &mesh,
        "SELECT count(*) FROM mesh.product.catalog FOR TIMESTAMP AS OF '2000-01-01'",
    )
    .await;
    assert!(
        e.contains("mesh.product.catalog@2000-01-01T00:00:00Z is unavailable"),
        "{e}"
    );
    let e = query_error(&mesh, "SELECT count(*) FROM mesh.product.catalog FOR VERSION AS OF 7").await;
    assert!(e.contains("mesh.product.catalog@v7 is unavailable"), "{e}");
    // Versions far beyond the newest are refused at once (delta-rs alone takes time linear in
    // the number: i64::MAX never ends).
    for v in [100_000_000i64, 2_147_483_648, i64::MAX] {
        let e = query_error(
            &mesh,
            &format!("SELECT count(*) FROM mesh.product.catalog FOR VERSION AS OF {v}"),
        )
        .await;
        assert!(e.contains(&format!("no Delta version {v} (the newest is")), "{e}");
    }
    // A clause after an alias is refused, never ignored (it used to read the newest version).
    let e = query_error(&mesh, "SELECT count(*) FROM mesh.product.catalog c FOR VERSION AS OF 0").await;
    assert!(e.contains("must directly follow a table name"), "{e}");
}

#[tokio::test]
async fn iceberg_snapshots_by_id_and_by_time() {
    let mesh = sample_mesh();
    let s = Sample::generate();
    let first_commit = s.inventory.iter().filter(|i| i.warehouse != "SIN").count();
    let snapshots = inventory_snapshots();
    assert_eq!(snapshots.len(), 2);
    let (first, first_ms) = snapshots[0];
    let (second, second_ms) = snapshots[1];
    assert_eq!(
        query(
            &mesh,
            &format!("SELECT count(*) FROM mesh.product.inventory FOR VERSION AS OF {first}")
        )
        .await,
        count(first_commit)
    );
    assert_eq!(
        query(
            &mesh,
            &format!("SELECT count(*) FROM mesh.product.\"inventory@v{second}\"")
        )
        .await,
        count(s.inventory.len())
    );
    if first_ms < second_ms {
        let sql = format!(
            "SELECT count(*) FROM mesh.product.inventory FOR TIMESTAMP AS OF '{}'",
            iso(first_ms)
        );
        assert_eq!(query(&mesh, &sql).await, count(first_commit), "{sql}");
    }
    let e = query_error(
        &mesh,
        "SELECT count(*) FROM mesh.product.inventory FOR VERSION AS OF 12345",
    )
    .await;
    assert!(e.contains("no snapshot 12345"), "{e}");
    let e = query_error(
        &mesh,
        "SELECT count(*) FROM mesh.product.inventory FOR SYSTEM_TIME AS OF '1999-12-31'",
    )
    .await;
    assert!(e.contains("no snapshot at or before 1999-12-31T00:00:00Z"), "{e}");
}

#[tokio::test]
async fn versions_are_read_under_the_products_policies() {
    let s = Sample::generate();
    let policies = r#"
rules:
  - { name: read, principals: { groups: [readers] }, resource: "*", grant: [select] }
  - { name: dhl-only, principals: "*", resource: order.shipments, rowFilter: "carrier = 'DHL'" }
  - { name: no-orders-for-contractors, principals: { groups: [contractors] }, resource: order.*, deny: [select] }
"#;
    let def = MeshDefinition::load(sample_dir()).expect("sample loads");
    let mesh = Mesh::with_policies(def, PolicySet::from_yaml(policies, &[]).expect("policies")).expect("mesh");
    let reader = Principal::new("r").with_group("readers");
    let dhl_first = s.shipments[..SHIPMENTS_FIRST_COMMIT]
        .iter()
        .filter(|x| x.carrier == "DHL")
        .count();
    for sql in [
        "SELECT count(*) FROM mesh.\"order\".shipments FOR VERSION AS OF 0",
        "SELECT count(*) FROM mesh.\"order\".\"shipments@v0\"",
        "SELECT count(*) FROM (SELECT * FROM mesh.\"order\".shipments FOR VERSION AS OF 0) x",
    ] {
        assert_eq!(
            query_as(&mesh, reader.clone(), sql).await.expect(sql),
            count(dhl_first),
            "{sql}"
        );
    }
    // the filter is not bypassed by asking for the other carriers
    assert_eq!(
        query_as(
            &mesh,
            reader.clone(),
            "SELECT count(*) FROM mesh.\"order\".shipments FOR VERSION AS OF 0 WHERE carrier <> 'DHL'"
        )
        .await
        .expect("filtered"),
        count(0)
    );
    // refused now, refused at every version
    let contractor = Principal::new("c").with_groups(["readers", "contractors"]);
    for sql in [
        "SELECT count(*) FROM mesh.\"order\".shipments FOR VERSION AS OF 0",
        "SELECT count(*) FROM mesh.\"order\".\"shipments@v1\"",
    ] {
        let e = query_as(&mesh, contractor.clone(), sql).await.expect_err(sql);
        assert!(
            e.contains("access denied") && e.contains("no-orders-for-contractors"),
            "{e}"
        );
    }
    // a product the principal may not discover does not exist at any version either
    let nobody = Principal::new("n");
    let hidden = query_as(&mesh, nobody.clone(), "SELECT 1 FROM mesh.product.catalog")
        .await
        .expect_err("hidden");
    let hidden_v0 = query_as(&mesh, nobody, "SELECT 1 FROM mesh.product.catalog FOR VERSION AS OF 0")
        .await
        .expect_err("hidden");
    let kind = |e: &str| {
        if e.contains("access denied") {
            "denied"
        } else {
            "unknown"
        }
    };
    assert_eq!(kind(&hidden), kind(&hidden_v0), "{hidden} / {hidden_v0}");
}

#[tokio::test]
async fn parquet_products_and_bad_versions_fail_clearly() {
    let mesh = sample_mesh();
    let e = query_error(&mesh, "SELECT * FROM mesh.customer.profiles FOR VERSION AS OF 1").await;
    assert!(e.contains("has no versions"), "{e}");
    let e = query_error(&mesh, "SELECT * FROM mesh.product.\"catalog@yesterday\"").await;
    assert!(e.contains("neither a version"), "{e}");
    let e = query_error(&mesh, "SELECT * FROM mesh.product.catalog FOR VERSION AS OF 'x'").await;
    assert!(e.contains("a version is a number"), "{e}");
    // a port pinned by its contract serves its version and no other
    let e = query_error(
        &mesh,
        "SELECT * FROM mesh.interop.deltars_events_first_commit FOR VERSION AS OF 1",
    )
    .await;
    assert!(e.contains("pins this output port to version 0"), "{e}");
    assert_eq!(
        query(
            &mesh,
            "SELECT count(*) FROM mesh.interop.deltars_events_first_commit FOR VERSION AS OF 0"
        )
        .await,
        query(&mesh, "SELECT count(*) FROM mesh.interop.deltars_events_first_commit").await
    );
    // one product at two versions, joined
    assert_eq!(
        query(
            &mesh,
            "SELECT count(*) FROM mesh.product.catalog FOR VERSION AS OF 0 a JOIN mesh.product.catalog b USING (product_id)"
        )
        .await,
        count(PRODUCTS_FIRST_COMMIT)
    );
}
