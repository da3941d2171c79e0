//! Catalog scale: a synthetic mesh of many products (`meshql_testdata::synthetic`: 100 products
//! per domain, each with its own contract, hundreds of policy rules), every product pointing at
//! one small real Parquet file so a query on any of them runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use meshql::{Mesh, Principal};
use serde_json::{json, Value};

use crate::tpch::{median, ms};

const PER_DOMAIN: usize = 100;

/// Writes the synthetic mesh under `dir` unless one of the same size is there.
pub fn write(dir: &Path, products: usize) -> Result<()> {
    if products == 0 || !products.is_multiple_of(PER_DOMAIN) {
        bail!("--products must be a positive multiple of {PER_DOMAIN}");
    }
    let marker = dir.join(".products");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(products.to_string().as_str()) {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Utf8, true),
    ]));
    let ids: Vec<i64> = (0..10_000).collect();
    let values: Vec<String> = ids.iter().map(|i| format!("value-{i}")).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(values))],
    )?;
    let data = dir.join("data.parquet");
    meshql_testdata::write::write_parquet(&data, &batch)?;
    let location = data.to_str().context("non-UTF-8 path")?;
    meshql_testdata::synthetic::write_mesh(dir, products / PER_DOMAIN, PER_DOMAIN, location)?;
    std::fs::write(marker, products.to_string())?;
    Ok(())
}

pub async fn run(dir: &Path, products: usize) -> Result<Value> {
    write(dir, products)?;
    // The documents alone (read, validated, bound), then the whole open (policies, fingerprint
    // of the documents for live reload, catalog, audit trail). Memory is counted from before
    // the first load (freed memory the allocator keeps counts too: an upper bound).
    let (_, rss_before) = crate::memory();
    let started = Instant::now();
    let definition = meshql::contract::MeshDefinition::load(dir)?;
    let load_definition_ms = ms(started);
    let started = Instant::now();
    let policies = meshql::PolicySet::load(&definition);
    let load_policies_ms = ms(started);
    drop((policies, definition));
    let started = Instant::now();
    let mesh = Mesh::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let open_ms = ms(started);
    let (_, rss_open) = crate::memory();
    let def = mesh.definition();
    if def.tables.len() != products {
        bail!("expected {products} products, the mesh has {}", def.tables.len());
    }
    if let Some(p) = def.problems.first() {
        bail!("synthetic mesh has problems: {p:?}");
    }

    let session = mesh.session(Principal::new("bench").with_group("analysts"));
    let list = "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'mesh'";
    let mut list_ms = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let batches = session.sql(list).await?.collect().await?;
        list_ms.push(ms(started));
        let listed = meshql_testdata::rows(&batches);
        let n: usize = listed
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if n < products {
            bail!("information_schema listed {n} tables, expected at least {products}");
        }
    }

    // A principal with a filtered grant, a mask and restrictions on the product it plans on.
    let governed = mesh.session(
        Principal::new("bench-regional")
            .with_group("regional")
            .with_attribute("region", "value-7"),
    );
    // A product in the middle of the mesh, one of the ten per domain with an extra restriction.
    let product = format!("mesh.domain_{:03}.product_00003", products / PER_DOMAIN / 2);
    let one = format!("SELECT id, value FROM {product} WHERE id > 10 ORDER BY id LIMIT 20");
    let one = one.as_str();
    let started = Instant::now();
    governed.sql(one).await?.into_optimized_plan()?;
    let first_plan_ms = ms(started);
    let mut plan_ms = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        governed.sql(one).await?.into_optimized_plan()?;
        plan_ms.push(ms(started));
    }
    let started = Instant::now();
    let answered = governed.sql(one).await?.collect().await?;
    let run_ms = ms(started);
    let answered: usize = answered.iter().map(|b| b.num_rows()).sum();
    let (peak, rss_end) = crate::memory();
    Ok(json!({
        "products": products,
        "open_ms": open_ms,
        "load_definition_ms": load_definition_ms,
        "load_policies_ms": load_policies_ms,
        "rss_before_open_bytes": rss_before,
        "rss_after_open_bytes": rss_open,
        "rss_end_bytes": rss_end,
        "peak_rss_bytes": peak,
        "list_first_ms": list_ms[0],
        "list_median_ms": median(&list_ms[1..]),
        "plan_first_ms": first_plan_ms,
        "plan_median_ms": median(&plan_ms),
        "query_ms": run_ms,
        "query_rows": answered,
        "query": one,
    }))
}
