//! A synthetic mesh of many products, for scale tests and benchmarks: `domains` domains with
//! `per_domain` products each, every product a Parquet output port with its own contract. The
//! data locations need not exist: opening a mesh must not touch them.

use std::path::Path;

use anyhow::Result;

/// Writes the synthetic mesh's YAML under `dir`; every product points at `data_location`.
pub fn write_mesh(dir: &Path, domains: usize, per_domain: usize, data_location: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("mesh.yaml"), "name: synthetic\nmetadataRefreshSeconds: 60\n")?;
    for d in 0..domains {
        let domain = format!("domain_{d:03}");
        let root = dir.join("domains").join(&domain);
        std::fs::create_dir_all(root.join("products"))?;
        std::fs::create_dir_all(root.join("contracts"))?;
        std::fs::write(
            root.join("domain.yaml"),
            format!("name: {domain}\nowner: team-{d}\ndescription: synthetic domain {d}\n"),
        )?;
        for p in 0..per_domain {
            let product = format!("product_{p:05}");
            let contract_id = format!("urn:datacontract:{domain}:{product}");
            std::fs::write(
                root.join("products").join(format!("{product}.odps.yaml")),
                format!(
                    "apiVersion: v1.0.0\nkind: DataProduct\nid: urn:dataproduct:{domain}:{product}\nname: {product}\n\
                     version: 1.0.0\nstatus: active\ndomain: {domain}\nteam:\n  name: team-{d}\n\
                     outputPorts:\n  - name: {product}\n    version: 1.0.0\n    contractId: {contract_id}\n"
                ),
            )?;
            std::fs::write(
                root.join("contracts").join(format!("{product}.odcs.yaml")),
                format!(
                    "apiVersion: v3.1.0\nkind: DataContract\nid: {contract_id}\nversion: 1.0.0\nstatus: active\n\
                     servers:\n  - server: local\n    type: local\n    format: parquet\n    path: {data_location}\n\
                     schema:\n  - name: {product}\n    properties:\n      - name: id\n        logicalType: integer\n\
                     \x20       required: true\n      - name: value\n        logicalType: string\n        classification: internal\n"
                ),
            )?;
        }
    }
    Ok(())
}
