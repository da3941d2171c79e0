//! A synthetic mesh of many products, for scale tests and benchmarks: `domains` domains with
//! `per_domain` products each, every product a Parquet output port with its own contract. The
//! data locations need not exist: opening a mesh must not touch them.
//!
//! Policies: everyone discovers, `analysts` read everything; each domain adds four rules (its
//! team reads unmasked, a regional grant with a row filter, a mask for everyone else) plus a
//! restriction on each of its first ten products — hundreds of rules for a mesh of thousands.

use std::path::Path;

use anyhow::Result;

/// Writes the synthetic mesh's YAML under `dir`; every product points at `data_location`.
pub fn write_mesh(dir: &Path, domains: usize, per_domain: usize, data_location: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("mesh.yaml"), "name: synthetic\nmetadataRefreshSeconds: 60\n")?;
    std::fs::write(
        dir.join("policies.yaml"),
        "rules:\n  - {name: everyone-discovers, principals: '*', resource: '*', grant: [discover]}\n\
         \x20 - {name: analysts-read, principals: {groups: [analysts]}, resource: '*', grant: [select]}\n\
         tagRules:\n  - {name: internal-to-contractors, classification: internal, principals: {groups: [contractors]}, deny: [select]}\n",
    )?;
    for d in 0..domains {
        let domain = format!("domain_{d:03}");
        let root = dir.join("domains").join(&domain);
        std::fs::create_dir_all(root.join("products"))?;
        std::fs::create_dir_all(root.join("contracts"))?;
        std::fs::write(
            root.join("domain.yaml"),
            format!("name: {domain}\nowner: team-{d}\ndescription: synthetic domain {d}\n"),
        )?;
        let mut policies = format!(
            "rules:\n\
             \x20 - {{name: team-reads, principals: {{groups: [team-{d}]}}, resource: '{domain}.*', grant: [select]}}\n\
             \x20 - {{name: regional-grant, principals: {{groups: [regional]}}, resource: '{domain}.*', grant: [select], rowFilter: \"value = ${{principal.region}}\"}}\n\
             \x20 - {{name: value-masked, principals: '*', except: {{groups: [team-{d}]}}, resource: '{domain}.*', masks: {{value: {{type: showFirst, n: 2}}}}}}\n\
             \x20 - {{name: no-interns, principals: {{groups: [interns]}}, resource: '{domain}.*', deny: [select]}}\n"
        );
        for p in 0..per_domain.min(10) {
            policies.push_str(&format!(
                "  - {{name: positive-ids-{p}, principals: '*', resource: '{domain}.product_{p:05}', rowFilter: 'id >= 0'}}\n"
            ));
        }
        std::fs::write(root.join("policies.yaml"), policies)?;
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
