//! Embedding meshql: open the sample mesh, run a cross-domain query as a principal, print it.
//!
//! ```sh
//! cargo run -p meshql --example query [MESH_DIR]
//! ```

use futures::StreamExt;
use meshql::{Mesh, Principal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "testdata/mesh".to_string());
    let mesh = Mesh::open(&dir)?;

    // Principals come from your application's authentication, never from SQL; what alice may
    // read (and which columns she sees masked) is decided by testdata/mesh/policies.yaml.
    let alice = Principal::new("alice")
        .with_group("analysts")
        .with_attribute("region", "EU");
    let session = mesh.session(alice);

    // Collect a small result...
    let batches = session
        .sql(
            "SELECT c.region, count(*) AS orders, sum(t.amount) AS revenue
             FROM mesh.order.transactions t
             JOIN mesh.customer.profiles c ON c.customer_id = t.customer_id
             GROUP BY c.region ORDER BY revenue DESC",
        )
        .await?
        .collect()
        .await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);

    // ...or stream a large one batch by batch.
    let mut stream = session
        .sql("SELECT * FROM mesh.marketing.campaign_performance")
        .await?
        .stream()
        .await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows();
    }
    println!("streamed {rows} campaign rows");
    Ok(())
}
