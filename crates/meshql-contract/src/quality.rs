//! ODCS v3.1 data-quality rules (`quality:` on a schema object or a property), typed.
//!
//! A rule is read leniently: a contract whose rule meshql cannot use still loads, and the rule
//! carries why ([`QualityRule::check`] is an `Err`), so `meshql check` reports that one rule as
//! an error instead of refusing the whole contract. The engine side (how a rule is measured) is
//! in `meshql/src/quality.rs`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How much a failed check matters (`severity`, `error` when absent or unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    #[default]
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

/// A threshold the measured value must meet (`mustBe`, `mustBeBetween`, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
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
    pub fn holds(&self, v: f64) -> bool {
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
}

impl std::fmt::Display for Threshold {
    /// As the contract spells it: `mustBe 0`, `mustBeBetween [1, 5]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Eq(x) => write!(f, "mustBe {x}"),
            Threshold::Ne(x) => write!(f, "mustNotBe {x}"),
            Threshold::Gt(x) => write!(f, "mustBeGreaterThan {x}"),
            Threshold::Ge(x) => write!(f, "mustBeGreaterOrEqualTo {x}"),
            Threshold::Lt(x) => write!(f, "mustBeLessThan {x}"),
            Threshold::Le(x) => write!(f, "mustBeLessOrEqualTo {x}"),
            Threshold::Between(a, b) => write!(f, "mustBeBetween [{a}, {b}]"),
            Threshold::NotBetween(a, b) => write!(f, "mustNotBeBetween [{a}, {b}]"),
        }
    }
}

/// A value a rule lists (`missingValues`, `validValues`).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Literal {
    /// The scalar values of a JSON value; `None` for nulls, objects and arrays.
    fn of(v: &Value) -> Option<Literal> {
        match v {
            Value::String(s) => Some(Literal::Text(s.clone())),
            Value::Number(n) => Some(
                n.as_i64()
                    .map(Literal::Int)
                    .unwrap_or_else(|| Literal::Float(n.as_f64().unwrap_or(f64::NAN))),
            ),
            Value::Bool(b) => Some(Literal::Bool(*b)),
            _ => None,
        }
    }
}

/// An ODCS library metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// Rows.
    RowCount,
    /// Rows where the column is null.
    NullValues,
    /// Rows where the column is null or one of `missing`.
    MissingValues { missing: Vec<Literal> },
    /// Non-null values not in `valid` (when given) or not matching `pattern` (when given).
    InvalidValues {
        valid: Vec<Literal>,
        pattern: Option<String>,
    },
    /// Non-null values (tuples of the rule's columns) seen before.
    DuplicateValues,
}

impl Metric {
    /// The ODCS name.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::RowCount => "rowCount",
            Metric::NullValues => "nullValues",
            Metric::MissingValues { .. } => "missingValues",
            Metric::InvalidValues { .. } => "invalidValues",
            Metric::DuplicateValues => "duplicateValues",
        }
    }

    /// What it counts, to begin a result's message (`null values: 3`).
    pub fn counts(&self) -> &'static str {
        match self {
            Metric::RowCount => "rows: ",
            Metric::NullValues => "null values: ",
            Metric::MissingValues { .. } => "missing values: ",
            Metric::InvalidValues { .. } => "invalid values: ",
            Metric::DuplicateValues => "duplicate values: ",
        }
    }
}

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// A library metric over the rule's columns, compared with a threshold.
    Metric {
        metric: Metric,
        percent: bool,
        threshold: Threshold,
    },
    /// `type: sql`: the first value of `query`, compared with a threshold.
    Sql { query: String, threshold: Threshold },
    /// `type: text`: for people; not run.
    Text,
    /// `type: custom`: for another engine (`engine`); not run.
    Custom { engine: Option<String> },
}

/// One ODCS quality rule.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRule {
    pub name: Option<String>,
    /// The metric's, the rule's or the type's name as written (`nullValues`, `sql`, …).
    pub kind: String,
    pub severity: Severity,
    pub dimension: Option<String>,
    /// `arguments.properties`: the columns of a schema-level metric.
    pub properties: Vec<String>,
    /// What to check, or why the rule cannot be run.
    pub check: Result<Check, String>,
    /// The rule as written.
    pub raw: Value,
}

/// The fields of a rule as ODCS writes them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Written {
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
    must_be_greater_than: Option<Value>,
    #[serde(default, alias = "mustBeGreaterThanOrEqualTo")]
    must_be_greater_or_equal_to: Option<Value>,
    #[serde(default)]
    must_be_less_than: Option<Value>,
    #[serde(default, alias = "mustBeLessThanOrEqualTo")]
    must_be_less_or_equal_to: Option<Value>,
    #[serde(default)]
    must_be_between: Option<Value>,
    #[serde(default)]
    must_not_be_between: Option<Value>,
}

fn number(v: &Value, field: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("{field}: {v} is not a number (meshql compares numbers)"))
}

fn pair(v: &Value, field: &str) -> Result<(f64, f64), String> {
    match v.as_array().map(Vec::as_slice) {
        Some([a, b]) => {
            let (a, b) = (number(a, field)?, number(b, field)?);
            Ok((a.min(b), a.max(b)))
        }
        _ => Err(format!("{field}: {v} is not a pair of numbers [low, high]")),
    }
}

impl Written {
    fn threshold(&self) -> Result<Option<Threshold>, String> {
        let given = [
            ("mustBe", &self.must_be),
            ("mustNotBe", &self.must_not_be),
            ("mustBeGreaterThan", &self.must_be_greater_than),
            ("mustBeGreaterOrEqualTo", &self.must_be_greater_or_equal_to),
            ("mustBeLessThan", &self.must_be_less_than),
            ("mustBeLessOrEqualTo", &self.must_be_less_or_equal_to),
            ("mustBeBetween", &self.must_be_between),
            ("mustNotBeBetween", &self.must_not_be_between),
        ];
        let Some((field, Some(v))) = given.iter().find(|(_, v)| v.is_some()) else {
            return Ok(None);
        };
        Ok(Some(match *field {
            "mustBe" => Threshold::Eq(number(v, field)?),
            "mustNotBe" => Threshold::Ne(number(v, field)?),
            "mustBeGreaterThan" => Threshold::Gt(number(v, field)?),
            "mustBeGreaterOrEqualTo" => Threshold::Ge(number(v, field)?),
            "mustBeLessThan" => Threshold::Lt(number(v, field)?),
            "mustBeLessOrEqualTo" => Threshold::Le(number(v, field)?),
            "mustBeBetween" => {
                let (a, b) = pair(v, field)?;
                Threshold::Between(a, b)
            }
            _ => {
                let (a, b) = pair(v, field)?;
                Threshold::NotBetween(a, b)
            }
        }))
    }

    fn literals(&self, key: &str) -> Vec<Literal> {
        self.arguments
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Literal::of).collect())
            .unwrap_or_default()
    }

    fn check(&self, kind: &str) -> Result<Check, String> {
        match self.kind.as_deref().unwrap_or("library") {
            "text" => return Ok(Check::Text),
            "custom" => {
                return Ok(Check::Custom {
                    engine: self.engine.clone(),
                })
            }
            "sql" => {
                let query = self.query.clone().ok_or("a sql rule needs a query")?;
                let threshold = self
                    .threshold()?
                    .ok_or("a sql rule needs a threshold (mustBe, mustBeLessThan, …)")?;
                return Ok(Check::Sql { query, threshold });
            }
            _ => {}
        }
        let metric = match kind {
            "rowCount" => Metric::RowCount,
            "nullValues" => Metric::NullValues,
            "missingValues" => Metric::MissingValues {
                missing: self.literals("missingValues"),
            },
            "invalidValues" => {
                let valid = self.literals("validValues");
                let pattern = self.arguments.get("pattern").and_then(Value::as_str).map(str::to_string);
                if valid.is_empty() && pattern.is_none() {
                    return Err("invalidValues needs arguments.validValues or arguments.pattern".into());
                }
                Metric::InvalidValues { valid, pattern }
            }
            "duplicateValues" => Metric::DuplicateValues,
            other => {
                return Err(format!(
                    "unknown metric {other:?} (ODCS metrics: nullValues, missingValues, invalidValues, duplicateValues, rowCount)"
                ))
            }
        };
        let percent = metric != Metric::RowCount
            && self
                .unit
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case("percent") || u == "%");
        let threshold = self.threshold()?.unwrap_or(if metric == Metric::RowCount {
            Threshold::Gt(0.0)
        } else {
            Threshold::Eq(0.0)
        });
        Ok(Check::Metric {
            metric,
            percent,
            threshold,
        })
    }
}

impl From<Value> for QualityRule {
    fn from(raw: Value) -> Self {
        let written = serde_json::from_value::<Written>(raw.clone());
        let (w, unreadable) = match written {
            Ok(w) => (w, None),
            Err(e) => (Written::default(), Some(format!("the rule does not read as ODCS: {e}"))),
        };
        let kind = w
            .metric
            .clone()
            .or_else(|| w.rule.clone())
            .or_else(|| w.kind.clone())
            .unwrap_or_else(|| "library".to_string());
        let properties = w
            .arguments
            .get("properties")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let check = match unreadable {
            Some(e) => Err(e),
            None => w.check(&kind),
        };
        QualityRule {
            name: w.name.clone(),
            kind,
            severity: Severity::parse(w.severity.as_deref()),
            dimension: w.dimension.clone(),
            properties,
            check,
            raw,
        }
    }
}

impl<'de> Deserialize<'de> for QualityRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(QualityRule::from)
    }
}

/// `value` `unit` (an SLA's `latency`/`frequency`) → milliseconds; `None` for an unknown unit
/// or a value that is not a number.
pub fn duration_ms(value: &Value, unit: Option<&str>) -> Option<i64> {
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
    let ms = v * ms;
    // Beyond i64 milliseconds (or NaN) is not a duration anyone means.
    (ms.is_finite() && ms.abs() < 9.0e18).then_some(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> QualityRule {
        QualityRule::from(v)
    }

    fn threshold(v: Value) -> Result<Threshold, String> {
        match rule(v).check? {
            Check::Metric { threshold, .. } | Check::Sql { threshold, .. } => Ok(threshold),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(
            threshold(json!({"metric": "nullValues", "mustBe": 0})),
            Ok(Threshold::Eq(0.0))
        );
        assert_eq!(
            threshold(json!({"metric": "rowCount", "mustBeBetween": [5, 1]})),
            Ok(Threshold::Between(1.0, 5.0))
        );
        assert_eq!(
            threshold(json!({"metric": "rowCount", "mustBeLessThanOrEqualTo": 3})),
            Ok(Threshold::Le(3.0))
        );
        assert_eq!(threshold(json!({"metric": "rowCount"})), Ok(Threshold::Gt(0.0)));
        assert_eq!(threshold(json!({"metric": "nullValues"})), Ok(Threshold::Eq(0.0)));
        assert!(Threshold::NotBetween(1.0, 5.0).holds(6.0) && !Threshold::NotBetween(1.0, 5.0).holds(5.0));
        assert!(threshold(json!({"metric": "nullValues", "mustBe": "x"})).is_err());
        assert!(threshold(json!({"metric": "nullValues", "mustBeBetween": [1]})).is_err());
        assert_eq!(Threshold::Between(1.0, 5.0).to_string(), "mustBeBetween [1, 5]");
    }

    #[test]
    fn rules_that_cannot_run_say_why_and_do_not_fail_the_contract() {
        assert!(rule(json!({"type": "sql"}))
            .check
            .unwrap_err()
            .contains("needs a query"));
        assert!(rule(json!({"type": "sql", "query": "SELECT 1"}))
            .check
            .unwrap_err()
            .contains("threshold"));
        assert!(rule(json!({"metric": "bogus"}))
            .check
            .unwrap_err()
            .contains("unknown metric"));
        assert!(rule(json!({"metric": "invalidValues"}))
            .check
            .unwrap_err()
            .contains("validValues"));
        assert!(rule(json!({"name": 5}))
            .check
            .unwrap_err()
            .contains("does not read as ODCS"));
        assert_eq!(rule(json!({"type": "text"})).check, Ok(Check::Text));
        let r: Vec<QualityRule> =
            serde_json::from_value(json!([{"metric": "nullValues", "severity": "WARN", "unit": "percent"}])).unwrap();
        assert_eq!(r[0].severity, Severity::Warning);
        assert!(matches!(r[0].check, Ok(Check::Metric { percent: true, .. })));
    }

    #[test]
    fn literals_keep_their_type() {
        let r = rule(json!({"metric": "missingValues", "arguments": {"missingValues": ["", -1, 2.5, true, null]}}));
        assert_eq!(
            r.check,
            Ok(Check::Metric {
                metric: Metric::MissingValues {
                    missing: vec![
                        Literal::Text(String::new()),
                        Literal::Int(-1),
                        Literal::Float(2.5),
                        Literal::Bool(true)
                    ]
                },
                percent: false,
                threshold: Threshold::Eq(0.0)
            })
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(&json!(2), Some("h")), Some(7_200_000));
        assert_eq!(duration_ms(&json!("1"), Some("d")), Some(86_400_000));
        assert_eq!(duration_ms(&json!(1), Some("fortnight")), None);
        assert_eq!(duration_ms(&json!(1e300), Some("y")), None);
    }
}
