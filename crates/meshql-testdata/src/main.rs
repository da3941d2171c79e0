//! `meshql-testdata [MESH_DIR]`: (re)writes the sample mesh's data (default `testdata/mesh`).

use std::path::PathBuf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mesh: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("testdata/mesh"));
    meshql_testdata::generate(&mesh).await?;
    println!("sample data written under {}", mesh.display());
    Ok(())
}
