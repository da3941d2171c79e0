//! Large constants, held to what repeating them on every row builds.
//!
//! Constant folding turns `repeat('x', 60000000)` into one 60 MB literal while planning, and
//! the plan then repeats it on every row it is selected with, aggregated over or compared in a
//! `CASE`: a batch of 8,192 rows is 480 GB, copied by DataFusion outside any reservation. So after
//! optimisation every literal larger than [`LARGE_LITERAL`] is wrapped in [`SizedLiteral`], which
//! passes it on unchanged (same column name, type and value) and refuses a batch on which it
//! would amount to more than [`MAX_CALL_BYTES`].

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::{logical_bytes, scalar_bytes};
use crate::limits::MAX_CALL_BYTES;
use crate::Error;

/// Literals above this size are checked each time they are used.
pub const LARGE_LITERAL: u128 = 1 << 20;

/// A large literal, passed on unchanged when it is not repeated beyond the limits.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SizedLiteral {
    signature: Signature,
}

impl SizedLiteral {
    fn udf() -> Arc<ScalarUDF> {
        static UDF: std::sync::LazyLock<Arc<ScalarUDF>> = std::sync::LazyLock::new(|| {
            Arc::new(ScalarUDF::new_from_impl(SizedLiteral {
                // Volatile: constant folding must not turn it back into the bare literal.
                signature: Signature::any(1, Volatility::Volatile),
            }))
        });
        UDF.clone()
    }
}

impl ScalarUDFImpl for SizedLiteral {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "meshql_sized_literal"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan("meshql_sized_literal takes one argument".into()))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        args.arg_fields
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan("meshql_sized_literal takes one argument".into()))
    }

    // The literal's own names: plans and column names read as without the check.
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args.first().map(|a| a.to_string()).unwrap_or_default())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args.first().map(|a| a.schema_name().to_string()).unwrap_or_default())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let value = args
            .args
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Plan("meshql_sized_literal takes one argument".into()))?;
        let each = match &value {
            ColumnarValue::Scalar(s) => scalar_bytes(s),
            ColumnarValue::Array(a) => logical_bytes(a.as_ref()) / (a.len().max(1) as u128),
        };
        let total = each * args.number_rows as u128;
        if args.number_rows > 1 && total > MAX_CALL_BYTES as u128 {
            return Err(DataFusionError::External(Box::new(Error::LimitExceeded(format!(
                "a constant of about {} MiB repeated on {} rows would build about {} MiB; at most {} MiB are allowed",
                each / (1 << 20),
                args.number_rows,
                total / (1 << 20),
                MAX_CALL_BYTES / (1 << 20)
            )))));
        }
        Ok(value)
    }
}

/// Wraps every large literal of a plan in [`SizedLiteral`] (see the module documentation). Runs
/// after the optimiser's own rules, on every node but table scans (whose filters only prune)
/// and `VALUES` (whose literals are one row each).
#[derive(Debug, Default)]
pub struct SizedLiterals;

impl OptimizerRule for SizedLiterals {
    fn name(&self) -> &str {
        "meshql_sized_literals"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        if matches!(plan, LogicalPlan::TableScan(_) | LogicalPlan::Values(_)) {
            return Ok(Transformed::no(plan));
        }
        plan.map_expressions(wrap_large_literals)
    }
}

/// `expr` with its large literals wrapped, except a window function's literal parameters
/// (DataFusion takes `lag`'s default only as a literal; [`super::window`] counts it).
fn wrap_large_literals(expr: Expr) -> Result<Transformed<Expr>> {
    expr.transform_down(|e| match e {
        Expr::ScalarFunction(f) if f.func.inner().as_any().is::<SizedLiteral>() => Ok(Transformed::new(
            Expr::ScalarFunction(f),
            false,
            TreeNodeRecursion::Jump,
        )),
        Expr::Literal(value, metadata) if scalar_bytes(&value) > LARGE_LITERAL => Ok(Transformed::new(
            Expr::ScalarFunction(ScalarFunction::new_udf(
                SizedLiteral::udf(),
                vec![Expr::Literal(value, metadata)],
            )),
            true,
            TreeNodeRecursion::Jump,
        )),
        Expr::WindowFunction(mut w) => {
            let mut changed = false;
            let args = std::mem::take(&mut w.params.args);
            let is_window_udf = matches!(w.fun, datafusion::logical_expr::WindowFunctionDefinition::WindowUDF(_));
            for (i, arg) in args.into_iter().enumerate() {
                // `lag(x, offset, default)`, `nth_value(x, n)`: DataFusion takes the arguments
                // after the value only as literals (and does not repeat them per row).
                let arg = if is_window_udf && i > 0 && matches!(arg, Expr::Literal(..)) {
                    arg
                } else {
                    let t = wrap_large_literals(arg)?;
                    changed |= t.transformed;
                    t.data
                };
                w.params.args.push(arg);
            }
            Ok(Transformed::new(
                Expr::WindowFunction(w),
                changed,
                TreeNodeRecursion::Jump,
            ))
        }
        e => Ok(Transformed::no(e)),
    })
}
