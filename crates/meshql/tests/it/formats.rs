//! Per-format behaviour: pushdown and pruning shown by EXPLAIN, pinned versions, new commits seen
//! without a restart, relocated tables.

use std::path::Path;

use meshql::Mesh;
use meshql_testdata::sample::{Sample, FIRST_ORDER_DAY, PRODUCTS_FIRST_COMMIT};

use crate::common::*;

#[tokio::test]
async fn parquet_projection_filter_and_partition_pruning_reach_the_scan() {
    let mesh = sample_mesh();
    let plan = explain(
        &mesh,
        "SELECT customer_id FROM mesh.customer.profiles WHERE region = 'EU'",
    )
    .await;
    assert!(plan.contains("DataSourceExec"), "{plan}");
    assert!(plan.contains("projection=[customer_id, region]"), "{plan}");
    assert!(
        plan.contains("predicate=region@") && plan.contains(" = EU, pruning_predicate="),
        "{plan}"
    );

    // hive partitions: only the one day's directory is scanned
    let day = date(FIRST_ORDER_DAY + 4);
    let plan = explain(
        &mesh,
        &format!("SELECT sum(amount) FROM mesh.order.transactions WHERE order_date = DATE '{day}'"),
    )
    .await;
    assert!(plan.contains(&format!("order_date={day}/part-0.parquet")), "{plan}");
    assert_eq!(plan.matches("part-0.parquet").count(), 1, "{plan}");

    let s = Sample::generate();
    let expected: i64 = s
        .orders
        .iter()
        .filter(|o| o.order_date == FIRST_ORDER_DAY + 4)
        .map(|o| o.amount_cents)
        .sum();
    let got = query(
        &mesh,
        &format!("SELECT sum(amount) FROM mesh.order.transactions WHERE order_date = DATE '{day}'"),
    )
    .await;
    assert_eq!(got, vec![vec![money(expected)]]);
}

#[tokio::test]
async fn delta_projection_filter_and_partition_pruning_reach_the_scan() {
    let mesh = sample_mesh();
    let plan = explain(
        &mesh,
        "SELECT sku FROM mesh.product.catalog WHERE category = 'books' AND unit_price > 10",
    )
    .await;
    // the filter reaches delta-rs's scan, and only files of the `books` partition are read
    assert!(plan.contains("category=books"), "{plan}");
    for other in [
        "category=toys",
        "category=home",
        "category=sports",
        "category=electronics",
    ] {
        assert!(!plan.contains(other), "{other} should be pruned: {plan}");
    }
    assert!(plan.contains("unit_price"), "{plan}");
    assert!(
        !plan.contains("active"),
        "projection should drop unused columns: {plan}"
    );

    let s = Sample::generate();
    let mut expected: Vec<Vec<String>> = s
        .products
        .iter()
        .filter(|p| p.category == "books" && p.unit_price_cents > 1000)
        .map(|p| vec![p.sku.clone()])
        .collect();
    expected.sort();
    let got = query(
        &mesh,
        "SELECT sku FROM mesh.product.catalog WHERE category = 'books' AND unit_price > 10 ORDER BY sku",
    )
    .await;
    assert_eq!(got, expected);
}

#[tokio::test]
async fn iceberg_projection_and_filter_reach_the_scan() {
    let mesh = sample_mesh();
    let plan = explain(
        &mesh,
        "SELECT campaign_id, clicks FROM mesh.marketing.campaign_performance WHERE channel = 'email'",
    )
    .await;
    assert!(plan.contains("PartitionedIcebergScan"), "{plan}");
    assert!(plan.contains("predicate:[channel = \"email\"]"), "{plan}");
    assert!(plan.contains("projection:[campaign_id,channel,clicks]"), "{plan}");

    assert_email_clicks(&mesh).await;
}

/// The e-mail campaigns' clicks, read through a filter on the Iceberg partition column.
async fn assert_email_clicks(mesh: &Mesh) {
    let expected: i64 = Sample::generate()
        .campaigns
        .iter()
        .filter(|c| c.channel == "email")
        .map(|c| c.clicks)
        .sum();
    let got = query(
        mesh,
        "SELECT sum(clicks) FROM mesh.marketing.campaign_performance WHERE channel = 'email'",
    )
    .await;
    assert_eq!(got, vec![vec![expected.to_string()]]);
}

/// Writes `mesh.yaml` so every query checks for new commits.
fn refresh_always(dir: &Path) {
    let path = dir.join("mesh.yaml");
    let text = std::fs::read_to_string(&path).expect("mesh.yaml");
    let text = text.replace("metadataRefreshSeconds: 5", "metadataRefreshSeconds: 0");
    std::fs::write(&path, text).expect("write mesh.yaml");
}

/// delta-rs gives DataFusion column ranges only for the columns a query filters on; meshql adds
/// the log's ranges for the others (join keys, above all), as Inexact values, so join
/// estimates work. Without them DataFusion sees nothing for `product_id` and `sku` here.
#[tokio::test]
async fn delta_scans_know_every_columns_range_from_the_log() {
    use datafusion::common::stats::Precision;
    let mesh = sample_mesh();
    let sql = "SELECT product_id, sku FROM mesh.product.catalog";
    let plan = runnable(&mesh, sql).await;
    let stats = plan.plan().partition_statistics(None).expect("statistics");
    // The generator's products, not a query: an answer independent of meshql.
    let products = Sample::generate().products;
    let ids = products.iter().map(|p| p.product_id);
    let skus = products.iter().map(|p| p.sku.clone());
    let expected = vec![
        ids.clone().min().expect("products").to_string(),
        ids.max().expect("products").to_string(),
        skus.clone().min().expect("products"),
        skus.max().expect("products"),
    ];
    let shown = |p: &Precision<datafusion::common::ScalarValue>| match p {
        Precision::Inexact(v) => v.to_string(),
        other => panic!("expected an Inexact value, got {other:?}"),
    };
    let c = &stats.column_statistics;
    assert_eq!(
        vec![
            shown(&c[0].min_value),
            shown(&c[0].max_value),
            shown(&c[1].min_value),
            shown(&c[1].max_value)
        ],
        expected
    );
    // Rows from the log; no byte size (delta-rs's would be whole files' whatever the
    // projection), so join sides are compared by rows.
    assert_eq!(stats.num_rows.get_value(), Some(&products.len()));
    assert_eq!(stats.total_byte_size, Precision::Absent);
    // Never exact, so `min()` and `max()` are still computed from the data, not the log.
    let plan_text = explain(
        &mesh,
        "SELECT min(product_id), max(product_id) FROM mesh.product.catalog",
    )
    .await;
    assert!(plan_text.contains("AggregateExec"), "{plan_text}");
}

#[tokio::test]
async fn delta_commits_are_seen_without_restart() {
    let dir = copy_of_sample();
    refresh_always(dir.path());
    let log = dir.path().join("domains/product/data/catalog/_delta_log");
    let second = log.join("00000000000000000001.json");
    let held = dir.path().join("held-back.json");
    std::fs::rename(&second, &held).expect("hold back commit 1");

    let mesh = Mesh::open(dir.path()).expect("open");
    let count = "SELECT count(*) FROM mesh.product.catalog";
    assert_eq!(query(&mesh, count).await, vec![vec![PRODUCTS_FIRST_COMMIT.to_string()]]);

    std::fs::rename(&held, &second).expect("commit 1 arrives");
    assert_eq!(query(&mesh, count).await, vec![vec!["50".to_string()]]);
}

#[tokio::test]
async fn iceberg_commits_are_seen_without_restart_and_moved_tables_are_read() {
    let dir = copy_of_sample();
    refresh_always(dir.path());
    let metadata = dir.path().join("domains/product/data/inventory/metadata");
    let mut files: Vec<_> = std::fs::read_dir(&metadata)
        .expect("metadata dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .collect();
    files.sort();
    let newest = files.pop().expect("a metadata file");
    let held = dir.path().join("held-back.metadata.json");
    std::fs::rename(&newest, &held).expect("hold back the newest metadata");

    // the copy lives elsewhere than where the table was written: reading it needs relocation
    let mesh = Mesh::open(dir.path()).expect("open");
    let q = "SELECT warehouse, count(*) FROM mesh.product.inventory GROUP BY warehouse ORDER BY warehouse";
    assert_eq!(
        query(&mesh, q).await,
        vec![vec!["AMS".to_string(), "50".into()], vec!["NYC".into(), "50".into()]]
    );
    std::fs::rename(&held, &newest).expect("the commit arrives");
    assert_eq!(
        query(&mesh, q).await,
        vec![
            vec!["AMS".to_string(), "50".into()],
            vec!["NYC".into(), "50".into()],
            vec!["SIN".into(), "50".into()]
        ]
    );
}

#[tokio::test]
async fn pinned_versions_stay_put() {
    let mesh = sample_mesh();
    // deltars_events: version 0 holds events 0..400, the latest all 600; same for pyiceberg
    for (table, n) in [
        ("interop.deltars_events_first_commit", 400),
        ("interop.deltars_events_latest", 600),
        ("interop.pyiceberg_events_first_snapshot", 400),
        ("interop.pyiceberg_events_latest", 600),
    ] {
        let got = query(&mesh, &format!("SELECT count(*), max(event_id) FROM mesh.{table}")).await;
        assert_eq!(got, vec![vec![n.to_string(), (n - 1).to_string()]], "{table}");
    }
}

/// Adds a product to the `product` domain of a mesh copy, served from `path` in `format`, with
/// the inventory contract's columns.
fn add_inventory_variant(mesh: &Path, name: &str, format: &str, path: &str) {
    let domain = mesh.join("domains/product");
    let contract = std::fs::read_to_string(domain.join("contracts/inventory.odcs.yaml")).expect("read");
    let contract = contract
        .replace(
            "id: urn:datacontract:product:inventory",
            &format!("id: urn:datacontract:product:{name}"),
        )
        .replace("format: iceberg", &format!("format: {format}"))
        .replace("path: domains/product/data/inventory", &format!("path: {path}"))
        .replace("  - name: inventory\n", &format!("  - name: {name}\n"));
    std::fs::write(domain.join(format!("contracts/{name}.odcs.yaml")), contract).expect("write");
    let product = std::fs::read_to_string(domain.join("products/inventory.odps.yaml")).expect("read");
    let product = product
        .replace(
            "id: urn:dataproduct:product:inventory",
            &format!("id: urn:dataproduct:product:{name}"),
        )
        .replace("name: inventory", &format!("name: {name}"))
        .replace(
            "contractId: urn:datacontract:product:inventory",
            &format!("contractId: urn:datacontract:product:{name}"),
        );
    std::fs::write(domain.join(format!("products/{name}.odps.yaml")), product).expect("write");
}

#[tokio::test]
async fn iceberg_metadata_file_locations_and_parquet_globs() {
    let dir = copy_of_sample();
    let metadata = dir.path().join("domains/product/data/inventory/metadata");
    let mut files: Vec<String> = std::fs::read_dir(&metadata)
        .expect("metadata dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".metadata.json"))
        .collect();
    files.sort();
    // 00000: created, 00001: first snapshot (AMS, NYC), 00002: second snapshot (SIN)
    add_inventory_variant(
        dir.path(),
        "inventory_first",
        "iceberg",
        &format!("domains/product/data/inventory/metadata/{}", files[1]),
    );
    // the Iceberg table's data files, read as plain Parquet through a glob
    add_inventory_variant(
        dir.path(),
        "inventory_files",
        "parquet",
        "domains/product/data/inventory/data/s1-*.parquet",
    );
    let mesh = Mesh::open(dir.path()).expect("open");
    let got = query(
        &mesh,
        "SELECT count(*), count(DISTINCT warehouse) FROM mesh.product.inventory_first",
    )
    .await;
    assert_eq!(got, vec![vec!["100".to_string(), "2".into()]]);
    let got = query(&mesh, "SELECT DISTINCT warehouse FROM mesh.product.inventory_files").await;
    assert_eq!(got, vec![vec!["SIN".to_string()]]);
}

/// Paths of the data files a Delta commit added (`add.path`), relative to the table root.
fn delta_added_files(table: &Path, commit: &str) -> Vec<String> {
    let log = std::fs::read_to_string(table.join("_delta_log").join(commit)).expect("commit");
    log.lines()
        .filter_map(|l| {
            let start = l.find("\"add\":{\"path\":\"")? + "\"add\":{\"path\":\"".len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].replace("%3D", "="))
        })
        .collect()
}

/// Pruning proven by absence: files the filter excludes are deleted, and the filtered query still
/// answers exactly — so those files were never opened — while an unfiltered one fails.
#[tokio::test]
async fn delta_skips_files_by_log_statistics_and_iceberg_prunes_partitions() {
    let dir = copy_of_sample();
    let shipments = dir.path().join("domains/order/data/shipments");
    let first = delta_added_files(&shipments, "00000000000000000000.json");
    assert_eq!(first.len(), 3, "{first:?}");
    for f in &first {
        std::fs::remove_file(shipments.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let campaigns = dir.path().join("domains/marketing/data/campaign_performance/data");
    std::fs::remove_dir_all(campaigns.join("channel=social")).expect("rm social");
    std::fs::remove_dir_all(campaigns.join("channel=search")).expect("rm search");

    let mesh = Mesh::open(dir.path()).expect("open");
    let s = Sample::generate();
    // order ids above the first commit's range: the log's min/max statistics skip its files
    let delivered = s
        .shipments
        .iter()
        .filter(|x| x.order_id > 1600 && x.status == "delivered")
        .count();
    let got = query(
        &mesh,
        "SELECT count(*) FROM mesh.order.shipments WHERE order_id > 1600 AND status = 'delivered'",
    )
    .await;
    assert_eq!(got, vec![vec![delivered.to_string()]]);
    // (a bare count(*) would be answered from the log's row counts, without reading data)
    query_error(&mesh, "SELECT * FROM mesh.order.shipments").await;

    assert_email_clicks(&mesh).await;
    query_error(&mesh, "SELECT * FROM mesh.marketing.campaign_performance").await;
}

/// Iceberg scans are spread over partitions (iceberg-datafusion's own scan is one), carry the
/// manifests' row counts, and can be run partition by partition.
#[tokio::test]
async fn iceberg_scans_run_in_parallel_partitions_with_row_counts() {
    use datafusion::common::stats::Precision;
    use datafusion::physical_plan::ExecutionPlan;
    use futures::TryStreamExt;
    use meshql_catalog::iceberg_scan::PartitionedIcebergScan;

    let dir = copy_of_sample();
    add_to_mesh_yaml(dir.path(), "engine:\n  datafusion.execution.target_partitions: 3");
    let mesh = Mesh::open(dir.path()).expect("open");
    let sql = "SELECT campaign_id, channel, clicks FROM mesh.marketing.campaign_performance";
    let planned = runnable(&mesh, sql).await;
    let mut scans = Vec::new();
    let mut stack = vec![planned.plan().clone()];
    while let Some(node) = stack.pop() {
        if let Some(scan) = node.as_any().downcast_ref::<PartitionedIcebergScan>() {
            scans.push((
                scan.groups().len(),
                scan.partition_statistics(None).expect("stats").num_rows,
            ));
        }
        stack.extend(node.children().into_iter().cloned());
    }
    let rows = Sample::generate().campaigns.len();
    assert_eq!(scans, vec![(3, Precision::Inexact(rows))], "{scans:?}");
    // A scan: every partition runs alone, and together they are the table.
    assert_eq!(planned.independent_partitions(), 3);
    let mut seen = 0;
    for p in 0..3 {
        let again = runnable(&mesh, sql).await;
        let batches: Vec<_> = again
            .stream_partitions(&[p])
            .expect("partition")
            .try_collect()
            .await
            .expect("run");
        seen += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert_eq!(seen, rows);
    let sorted = format!("{sql} ORDER BY campaign_id");
    let sorted = runnable(&mesh, &sorted).await;
    assert_eq!(sorted.independent_partitions(), 1);
    assert!(sorted.stream_partitions(&[1]).is_err());
    // Same plan, same fingerprint; another projection, another one.
    let again = runnable(&mesh, sql).await;
    assert_eq!(again.fingerprint(), planned.fingerprint());
    let other = runnable(&mesh, &sql.replace("clicks", "impressions")).await;
    assert_ne!(other.fingerprint(), planned.fingerprint());
}

/// A plan's fingerprint covers the files it reads: a Parquet file rewritten in place (same
/// name, same byte ranges) changes it, so partitions planned before and after cannot be mixed.
/// (Within `metadataRefreshSeconds` a product's file list is reused, so the mesh checks always.)
#[tokio::test]
async fn a_rewritten_file_changes_the_plan_fingerprint() {
    let dir = copy_of_sample();
    refresh_always(dir.path());
    let mesh = Mesh::open(dir.path()).expect("open");
    let sql = "SELECT * FROM mesh.order.transactions";
    let fingerprint = || async { runnable(&mesh, sql).await.fingerprint() };
    let before = fingerprint().await;
    assert_eq!(fingerprint().await, before, "planning twice gives the same fingerprint");
    let file = dir
        .path()
        .join("domains/order/data/transactions/order_date=2024-03-01/part-0.parquet");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    assert_ne!(fingerprint().await, before);
}

/// Files written into a Parquet product's directory after the mesh opened are read once the
/// refresh interval has passed (DataFusion's own listing cache would keep the first listing).
#[tokio::test]
async fn parquet_files_written_later_are_read() {
    let dir = copy_of_sample();
    refresh_always(dir.path());
    let mesh = Mesh::open(dir.path()).expect("open");
    let sql = "SELECT count(*) FROM mesh.order.transactions WHERE order_date = DATE '2024-03-01'";
    let before: u64 = query(&mesh, sql).await[0][0].parse().expect("count");
    assert!(before > 0);
    let day = dir.path().join("domains/order/data/transactions/order_date=2024-03-01");
    std::fs::copy(day.join("part-0.parquet"), day.join("part-1.parquet")).expect("copy");
    let after: u64 = query(&mesh, sql).await[0][0].parse().expect("count");
    assert_eq!(after, 2 * before);
}

/// `sql` planned as the analyst, down to the physical plan.
async fn runnable(mesh: &Mesh, sql: &str) -> meshql::Runnable {
    let planned = mesh.session(analyst()).sql(sql).await.expect("plan");
    planned.into_runnable(None).await.expect("physical plan")
}

/// The mesh's `engine:` Parquet options govern how products are read (here: strings as plain
/// `Utf8` rather than views), and changing them on a live reload reopens the products.
#[tokio::test]
async fn engine_parquet_options_reach_products_and_a_change_reopens_them() {
    let dir = copy_of_sample();
    let mesh = Mesh::open(dir.path()).expect("open");
    let sql = "SELECT arrow_typeof(region), count(*) FROM mesh.customer.profiles GROUP BY 1";
    let rows = Sample::generate().customers.len().to_string();
    assert_eq!(
        query(&mesh, sql).await,
        vec![vec!["Utf8View".to_string(), rows.clone()]]
    );
    add_to_mesh_yaml(
        dir.path(),
        "engine:\n  datafusion.execution.parquet.schema_force_view_types: false",
    );
    let outcome = mesh.reload().await;
    assert!(outcome.rejected.is_empty(), "{outcome:?}");
    assert_eq!(query(&mesh, sql).await, vec![vec!["Utf8".to_string(), rows]]);
    // A fresh mesh reads them the same way.
    let fresh = Mesh::open(dir.path()).expect("open");
    assert_eq!(query(&fresh, sql).await[0][0], "Utf8");
}
