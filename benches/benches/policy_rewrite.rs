//! The cost of meshql's policy layer per query, on a mesh of 2,000 products governed by 283
//! rules (a global file, one file per domain, tag rules; see `meshql_testdata::synthetic`).
//!
//! Each benchmark plans one query — parse, resolve the table, build its governed plan (row
//! filter, masks, barrier) and optimise — or plans and runs it, and compares with the same work
//! in a plain DataFusion `SessionContext` over the same catalog without policies.
//!
//! `cargo bench -p meshql-benches --bench policy_rewrite`

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, Criterion};
use datafusion::prelude::SessionContext;
use meshql::{Mesh, Principal};

const QUERY: &str = "SELECT id, value FROM mesh.domain_007.product_00003 WHERE id > 10 ORDER BY id LIMIT 20";

fn setup() -> (tempfile::TempDir, Mesh) {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Utf8, true),
    ]));
    let ids: Vec<i64> = (0..10_000).collect();
    let values: Vec<&str> = ids
        .iter()
        .map(|i| ["EU", "NA", "APAC", "LATAM"][*i as usize % 4])
        .collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(values))],
    )
    .expect("batch");
    let data = dir.path().join("data.parquet");
    meshql_testdata::write::write_parquet(&data, &batch).expect("write data");
    let location = data.to_str().expect("utf-8 path").to_string();
    meshql_testdata::synthetic::write_mesh(dir.path(), 20, 100, &location).expect("write mesh");
    let mesh = Mesh::open(dir.path()).expect("open mesh");
    assert!(mesh.policies().problems().is_empty());
    (dir, mesh)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_dir, mesh) = setup();
    let rules = mesh.policies().rules().len() + mesh.policies().tag_rules().len();
    // A principal with a filtered grant, a mask and a restriction on this product.
    let principal = Principal::new("bench")
        .with_group("regional")
        .with_attribute("region", "EU");
    let session = mesh.session(principal);
    // The owning team: an unfiltered grant, no mask — the barrier alone.
    let owner = mesh.session(Principal::new("owner").with_group("team-7"));
    let raw = SessionContext::new();
    raw.register_catalog("mesh", mesh.catalog().clone());

    // Both answer (the governed one with fewer rows) before anything is timed.
    let governed_rows: usize = rt
        .block_on(async { session.sql(QUERY).await?.collect().await })
        .expect("governed query")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    let raw_rows: usize = rt
        .block_on(async { raw.sql(QUERY).await?.collect().await })
        .expect("raw query")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!((governed_rows, raw_rows), (20, 20));
    eprintln!("mesh: 2000 products, {rules} policy rules");

    let mut g = c.benchmark_group("plan");
    g.bench_function("datafusion, no policies", |b| {
        b.iter(|| {
            rt.block_on(async {
                raw.sql(QUERY)
                    .await
                    .expect("plan")
                    .into_optimized_plan()
                    .expect("optimise")
            })
        })
    });
    g.bench_function("meshql, owner: grant without filter or mask", |b| {
        b.iter(|| {
            rt.block_on(async {
                owner
                    .sql(QUERY)
                    .await
                    .expect("plan")
                    .into_optimized_plan()
                    .expect("optimise")
            })
        })
    });
    g.bench_function("meshql, governed", |b| {
        b.iter(|| {
            rt.block_on(async {
                session
                    .sql(QUERY)
                    .await
                    .expect("plan")
                    .into_optimized_plan()
                    .expect("optimise")
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("plan and run");
    g.bench_function("datafusion, no policies", |b| {
        b.iter(|| rt.block_on(async { raw.sql(QUERY).await.expect("plan").collect().await.expect("run") }))
    });
    g.bench_function("meshql, governed", |b| {
        b.iter(|| rt.block_on(async { session.sql(QUERY).await.expect("plan").collect().await.expect("run") }))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
