//! `meshql-testdata [MESH_DIR]`: (re)writes the sample mesh's data (default `testdata/mesh`).
//! `meshql-testdata --synthetic DOMAINS PRODUCTS_PER_DOMAIN DIR`: writes a synthetic mesh of many
//! products (YAML only) for scale tests.

use std::path::PathBuf;

use anyhow::{bail, Context};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--synthetic") {
        let [_, domains, per_domain, dir] = args.as_slice() else {
            bail!("usage: meshql-testdata --synthetic DOMAINS PRODUCTS_PER_DOMAIN DIR");
        };
        let domains: usize = domains.parse().context("DOMAINS")?;
        let per_domain: usize = per_domain.parse().context("PRODUCTS_PER_DOMAIN")?;
        let dir = PathBuf::from(dir);
        meshql_testdata::synthetic::write_mesh(&dir, domains, per_domain, "data/missing.parquet")?;
        println!(
            "synthetic mesh of {} products written under {}",
            domains * per_domain,
            dir.display()
        );
        return Ok(());
    }
    let mesh = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("testdata/mesh"));
    meshql_testdata::generate(&mesh).await?;
    println!("sample data written under {}", mesh.display());
    Ok(())
}
