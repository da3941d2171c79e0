//! Quality checks: run the data contracts' quality rules (ODCS `quality` blocks and SLA
//! freshness) of every product, as `meshql check` does, and print each result.
//!
//! ```sh
//! cargo run -p meshql --example quality [MESH_DIR]
//! ```

use meshql::{CheckOptions, Mesh, ProductStatus, QualityOutcome};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "testdata/mesh".to_string());
    let mesh = Mesh::open(&dir)?;

    // `Mesh::check` validates the documents, opens every product's storage, compares it with its
    // contract and runs its quality checks. Each check is one query inside the engine, run with
    // the product owner's rights over that product only. `record: false` leaves the results out
    // of the mesh's quality history (`<stateDir>/quality/`, queried as `mesh.system.quality`);
    // `meshql check` and a server's `quality.scheduleSeconds` record them.
    let options = CheckOptions {
        record: false,
        ..CheckOptions::default()
    };
    let report = mesh.check(&options).await;

    for problem in &report.problems {
        println!("problem: {problem}");
    }
    let (mut passed, mut failed, mut errors, mut skipped) = (0, 0, 0, 0);
    for product in &report.products {
        // A product whose storage cannot be read (or does not match its contract) runs no checks.
        if let ProductStatus::Unavailable(reason) = &product.status {
            println!("{:<32} UNAVAILABLE  {reason}", product.table);
            continue;
        }
        for result in &product.quality {
            match result.outcome {
                QualityOutcome::Passed => passed += 1,
                QualityOutcome::Failed => failed += 1,
                QualityOutcome::Error => errors += 1,
                QualityOutcome::Skipped => skipped += 1,
            }
            println!(
                "{:<32} {:<8} {:<8} {:<38} {}",
                product.table,
                result.outcome.as_str(),
                result.severity.as_str(),
                result.check,
                result.message,
            );
        }
    }

    // Only failed (or unrunnable) checks of severity `error` fail a domain team's CI;
    // `warning` and `info` are reported and kept in the history.
    let blocking = report
        .products
        .iter()
        .flat_map(|p| &p.quality)
        .filter(|r| r.is_blocking())
        .count();
    println!(
        "\n{} products: {passed} passed, {failed} failed, {errors} could not run, {skipped} skipped; {blocking} blocking; report ok: {}",
        report.products.len(),
        report.is_ok()
    );
    Ok(())
}
