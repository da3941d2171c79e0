//! The doors an independent attack suite found around the policies, each tried again as a
//! class: another table of the same product, another EXPLAIN format, a system table, an error
//! raised on a hidden row, a message listing names. Every test failed before its fix.

use meshql::contract::MeshDefinition;
use meshql::{CheckOptions, ErrorClass, Mesh, PolicySet, Principal};
use meshql_testdata::sample::Sample;

use crate::common::*;

/// A mesh over `dir` with these policies instead of its own.
fn with_policies(dir: &std::path::Path, global: &str, domains: &[(&str, &str)]) -> Mesh {
    let def = MeshDefinition::load(dir).expect("mesh loads");
    let policies = PolicySet::from_yaml(global, domains).expect("policies load");
    Mesh::with_policies(def, policies).expect("mesh")
}

async fn error_of(mesh: &Mesh, p: Principal, sql: &str) -> meshql::Error {
    let session = mesh.session(p);
    match session.sql(sql).await {
        Err(e) => e,
        Ok(q) => match q.collect().await {
            Err(e) => e,
            Ok(b) => panic!("{sql}: should have failed, returned {} batches", b.len()),
        },
    }
}

const EVERYONE_DISCOVERS: &str = r#"
admins: { groups: [platform-admins] }
rules:
  - name: everyone-discovers
    principals: "*"
    resource: "*"
    grant: [discover]
"#;

/// Publishes version 0.9.0 of the marketing product's `daily` port next to 1.0.0: meshql serves
/// it as `campaign_performance_v0_9_0`.
fn publish_old_version(dir: &std::path::Path) {
    let path = dir.join("domains/marketing/products/campaign_performance.odps.yaml");
    let text = std::fs::read_to_string(&path).expect("descriptor");
    let text = format!(
        "{text}  - name: daily\n    version: 0.9.0\n    contractId: urn:datacontract:marketing:campaign-performance\n"
    );
    std::fs::write(&path, text).expect("write descriptor");
}

#[tokio::test]
async fn product_rules_cover_every_port_and_version_of_the_product() {
    let dir = copy_of_sample();
    publish_old_version(dir.path());
    // The sample's own policies: contractors see `impressions` as NULL on the product.
    let mesh = Mesh::open(dir.path()).expect("open");
    let sql = |t: &str| format!("SELECT count(impressions), max(impressions), count(*) FROM mesh.marketing.{t}");
    let current = query_as(&mesh, carl(), &sql("campaign_performance"))
        .await
        .expect("current");
    let older = query_as(&mesh, carl(), &sql("campaign_performance_v0_9_0"))
        .await
        .expect("older");
    assert_eq!(current[0][..2], ["0", "NULL"], "{current:?}");
    assert_eq!(older, current, "the older version is masked like the product");

    // A deny on a product with two ports covers both port tables; a rule on one port (or one
    // version of it) covers that port only.
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: readers
    principals: {{ groups: [readers] }}
    resource: \"*\"
    grant: [select]
  - name: no-deltars-for-x
    principals: {{ groups: [x] }}
    resource: interop.deltars_events
    deny: [select]
  - name: no-first-commit-for-y
    principals: {{ groups: [y] }}
    resource: interop.deltars_events:first_commit
    deny: [select]
  - name: no-latest-1-0-0-for-z
    principals: {{ groups: [z] }}
    resource: interop.deltars_events:latest@1.0.0
    deny: [select]
  - name: a-typo
    principals: {{ groups: [z] }}
    resource: interop.deltars_event
    deny: [select]
  - name: a-version-never-published
    principals: {{ groups: [z] }}
    resource: interop.deltars_events:latest@9.9.9
    deny: [select]
"
    );
    let mesh = with_policies(dir.path(), &global, &[]);
    let reader = |g: &str| Principal::new(g).with_groups(["readers", g]);
    for (who, latest_readable, first_readable) in [("x", false, false), ("y", true, false), ("z", false, true)] {
        for (table, readable) in [
            ("deltars_events_latest", latest_readable),
            ("deltars_events_first_commit", first_readable),
        ] {
            let q = format!("SELECT count(*) FROM mesh.interop.{table}");
            match query_as(&mesh, reader(who), &q).await {
                Ok(_) => assert!(readable, "{who} read {table}"),
                Err(e) => {
                    assert!(!readable, "{who} should read {table}: {e}");
                    assert!(e.contains("access denied"), "{e}");
                }
            }
        }
    }
    // `meshql check` names the rules that match nothing.
    let report = mesh
        .check(&CheckOptions {
            quality: false,
            record: false,
            ..CheckOptions::default()
        })
        .await;
    let warnings = report.warnings.join("\n");
    assert!(
        warnings.contains("'a-typo'") && warnings.contains("interop.deltars_event'"),
        "{warnings}"
    );
    assert!(warnings.contains("'a-version-never-published'"), "{warnings}");
    assert!(!warnings.contains("no-latest-1-0-0-for-z"), "{warnings}");
}

#[tokio::test]
async fn quality_values_are_for_those_who_may_read_the_whole_product() {
    let dir = copy_of_sample();
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: full
    principals: {{ groups: [full] }}
    resource: order.shipments
    grant: [select]
  - name: filtered
    principals: {{ groups: [filtered] }}
    resource: order.shipments
    grant: [select]
    rowFilter: \"carrier = 'dhl'\"
  - name: masked
    principals: {{ groups: [masked] }}
    resource: order.shipments
    grant: [select]
  - name: masked-status
    principals: {{ groups: [masked] }}
    resource: order.shipments
    masks: {{ status: {{ type: nullify }} }}
  - name: denied
    principals: {{ groups: [denied] }}
    resource: order.shipments
    deny: [select]
  - name: no-dates
    principals: {{ groups: [no-dates] }}
    resource: order.shipments
    deny: [discover]
    columns: [shipped_date]
"
    );
    let mesh = with_policies(dir.path(), &global, &[]);
    mesh.check(&CheckOptions::default()).await;
    let sql = "SELECT check_name, outcome, value, expectation, message, duration_ms FROM mesh.system.quality \
               WHERE domain = 'order' AND product = 'shipments' ORDER BY check_name";
    let full = query_as(&mesh, Principal::new("f").with_group("full"), sql)
        .await
        .expect("full");
    assert_eq!(full.len(), 2, "{full:?}");
    assert!(
        full.iter().all(|r| r[2] != "NULL" && r[4] != "NULL" && r[5] != "NULL"),
        "{full:?}"
    );
    let outcomes: Vec<(String, String)> = full.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    for group in ["filtered", "masked", "denied", "nobody"] {
        let rows = query_as(&mesh, Principal::new(group).with_group(group), sql)
            .await
            .expect(group);
        let shown: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        assert_eq!(shown, outcomes, "{group} sees each check's outcome");
        assert!(
            rows.iter().all(|r| r[2..].iter().all(|v| v == "NULL")),
            "{group} sees no value, expectation, message or duration: {rows:?}"
        );
    }
    // A check about a column the principal may not discover is not shown at all.
    let rows = query_as(&mesh, Principal::new("n").with_groups(["full", "no-dates"]), sql)
        .await
        .expect("no-dates");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(!format!("{rows:?}").contains("shipped_date"), "{rows:?}");
}

#[tokio::test]
async fn explain_shows_rules_by_name_never_their_text_in_any_format() {
    let mesh = sample_mesh();
    let sql = "SELECT * FROM mesh.customer.profiles";
    let plain = format!(
        "{:?}",
        query_as(&mesh, sam(), &format!("EXPLAIN {sql}"))
            .await
            .expect("explain")
    );
    for format in ["indent", "pgjson", "graphviz"] {
        let text = format!(
            "{:?}",
            query_as(&mesh, sam(), &format!("EXPLAIN FORMAT {format} {sql}"))
                .await
                .unwrap_or_else(|e| panic!("{format}: {e}"))
        );
        // No literal of a row filter or mask, no mask function, no file.
        for secret in ["EU", "Int64(0)", "--", "date_trunc", "mask_", ".parquet", "Utf8("] {
            assert!(!text.contains(secret), "{format} shows {secret}: {text}");
        }
        assert!(text.contains("mesh.customer.profiles"), "{format}: {text}");
        assert!(text.contains("support-own-region"), "{format} names the rules: {text}");
    }
    assert!(plain.contains("support-coarse-signup-and-country"), "{plain}");
    // The tree format is the physical plan only: for administrators.
    for p in [sam(), ana()] {
        let e = error_of(&mesh, p, &format!("EXPLAIN FORMAT TREE {sql}")).await;
        assert_eq!(e.class(), ErrorClass::NotAllowed, "{e}");
    }
    let tree = query_as(&mesh, admin(), &format!("EXPLAIN FORMAT TREE {sql}"))
        .await
        .expect("admins see physical plans");
    assert!(format!("{tree:?}").contains("DataSourceExec"), "{tree:?}");
    // A user predicate that crossed the barrier does not bring the row filter with it.
    let text = format!(
        "{:?}",
        query_as(
            &mesh,
            sam(),
            "EXPLAIN SELECT count(*) FROM mesh.customer.profiles WHERE customer_id < 50"
        )
        .await
        .expect("explain")
    );
    assert!(!text.contains("EU") && !text.contains("Utf8("), "{text}");
}

#[tokio::test]
async fn errors_raised_under_the_barrier_carry_no_value() {
    let s = Sample::generate();
    let statuses: Vec<String> = s.shipments.iter().map(|x| x.status.clone()).collect();
    let customers: Vec<String> = s.customers.iter().map(|c| c.full_name.clone()).collect();
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: cast-filter
    principals: {{ groups: [a] }}
    resource: order.shipments
    grant: [select]
    rowFilter: \"CAST(status AS INT) = 1\"
  - name: readers
    principals: {{ groups: [b, c] }}
    resource: \"*\"
    grant: [select]
  - name: cast-mask
    principals: {{ groups: [b] }}
    resource: customer.profiles
    masks: {{ full_name: {{ type: sql, expression: \"CAST({{column}} AS INT)\" }} }}
  - name: cast-restriction
    principals: {{ groups: [c] }}
    resource: customer.profiles
    rowFilter: \"CAST(full_name AS BIGINT) > 0\"
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    for (who, sql, values, rule) in [
        (
            "a",
            "SELECT count(*) FROM mesh.order.shipments",
            &statuses,
            "cast-filter",
        ),
        (
            "b",
            "SELECT full_name FROM mesh.customer.profiles",
            &customers,
            "cast-mask",
        ),
        (
            "c",
            "SELECT customer_id FROM mesh.customer.profiles",
            &customers,
            "cast-restriction",
        ),
    ] {
        let e = error_of(&mesh, Principal::new(who).with_group(who), sql).await;
        let text = e.to_string();
        assert_eq!(e.class(), ErrorClass::PolicyEvaluation, "{text}");
        assert!(text.contains(rule), "names the rule: {text}");
        assert!(text.contains("contact the product owner"), "says whom to ask: {text}");
        assert!(!text.contains("Cannot cast") && !text.contains("Utf8"), "{text}");
        for v in values.iter() {
            assert!(
                !text.contains(&format!("'{v}'")),
                "{who} sees a hidden value {v}: {text}"
            );
        }
        // An administrator subject to the same rule sees the cause.
        let admin = Principal::new(who).with_groups([who, "platform-admins"]);
        let cause = error_of(&mesh, admin, sql).await.to_string();
        assert!(cause.contains("Cannot cast") || cause.contains("cast"), "{cause}");
    }
}

#[tokio::test]
async fn errors_never_name_a_hidden_column_or_an_undiscoverable_product() {
    let mesh = sample_mesh();
    // birth_date is hidden from sam; interop is hidden from carl.
    for (p, sql, secrets) in [
        (sam(), "SELECT nope FROM mesh.customer.profiles", &["birth_date"][..]),
        (
            sam(),
            "SELECT profiles.nope FROM mesh.customer.profiles",
            &["birth_date"],
        ),
        (sam(), "SELECT birth_date FROM mesh.customer.profiles", &[]),
        (
            carl(),
            "SELECT * FROM mesh.interop.nope",
            &["deltars_events", "pyarrow_events", "pyiceberg_events"],
        ),
    ] {
        let e = error_of(&mesh, p, sql).await.to_string();
        for secret in secrets {
            assert!(!e.contains(secret), "{sql}: {e}");
        }
    }
    // A hidden column reads exactly like a column that does not exist.
    let hidden = error_of(&mesh, sam(), "SELECT birth_date FROM mesh.customer.profiles")
        .await
        .to_string();
    let missing = error_of(&mesh, sam(), "SELECT birth_datf FROM mesh.customer.profiles")
        .await
        .to_string();
    assert_eq!(hidden.replace("birth_date", "X"), missing.replace("birth_datf", "X"));

    // A policy that cannot be applied: its parser message would list every column, hidden
    // ones included.
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: read
    principals: {{ groups: [g] }}
    resource: customer.profiles
    grant: [select]
  - name: hide
    principals: {{ groups: [g] }}
    resource: customer.profiles
    deny: [discover]
    columns: [birth_date]
  - name: broken
    principals: {{ groups: [g] }}
    resource: customer.profiles
    rowFilter: \"no_such_column = 1\"
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    let e = error_of(
        &mesh,
        Principal::new("g").with_group("g"),
        "SELECT count(*) FROM mesh.customer.profiles",
    )
    .await;
    assert_eq!(e.class(), ErrorClass::AccessDenied, "{e}");
    let text = e.to_string();
    assert!(!text.contains("birth_date") && !text.contains("Valid fields"), "{text}");
    assert!(text.contains("cannot be applied"), "{text}");
}

#[tokio::test]
async fn select_into_is_refused_before_anything_runs() {
    let mesh = sample_mesh();
    for sql in [
        "SELECT * INTO copied FROM mesh.customer.profiles",
        "SELECT 1 INTO t UNION ALL SELECT 2",
        "EXPLAIN SELECT * INTO copied FROM mesh.customer.profiles",
    ] {
        for p in [sam(), admin()] {
            let e = error_of(&mesh, p, sql).await;
            assert_eq!(e.class(), ErrorClass::NotAllowed, "{sql}: {e}");
            assert!(e.to_string().contains("only queries are allowed"), "{sql}: {e}");
        }
    }
}

#[tokio::test]
async fn refusals_are_recognised_by_type_in_the_audit_trail() {
    let dir = copy_of_sample();
    let mesh = Mesh::open(dir.path()).expect("open");
    // A refusal, a column denial raised by the optimiser, and an ordinary error whose text
    // contains the words "access denied".
    let _ = error_of(&mesh, carl(), "SELECT * FROM mesh.customer.profiles").await;
    let _ = error_of(&mesh, carl(), "SELECT amount FROM mesh.order.transactions").await;
    let e = error_of(&mesh, carl(), "SELECT CAST('access denied' AS INT)").await;
    assert!(e.to_string().contains("access denied"), "{e}");
    assert_ne!(e.class(), ErrorClass::AccessDenied, "{e}");
    let rows = query_as(
        &mesh,
        admin(),
        "SELECT statement, outcome FROM mesh.system.queries WHERE principal = 'carl' ORDER BY statement",
    )
    .await
    .expect("audit");
    assert_eq!(
        rows,
        [
            ["SELECT * FROM mesh.customer.profiles", "denied"],
            ["SELECT CAST('access denied' AS INT)", "error"],
            ["SELECT amount FROM mesh.order.transactions", "denied"],
        ],
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_grants_columns_are_readable_on_that_grants_rows_only() {
    let s = Sample::generate();
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: eu-everything
    principals: {{ groups: [g] }}
    resource: customer.profiles
    grant: [select]
    rowFilter: \"region = 'EU'\"
  - name: ids-everywhere
    principals: {{ groups: [g] }}
    resource: customer.profiles
    grant: [select]
    columns: [customer_id]
  - name: na-phones
    principals: {{ groups: [h] }}
    resource: customer.profiles
    grant: [select]
    columns: [customer_id, region, phone]
    rowFilter: \"region = 'NA'\"
  - name: eu-emails
    principals: {{ groups: [h] }}
    resource: customer.profiles
    grant: [select]
    columns: [customer_id, region, email]
    rowFilter: \"region = 'EU'\"
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    let g = Principal::new("g").with_group("g");
    // Every id (the unfiltered grant), but names only of the EU rows.
    let rows = query_as(
        &mesh,
        g.clone(),
        "SELECT count(*), count(full_name), count(region) FROM mesh.customer.profiles",
    )
    .await
    .expect("g");
    let eu = s.customers.iter().filter(|c| c.region == "EU").count();
    assert_eq!(rows, [[s.customers.len().to_string(), eu.to_string(), eu.to_string()]]);
    // The filter on a partly granted column stays above the barrier: it sees NULL elsewhere.
    let rows = query_as(
        &mesh,
        g,
        "SELECT count(*) FROM mesh.customer.profiles WHERE region <> 'EU'",
    )
    .await
    .expect("g");
    assert_eq!(rows, [["0"]]);
    let h = Principal::new("h").with_group("h");
    let rows = query_as(
        &mesh,
        h,
        "SELECT region, count(*), count(phone), count(email) FROM mesh.customer.profiles GROUP BY region ORDER BY region",
    )
    .await
    .expect("h");
    let count = |r: &str| s.customers.iter().filter(|c| c.region == r).count().to_string();
    assert_eq!(
        rows,
        [
            ["EU".to_string(), count("EU"), "0".to_string(), count("EU")],
            ["NA".to_string(), count("NA"), count("NA"), "0".to_string()],
        ]
    );
}

#[tokio::test]
async fn a_row_filter_that_can_fail_is_no_oracle_for_chosen_rows() {
    let s = Sample::generate();
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: eu-or-numeric-names
    principals: {{ groups: [t] }}
    resource: customer.profiles
    grant: [select]
    rowFilter: \"CASE WHEN region = 'EU' THEN true ELSE CAST(full_name AS INT) > 0 END\"
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    let visible = s.customers.iter().find(|c| c.region == "EU").expect("an EU customer");
    let hidden = s.customers.iter().find(|c| c.region != "EU").expect("another");
    // Whichever row a user predicate picks — visible, hidden or absent — the answer is the same
    // withheld error: the row filter runs on every row, not on the rows the predicate chose.
    for id in [visible.customer_id, hidden.customer_id, 999_999] {
        for extra in ["", " AND signup_ts < TIMESTAMP '2100-01-01 00:00:00'"] {
            let sql = format!("SELECT count(*) FROM mesh.customer.profiles WHERE customer_id = {id}{extra}");
            let e = error_of(&mesh, Principal::new("t").with_group("t"), &sql).await;
            assert_eq!(e.class(), ErrorClass::PolicyEvaluation, "{sql}: {e}");
            // Printed with its whole chain (as the CLI does), the cause stays withheld.
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&s.to_string());
                source = s.source();
            }
            assert!(
                !chain.contains("Cannot cast") && !chain.contains(&hidden.full_name),
                "{chain}"
            );
        }
    }
}

#[tokio::test]
async fn the_audit_trail_names_the_columns_a_query_takes_not_what_its_policies_read() {
    let dir = copy_of_sample();
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: read
    principals: {{ groups: [h] }}
    resource: customer.profiles
    grant: [select]
    rowFilter: \"segment <> 'zzz' AND birth_date IS NOT NULL\"
  - name: hide
    principals: {{ groups: [h] }}
    resource: customer.profiles
    deny: [discover]
    columns: [birth_date, segment]
"
    );
    let mesh = with_policies(dir.path(), &global, &[]);
    let h = Principal::new("h").with_group("h");
    query_as(&mesh, h.clone(), "SELECT count(full_name) FROM mesh.customer.profiles")
        .await
        .expect("runs");
    let rows = query_as(
        &mesh,
        h,
        "SELECT columns FROM mesh.system.queries WHERE principal = 'h' AND statement LIKE 'SELECT count(full_name)%'",
    )
    .await
    .expect("own queries");
    let columns = format!("{rows:?}");
    assert!(columns.contains("customer.profiles.full_name"), "{columns}");
    assert!(
        !columns.contains("birth_date") && !columns.contains("segment"),
        "{columns}"
    );
}

#[tokio::test]
async fn a_product_cannot_serve_another_domains_data() {
    let dir = copy_of_sample();
    let d = dir.path();
    // Marketing publishes a "mirror" over the customer domain's file, without its PII tags.
    std::fs::write(
        d.join("domains/marketing/products/mirror.odps.yaml"),
        "apiVersion: v1.0.0\nkind: DataProduct\nid: urn:dataproduct:marketing:mirror\nname: mirror\nstatus: active\ndomain: marketing\noutputPorts:\n  - {name: main, version: 1.0.0, contractId: urn:datacontract:marketing:mirror}\n",
    )
    .expect("descriptor");
    std::fs::write(
        d.join("domains/marketing/contracts/mirror.odcs.yaml"),
        "apiVersion: v3.1.0\nkind: DataContract\nid: urn:datacontract:marketing:mirror\nversion: 1.0.0\nstatus: active\nservers:\n  - {server: local, type: local, format: parquet, path: domains/marketing/../customer/data/profiles.parquet}\nschema:\n  - name: mirror\n    properties:\n      - {name: customer_id, logicalType: integer}\n      - {name: full_name, logicalType: string}\n",
    )
    .expect("contract");
    let mesh = Mesh::open(d).expect("open");
    let e = query_as(&mesh, carl(), "SELECT full_name FROM mesh.marketing.mirror")
        .await
        .expect_err("refused");
    assert!(e.contains("domain `customer`"), "{e}");
}

#[tokio::test]
async fn a_filter_that_folds_to_null_keeps_no_row_in_every_format() {
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: read
    principals: \"*\"
    resource: \"*\"
    grant: [select]
  - name: my-carrier
    principals: \"*\"
    resource: order.shipments
    rowFilter: \"status <> 'pending' AND carrier = ${{principal.carrier}}\"
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    // Delta (shipments, catalog) and Parquet (transactions) alike.
    for sql in [
        "SELECT count(*) FROM mesh.order.shipments",
        "SELECT count(*) FROM mesh.product.catalog WHERE product_id > 0 AND category = NULL",
        "SELECT count(*) FROM mesh.order.transactions WHERE quantity > 0 AND product_id = NULL",
        "SELECT count(*) FROM mesh.customer.profiles WHERE customer_id > 0 AND region = NULL",
    ] {
        let rows = query_as(&mesh, Principal::new("no-carrier"), sql).await.expect(sql);
        assert_eq!(rows, [["0"]], "{sql}");
    }
}

#[tokio::test]
async fn discover_alone_describes_the_schema() {
    let mesh = sample_mesh();
    let rows = query_as(&mesh, nobody(), "DESCRIBE mesh.customer.profiles")
        .await
        .expect("describe");
    let columns: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        columns.contains(&"customer_id") && columns.contains(&"email"),
        "{columns:?}"
    );
    // Sam's hidden column is not described to her.
    let rows = query_as(&mesh, sam(), "DESCRIBE mesh.customer.profiles")
        .await
        .expect("describe");
    assert!(!format!("{rows:?}").contains("birth_date"), "{rows:?}");
    // Reading still needs select.
    assert!(query_as(&mesh, nobody(), "SELECT * FROM mesh.customer.profiles")
        .await
        .is_err());
}

#[tokio::test]
async fn a_policy_literal_that_does_not_convert_is_a_refusal_naming_the_rule() {
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: bad-date
    principals: {{ groups: [g] }}
    resource: order.transactions
    grant: [select]
    rowFilter: \"order_date = 'zz' OR false\"
  - name: bad-like
    principals: {{ groups: [h] }}
    resource: order.transactions
    grant: [select]
    rowFilter: \"order_date LIKE ${{principal.x}}\"
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    for (who, rule) in [("g", "bad-date"), ("h", "bad-like")] {
        let e = error_of(
            &mesh,
            Principal::new(who).with_group(who).with_attribute("x", "2024%"),
            "SELECT count(*) FROM mesh.order.transactions",
        )
        .await;
        assert_eq!(e.class(), ErrorClass::AccessDenied, "{e}");
        let text = e.to_string();
        assert!(text.contains(&format!("'{rule}'")), "{text}");
        assert!(!text.contains("zz") && !text.contains("Optimizer rule"), "{text}");
    }
}

#[tokio::test]
async fn column_ordinals_leave_no_gap_where_a_hidden_column_is() {
    let mesh = sample_mesh();
    let rows = query_as(
        &mesh,
        sam(),
        "SELECT ordinal FROM mesh.system.columns WHERE domain = 'customer' AND product = 'profiles' ORDER BY ordinal",
    )
    .await
    .expect("columns");
    let ordinals: Vec<String> = rows.into_iter().map(|r| r[0].clone()).collect();
    let expected: Vec<String> = (1..=ordinals.len()).map(|i| i.to_string()).collect();
    assert_eq!(ordinals, expected);
}

#[tokio::test]
async fn a_rule_on_one_port_is_not_dodged_by_time_travel_on_a_sibling_port() {
    // deltars_events: port `latest` follows the Delta table, `first_commit` is pinned to its
    // version 0 — the same storage.
    let global = format!(
        "{EVERYONE_DISCOVERS}
  - name: read
    principals: {{ groups: [g, h] }}
    resource: \"*\"
    grant: [select]
  - name: no-first-commit
    principals: {{ groups: [g] }}
    resource: interop.deltars_events:first_commit
    deny: [select]
"
    );
    let mesh = with_policies(&sample_dir(), &global, &[]);
    let g = || Principal::new("g").with_group("g");
    assert!(query_as(
        &mesh,
        g(),
        "SELECT count(*) FROM mesh.interop.deltars_events_first_commit"
    )
    .await
    .is_err());
    for sql in [
        "SELECT count(*) FROM mesh.interop.deltars_events_latest FOR VERSION AS OF 0",
        "SELECT count(*) FROM mesh.interop.\"deltars_events_latest@v0\"",
    ] {
        let e = error_of(&mesh, g(), sql).await;
        assert_eq!(e.class(), ErrorClass::AccessDenied, "{sql}: {e}");
        assert!(e.to_string().contains("time travel"), "{e}");
    }
    // The current version stays readable; a principal with the same access on both ports
    // travels freely.
    assert!(
        query_as(&mesh, g(), "SELECT count(*) FROM mesh.interop.deltars_events_latest")
            .await
            .is_ok()
    );
    let h = Principal::new("h").with_group("h");
    query_as(
        &mesh,
        h,
        "SELECT count(*) FROM mesh.interop.deltars_events_latest FOR VERSION AS OF 0",
    )
    .await
    .expect("h travels");
}

/// Publishes `marketing.<name>` with a contract over `server` (a YAML flow mapping).
fn publish_marketing_product(dir: &std::path::Path, name: &str, server: &str) {
    std::fs::write(
        dir.join(format!("domains/marketing/products/{name}.odps.yaml")),
        format!("apiVersion: v1.0.0\nkind: DataProduct\nid: urn:dataproduct:marketing:{name}\nname: {name}\nstatus: active\ndomain: marketing\noutputPorts:\n  - {{name: main, version: 1.0.0, contractId: urn:datacontract:marketing:{name}}}\n"),
    )
    .expect("descriptor");
    std::fs::write(
        dir.join(format!("domains/marketing/contracts/{name}.odcs.yaml")),
        format!("apiVersion: v3.1.0\nkind: DataContract\nid: urn:datacontract:marketing:{name}\nversion: 1.0.0\nstatus: active\nservers:\n  - {server}\nschema:\n  - name: {name}\n    properties:\n      - {{name: customer_id, logicalType: integer}}\n      - {{name: full_name, logicalType: string}}\n"),
    )
    .expect("contract");
}

#[tokio::test]
async fn links_and_table_metadata_cannot_reach_another_domains_files() {
    let dir = copy_of_sample();
    let d = dir.path();
    let data = d.join("domains/marketing/data");
    std::fs::create_dir_all(&data).expect("data dir");
    // A symbolic link to the customer domain's data directory.
    #[cfg(unix)]
    std::os::unix::fs::symlink(d.join("domains/customer/data"), data.join("link")).expect("link");
    publish_marketing_product(
        d,
        "linked",
        "{server: local, type: local, format: parquet, path: domains/marketing/data/link/profiles.parquet}",
    );
    // A Delta log of marketing's own whose add action climbs into the customer domain.
    let log = data.join("dlt/_delta_log");
    std::fs::create_dir_all(&log).expect("log dir");
    let schema = r#"{\"type\":\"struct\",\"fields\":[{\"name\":\"customer_id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}},{\"name\":\"full_name\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}}]}"#;
    let size = std::fs::metadata(d.join("domains/customer/data/profiles.parquet"))
        .expect("file")
        .len();
    std::fs::write(
        log.join("00000000000000000000.json"),
        format!(
            "{{\"protocol\":{{\"minReaderVersion\":1,\"minWriterVersion\":2}}}}\n{{\"metaData\":{{\"id\":\"x\",\"format\":{{\"provider\":\"parquet\",\"options\":{{}}}},\"schemaString\":\"{schema}\",\"partitionColumns\":[],\"configuration\":{{}},\"createdTime\":1}}}}\n{{\"add\":{{\"path\":\"../../../customer/data/profiles.parquet\",\"partitionValues\":{{}},\"size\":{size},\"modificationTime\":1,\"dataChange\":true}}}}\n"
        ),
    )
    .expect("log");
    publish_marketing_product(
        d,
        "climbing",
        "{server: local, type: local, format: delta, path: domains/marketing/data/dlt}",
    );
    // A hard link: another name of the customer domain's file, in marketing's directory.
    #[cfg(unix)]
    {
        std::fs::create_dir_all(data.join("hard")).expect("dir");
        std::fs::hard_link(
            d.join("domains/customer/data/profiles.parquet"),
            data.join("hard/profiles.parquet"),
        )
        .expect("hard link");
    }
    publish_marketing_product(
        d,
        "hard_linked",
        "{server: local, type: local, format: parquet, path: domains/marketing/data/hard/*.parquet}",
    );
    publish_marketing_product(
        d,
        "hard_linked_file",
        "{server: local, type: local, format: parquet, path: domains/marketing/data/hard/profiles.parquet}",
    );
    // Globs whose root lies above the domain's own directory, or below a link.
    for (name, glob) in [
        ("globbed", "domains/*/data/profiles.parquet"),
        ("deep_globbed", "domains/**/profiles.parquet"),
        ("linked_globbed", "domains/marketing/data/link/*.parquet"),
        ("classed", "domains/[a-z]ustomer/data/pro?iles.parquet"),
    ] {
        publish_marketing_product(
            d,
            name,
            &format!("{{server: local, type: local, format: parquet, path: \"{glob}\"}}"),
        );
    }
    let mesh = Mesh::open(d).expect("open");
    for table in [
        "linked",
        "climbing",
        "globbed",
        "deep_globbed",
        "linked_globbed",
        "classed",
    ] {
        let e = query_as(
            &mesh,
            carl(),
            &format!("SELECT count(*), max(full_name) FROM mesh.marketing.{table}"),
        )
        .await
        .expect_err(table);
        assert!(
            e.contains("domain `customer`") || e.contains("another domain's directory"),
            "{table}: {e}"
        );
    }
}

/// A hive partition directory that does not hold a value of its column's type, on rows a row
/// filter hides: choosing files evaluates pushed-down filters on the partition values while the
/// query is planned, and the conversion error must be withheld like any error under the barrier.
#[tokio::test]
async fn a_hidden_rows_partition_directory_stays_out_of_errors() {
    let dir = copy_of_sample();
    let d = dir.path();
    let data = d.join("domains/marketing/data/visits");
    for day in ["day=2026-01-01", "day=TOPSECRET-42"] {
        std::fs::create_dir_all(data.join(day)).expect("partition dir");
        std::fs::copy(
            d.join("domains/customer/data/profiles.parquet"),
            data.join(day).join("part-0.parquet"),
        )
        .expect("a file");
    }
    std::fs::write(
        d.join("domains/marketing/products/visits.odps.yaml"),
        "apiVersion: v1.0.0\nkind: DataProduct\nid: urn:dataproduct:marketing:visits\nname: visits\nstatus: active\ndomain: marketing\noutputPorts:\n  - {name: main, version: 1.0.0, contractId: urn:datacontract:marketing:visits}\n",
    )
    .expect("descriptor");
    std::fs::write(
        d.join("domains/marketing/contracts/visits.odcs.yaml"),
        "apiVersion: v3.1.0\nkind: DataContract\nid: urn:datacontract:marketing:visits\nversion: 1.0.0\nstatus: active\nservers:\n  - {server: local, type: local, format: parquet, path: domains/marketing/data/visits/*/*.parquet}\nschema:\n  - name: visits\n    properties:\n      - {name: customer_id, logicalType: integer}\n      - {name: day, logicalType: date, partitioned: true, partitionKeyPosition: 1}\n",
    )
    .expect("contract");
    let policies = d.join("domains/marketing/policies.yaml");
    let text = std::fs::read_to_string(&policies).expect("policies");
    std::fs::write(
        &policies,
        format!("{text}\n  - name: contractors-one-customer\n    principals: {{ groups: [contractors] }}\n    resource: marketing.visits\n    rowFilter: \"customer_id = 1\"\n"),
    )
    .expect("policies");
    let mesh = Mesh::open(d).expect("open");
    for sql in [
        "SELECT count(*) FROM mesh.marketing.visits WHERE day > DATE '2000-01-01'",
        "SELECT * FROM mesh.marketing.visits WHERE day IS NULL",
        "SELECT count(*) FROM mesh.marketing.visits WHERE day = DATE '2026-01-01'",
    ] {
        let e = query_as(&mesh, carl(), sql).await.expect_err(sql);
        assert!(!e.contains("TOPSECRET"), "{sql}: {e}");
        assert!(e.contains("details are withheld"), "{sql}: {e}");
    }
}

/// A mask that cannot be applied (its key is missing, its expression does not parse) refuses
/// the column and says so, without naming the key's file or variable or quoting the mask.
#[tokio::test]
async fn a_mask_that_cannot_be_applied_names_no_key_file_variable_or_expression() {
    let global = "hashKeys:
  default: { env: MESHQL_TEST_SURELY_UNSET_KEY_9 }
  other: { file: /no/such/dir/secret-key-file }
rules:
  - name: readers
    principals: \"*\"
    resource: customer.profiles
    grant: [discover, select]
  - name: hashed-email
    principals: \"*\"
    resource: customer.profiles
    masks:
      email: { type: hash }
      full_name: { type: hash, key: other }
      region: { type: sql, expression: \"concat(region, 'zz-secret-expression'\" }
";
    let mesh = with_policies(&sample_dir(), global, &[]);
    for column in ["email", "full_name", "region"] {
        let e = query_as(
            &mesh,
            Principal::new("p"),
            &format!("SELECT {column} FROM mesh.customer.profiles"),
        )
        .await
        .expect_err(column);
        assert!(e.contains("cannot mask it"), "{column}: {e}");
        for secret in [
            "MESHQL_TEST_SURELY_UNSET_KEY_9",
            "secret-key-file",
            "zz-secret-expression",
            "/no/such",
        ] {
            assert!(!e.contains(secret), "{column}: {e}");
        }
    }
}
