//! A mesh of thousands of products opens from its YAML alone: no product's storage is touched
//! until a query needs it (the synthetic products all point at data that does not exist).

use meshql::Mesh;

use crate::common::*;

#[tokio::test]
async fn thousands_of_products_open_without_touching_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    meshql_testdata::synthetic::write_mesh(dir.path(), 20, 100, "data/missing.parquet").expect("write");
    let started = std::time::Instant::now();
    let mesh = Mesh::open(dir.path()).expect("opens");
    // Reported, not asserted: timings belong in benches/, not in tests.
    eprintln!("opened 2000 products in {:?}", started.elapsed());
    let def = mesh.definition();
    assert_eq!(def.domains.len(), 20);
    assert_eq!(def.tables.len(), 2000);
    assert!(def.problems.is_empty(), "{:?}", def.problems);
    assert!(def.tables.iter().all(|t| t.binding.is_ok()));

    // metadata queries list them all without opening storage...
    let got = query(&mesh, "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'mesh' AND table_schema NOT IN ('information_schema', 'system')").await;
    assert_eq!(got, vec![vec!["2000".to_string()]]);
    // ...and the first query of a product is where its missing data is found
    let err = query_error(&mesh, "SELECT * FROM mesh.domain_007.product_00042").await;
    assert!(err.contains("mesh.domain_007.product_00042 is unavailable"), "{err}");
    assert!(err.contains("missing.parquet"), "{err}");
}
