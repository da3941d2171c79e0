//! The deterministic generator of meshql's sample e-commerce mesh (`testdata/mesh`).
//!
//! [`sample`] generates the rows from a seed; [`write`] writes them with arrow-rs (Parquet),
//! delta-rs (Delta Lake) and iceberg-rust (Iceberg); [`generate`] lays them out where the sample
//! mesh's contracts expect them. Tests use [`sample::Sample`] to compute expected answers without
//! reading any file.

pub mod sample;
pub mod synthetic;
pub mod write;

use std::path::Path;

use anyhow::Result;

use sample::{Sample, PRODUCTS_FIRST_COMMIT, SHIPMENTS_FIRST_COMMIT};

/// Where each sample product's data lives, relative to the mesh root.
pub mod paths {
    pub const PROFILES: &str = "domains/customer/data/profiles.parquet";
    pub const CATALOG: &str = "domains/product/data/catalog";
    pub const INVENTORY: &str = "domains/product/data/inventory";
    pub const TRANSACTIONS: &str = "domains/order/data/transactions";
    pub const SHIPMENTS: &str = "domains/order/data/shipments";
    pub const CAMPAIGNS: &str = "domains/marketing/data/campaign_performance";
}

/// Result rows as text (Arrow's display formatting, `NULL` for nulls): how tests compare answers.
pub fn rows(batches: &[arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("every Arrow type has a display"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

/// Copies directory `from` into `to` recursively (tests make private copies of the sample mesh
/// to break or change).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes the sample data under `mesh`, replacing earlier data at the same places.
pub async fn generate(mesh: &Path) -> Result<()> {
    let s = Sample::generate();
    for p in [
        paths::PROFILES,
        paths::CATALOG,
        paths::INVENTORY,
        paths::TRANSACTIONS,
        paths::SHIPMENTS,
        paths::CAMPAIGNS,
    ] {
        let path = mesh.join(p);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    write::write_parquet(&mesh.join(paths::PROFILES), &write::customers_batch(&s.customers)?)?;
    write::write_orders_hive(&mesh.join(paths::TRANSACTIONS), &s.orders)?;
    let (p1, p2) = s.products.split_at(PRODUCTS_FIRST_COMMIT);
    write::write_delta(
        &mesh.join(paths::CATALOG),
        vec![write::products_batch(p1)?, write::products_batch(p2)?],
        &["category"],
    )
    .await?;
    let (s1, s2) = s.shipments.split_at(SHIPMENTS_FIRST_COMMIT);
    write::write_delta(
        &mesh.join(paths::SHIPMENTS),
        vec![write::shipments_batch(s1)?, write::shipments_batch(s2)?],
        &["carrier"],
    )
    .await?;
    let (i1, i2): (Vec<_>, Vec<_>) = s.inventory.iter().cloned().partition(|i| i.warehouse != "SIN");
    write::write_iceberg(
        &mesh.join(paths::INVENTORY),
        vec![write::inventory_batch(&i1)?, write::inventory_batch(&i2)?],
        None,
    )
    .await?;
    let half = sample::FIRST_ORDER_DAY + 15;
    let (c1, c2): (Vec<_>, Vec<_>) = s.campaigns.iter().cloned().partition(|c| c.day < half);
    write::write_iceberg(
        &mesh.join(paths::CAMPAIGNS),
        vec![write::campaigns_batch(&c1)?, write::campaigns_batch(&c2)?],
        Some("channel"),
    )
    .await?;
    Ok(())
}
