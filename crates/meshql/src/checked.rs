//! Integer arithmetic that fails on overflow instead of wrapping.
//!
//! DataFusion evaluates `+`, `-`, `*` and unary `-` on integers with wrapping arithmetic and
//! sums integers the same way: `9223372036854775807 + 1` is `-9223372036854775808`, and the
//! `sum` of ten `i64::MAX` is `-10`. An analytics engine must not answer that; PostgreSQL and
//! DuckDB raise an error. So every session of a mesh
//!
//! - rewrites, after type coercion ([`CheckedArithmetic`], an analyzer rule), each integer
//!   `a + b`, `a - b`, `a * b` and `-a` into a function that computes it with checked
//!   arithmetic (arrow's `add`, `sub`, `mul`, `neg`); the functions keep the operators' column
//!   names, so result columns and plans above them are unchanged, and constant folding still
//!   evaluates them (an overflowing constant is left to fail when the query runs);
//! - replaces the `sum` aggregate by [`CheckedSum`], which is DataFusion's `sum` except that
//!   integer sums (`Int64`, `UInt64`: smaller integers are summed as these) are computed in 128
//!   bits and fail when the result does not fit its type, in plain, grouped and window
//!   aggregation alike (a partial sum that does not fit fails too).
//!
//! Integer division already fails on overflow (`i64::MIN / -1`) and on division by zero;
//! decimals and floats are left as DataFusion computes them.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray};
use arrow::compute::kernels::numeric;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Decimal128Type, Field, FieldRef, Int64Type, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, BinaryExpr, ColumnarValue, Documentation, EmitTo, Expr, ExprSchemable,
    GroupsAccumulator, LogicalPlan, Operator, ReturnFieldArgs, ReversedUDAF, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, SetMonotonicity, Signature, StatisticsArgs, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;

/// The arithmetic a checked function computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
    Neg,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "checked_add",
            Op::Sub => "checked_sub",
            Op::Mul => "checked_mul",
            Op::Neg => "checked_neg",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub | Op::Neg => "-",
            Op::Mul => "*",
        }
    }
}

/// `a op b` (or `-a`) on integers, failing on overflow.
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
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan(format!("{} needs arguments", self.op.name())))
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
        Ok(match args {
            [a] => format!("(- {})", a.schema_name()),
            [a, b] => format!("{} {} {}", a.schema_name(), self.op.symbol(), b.schema_name()),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{}: wrong number of arguments",
                    self.name()
                )))
            }
        })
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(match args {
            [a] => format!("(- {a})"),
            [a, b] => format!("{a} {} {b}", self.op.symbol()),
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
        let result = match (self.op, args.args.as_slice()) {
            (Op::Neg, [a]) => {
                let a = a.to_array(args.number_rows)?;
                numeric::neg(&a)?
            }
            (op, [a, b]) => {
                let a = datum(a)?;
                let b = datum(b)?;
                match op {
                    Op::Add => numeric::add(a.as_ref(), b.as_ref())?,
                    Op::Sub => numeric::sub(a.as_ref(), b.as_ref())?,
                    _ => numeric::mul(a.as_ref(), b.as_ref())?,
                }
            }
            _ => {
                return Err(DataFusionError::Internal(format!(
                    "{}: wrong number of arguments",
                    self.name()
                )))
            }
        };
        if all_scalars {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

/// An argument as arrow's arithmetic kernels take it (a scalar stays a scalar).
fn datum(value: &ColumnarValue) -> Result<Box<dyn arrow::array::Datum>> {
    Ok(match value {
        ColumnarValue::Array(a) => Box::new(a.clone()),
        ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
    })
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// Rewrites integer `+`, `-`, `*` and unary `-` into their checked functions (see the module
/// documentation). Runs after DataFusion's analyzer rules, when every operand has its type.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl AnalyzerRule for CheckedArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let (add, sub, mul, neg) = (
            CheckedOp::udf(Op::Add),
            CheckedOp::udf(Op::Sub),
            CheckedOp::udf(Op::Mul),
            CheckedOp::udf(Op::Neg),
        );
        plan.transform_up_with_subqueries(|node| {
            let schema = input_schema(&node);
            node.map_expressions(|expr| {
                expr.transform_up(|e| {
                    let checked = match &e {
                        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                            let f = match op {
                                Operator::Plus => &add,
                                Operator::Minus => &sub,
                                Operator::Multiply => &mul,
                                _ => return Ok(Transformed::no(e)),
                            };
                            if !integers(&[left.as_ref(), right.as_ref()], &schema) {
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

/// DataFusion's `sum`, whose integer sums fail on overflow instead of wrapping.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Arc<AggregateUDF>,
}

impl CheckedSum {
    /// The `sum` every mesh session uses.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(CheckedSum {
            inner: datafusion::functions_aggregate::sum::sum_udaf(),
        })
    }

    fn inner(&self) -> &dyn AggregateUDFImpl {
        self.inner.inner().as_ref()
    }
}

fn overflow(what: &str) -> DataFusionError {
    DataFusionError::ArrowError(
        Box::new(arrow::error::ArrowError::ArithmeticOverflow(format!(
            "the {what} of the integers does not fit its type"
        ))),
        None,
    )
}

impl AggregateUDFImpl for CheckedSum {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner().name()
    }

    fn aliases(&self) -> &[String] {
        self.inner().aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner().return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner().is_nullable()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner().coerce_types(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return self.inner().accumulator(args);
        }
        match args.return_type() {
            t @ (DataType::Int64 | DataType::UInt64) => Ok(Box::new(WideSum::new(t.clone(), false))),
            _ => self.inner().accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner().state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        match args.return_type() {
            t @ (DataType::Int64 | DataType::UInt64) => Ok(Box::new(WideGroups::new(t.clone()))),
            _ => self.inner().create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return self.inner().create_sliding_accumulator(args);
        }
        match args.return_type() {
            t @ (DataType::Int64 | DataType::UInt64) => Ok(Box::new(WideSum::new(t.clone(), true))),
            _ => self.inner().create_sliding_accumulator(args),
        }
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner().is_descending()
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner().default_value(data_type)
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner().set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner().documentation()
    }
}

/// A sum of 64-bit integers kept in 128 bits — exact whatever the order of the values, and
/// when rows leave a window frame — and checked to fit its type when it is read.
#[derive(Debug)]
struct WideSum {
    sum: i128,
    /// The values summed (not null): none means the sum is NULL.
    count: u64,
    data_type: DataType,
    /// A window's accumulator: its state carries the count too (as DataFusion's does).
    sliding: bool,
}

impl WideSum {
    fn new(data_type: DataType, sliding: bool) -> Self {
        WideSum {
            sum: 0,
            count: 0,
            data_type,
            sliding,
        }
    }

    fn add(&mut self, values: &ArrayRef, sign: i128) {
        let (sum, count) = match self.data_type {
            DataType::UInt64 => wide_sum(values.as_primitive::<UInt64Type>()),
            _ => wide_sum(values.as_primitive::<Int64Type>()),
        };
        // Each value is below 2^64 and there are fewer than 2^63 of them: no i128 overflow.
        self.sum += sign * sum;
        if sign > 0 {
            self.count += count;
        } else {
            self.count = self.count.saturating_sub(count);
        }
    }
}

fn wide_sum<T: ArrowPrimitiveType>(values: &PrimitiveArray<T>) -> (i128, u64)
where
    T::Native: Into<i128>,
{
    let count = (values.len() - values.null_count()) as u64;
    (values.iter().flatten().map(Into::into).sum(), count)
}

/// `sum` as a value of `data_type` (Int64 or UInt64), or an overflow error.
fn narrow(sum: i128, data_type: &DataType) -> Result<ScalarValue> {
    match data_type {
        DataType::UInt64 => u64::try_from(sum)
            .map(|v| ScalarValue::UInt64(Some(v)))
            .map_err(|_| overflow("sum")),
        _ => i64::try_from(sum)
            .map(|v| ScalarValue::Int64(Some(v)))
            .map_err(|_| overflow("sum")),
    }
}

impl Accumulator for WideSum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            self.add(v, 1);
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            self.add(v, -1);
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        self.sliding
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(sums) = states.first() else {
            return Ok(());
        };
        self.add(sums, 1);
        if let (true, Some(counts)) = (self.sliding, states.get(1)) {
            // `add` counted the partial sums; the counts say how many values they stand for.
            self.count -= (sums.len() - sums.null_count()) as u64;
            self.count += counts.as_primitive::<UInt64Type>().iter().flatten().sum::<u64>();
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sum = self.evaluate()?;
        Ok(if self.sliding {
            vec![sum, ScalarValue::UInt64(Some(self.count))]
        } else {
            vec![sum]
        })
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.count == 0 {
            return ScalarValue::try_from(&self.data_type);
        }
        narrow(self.sum, &self.data_type)
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// The 128-bit type grouped sums are kept in.
const WIDE: DataType = DataType::Decimal128(38, 0);

/// Grouped integer sums: DataFusion's grouped accumulator over 128-bit values, checked to fit
/// the sum's type when its groups are read.
struct WideGroups {
    inner: PrimitiveGroupsAccumulator<Decimal128Type, fn(&mut i128, i128)>,
    data_type: DataType,
}

impl WideGroups {
    fn new(data_type: DataType) -> Self {
        fn add(acc: &mut i128, v: i128) {
            *acc = acc.wrapping_add(v);
        }
        WideGroups {
            inner: PrimitiveGroupsAccumulator::new(&WIDE, add as fn(&mut i128, i128)),
            data_type,
        }
    }

    fn widen(values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        values.iter().map(|v| Ok(arrow::compute::cast(v, &WIDE)?)).collect()
    }

    fn narrow(&self, sums: ArrayRef) -> Result<ArrayRef> {
        let options = arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow::compute::cast_with_options(&sums, &self.data_type, &options).map_err(|_| overflow("sum"))
    }
}

impl std::fmt::Debug for WideGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WideGroups({})", self.data_type)
    }
}

impl GroupsAccumulator for WideGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(&Self::widen(values)?, group_indices, opt_filter, total_num_groups)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(&Self::widen(values)?, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = self.inner.evaluate(emit_to)?;
        self.narrow(sums)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)?.into_iter().map(|s| self.narrow(s)).collect()
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let states = self.inner.convert_to_state(&Self::widen(values)?, opt_filter)?;
        states.into_iter().map(|s| self.narrow(s)).collect()
    }

    fn supports_convert_to_state(&self) -> bool {
        self.inner.supports_convert_to_state()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}
