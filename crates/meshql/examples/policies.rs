//! Access policies from code: serve the sample mesh's products under a policy set built in the
//! program (instead of the mesh's `policies.yaml` files), then run the same query as two
//! principals — one sees every row in clear, the other a row filter and masks — and classify a
//! third principal's refusal with `Error::class()`.
//!
//! ```sh
//! cargo run -p meshql --example policies [MESH_DIR]
//! ```

use meshql::contract::MeshDefinition;
use meshql::{ErrorClass, Mesh, PolicySet, Principal};

/// The global layer: mesh-wide rules and tag rules (same format as `<mesh>/policies.yaml`,
/// documented in docs/policies.md).
const GLOBAL: &str = r#"
rules:
  - name: everyone-discovers
    principals: "*"
    resource: "*"
    grant: [discover]
  - name: contractors-never-customer-data
    principals: { groups: [contractors] }
    resource: customer.*
    deny: [select]
tagRules:
  - name: names-initial-only
    tag: name
    except: { groups: [pii-readers] }
    mask: { type: showFirst, n: 1 }
"#;

/// The customer domain's layer: rules about `customer.*` only.
const CUSTOMER: &str = r#"
rules:
  - name: customer-team-reads-everything
    principals: { groups: [customer-team] }
    resource: customer.*
    grant: [select]
  - name: support-own-region
    principals: { groups: [support] }
    resource: customer.profiles
    grant: [select]
    columns: [customer_id, full_name, email, region, segment]
    rowFilter: "region = ${principal.region}"
  - name: support-no-emails
    principals: { groups: [support] }
    resource: customer.profiles
    masks: { email: { type: redact } }
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "testdata/mesh".to_string());
    // The mesh's products and contracts as usual; only the policies come from this program.
    // `from_yaml` returns every mistake (unlike files, which fail closed and are reported).
    let definition = MeshDefinition::load(&dir)?;
    let policies = PolicySet::from_yaml(GLOBAL, &[("customer", CUSTOMER)])?;
    let mesh = Mesh::with_policies(definition, policies)?;

    let sql = "SELECT customer_id, full_name, email, region
               FROM mesh.customer.profiles ORDER BY customer_id LIMIT 5";

    // Same statement, two principals. Attributes (`region`) feed `${principal.region}`; they
    // come from the application's authentication, never from SQL.
    let owner = Principal::new("maria").with_groups(["customer-team", "pii-readers"]);
    let agent = Principal::new("sam")
        .with_group("support")
        .with_attribute("region", "EU");
    for principal in [owner, agent] {
        let who = format!("{} {:?}", principal.id(), principal.groups());
        let batches = mesh.session(principal).sql(sql).await?.collect().await?;
        println!("as {who}:");
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }

    // A refusal is an error of class AccessDenied: decide on the class, never on the message
    // (which is for people: it names the rule and whom to ask).
    let contractor = mesh.session(Principal::new("carl").with_group("contractors"));
    let outcome = async { contractor.sql(sql).await?.collect().await }.await;
    match outcome {
        Err(e) if e.class() == ErrorClass::AccessDenied => println!("as carl: denied ({e})"),
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("expected carl to be denied".into()),
    }
    Ok(())
}
