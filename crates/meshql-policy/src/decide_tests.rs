//! The decision logic, primitive by primitive and rule by combining rule.

use super::*;

const GLOBAL: &str = r#"
admins: { groups: [platform] }
hashKeys:
  default: { env: MESHQL_TEST_KEY_THAT_IS_NOT_SET }
rules:
  - name: everyone-discovers
    principals: "*"
    resource: "*"
    grant: [discover]
  - name: analysts-read
    principals: { groups: [analysts] }
    resource: "*"
    grant: [select]
  - name: contractors-no-customer
    principals: { groups: [contractors] }
    resource: customer.*
    deny: [select]
  - name: contractors-read
    principals: { groups: [contractors] }
    resource: ["customer.*", "order.*"]
    grant: [select]
  - name: hide-secret-from-contractors
    principals: { groups: [contractors] }
    resource: order.secret
    deny: [discover]
  - name: global-email-mask
    principals: "*"
    except: { groups: [pii-readers] }
    resource: "*"
    masks:
      email: { type: hash }
tagRules:
  - name: names-initial
    tag: name
    except: { groups: [pii-readers] }
    mask: { type: showFirst, n: 1 }
  - name: confidential-denied
    classification: confidential
    principals: { groups: [contractors] }
    deny: [select]
  - name: regional
    tag: region-scoped
    principals: { groups: [regional] }
    rowFilter: "{column} = ${principal.region}"
"#;

const CUSTOMER: &str = r#"
rules:
  - name: support-own-region
    principals: { groups: [support] }
    resource: customer.profiles
    grant: [select]
    columns: [id, name, region]
    rowFilter: "region = ${principal.region}"
  - name: support-business
    principals: { groups: [support] }
    resource: customer.profiles
    grant: [select]
    columns: [id, email]
    rowFilter: "segment = 'business'"
  - name: not-test-rows
    principals: { groups: [support] }
    resource: customer.profiles
    rowFilter: "segment <> 'test'"
  - name: local-email-mask
    principals: "*"
    resource: customer.profiles
    masks:
      email: { type: redact }
      segment: { type: nullify }
  - name: support-hides-amount
    principals: { groups: [support] }
    resource: customer.profiles
    deny: [discover]
    columns: [amount]
"#;

fn set() -> PolicySet {
    PolicySet::from_yaml(GLOBAL, &[("customer", CUSTOMER)]).expect("policies load")
}

fn columns() -> Vec<ColumnInfo> {
    let c = |name: &str, class: Option<&str>, tags: &[&str]| ColumnInfo {
        name: name.into(),
        classification: class.map(String::from),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    vec![
        c("id", None, &[]),
        c("name", Some("pii"), &["name"]),
        c("email", Some("pii"), &[]),
        c("region", None, &["region-scoped"]),
        c("segment", None, &[]),
        c("amount", Some("confidential"), &[]),
    ]
}

/// The decision of `set` for `p` on `customer.profiles` with [`columns`].
fn profiles_decision(set: &PolicySet, p: &Principal) -> Decision {
    let cols = columns();
    set.decide(
        p,
        &ProductRef {
            table: TableIdentity::single("customer", "profiles"),
            columns: &cols,
        },
    )
}

fn decide(p: &Principal, domain: &str, name: &str) -> Decision {
    let cols = columns();
    set().decide(
        p,
        &ProductRef {
            table: TableIdentity::single(domain, name),
            columns: &cols,
        },
    )
}

fn access(d: &Decision) -> &Access {
    d.select.as_ref().expect("select granted")
}

fn column<'a>(a: &'a Access, name: &str) -> &'a ColumnAccess {
    &a.columns.iter().find(|(c, _)| c == name).expect("column").1
}

#[test]
fn deny_by_default() {
    let empty = PolicySet::from_yaml("{}", &[]).expect("empty");
    let d = profiles_decision(&empty, &Principal::new("x").with_group("analysts"));
    assert!(!d.discover);
    assert_eq!(d.select, Err(Refusal::NotGranted));
}

#[test]
fn discover_without_select() {
    let d = decide(&Principal::new("nobody"), "order", "transactions");
    assert!(d.discover);
    assert_eq!(d.select, Err(Refusal::NotGranted));
}

#[test]
fn select_grant_and_masks_global_over_local() {
    let d = decide(&Principal::new("ana").with_group("analysts"), "customer", "profiles");
    let a = access(&d);
    assert_eq!(a.grant_filters, None, "an unfiltered grant means every row");
    assert!(a.restrictions.is_empty());
    assert_eq!(column(a, "id"), &ColumnAccess::Plain);
    // Global rule beats the domain's redact.
    assert!(
        matches!(column(a, "email"), ColumnAccess::Masked { spec: MaskSpec::Hash { .. }, rule } if rule == "global-email-mask")
    );
    // Tag rule (global layer).
    assert!(matches!(
        column(a, "name"),
        ColumnAccess::Masked {
            spec: MaskSpec::ShowFirst { n: 1 },
            ..
        }
    ));
    // Domain mask where no global one applies.
    assert!(matches!(
        column(a, "segment"),
        ColumnAccess::Masked {
            spec: MaskSpec::Nullify,
            ..
        }
    ));
    // `except` lifts the global masks, the domain's still apply.
    let reader = Principal::new("p").with_groups(["analysts", "pii-readers"]);
    let d = decide(&reader, "customer", "profiles");
    assert!(matches!(
        column(access(&d), "email"),
        ColumnAccess::Masked {
            spec: MaskSpec::Redact { .. },
            ..
        }
    ));
    assert_eq!(column(access(&d), "name"), &ColumnAccess::Plain);
}

#[test]
fn deny_wins_over_grant() {
    let d = decide(&Principal::new("c").with_group("contractors"), "customer", "profiles");
    assert!(d.discover);
    assert_eq!(
        d.select,
        Err(Refusal::Denied {
            rule: "contractors-no-customer".into()
        })
    );
    // Deny discover hides the product entirely, even though a grant covers it.
    let d = decide(&Principal::new("c").with_group("contractors"), "order", "secret");
    assert!(!d.discover);
}

#[test]
fn tag_deny_and_row_filters() {
    let c = Principal::new("c").with_group("contractors");
    let d = decide(&c, "order", "lines");
    let a = access(&d);
    assert!(matches!(column(a, "amount"), ColumnAccess::Denied(why) if why.contains("confidential-denied")));
    let r = Principal::new("r")
        .with_groups(["analysts", "regional"])
        .with_attribute("region", "EU");
    let d = decide(&r, "order", "lines");
    let a = access(&d);
    assert_eq!(a.restrictions.len(), 1);
    assert_eq!(a.restrictions[0].column.as_deref(), Some("region"));
}

#[test]
fn grant_filters_or_restrictions_and_columns_union() {
    let s = Principal::new("s").with_group("support").with_attribute("region", "EU");
    let d = decide(&s, "customer", "profiles");
    assert_eq!(d.hidden.iter().collect::<Vec<_>>(), vec!["amount"]);
    let a = access(&d);
    let grants = a.grant_filters.as_ref().expect("filtered grants");
    assert_eq!(grants.len(), 2);
    assert_eq!(
        a.restrictions.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(),
        vec!["not-test-rows"]
    );
    assert_eq!(column(a, "id"), &ColumnAccess::Plain);
    assert!(matches!(column(a, "email"), ColumnAccess::Masked { .. }));
    assert!(matches!(column(a, "segment"), ColumnAccess::Denied(why) if why.contains("not granted")));
    assert_eq!(column(a, "amount"), &ColumnAccess::Hidden);
}

#[test]
fn conflicting_masks_in_one_layer_fail_that_column() {
    let global = r#"
rules:
  - name: read
    principals: "*"
    resource: "*"
    grant: [select]
  - name: mask-a
    principals: "*"
    resource: "*"
    masks: { email: { type: hash } }
tagRules:
  - name: mask-b
    classification: pii
    mask: { type: "null" }
"#;
    let set = PolicySet::from_yaml(global, &[]).expect("loads");
    let d = profiles_decision(&set, &Principal::new("x"));
    let a = access(&d);
    assert!(
        matches!(column(a, "email"), ColumnAccess::Conflict(why) if why.contains("'mask-a'") && why.contains("'mask-b'"))
    );
    // The same mask from two rules is no conflict.
    assert!(matches!(
        column(a, "name"),
        ColumnAccess::Masked {
            spec: MaskSpec::Nullify,
            ..
        }
    ));
}

#[test]
fn rules_naming_missing_columns_fail_closed() {
    let global = r#"
rules:
  - name: read
    principals: "*"
    resource: "*"
    grant: [select]
  - name: deny-typo
    principals: "*"
    resource: "*"
    deny: [select]
    columns: [emial]
"#;
    let set = PolicySet::from_yaml(global, &[]).expect("loads");
    let d = profiles_decision(&set, &Principal::new("x"));
    assert!(
        matches!(&d.select, Err(Refusal::Broken { reason, .. }) if reason.contains("emial")),
        "{d:?}"
    );
}

#[test]
fn domain_files_may_only_govern_their_domain() {
    let other = r#"
rules:
  - name: grab
    principals: "*"
    resource: customer.profiles
    grant: [select]
"#;
    let err = PolicySet::from_yaml("{}", &[("order", other)]).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("domains/order/policies.yaml") && text.contains("belongs to domain 'customer'"),
        "{text}"
    );
    let mesh_wide = "rules:\n  - {name: all, principals: '*', resource: '*', grant: [select]}\n";
    assert!(PolicySet::from_yaml("{}", &[("order", mesh_wide)]).is_err());
    let tags = "tagRules:\n  - {name: t, tag: x, mask: {type: year}}\n";
    assert!(PolicySet::from_yaml("{}", &[("order", tags)]).is_err());
}

#[test]
fn malformed_rules_are_rejected_with_the_rule_named() {
    for (text, expect) in [
        (
            "rules: [{name: r, principals: '*', resource: '*', grant: [select], deny: [select]}]",
            "exactly one",
        ),
        (
            "rules: [{name: r, principals: {}, resource: '*', grant: [select]}]",
            "names nobody",
        ),
        (
            "rules: [{name: r, principals: '*', resource: 'a.b.c', grant: [select]}]",
            "resource",
        ),
        (
            "rules: [{name: r, principals: '*', resource: '*', grant: [write]}]",
            "write",
        ),
        (
            "rules: [{name: r, principals: '*', resource: 'a.b:', grant: [select]}]",
            "empty port",
        ),
        (
            "rules: [{name: r, principals: '*', resource: 'a.*:p', grant: [select]}]",
            "resource",
        ),
        (
            "rules: [{name: r, principals: '*', resource: 'a.b:p@', grant: [select]}]",
            "empty port or version",
        ),
        ("hashKeys: {k: {}}", "exactly one of `env` or `file`"),
        (
            "rules: [{name: r, principals: '*', resource: '*', masks: {c: {type: rot13}}}]",
            "rot13",
        ),
    ] {
        let err = PolicySet::from_yaml(text, &[]).expect_err(text).to_string();
        assert!(err.contains(expect), "{text}: {err}");
    }
}

#[test]
fn admins_are_explicit() {
    let s = set();
    assert!(s.is_admin(&Principal::new("a").with_group("platform")));
    assert!(!s.is_admin(&Principal::new("a").with_group("analysts")));
    assert!(!PolicySet::from_yaml("{}", &[])
        .expect("empty")
        .is_admin(&Principal::new("root")));
}

#[test]
fn a_product_rule_covers_every_table_of_the_product() {
    let parse = |text: &str| {
        let set = PolicySet::from_yaml(
            &format!("rules: [{{name: r, principals: '*', resource: '{text}', grant: [select]}}]"),
            &[],
        )
        .expect(text);
        set.rules[0].resources[0].clone()
    };
    // A product with two ports, `daily` in versions 1.0.0 and 0.9.0 and `hourly` in 2.0.0.
    let daily = TableIdentity {
        domain: "m",
        table: "perf_daily",
        product: "perf",
        port: "daily",
        version: "1.0.0",
        port_table: "perf_daily",
    };
    let daily_old = TableIdentity {
        table: "perf_daily_v0_9_0",
        version: "0.9.0",
        ..daily
    };
    let hourly = TableIdentity {
        table: "perf_hourly",
        port: "hourly",
        version: "2.0.0",
        port_table: "perf_hourly",
        ..daily
    };
    let other = TableIdentity::single("m", "perf2");
    let all = [daily, daily_old, hourly, other];
    let covered = |text: &str| -> Vec<bool> { all.iter().map(|t| parse(text).covers(t)).collect() };
    assert_eq!(covered("m.perf"), [true, true, true, false]);
    assert_eq!(covered("m.*"), [true, true, true, true]);
    assert_eq!(covered("m.perf:daily"), [true, true, false, false]);
    assert_eq!(covered("m.perf:DAILY@0.9.0"), [false, true, false, false]);
    assert_eq!(
        covered("m.perf_daily"),
        [true, true, false, false],
        "a port's table covers the port"
    );
    assert_eq!(covered("m.perf_daily_v0_9_0"), [false, true, false, false]);
    assert_eq!(covered("x.perf"), [false, false, false, false]);
    assert_eq!(parse("m.perf:daily@0.9.0").to_string(), "m.perf:daily@0.9.0");
}

#[test]
fn tags_and_classifications_match_whatever_their_spacing_and_case() {
    let column = |class: Option<&str>, tags: &[&str]| ColumnInfo {
        name: "c".into(),
        classification: class.map(String::from),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    let confidential = TagMatch::Classification("confidential".into());
    assert!(confidential.matches(&column(Some("Confidential "), &[])));
    assert!(confidential.matches(&column(Some(" CONFIDENTIAL"), &[])));
    assert!(!confidential.matches(&column(Some("confidentiality"), &[])));
    let phone = TagMatch::Tag("phone".into());
    assert!(phone.matches(&column(None, &[" phone", "x"])));
    assert!(!phone.matches(&column(None, &["phones"])));
}
