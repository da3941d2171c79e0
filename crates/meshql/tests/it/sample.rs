//! Cross-domain SQL over the sample mesh, checked against answers computed from the generator's
//! rows.

use std::collections::{BTreeMap, HashMap};

use meshql_testdata::sample::Sample;

use crate::common::*;

#[tokio::test]
async fn every_sample_product_is_registered_and_servable() {
    let mesh = sample_mesh();
    let report = mesh.check(&meshql::CheckOptions::default()).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut tables: Vec<&str> = report.products.iter().map(|p| p.table.as_str()).collect();
    tables.sort();
    assert_eq!(
        tables,
        vec![
            "mesh.customer.profiles",
            "mesh.interop.deltars_events_first_commit",
            "mesh.interop.deltars_events_latest",
            "mesh.interop.pyarrow_events",
            "mesh.interop.pyiceberg_events_first_snapshot",
            "mesh.interop.pyiceberg_events_latest",
            "mesh.marketing.campaign_performance",
            "mesh.order.shipments",
            "mesh.order.transactions",
            "mesh.product.catalog",
            "mesh.product.inventory",
        ]
    );
    for p in &report.products {
        assert!(
            matches!(p.status, meshql::ProductStatus::Ok { .. }),
            "{}: {:?}",
            p.table,
            p.status
        );
    }
}

/// Parquet (hive-partitioned) ⋈ Parquet ⋈ Delta ⋈ Delta, across three domains.
#[tokio::test]
async fn revenue_of_delivered_orders_by_region_and_category() {
    let s = Sample::generate();
    let region: HashMap<i64, &str> = s.customers.iter().map(|c| (c.customer_id, c.region.as_str())).collect();
    let category: HashMap<i64, &str> = s.products.iter().map(|p| (p.product_id, p.category.as_str())).collect();
    let status: HashMap<i64, &str> = s.shipments.iter().map(|x| (x.order_id, x.status.as_str())).collect();
    let mut expected: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for o in &s.orders {
        if status[&o.order_id] != "delivered" {
            continue;
        }
        let e = expected
            .entry((region[&o.customer_id].to_string(), category[&o.product_id].to_string()))
            .or_default();
        e.0 += 1;
        e.1 += o.amount_cents;
    }
    let expected: Vec<Vec<String>> = expected
        .into_iter()
        .map(|((r, c), (n, cents))| vec![r, c, n.to_string(), money(cents)])
        .collect();

    let got = query(
        &sample_mesh(),
        "SELECT c.region, p.category, count(*) AS orders, sum(t.amount) AS revenue
         FROM mesh.order.transactions t
         JOIN mesh.customer.profiles c ON t.customer_id = c.customer_id
         JOIN mesh.product.catalog p ON t.product_id = p.product_id
         JOIN mesh.order.shipments s ON s.order_id = t.order_id
         WHERE s.status = 'delivered'
         GROUP BY c.region, p.category
         ORDER BY c.region, p.category",
    )
    .await;
    assert_eq!(got, expected);
}

/// Iceberg (partitioned, two snapshots) ⋈ hive-partitioned Parquet on a partition column, and
/// Iceberg ⋈ Delta.
#[tokio::test]
async fn campaign_spend_against_order_revenue_per_day() {
    let s = Sample::generate();
    let mut spend: BTreeMap<i32, i64> = BTreeMap::new();
    for c in &s.campaigns {
        *spend.entry(c.day).or_default() += c.spend_cents;
    }
    let mut revenue: BTreeMap<i32, i64> = BTreeMap::new();
    for o in &s.orders {
        *revenue.entry(o.order_date).or_default() += o.amount_cents;
    }
    let expected: Vec<Vec<String>> = spend
        .iter()
        .map(|(day, sp)| vec![date(*day), money(*sp), money(revenue[day])])
        .collect();
    let got = query(
        &sample_mesh(),
        "SELECT m.day, m.spend, sum(t.amount) AS revenue
         FROM (SELECT day, sum(spend) AS spend FROM mesh.marketing.campaign_performance GROUP BY day) m
         JOIN mesh.order.transactions t ON t.order_date = m.day
         GROUP BY m.day, m.spend
         ORDER BY m.day",
    )
    .await;
    assert_eq!(got, expected);

    let mut stock: BTreeMap<String, i64> = BTreeMap::new();
    let active: HashMap<i64, bool> = s.products.iter().map(|p| (p.product_id, p.active)).collect();
    for i in &s.inventory {
        if active[&i.product_id] {
            *stock.entry(i.warehouse.clone()).or_default() += i64::from(i.quantity);
        }
    }
    let expected: Vec<Vec<String>> = stock.into_iter().map(|(w, q)| vec![w, q.to_string()]).collect();
    let got = query(
        &sample_mesh(),
        "SELECT i.warehouse, sum(i.quantity) FROM mesh.product.inventory i
         JOIN mesh.product.catalog p ON p.product_id = i.product_id
         WHERE p.active GROUP BY i.warehouse ORDER BY i.warehouse",
    )
    .await;
    assert_eq!(got, expected);
}

#[tokio::test]
async fn two_part_names_resolve_in_the_mesh_catalog() {
    let s = Sample::generate();
    let got = query(
        &sample_mesh(),
        "SELECT count(*) FROM customer.profiles WHERE region = 'EU'",
    )
    .await;
    let eu = s.customers.iter().filter(|c| c.region == "EU").count();
    assert_eq!(got, vec![vec![eu.to_string()]]);
}

#[tokio::test]
async fn information_schema_lists_every_product_with_contract_columns() {
    let got = query(
        &sample_mesh(),
        "SELECT column_name, data_type FROM information_schema.columns
         WHERE table_schema = 'customer' AND table_name = 'profiles' ORDER BY ordinal_position",
    )
    .await;
    let names: Vec<&str> = got.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "customer_id",
            "full_name",
            "email",
            "phone",
            "birth_date",
            "region",
            "country",
            "segment",
            "signup_ts"
        ]
    );
    let tables = query(&sample_mesh(), "SHOW TABLES").await;
    assert!(
        tables
            .iter()
            .any(|r| r[1] == "marketing" && r[2] == "campaign_performance"),
        "{tables:?}"
    );
}

#[tokio::test]
async fn statements_other_than_queries_are_refused() {
    let mesh = sample_mesh();
    for sql in [
        "CREATE TABLE mesh.customer.x AS SELECT 1",
        "DROP TABLE mesh.customer.profiles",
        "INSERT INTO mesh.customer.profiles SELECT * FROM mesh.customer.profiles",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = query_error(&mesh, sql).await;
        assert!(err.contains("only queries are allowed"), "{sql}: {err}");
    }
    let err = query_error(
        &mesh,
        "SELECT * FROM '../testdata/mesh/domains/customer/data/profiles.parquet'",
    )
    .await;
    assert!(
        err.to_lowercase().contains("not found") || err.contains("No table"),
        "{err}"
    );
}

/// The README's quick-start query: hive-partitioned Parquet ⋈ Parquet ⋈ Delta, filtered by an
/// Iceberg subquery — all three formats in one statement.
#[tokio::test]
async fn the_readme_quick_start_query() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let start = readme.find(QUICK_START).expect("quick-start command") + QUICK_START.len();
    let sql = &readme[start..start + readme[start..].find('"').expect("closing quote")];

    let s = Sample::generate();
    let good_days: std::collections::HashSet<i32> = s
        .campaigns
        .iter()
        .filter(|c| c.channel == "email" && c.conversions > 40)
        .map(|c| c.day)
        .collect();
    let region: HashMap<i64, &str> = s.customers.iter().map(|c| (c.customer_id, c.region.as_str())).collect();
    let category: HashMap<i64, &str> = s.products.iter().map(|p| (p.product_id, p.category.as_str())).collect();
    let mut groups: HashMap<(&str, &str), (i64, i64)> = HashMap::new();
    for o in s.orders.iter().filter(|o| good_days.contains(&o.order_date)) {
        let e = groups
            .entry((region[&o.customer_id], category[&o.product_id]))
            .or_default();
        e.0 += 1;
        e.1 += o.amount_cents;
    }
    let mut expected: Vec<(i64, Vec<String>)> = groups
        .into_iter()
        .map(|((r, c), (n, cents))| (cents, vec![r.to_string(), c.to_string(), n.to_string(), money(cents)]))
        .collect();
    expected.sort_by_key(|e| std::cmp::Reverse(e.0));
    let expected: Vec<Vec<String>> = expected.into_iter().take(10).map(|(_, row)| row).collect();
    assert!(!good_days.is_empty());
    // As the README runs it: an analyst without PII rights, which the sample policies allow.
    let readme_user = meshql::Principal::new("readme").with_group("analysts");
    assert_eq!(query_as(&sample_mesh(), readme_user, sql).await, Ok(expected), "{sql}");
}

const QUICK_START: &str = "query --mesh testdata/mesh --group analysts \"";
