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
use arrow::datatypes::{DataType, Float64Type, TimeUnit};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::common::{Column, TableReference};
use datafusion::execution::context::SQLOptions;
use datafusion::functions::expr_fn::{coalesce, regexp_like, to_unixtime};
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{max, sum};
use datafusion::logical_expr::{cast, in_list, lit, not, Expr, ExprFunctionExt};
use datafusion::prelude::{DataFrame, SessionContext};
use meshql_catalog::OpenedTable;
use meshql_catalog::MESH_CATALOG;
use meshql_contract::quality::{Check, Literal, Metric, QualityRule, Threshold};
use meshql_contract::{Format, TableEntry};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, Journal};
use crate::Mesh;

pub use meshql_contract::quality::Severity;

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
    /// A library metric over `columns`, built as a DataFusion plan: the first row has the value
    /// and the total (for percentages).
    Metric {
        metric: Metric,
        columns: Vec<String>,
        percent: bool,
        threshold: Threshold,
    },
    /// A contract's own SQL (`type: sql`): its first value.
    Sql {
        sql: String,
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

fn plan_rule(table: &str, names: &[&str], column: Option<&str>, rule: &QualityRule, index: usize) -> Planned {
    let kind = rule.kind.clone();
    let check = rule.name.clone().unwrap_or_else(|| match column {
        Some(c) => format!("{c} {kind}"),
        None => format!("{kind} #{}", index + 1),
    });
    let what = match &rule.check {
        Err(e) => Err(e.clone()),
        Ok(Check::Text) => Ok(Measure::Skip("a text rule, for people".into())),
        Ok(Check::Custom { engine }) => Ok(Measure::Skip(format!(
            "a custom rule for {}",
            engine.as_deref().unwrap_or("another engine")
        ))),
        Ok(Check::Sql { query, threshold }) => {
            let mut sql = query.clone();
            for key in ["${table}", "{table}", "${object}", "{object}"] {
                sql = sql.replace(key, table);
            }
            // The official examples also name the table itself, by its schema object's name or
            // its physical name.
            let mut sql = name_the_product(&sql, names, table);
            if let Some(c) = column {
                for key in ["${column}", "{column}", "${property}", "{property}"] {
                    sql = sql.replace(key, &ident(c));
                }
            }
            Ok(Measure::Sql {
                sql,
                threshold: *threshold,
            })
        }
        Ok(Check::Metric {
            metric,
            percent,
            threshold,
        }) => {
            let columns: Vec<String> = match column {
                Some(c) => vec![c.to_string()],
                None => rule.properties.clone(),
            };
            if columns.is_empty() && *metric != Metric::RowCount {
                Err(format!(
                    "metric {kind} needs a column: put it under a property, or name arguments.properties"
                ))
            } else {
                Ok(Measure::Metric {
                    metric: metric.clone(),
                    columns,
                    percent: *percent,
                    threshold: *threshold,
                })
            }
        }
    };
    Planned {
        check,
        column: column.map(str::to_string),
        kind,
        dimension: rule.dimension.clone(),
        severity: rule.severity,
        what,
    }
}

/// A column of the product by its exact name (no parsing of dots or case).
fn column_named(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn literal(v: &Literal) -> Expr {
    match v {
        Literal::Text(s) => lit(s.clone()),
        Literal::Int(i) => lit(*i),
        Literal::Float(f) => lit(*f),
        Literal::Bool(b) => lit(*b),
    }
}

/// The plan measuring `metric` over `columns` of `product`: one row, the value (`v`) and the
/// total it is a share of (`n`), as doubles. Built from expressions, so no name or value of
/// the contract is ever parsed as SQL.
async fn metric_plan(
    ctx: &SessionContext,
    product: TableReference,
    metric: &Metric,
    columns: &[String],
) -> datafusion::error::Result<DataFrame> {
    let df = ctx.table(product).await?;
    let double = |e: Expr| cast(e, DataType::Float64);
    // Aggregates first, conversions after: DataFusion's DataFrame wants bare aggregates.
    let as_doubles = |df: DataFrame| {
        df.select(vec![
            double(column_named("v")).alias("v"),
            double(column_named("n")).alias("n"),
        ])
    };
    let counted = |df: DataFrame, predicate: Expr| -> datafusion::error::Result<DataFrame> {
        as_doubles(df.aggregate(
            vec![],
            vec![
                count_all().unalias().filter(predicate).build()?.alias("v"),
                count_all().alias("n"),
            ],
        )?)
    };
    let first = || column_named(columns.first().map(String::as_str).unwrap_or_default());
    match metric {
        Metric::RowCount => as_doubles(
            df.aggregate(vec![], vec![count_all().alias("n")])?
                .select(vec![column_named("n").alias("v"), column_named("n")])?,
        ),
        Metric::NullValues => counted(df, first().is_null()),
        Metric::MissingValues { missing } => {
            let mut predicate = first().is_null();
            if !missing.is_empty() {
                predicate = predicate.or(in_list(first(), missing.iter().map(literal).collect(), false));
            }
            counted(df, predicate)
        }
        Metric::InvalidValues { valid, pattern } => {
            let mut invalid = Vec::new();
            if !valid.is_empty() {
                invalid.push(in_list(first(), valid.iter().map(literal).collect(), true));
            }
            if let Some(pattern) = pattern {
                invalid.push(not(regexp_like(
                    cast(first(), DataType::Utf8),
                    lit(pattern.clone()),
                    None,
                )));
            }
            let any_invalid = invalid.into_iter().reduce(Expr::or).unwrap_or(lit(false));
            counted(df, first().is_not_null().and(any_invalid))
        }
        Metric::DuplicateValues => {
            let cols: Vec<Expr> = columns.iter().map(|c| column_named(c)).collect();
            let not_null = cols
                .iter()
                .map(|c| c.clone().is_not_null())
                .reduce(Expr::and)
                .unwrap_or(lit(true));
            df.filter(not_null)?
                .aggregate(cols, vec![count_all().alias("k")])?
                .aggregate(
                    vec![],
                    vec![
                        coalesce(vec![sum(column_named("k")), lit(0i64)]).alias("n"),
                        count_all().alias("d"),
                    ],
                )?
                .select(vec![
                    double(column_named("n") - column_named("d")).alias("v"),
                    double(column_named("n")).alias("n"),
                ])
        }
    }
}

/// The newest value of `column` as epoch milliseconds (one row, one double).
async fn newest_plan(
    ctx: &SessionContext,
    product: TableReference,
    column: &str,
) -> datafusion::error::Result<DataFrame> {
    let timestamp = cast(column_named(column), DataType::Timestamp(TimeUnit::Nanosecond, None));
    let newest = to_unixtime(vec![column_named("newest")]);
    ctx.table(product)
        .await?
        .aggregate(vec![], vec![max(timestamp).alias("newest")])?
        .select(vec![(cast(newest, DataType::Float64) * lit(1000.0)).alias("newest")])
}

/// `sql` with the table names of `names` (case-insensitive, quoted or not) replaced by `table`
/// where they name a table: after `FROM` or `JOIN`, or qualifying a column (`name.column`).
fn name_the_product(sql: &str, names: &[&str], table: &str) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let Ok(tokens) = meshql_policy::sql_text::tokens(sql, &GenericDialect {}) else {
        return sql.to_string();
    };
    let significant = |i: usize| !matches!(tokens[i].token, Token::Whitespace(_));
    let mut out = String::with_capacity(sql.len());
    for (i, t) in tokens.iter().enumerate() {
        let previous = (0..i).rev().find(|&j| significant(j)).map(|j| &tokens[j].token);
        let next = (i + 1..tokens.len())
            .find(|&j| significant(j))
            .map(|j| &tokens[j].token);
        let names_table = match &t.token {
            Token::Word(w) if names.iter().any(|n| n.eq_ignore_ascii_case(&w.value)) => {
                let after_from =
                    matches!(previous, Some(Token::Word(p)) if matches!(p.keyword, Keyword::FROM | Keyword::JOIN));
                let qualifies = matches!(next, Some(Token::Period)) && !matches!(previous, Some(Token::Period));
                after_from || qualifies
            }
            _ => false,
        };
        out.push_str(if names_table { table } else { &sql[t.range.clone()] });
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
        let what = match meshql_contract::quality::duration_ms(&sla.value, sla.unit.as_deref()) {
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
    let product_ref = TableReference::full(MESH_CATALOG, entry.domain.as_str(), entry.name.as_str());
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
            Ok(Measure::Sql { sql, threshold }) => {
                let measured = scalar_sql(&ctx, sql, &mut statements).await;
                judged(measured, false, "value: ", threshold)
            }
            Ok(Measure::Metric {
                metric,
                columns,
                percent,
                threshold,
            }) => {
                let df = metric_plan(&ctx, product_ref.clone(), metric, columns).await;
                let measured = scalar(df, &mut statements).await;
                judged(measured, *percent, metric.counts(), threshold)
            }
            Ok(Measure::Freshness {
                max_age_ms,
                column,
                expectation,
            }) => {
                let newest = match column {
                    Some(c) => scalar(newest_plan(&ctx, product_ref.clone(), c).await, &mut statements)
                        .await
                        .map(|(v, _)| Some(v as i64)),
                    None => match (
                        opened.committed_ms,
                        entry.binding.as_ref().ok().map(|b| b.storage.format),
                    ) {
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
                                crate::time::rfc3339_millis(newest),
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

/// The outcome, value, expectation and message of a measured rule.
fn judged(
    measured: Result<(f64, Option<f64>), String>,
    percent: bool,
    counts: &str,
    threshold: &Threshold,
) -> (QualityOutcome, Option<f64>, String, String) {
    match measured {
        Ok((v, total)) => {
            let v = match (percent, total) {
                (true, Some(total)) if total > 0.0 => 100.0 * v / total,
                (true, _) => 0.0,
                (false, _) => v,
            };
            let unit = if percent { " %" } else { "" };
            let outcome = if threshold.holds(v) {
                QualityOutcome::Passed
            } else {
                QualityOutcome::Failed
            };
            (
                outcome,
                Some(v),
                threshold.to_string(),
                format!("{counts}{v}{unit}, expected {threshold}"),
            )
        }
        Err(e) => (QualityOutcome::Error, None, threshold.to_string(), e),
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

/// Runs a contract's `sql` rule and reads its first row (see [`scalar`]). Only queries: a
/// contract's `sql` rule must not create tables over arbitrary files, write files or change
/// settings, and it reads only the product it checks.
async fn scalar_sql(ctx: &SessionContext, sql: &str, ran: &mut Vec<String>) -> Result<(f64, Option<f64>), String> {
    ran.push(sql.to_string());
    let only_queries = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    only_the_product(ctx, sql)?;
    let df = ctx.sql_with_options(sql, only_queries).await;
    first_row(df).await
}

/// Runs a plan meshql built and reads its first row; the audit trail gets the plan as SQL
/// (DataFusion's unparser), or as a plan where it has no SQL form.
async fn scalar(df: datafusion::error::Result<DataFrame>, ran: &mut Vec<String>) -> Result<(f64, Option<f64>), String> {
    if let Ok(df) = &df {
        let plan = df.logical_plan();
        ran.push(match datafusion::sql::unparser::plan_to_sql(plan) {
            Ok(sql) => sql.to_string(),
            Err(_) => plan.display_indent().to_string(),
        });
    }
    first_row(df).await
}

/// The first row's first column, and its second if numeric.
async fn first_row(df: datafusion::error::Result<DataFrame>) -> Result<(f64, Option<f64>), String> {
    let batches = df
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
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
        // The rest of the text is kept byte for byte: doubled quotes stay doubled.
        assert_eq!(
            super::name_the_product(
                "SELECT count(*) FROM shipments WHERE note = 'o''brien' -- x\n",
                &names,
                t
            ),
            "SELECT count(*) FROM mesh.logistics.shipments WHERE note = 'o''brien' -- x\n"
        );
    }
}
