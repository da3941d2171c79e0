//! TPC-H on meshql and on a plain DataFusion `SessionContext` over the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::sql::TableReference;
use meshql::{Mesh, Principal, Session};
use serde_json::{json, Value};

/// The TPC-H tables by domain, as `benches/tpch/prepare.py` publishes them.
pub const DOMAINS: [(&str, &[&str]); 3] = [
    ("customer", &["customer", "nation", "region"]),
    ("order", &["orders", "lineitem"]),
    ("supply", &["part", "partsupp", "supplier"]),
];

/// One query: its name (`q01`) and text, with Q11's fraction set for the scale factor.
pub struct Query {
    pub name: String,
    pub sql: String,
}

pub fn load_queries(dir: &Path, sf: f64, only: &[u32]) -> Result<Vec<Query>> {
    let mut out = Vec::new();
    for n in 1..=22u32 {
        if !only.is_empty() && !only.contains(&n) {
            continue;
        }
        let path = dir.join(format!("q{n:02}.sql"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let sql = text.replace("${FRACTION}", &format!("{}", 0.0001 / sf));
        out.push(Query {
            name: format!("q{n:02}"),
            sql,
        });
    }
    if out.is_empty() {
        bail!("no queries selected");
    }
    Ok(out)
}

/// The analyst: reads every product, no row filter, no mask — meshql's layers without policy work.
pub fn analyst() -> Principal {
    Principal::new("analyst").with_group("analysts")
}

/// The credit desk: a row filter on customers by its `min_balance` attribute (set to admit every
/// customer) and masks on phones and addresses.
pub fn credit_desk() -> Principal {
    Principal::new("credit")
        .with_group("credit-desk")
        .with_attribute("min_balance", "-1000")
}

enum Engine {
    DataFusion(SessionContext),
    Meshql(Session),
}

impl Engine {
    async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(match self {
            Engine::DataFusion(ctx) => ctx.sql(sql).await?.collect().await?,
            Engine::Meshql(s) => s.sql(sql).await?.collect().await?,
        })
    }
}

/// A plain DataFusion context (default configuration) with the Parquet files registered under
/// the same names: `mesh.<domain>.<table>`.
pub async fn raw_datafusion(parquet_dir: &Path, options: &[(String, String)]) -> Result<SessionContext> {
    let mut config = SessionConfig::new();
    for (k, v) in options {
        config.options_mut().set(k, v)?;
    }
    let ctx = SessionContext::new_with_config(config);
    let catalog = Arc::new(MemoryCatalogProvider::new());
    for (domain, _) in DOMAINS {
        catalog.register_schema(domain, Arc::new(MemorySchemaProvider::new()))?;
    }
    ctx.register_catalog("mesh", catalog);
    for (domain, tables) in DOMAINS {
        for table in tables {
            let path = parquet_dir.join("data").join(format!("{table}.parquet"));
            let path = path.to_str().context("non-UTF-8 path")?;
            ctx.register_parquet(
                TableReference::full("mesh", domain, *table),
                path,
                ParquetReadOptions::default(),
            )
            .await
            .with_context(|| format!("registering {path}"))?;
        }
    }
    Ok(ctx)
}

async fn engine(name: &str, sf_dir: &Path, options: &[(String, String)]) -> Result<Engine> {
    let open = |sub: &str| -> Result<Mesh> {
        let dir = sf_dir.join(sub);
        let mesh = Mesh::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
        let def = mesh.definition();
        if let Some(p) = def.problems.first() {
            bail!("{}: {p:?}", dir.display());
        }
        if let Some((t, Err(e))) = def.tables.iter().map(|t| (t, &t.binding)).find(|(_, b)| b.is_err()) {
            bail!("{}: {} does not load: {e}", dir.display(), t.qualified_name());
        }
        Ok(mesh)
    };
    Ok(match name {
        "datafusion" => Engine::DataFusion(raw_datafusion(&sf_dir.join("parquet"), options).await?),
        "meshql" => Engine::Meshql(open("parquet")?.session(analyst())),
        "governed" => Engine::Meshql(open("parquet")?.session(credit_desk())),
        "delta" => Engine::Meshql(open("delta")?.session(analyst())),
        "iceberg" => Engine::Meshql(open("iceberg")?.session(analyst())),
        other => bail!("unknown engine `{other}` (datafusion, meshql, governed, delta, iceberg)"),
    })
}

pub async fn run(
    sf_dir: &Path,
    queries: &[Query],
    names: &[String],
    iterations: usize,
    dump: Option<&Path>,
    options: &[(String, String)],
) -> Result<Value> {
    let mut engines = Vec::new();
    let mut open_ms = BTreeMap::new();
    for name in names {
        let started = Instant::now();
        engines.push((name.as_str(), engine(name, sf_dir, options).await?));
        open_ms.insert(name.clone(), ms(started));
    }
    let mut times: BTreeMap<&str, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut rows: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut errors: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    let mut answers: BTreeMap<&str, BTreeMap<&str, Vec<Vec<String>>>> = BTreeMap::new();
    for q in queries {
        // Warm-up (untimed; its answer is the one compared), then timed runs with the engines
        // in a rotating order so none always runs first on a cold cache.
        for run in 0..=iterations {
            for k in 0..engines.len() {
                let (name, engine) = &engines[(k + run) % engines.len()];
                if errors.get(q.name.as_str()).is_some_and(|e| e.contains_key(name)) {
                    continue;
                }
                let started = Instant::now();
                match engine.run(&q.sql).await {
                    Ok(batches) => {
                        let elapsed = ms(started);
                        if run == 0 {
                            let answer = meshql_testdata::rows(&batches);
                            rows.entry(&q.name).or_default().insert(name, answer.len());
                            answers.entry(&q.name).or_default().insert(name, answer);
                        } else {
                            times.entry(&q.name).or_default().entry(name).or_default().push(elapsed);
                        }
                    }
                    Err(e) => {
                        eprintln!("{} on {name}: {e:#}", q.name);
                        errors.entry(&q.name).or_default().insert(name, format!("{e:#}"));
                    }
                }
            }
        }
        let summary: Vec<String> = times
            .get(q.name.as_str())
            .map(|t| t.iter().map(|(e, v)| format!("{e} {:.0} ms", median(v))).collect())
            .unwrap_or_default();
        eprintln!("{}: {}", q.name, summary.join(", "));
    }
    // Same data, same engine underneath: these must give identical answers (masked columns
    // aside, so `governed` is compared by row count only).
    let mut mismatches = Vec::new();
    for (q, by_engine) in &answers {
        let reference = by_engine.get("datafusion").or_else(|| by_engine.get("meshql"));
        let Some(reference) = reference else { continue };
        for (engine, answer) in by_engine {
            let same = if *engine == "governed" {
                answer.len() == reference.len()
            } else {
                answer == reference
            };
            if !same {
                mismatches.push(format!(
                    "{q}: {engine} differs ({} rows vs {})",
                    answer.len(),
                    reference.len()
                ));
            }
        }
    }
    if let Some(dir) = dump {
        for (q, by_engine) in &answers {
            for (engine, answer) in by_engine {
                let path: PathBuf = dir.join(engine).join(format!("{q}.json"));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, serde_json::to_vec(answer)?)?;
            }
        }
    }
    let (peak, _) = crate::memory();
    Ok(json!({
        "engines": names,
        "iterations": iterations,
        "open_ms": open_ms,
        "times_ms": times,
        "rows": rows,
        "errors": errors,
        "mismatches": mismatches,
        "peak_rss_bytes": peak,
    }))
}

/// `SELECT *`-style scan embedded: Arrow bytes produced per second (buffers as sliced, the
/// measure pyarrow's `Table.nbytes` uses on the client side).
pub async fn scan(mesh_dir: &Path, sql: &str, iterations: usize) -> Result<Value> {
    let mesh = Mesh::open(mesh_dir).with_context(|| format!("opening {}", mesh_dir.display()))?;
    let session = mesh.session(analyst());
    let mut runs = Vec::new();
    let (mut rows, mut bytes) = (0usize, 0usize);
    for run in 0..=iterations {
        let started = Instant::now();
        let batches = session.sql(sql).await?.collect().await?;
        let elapsed = ms(started);
        rows = batches.iter().map(|b| b.num_rows()).sum();
        bytes = batches
            .iter()
            .flat_map(|b| {
                b.columns()
                    .iter()
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            })
            .sum();
        if run > 0 {
            runs.push(elapsed);
        }
    }
    Ok(json!({"rows": rows, "bytes": bytes, "times_ms": runs, "median_ms": median(&runs)}))
}

pub fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}
