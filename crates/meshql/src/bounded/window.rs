//! Window functions held to what they may build.
//!
//! A window function returns one value per row, and some return the same large value for many
//! rows: `array_agg(x) OVER ()` repeats the whole partition's list on each of its rows (a
//! partition of 100k rows: 10^10 elements), `max(big) OVER ()` or `first_value(big) OVER ()` one
//! large text on each, `string_agg(x, ',') OVER (ORDER BY t)` a growing text. DataFusion builds
//! those arrays outside any memory reservation. So window functions whose values can be of any
//! size are wrapped ([`window_capped`]), and the results of all window functions of a query,
//! over all their partitions, may total at most [`MAX_CALL_BYTES`], or twice what their arguments
//! take when that is more (`max(name) OVER ()` over a large partition of short names stays allowed).
//!
//! The wrappers count each value once per row it is given to: an aggregate's value covers the
//! rows that entered its frame since the previous value (the whole partition for a frame that
//! does not move, one row for a running frame), a window function's is one row.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionParams};
use datafusion::logical_expr::function::{
    AccumulatorArgs, ExpressionArgs, PartitionEvaluatorArgs, StateFieldsArgs, WindowUDFFieldArgs,
};
use datafusion::logical_expr::window_state::WindowAggState;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Expr, PartitionEvaluator, ReversedUDWF, Signature,
    WindowFunctionDefinition, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::PhysicalExpr;

use super::{is_variable, logical_bytes, too_large};
use crate::limits::MAX_CALL_BYTES;

/// The bytes a scalar's value takes (its text, or its list's elements), without copying it.
pub(crate) fn scalar_bytes(value: &ScalarValue) -> u128 {
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            s.len() as u128 + 16
        }
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => b.len() as u128 + 16,
        ScalarValue::List(a) => logical_bytes(a.as_ref()),
        ScalarValue::LargeList(a) => logical_bytes(a.as_ref()),
        ScalarValue::FixedSizeList(a) => logical_bytes(a.as_ref()),
        ScalarValue::Struct(a) => logical_bytes(a.as_ref()),
        ScalarValue::Map(a) => logical_bytes(a.as_ref()),
        v => v.size() as u128,
    }
}

/// What the window functions of one query have been given and have built, over all their
/// partitions (a budget per partition, or per function, would let a thousand partitions or
/// twenty window functions build a thousand or twenty times as much).
#[derive(Debug, Default)]
pub(super) struct Budget {
    input: AtomicU64,
    built: AtomicU64,
}

impl Budget {
    fn input(&self) -> u128 {
        self.input.load(Ordering::Relaxed) as u128
    }

    fn add_input(&self, bytes: u128) {
        self.input
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts `bytes` more built; the total so far.
    fn add_built(&self, bytes: u128) -> u128 {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.built.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes) as u128
    }

    fn built(&self) -> u128 {
        self.built.load(Ordering::Relaxed) as u128
    }
}

/// The results a window function may build given `input` bytes of arguments.
fn allowed(input: u128) -> u128 {
    (MAX_CALL_BYTES as u128).max(2 * input)
}

fn check(name: &str, built: u128, input: u128) -> Result<()> {
    let limit = allowed(input);
    if built > limit {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        return Err(too_large(name, built, limit, "window results (one per row)"));
    }
    Ok(())
}

/// A window function call with its function wrapped (once), after checking that an aggregate
/// that can build large values carries no `FILTER` (its value would then be repeated on rows
/// the wrapper never sees).
pub(super) fn window_capped(
    w: &WindowFunction,
    result_type: Option<&DataType>,
    budget: &Arc<Budget>,
) -> Result<Option<WindowFunctionDefinition>> {
    match &w.fun {
        WindowFunctionDefinition::AggregateUDF(f) => {
            if f.inner().as_any().is::<WindowAggregate>() {
                return Ok(None);
            }
            let WindowFunctionParams { filter, .. } = &w.params;
            if filter.is_some() && result_type.is_some_and(is_variable) {
                return Err(DataFusionError::Plan(format!(
                    "{}(…) FILTER (WHERE …) OVER (…) is not supported for results of type {}: filter with CASE inside the call",
                    f.name(),
                    result_type.map(|t| t.to_string()).unwrap_or_default()
                )));
            }
            Ok(Some(WindowFunctionDefinition::AggregateUDF(Arc::new(
                AggregateUDF::new_from_impl(WindowAggregate {
                    inner: f.clone(),
                    budget: budget.clone(),
                }),
            ))))
        }
        WindowFunctionDefinition::WindowUDF(f) => {
            if f.inner().as_any().is::<CappedWindow>() {
                return Ok(None);
            }
            Ok(Some(WindowFunctionDefinition::WindowUDF(Arc::new(
                WindowUDF::new_from_impl(CappedWindow {
                    inner: f.clone(),
                    budget: budget.clone(),
                }),
            ))))
        }
    }
}

/// An aggregate used as a window function.
#[derive(Debug)]
pub struct WindowAggregate {
    inner: Arc<AggregateUDF>,
    budget: Arc<Budget>,
}

impl PartialEq for WindowAggregate {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.budget, &other.budget)
    }
}

impl Eq for WindowAggregate {}

impl Hash for WindowAggregate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl WindowAggregate {
    fn wrap(&self, args: &AccumulatorArgs, inner: Box<dyn Accumulator>) -> Box<dyn Accumulator> {
        if !is_variable(args.return_field.data_type()) {
            return inner;
        }
        Box::new(Repeated {
            name: self.inner.name().to_string(),
            inner,
            entered: 0,
            budget: self.budget.clone(),
        })
    }
}

impl AggregateUDFImpl for WindowAggregate {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.inner().return_field(arg_fields)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let inner = self.inner.accumulator(args.clone())?;
        Ok(self.wrap(&args, inner))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let inner = self.inner.create_sliding_accumulator(args.clone())?;
        Ok(self.wrap(&args, inner))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> datafusion::logical_expr::ReversedUDAF {
        datafusion::logical_expr::ReversedUDAF::NotSupported
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.inner().supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.inner().supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// An aggregate's accumulator in a window: each value counted once per row that entered the
/// frame since the previous value (at least one).
#[derive(Debug)]
struct Repeated {
    name: String,
    inner: Box<dyn Accumulator>,
    /// Rows that entered the frame since the last value.
    entered: u128,
    /// The arguments seen and the values returned (each times the rows it covers), by all of
    /// the window function's accumulators.
    budget: Arc<Budget>,
}

impl Accumulator for Repeated {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            self.entered += v.len() as u128;
            self.budget.add_input(logical_bytes(v.as_ref()));
        }
        self.inner.update_batch(values)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let value = self.inner.evaluate()?;
        let built = self.budget.add_built(scalar_bytes(&value) * self.entered.max(1));
        self.entered = 0;
        check(&self.name, built, self.budget.input())?;
        Ok(value)
    }

    fn size(&self) -> usize {
        self.inner.size() + size_of::<u128>()
    }
}

/// A window function (`first_value`, `lag`, …) whose values are counted as it returns them.
#[derive(Debug)]
pub struct CappedWindow {
    inner: Arc<WindowUDF>,
    budget: Arc<Budget>,
}

impl PartialEq for CappedWindow {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.budget, &other.budget)
    }
}

impl Eq for CappedWindow {}

impl Hash for CappedWindow {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl WindowUDFImpl for CappedWindow {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn expressions(&self, expr_args: ExpressionArgs) -> Vec<Arc<dyn PhysicalExpr>> {
        self.inner.expressions(expr_args)
    }

    fn partition_evaluator(&self, args: PartitionEvaluatorArgs) -> Result<Box<dyn PartitionEvaluator>> {
        let (exprs, fields) = (args.input_exprs(), args.input_fields());
        let inner = self.inner.inner().partition_evaluator(PartitionEvaluatorArgs::new(
            exprs,
            fields,
            args.is_reversed(),
            args.ignore_nulls(),
        ))?;
        let field = self
            .inner
            .field(WindowUDFFieldArgs::new(args.input_fields(), self.inner.name()))?;
        if !is_variable(field.data_type()) {
            return Ok(inner);
        }
        // A constant argument (`lag`'s default) may be given to every row.
        let constant = exprs
            .iter()
            .filter_map(|e| e.as_any().downcast_ref::<Literal>())
            .map(|l| scalar_bytes(l.value()))
            .max()
            .unwrap_or(0);
        Ok(Box::new(CappedEvaluator {
            name: self.inner.name().to_string(),
            inner,
            constant,
            input: 0,
            budget: self.budget.clone(),
        }))
    }

    fn simplify(&self) -> Option<datafusion::logical_expr::function::WindowFunctionSimplification> {
        self.inner.inner().simplify()
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        self.inner.field(field_args)
    }

    fn sort_options(&self) -> Option<arrow::compute::SortOptions> {
        self.inner.sort_options()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn reverse_expr(&self) -> ReversedUDWF {
        match self.inner.reverse_expr() {
            ReversedUDWF::Reversed(f) => ReversedUDWF::Reversed(Arc::new(WindowUDF::new_from_impl(CappedWindow {
                inner: f,
                budget: self.budget.clone(),
            }))),
            other => other,
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn limit_effect(&self, args: &[Arc<dyn PhysicalExpr>]) -> datafusion::logical_expr::LimitEffect {
        self.inner.inner().limit_effect(args)
    }
}

/// A partition evaluator whose values are counted.
#[derive(Debug)]
struct CappedEvaluator {
    name: String,
    inner: Box<dyn PartitionEvaluator>,
    /// The largest constant argument.
    constant: u128,
    /// Bytes of this partition's arguments (counted into the budget once).
    input: u128,
    budget: Arc<Budget>,
}

impl CappedEvaluator {
    fn saw(&mut self, values: &[ArrayRef]) {
        let input: u128 = values.iter().map(|v| logical_bytes(v.as_ref())).sum();
        if input > self.input {
            self.budget.add_input(input - self.input);
            self.input = input;
        }
    }
}

impl PartitionEvaluator for CappedEvaluator {
    fn memoize(&mut self, state: &mut WindowAggState) -> Result<()> {
        self.inner.memoize(state)
    }

    fn get_range(&self, idx: usize, n_rows: usize) -> Result<std::ops::Range<usize>> {
        self.inner.get_range(idx, n_rows)
    }

    fn is_causal(&self) -> bool {
        self.inner.is_causal()
    }

    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        self.saw(values);
        // Each row may get the constant (a default): refused before it is copied.
        check(
            &self.name,
            self.budget.built() + self.constant * num_rows as u128,
            self.budget.input(),
        )?;
        let out = self.inner.evaluate_all(values, num_rows)?;
        let built = self.budget.add_built(logical_bytes(out.as_ref()));
        check(&self.name, built, self.budget.input())?;
        Ok(out)
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &std::ops::Range<usize>) -> Result<ScalarValue> {
        if self.input == 0 {
            self.saw(values);
        }
        let value = self.inner.evaluate(values, range)?;
        let built = self.budget.add_built(scalar_bytes(&value));
        if built > allowed(self.budget.input()) {
            // The partition may have grown since it was measured (bounded execution).
            self.saw(values);
            check(&self.name, built, self.budget.input())?;
        }
        Ok(value)
    }

    fn evaluate_all_with_rank(
        &self,
        num_rows: usize,
        ranks_in_partition: &[std::ops::Range<usize>],
    ) -> Result<ArrayRef> {
        self.inner.evaluate_all_with_rank(num_rows, ranks_in_partition)
    }

    fn supports_bounded_execution(&self) -> bool {
        self.inner.supports_bounded_execution()
    }

    fn uses_window_frame(&self) -> bool {
        self.inner.uses_window_frame()
    }

    fn include_rank(&self) -> bool {
        self.inner.include_rank()
    }
}

/// `expr` with its window function wrapped, given the type of its result when known.
pub(super) fn wrap_window(expr: &Expr, result_type: Option<&DataType>, budget: &Arc<Budget>) -> Result<Option<Expr>> {
    let Expr::WindowFunction(w) = expr else {
        return Ok(None);
    };
    Ok(window_capped(w, result_type, budget)?.map(|fun| {
        let mut w = w.as_ref().clone();
        w.fun = fun;
        Expr::WindowFunction(Box::new(w))
    }))
}
