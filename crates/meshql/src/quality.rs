//! Quality checks from ODCS `quality` blocks, and freshness from the SLA.
//!
//! Every rule becomes one SQL query over the product, run inside the engine:
//!
//! | ODCS                       | measured value                                             |
//! |----------------------------|------------------------------------------------------------|
//! | `metric: nullValues`       | rows where the column is null (`unit: percent`: % of rows) |
//! | `metric: missingValues`    | null or one of `arguments.missingValues`                   |
//! | `metric: invalidValues`    | non-null values outside `arguments.validValues` or not matching `arguments.pattern` |
//! | `metric: duplicateValues`  | non-null values (or `arguments.properties` tuples) seen before |
//! | `metric: rowCount`         | rows                                                       |
//! | `type: sql`                | the first value of `query` (`${table}`, `${column}` substituted) |
//!
//! compared with `mustBe`, `mustNotBe`, `mustBeGreaterThan`, `mustBeGreaterOrEqualTo`,
//! `mustBeLessThan`, `mustBeLessOrEqualTo`, `mustBeBetween`, `mustNotBeBetween` (without one:
//! `mustBe: 0` for the counting metrics, `mustBeGreaterThan: 0` for `rowCount`). `severity`
//! (`error` by default, `warning`, `info`) says whether a failure fails `meshql check`.
//!
//! Freshness: an SLA property `latency` or `frequency` (with `unit` `d`, `h`, `m`, `s`) is a
//! maximum age. With an `element` (`table.column` or `column`) the age is `now - max(column)`;
//! without one, for Delta and Iceberg, the age of the served commit.
//!
//! Checks run with the product owner's rights over the product itself: the whole product,
//! unfiltered, and nothing else — a `sql` check that reads another product fails (a contract
//! cannot be used to read data its authors may not read).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use meshql_catalog::OpenedTable;
use meshql_catalog::MESH_CATALOG;
use meshql_contract::{Format, TableEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditRecord, Journal};
use crate::Mesh;

/// How much a failed check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    fn parse(s: Option<&str>) -> Severity {
        match s.map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("info") => Severity::Info,
            Some("warning") | Some("warn") => Severity::Warning,
            _ => Severity::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityOutcome {
    Passed,
    Failed,
    /// The check could not run (bad SQL, unreadable product, …).
    Error,
    /// Not something meshql runs (`text`, `custom` rules; freshness without a way to measure).
    Skipped,
}

impl QualityOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            QualityOutcome::Passed => "passed",
            QualityOutcome::Failed => "failed",
            QualityOutcome::Error => "error",
            QualityOutcome::Skipped => "skipped",
        }
    }
}

/// The result of one check on one product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    /// `domain.product`.
    pub product: String,
    /// The rule's `name`, or one derived from what it checks (`email nullValues`).
    pub check: String,
    #[serde(default)]
    pub column: Option<String>,
    /// `nullValues`, …, `sql`, `freshness`.
    pub kind: String,
    #[serde(default)]
    pub dimension: Option<String>,
    pub severity: Severity,
    pub outcome: QualityOutcome,
    #[serde(default)]
    pub value: Option<f64>,
    /// What was expected, e.g. `mustBe 0` or `age <= 1 d`.
    pub expectation: String,
    pub message: String,
    pub run_at_ms: i64,
    pub duration_ms: f64,
}

impl QualityResult {
    /// A failure that should fail a domain team's CI: `error` severity, failed or not runnable.
    pub fn is_blocking(&self) -> bool {
        self.severity == Severity::Error && matches!(self.outcome, QualityOutcome::Failed | QualityOutcome::Error)
    }
}

/// Quality results of a mesh, with history, kept in `<stateDir>/quality/`.
#[derive(Debug)]
pub struct QualityStore {
    dir: PathBuf,
    journal: OnceLock<Result<Journal, String>>,
}

impl QualityStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        QualityStore {
            dir,
            journal: OnceLock::new(),
        }
    }

    fn journal(&self) -> Result<&Journal, String> {
        self.journal
            .get_or_init(|| {
                Journal::open(&self.dir, "quality-", 64 * 1024 * 1024, 20)
                    .map_err(|e| format!("quality results cannot be stored at {}: {e}", self.dir.display()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Appends results durably.
    pub fn record(&self, results: &[QualityResult]) -> Result<(), String> {
        let journal = self.journal()?;
        for r in results {
            journal
                .append(r)
                .map_err(|e| format!("quality result not stored: {e}"))?;
        }
        Ok(())
    }

    /// Every stored result, oldest first.
    pub fn history(&self) -> Vec<QualityResult> {
        if !self.dir.is_dir() {
            return Vec::new();
        }
        match self
            .journal()
            .and_then(|j| j.read_all::<QualityResult>().map_err(|e| e.to_string()))
        {
            Ok(mut v) => {
                v.sort_by_key(|r| r.run_at_ms);
                v
            }
            Err(e) => {
                tracing::warn!(error = %e, "quality history unreadable");
                Vec::new()
            }
        }
    }

    /// The newest result of every (product, check).
    pub fn latest(&self) -> Vec<QualityResult> {
        let mut latest: std::collections::BTreeMap<(String, String), QualityResult> = Default::default();
        for r in self.history() {
            latest.insert((r.product.clone(), r.check.clone()), r);
        }
        latest.into_values().collect()
    }
}

/// One ODCS quality rule, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    arguments: serde_json::Map<String, Value>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    engine: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    dimension: Option<String>,
    #[serde(default)]
    must_be: Option<Value>,
    #[serde(default)]
    must_not_be: Option<Value>,
    #[serde(default)]
    must_be_greater_than: Option<f64>,
    #[serde(default, alias = "mustBeGreaterThanOrEqualTo")]
    must_be_greater_or_equal_to: Option<f64>,
    #[serde(default)]
    must_be_less_than: Option<f64>,
    #[serde(default, alias = "mustBeLessThanOrEqualTo")]
    must_be_less_or_equal_to: Option<f64>,
    #[serde(default)]
    must_be_between: Option<[f64; 2]>,
    #[serde(default)]
    must_not_be_between: Option<[f64; 2]>,
}

/// A threshold the measured value must meet.
#[derive(Debug, Clone, PartialEq)]
enum Threshold {
    Eq(f64),
    Ne(f64),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    Between(f64, f64),
    NotBetween(f64, f64),
}

impl Threshold {
    fn holds(&self, v: f64) -> bool {
        match *self {
            Threshold::Eq(x) => v == x,
            Threshold::Ne(x) => v != x,
            Threshold::Gt(x) => v > x,
            Threshold::Ge(x) => v >= x,
            Threshold::Lt(x) => v < x,
            Threshold::Le(x) => v <= x,
            Threshold::Between(a, b) => a <= v && v <= b,
            Threshold::NotBetween(a, b) => !(a <= v && v <= b),
        }
    }

    fn describe(&self) -> String {
        match self {
            Threshold::Eq(x) => format!("mustBe {x}"),
            Threshold::Ne(x) => format!("mustNotBe {x}"),
            Threshold::Gt(x) => format!("mustBeGreaterThan {x}"),
            Threshold::Ge(x) => format!("mustBeGreaterOrEqualTo {x}"),
            Threshold::Lt(x) => format!("mustBeLessThan {x}"),
            Threshold::Le(x) => format!("mustBeLessOrEqualTo {x}"),
            Threshold::Between(a, b) => format!("mustBeBetween [{a}, {b}]"),
            Threshold::NotBetween(a, b) => format!("mustNotBeBetween [{a}, {b}]"),
        }
    }
}

impl Rule {
    fn threshold(&self) -> Result<Option<Threshold>, String> {
        let num = |v: &Value, field: &str| {
            v.as_f64()
                .ok_or_else(|| format!("{field}: {v} is not a number (meshql compares numbers)"))
        };
        Ok(Some(if let Some(v) = &self.must_be {
            Threshold::Eq(num(v, "mustBe")?)
        } else if let Some(v) = &self.must_not_be {
            Threshold::Ne(num(v, "mustNotBe")?)
        } else if let Some(x) = self.must_be_greater_than {
            Threshold::Gt(x)
        } else if let Some(x) = self.must_be_greater_or_equal_to {
            Threshold::Ge(x)
        } else if let Some(x) = self.must_be_less_than {
            Threshold::Lt(x)
        } else if let Some(x) = self.must_be_less_or_equal_to {
            Threshold::Le(x)
        } else if let Some([a, b]) = self.must_be_between {
            Threshold::Between(a.min(b), a.max(b))
        } else if let Some([a, b]) = self.must_not_be_between {
            Threshold::NotBetween(a.min(b), a.max(b))
        } else {
            return Ok(None);
        }))
    }
}

/// What one rule asks, ready to run.
struct Planned {
    check: String,
    column: Option<String>,
    kind: String,
    dimension: Option<String>,
    severity: Severity,
    what: Result<Measure, String>,
}

enum Measure {
    /// SQL whose first row has the value (and, for percentages, the total in the 2nd column).
    Sql {
        sql: String,
        percent: bool,
        threshold: Threshold,
    },
    /// Maximum age in milliseconds; measured by `max(column)` or the last commit.
    Freshness {
        max_age_ms: i64,
        column: Option<String>,
        expectation: String,
    },
    Skip(String),
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(format!("'{}'", s.replace('\'', "''"))),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn plan_rule(table: &str, names: &[&str], column: Option<&str>, raw: &Value, index: usize) -> Planned {
    let rule: Rule = serde_json::from_value(raw.clone()).unwrap_or_default();
    let severity = Severity::parse(rule.severity.as_deref());
    let kind = rule
        .metric
        .clone()
        .or_else(|| rule.rule.clone())
        .or_else(|| rule.kind.clone())
        .unwrap_or_else(|| "library".to_string());
    let check = rule.name.clone().unwrap_or_else(|| match column {
        Some(c) => format!("{c} {kind}"),
        None => format!("{kind} #{}", index + 1),
    });
    let base = |what| Planned {
        check: check.clone(),
        column: column.map(str::to_string),
        kind: kind.clone(),
        dimension: rule.dimension.clone(),
        severity,
        what,
    };
    let threshold = match rule.threshold() {
        Ok(t) => t,
        Err(e) => return base(Err(e)),
    };
    let percent = rule
        .unit
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case("percent") || u == "%");
    let kind_str = rule.kind.as_deref().unwrap_or("library");
    if kind_str == "text" {
        return base(Ok(Measure::Skip("a text rule, for people".into())));
    }
    if kind_str == "custom" {
        return base(Ok(Measure::Skip(format!(
            "a custom rule for {}",
            rule.engine.as_deref().unwrap_or("another engine")
        ))));
    }
    if kind_str == "sql" {
        let Some(query) = &rule.query else {
            return base(Err("a sql rule needs a query".into()));
        };
        let Some(threshold) = threshold else {
            return base(Err("a sql rule needs a threshold (mustBe, mustBeLessThan, …)".into()));
        };
        let mut sql = query.clone();
        for key in ["${table}", "{table}", "${object}", "{object}"] {
            sql = sql.replace(key, table);
        }
        // The official examples also name the table itself, by its schema object's name or its
        // physical name.
        let mut sql = name_the_product(&sql, names, table);
        if let Some(c) = column {
            for key in ["${column}", "{column}", "${property}", "{property}"] {
                sql = sql.replace(key, &ident(c));
            }
        }
        return base(Ok(Measure::Sql {
            sql,
            percent: false,
            threshold,
        }));
    }
    let arg_properties: Option<Vec<String>> = rule.arguments.get("properties").and_then(|v| {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
    });
    let columns: Vec<String> = match (column, &arg_properties) {
        (Some(c), _) => vec![c.to_string()],
        (None, Some(p)) if !p.is_empty() => p.clone(),
        _ => Vec::new(),
    };
    let need_column = || -> Result<&str, String> {
        column
            .or(arg_properties.as_ref().and_then(|p| p.first()).map(String::as_str))
            .ok_or_else(|| {
                format!("metric {kind} needs a column: put it under a property, or name arguments.properties")
            })
    };
    let counted = |predicate: String| {
        format!("SELECT CAST(count(*) FILTER (WHERE {predicate}) AS DOUBLE) AS v, CAST(count(*) AS DOUBLE) AS n FROM {table}")
    };
    let sql = match kind.as_str() {
        "rowCount" => Ok(format!("SELECT CAST(count(*) AS DOUBLE) AS v, CAST(count(*) AS DOUBLE) AS n FROM {table}")),
        "nullValues" => need_column().map(|c| counted(format!("{} IS NULL", ident(c)))),
        "missingValues" => need_column().map(|c| {
            let missing: Vec<String> = rule
                .arguments
                .get("missingValues")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(literal).collect())
                .unwrap_or_default();
            let c = ident(c);
            if missing.is_empty() {
                counted(format!("{c} IS NULL"))
            } else {
                counted(format!("{c} IS NULL OR {c} IN ({})", missing.join(", ")))
            }
        }),
        "invalidValues" => need_column().and_then(|c| {
            let c = ident(c);
            let mut invalid = Vec::new();
            if let Some(valid) = rule.arguments.get("validValues").and_then(Value::as_array) {
                let list: Vec<String> = valid.iter().filter_map(literal).collect();
                if !list.is_empty() {
                    invalid.push(format!("{c} NOT IN ({})", list.join(", ")));
                }
            }
            if let Some(pattern) = rule.arguments.get("pattern").and_then(Value::as_str) {
                invalid.push(format!(
                    "NOT regexp_like(CAST({c} AS VARCHAR), '{}')",
                    pattern.replace('\'', "''")
                ));
            }
            if invalid.is_empty() {
                return Err("invalidValues needs arguments.validValues or arguments.pattern".to_string());
            }
            Ok(counted(format!("{c} IS NOT NULL AND ({})", invalid.join(" OR "))))
        }),
        "duplicateValues" => {
            if columns.is_empty() {
                Err("duplicateValues needs a column or arguments.properties".to_string())
            } else {
                let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
                let not_null = cols
                    .iter()
                    .map(|c| format!("{c} IS NOT NULL"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                Ok(format!(
                    "SELECT CAST(n - d AS DOUBLE) AS v, CAST(n AS DOUBLE) AS total FROM \
                     (SELECT count(*) AS n FROM {table} WHERE {not_null}) \
                     CROSS JOIN (SELECT count(*) AS d FROM (SELECT DISTINCT {} FROM {table} WHERE {not_null}))",
                    cols.join(", ")
                ))
            }
        }
        other => Err(format!("unknown metric {other:?} (ODCS metrics: nullValues, missingValues, invalidValues, duplicateValues, rowCount)")),
    };
    let default = if kind == "rowCount" {
        Threshold::Gt(0.0)
    } else {
        Threshold::Eq(0.0)
    };
    base(sql.map(|sql| Measure::Sql {
        sql,
        percent: percent && kind != "rowCount",
        threshold: threshold.unwrap_or(default),
    }))
}

/// `value` `unit` → milliseconds.
fn duration_ms(value: &Value, unit: Option<&str>) -> Option<i64> {
    let v = value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))?;
    let unit = unit.unwrap_or("d").to_ascii_lowercase();
    let ms = match unit.as_str() {
        "y" | "yr" | "year" | "years" => 365.0 * 86_400_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "h" | "hr" | "hour" | "hours" => 3_600_000.0,
        "m" | "min" | "minute" | "minutes" => 60_000.0,
        "s" | "sec" | "second" | "seconds" => 1000.0,
        _ => return None,
    };
    Some((v * ms) as i64)
}

/// `sql` with the table names of `names` (case-insensitive, quoted or not) replaced by `table`
/// where they name a table: after `FROM` or `JOIN`, or qualifying a column (`name.column`).
fn name_the_product(sql: &str, names: &[&str], table: &str) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return sql.to_string();
    };
    let significant = |i: usize| !matches!(tokens[i], Token::Whitespace(_));
    let mut out = String::with_capacity(sql.len());
    for (i, token) in tokens.iter().enumerate() {
        let previous = (0..i).rev().find(|&j| significant(j)).map(|j| &tokens[j]);
        let next = (i + 1..tokens.len()).find(|&j| significant(j)).map(|j| &tokens[j]);
        let names_table = match token {
            Token::Word(w) if names.iter().any(|n| n.eq_ignore_ascii_case(&w.value)) => {
                let after_from =
                    matches!(previous, Some(Token::Word(p)) if matches!(p.keyword, Keyword::FROM | Keyword::JOIN));
                let qualifies = matches!(next, Some(Token::Period)) && !matches!(previous, Some(Token::Period));
                after_from || qualifies
            }
            _ => false,
        };
        if names_table {
            out.push_str(table);
        } else {
            out.push_str(&token.to_string());
        }
    }
    out
}

/// Every check the product's contract asks for.
fn plan_product(entry: &TableEntry) -> Vec<Planned> {
    let Ok(binding) = &entry.binding else {
        return Vec::new();
    };
    let table = format!(
        "{}.{}.{}",
        ident(MESH_CATALOG),
        ident(&entry.domain),
        ident(&entry.name)
    );
    let names: Vec<&str> = [
        Some(binding.schema.name.as_str()),
        binding.schema.physical_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut out = Vec::new();
    for (i, q) in binding.schema.quality.iter().enumerate() {
        out.push(plan_rule(&table, &names, None, q, i));
    }
    for p in &binding.schema.properties {
        for (i, q) in p.quality.iter().enumerate() {
            out.push(plan_rule(&table, &names, Some(&p.name), q, i));
        }
    }
    for sla in &binding.contract.sla_properties {
        let kind = sla.property.to_ascii_lowercase();
        if kind != "latency" && kind != "frequency" && kind != "freshness" {
            continue;
        }
        // `column` or `table.column`, by the contract's name or the stored (physical) one.
        let column = sla.element.as_deref().map(|e| {
            let named = e.rsplit('.').next().unwrap_or(e);
            binding
                .schema
                .properties
                .iter()
                .find(|p| p.name == named)
                .or_else(|| binding.schema.properties.iter().find(|p| p.storage_name() == named))
                .map_or_else(|| named.to_string(), |p| p.name.clone())
        });
        let expectation = format!("age <= {} {}", sla.value, sla.unit.as_deref().unwrap_or("d"));
        let what = match duration_ms(&sla.value, sla.unit.as_deref()) {
            Some(max_age_ms) => Ok(Measure::Freshness {
                max_age_ms,
                column: column.clone(),
                expectation,
            }),
            None => Err(format!(
                "SLA {}: cannot read {} {:?} as a duration (units: d, h, m, s)",
                sla.property, sla.value, sla.unit
            )),
        };
        out.push(Planned {
            check: format!("freshness ({})", sla.property),
            column,
            kind: "freshness".into(),
            dimension: Some("timeliness".into()),
            severity: Severity::Error,
            what,
        });
    }
    out
}

/// Runs every check of `entry`, whose storage is `opened`, with its owner's rights (see the
/// module docs). The run is recorded in the audit trail (client `check`) with the SQL it ran.
pub(crate) async fn run_product(mesh: &Mesh, entry: &TableEntry, opened: &OpenedTable) -> Vec<QualityResult> {
    let planned = plan_product(entry);
    if planned.is_empty() {
        return Vec::new();
    }
    let product = entry.qualified_name();
    let run_started = Instant::now();
    let started_ms = crate::time::now_ms();
    // The product alone, unfiltered: the owner's view of their own product.
    let ctx = SessionContext::new_with_config_rt(Default::default(), mesh.runtime().clone());
    let schema = Arc::new(MemorySchemaProvider::new());
    let cat = Arc::new(MemoryCatalogProvider::new());
    let registered = schema
        .register_table(entry.name.clone(), opened.provider.clone())
        .and_then(|_| cat.register_schema(&entry.domain, schema));
    if let Err(e) = registered {
        tracing::error!(%product, error = %e, "quality checks cannot register the product");
    }
    ctx.register_catalog(MESH_CATALOG, cat);
    let mut statements = Vec::new();
    let mut results = Vec::with_capacity(planned.len());
    for p in planned {
        let started = Instant::now();
        let run_at_ms = crate::time::now_ms();
        let (outcome, value, expectation, message) = match &p.what {
            Err(e) => (
                QualityOutcome::Error,
                None,
                String::new(),
                format!("rule cannot run: {e}"),
            ),
            Ok(Measure::Skip(why)) => (QualityOutcome::Skipped, None, String::new(), format!("not run: {why}")),
            Ok(Measure::Sql {
                sql,
                percent,
                threshold,
            }) => match scalar(&ctx, sql, &mut statements).await {
                Ok((v, total)) => {
                    let v = if *percent {
                        if total.unwrap_or(0.0) > 0.0 {
                            100.0 * v / total.unwrap_or(1.0)
                        } else {
                            0.0
                        }
                    } else {
                        v
                    };
                    let unit = if *percent { " %" } else { "" };
                    let ok = threshold.holds(v);
                    (
                        if ok {
                            QualityOutcome::Passed
                        } else {
                            QualityOutcome::Failed
                        },
                        Some(v),
                        threshold.describe(),
                        format!("{}{v}{unit}, expected {}", measured_what(&p.kind), threshold.describe()),
                    )
                }
                Err(e) => (QualityOutcome::Error, None, threshold.describe(), e),
            },
            Ok(Measure::Freshness {
                max_age_ms,
                column,
                expectation,
            }) => {
                let newest = match column {
                    Some(c) => scalar(
                        &ctx,
                        &format!(
                            "SELECT CAST(to_unixtime(max(CAST({} AS TIMESTAMP))) AS DOUBLE) * 1000.0 AS newest FROM {}.{}.{}",
                            ident(c),
                            ident(MESH_CATALOG),
                            ident(&entry.domain),
                            ident(&entry.name)
                        ),
                        &mut statements,
                    )
                    .await
                    .map(|(v, _)| Some(v as i64)),
                    None => match (opened.committed_ms, entry.binding.as_ref().ok().map(|b| b.storage.format)) {
                        (Some(ms), _) => Ok(Some(ms)),
                        (None, Some(Format::Parquet)) => Ok(None),
                        (None, _) => Err("the table has no commit to date it by".to_string()),
                    },
                };
                match newest {
                    Ok(Some(newest)) => {
                        let age = run_at_ms - newest;
                        let ok = age <= *max_age_ms;
                        (
                            if ok {
                                QualityOutcome::Passed
                            } else {
                                QualityOutcome::Failed
                            },
                            Some(age as f64 / 1000.0),
                            expectation.clone(),
                            format!(
                                "newest data from {} ({} old), expected {expectation}",
                                crate::time::rfc3339(newest),
                                human_age(age)
                            ),
                        )
                    }
                    Ok(None) => (
                        QualityOutcome::Skipped,
                        None,
                        expectation.clone(),
                        "not run: freshness of a Parquet product needs an SLA element (a timestamp column)".into(),
                    ),
                    Err(e) => (QualityOutcome::Error, None, expectation.clone(), e),
                }
            }
        };
        results.push(QualityResult {
            product: product.clone(),
            check: p.check,
            column: p.column,
            kind: p.kind,
            dimension: p.dimension,
            severity: p.severity,
            outcome,
            value,
            expectation,
            message,
            run_at_ms,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
    if let Some(log) = mesh.audit() {
        let failed = results.iter().filter(|r| r.outcome == QualityOutcome::Error).count();
        let record = AuditRecord {
            query_id: format!("quality-{started_ms:x}-{product}"),
            started_ms,
            principal: format!("owner of {product}"),
            client: "check".to_string(),
            statement: statements.join(";\n"),
            products: vec![product.clone()],
            outcome: if failed == 0 { "ok" } else { "error" }.to_string(),
            error: (failed > 0).then(|| format!("{failed} quality checks could not run")),
            rows: results.len() as u64,
            duration_ms: run_started.elapsed().as_secs_f64() * 1000.0,
            ..Default::default()
        };
        if let Err(e) = log.append(&record) {
            tracing::error!(%product, error = %e, "audit record of quality checks not written");
        }
    }
    results
}

fn measured_what(kind: &str) -> &'static str {
    match kind {
        "nullValues" => "null values: ",
        "missingValues" => "missing values: ",
        "invalidValues" => "invalid values: ",
        "duplicateValues" => "duplicate values: ",
        "rowCount" => "rows: ",
        _ => "value: ",
    }
}

fn human_age(ms: i64) -> String {
    let s = ms / 1000;
    if s.abs() >= 86_400 {
        format!("{:.1} d", s as f64 / 86_400.0)
    } else if s.abs() >= 3600 {
        format!("{:.1} h", s as f64 / 3600.0)
    } else {
        format!("{s} s")
    }
}

/// Runs `sql` and reads the first row: (first column, second column if numeric).
/// Only queries: a contract's `sql` rule must not create tables over arbitrary files, write
/// files or change settings.
async fn scalar(ctx: &SessionContext, sql: &str, ran: &mut Vec<String>) -> Result<(f64, Option<f64>), String> {
    ran.push(sql.to_string());
    let only_queries = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    only_the_product(ctx, sql)?;
    let df = ctx
        .sql_with_options(sql, only_queries)
        .await
        .map_err(|e| e.to_string())?;
    let batches = df.collect().await.map_err(|e| e.to_string())?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err("the query returned no rows".into());
    };
    let number = |i: usize| -> Option<f64> {
        let col = batch.columns().get(i)?;
        let col = arrow::compute::cast(col, &DataType::Float64).ok()?;
        let arr = col.as_primitive::<Float64Type>();
        (!arr.is_null(0)).then(|| arr.value(0))
    };
    let v = number(0).ok_or_else(|| "the query's first value is not a number (or is null)".to_string())?;
    Ok((v, number(1)))
}

/// Refuses a rule whose SQL names a table its session does not have: a quality check reads
/// only the product it checks.
fn only_the_product(ctx: &SessionContext, sql: &str) -> Result<(), String> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    // A statement that does not parse fails with the parser's message when it is run.
    let Ok(statement) = state.sql_to_statement(sql, &dialect) else {
        return Ok(());
    };
    let Ok(tables) = state.resolve_table_references(&statement) else {
        return Ok(());
    };
    for table in tables {
        if !matches!(ctx.table_exist(table.clone()), Ok(true)) {
            return Err(format!(
                "table '{table}' not found (quality checks may read only the product they check)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_rules_may_name_the_table_by_its_physical_or_schema_name() {
        let t = "mesh.logistics.shipments";
        let names = ["shipments", "shp_events"];
        assert_eq!(
            super::name_the_product("SELECT count(*) FROM shp_events WHERE shp_events.amount < 0", &names, t),
            "SELECT count(*) FROM mesh.logistics.shipments WHERE mesh.logistics.shipments.amount < 0"
        );
        assert_eq!(
            super::name_the_product(
                "select count(*) from \"SHIPMENTS\" s join other o on s.shipments = o.x",
                &names,
                t
            ),
            "select count(*) from mesh.logistics.shipments s join other o on s.shipments = o.x"
        );
        // Not a table there: a column or a string.
        assert_eq!(
            super::name_the_product("SELECT shipments FROM x WHERE y = 'shp_events'", &names, t),
            "SELECT shipments FROM x WHERE y = 'shp_events'"
        );
    }

    use super::*;

    #[test]
    fn thresholds() {
        let rule = |v: serde_json::Value| serde_json::from_value::<Rule>(v).unwrap().threshold().unwrap();
        assert_eq!(rule(serde_json::json!({"mustBe": 0})), Some(Threshold::Eq(0.0)));
        assert_eq!(
            rule(serde_json::json!({"mustBeBetween": [5, 1]})),
            Some(Threshold::Between(1.0, 5.0))
        );
        assert_eq!(
            rule(serde_json::json!({"mustBeLessThanOrEqualTo": 3})),
            Some(Threshold::Le(3.0))
        );
        assert!(Threshold::NotBetween(1.0, 5.0).holds(6.0) && !Threshold::NotBetween(1.0, 5.0).holds(5.0));
        assert!(serde_json::from_value::<Rule>(serde_json::json!({"mustBe": "x"}))
            .unwrap()
            .threshold()
            .is_err());
        assert_eq!(duration_ms(&serde_json::json!(2), Some("h")), Some(7_200_000));
        assert_eq!(duration_ms(&serde_json::json!("1"), Some("d")), Some(86_400_000));
        assert_eq!(duration_ms(&serde_json::json!(1), Some("fortnight")), None);
    }
}
