//! `meshql-bench`: the embedded half of meshql's benchmark suite (the other half, DuckDB and the
//! Flight SQL clients, is `benches/run.py`, which drives this binary and writes `RESULTS.md`).
//!
//! - `meshql-bench tpch --sf-dir benches/data/sf1 --sf 1 --engines datafusion,meshql,governed …`
//!   runs the 22 TPC-H queries on each engine in turn, several times, and prints per-query times
//!   as JSON; `--dump DIR` writes each engine's answers for cross-checking.
//! - `meshql-bench scan --mesh DIR --sql …`: an embedded full scan, in bytes of Arrow data per second.
//! - `meshql-bench scale --dir DIR --products 10000`: opening, listing and planning on a mesh of
//!   many products, with peak memory.
//!
//! Every number is wall-clock time measured in this process, engines alternating, so the ratios
//! compare like with like on the same machine in the same run.

mod scale;
mod tpch;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

// The allocator of the `meshql` binary, so embedded numbers match what the server does.
#[global_allocator]
static GLOBAL: meshql::memory::Counting<mimalloc::MiMalloc> = meshql::memory::Counting::new(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(
    name = "meshql-bench",
    about = "meshql's embedded benchmarks (see benches/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The 22 TPC-H queries on several engines, alternating; JSON on stdout.
    Tpch {
        /// The directory `benches/tpch/prepare.py` wrote (with `parquet/`, `delta/`, `iceberg/`).
        #[arg(long)]
        sf_dir: PathBuf,
        /// The scale factor of that data (sets Q11's fraction).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// The query files (`q01.sql` … `q22.sql`).
        #[arg(long, default_value = "benches/tpch/queries")]
        queries: PathBuf,
        /// Which queries, e.g. `1,3,18` (default: all).
        #[arg(long, value_delimiter = ',')]
        only: Vec<u32>,
        /// Of `datafusion`, `meshql`, `governed`, `delta`, `iceberg`.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "datafusion,meshql,governed,delta,iceberg"
        )]
        engines: Vec<String>,
        /// Timed runs per query and engine (after one untimed warm-up run).
        #[arg(long, default_value_t = 5)]
        iterations: usize,
        /// Write each engine's answers (first run) to DIR/<engine>/qNN.json.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// A DataFusion option for the raw DataFusion engine, `key=value` (meshql takes its
        /// options from `engine:` in the mesh's mesh.yaml).
        #[arg(long = "set")]
        options: Vec<String>,
    },
    /// A full scan embedded: rows, bytes of Arrow data and time per run; JSON on stdout.
    Scan {
        #[arg(long)]
        mesh: PathBuf,
        #[arg(long)]
        sql: String,
        #[arg(long, default_value_t = 3)]
        iterations: usize,
    },
    /// Open a mesh of many products, list them, plan on one; JSON on stdout.
    Scale {
        /// Where to write the synthetic mesh (reused if present with the same size).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        products: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let out = match cli.command {
        Command::Tpch {
            sf_dir,
            sf,
            queries,
            only,
            engines,
            iterations,
            dump,
            options,
        } => {
            if iterations == 0 {
                bail!("--iterations must be at least 1");
            }
            let queries = tpch::load_queries(&queries, sf, &only)?;
            let options = options
                .iter()
                .map(|o| o.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Option<Vec<_>>>()
                .context("--set takes key=value")?;
            rt.block_on(tpch::run(
                &sf_dir,
                &queries,
                &engines,
                iterations,
                dump.as_deref(),
                &options,
            ))?
        }
        Command::Scan { mesh, sql, iterations } => rt.block_on(tpch::scan(&mesh, &sql, iterations.max(1)))?,
        Command::Scale { dir, products } => rt.block_on(scale::run(&dir, products))?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Peak and current resident memory of this process in bytes (Linux `/proc/self/status`).
pub(crate) fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
