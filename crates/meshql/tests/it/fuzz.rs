//! Seeded fuzzing, run as tests: mutated statements through the SQL front (time-travel
//! rewrite, parse, plan and run under restricted principals), and mutated contracts,
//! descriptors and policy files through loading. Nothing may panic or take the engine down;
//! every input fails alone, with an error of its own.
//!
//! CI runs a bounded number of cases from a fixed seed; a longer run on request:
//! `MESHQL_FUZZ_CASES=5000 MESHQL_FUZZ_SEED=$RANDOM cargo nextest run -p meshql fuzz`. Every
//! crash found becomes a regression case in [`REGRESSIONS`] or in `hostile.rs`.

use std::time::Duration;

use meshql::{Error, Mesh, Principal};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::common::*;

fn cases(default: u32) -> u32 {
    std::env::var("MESHQL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    let seed = std::env::var("MESHQL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_202);
    TestRunner::new(Config {
        cases: cases(default_cases),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    })
}

/// Statements the mutations start from: every part of the front (time travel, system tables,
/// EXPLAIN, parameters, subqueries, set operations, functions, casts).
const SEEDS: &[&str] = &[
    "SELECT customer_id, region FROM mesh.customer.profiles WHERE region = 'EU' ORDER BY 1 LIMIT 5",
    "SELECT count(*), sum(amount) FROM mesh.\"order\".transactions GROUP BY currency HAVING count(*) > 1",
    "SELECT * FROM mesh.logistics.shipments FOR VERSION AS OF 0",
    "SELECT * FROM mesh.\"order\".transactions FOR TIMESTAMP AS OF '2020-01-01T00:00:00Z'",
    "EXPLAIN SELECT email FROM mesh.customer.profiles WHERE customer_id IN (SELECT customer_id FROM mesh.\"order\".transactions)",
    "EXPLAIN VERBOSE SELECT birth_date FROM mesh.customer.profiles",
    "SELECT * FROM mesh.system.products",
    "SELECT * FROM information_schema.columns WHERE table_schema = 'customer'",
    "SELECT p.region, t.amount FROM mesh.customer.profiles p JOIN mesh.\"order\".transactions t ON p.customer_id = t.customer_id",
    "SELECT region FROM mesh.customer.profiles UNION ALL SELECT currency FROM mesh.\"order\".transactions",
    "SELECT CASE WHEN customer_id > 10 THEN upper(full_name) ELSE lower(email) END FROM mesh.customer.profiles",
    "SELECT CAST(signup_ts AS DATE) + INTERVAL '1' DAY, date_trunc('month', signup_ts) FROM mesh.customer.profiles",
    "SELECT customer_id * 2 + 1, -customer_id, customer_id % 3 FROM mesh.customer.profiles WHERE customer_id BETWEEN 1 AND $1",
    "WITH t AS (SELECT * FROM mesh.customer.profiles) SELECT row_number() OVER (PARTITION BY region ORDER BY customer_id) FROM t",
    "SELECT array_agg(email), string_agg(phone, ',') FROM mesh.customer.profiles",
    "SHOW TABLES",
];

/// Tokens the mutations insert: keywords, operators, extreme literals, names of hidden
/// columns and products, time-travel clauses.
const TOKENS: &[&str] = &[
    "(",
    ")",
    ",",
    "*",
    "+",
    "-",
    "/",
    "%",
    "||",
    "=",
    "<>",
    "NOT",
    "AND",
    "OR",
    "NULL",
    "SELECT",
    "FROM",
    "WHERE",
    "JOIN",
    "ON",
    "UNION",
    "EXCEPT",
    "ORDER BY",
    "GROUP BY",
    "LIMIT",
    "OFFSET",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "AS",
    "IN",
    "EXISTS",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "IS",
    "CAST(",
    "::",
    "[",
    "]",
    "FOR VERSION AS OF",
    "FOR TIMESTAMP AS OF",
    "9223372036854775807",
    "-9223372036854775808",
    "0",
    "1e308",
    "''",
    "'\u{0}'",
    "'%_%'",
    "$1",
    "$2",
    "?",
    "birth_date",
    "email",
    "mesh.customer.profiles",
    "mesh.system.queries",
    "mesh.system.problems",
    "mesh.logistics.shipments",
    "generate_series(1, 5)",
    "range(3)",
    "repeat('x', 3)",
    "ARRAY[1,2]",
    "INTERVAL '1' DAY",
    "TIMESTAMP '9999-12-31 00:00:00'",
    "DATE '0001-01-01'",
    "EXPLAIN",
    "ANALYZE",
    "VERBOSE",
    ";",
    "--",
    "/*",
    "*/",
    "\"",
    "é",
    "🙂",
];

/// A mutation of one statement.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Insert(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// `seed` split on spaces, mutated.
fn mutate(seed: &str, mutations: &[Mutation]) -> String {
    let mut words: Vec<String> = seed.split(' ').map(str::to_string).collect();
    for m in mutations {
        let n = words.len().max(1);
        match *m {
            Mutation::Delete(i) if !words.is_empty() => {
                words.remove(i % n);
            }
            Mutation::Duplicate(i) if !words.is_empty() => {
                let w = words[i % n].clone();
                words.insert(i % n, w);
            }
            Mutation::Swap(a, b) if !words.is_empty() => words.swap(a % n, b % n),
            Mutation::Insert(at, t) => words.insert(at % (words.len() + 1), TOKENS[t % TOKENS.len()].to_string()),
            Mutation::Truncate(at) => words.truncate(at % (words.len() + 1)),
            _ => {}
        }
    }
    words.join(" ")
}

/// Crashes fuzzing found, kept as cases of their own.
const REGRESSIONS: &[&str] = &[];

/// Runs `sql` as `principal` (planned and, if it plans, run for at most a few seconds): any
/// outcome but a panic or an engine fault is fine.
async fn survive(mesh: &Mesh, principal: Principal, sql: &str) -> Result<(), String> {
    let planned = mesh.session(principal).sql(sql).await;
    let outcome = match planned {
        Ok(q) => {
            let q = if q.parameters().map(|p| p.is_empty()).unwrap_or(true) {
                q
            } else {
                match q.with_params(vec![datafusion::common::ScalarValue::Int64(Some(3))]) {
                    Ok(q) => q,
                    Err(e) => return check(sql, Err(e)),
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), q.collect()).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Ok(()),
            }
        }
        Err(e) => Err(e),
    };
    check(sql, outcome)
}

fn check(sql: &str, outcome: Result<(), Error>) -> Result<(), String> {
    match outcome {
        Err(Error::EngineFault) => Err(format!("the engine panicked on: {sql}")),
        Err(e) if e.to_string().is_empty() => Err(format!("an empty error for: {sql}")),
        _ => Ok(()),
    }
}

#[test]
fn mutated_statements_fail_alone_under_restricted_principals() {
    let runtime = query_runtime();
    let mesh = sample_mesh();
    runtime.block_on(async {
        for sql in REGRESSIONS {
            survive(&mesh, sam(), sql).await.expect("regression");
        }
    });
    let strategy = (0..SEEDS.len(), proptest::collection::vec(mutation(), 1..6), 0..3usize);
    runner(96)
        .run(&strategy, |(seed, mutations, who)| {
            let sql = mutate(SEEDS[seed], &mutations);
            let principal = [sam(), carl(), nobody()][who].clone();
            let result = runtime.block_on(survive(&mesh, principal, &sql));
            prop_assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // And the engine still answers.
    runtime.block_on(bystander_answers(&mesh));
}

/// A mutation of a YAML document, line by line.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    CutAt(usize),
    Indent(usize),
    Dedent(usize),
    ReplaceValue(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::CutAt),
        any::<usize>().prop_map(Edit::Indent),
        any::<usize>().prop_map(Edit::Dedent),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::ReplaceValue(a, b)),
    ]
}

const VALUES: &[&str] = &[
    "",
    "~",
    "[]",
    "{}",
    "-1",
    "0",
    "1e400",
    "'*'",
    "\"${principal.region}\"",
    "'1 = 1 OR true'",
    "[select, select]",
    "'; DROP TABLE x'",
    "é🙂",
    "!!binary AAAA",
    "&a",
    "*a",
    "'region = '",
    "9999999999999999999999",
    "'../../order/data'",
    "s3://elsewhere/x",
];

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match *e {
            Edit::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::CutAt(i) => {
                let joined = lines.join("\n");
                let mut at = i % (joined.len() + 1);
                while !joined.is_char_boundary(at) {
                    at -= 1;
                }
                lines = joined[..at].lines().map(str::to_string).collect();
            }
            Edit::Indent(i) if !lines.is_empty() => lines[i % n].insert_str(0, "  "),
            Edit::Dedent(i) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                *l = l.strip_prefix("  ").unwrap_or(l).to_string();
            }
            Edit::ReplaceValue(i, v) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                if let Some(colon) = l.find(": ") {
                    l.truncate(colon + 2);
                    l.push_str(VALUES[v % VALUES.len()]);
                }
            }
            _ => {}
        }
    }
    lines.join("\n")
}

/// The files whose loading is fuzzed, relative to the mesh root.
const DOCUMENTS: &[&str] = &[
    "domains/customer/contracts/profiles.odcs.yaml",
    "domains/customer/products/profiles.odps.yaml",
    "domains/customer/policies.yaml",
    "domains/customer/domain.yaml",
    "policies.yaml",
    "mesh.yaml",
];

#[test]
fn mutated_contracts_descriptors_and_policies_load_or_fail_clearly() {
    let runtime = query_runtime();
    let dir = copy_of_sample();
    let originals: Vec<String> = DOCUMENTS
        .iter()
        .map(|d| std::fs::read_to_string(dir.path().join(d)).expect("read"))
        .collect();
    let strategy = (0..DOCUMENTS.len(), proptest::collection::vec(edit(), 1..5));
    runner(48)
        .run(&strategy, |(doc, edits)| {
            let path = dir.path().join(DOCUMENTS[doc]);
            let mutated = apply(&originals[doc], &edits);
            std::fs::write(&path, &mutated).expect("write");
            // Loading either works or says what is wrong; a loaded mesh answers or refuses.
            let opened = std::panic::catch_unwind(|| Mesh::open(dir.path()));
            std::fs::write(&path, &originals[doc]).expect("restore");
            let opened = opened.map_err(|_| TestCaseError::fail(format!("Mesh::open panicked on:\n{mutated}")))?;
            if let Ok(mesh) = opened {
                for who in [sam(), carl()] {
                    let result = runtime.block_on(survive(&mesh, who, "SELECT * FROM mesh.customer.profiles"));
                    prop_assert!(
                        result.is_ok(),
                        "{} with {}:\n{mutated}",
                        result.err().unwrap_or_default(),
                        DOCUMENTS[doc]
                    );
                }
                let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(mesh.check(&meshql::CheckOptions::default()))
                }));
                prop_assert!(
                    checked.is_ok(),
                    "meshql check panicked with {}:\n{}",
                    DOCUMENTS[doc],
                    mutated
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn policy_documents_of_random_shape_load_or_fail_clearly() {
    // Policy text straight to the loader, many more cases than whole meshes.
    let global = std::fs::read_to_string(sample_dir().join("policies.yaml")).expect("read");
    let domain = std::fs::read_to_string(sample_dir().join("domains/customer/policies.yaml")).expect("read");
    let strategy = (proptest::collection::vec(edit(), 1..8), any::<bool>());
    runner(256)
        .run(&strategy, |(edits, global_side)| {
            let (g, d) = if global_side {
                (apply(&global, &edits), domain.clone())
            } else {
                (global.clone(), apply(&domain, &edits))
            };
            let loaded =
                std::panic::catch_unwind(|| meshql_policy::PolicySet::from_yaml(&g, &[("customer", d.as_str())]));
            prop_assert!(loaded.is_ok(), "the policy loader panicked on:\n{g}\n---\n{d}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
