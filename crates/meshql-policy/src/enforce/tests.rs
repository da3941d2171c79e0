//! Unit tests of policy expressions and leak-proof predicates.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{col, lit};

use super::*;
use crate::Principal;

fn schema() -> DFSchemaRef {
    let s = Schema::new(vec![
        Field::new("region", DataType::Utf8, true),
        Field::new("n", DataType::Int32, true),
    ]);
    Arc::new(DFSchema::try_from_qualified_schema("t", &s).expect("schema"))
}

#[test]
fn principal_values_become_literals_not_sql() {
    let p = Principal::new("o'brien").with_attribute("region", "EU' OR 1=1 --");
    let e = parse_policy_expr(
        "region = ${principal.region} AND ${principal.id} <> ''",
        &schema(),
        &p,
        None,
    )
    .expect("parses");
    let text = e.to_string();
    assert!(text.contains("Utf8(\"EU' OR 1=1 --\")"), "{text}");
    assert!(text.contains("Utf8(\"o'brien\")"), "{text}");
    // A missing attribute is NULL, never "match everything".
    let e = parse_policy_expr("region = principal_attribute('nope')", &schema(), &p, None).expect("parses");
    assert!(e.to_string().contains("Utf8(NULL)"), "{e}");
    assert!(parse_policy_expr("principal_in_group('x')", &schema(), &p, None)
        .expect("parses")
        .to_string()
        .contains("false"));
}

#[test]
fn placeholders_are_found_by_the_tokenizer_not_in_literals() {
    let p = Principal::new("a").with_attribute("region", "EU");
    // Inside a string literal a placeholder is text; doubled quotes survive the expansion.
    let e = parse_policy_expr(
        "region = '${principal.region}' OR region = 'o''brien {column}' OR region = ${principal.region}",
        &schema(),
        &p,
        Some("region"),
    )
    .expect("parses");
    let text = e.to_string();
    assert!(text.contains("Utf8(\"${principal.region}\")"), "{text}");
    assert!(text.contains("Utf8(\"o'brien {column}\")"), "{text}");
    assert!(text.contains("Utf8(\"EU\")"), "{text}");
    // An identifier that looks like a placeholder is an identifier.
    assert!(parse_policy_expr("\"{column}\" = 1", &schema(), &p, Some("region")).is_err());
    // Hyphenated and dotted attribute names.
    let e = parse_policy_expr("region = ${principal.cost-center.eu}", &schema(), &p, None).expect("parses");
    assert!(e.to_string().contains("Utf8(NULL)"), "{e}");
    assert!(parse_policy_expr("region = ${principal.a b}", &schema(), &p, None).is_err());
}

#[test]
fn policy_expressions_fail_closed() {
    let p = Principal::new("a");
    for bad in [
        "missing_column = 1",
        "region = (SELECT max(region) FROM t)",
        "{column} = 1",
        "${principal.} = 'x'",
        "region = ${principal.region",
        "count(n) > 1",
    ] {
        assert!(
            parse_policy_expr(bad, &schema(), &p, None).is_err(),
            "{bad} should be refused"
        );
    }
    let tagged = parse_policy_expr("{column} = 'EU'", &schema(), &p, Some("region")).expect("tag filter");
    assert!(tagged.to_string().contains("region"), "{tagged}");
}

#[test]
fn leakproof_predicates() {
    let s = schema();
    assert!(is_leakproof(&col("t.region").eq(lit("EU")), &s));
    assert!(is_leakproof(
        &col("t.n")
            .in_list(vec![lit(1), lit(2)], false)
            .and(col("t.n").is_null()),
        &s
    ));
    assert!(is_leakproof(
        &datafusion::logical_expr::cast(col("t.n"), DataType::Int64).gt(lit(1i64)),
        &s
    ));
    assert!(!is_leakproof(&(lit(1) / col("t.n")).gt(lit(0)), &s));
    assert!(!is_leakproof(&(col("t.n") + lit(1)).gt(lit(0)), &s));
    assert!(!is_leakproof(
        &datafusion::logical_expr::cast(col("t.region"), DataType::Int32).eq(lit(1)),
        &s
    ));
    assert!(!is_leakproof(&col("t.n").in_list(vec![lit(1) / col("t.n")], false), &s));
}
