//! Arithmetic that fails on overflow instead of wrapping.
//!
//! DataFusion evaluates `+`, `-`, `*` and unary `-` with wrapping arithmetic and sums integers
//! and decimals the same way: `9223372036854775807 + 1` is `-9223372036854775808`, the `sum`
//! of ten `i64::MAX` is `-10`, the sum of two maxima of `DECIMAL(38, 0)` is negative, and
//! `1 << 64` is 1 (DataFusion 53.1; apache/datafusion#17539 and #21318 are open). An analytics
//! engine must not answer that; PostgreSQL and DuckDB raise an error. So every session of a mesh
//!
//! - rewrites, after type coercion ([`CheckedArithmetic`], an analyzer rule), `a + b`, `a - b`,
//!   `a * b` and `-a` on integers and decimals, `+` and `-` on dates, times and intervals, `<<`
//!   and `>>` on integers, and `||` on text into functions that compute them with checked
//!   arithmetic (DataFusion's own operator with `fail_on_overflow`; a decimal must also fit its
//!   precision; a shift count must be within the type's width); a panic in the operator (dates
//!   at the end of time) is an error of the query, and `||` is held to the value sizes of
//!   [`crate::bounded`]. The functions keep the operators' column names, so result columns and
//!   plans above them are unchanged, and constant folding still evaluates them (an overflowing
//!   constant is left to fail when the query runs);
//! - replaces the `sum` aggregate by [`CheckedSum`], which is DataFusion's `sum` except that
//!   sums of `Int64`, `UInt64` (smaller integers are summed as these), durations and 38-digit
//!   decimals are computed in 256 bits and fail when the result does not fit its type, in
//!   plain, grouped and window aggregation alike (a partial sum that does not fit fails too).
//!
//! - wraps the statistical aggregates (variance, standard deviation, covariance, correlation,
//!   regression) so that a result that is not a finite number fails ([`FiniteAggregate`]).
//!
//! Integer division already fails on overflow (`i64::MIN / -1`) and on division by zero;
//! float arithmetic is left as DataFusion computes it (it reaches infinity, as in IEEE 754).

use std::any::Any;
use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch};
use arrow::compute::kernels::numeric;
use arrow::datatypes::{DataType, Decimal128Type, Decimal256Type, Field, FieldRef, Int64Type, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

mod avg;
mod finite;
mod sum;

pub use avg::CheckedAvg;
use datafusion::physical_expr::expressions::{BinaryExpr as PhysicalBinaryExpr, Column};
use datafusion::physical_expr::PhysicalExpr;
pub use finite::FiniteAggregate;
pub use sum::CheckedSum;

/// The error of a value that does not fit its type.
pub(crate) fn overflow(what: &str) -> DataFusionError {
    DataFusionError::ArrowError(
        Box::new(arrow::error::ArrowError::ArithmeticOverflow(format!(
            "the {what} does not fit its type"
        ))),
        None,
    )
}

/// The operation a checked function computes: a binary operator, or `-a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Binary(Operator),
    Neg,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Binary(Operator::Plus) => "checked_add",
            Op::Binary(Operator::Minus) => "checked_sub",
            Op::Binary(Operator::Multiply) => "checked_mul",
            Op::Binary(Operator::BitwiseShiftLeft) => "checked_shift_left",
            Op::Binary(Operator::BitwiseShiftRight) => "checked_shift_right",
            Op::Binary(Operator::StringConcat) => "checked_concat",
            Op::Binary(_) => "checked_op",
            Op::Neg => "checked_neg",
        }
    }
}

/// `a op b` (or `-a`), failing instead of wrapping, panicking or building a huge value.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckedOp {
    op: Op,
    signature: Signature,
}

impl CheckedOp {
    fn udf(op: Op) -> Arc<ScalarUDF> {
        let arity = if op == Op::Neg { 1 } else { 2 };
        Arc::new(ScalarUDF::new_from_impl(CheckedOp {
            op,
            signature: Signature::any(arity, Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for CheckedOp {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.op.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match (self.op, arg_types) {
            (Op::Neg, [a]) => Ok(a.clone()),
            (Op::Binary(op), [a, b]) => BinaryTypeCoercer::new(a, &op, b).get_result_type(),
            _ => Err(DataFusionError::Plan(format!(
                "{}: wrong number of arguments",
                self.op.name()
            ))),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        let data_type = self.return_type(
            &args
                .arg_fields
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>(),
        )?;
        Ok(Arc::new(Field::new(self.name(), data_type, nullable)))
    }

    /// The operator's own column name (`a + b`, `(- a)`), so that rewriting changes no schema.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(match (self.op, args) {
            (Op::Neg, [a]) => format!("(- {})", a.schema_name()),
            (Op::Binary(op), [a, b]) => format!("{} {op} {}", a.schema_name(), b.schema_name()),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{}: wrong number of arguments",
                    self.name()
                )))
            }
        })
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(match (self.op, args) {
            (Op::Neg, [a]) => format!("(- {a})"),
            (Op::Binary(op), [a, b]) => format!("{a} {op} {b}"),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{}: wrong number of arguments",
                    self.name()
                )))
            }
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalars = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalars { 1 } else { args.number_rows };
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| self.compute(&args.args, rows))) {
            Ok(result) => result?,
            Err(panic) => {
                let message = crate::limits::panic_message(panic.as_ref());
                tracing::warn!(operator = self.name(), panic = %message, "an operator panicked on its operands; the query fails alone");
                return Err(DataFusionError::Execution(format!(
                    "{} cannot be computed for its operands (they are out of its range)",
                    self.display_symbol()
                )));
            }
        };
        let result = fit(result, args.return_field.data_type())?;
        if all_scalars {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

impl CheckedOp {
    fn display_symbol(&self) -> String {
        match self.op {
            Op::Neg => "-".into(),
            Op::Binary(op) => format!("`{op}`"),
        }
    }

    /// The operation on `rows` rows (one when every operand is a scalar).
    fn compute(&self, args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
        match (self.op, args) {
            (Op::Neg, [a]) => Ok(numeric::neg(&a.to_array(rows)?)?),
            (Op::Binary(op @ (Operator::BitwiseShiftLeft | Operator::BitwiseShiftRight)), [a, b]) => {
                shift(op, &a.to_array(rows)?, &b.to_array(rows)?)
            }
            (Op::Binary(op), [a, b]) => {
                if op == Operator::StringConcat {
                    crate::bounded::check_concat(a, b, rows)?;
                }
                let (a, b) = (a.to_array(rows)?, b.to_array(rows)?);
                let schema = Arc::new(Schema::new(vec![
                    Field::new("a", a.data_type().clone(), true),
                    Field::new("b", b.data_type().clone(), true),
                ]));
                let batch = RecordBatch::try_new(schema, vec![a, b])?;
                let expr = PhysicalBinaryExpr::new(Arc::new(Column::new("a", 0)), op, Arc::new(Column::new("b", 1)))
                    .with_fail_on_overflow(true);
                let result = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
                // Many `||` of one batch can add up to more than the query may hold.
                crate::memory::check_current()?;
                Ok(result)
            }
            _ => Err(DataFusionError::Internal(format!(
                "{}: wrong number of arguments",
                self.name()
            ))),
        }
    }
}

/// `result` as `data_type`: a decimal must fit its precision (arrow's checked arithmetic
/// catches 128-bit overflow, not a 39th digit).
fn fit(result: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    let result = if result.data_type() == data_type {
        result
    } else {
        let options = arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow::compute::cast_with_options(&result, data_type, &options).map_err(|_| overflow("result"))?
    };
    match data_type {
        DataType::Decimal128(p, _) => result
            .as_primitive::<Decimal128Type>()
            .validate_decimal_precision(*p)
            .map_err(|_| overflow("result"))?,
        DataType::Decimal256(p, _) => result
            .as_primitive::<Decimal256Type>()
            .validate_decimal_precision(*p)
            .map_err(|_| overflow("result"))?,
        _ => {}
    }
    Ok(result)
}

/// `a << b` or `a >> b` on integers of one type: a shift by a negative count or by the type's
/// width or more is an error (DataFusion takes the count modulo the width: `1 << 64` is 1), and
/// so is a left shift whose result does not fit the type.
fn shift(op: Operator, a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef> {
    let data_type = a.data_type().clone();
    let bits = (data_type.primitive_width().unwrap_or(8) * 8) as i64;
    let wide = DataType::Decimal128(38, 0);
    let values = arrow::compute::cast(a, &wide)?;
    let counts = arrow::compute::cast(b, &DataType::Int64)?;
    let values = values.as_primitive::<Decimal128Type>();
    let counts = counts.as_primitive::<Int64Type>();
    let mut out = Vec::with_capacity(values.len());
    for (v, n) in values.iter().zip(counts.iter()) {
        out.push(match (v, n) {
            (Some(v), Some(n)) => {
                if !(0..bits).contains(&n) {
                    return Err(DataFusionError::Execution(format!(
                        "shift count {n} is out of range for {data_type} (0 to {})",
                        bits - 1
                    )));
                }
                Some(if op == Operator::BitwiseShiftLeft {
                    v << n
                } else {
                    v >> n
                })
            }
            _ => None,
        });
    }
    let shifted: ArrayRef = Arc::new(PrimitiveArray::<Decimal128Type>::from(out).with_precision_and_scale(38, 0)?);
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(&shifted, &data_type, &options).map_err(|_| overflow("shifted value"))
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// Whether `l op r` on decimals can overflow its result type. When every exact result has at
/// most as many digits as the result type holds (`DECIMAL(15, 2) * DECIMAL(16, 2)`: 31 digits in
/// `DECIMAL(32, 4)`), DataFusion's own operator is exact and is left alone: checking it costs a
/// pass over every batch (TPC-H Q1 multiplies and adds such columns on every row).
fn decimal_may_overflow(l: &DataType, op: Operator, r: &DataType) -> bool {
    let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) = (l, r) else {
        return true;
    };
    let Ok(DataType::Decimal128(precision, _)) = BinaryTypeCoercer::new(l, &op, r).get_result_type() else {
        return true;
    };
    let (p1, s1, p2, s2) = (*p1 as i32, *s1 as i32, *p2 as i32, *s2 as i32);
    let digits = match op {
        // The larger integer part, one carry digit, the larger scale.
        Operator::Plus | Operator::Minus => (p1 - s1).max(p2 - s2) + 1 + s1.max(s2),
        // A p1-digit number times a p2-digit number has at most p1 + p2 digits.
        _ => p1 + p2,
    };
    digits > precision as i32
}

fn is_temporal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Interval(_)
    )
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Rewrites `+`, `-`, `*` and unary `-` on integers and decimals, `+` and `-` on dates and
/// times, `<<` and `>>` on integers, and `||` on text into their checked functions (see the
/// module documentation). Runs after DataFusion's analyzer rules, when every operand has its
/// type.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl AnalyzerRule for CheckedArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let neg = CheckedOp::udf(Op::Neg);
        let binary: Vec<(Operator, Arc<ScalarUDF>)> = [
            Operator::Plus,
            Operator::Minus,
            Operator::Multiply,
            Operator::BitwiseShiftLeft,
            Operator::BitwiseShiftRight,
            Operator::StringConcat,
        ]
        .into_iter()
        .map(|op| (op, CheckedOp::udf(Op::Binary(op))))
        .collect();
        plan.transform_up_with_subqueries(|node| {
            let schema = input_schema(&node);
            node.map_expressions(|expr| {
                expr.transform_up(|e| {
                    let checked = match &e {
                        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                            let Some((_, f)) = binary.iter().find(|(o, _)| o == op) else {
                                return Ok(Transformed::no(e));
                            };
                            let (Ok(l), Ok(r)) = (left.get_type(&schema), right.get_type(&schema)) else {
                                return Ok(Transformed::no(e));
                            };
                            let checked = match op {
                                Operator::Plus | Operator::Minus | Operator::Multiply => {
                                    (is_integer(&l) && l == r)
                                        || ((l.is_decimal() || r.is_decimal()) && decimal_may_overflow(&l, *op, &r))
                                        || (*op != Operator::Multiply && (is_temporal(&l) || is_temporal(&r)))
                                }
                                Operator::StringConcat => is_string(&l) && is_string(&r),
                                _ => is_integer(&l) && is_integer(&r),
                            };
                            if !checked {
                                return Ok(Transformed::no(e));
                            }
                            Expr::ScalarFunction(ScalarFunction::new_udf(
                                f.clone(),
                                vec![(**left).clone(), (**right).clone()],
                            ))
                        }
                        Expr::Negative(inner) if integers(&[inner.as_ref()], &schema) => {
                            Expr::ScalarFunction(ScalarFunction::new_udf(neg.clone(), vec![(**inner).clone()]))
                        }
                        _ => return Ok(Transformed::no(e)),
                    };
                    Ok(Transformed::yes(checked))
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "meshql_checked_arithmetic"
    }
}

/// The schema a node's expressions are evaluated against: its inputs' (merged for joins), or
/// its own for a leaf.
fn input_schema(plan: &LogicalPlan) -> DFSchema {
    let inputs = plan.inputs();
    let mut schemas = inputs.iter().map(|p| p.schema().as_ref().clone());
    match schemas.next() {
        None => plan.schema().as_ref().clone(),
        Some(mut first) => {
            for other in schemas {
                first.merge(&other);
            }
            first
        }
    }
}

/// Whether every operand is of the same integer type (type coercion has made them so when the
/// operator is integer arithmetic). Operands whose type cannot be told are left alone.
fn integers(operands: &[&Expr], schema: &DFSchema) -> bool {
    let mut types = operands.iter().map(|e| e.get_type(schema).ok());
    let Some(Some(first)) = types.next() else {
        return false;
    };
    is_integer(&first) && types.all(|t| t.as_ref() == Some(&first))
}
