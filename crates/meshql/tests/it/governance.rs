//! Issue 5: governance standards, quality checks, system tables, audit trail, live reload.

use std::path::Path;

use meshql::{CheckOptions, Mesh, Principal, QualityOutcome, QualityResult};

use crate::common::*;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    write(path, &text.replacen(from, to, 1));
}

/// Adds `yaml` to the end of mesh.yaml.
fn settings(dir: &Path, yaml: &str) {
    let path = dir.join("mesh.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    // Drop the sample's own governance block so each test states the standards it tests.
    let text = match text.find("\ngovernance:") {
        Some(i) => {
            let rest = &text[i + 1..];
            let end = rest.find("\n\n").map(|e| i + 1 + e).unwrap_or(text.len());
            format!("{}{}", &text[..i + 1], &text[end..])
        }
        None => text,
    };
    write(&path, &format!("{text}\n{yaml}\n"));
}

fn support() -> Principal {
    Principal::new("sam")
        .with_group("support")
        .with_attribute("region", "EU")
}

fn contractor() -> Principal {
    Principal::new("carl").with_group("contractors")
}

fn failures(mesh: &Mesh, table: &str) -> Vec<String> {
    mesh.definition()
        .tables
        .iter()
        .find(|t| format!("{}.{}", t.domain, t.name) == table)
        .unwrap_or_else(|| panic!("no {table}"))
        .compliance
        .failures
        .iter()
        .map(|f| f.rule.clone())
        .collect()
}

#[tokio::test]
async fn every_standard_names_the_products_that_break_it() {
    let dir = copy_of_sample();
    let d = dir.path();
    settings(
        d,
        "governance:\n  enforcement: warn\n  naming: \"^[a-z_]+$\"\n  columnNaming: \"^[a-z_]+$\"\n  requiredMetadata: [owner, description, support, sla, tags, quality]\n  allowedFormats: [parquet, delta]\n  requireClassification: true\n  allowedClassifications: [public, internal, confidential]\n  contractVersion: semver\n  allowedStatuses: [active]",
    );
    edit(
        &d.join("domains/order/contracts/shipments.odcs.yaml"),
        "version: 1.0.0",
        "version: \"2024-07\"",
    );
    edit(
        &d.join("domains/order/contracts/shipments.odcs.yaml"),
        "      - name: carrier\n",
        "      - name: Carrier\n        physicalName: carrier\n",
    );
    edit(
        &d.join("domains/order/contracts/shipments.odcs.yaml"),
        "        classification: internal\n        description: pending",
        "        description: pending",
    );
    // A product name against the naming pattern, and a product without an owning team.
    edit(
        &d.join("domains/product/products/catalog.odps.yaml"),
        "name: catalog\n",
        "name: Catalog\n",
    );
    let inventory_odps = d.join("domains/product/products/inventory.odps.yaml");
    let text = std::fs::read_to_string(&inventory_odps).unwrap();
    let start = text.find("team:").expect("a team block");
    let end = text[start..]
        .find("\nsupport:")
        .map(|e| start + e + 1)
        .expect("support after team");
    write(&inventory_odps, &format!("{}{}", &text[..start], &text[end..]));
    let mesh = Mesh::open(d).expect("open");
    assert!(failures(&mesh, "product.catalog").contains(&"naming".to_string()));
    assert!(failures(&mesh, "product.inventory").contains(&"requiredMetadata.owner".to_string()));
    assert!(!failures(&mesh, "order.transactions").contains(&"naming".to_string()));

    // Iceberg is not an allowed format; no SLA; customer columns are classified `pii`.
    let inventory = failures(&mesh, "product.inventory");
    assert!(inventory.contains(&"allowedFormats".to_string()), "{inventory:?}");
    let profiles = failures(&mesh, "customer.profiles");
    assert!(profiles.contains(&"allowedClassifications".to_string()), "{profiles:?}");
    let shipments = failures(&mesh, "order.shipments");
    for rule in [
        "contractVersion",
        "columnNaming",
        "requireClassification",
        "requiredMetadata.sla",
    ] {
        assert!(
            shipments.contains(&rule.to_string()),
            "{rule} missing from {shipments:?}"
        );
    }

    // Warn: still served, readers are warned, and the system table says why.
    let result = mesh
        .session(analyst())
        .sql("SELECT count(*) FROM mesh.order.shipments")
        .await
        .expect("served");
    assert!(
        result
            .warnings()
            .iter()
            .any(|w| w.contains("does not meet the mesh governance standards") && w.contains("contractVersion")),
        "{:?}",
        result.warnings()
    );
    let rows = query(
        &mesh,
        "SELECT compliant, compliance_failures, served FROM mesh.system.products WHERE product = 'shipments'",
    )
    .await;
    assert_eq!(rows[0][0], "false");
    assert!(
        rows[0][1].contains("contractVersion: contract version \"2024-07\" is not semantic"),
        "{rows:?}"
    );
    assert_eq!(rows[0][2], "true");

    // Block: the same product is not served; the refusal names each failed rule.
    settings(d, "governance:\n  enforcement: block\n  contractVersion: semver");
    let mesh = Mesh::open(d).expect("open");
    let err = query_error(&mesh, "SELECT count(*) FROM mesh.order.shipments").await;
    assert!(err.contains("mesh.order.shipments is unavailable"), "{err}");
    assert!(
        err.contains("blocked by the mesh governance standards: contractVersion"),
        "{err}"
    );
    // Everything else still serves.
    assert_eq!(
        query(&mesh, "SELECT count(*) FROM mesh.order.transactions").await,
        vec![vec!["2000"]]
    );
    let report = mesh
        .check(&CheckOptions {
            quality: false,
            record: false,
            ..Default::default()
        })
        .await;
    let shipments = report
        .products
        .iter()
        .find(|p| p.table == "mesh.order.shipments")
        .unwrap();
    assert!(!shipments.is_ok());
    assert!(
        report.products.iter().filter(|p| !p.is_ok()).count() == 1,
        "only shipments fails"
    );
}

#[tokio::test]
async fn deprecated_products_warn_and_retired_ones_are_not_served() {
    let dir = copy_of_sample();
    let d = dir.path();
    edit(
        &d.join("domains/product/products/inventory.odps.yaml"),
        "status: active",
        "status: deprecated",
    );
    edit(
        &d.join("domains/order/contracts/shipments.odcs.yaml"),
        "status: active",
        "status: retired",
    );
    let mesh = Mesh::open(d).expect("open");
    let result = mesh
        .session(analyst())
        .sql("SELECT count(*) FROM mesh.product.inventory")
        .await
        .expect("served");
    assert!(
        result
            .warnings()
            .iter()
            .any(|w| w.contains("mesh.product.inventory is deprecated")),
        "{:?}",
        result.warnings()
    );
    result.collect().await.expect("runs");
    let err = query_error(&mesh, "SELECT * FROM mesh.order.shipments").await;
    assert!(err.contains("retired and no longer served"), "{err}");
    let rows = query(
        &mesh,
        "SELECT product, lifecycle, served FROM mesh.system.products WHERE lifecycle <> 'active' ORDER BY product",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            vec!["inventory", "deprecated", "true"],
            vec!["shipments", "retired", "false"]
        ]
    );
}

fn result<'a>(results: &'a [QualityResult], check: &str) -> &'a QualityResult {
    results
        .iter()
        .find(|r| r.check == check)
        .unwrap_or_else(|| panic!("no check {check:?} in {results:#?}"))
}

#[tokio::test]
async fn quality_metrics_pass_and_fail_with_measured_values() {
    let dir = copy_of_sample();
    let d = dir.path();
    // Each metric twice: once true of the data, once false. Expected values come from the
    // generator's rows.
    let s = meshql_testdata::sample::Sample::generate();
    let pending = s.shipments.iter().filter(|x| x.status == "pending").count();
    let returned = s.shipments.iter().filter(|x| x.status == "returned").count();
    let carriers: std::collections::BTreeSet<&str> = s.shipments.iter().map(|x| x.carrier.as_str()).collect();
    let quality = format!(
        r#"    quality:
      - {{name: rows, metric: rowCount, mustBe: {n}}}
      - {{name: too few rows, metric: rowCount, mustBeGreaterThan: 1000000}}
      - {{name: carrier per order unique, metric: duplicateValues, arguments: {{properties: [order_id, carrier]}}, mustBe: 0}}
      - {{name: carriers repeat, metric: duplicateValues, arguments: {{properties: [carrier]}}, mustBeLessThan: 1}}
      - {{name: pending dates, metric: nullValues, arguments: {{properties: [shipped_date]}}, mustBe: {pending}}}
      - {{name: pending share, metric: nullValues, arguments: {{properties: [shipped_date]}}, unit: percent, mustBeBetween: [0, 1], severity: warning}}
      - {{name: no returns, metric: invalidValues, arguments: {{properties: [status], validValues: [pending, shipped, delivered]}}, mustBe: 0}}
      - {{name: status pattern, metric: invalidValues, arguments: {{properties: [status], pattern: "^[a-z]+$"}}, mustBe: 0}}
      - {{name: missing, metric: missingValues, arguments: {{properties: [status], missingValues: [returned]}}, mustBe: {returned}}}
      - {{name: missing fails, metric: missingValues, arguments: {{properties: [status], missingValues: [pending]}}, mustBe: 0}}
      - {{name: sql returns, type: sql, query: "SELECT count(*) FROM ${{table}} WHERE status = 'returned'", mustBe: {returned}}}
      - {{name: sql not equal, type: sql, query: "SELECT count(DISTINCT carrier) FROM ${{table}}", mustNotBe: {c}}}
      - {{name: other product, type: sql, query: "SELECT count(*) FROM mesh.customer.profiles", mustBeGreaterThan: 0}}
      - {{name: words, type: text, description: Shipments are complete.}}
      - {{name: broken sql, type: sql, query: "SELECT nope FROM ${{table}}", mustBe: 0}}
      - {{name: writes a file, type: sql, query: "COPY (SELECT 1 AS x) TO '{leak}' STORED AS CSV", mustBe: 0}}
      - {{name: reads a file, type: sql, query: "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{secret}'", mustBe: 0}}
"#,
        n = s.shipments.len(),
        c = carriers.len(),
        leak = d.join("leak.csv").display(),
        secret = d.join("domains/customer/data/profiles.parquet").display(),
    );
    edit(
        &d.join("domains/order/contracts/shipments.odcs.yaml"),
        "    physicalType: table\n",
        &format!("    physicalType: table\n{quality}"),
    );
    let mesh = Mesh::open(d).expect("open");
    let report = mesh
        .check(&CheckOptions {
            product: Some("order.shipments".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(report.products.len(), 1);
    let q = &report.products[0].quality;
    use QualityOutcome::*;
    let expect = [
        ("rows", Passed),
        ("too few rows", Failed),
        ("carrier per order unique", Passed),
        ("carriers repeat", Failed),
        ("pending dates", Passed),
        ("pending share", Failed),
        ("no returns", Failed),
        ("status pattern", Passed),
        ("missing", Passed),
        ("missing fails", Failed),
        ("sql returns", Passed),
        ("sql not equal", Failed),
        ("other product", Error),
        ("words", Skipped),
        ("broken sql", Error),
        ("writes a file", Error),
        ("reads a file", Error),
    ];
    for (check, outcome) in expect {
        assert_eq!(result(q, check).outcome, outcome, "{check}: {:#?}", result(q, check));
    }
    assert_eq!(result(q, "no returns").value, Some(returned as f64));
    assert_eq!(
        result(q, "carriers repeat").value,
        Some((s.shipments.len() - carriers.len()) as f64)
    );
    let share = result(q, "pending share").value.unwrap();
    assert!(
        (share - 100.0 * pending as f64 / s.shipments.len() as f64).abs() < 1e-9,
        "{share}"
    );
    assert!(
        result(q, "other product")
            .message
            .contains("only the product they check"),
        "{:?}",
        result(q, "other product")
    );
    // Contracts cannot use their SQL to write files or to read other data.
    assert!(!d.join("leak.csv").exists());
    // The run is audited, with the SQL it ran.
    let records = mesh.audit().unwrap().read_all().unwrap();
    let run = records
        .iter()
        .find(|r| r.client == "check")
        .expect("an audit record of the checks");
    assert_eq!(run.products, vec!["order.shipments"]);
    assert!(
        run.statement.contains(r#"FROM "mesh"."order"."shipments""#),
        "{}",
        run.statement
    );
    // The sample's own column rules ran too.
    assert_eq!(result(q, "shipped_date set for 90% of shipments").outcome, Failed);
    assert_eq!(result(q, "status is a known state").outcome, Passed);
    // A warning failure does not fail the product; an error failure does.
    assert!(!report.products[0].is_ok());
    assert!(!result(q, "pending share").is_blocking());
}

#[tokio::test]
async fn freshness_from_an_element_and_from_the_last_commit() {
    let dir = copy_of_sample();
    let d = dir.path();
    // product.catalog is Delta: its last commit is the copy's log file time, i.e. now.
    let catalog = d.join("domains/product/contracts/catalog.odcs.yaml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    write(
        &catalog,
        &format!("{text}\nslaProperties:\n  - property: frequency\n    value: 1\n    unit: d\n"),
    );
    let mesh = Mesh::open(d).expect("open");
    let report = mesh.check(&CheckOptions::default()).await;
    let of = |table: &str| {
        report
            .products
            .iter()
            .find(|p| p.table == table)
            .unwrap()
            .quality
            .iter()
            .find(|r| r.kind == "freshness")
            .cloned()
            .unwrap_or_else(|| panic!("no freshness for {table}"))
    };
    // Inventory's updated_at values are years old; its SLA allows 4 hours.
    let inventory = of("mesh.product.inventory");
    assert_eq!(inventory.outcome, QualityOutcome::Failed, "{inventory:?}");
    assert!(inventory.message.contains("expected age <= 4 h"), "{inventory:?}");
    let catalog = of("mesh.product.catalog");
    assert_eq!(catalog.outcome, QualityOutcome::Passed, "{catalog:?}");
    assert!(catalog.value.unwrap() < 3600.0, "{catalog:?}");
    // Parquet without an element cannot be dated: skipped, said so.
    let profiles = of("mesh.customer.profiles");
    assert_eq!(profiles.outcome, QualityOutcome::Skipped, "{profiles:?}");
}

#[tokio::test]
async fn quality_results_and_audit_survive_a_restart_with_history() {
    let dir = copy_of_sample();
    let d = dir.path();
    {
        let mesh = Mesh::open(d).expect("open");
        mesh.check(&CheckOptions::default()).await;
        mesh.check(&CheckOptions::default()).await;
        query_as(&mesh, support(), "SELECT count(*) FROM mesh.customer.profiles")
            .await
            .expect("runs");
    }
    let mesh = Mesh::open(d).expect("reopen");
    let history = mesh.quality().history();
    let runs = history
        .iter()
        .filter(|r| r.check == "shipped_date set for 90% of shipments")
        .count();
    assert_eq!(runs, 2, "two runs kept");
    let latest = query_as(
        &mesh,
        admin(),
        "SELECT count(*) FILTER (WHERE latest), count(*) FROM mesh.system.quality WHERE check_name = 'shipped_date set for 90% of shipments'",
    )
    .await
    .unwrap();
    assert_eq!(latest, vec![vec!["1", "2"]]);
    let rows = query_as(
        &mesh,
        admin(),
        "SELECT principal, outcome, rows FROM mesh.system.queries WHERE principal = 'sam'",
    )
    .await
    .unwrap();
    assert_eq!(rows, vec![vec!["sam", "ok", "1"]]);
}

#[tokio::test]
async fn every_query_is_audited_with_products_columns_policies_and_outcome() {
    let dir = copy_of_sample();
    let mesh = Mesh::open(dir.path()).expect("open");
    query_as(
        &mesh,
        support(),
        "SELECT full_name, email FROM mesh.customer.profiles WHERE segment = 'consumer'",
    )
    .await
    .expect("runs");
    let denied = query_as(&mesh, contractor(), "SELECT * FROM mesh.customer.profiles").await;
    assert!(denied.unwrap_err().contains("access denied"));
    assert!(query_as(&mesh, support(), "SELECT nope FROM mesh.customer.profiles")
        .await
        .is_err());
    // A result dropped before its end is recorded as cancelled.
    let stream = mesh
        .session(analyst())
        .sql("SELECT * FROM mesh.order.transactions")
        .await
        .unwrap()
        .stream()
        .await
        .unwrap();
    drop(stream);

    let records = mesh.audit().expect("audit on").read_all().expect("read");
    let ok = records
        .iter()
        .find(|r| r.principal == "sam" && r.outcome == "ok")
        .expect("sam's query");
    assert_eq!(ok.products, vec!["customer.profiles"]);
    assert!(
        ok.columns.contains(&"customer.profiles.email".to_string()),
        "{:?}",
        ok.columns
    );
    assert!(
        !ok.columns.contains(&"customer.profiles.birth_date".to_string()),
        "{:?}",
        ok.columns
    );
    for rule in ["support-own-region", "email-pseudonymised", "names-initial-only"] {
        assert!(
            ok.policies.contains(&rule.to_string()),
            "{rule} not in {:?}",
            ok.policies
        );
    }
    assert!(ok.rows > 0 && ok.bytes > 0 && ok.duration_ms > 0.0, "{ok:?}");
    assert_eq!(ok.client, "embedded");
    let denied = records.iter().find(|r| r.principal == "carl").expect("carl's query");
    assert_eq!(denied.outcome, "denied");
    assert!(
        denied
            .error
            .as_deref()
            .unwrap_or("")
            .contains("contractors-never-customer-data"),
        "{denied:?}"
    );
    assert!(records.iter().any(|r| r.principal == "sam" && r.outcome == "error"));
    assert!(records
        .iter()
        .any(|r| r.principal == "test-analyst" && r.outcome == "cancelled"));

    // Administrators see every query; others only their own.
    let all = query_as(
        &mesh,
        admin(),
        "SELECT count(DISTINCT principal) FROM mesh.system.queries",
    )
    .await
    .unwrap();
    assert!(all[0][0].parse::<i64>().unwrap() >= 3, "{all:?}");
    let own = query_as(&mesh, support(), "SELECT DISTINCT principal FROM mesh.system.queries")
        .await
        .unwrap();
    assert_eq!(own, vec![vec!["sam"]]);
}

#[tokio::test]
async fn system_tables_show_only_what_the_principal_may_discover() {
    let dir = copy_of_sample();
    let mesh = Mesh::open(dir.path()).expect("open");
    // Contractors may not discover interop products; they discover customer products but may
    // not read them.
    let products = query_as(
        &mesh,
        contractor(),
        "SELECT domain, product, readable FROM mesh.system.products ORDER BY 1, 2",
    )
    .await
    .unwrap();
    assert!(products.iter().all(|r| r[0] != "interop"), "{products:?}");
    assert!(products.contains(&vec!["customer".into(), "profiles".into(), "false".into()]));
    assert!(products.contains(&vec!["order".into(), "transactions".into(), "true".into()]));
    let lineage = query_as(&mesh, contractor(), "SELECT * FROM mesh.system.lineage")
        .await
        .unwrap();
    assert!(
        lineage.iter().all(|r| r[0] != "interop" && r[2] != "interop"),
        "{lineage:?}"
    );
    // Storage locations only where the principal may read.
    let ports = query_as(
        &mesh,
        contractor(),
        "SELECT product, location FROM mesh.system.ports WHERE domain = 'customer'",
    )
    .await
    .unwrap();
    assert_eq!(ports, vec![vec!["profiles", "NULL"]]);
    // Support agents do not see birth_date at all, and see email as masked.
    let cols = query_as(
        &mesh,
        support(),
        "SELECT column_name, classification, tags, masked FROM mesh.system.columns WHERE product = 'profiles' ORDER BY ordinal",
    )
    .await
    .unwrap();
    assert!(cols.iter().all(|r| r[0] != "birth_date"), "{cols:?}");
    assert!(
        cols.contains(&vec!["email".into(), "pii".into(), "pii, email".into(), "true".into()]),
        "{cols:?}"
    );
    // Lineage from ODPS input ports: marketing's campaign performance reads order transactions.
    let lineage = query(
        &mesh,
        "SELECT from_domain, from_product, to_domain, to_product FROM mesh.system.lineage ORDER BY 1, 2",
    )
    .await;
    assert!(
        lineage.contains(&vec![
            "order".into(),
            "transactions".into(),
            "marketing".into(),
            "campaign_performance".into()
        ]),
        "{lineage:?}"
    );
    // Domains: contractors still see customer (a discoverable product) but not interop.
    let domains = query_as(&mesh, contractor(), "SELECT domain FROM mesh.system.domains ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        domains,
        vec![vec!["customer"], vec!["marketing"], vec!["order"], vec!["product"]]
    );
    // With `system` as the current schema, bare names reach the same tables.
    let bare = mesh
        .session(contractor())
        .sql_in("SELECT count(*) FROM products WHERE domain = 'interop'", Some("system"))
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    assert_eq!(rows(&bare), vec![vec!["0"]]);
    // Problems are for administrators.
    assert!(query_as(&mesh, contractor(), "SELECT * FROM mesh.system.problems")
        .await
        .unwrap()
        .is_empty());
    // The schema cannot be changed, and no domain may be called `system`.
    assert!(query_error(&mesh, "DROP TABLE mesh.system.queries")
        .await
        .contains("only queries"));
}

#[tokio::test]
async fn owners_see_who_uses_their_products() {
    let dir = copy_of_sample();
    let mesh = Mesh::open(dir.path()).expect("open");
    query_as(&mesh, support(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .unwrap();
    query_as(&mesh, support(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .unwrap();
    query_as(&mesh, contractor(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .unwrap_err();
    query_as(&mesh, analyst(), "SELECT count(*) FROM mesh.order.transactions")
        .await
        .unwrap();
    // meshql's own quality checks read the product too, but are not a consumer.
    mesh.check(&CheckOptions::default()).await;
    let owner = Principal::new("maria").with_group("customer-data-team");
    let usage = query_as(
        &mesh,
        owner,
        "SELECT domain, product, consumer, queries, denied FROM mesh.system.usage ORDER BY consumer",
    )
    .await
    .unwrap();
    assert_eq!(
        usage,
        vec![
            vec!["customer", "profiles", "carl", "1", "1"],
            vec!["customer", "profiles", "sam", "2", "0"],
        ]
    );
    // A consumer is nobody's owner: no usage rows.
    assert!(query_as(&mesh, support(), "SELECT * FROM mesh.system.usage")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn live_reload_applies_good_edits_and_keeps_the_last_good_version_of_bad_ones() {
    let dir = copy_of_sample();
    let d = dir.path();
    let mesh = Mesh::open(d).expect("open");
    let session = mesh.session(support());
    let count = |s: meshql::Session, sql: &'static str| async move {
        let b = s
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(rows(&b))
    };
    assert!(count(session.clone(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .is_ok());

    // Nothing changed: nothing reloaded.
    assert!(!mesh.reload().await.applied);

    // 1. A good contract edit takes effect (a new description, seen in system.columns).
    let contract = d.join("domains/customer/contracts/profiles.odcs.yaml");
    edit(
        &contract,
        "description: First and last name.",
        "description: Given and family name.",
    );
    let outcome = mesh.reload().await;
    assert!(
        outcome.applied && outcome.changed == vec!["customer.profiles"],
        "{outcome:?}"
    );
    let desc = query(
        &mesh,
        "SELECT description FROM mesh.system.columns WHERE column_name = 'full_name'",
    )
    .await;
    assert_eq!(desc, vec![vec!["Given and family name."]]);

    // 2. A broken edit is rejected: the last good version keeps serving, the problem is reported.
    write(
        &contract,
        &std::fs::read_to_string(&contract)
            .unwrap()
            .replace("logicalType: string", "logicalType: strnig"),
    );
    let outcome = mesh.reload().await;
    assert_eq!(outcome.rejected, vec!["customer.profiles"], "{outcome:?}");
    assert!(count(session.clone(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .is_ok());
    let problems = query_as(
        &mesh,
        admin(),
        "SELECT product, message FROM mesh.system.problems WHERE product IS NOT NULL",
    )
    .await
    .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0][1].contains("last good version still served") && problems[0][1].contains("strnig"),
        "{problems:?}"
    );

    // 3. Publishing a product is writing its files.
    let order = d.join("domains/order");
    let product = std::fs::read_to_string(order.join("products/shipments.odps.yaml")).unwrap();
    write(
        &order.join("products/deliveries.odps.yaml"),
        &product
            .replace("urn:dataproduct:order:shipments", "urn:dataproduct:order:deliveries")
            .replace("name: shipments", "name: deliveries"),
    );
    let outcome = mesh.reload().await;
    assert_eq!(outcome.added, vec!["order.deliveries"], "{outcome:?}");
    let shipments = meshql_testdata::sample::Sample::generate().shipments.len();
    assert_eq!(
        query(&mesh, "SELECT count(*) FROM mesh.order.deliveries").await,
        vec![vec![shipments.to_string()]]
    );

    // 4. A policy edit that does not load keeps the previous policies (all of them).
    let policies = d.join("domains/customer/policies.yaml");
    let good = std::fs::read_to_string(&policies).unwrap();
    write(&policies, &format!("{good}\n  - name: broken\n    principals: nope\n"));
    let outcome = mesh.reload().await;
    assert!(outcome.rejected.contains(&"policies".to_string()), "{outcome:?}");
    assert!(count(session.clone(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .is_ok());

    // 5. A good policy edit applies to sessions already open: revoking support's grants.
    write(
        &policies,
        &good.replace("principals: { groups: [support] }", "principals: { groups: [nobody] }"),
    );
    let outcome = mesh.reload().await;
    assert!(outcome.policies_changed, "{outcome:?}");
    let err = count(session.clone(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .unwrap_err();
    assert!(err.contains("access denied") || err.contains("not found"), "{err}");
}

#[tokio::test]
async fn a_server_picks_up_edits_by_itself() {
    let dir = copy_of_sample();
    let d = dir.path().to_path_buf();
    let mesh = Mesh::open(&d).expect("open");
    let _watch = mesh.watch(std::time::Duration::from_millis(100));
    let before = mesh.generation();
    let order = d.join("domains/order");
    let product = std::fs::read_to_string(order.join("products/shipments.odps.yaml")).unwrap();
    write(
        &order.join("products/parcels.odps.yaml"),
        &product
            .replace("urn:dataproduct:order:shipments", "urn:dataproduct:order:parcels")
            .replace("name: shipments", "name: parcels"),
    );
    for _ in 0..100 {
        if mesh.generation() > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(mesh.generation() > before, "not reloaded within 5 s");
    assert!(!query(&mesh, "SELECT count(*) FROM mesh.order.parcels").await.is_empty());
}

#[tokio::test]
async fn a_server_runs_quality_checks_on_a_schedule() {
    let dir = copy_of_sample();
    let mesh = Mesh::open(dir.path()).expect("open");
    assert!(mesh.quality().history().is_empty());
    let _schedule = mesh.schedule_quality_checks(std::time::Duration::from_millis(200));
    for _ in 0..100 {
        if !mesh.quality().history().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let latest = mesh.quality().latest();
    assert!(
        latest
            .iter()
            .any(|r| r.check == "shipped_date set for 90% of shipments" && r.outcome == QualityOutcome::Failed),
        "{latest:#?}"
    );
}

/// Policies given by the embedding code are the ones enforced, before and after a live reload:
/// a policy file written into the mesh directory cannot replace them (it could loosen them).
#[tokio::test]
async fn policies_given_in_code_survive_live_reload() {
    let dir = copy_of_sample();
    let d = dir.path();
    // In code: the analysts may discover and read the customer profiles; nobody else reads.
    let global = "rules:\n  - name: analysts-read-profiles\n    principals: { groups: [analysts] }\n    resource: customer.profiles\n    grant: [discover, select]\n";
    let policies = meshql::PolicySet::from_yaml(global, &[]).expect("policies");
    let def = meshql::contract::MeshDefinition::load(d).expect("mesh");
    let mesh = Mesh::with_policies(def, policies).expect("mesh");
    let refused = |mesh: &Mesh| {
        let session = mesh.session(Principal::new("carl").with_group("contractors"));
        async move {
            match session.sql("SELECT count(*) FROM mesh.customer.profiles").await {
                Ok(r) => r.collect().await.is_err(),
                Err(e) => matches!(
                    e.class(),
                    meshql::ErrorClass::AccessDenied | meshql::ErrorClass::InvalidQuery
                ),
            }
        }
    };
    assert!(refused(&mesh).await);

    // The files on disk say anyone may read everything; a contract edit triggers a reload.
    write(
        &d.join("policies.yaml"),
        "rules:\n  - name: open\n    principals: \"*\"\n    resource: \"*\"\n    grant: [discover, select]\n",
    );
    edit(
        &d.join("domains/customer/contracts/profiles.odcs.yaml"),
        "description: First and last name.",
        "description: Given and family name.",
    );
    let outcome = mesh.reload().await;
    assert!(outcome.applied && !outcome.policies_changed, "{outcome:?}");
    assert!(refused(&mesh).await, "the file's policies replaced the code's");
    let desc = query(
        &mesh,
        "SELECT description FROM mesh.system.columns WHERE column_name = 'full_name'",
    )
    .await;
    assert_eq!(desc, vec![vec!["Given and family name."]]);
}
