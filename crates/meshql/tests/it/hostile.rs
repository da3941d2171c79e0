//! Hostile statements: each fails alone, with a clear error, and the mesh keeps answering.
//!
//! They run on threads with the stack meshql's binaries give query threads
//! ([`meshql::limits::QUERY_THREAD_STACK`]), as `meshql serve` and `meshql query` do.

use std::future::Future;

use meshql::limits::{MAX_CASE_NESTING, MAX_EXPRESSION_OPERATORS};
use meshql::{ErrorClass, Mesh};

use crate::common::*;

/// Runs `f` on a runtime whose workers have the query stack.
fn on_query_threads<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    query_runtime().block_on(async { tokio::spawn(f).await.expect("the test task") })
}

async fn outcome(mesh: &Mesh, sql: &str) -> Result<Vec<Vec<String>>, meshql::Error> {
    let result = mesh.session(analyst()).sql(sql).await?;
    Ok(rows(&result.collect().await?))
}

fn chain(terms: usize, op: &str, term: &str) -> String {
    vec![term; terms].join(op)
}

#[test]
fn expressions_up_to_the_limits_run_and_beyond_them_fail_clearly() {
    on_query_threads(async {
        let mesh = sample_mesh();
        let at = MAX_EXPRESSION_OPERATORS + 1; // terms: one more than operators
        let nested_case = |n: usize| {
            format!(
                "SELECT {} 1 {}",
                "CASE WHEN customer_id > 0 THEN ".repeat(n),
                "ELSE 0 END ".repeat(n)
            )
        };
        let within = [
            format!("SELECT {}", chain(at, " + ", "1")),
            format!("SELECT length({})", chain(at, " || ", "'a'")),
            format!(
                "SELECT count(*) FROM mesh.customer.profiles WHERE {}",
                chain(at / 2, " OR ", "customer_id = 3")
            ),
            format!(
                "SELECT count(*) FROM mesh.customer.profiles WHERE {}",
                chain(at / 2, " AND ", "customer_id > 0")
            ),
            format!("{} FROM mesh.customer.profiles LIMIT 1", nested_case(MAX_CASE_NESTING)),
        ];
        for sql in &within {
            let rows = outcome(&mesh, sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", &sql[..60]));
            assert_eq!(rows.len(), 1, "{}", &sql[..60]);
        }
        let beyond = [
            format!("SELECT {}", chain(at + 1, " + ", "1")),
            format!("SELECT {}", chain(at + 1, " || ", "'a'")),
            format!("SELECT 1 WHERE {}", chain(at + 1, " OR ", "true")),
            format!("SELECT {} true", "NOT ".repeat(10 * at)),
            format!("{} FROM mesh.customer.profiles", nested_case(MAX_CASE_NESTING + 1)),
            format!("SELECT {}", chain(100_000, " + ", "1")),
            format!("SELECT '{}'", "x".repeat(meshql::limits::MAX_STATEMENT_BYTES)),
        ];
        for sql in &beyond {
            let e = outcome(&mesh, sql).await.expect_err(&sql[..40]);
            assert_eq!(e.class(), ErrorClass::ResourcesExhausted, "{}: {e}", &sql[..40]);
            assert!(e.to_string().contains("at most"), "{e}");
            bystander_answers(&mesh).await;
        }
    });
}

#[test]
fn a_panic_inside_the_engine_fails_that_query_alone() {
    on_query_threads(async {
        let mesh = sample_mesh();
        // Arguments on which DataFusion 53 panics (or loops, in release): each is a clear error
        // of the query that names what failed, classified as a bad query, not an engine fault.
        for (sql, names) in [
            (
                "SELECT * FROM generate_series(9223372036854775800, 9223372036854775807, 5)",
                "generate_series",
            ),
            (
                "SELECT count(*) FROM range(9223372036854775806, 9223372036854775807, 3)",
                "range",
            ),
            (
                "SELECT * FROM generate_series(-9223372036854775800, -9223372036854775808, -1)",
                "generate_series",
            ),
            ("SELECT DATE '9999-12-31' + INTERVAL '1000000' YEAR", "overflow"),
            ("SELECT DATE '2020-01-01' + INTERVAL '2147483647 months'", "overflow"),
            ("SELECT arrow_cast(2147483647, 'Date32') + 1", "overflow"),
            (
                "SELECT array_position([1, 2, 3], 2, -9223372036854775808)",
                "array_position",
            ),
            ("SELECT overlay('abc' PLACING 'x' FROM -9223372036854775808)", "overlay"),
            (
                "SELECT date_trunc('day', arrow_cast(-9223372036854775808, 'Timestamp(Nanosecond, None)'))",
                "date_trunc",
            ),
            (
                "SELECT lag(customer_id, -9223372036854775808) OVER () FROM mesh.customer.profiles",
                "lag",
            ),
            (
                "SELECT lead(customer_id, 5000000000) OVER () FROM mesh.customer.profiles",
                "lead",
            ),
            (
                "SELECT nth_value(customer_id, 9223372036854775807) OVER () FROM mesh.customer.profiles",
                "nth_value",
            ),
            ("SELECT regexp_replace('abc', '(', 'x')", "regexp_replace"),
            ("SELECT factorial(-1)", "factorial"),
            ("SELECT 'a' ~ '('", "regular expression"),
            ("SELECT 'a' !~* '[[:alpha:'", "regular expression"),
            (
                "SELECT approx_percentile_cont(customer_id, 0.5, 9223372036854775807) FROM mesh.customer.profiles",
                "approx_percentile_cont",
            ),
            (
                "SELECT date_part('year', arrow_cast(-9223372036854775808, 'Timestamp(Second, None)'))",
                "date_part",
            ),
        ] {
            let e = outcome(&mesh, sql).await.expect_err(sql);
            assert_eq!(e.class(), ErrorClass::InvalidQuery, "{sql}: {e}");
            assert!(e.to_string().contains(names), "{sql}: {e}");
            bystander_answers(&mesh).await;
        }
        // The same functions on ordinary arguments answer as before.
        for (sql, expected) in [
            ("SELECT array_position([1, 2, 3], 2, 1)", "2"),
            ("SELECT overlay('abc' PLACING 'x' FROM 2)", "axc"),
            ("SELECT overlay('abc' PLACING 'x' FROM 2 FOR 9223372036854775807)", "ax"),
            ("SELECT count(*) FROM generate_series(9223372036854775800, 9223372036854775806)", "7"),
            ("SELECT factorial(5)", "120"),
            ("SELECT 'abc' ~ '^a'", "true"),
            ("SELECT CAST(array_agg(x ORDER BY x DESC) AS VARCHAR) FROM (VALUES (1), (3), (2)) t(x)", "[3, 2, 1]"),
            ("SELECT max(cardinality(a)) FROM (SELECT array_agg(g) OVER (ORDER BY g) a FROM generate_series(1, 100) t(g))", "100"),
            ("SELECT concat_ws('-', 'a', 'b')", "a-b"),
            ("SELECT cardinality(string_to_array('a,b,c', ','))", "3"),
            ("SELECT date_part('year', DATE '2024-05-01')", "2024"),
            ("SELECT CAST(DATE '2020-01-31' + INTERVAL '1' MONTH AS VARCHAR)", "2020-02-29"),
            ("SELECT DATE '2020-03-01' - DATE '2020-02-01'", "29"),
            ("SELECT max(l) FROM (SELECT lag(customer_id, 1) OVER (ORDER BY customer_id) AS l FROM mesh.customer.profiles)", "199"),
        ] {
            assert_eq!(outcome(&mesh, sql).await.expect(sql), [[expected]], "{sql}");
        }
    });
}

#[tokio::test]
async fn huge_failing_statements_cannot_rotate_other_records_out_of_the_trail() {
    let dir = copy_of_sample();
    add_to_mesh_yaml(dir.path(), "audit:\n  maxFileBytes: 1048576\n  maxFiles: 3\n");
    let mesh = Mesh::open(dir.path()).expect("open");
    query_as(&mesh, sam(), "SELECT count(*) FROM mesh.customer.profiles")
        .await
        .expect("sam's query");
    // Ten failing 900 KB statements by another principal.
    let junk = format!("SELECT '{}' FROM nowhere", "x".repeat(900 * 1024));
    for _ in 0..10 {
        assert!(query_as(&mesh, carl(), &junk).await.is_err());
    }
    let records = mesh.audit().expect("audit on").read_all().expect("read");
    assert!(
        records.iter().any(|r| r.principal == "sam"),
        "sam's record was rotated away"
    );
    let carl: Vec<_> = records.iter().filter(|r| r.principal == "carl").collect();
    assert_eq!(carl.len(), 10);
    for r in carl {
        assert!(r.statement.len() < 10 * 1024, "{}", r.statement.len());
        assert!(
            r.statement.contains("[cut: ") && r.statement.contains("sha256"),
            "{}",
            &r.statement[r.statement.len() - 120..]
        );
        assert!(r.error.as_ref().is_some_and(|e| e.len() < 5 * 1024));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_cut_halfway_loosens_nothing_until_it_has_settled_and_then_says_so() {
    let dir = copy_of_sample();
    let path = dir.path().join("domains/customer/policies.yaml");
    let text = std::fs::read_to_string(&path).expect("policies");
    // A valid YAML prefix, as a crashed editor or a non-atomic copy leaves it: the restriction,
    // the masks and the hidden column of the support agents are gone.
    let cut = &text[..text.find("  - name: support-no-internal-test-accounts").expect("rule")];
    let mesh = Mesh::open(dir.path()).expect("open");
    let sql = "SELECT count(*), count(*) FILTER (WHERE country = '--') FROM mesh.customer.profiles";
    let before = query_as(&mesh, sam(), sql).await.expect("before");
    let _watch = mesh.watch(std::time::Duration::from_millis(100));
    std::fs::write(&path, cut).expect("cut the file");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        query_as(&mesh, sam(), sql).await.expect("settling"),
        before,
        "loosened before settling"
    );
    // Once stable for long enough, the edit is applied — and said out loud.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if query_as(&mesh, sam(), sql).await.expect("after") != before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the settled edit was never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let problems = format!(
        "{:?}",
        query_as(&mesh, admin(), "SELECT message FROM mesh.system.problems")
            .await
            .expect("problems")
    );
    assert!(problems.contains("removed restrictions"), "{problems}");
    for rule in ["support-no-internal-test-accounts", "support-coarse-signup-and-country"] {
        assert!(problems.contains(rule), "{rule}: {problems}");
    }
}

#[tokio::test]
async fn syntax_errors_read_as_text() {
    let mesh = sample_mesh();
    let e = query_as(&mesh, analyst(), "SELEC 1").await.expect_err("syntax");
    assert!(
        e.contains("sql parser error: Expected") && !e.contains("ParserError("),
        "{e}"
    );
    let Err(e) = mesh.session(analyst()).sql("SELECT FROM WHERE").await else {
        panic!("SELECT FROM WHERE parsed");
    };
    assert_eq!(e.class(), ErrorClass::InvalidQuery, "{e}");
}

/// The exact result of an integer query, as meshql must give it: the value, or an overflow
/// error when it does not fit 64 bits.
fn exact(v: i128) -> Result<String, ()> {
    i64::try_from(v).map(|v| v.to_string()).map_err(|_| ())
}

/// What meshql answered: the one value, or `Err` for an overflow error (any other error fails).
async fn one_value(mesh: &Mesh, sql: &str) -> Result<String, ()> {
    match outcome(mesh, sql).await {
        Ok(rows) => Ok(rows.concat().join(",")),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("Overflow") || text.contains("overflow") || text.contains("to store in a Decimal"),
                "{sql}: not an overflow error: {text}"
            );
            Ok::<(), ()>(()).and(Err(()))
        }
    }
}

#[test]
fn integer_arithmetic_and_sums_never_wrap() {
    on_query_threads(async {
        let mesh = sample_mesh();
        let max = i64::MAX;
        for (sql, expected) in [
            (format!("SELECT {max} + 1"), Err(())),
            (format!("SELECT -{max} - 2"), Err(())),
            (format!("SELECT {max} * 2"), Err(())),
            (format!("SELECT -(-{max} - 1)"), Err(())),
            (format!("SELECT {max} - 1 + 1"), Ok(max.to_string())),
            ("SELECT 2 + 3 * 4 - 1".to_string(), Ok("13".to_string())),
            // Columns of a product, in a filter and in a projection.
            (
                format!("SELECT count(*) FROM mesh.customer.profiles WHERE customer_id * {} > 0", max / 2),
                Err(()),
            ),
            (
                "SELECT sum(customer_id * 2 - 1) FROM mesh.customer.profiles WHERE customer_id <= 3".into(),
                Ok("9".into()),
            ),
            // Aggregates: plain, grouped, window.
            (
                format!("SELECT sum(x) FROM (VALUES ({max}), ({max}), ({max}), ({max}), ({max}), ({max}), ({max}), ({max}), ({max}), ({max})) t(x)"),
                Err(()),
            ),
            (
                format!("SELECT max(s) FROM (SELECT g, sum(x) AS s FROM (VALUES (1, {max}), (1, 1), (2, 5)) t(g, x) GROUP BY g)"),
                Err(()),
            ),
            (
                format!("SELECT max(s) FROM (SELECT sum(x) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM (VALUES (1, {max}), (2, -{max}), (3, {max}), (4, -1)) t(i, x))"),
                Ok(max.to_string()),
            ),
            (
                format!("SELECT max(s) FROM (SELECT sum(x) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM (VALUES (1, {max}), (2, 1)) t(i, x))"),
                Err(()),
            ),
            // Smaller integer types are summed as 64 bits, as before.
            ("SELECT sum(CAST(x AS TINYINT)) FROM (VALUES (100), (100)) t(x)".into(), Ok("200".into())),
        ] {
            assert_eq!(one_value(&mesh, &sql).await, expected, "{sql}");
        }
        // Column names are the operators', as without the checks.
        let result = mesh
            .session(analyst())
            .sql("SELECT 1 + 2, -customer_id FROM mesh.customer.profiles LIMIT 1")
            .await
            .expect("plans");
        let names: Vec<String> = result.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["Int64(1) + Int64(2)", "(- mesh.customer.profiles.customer_id)"]);
        bystander_answers(&mesh).await;
    });
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    const STATISTICS: [&str; 15] = [
        "var_pop(x)",
        "var_samp(x)",
        "stddev(x)",
        "stddev_pop(x)",
        "covar_pop(x, y)",
        "covar_samp(x, y)",
        "corr(x, y)",
        "regr_slope(y, x)",
        "regr_intercept(y, x)",
        "regr_r2(y, x)",
        "regr_avgx(y, x)",
        "regr_avgy(y, x)",
        "regr_sxx(y, x)",
        "regr_syy(y, x)",
        "regr_sxy(y, x)",
    ];

    /// Floats with the ends of the range and the values IEEE 754 has besides numbers.
    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => -1e6f64..1e6,
            2 => prop_oneof![Just(1e308), Just(-1e308), Just(f64::MAX), Just(-1.7e308), 1e300f64..1e308],
            1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(f64::NAN), Just(0.0), Just(-0.0)],
        ]
    }

    fn float_sql(v: f64) -> String {
        if v.is_nan() {
            "CAST('NaN' AS DOUBLE)".into()
        } else if v.is_infinite() {
            format!("CAST('{}' AS DOUBLE)", if v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            format!("CAST({v:e} AS DOUBLE)")
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the inputs, a statistical aggregate answers a finite number, NULL, or an
        /// out-of-range error — plain, grouped, and as a window (whole and sliding) — never
        /// infinity or NaN (DataFusion answered `-inf` for `var_pop` of ±1e308).
        #[test]
        fn statistical_aggregates_answer_numbers_or_fail(values in proptest::collection::vec((0u8..2, float(), float()), 1..8)) {
            let rows: Vec<String> = values.iter().map(|(g, x, y)| format!("({g}, {}, {})", float_sql(*x), float_sql(*y))).collect();
            let table = format!("(VALUES {}) t(g, x, y)", rows.join(", "));
            on_query_threads(async move {
                let mesh = sample_mesh();
                for agg in STATISTICS {
                    let mut statements = vec![
                        format!("SELECT {agg} FROM {table}"),
                        format!("SELECT g, {agg} FROM {table} GROUP BY g"),
                        format!("SELECT {agg} OVER () FROM {table}"),
                    ];
                    // Sliding windows need retraction, which DataFusion has for these only.
                    if agg.starts_with("var") || agg.starts_with("stddev") {
                        statements.push(format!("SELECT {agg} OVER (ORDER BY g ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM {table}"));
                    }
                    for sql in statements {
                        match outcome(&mesh, &sql).await {
                            Ok(rows) => {
                                for value in rows.iter().flatten() {
                                    let ok = value == "NULL" || value.parse::<f64>().is_ok_and(f64::is_finite)
                                        || value.parse::<i64>().is_ok();
                                    assert!(ok, "{sql}: {value}");
                                }
                            }
                            Err(e) => assert!(e.to_string().contains("is out of range"), "{sql}: {e}"),
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn statistical_aggregates_keep_their_answers_within_range() {
        on_query_threads(async {
            let mesh = sample_mesh();
            let data = "(VALUES (2.0, 1.0), (4.0, 2.0), (4.0, 3.0), (4.0, 4.0), (5.0, 5.0), (5.0, 6.0), (7.0, 7.0), (9.0, 8.0)) t(x, y)";
            for (agg, expected) in [
                ("var_pop(x)", 4.0),
                ("var_samp(x)", 32.0 / 7.0),
                ("stddev_pop(x)", 2.0),
                ("covar_pop(x, y)", 4.25),
                ("regr_sxx(y, x)", 32.0),
            ] {
                let sql = format!("SELECT {agg} FROM {data}");
                let got: f64 = outcome(&mesh, &sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))[0][0]
                    .parse()
                    .expect("a number");
                assert!(
                    (got - expected).abs() < 1e-9 * expected.abs().max(1.0),
                    "{sql}: {got} != {expected}"
                );
            }
            // NULL where there is no answer: one row, a constant column.
            for sql in [
                "SELECT var_samp(x) FROM (VALUES (1.0)) t(x)",
                "SELECT corr(x, y) FROM (VALUES (1.0, 1.0), (1.0, 2.0)) t(x, y)",
            ] {
                assert_eq!(
                    outcome(&mesh, sql).await.expect(sql),
                    vec![vec!["NULL".to_string()]],
                    "{sql}"
                );
            }
            let e = outcome(&mesh, "SELECT var_pop(x) FROM (VALUES (1e308), (-1e308)) t(x)")
                .await
                .expect_err("overflow");
            assert!(e.to_string().contains("var_pop(…) is out of range"), "{e}");
        })
    }

    /// Integers that overflow when added: mostly near the ends of the range.
    fn value() -> impl Strategy<Value = i64> {
        prop_oneof![
            -1000i64..1000,
            (i64::MAX - 1000)..=i64::MAX,
            i64::MIN..=(i64::MIN + 1000),
            any::<i64>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        /// Sums (plain and grouped) and pairwise arithmetic against 128-bit arithmetic: the
        /// exact value when it fits 64 bits, an overflow error when it does not.
        #[test]
        fn integer_results_match_exact_arithmetic(values in proptest::collection::vec((0u8..3, value()), 1..12)) {
            let rows: Vec<String> = values.iter().map(|(g, v)| format!("({g}, CAST({v} AS BIGINT))")).collect();
            let table = format!("(VALUES {}) t(g, x)", rows.join(", "));
            let total: i128 = values.iter().map(|(_, v)| *v as i128).sum();
            let (a, b) = (values[0].1, values[values.len() - 1].1);
            let cases = vec![
                (format!("SELECT sum(x) FROM {table}"), exact(total)),
                (format!("SELECT x + y FROM (SELECT CAST({a} AS BIGINT) AS x, CAST({b} AS BIGINT) AS y)"), exact(a as i128 + b as i128)),
                (format!("SELECT x - y FROM (SELECT CAST({a} AS BIGINT) AS x, CAST({b} AS BIGINT) AS y)"), exact(a as i128 - b as i128)),
                (format!("SELECT x * y FROM (SELECT CAST({a} AS BIGINT) AS x, CAST({b} AS BIGINT) AS y)"), exact(a as i128 * b as i128)),
            ];
            let mut groups: std::collections::BTreeMap<u8, i128> = Default::default();
            for (g, v) in &values {
                *groups.entry(*g).or_default() += *v as i128;
            }
            // A grouped sum fails if any group's sum overflows (whichever group is computed).
            let grouped = if groups.values().all(|s| i64::try_from(*s).is_ok()) {
                Ok(groups.values().map(|s| s.to_string()).collect::<Vec<_>>().join(","))
            } else {
                Err(())
            };
            on_query_threads(async move {
                let mesh = sample_mesh();
                for (sql, expected) in cases {
                    assert_eq!(one_value(&mesh, &sql).await, expected, "{sql}");
                }
                let sql = format!("SELECT sum(x) FROM {table} GROUP BY g ORDER BY g");
                assert_eq!(one_value(&mesh, &sql).await, grouped, "{sql}");
            });
        }
    }
}

#[test]
fn decimals_durations_and_shifts_never_wrap() {
    on_query_threads(async {
        let mesh = sample_mesh();
        let max38 = "99999999999999999999999999999999999999";
        let d = |v: &str| format!("CAST('{v}' AS DECIMAL(38, 0))");
        for (sql, expected) in [
            (format!("SELECT {} + {}", d(max38), d(max38)), Err(())),
            (format!("SELECT {} - 1", d(max38)), Ok("99999999999999999999999999999999999998".to_string())),
            (format!("SELECT {} + 1", d(max38)), Err(())),
            (format!("SELECT {} * 10", d("9999999999999999999999999999999999999")), Ok("99999999999999999999999999999999999990".into())),
            (format!("SELECT {} * 100", d("9999999999999999999999999999999999999")), Err(())),
            (format!("SELECT -{} - 1", d(max38)), Err(())),
            (format!("SELECT sum(x) FROM (VALUES ({}), ({})) t(x)", d(max38), d(max38)), Err(())),
            (format!("SELECT sum(x) FROM (VALUES ({}), (-{})) t(x)", d(max38), d(max38)), Ok("0".into())),
            (
                format!("SELECT max(s) FROM (SELECT sum(x) OVER () AS s FROM (VALUES ({}), ({})) t(x))", d(max38), d(max38)),
                Err(()),
            ),
            (
                format!("SELECT max(s) FROM (SELECT g, sum(x) AS s FROM (VALUES (1, {}), (1, {})) t(g, x) GROUP BY g)", d(max38), d(max38)),
                Err(()),
            ),
            ("SELECT sum(x) FROM (VALUES (CAST(1.5 AS DECIMAL(38, 1))), (CAST(2.25 AS DECIMAL(38, 2)))) t(x)".into(), Ok("3.75".into())),
            (
                "SELECT sum(d) FROM (VALUES (arrow_cast(9223372036854775807, 'Duration(Second)')), (arrow_cast(1, 'Duration(Second)'))) t(d)".into(),
                Err(()),
            ),
            (
                "SELECT CAST(sum(d) AS VARCHAR) FROM (VALUES (arrow_cast(60, 'Duration(Second)')), (arrow_cast(30, 'Duration(Second)'))) t(d)".into(),
                Ok("0 days 0 hours 1 mins 30 secs".into()),
            ),
            (format!("SELECT {} << 1", i64::MAX), Err(())),
            // Narrow decimals that cannot overflow their result type are computed exactly by
            // DataFusion's own operator (99999999.99² = 9999999998000000.0001).
            (
                "SELECT CAST('99999999.99' AS DECIMAL(10, 2)) * CAST('99999999.99' AS DECIMAL(10, 2))".into(),
                Ok("9999999998000000.0001".into()),
            ),
            (
                "SELECT CAST('-99999999.99' AS DECIMAL(10, 2)) - CAST('99999999.99' AS DECIMAL(10, 2))".into(),
                Ok("-199999999.98".into()),
            ),
            ("SELECT 5 << 2".into(), Ok("20".into())),
            ("SELECT -8 >> 1".into(), Ok("-4".into())),
        ] {
            assert_eq!(one_value(&mesh, &sql).await, expected, "{sql}");
        }
        // A shift count outside the type's width is an error, not taken modulo the width.
        for sql in ["SELECT 1 << 64", "SELECT 1 >> 64", "SELECT 1 << -1"] {
            let e = outcome(&mesh, sql).await.expect_err(sql);
            assert_eq!(e.class(), ErrorClass::InvalidQuery, "{sql}: {e}");
            assert!(e.to_string().contains("out of range"), "{sql}: {e}");
        }
    });
}

/// Decimal sums against exact 256-bit arithmetic: the value when it fits 38 digits, an
/// overflow error when it does not.
mod generated_decimals {
    use arrow::datatypes::i256;
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = i128> {
        let max = 10i128.pow(38) - 1;
        prop_oneof![-1000i128..1000, (max - 1000)..=max, -max..=(-max + 1000), -max..=max]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn decimal_sums_match_exact_arithmetic(values in proptest::collection::vec(value(), 1..8)) {
            let rows: Vec<String> = values.iter().map(|v| format!("(CAST('{v}' AS DECIMAL(38, 0)))")).collect();
            let table = format!("(VALUES {}) t(x)", rows.join(", "));
            let total = values.iter().fold(i256::ZERO, |a, v| a.wrapping_add(i256::from_i128(*v)));
            let limit = i256::from_i128(10i128.pow(38));
            let expected = if total < limit && total > limit.wrapping_neg() {
                Ok(total.to_string())
            } else {
                Err(())
            };
            let (a, b) = (values[0], values[values.len() - 1]);
            let pair = i256::from_i128(a).wrapping_add(i256::from_i128(b));
            let pair_expected = if pair < limit && pair > limit.wrapping_neg() { Ok(pair.to_string()) } else { Err(()) };
            on_query_threads(async move {
                let mesh = sample_mesh();
                let sql = format!("SELECT sum(x) FROM {table}");
                assert_eq!(one_value(&mesh, &sql).await, expected, "{sql}");
                let sql = format!("SELECT CAST('{a}' AS DECIMAL(38, 0)) + CAST('{b}' AS DECIMAL(38, 0))");
                assert_eq!(one_value(&mesh, &sql).await, pair_expected, "{sql}");
            });
        }
    }
}

/// Numbers, casts and averages against exact arithmetic done here.
mod generated_numbers {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        /// An integer literal beyond 64 bits is an exact decimal, not the nearest float.
        #[test]
        fn integer_literals_beyond_64_bits_are_exact(digits in "[1-9][0-9]{19,36}", add in -1000i64..1000) {
            let n: i128 = digits.parse().expect("38 digits fit 128 bits");
            on_query_threads(async move {
                let mesh = sample_mesh();
                assert_eq!(one_value(&mesh, &format!("SELECT {digits}")).await, Ok(digits.clone()));
                let sql = format!("SELECT -{digits} + {add}");
                assert_eq!(one_value(&mesh, &sql).await, Ok((-n + add as i128).to_string()), "{sql}");
            });
        }

        /// A cast to a 32- or 64-bit decimal fails when the value does not fit, never wraps.
        #[test]
        fn casts_to_narrow_decimals_never_wrap(x in prop_oneof![any::<i64>(), -2_000_000_000i64..2_000_000_000]) {
            let fits = move |limit: i64| if x.unsigned_abs() <= limit as u64 { Ok(x.to_string()) } else { Err(()) };
            on_query_threads(async move {
                let mesh = sample_mesh();
                for (target, limit) in [("Decimal32(9, 0)", 999_999_999i64), ("Decimal64(18, 0)", 999_999_999_999_999_999)] {
                    for sql in [
                        format!("SELECT arrow_cast({x}, '{target}')"),
                        format!("SELECT arrow_cast(x, '{target}') FROM (VALUES ({x})) t(x)"),
                    ] {
                        assert_eq!(one_value(&mesh, &sql).await, fits(limit), "{sql}");
                    }
                }
            });
        }

        /// The average of durations, plain and grouped, is the exact average truncated.
        #[test]
        fn duration_averages_are_exact(values in proptest::collection::vec(prop_oneof![any::<i64>(), (i64::MAX - 10)..=i64::MAX], 1..6)) {
            let sum: i128 = values.iter().map(|v| *v as i128).sum();
            let expected = (sum / values.len() as i128).to_string();
            let rows: Vec<String> = values.iter().map(|v| format!("(1, arrow_cast({v}, 'Duration(Second)'))")).collect();
            let table = format!("(VALUES {}) t(k, d)", rows.join(", "));
            on_query_threads(async move {
                let mesh = sample_mesh();
                for sql in [
                    format!("SELECT arrow_cast(avg(d), 'Int64') FROM {table}"),
                    format!("SELECT arrow_cast(avg(d), 'Int64') FROM {table} GROUP BY k"),
                    format!("SELECT arrow_cast(max(a), 'Int64') FROM (SELECT avg(d) OVER () AS a FROM {table})"),
                ] {
                    assert_eq!(one_value(&mesh, &sql).await, Ok(expected.clone()), "{sql}");
                }
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

        /// `-n` for `n` between 2^63 + 1 and 2^64 - 1: a number DataFusion reads as a float.
        #[test]
        fn negative_literals_beyond_bigint_are_exact(n in (i64::MAX as u64 + 2)..=u64::MAX) {
            on_query_threads(async move {
                let mesh = sample_mesh();
                assert_eq!(one_value(&mesh, &format!("SELECT -{n}")).await, Ok(format!("-{n}")));
                let sql = format!("SELECT -{n} = -{n} + 1");
                assert_eq!(one_value(&mesh, &sql).await, Ok("false".into()), "{sql}");
            });
        }

        /// `to_timestamp` of a float or a decimal: the time, or an error when it does not fit.
        #[test]
        fn epochs_that_do_not_fit_a_timestamp_fail(seconds in prop_oneof![-1e12f64..1e12, 9.3e9f64..1e30, -1e30f64..-9.3e9]) {
            let whole = seconds.trunc();
            on_query_threads(async move {
                let mesh = sample_mesh();
                for (sql, value) in [
                    (format!("SELECT to_timestamp(CAST({seconds:e} AS DOUBLE)) IS NOT NULL"), seconds),
                    (format!("SELECT to_timestamp(CAST('{whole:.0}' AS DECIMAL(38, 0))) IS NOT NULL"), whole),
                ] {
                    let fits = (value * 1e9).abs() < 9.2e18;
                    match outcome(&mesh, &sql).await {
                        Ok(rows) => assert!(fits, "{sql}: {rows:?}"),
                        Err(e) => {
                            assert!(!fits, "{sql}: {e}");
                            assert!(e.to_string().contains("out of range"), "{sql}: {e}");
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn numbers_no_exact_type_holds_are_refused() {
        on_query_threads(async {
            let mesh = sample_mesh();
            let sql = format!("SELECT {}", "9".repeat(39));
            let e = outcome(&mesh, &sql).await.expect_err(&sql);
            assert_eq!(e.class(), ErrorClass::InvalidQuery, "{e}");
            assert!(e.to_string().contains("more than 38 digits"), "{e}");
            let sql = "SELECT 1.00000000000000000000000000000000000001";
            let e = outcome(&mesh, sql).await.expect_err(sql);
            assert!(e.to_string().contains("more than 38 digits"), "{e}");
            for sql in [
                "SELECT to_timestamp(CAST('NaN' AS DOUBLE))",
                "SELECT to_timestamp(1e19)",
            ] {
                let e = outcome(&mesh, sql).await.expect_err(sql);
                assert!(e.to_string().contains("out of range"), "{sql}: {e}");
            }
            assert_eq!(
                outcome(&mesh, "SELECT to_timestamp(1.5)").await.expect("in range"),
                [["1970-01-01T00:00:01.500"]]
            );
            // Decimals a float holds stay floats; longer ones keep their digits.
            assert_eq!(outcome(&mesh, "SELECT 1.5 * 2").await.expect("float"), [["3.0"]]);
            assert_eq!(
                outcome(&mesh, "SELECT 0.1234567890123456789 * 10")
                    .await
                    .expect("exact"),
                [["1.2345678901234567890"]]
            );
        });
    }
}

#[test]
fn nesting_and_set_operations_beyond_the_limits_fail_before_parsing() {
    use meshql::limits::MAX_NESTING;
    on_query_threads(async {
        let mesh = sample_mesh();
        let arrays = |n: usize| format!("SELECT cardinality({}1{})", "ARRAY[".repeat(n), "]".repeat(n));
        let unions = |n: usize| format!("SELECT count(*) FROM ({})", vec!["SELECT 1"; n].join(" UNION ALL "));
        // ARRAY[ nested 48 deep kept the parser busy for hours; 5,000 UNION ALLs overflowed the
        // stack (the process aborted).
        for sql in [
            arrays(48),
            arrays(MAX_NESTING + 1),
            unions(5000),
            unions(MAX_EXPRESSION_OPERATORS + 2),
        ] {
            let e = outcome(&mesh, &sql).await.expect_err(&sql[..60]);
            assert_eq!(e.class(), ErrorClass::ResourcesExhausted, "{e}");
            assert!(e.to_string().contains("at most"), "{e}");
        }
        assert_eq!(
            outcome(&mesh, &arrays(MAX_NESTING - 2)).await.expect("nested arrays"),
            [["1"]]
        );
        assert_eq!(outcome(&mesh, &unions(900)).await.expect("900 unions"), [["900"]]);
        bystander_answers(&mesh).await;
    });
}

/// Constants folded while planning are held to the call limit together: past it, calls are left
/// for the run (where the run-time limits hold them), not computed by the optimiser.
#[test]
fn constants_folded_while_planning_are_held_to_a_budget_together() {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    on_query_threads(async {
        let mesh = sample_mesh();
        let columns: Vec<String> = (0..6).map(|i| format!("repeat('{i}', 60000000) AS c{i}")).collect();
        let sql = format!("SELECT {}", columns.join(", "));
        let plan = mesh
            .session(analyst())
            .sql(&sql)
            .await
            .expect("plans")
            .into_optimized_plan()
            .expect("optimises");
        let mut unfolded = 0;
        plan.apply(|node| {
            node.apply_expressions(|e| {
                e.apply(|e| {
                    if matches!(e, Expr::ScalarFunction(f) if f.name() == "repeat") {
                        unfolded += 1;
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })
        .expect("walks");
        // 6 × 57 MiB: four fit 256 MiB, the others stay calls.
        assert_eq!(unfolded, 2, "repeat calls left unfolded");
        bystander_answers(&mesh).await;
    });
}

#[test]
fn window_values_and_large_constants_are_held_to_what_repeating_them_builds() {
    on_query_threads(async {
        let mesh = sample_mesh();
        for sql in [
            // The whole partition's list, or text, on each of its rows.
            "SELECT max(cardinality(a)) FROM (SELECT array_agg(g) OVER () a FROM generate_series(1, 40000) t(g))",
            "SELECT max(length(s)) FROM (SELECT string_agg(CAST(g AS VARCHAR), ',') OVER () s FROM generate_series(1, 40000) t(g))",
            "SELECT max(cardinality(a)) FROM (SELECT array_agg(g) OVER (PARTITION BY g % 2) a FROM generate_series(1, 40000) t(g))",
            // One large value on every row: an aggregate, a window function, a default.
            "SELECT max(length(s)) FROM (SELECT max(repeat('x', 1000000 + g * 0)) OVER () s FROM generate_series(1, 1000) t(g))",
            "SELECT max(length(s)) FROM (SELECT first_value(repeat('x', 1000000 + g * 0)) OVER (ORDER BY g) s FROM generate_series(1, 1000) t(g))",
            "SELECT max(length(s)) FROM (SELECT nth_value(repeat('x', 1000000 + g * 0), 2) OVER (ORDER BY g) s FROM generate_series(1, 1000) t(g))",
            "SELECT max(length(s)) FROM (SELECT lag(CAST(g AS VARCHAR), 900, repeat('z', 2000000)) OVER (ORDER BY g) s FROM generate_series(1, 1000) t(g))",
            // Under the limit in each partition, over it in all of them together.
            "SELECT sum(length(a)) FROM (SELECT lead(s, 1, repeat('y', 20000000)) OVER (PARTITION BY g % 50 ORDER BY g) a FROM (SELECT g, 'x' s FROM generate_series(1, 300) t(g)))",
            "SELECT sum(length(a)) FROM (SELECT max(s) OVER (PARTITION BY g % 50) a FROM (SELECT g, repeat('x', 1000000 + g * 0) s FROM generate_series(1, 300) t(g)))",
            // A constant folded while planning, then repeated on every row.
            "SELECT max(length(s)) FROM (SELECT repeat('x', 60000000) AS s FROM generate_series(1, 1000) t(g))",
            "SELECT count(*) FROM (SELECT CASE WHEN g > 0 THEN repeat('x', 60000000) END AS s FROM generate_series(1, 1000) t(g)) WHERE s IS NOT NULL",
            "SELECT max(length(s)) FROM (SELECT max(repeat('x', 60000000)) OVER () s FROM mesh.customer.profiles)",
            "SELECT max(length(coalesce(nullif(full_name, full_name), repeat('x', 60000000)) || full_name)) FROM mesh.customer.profiles",
        ] {
            let e = outcome(&mesh, sql).await.expect_err(sql);
            assert_eq!(e.class(), ErrorClass::ResourcesExhausted, "{sql}: {e}");
            assert!(e.to_string().contains("are allowed"), "{sql}: {e}");
        }
        // A FILTER would repeat the value on rows the check never sees: refused for such results.
        let sql = "SELECT max(s) FROM (SELECT string_agg(full_name, ',') FILTER (WHERE customer_id < 3) OVER () s FROM mesh.customer.profiles)";
        let e = outcome(&mesh, sql).await.expect_err(sql);
        assert_eq!(e.class(), ErrorClass::InvalidQuery, "{e}");
        assert!(
            e.to_string().starts_with("Error during planning: string_agg(…) FILTER"),
            "{e}"
        );
        // Within the limits the same windows answer what the aggregates do.
        let longest = |n: usize| (1..=n).map(|g| g.to_string().len()).sum::<usize>() + n - 1;
        for (sql, expected) in [
            ("SELECT max(cardinality(a)) FROM (SELECT array_agg(g) OVER () a FROM generate_series(1, 1000) t(g))".to_string(), "1000".to_string()),
            (
                "SELECT max(length(s)) FROM (SELECT string_agg(CAST(g AS VARCHAR), ',') OVER (ORDER BY g) s FROM generate_series(1, 2000) t(g))".into(),
                longest(2000).to_string(),
            ),
            (
                "SELECT count(*) FROM (SELECT max(full_name) OVER () s FROM mesh.customer.profiles) WHERE s = (SELECT max(full_name) FROM mesh.customer.profiles)".into(),
                "200".into(),
            ),
            (
                "SELECT count(*) FROM (SELECT region, first_value(full_name) OVER (PARTITION BY region ORDER BY customer_id) f FROM mesh.customer.profiles) w \
                 JOIN (SELECT region r, min(customer_id) m FROM mesh.customer.profiles GROUP BY region) ON r = w.region \
                 JOIN mesh.customer.profiles p ON p.customer_id = m WHERE f = p.full_name".into(),
                "200".into(),
            ),
            ("SELECT length(s) FROM (SELECT repeat('x', 2000000) AS s)".into(), "2000000".into()),
            (
                "SELECT max(length(s)) FROM (SELECT lag(CAST(g AS VARCHAR), 1, repeat('z', 2000000)) OVER (ORDER BY g) s FROM generate_series(1, 1000) t(g))".into(),
                "2000000".into(),
            ),
        ] {
            assert_eq!(outcome(&mesh, &sql).await.expect(&sql), [[expected]], "{sql}");
        }
        bystander_answers(&mesh).await;
    });
}

#[test]
fn functions_cannot_build_values_beyond_the_value_limit() {
    use meshql::limits::MAX_VALUE_BYTES;
    on_query_threads(async {
        let mesh = sample_mesh();
        let over = MAX_VALUE_BYTES + 1;
        for sql in [
            format!("SELECT length(repeat('x', {over}))"),
            "SELECT length(repeat('x', 1000000000))".to_string(),
            format!("SELECT length(lpad('x', {over}))"),
            format!("SELECT length(rpad('x', {over}, 'ab'))"),
            format!("SELECT cardinality(array_repeat(1, {over}))"),
            "SELECT cardinality(range(300000000))".to_string(),
            "SELECT cardinality(generate_series(-9223372036854775807, 9223372036854775807))".to_string(),
            "SELECT cardinality(array_resize([1], 100000000))".to_string(),
            // Small per row, too much for one batch of rows.
            "SELECT max(length(repeat(full_name, 10000000))) FROM mesh.customer.profiles".to_string(),
            // Functions whose result is a multiple of their arguments, checked before the call
            // (whether the arguments are constants, folded while planning, or columns).
            "SELECT length(replace(repeat('x', 5000000), 'x', 'yyyyyyyyyyyyyyyy'))".to_string(),
            "SELECT length(replace(repeat('x', 5000000 + g * 0), 'x', 'yyyyyyyyyyyyyyyy')) FROM generate_series(1, 1) t(g)".to_string(),
            "SELECT length(regexp_replace(repeat('x', 5000000 + g * 0), 'x', 'yyyyyyyyyyyyyyyy', 'g')) FROM generate_series(1, 1) t(g)".to_string(),
            format!("SELECT length(array_to_string(range(1000000), '{}'))", ",".repeat(70)).to_string(),
            "SELECT cardinality(flatten(array_repeat(range(1000000 + g * 0), 10))) FROM generate_series(1, 1) t(g)".to_string(),
            "SELECT cardinality(generate_series(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second'))".to_string(),
            "SELECT cardinality(range(DATE '1970-01-01', DATE '9999-01-01', INTERVAL '1 minute'))".to_string(),
            "SELECT levenshtein(repeat('a', 30000 + g * 0), repeat('b', 30000)) FROM generate_series(1, 1) t(g)".to_string(),
            // Functions whose result grows by a small factor, checked after the call.
            format!("SELECT length(repeat('x', {half}) || repeat('y', {half}))", half = over / 2 + 1),
            format!("SELECT length(concat(repeat('x', {half}), repeat('y', {half})))", half = over / 2 + 1),
            format!("SELECT cardinality(make_array(repeat('x', {half}), repeat('y', {half})))", half = over / 2 + 1),
            format!("SELECT length(overlay(repeat('x', {half}) PLACING repeat('y', {half}) FROM 2 FOR 0))", half = over / 2 + 1),
            // An aggregate that builds one value.
            "SELECT length(string_agg(repeat('x', 6000000 + g * 0), '')) FROM generate_series(1, 20) t(g)".to_string(),
            // A window returns a value per row: n lists of up to n elements.
            "SELECT max(cardinality(a)) FROM (SELECT array_agg(g) OVER (ORDER BY g) a FROM generate_series(1, 20000) t(g))".to_string(),
            // Multiples of their arguments found by the stranger's second run.
            "SELECT cardinality(array_replace_all(array_repeat('a', 1000000), 'a', repeat('x', 1000)))".to_string(),
            "SELECT cardinality(string_to_array(repeat(',', 20000000), ','))".to_string(),
            format!("SELECT octet_length(concat_ws(repeat('r', {}), 'a', 'b', 'c', 'd'))", over / 3 + 1),
            // A constant argument that goes into every row's value, a template most of all
            // (the stranger's third run: two of these aborted the server).
            "SELECT max(length(to_char(to_timestamp(g), repeat('%c', 5000)))) FROM generate_series(1, 2000) t(g)".to_string(),
            "SELECT length(to_char(to_timestamp(g), repeat('%c', 5000000))) FROM generate_series(1, 1) t(g)".to_string(),
            "SELECT max(length(concat(CAST(g AS VARCHAR), repeat('x', 100000)))) FROM generate_series(1, 20000) t(g)".to_string(),
            // Characters wider than a byte (the stranger's fourth run: `translate` aborted the
            // server, `lpad` built 4× the value limit).
            "SELECT length(translate(repeat('a', 60000000), 'a', '😀'))".to_string(),
            "SELECT length(lpad('x', 60000000, '😀'))".to_string(),
        ] {
            let e = outcome(&mesh, &sql).await.expect_err(&sql);
            assert_eq!(e.class(), ErrorClass::ResourcesExhausted, "{sql}: {e}");
            assert!(e.to_string().contains("are allowed"), "{sql}: {e}");
        }
        // Under the limits the functions work as before, and a series as a table streams.
        for (sql, expected) in [
            ("SELECT length(repeat('ab', 1000000))", "2000000"),
            ("SELECT length(lpad('x', 5, 'ab'))", "5"),
            ("SELECT cardinality(range(1000))", "1000"),
            ("SELECT cardinality(array_repeat('abc', 3))", "3"),
            ("SELECT count(*) FROM range(20000000)", "20000000"),
            ("SELECT length(replace(repeat('x', 1000), 'x', 'yyyyyyyyyyyyyyyy'))", "16000"),
            ("SELECT length(regexp_replace(repeat('x', 1000), 'x', 'yy', 'g'))", "2000"),
            ("SELECT length(repeat('x', 1000) || repeat('y', 1000))", "2000"),
            ("SELECT length(array_to_string(range(1000), ', '))", "4888"),
            ("SELECT cardinality(array_repeat(range(10), 10))", "100"),
            ("SELECT cardinality(generate_series(TIMESTAMP '2020-01-01', TIMESTAMP '2020-01-02', INTERVAL '1 minute'))", "1441"),
            ("SELECT levenshtein('kitten', 'sitting')", "3"),
            ("SELECT max(length(to_char(to_timestamp(g), '%Y-%m-%d %H:%M'))) FROM generate_series(1, 20000) t(g)", "16"),
            ("SELECT octet_length(translate('abc', 'a', '😀')) + octet_length(lpad('x', 3, '😀'))", "15"),
            ("SELECT length(string_agg(repeat('x', 1000 + g * 0), '')) FROM generate_series(1, 20) t(g)", "20000"),
        ] {
            assert_eq!(outcome(&mesh, sql).await.expect(sql), [[expected]], "{sql}");
        }
        bystander_answers(&mesh).await;
    });
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn no_row_leaves_unless_its_audit_record_is_on_disk_and_a_full_disk_heals() {
    use futures::StreamExt;
    let dir = copy_of_sample();
    add_to_mesh_yaml(dir.path(), "audit:\n  maxFileBytes: 1048576\n  maxFiles: 3\n");
    let audit_dir = {
        let mesh = Mesh::open(dir.path()).expect("open");
        mesh.audit().expect("audit on").dir().to_path_buf()
    };
    // The disk is full: every write to the trail fails with ENOSPC (/dev/full), as the
    // newest audit file that the mesh continues.
    for f in std::fs::read_dir(&audit_dir).expect("audit dir") {
        std::fs::remove_file(f.expect("entry").path()).expect("remove");
    }
    let full = audit_dir.join("audit-99999999999999999999-0000000000-000000.jsonl");
    std::os::unix::fs::symlink("/dev/full", &full).expect("symlink");
    let mesh = Mesh::open(dir.path()).expect("open");
    let mut stream = mesh
        .session(analyst())
        .sql("SELECT * FROM mesh.customer.profiles")
        .await
        .expect("plans")
        .stream()
        .await
        .expect("starts");
    let first = stream.next().await.expect("an item");
    let e = first.expect_err("no batch leaves while the trail cannot be written");
    assert!(e.to_string().contains("audit trail cannot be written"), "{e}");
    assert!(stream.next().await.is_none(), "nothing after the refusal");
    drop(stream);
    // Space is freed: the trail goes on in a new file, and the next query is recorded.
    std::fs::remove_file(&full).expect("free the disk");
    bystander_answers(&mesh).await;
    let records = mesh.audit().expect("audit on").read_all().expect("read");
    let ok: Vec<_> = records.iter().filter(|r| r.outcome == "ok").collect();
    assert_eq!(ok.len(), 1, "{records:?}");
    assert!(ok[0].statement.contains("customer_id = 7"));
    assert!(
        records.iter().all(|r| r.outcome != meshql::audit::STARTED),
        "a finished query's started record is settled: {records:?}"
    );
    // Both records of the answered query are on disk: the one written before its rows, and
    // its end.
    let raw: usize = std::fs::read_dir(&audit_dir)
        .expect("audit dir")
        .map(|f| std::fs::read_to_string(f.expect("entry").path()).unwrap_or_default())
        .map(|text| text.lines().filter(|l| l.contains("customer_id = 7")).count())
        .sum();
    assert_eq!(raw, 2);
}

#[tokio::test]
async fn timestamp_literals_reach_beyond_2262_in_every_spelling() {
    let mesh = sample_mesh();
    for sql in [
        "SELECT CAST(TIMESTAMP '9999-12-31 00:00:00' AS VARCHAR)",
        "SELECT CAST(CAST('9999-12-31 00:00:00' AS TIMESTAMP) AS VARCHAR)",
        "SELECT CAST('9999-12-31 00:00:00'::timestamp AS VARCHAR)",
    ] {
        assert_eq!(query(&mesh, sql).await, [["9999-12-31T00:00:00"]], "{sql}");
    }
}

/// Everything a query's operators allocate counts against it, not only what they reserve:
/// several expressions of one batch each within the per-value and per-call limits, a join
/// repeating a large value into one batch, branches of a union. The query fails alone; the
/// same statements run under a limit that holds them, and a bystander is answered throughout.
#[test]
fn what_functions_and_joins_build_counts_against_the_query() {
    on_query_threads(async {
        let mesh = sample_mesh();
        // 2 MB per row, 20 rows: 40 MB per column of a batch, each `||` within the limits.
        let base = "SELECT repeat('x', 2000000) || CAST(value AS VARCHAR) AS s FROM range(20)";
        let columns = |n: usize| (0..n).map(|i| format!("s || '{i}'")).collect::<Vec<_>>().join(", ");
        let branches = (0..10)
            .map(|i| format!("SELECT s || '{i}' AS s FROM ({base})"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let statements = [
            format!("SELECT {} FROM ({base})", columns(12)),
            // One output batch of 100 copies of a 5 MB value.
            "SELECT max(t.s) FROM (SELECT repeat('y', 5000000) AS s) t CROSS JOIN range(100) r".to_string(),
            format!("SELECT count(DISTINCT s) FROM ({branches})"),
        ];
        let run = |sql: String, limit: usize| {
            let mesh = mesh.clone();
            async move {
                let result = mesh.session(analyst()).sql(&sql).await?;
                let stream = result.stream_with_memory_limit(limit).await?;
                futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                    .await
                    .map_err(meshql::Error::from)
            }
        };
        for (i, sql) in statements.iter().enumerate() {
            let e = run(sql.clone(), 32 << 20).await.expect_err(sql);
            assert_eq!(e.class(), ErrorClass::ResourcesExhausted, "{sql}: {e}");
            if i < 2 {
                // Nothing DataFusion reserves: only the counted allocations stop these.
                assert!(e.to_string().contains("holds about"), "{sql}: {e}");
            }
            let bystander = outcome(&mesh, "SELECT count(*) FROM mesh.customer.profiles").await;
            assert!(bystander.is_ok(), "after {sql}: {bystander:?}");
        }
        // Not a leak: with room for them, the same statements run.
        for sql in &statements {
            let batches = run(sql.clone(), 1 << 30).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() >= 1, "{sql}");
        }
    })
}

/// Text that arrow builds from a list, struct or duration without a bound: held to the value
/// limits before it is built, and a duration it cannot write is an error, not `<invalid>`.
#[test]
fn casts_to_text_are_bounded_and_never_invalid() {
    on_query_threads(async {
        let mesh = sample_mesh();
        let max = i64::MAX;
        for sql in [
            format!("SELECT CAST(arrow_cast({max}, 'Duration(Second)') AS VARCHAR)"),
            format!("SELECT CAST(arrow_cast(-{max}, 'Duration(Second)') AS VARCHAR)"),
            format!("SELECT CAST(make_array(arrow_cast({max}, 'Duration(Second)')) AS VARCHAR)"),
        ] {
            let e = outcome(&mesh, &sql).await.expect_err(&sql);
            assert!(e.to_string().contains("cannot be written as text"), "{sql}: {e}");
        }
        // Twelve million booleans (1.5 MB of bits) would be 78 MB of text.
        let sql = "SELECT length(CAST(array_agg(g % 2 = 0) AS VARCHAR)) FROM generate_series(1, 12000000) t(g)";
        let e = outcome(&mesh, sql).await.expect_err(sql);
        assert_eq!(e.class(), ErrorClass::ResourcesExhausted, "{sql}: {e}");
        assert!(e.to_string().contains("of text; at most 64 MiB"), "{sql}: {e}");
        for (sql, expected) in [
            (
                "SELECT CAST([1, -22, 333] AS VARCHAR)".to_string(),
                "[1, -22, 333]".to_string(),
            ),
            (
                // The longest duration in seconds that can be written, as DataFusion writes it.
                format!("SELECT CAST(arrow_cast({}, 'Duration(Second)') AS VARCHAR)", max / 1000),
                "106751991167 days 7 hours 12 mins 55 secs".to_string(),
            ),
            (
                "SELECT length(CAST(array_agg(g % 2 = 0) AS VARCHAR)) FROM generate_series(1, 100000) t(g)".to_string(),
                // "[" + 50,000 "true" and 50,000 "false" + 99,999 ", " + "]"
                (2 + 50_000 * 4 + 50_000 * 5 + 99_999 * 2).to_string(),
            ),
        ] {
            assert_eq!(
                outcome(&mesh, &sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")),
                vec![vec![expected]],
                "{sql}"
            );
        }
    })
}
