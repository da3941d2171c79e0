//! Live reload: a served mesh picks up a newly published data product without a restart.
//! Copies the sample mesh to a temporary directory, watches it, publishes a product there by
//! writing its contract and descriptor, waits for the new generation and queries it — from the
//! session opened before the change.
//!
//! ```sh
//! cargo run -p meshql --example live_reload [MESH_DIR]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use meshql::{Mesh, Principal, Session};

/// The contract (ODCS v3.1): schema and storage. A second product over the profiles file,
/// serving three of its columns.
const CONTRACT: &str = r#"apiVersion: v3.1.0
kind: DataContract
id: urn:datacontract:customer:directory
name: Customer directory
version: 1.0.0
status: active
domain: customer
dataProduct: directory
description: {purpose: "Where our customers are, without contact data."}
servers:
  - {server: local, type: local, format: parquet, path: domains/customer/data/profiles.parquet}
schema:
  - name: directory
    physicalType: table
    properties:
      - {name: customer_id, logicalType: integer, required: true, classification: internal}
      - {name: region, logicalType: string, required: true, classification: internal}
      - {name: segment, logicalType: string, required: true, classification: internal}
"#;

/// The product descriptor (ODPS v1.0): who owns it, and its output port's contract.
const PRODUCT: &str = r##"apiVersion: v1.0.0
kind: DataProduct
id: urn:dataproduct:customer:directory
name: directory
version: 1.0.0
status: active
domain: customer
description: {purpose: "Where our customers are, without contact data."}
team: {name: customer-data-team, members: [{username: maria@example.com, role: owner}]}
support: [{channel: "#customer-data", url: "https://chat.example.com/channels/customer-data"}]
outputPorts:
  - {name: directory, version: 1.0.0, type: table, contractId: "urn:datacontract:customer:directory"}
"##;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args().nth(1).unwrap_or_else(|| "testdata/mesh".to_string());
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("mesh");
    copy_dir(Path::new(&source), &root)?;

    // Poll the documents every 500 ms (one `stat` each). A change is applied once it has stayed
    // unchanged for a settle period, so files caught halfway through being written are not read.
    // Dropping the handle stops the watcher. (`Mesh::reload` reloads once, on demand.)
    let mesh = Mesh::open(&root)?;
    let _watch = mesh.watch(Duration::from_millis(500));
    let session = mesh.session(Principal::new("alice").with_group("analysts"));

    let list = "SELECT table_name, format, owner FROM mesh.system.products
                WHERE domain = 'customer' ORDER BY table_name";
    let query = "SELECT region, count(*) AS customers FROM mesh.customer.directory
                 GROUP BY region ORDER BY region";
    println!("generation {}:", mesh.generation());
    show(&session, list).await?;
    show(&session, query).await?;

    // Publishing a product = writing its files into its domain's directory.
    let before = mesh.generation();
    let domain = root.join("domains/customer");
    std::fs::write(domain.join("contracts/directory.odcs.yaml"), CONTRACT)?;
    std::fs::write(domain.join("products/directory.odps.yaml"), PRODUCT)?;
    let published = Instant::now();
    while mesh.generation() == before {
        if published.elapsed() > Duration::from_secs(30) {
            return Err("the watcher did not pick up the new product within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "generation {} after {:.1} s; the same session:",
        mesh.generation(),
        published.elapsed().as_secs_f64()
    );
    show(&session, list).await?;
    show(&session, query).await?;
    Ok(())
}

/// Prints a query's result, or the class and message of its error.
async fn show(session: &Session, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    match async { session.sql(sql).await?.collect().await }.await {
        Ok(batches) => println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?),
        Err(e) => println!("error ({:?}): {e}", e.class()),
    }
    Ok(())
}

/// Copies a directory tree, leaving out the mesh's state directory (audit trail, quality).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != ".meshql" {
                copy_dir(&entry.path(), &target)?;
            }
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
