//! DataFusion's built-in functions, each behind checks of what it may build and cost, and of
//! how it may fail.
//!
//! `repeat('x', 1e9)` builds a 1 GB string from a 10-byte statement, `range(3e8)` a list of
//! 300 million integers, `replace(s, 'x', 'yyyyyyyy')` eight times its argument: memory that no
//! operator reserves, so the query's memory limit never sees it, and that encoding the result
//! copies again. `levenshtein` of two 50k-character strings runs for minutes inside one call,
//! which nothing can interrupt. And some functions panic on extreme arguments
//! (`overlay` at a huge position, `date_trunc` at the end of time) or fail with an internal error
//! on a bad one (a pattern that is not a regular expression).
//!
//! So after type coercion every call of a built-in scalar function is wrapped ([`BoundFunctions`],
//! an analyzer rule) in [`Bounded`], the same function (same name, signature, column names,
//! simplification and properties) whose calls
//!
//! - are refused before anything is allocated when their arguments ask for more than
//!   [`MAX_VALUE_BYTES`] in one value or [`MAX_CALL_BYTES`] in one call, for the functions whose
//!   result can be many times larger than their arguments ([`Size`]), or for more than
//!   [`MAX_CALL_CELLS`] steps of a quadratic computation (`levenshtein`);
//! - are refused after the call when a value it built is larger than [`MAX_VALUE_BYTES`], or
//!   when it built more than [`MAX_CALL_BYTES`] and more than it was given: the functions whose
//!   result grows at most by a small factor (`concat`, `overlay`, `encode`, `make_array`, …) are
//!   held this way, each step of a chain at most a few times the previous one;
//! - fail as the query's error when they panic or fail internally, naming the function
//!   (the panic's own text goes to the server log: it may quote values).
//!
//! Calls are wrapped in the analyzer, so constant folding in the optimizer (which evaluates calls
//! on literals while planning) is held to the same checks. `get_field` is left alone: it builds
//! nothing, and DataFusion's planner recognises it by type. meshql's own functions (masks,
//! policy placeholders) are not built-ins and are not wrapped.
//!
//! Beside scalar functions: `string_agg` and `array_agg` are held to the same value size ([`CappedAggregate`]),
//! `lag`/`lead`/`nth_value` offsets must fit 32 bits, and the `generate_series`/`range` tables
//! refuse series that would step past the end of `BIGINT` ([`CheckedSeries`]).

use std::any::Any;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, OffsetSizeTrait};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit};
use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{ScalarFunction, WindowFunction, WindowFunctionParams};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Documentation, Expr, ExpressionPlacement, LogicalPlan,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::optimizer::AnalyzerRule;

mod cast;
mod literal;
mod window;

thread_local! {
    /// The bytes of the constants folded so far by the optimisation running on this thread, if
    /// one is ([`while_folding`]).
    static FOLDED: std::cell::Cell<Option<u128>> = const { std::cell::Cell::new(None) };
}

/// Runs `optimize` (DataFusion's optimiser, which runs on one thread without awaiting) with the
/// constants it folds held to [`MAX_CALL_BYTES`] together: each may be up to a value's size, and
/// a statement may fold many (40 `UNION ALL` branches of `repeat('x', 6e7)` built 2.4 GB while
/// planning). A call that would go past it is not folded: DataFusion leaves a constant whose
/// folding fails to be evaluated when the query runs, where the run-time limits hold it.
pub(crate) fn while_folding<T>(optimize: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FOLDED.set(None);
        }
    }
    FOLDED.set(Some(0));
    let _reset = Reset;
    optimize()
}

/// Counts a constant folded while planning; an error once they are too many.
fn folded(name: &str, result: &ColumnarValue) -> Result<()> {
    let Some(total) = FOLDED.get() else {
        return Ok(());
    };
    // Constant folding evaluates a call on one row; functions answer with a scalar or an array
    // of that one row.
    let bytes = match result {
        ColumnarValue::Scalar(value) => scalar_bytes(value),
        ColumnarValue::Array(a) if a.len() == 1 => logical_bytes(a.as_ref()),
        ColumnarValue::Array(_) => return Ok(()),
    };
    let total = total + bytes;
    FOLDED.set(Some(total));
    if total > MAX_CALL_BYTES as u128 {
        return Err(too_large(
            name,
            total,
            MAX_CALL_BYTES,
            "constants (folded while planning, together)",
        ));
    }
    Ok(())
}

pub use literal::SizedLiterals;
pub(crate) use window::scalar_bytes;

use crate::error::{classify, ErrorClass};
use crate::limits::{MAX_CALL_BYTES, MAX_VALUE_BYTES};
use crate::Error;

/// The most steps a quadratic function (`levenshtein`: one per pair of characters) may take in
/// one call: about a second of one core.
pub const MAX_CALL_CELLS: u128 = 1 << 28;

/// How a function's output size (or cost) follows from its arguments, for the functions whose
/// result can be many times larger than their arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Size {
    /// `repeat(text, n)`: `n` times the text.
    Repeat,
    /// `lpad`/`rpad(text, n, …)`: `n` characters.
    Pad,
    /// `array_repeat(element, n)`: `n` times the element.
    ArrayRepeat,
    /// `array_resize(list, n, element)`: `n` elements.
    Resize,
    /// `range`/`generate_series(start, stop[, step])`: (stop − start) / step elements, on
    /// integers, dates and timestamps.
    Series,
    /// `replace(text, from, to)`: each occurrence of `from` becomes `to`.
    Replace,
    /// `regexp_replace(text, pattern, replacement[, flags])`.
    RegexpReplace,
    /// `array_to_string(list, separator[, null])`: a separator per element.
    ArrayToString,
    /// `levenshtein(a, b)`: a step per pair of characters (a cost, not a size).
    Levenshtein,
    /// `factorial(n)`: undefined for negative `n` (DataFusion answers 1).
    Factorial,
    /// `array_replace[_n|_all](list, from, to)`: at worst every element becomes `to`.
    ArrayReplace,
    /// `string_to_array(text, delimiter[, null])`: an element per delimiter.
    StringToArray,
    /// `concat(a, b, …)`: the arguments' sizes.
    Concat,
    /// `concat_ws(separator, a, b, …)`: the arguments' and a separator between each two.
    ConcatWs,
    /// `translate(text, from, to)`: a character may become a wider one.
    Translate,
}

/// Functions that fill a template argument, and how many bytes one byte of the template may
/// become (`%c` is two bytes and 24 characters).
const TEMPLATES: &[(&str, u128)] = &[("to_char", 16), ("date_format", 16)];

/// The functions checked before their call, by name.
const SIZES: &[(&str, Size)] = &[
    ("repeat", Size::Repeat),
    ("lpad", Size::Pad),
    ("rpad", Size::Pad),
    ("array_repeat", Size::ArrayRepeat),
    ("list_repeat", Size::ArrayRepeat),
    ("array_resize", Size::Resize),
    ("list_resize", Size::Resize),
    ("range", Size::Series),
    ("generate_series", Size::Series),
    ("replace", Size::Replace),
    ("regexp_replace", Size::RegexpReplace),
    ("array_to_string", Size::ArrayToString),
    ("list_to_string", Size::ArrayToString),
    ("array_join", Size::ArrayToString),
    ("list_join", Size::ArrayToString),
    ("levenshtein", Size::Levenshtein),
    ("factorial", Size::Factorial),
    ("array_replace", Size::ArrayReplace),
    ("list_replace", Size::ArrayReplace),
    ("array_replace_n", Size::ArrayReplace),
    ("list_replace_n", Size::ArrayReplace),
    ("array_replace_all", Size::ArrayReplace),
    ("list_replace_all", Size::ArrayReplace),
    ("string_to_array", Size::StringToArray),
    ("string_to_list", Size::StringToArray),
    ("concat", Size::Concat),
    ("concat_ws", Size::ConcatWs),
    ("translate", Size::Translate),
];

/// Built-in functions left unwrapped: `get_field` builds nothing and is recognised by type.
const UNWRAPPED: &[&str] = &["get_field"];

/// The names of DataFusion's built-in scalar functions (and their aliases).
static BUILT_IN: LazyLock<HashSet<String>> = LazyLock::new(|| {
    datafusion::functions::all_default_functions()
        .into_iter()
        .chain(datafusion::functions_nested::all_default_nested_functions())
        .flat_map(|f| {
            let mut names = f.aliases().to_vec();
            names.push(f.name().to_string());
            names
        })
        .filter(|n| !UNWRAPPED.contains(&n.as_str()))
        .collect()
});

/// A built-in function behind the checks of the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bounded {
    inner: Arc<ScalarUDF>,
    size: Option<Size>,
}

impl Bounded {
    /// `func` wrapped, when it is a built-in function not wrapped yet.
    fn wrap(func: &Arc<ScalarUDF>) -> Option<Arc<ScalarUDF>> {
        if func.inner().as_any().is::<Bounded>() || !BUILT_IN.contains(func.name()) {
            return None;
        }
        let size = SIZES
            .iter()
            .find(|(name, _)| *name == func.name())
            .map(|(_, size)| *size);
        Some(Arc::new(ScalarUDF::new_from_impl(Bounded {
            inner: func.clone(),
            size,
        })))
    }
}

/// `expr` (of a node whose input is `schema`) with every built-in function call in it wrapped.
fn wrap_calls(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| match &e {
        Expr::Cast(_) => Ok(
            match cast::checked_decimal_cast(&e).or_else(|| cast::checked_text_cast(&e, schema)) {
                Some(checked) => Transformed::yes(checked),
                None => Transformed::no(e),
            },
        ),
        Expr::ScalarFunction(ScalarFunction { func, args }) => match Bounded::wrap(func) {
            Some(wrapped) => Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                wrapped,
                args.clone(),
            )))),
            None => Ok(Transformed::no(e)),
        },
        Expr::WindowFunction(w) => {
            check_window_offsets(w)?;
            if let datafusion::logical_expr::WindowFunctionDefinition::AggregateUDF(f) = &w.fun {
                check_aggregate_arguments(f.name(), &w.params.args)?;
            }
            Ok(Transformed::no(e))
        }
        Expr::AggregateFunction(a) => {
            check_aggregate_arguments(a.func.name(), &a.params.args)?;
            Ok(Transformed::no(e))
        }
        Expr::BinaryExpr(b) => {
            check_pattern(b)?;
            Ok(Transformed::no(e))
        }
        _ => Ok(Transformed::no(e)),
    })
}

/// A regular-expression operator (`~`, `~*`, `!~`, `!~*`) with a constant pattern that is not
/// one: refused as a bad query (constant folding would fail inside the optimizer).
fn check_pattern(b: &datafusion::logical_expr::BinaryExpr) -> Result<()> {
    use datafusion::logical_expr::Operator::*;
    if !matches!(b.op, RegexMatch | RegexIMatch | RegexNotMatch | RegexNotIMatch) {
        return Ok(());
    }
    if let Expr::Literal(
        ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)),
        _,
    ) = b.right.as_ref()
    {
        if let Err(e) = regex::Regex::new(p) {
            return Err(DataFusionError::Plan(format!(
                "`{}`: the pattern is not a regular expression: {e}",
                b.op
            )));
        }
    }
    Ok(())
}

/// The most centroids `approx_percentile_cont` may keep: DataFusion allocates them up front
/// (a huge count is a capacity-overflow panic).
const MAX_CENTROIDS: i64 = 1 << 20;

/// Arguments of aggregates that DataFusion takes unchecked.
fn check_aggregate_arguments(name: &str, args: &[Expr]) -> Result<()> {
    if !matches!(name, "approx_percentile_cont" | "approx_percentile_cont_with_weight") {
        return Ok(());
    }
    for arg in args {
        if let Expr::Literal(value, _) = arg {
            if value.data_type().is_integer() {
                if let Ok(ScalarValue::Int64(Some(n))) = value.cast_to(&DataType::Int64) {
                    if !(0..=MAX_CENTROIDS).contains(&n) {
                        return Err(DataFusionError::Plan(format!(
                            "{name}: {n} centroids is out of range (at most {MAX_CENTROIDS})"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Wraps every built-in scalar function call of a plan in [`Bounded`] (see the module
/// documentation), and checks window functions' offsets. Runs after type coercion.
#[derive(Debug, Default)]
pub struct BoundFunctions;

impl AnalyzerRule for BoundFunctions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // One budget for all the window functions of the statement.
        let budget = Arc::new(window::Budget::default());
        plan.transform_up_with_subqueries(|node| {
            // The schema the node's expressions read: its input's, or (a join, a leaf) its own.
            let schema = match node.inputs().as_slice() {
                [input] => Arc::clone(input.schema()),
                _ => Arc::clone(node.schema()),
            };
            node.map_expressions(|e| wrap_calls(e, &schema))?
                .transform_data(|node| wrap_windows(node, &budget))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "meshql_bound_functions"
    }
}

/// A window node with its window functions held to what they may build ([`window`]).
fn wrap_windows(node: LogicalPlan, budget: &Arc<window::Budget>) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Window(w) = node else {
        return Ok(Transformed::no(node));
    };
    let schema = w.input.schema().clone();
    let mut changed = false;
    let mut exprs = Vec::with_capacity(w.window_expr.len());
    for expr in w.window_expr {
        let t = expr.transform_down(|e| {
            let result_type = match &e {
                Expr::WindowFunction(_) => {
                    Some(datafusion::logical_expr::ExprSchemable::get_type(&e, schema.as_ref())?)
                }
                _ => None,
            };
            match window::wrap_window(&e, result_type.as_ref(), budget)? {
                Some(wrapped) => Ok(Transformed::new(
                    wrapped,
                    true,
                    datafusion::common::tree_node::TreeNodeRecursion::Jump,
                )),
                None => Ok(Transformed::no(e)),
            }
        })?;
        changed |= t.transformed;
        exprs.push(t.data);
    }
    let window = datafusion::logical_expr::logical_plan::Window::try_new_with_schema(exprs, w.input, w.schema)?;
    Ok(Transformed::new_transformed(LogicalPlan::Window(window), changed))
}

/// `lag`, `lead` and `nth_value` with an offset beyond 32 bits: DataFusion negates or converts
/// it unchecked (a panic, or a wrong row). No partition has 2^31 rows to offset by.
fn check_window_offsets(w: &WindowFunction) -> Result<()> {
    let name = w.fun.name();
    if !matches!(name, "lag" | "lead" | "nth_value") {
        return Ok(());
    }
    let WindowFunctionParams { args, .. } = &w.params;
    if let Some(Expr::Literal(value, _)) = args.get(1) {
        let fits = match value {
            ScalarValue::Null => true,
            v if v.data_type().is_integer() => match v.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) => i32::try_from(n).is_ok(),
                Ok(_) => true,
                Err(_) => false,
            },
            _ => true,
        };
        if !fits {
            return Err(DataFusionError::Plan(format!(
                "{name}: the offset {value} is out of range (at most 2147483647 rows either way)"
            )));
        }
    }
    Ok(())
}

fn too_large(name: &str, bytes: u128, limit: usize, what: &str) -> DataFusionError {
    let name = if name == "||" {
        "`||`".to_string()
    } else {
        format!("{name}(…)")
    };
    DataFusionError::External(Box::new(Error::LimitExceeded(format!(
        "{name} would build {what} of about {} MiB; at most {} MiB are allowed",
        bytes / (1 << 20),
        limit / (1 << 20)
    ))))
}

/// `f` of `value`'s rows as an array, one result per row: a scalar is computed once, not
/// repeated `rows` times first (a 60 MB scalar over a batch would be gigabytes).
fn per_row<T: Clone>(value: &ColumnarValue, rows: usize, f: impl Fn(&ArrayRef) -> Result<Vec<T>>) -> Result<Vec<T>> {
    match value {
        ColumnarValue::Scalar(s) => {
            let one = f(&s.to_array_of_size(1)?)?;
            match one.into_iter().next() {
                Some(v) => Ok(vec![v; rows]),
                None => Err(DataFusionError::Internal("a scalar without a value".into())),
            }
        }
        ColumnarValue::Array(a) => f(a),
    }
}

/// `value` as `rows` 64-bit integers (null where it is null or not an integer).
fn integers(value: &ColumnarValue, rows: usize) -> Result<Vec<Option<i64>>> {
    per_row(value, rows, |array| {
        if !array.data_type().is_integer() {
            return Ok(vec![None; array.len()]);
        }
        let array = arrow::compute::cast(array, &DataType::Int64)?;
        Ok(array.as_primitive::<Int64Type>().iter().collect())
    })
}

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// The text of each of `rows` values (None where null or not text).
fn texts(value: &ColumnarValue, rows: usize) -> Result<Vec<Option<String>>> {
    per_row(value, rows, |array| {
        if !matches!(
            array.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Ok(vec![None; array.len()]);
        }
        let array = arrow::compute::cast(array, &DataType::Utf8)?;
        Ok(array.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect())
    })
}

/// The bytes the data of `array`'s rows `range` take (not the buffers it may share with others).
fn data_bytes(array: &dyn Array, offset: usize, len: usize) -> u128 {
    let data = array.to_data();
    let array = arrow::array::make_array(data).slice(offset, len);
    logical_bytes(array.as_ref())
}

/// The bytes `array`'s values take, counted from its offsets and lengths rather than from its
/// buffers (a slice shares its parent's, a view array its input's).
pub(crate) fn logical_bytes(array: &dyn Array) -> u128 {
    let n = array.len() as u128;
    match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            span(a.value_offsets()) + 4 * n
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            span(a.value_offsets()) + 8 * n
        }
        DataType::Binary => span(array.as_binary::<i32>().value_offsets()) + 4 * n,
        DataType::LargeBinary => span(array.as_binary::<i64>().value_offsets()) + 8 * n,
        DataType::Utf8View => array
            .as_string_view()
            .views()
            .iter()
            .map(|v| (*v as u32) as u128 + 16)
            .sum(),
        DataType::BinaryView => array
            .as_binary_view()
            .views()
            .iter()
            .map(|v| (*v as u32) as u128 + 16)
            .sum(),
        DataType::List(_) => {
            let a = array.as_list::<i32>();
            let o = a.value_offsets();
            let (first, last) = (o.first().copied().unwrap_or(0), o.last().copied().unwrap_or(0));
            data_bytes(a.values().as_ref(), first as usize, (last - first).max(0) as usize) + 4 * n
        }
        DataType::LargeList(_) => {
            let a = array.as_list::<i64>();
            let o = a.value_offsets();
            let (first, last) = (o.first().copied().unwrap_or(0), o.last().copied().unwrap_or(0));
            data_bytes(a.values().as_ref(), first as usize, (last - first).max(0) as usize) + 8 * n
        }
        DataType::Map(..) => {
            let a = array.as_map();
            let o = a.value_offsets();
            let (first, last) = (o.first().copied().unwrap_or(0), o.last().copied().unwrap_or(0));
            let entries = a.entries();
            data_bytes(entries, first as usize, (last - first).max(0) as usize) + 4 * n
        }
        DataType::FixedSizeList(_, size) => {
            let a = array.as_fixed_size_list();
            data_bytes(
                a.values().as_ref(),
                a.offset() * *size as usize,
                a.len() * *size as usize,
            )
        }
        DataType::Struct(_) => array
            .as_struct()
            .columns()
            .iter()
            .map(|c| logical_bytes(c.as_ref()))
            .sum(),
        t => match t.primitive_width() {
            Some(w) => w as u128 * n,
            None => array.get_array_memory_size() as u128,
        },
    }
}

fn span<O: OffsetSizeTrait>(offsets: &[O]) -> u128 {
    match (offsets.first(), offsets.last()) {
        (Some(f), Some(l)) => (l.as_usize().saturating_sub(f.as_usize())) as u128,
        _ => 0,
    }
}

/// The length of each value of a byte array, from its offsets.
fn lengths<O: OffsetSizeTrait>(offsets: &[O]) -> Vec<u128> {
    offsets
        .windows(2)
        .map(|w| (w[1].as_usize().saturating_sub(w[0].as_usize())) as u128)
        .collect()
}

/// The bytes each of `rows` values takes (a list's: its elements').
fn row_bytes(value: &ColumnarValue, rows: usize) -> Result<Vec<u128>> {
    per_row(value, rows, |array| {
        let n = array.len();
        let offsets = match array.data_type() {
            DataType::Utf8 => Some(lengths(array.as_string::<i32>().value_offsets())),
            DataType::LargeUtf8 => Some(lengths(array.as_string::<i64>().value_offsets())),
            DataType::Binary => Some(lengths(array.as_binary::<i32>().value_offsets())),
            DataType::LargeBinary => Some(lengths(array.as_binary::<i64>().value_offsets())),
            _ => None,
        };
        if let Some(lengths) = offsets {
            return Ok(lengths);
        }
        match array.data_type() {
            DataType::Utf8View => {
                return Ok(array
                    .as_string_view()
                    .views()
                    .iter()
                    .map(|v| (*v as u32) as u128)
                    .collect())
            }
            DataType::BinaryView => {
                return Ok(array
                    .as_binary_view()
                    .views()
                    .iter()
                    .map(|v| (*v as u32) as u128)
                    .collect())
            }
            t => {
                if let Some(w) = t.primitive_width() {
                    return Ok(vec![w as u128; n]);
                }
            }
        }
        Ok((0..n)
            .map(|r| {
                if array.is_null(r) {
                    0
                } else {
                    logical_bytes(array.slice(r, 1).as_ref())
                }
            })
            .collect())
    })
}

/// Elements of each of `rows` lists (0 for values that are not lists).
fn list_lengths(value: &ColumnarValue, rows: usize) -> Result<Vec<u128>> {
    per_row(value, rows, |list| {
        Ok(match list.data_type() {
            DataType::List(_) => {
                let l = list.as_list::<i32>();
                (0..l.len()).map(|r| l.value_length(r).max(0) as u128).collect()
            }
            DataType::LargeList(_) => {
                let l = list.as_list::<i64>();
                (0..l.len()).map(|r| l.value_length(r).max(0) as u128).collect()
            }
            _ => vec![0; list.len()],
        })
    })
}

/// Characters of each of `rows` text values.
fn char_counts(value: &ColumnarValue, rows: usize) -> Result<Vec<u128>> {
    Ok(texts_or_scalar(value, rows)?
        .into_iter()
        .map(|t| t.map_or(0, |t| t.chars().count() as u128))
        .collect())
}

/// A point in time as microseconds since the epoch (dates and timestamps), per row.
fn micros(value: &ColumnarValue, rows: usize) -> Result<Option<Vec<Option<i128>>>> {
    if !matches!(
        value.data_type(),
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
    ) {
        return Ok(None);
    }
    per_row(value, rows, |array| Ok(micros_of(array)?.unwrap_or_default())).map(Some)
}

fn micros_of(array: &ArrayRef) -> Result<Option<Vec<Option<i128>>>> {
    let per = match array.data_type() {
        DataType::Date32 => 86_400_000_000i128,
        DataType::Date64 => 1_000,
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => -1_000,
        _ => return Ok(None),
    };
    let as_i64 = arrow::compute::cast(array, &DataType::Int64)?;
    Ok(Some(
        as_i64
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(|v| if per < 0 { v as i128 / -per } else { v as i128 * per }))
            .collect(),
    ))
}

/// The shortest a step of an interval can be, in microseconds (a month counted as 28 days), or
/// None when its parts do not all go the same way.
fn step_micros(value: &ColumnarValue, rows: usize) -> Result<Option<Vec<Option<i128>>>> {
    if !matches!(value.data_type(), DataType::Interval(_)) {
        return Ok(None);
    }
    per_row(value, rows, step_micros_of).map(Some)
}

fn step_micros_of(array: &ArrayRef) -> Result<Vec<Option<i128>>> {
    let array = arrow::compute::cast(array, &DataType::Interval(IntervalUnit::MonthDayNano))?;
    Ok(array
        .as_primitive::<IntervalMonthDayNanoType>()
        .iter()
        .map(|v| {
            v.and_then(|v| {
                let parts = [
                    v.months as i128 * 28 * 86_400_000_000,
                    v.days as i128 * 86_400_000_000,
                    v.nanoseconds as i128 / 1_000,
                ];
                let positive = parts.iter().all(|p| *p >= 0);
                let negative = parts.iter().all(|p| *p <= 0);
                (positive || negative).then(|| parts.iter().sum::<i128>().abs().max(1))
            })
        })
        .collect())
}

/// Per row, the elements of a series from `a` to `b` by `step` (8 bytes each).
fn series_bytes(args: &[ColumnarValue], rows: usize) -> Result<Vec<u128>> {
    if let (Some(a), Some(b), Some(step)) = (args.first(), args.get(1), args.get(2)) {
        if let (Some(a), Some(b), Some(step)) = (micros(a, rows)?, micros(b, rows)?, step_micros(step, rows)?) {
            return Ok((0..rows)
                .map(|r| match (a[r], b[r], step[r]) {
                    (Some(a), Some(b), Some(s)) => ((b - a).unsigned_abs() / s as u128 + 1).saturating_mul(8),
                    _ => 0,
                })
                .collect());
        }
    }
    let int = |i: usize| match args.get(i) {
        Some(v) => integers(v, rows).map(Some),
        None => Ok(None),
    };
    let (a, b, step) = (int(0)?, int(1)?, int(2)?);
    Ok((0..rows)
        .map(|r| {
            // range(stop), range(start, stop), range(start, stop, step)
            let (start, stop, step) = match (&a, &b, &step) {
                (Some(a), None, _) => (Some(0), a[r], Some(1)),
                (Some(a), Some(b), None) => (a[r], b[r], Some(1)),
                (Some(a), Some(b), Some(s)) => (a[r], b[r], s[r]),
                _ => (None, None, None),
            };
            match (start, stop, step) {
                (Some(start), Some(stop), Some(step)) if step != 0 => {
                    let span = (stop as i128 - start as i128).unsigned_abs();
                    (span / step.unsigned_abs() as u128 + 1).saturating_mul(8)
                }
                _ => 0,
            }
        })
        .collect())
}

/// Per row, a bound on `regexp_replace`'s result: the text, plus the replacement's literal
/// part for each match, plus the text again for each group it refers to. The matches are
/// counted only when the cheap bound (a match at every position) is too large.
fn regexp_replace_bytes(args: &[ColumnarValue], rows: usize) -> Result<Vec<u128>> {
    let (Some(text), Some(pattern), Some(replacement)) = (args.first(), args.get(1), args.get(2)) else {
        return Ok(vec![0; rows]);
    };
    let texts = texts(text, rows)?;
    let patterns = texts_or_scalar(pattern, rows)?;
    let replacements = texts_or_scalar(replacement, rows)?;
    let flags = match args.get(3) {
        Some(f) => texts_or_scalar(f, rows)?,
        None => vec![None; rows],
    };
    let mut sizes = Vec::with_capacity(rows);
    for r in 0..rows {
        let (Some(t), Some(p), Some(repl)) = (&texts[r], &patterns[r], &replacements[r]) else {
            sizes.push(0);
            continue;
        };
        let len = t.len() as u128;
        let refs = repl.matches('\\').count() as u128 + repl.matches('$').count() as u128;
        let global = flags[r].as_deref().is_some_and(|f| f.contains('g'));
        let cheap =
            len + if global {
                (len + 1) * repl.len() as u128
            } else {
                repl.len() as u128
            } + refs * len;
        if cheap <= MAX_VALUE_BYTES as u128 || !global {
            sizes.push(cheap);
            continue;
        }
        let case = if flags[r].as_deref().is_some_and(|f| f.contains('i')) {
            "(?i)"
        } else {
            ""
        };
        match regex::Regex::new(&format!("{case}{p}")) {
            Ok(re) => {
                let matches = re.find_iter(t).count() as u128;
                sizes.push(len + matches * repl.len() as u128 + refs * len);
            }
            // A bad pattern: the function reports it.
            Err(_) => sizes.push(0),
        }
    }
    Ok(sizes)
}

/// The text of each row, whether the value is a column or one scalar for all rows.
fn texts_or_scalar(value: &ColumnarValue, rows: usize) -> Result<Vec<Option<String>>> {
    match value {
        ColumnarValue::Scalar(s) => {
            let one = texts(&ColumnarValue::Scalar(s.clone()), 1)?;
            Ok(vec![one.into_iter().next().flatten(); rows])
        }
        array => texts(array, rows),
    }
}

impl Bounded {
    /// The bytes (for `Levenshtein`, the steps) each row's value would take, from the
    /// arguments.
    fn sizes(&self, size: Size, args: &[ColumnarValue], rows: usize) -> Result<Vec<u128>> {
        let count = |i: usize| -> Result<Vec<u128>> {
            Ok(match args.get(i) {
                Some(v) => integers(v, rows)?
                    .into_iter()
                    .map(|n| n.unwrap_or(0).max(0) as u128)
                    .collect(),
                None => vec![0; rows],
            })
        };
        let bytes = |i: usize| -> Result<Vec<u128>> {
            match args.get(i) {
                Some(v) => row_bytes(v, rows),
                None => Ok(vec![0; rows]),
            }
        };
        let times = |a: Vec<u128>, b: Vec<u128>| a.into_iter().zip(b).map(|(a, b)| a.saturating_mul(b)).collect();
        Ok(match size {
            Size::Repeat => times(count(1)?, bytes(0)?),
            Size::ArrayRepeat => times(count(1)?, bytes(0)?.into_iter().map(|u| u.max(8)).collect()),
            // `n` characters, each as wide as the widest of the fill's (or the text's, which may be
            // cut to them): `lpad('x', 6e7, '😀')` is 240 MB, not 60.
            Size::Pad => {
                let widest = |i: usize| -> Result<Vec<u128>> {
                    Ok(match args.get(i) {
                        Some(v) => texts_or_scalar(v, rows)?
                            .into_iter()
                            .map(|t| t.map_or(1, |t| t.chars().map(|c| c.len_utf8() as u128).max().unwrap_or(1)))
                            .collect(),
                        None => vec![1; rows],
                    })
                };
                let (text, fill) = (widest(0)?, widest(2)?);
                let width: Vec<u128> = text.into_iter().zip(fill).map(|(a, b)| a.max(b)).collect();
                times(count(1)?, width)
            }
            // Each character may become a replacement of up to four bytes.
            Size::Translate => bytes(0)?.into_iter().map(|b| b.saturating_mul(4)).collect(),
            Size::Resize => times(count(1)?, bytes(2)?.into_iter().map(|u| u.max(8)).collect()),
            Size::Series => series_bytes(args, rows)?,
            Size::Replace => {
                let (Some(t), Some(from), Some(to)) = (args.first(), args.get(1), args.get(2)) else {
                    return Ok(vec![0; rows]);
                };
                let (t, from, to) = (
                    texts(t, rows)?,
                    texts_or_scalar(from, rows)?,
                    texts_or_scalar(to, rows)?,
                );
                (0..rows)
                    .map(|r| match (&t[r], &from[r], &to[r]) {
                        (Some(t), Some(from), Some(to)) if to.len() > from.len() => {
                            let grows = (to.len() - from.len()) as u128;
                            // At most one occurrence per byte (per `from`): count them only when
                            // that bound is too large.
                            let most = t.len() as u128 / from.len().max(1) as u128 + 1;
                            let n = if t.len() as u128 + most * grows <= MAX_VALUE_BYTES as u128 {
                                most
                            } else if from.is_empty() {
                                t.chars().count() as u128 + 1
                            } else {
                                t.matches(from.as_str()).count() as u128
                            };
                            t.len() as u128 + n * grows
                        }
                        (Some(t), ..) => t.len() as u128,
                        _ => 0,
                    })
                    .collect()
            }
            Size::RegexpReplace => regexp_replace_bytes(args, rows)?,
            Size::ArrayToString => {
                let Some(list) = args.first() else {
                    return Ok(vec![0; rows]);
                };
                let elements = list_lengths(list, rows)?;
                let per_element: Vec<u128> = bytes(1)?.iter().zip(bytes(2)?).map(|(s, n)| s + n).collect();
                let values = row_bytes(list, rows)?;
                (0..rows)
                    .map(|r| {
                        let (e, p, v) = (
                            elements.get(r).copied().unwrap_or(0),
                            per_element.get(r).copied().unwrap_or(0),
                            values.get(r).copied().unwrap_or(0),
                        );
                        e.saturating_mul(p).saturating_add(v)
                    })
                    .collect()
            }
            Size::Levenshtein => match (args.first(), args.get(1)) {
                (Some(a), Some(b)) => times(char_counts(a, rows)?, char_counts(b, rows)?),
                _ => vec![0; rows],
            },
            Size::ArrayReplace => {
                let elements = match args.first() {
                    Some(list) => list_lengths(list, rows)?,
                    None => vec![0; rows],
                };
                let to = bytes(2)?;
                let list = bytes(0)?;
                (0..rows)
                    .map(|r| elements[r].saturating_mul(to[r].max(1)).saturating_add(list[r]))
                    .collect()
            }
            Size::StringToArray => {
                let text = bytes(0)?;
                let delimiter = bytes(1)?;
                (0..rows)
                    .map(|r| text[r] + (text[r] / delimiter[r].max(1) + 1).saturating_mul(16))
                    .collect()
            }
            Size::Concat | Size::ConcatWs => {
                let mut total = vec![0u128; rows];
                for i in 0..args.len() {
                    let b = bytes(i)?;
                    // The separator stands between each two of the other arguments.
                    let times = if size == Size::ConcatWs && i == 0 {
                        args.len().saturating_sub(2) as u128
                    } else {
                        1
                    };
                    for (t, b) in total.iter_mut().zip(b) {
                        *t = t.saturating_add(b.saturating_mul(times));
                    }
                }
                total
            }
            Size::Factorial => {
                if let Some(v) = args.first() {
                    if integers(v, rows)?.into_iter().flatten().any(|n| n < 0) {
                        return Err(DataFusionError::Execution(
                            "factorial of a negative number is undefined".into(),
                        ));
                    }
                }
                vec![0; rows]
            }
        })
    }

    /// The check made before the call.
    fn check_arguments(&self, args: &ScalarFunctionArgs) -> Result<()> {
        self.check_repeated_arguments(args)?;
        self.check_epoch_arguments(args)?;
        let Some(size) = self.size else {
            return Ok(());
        };
        let name = self.inner.name();
        let sizes = self.sizes(size, &args.args, args.number_rows.max(1))?;
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let total = sizes.iter().fold(0u128, |t, s| t.saturating_add(*s));
        if size == Size::Levenshtein {
            if total > MAX_CALL_CELLS {
                return Err(DataFusionError::External(Box::new(Error::LimitExceeded(format!(
                    "{name}(…) would compare {total} pairs of characters in one call; at most {MAX_CALL_CELLS} are allowed"
                )))));
            }
            return Ok(());
        }
        if largest > MAX_VALUE_BYTES as u128 {
            return Err(too_large(name, largest, MAX_VALUE_BYTES, "a value"));
        }
        if total > MAX_CALL_BYTES as u128 {
            return Err(too_large(name, total, MAX_CALL_BYTES, "the values of one batch"));
        }
        Ok(())
    }

    /// `to_timestamp*` of a float or a decimal: DataFusion 53 converts the number to its
    /// nanoseconds (or the function's unit) with a saturating or wrapping cast, so `1e19`
    /// seconds became 2262-04-11, `NaN` 1970-01-01 and `10000000000` as a decimal 1702-05-02.
    /// A number that is not finite or whose time does not fit the result is an error.
    fn check_epoch_arguments(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let name = self.inner.name();
        // The result's units per unit of the argument.
        let per_unit = match name {
            "to_timestamp" => 1e9,
            "to_timestamp_seconds" | "to_timestamp_millis" | "to_timestamp_micros" | "to_timestamp_nanos" => 1.0,
            _ => return Ok(()),
        };
        let Some(first) = args.args.first() else {
            return Ok(());
        };
        let data_type = first.data_type();
        if !(data_type.is_floating()
            || matches!(
                data_type,
                DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..)
            ))
        {
            return Ok(());
        }
        let values = match first {
            ColumnarValue::Array(a) => arrow::compute::cast(a, &DataType::Float64)?,
            ColumnarValue::Scalar(s) => arrow::compute::cast(&s.to_array_of_size(1)?, &DataType::Float64)?,
        };
        // Just below 2^63: the largest time of any unit.
        const LIMIT: f64 = 9.223_372_036_854_775e18;
        for v in values.as_primitive::<arrow::datatypes::Float64Type>().iter().flatten() {
            let units = v * per_unit;
            if !units.is_finite() || units.abs() >= LIMIT {
                return Err(DataFusionError::Execution(format!(
                    "{name}({v}) is out of range: the time does not fit a timestamp"
                )));
            }
        }
        Ok(())
    }

    /// A constant argument goes into every row's value (`to_char(ts, <format>)`, `concat(x,
    /// <text>)`): refused before the call when the batch's values would take more than
    /// [`MAX_CALL_BYTES`] (a template's byte counted as what it may become, [`TEMPLATES`]),
    /// or one value more than [`MAX_VALUE_BYTES`]. The check after the call comes too late for
    /// those: the values are built by then.
    fn check_repeated_arguments(&self, args: &ScalarFunctionArgs) -> Result<()> {
        if !is_variable(args.return_field.data_type()) {
            return Ok(());
        }
        let name = self.inner.name();
        let factor = TEMPLATES.iter().find(|(n, _)| *n == name).map_or(1, |(_, f)| *f);
        let rows = args.number_rows.max(1) as u128;
        let constants: u128 = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => scalar_bytes(s),
                ColumnarValue::Array(_) => 0,
            })
            .sum();
        if constants * factor > MAX_VALUE_BYTES as u128 {
            return Err(too_large(name, constants * factor, MAX_VALUE_BYTES, "a value"));
        }
        // Without a template, the constants must take more than the columns and both more
        // than the limit: nothing to measure (a pass over the columns) when they are small.
        if factor == 1 && 2 * constants * rows <= MAX_CALL_BYTES as u128 {
            return Ok(());
        }
        let columns: u128 = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Array(a) => logical_bytes(a.as_ref()),
                ColumnarValue::Scalar(_) => 0,
            })
            .sum();
        let total = (constants * rows + columns) * factor;
        if total > MAX_CALL_BYTES as u128 && (factor > 1 || constants * rows > columns) {
            return Err(too_large(name, total, MAX_CALL_BYTES, "the values of one batch"));
        }
        Ok(())
    }

    /// The check made after the call: no value larger than `MAX_VALUE_BYTES`, and no more than
    /// `MAX_CALL_BYTES` in all unless the arguments were as large.
    fn check_result(&self, result: &ColumnarValue, given: &[ColumnarValue]) -> Result<()> {
        let name = self.inner.name();
        match result {
            ColumnarValue::Scalar(s) => {
                if is_variable(&s.data_type()) {
                    let bytes = logical_bytes(s.to_array_of_size(1)?.as_ref());
                    if bytes > MAX_VALUE_BYTES as u128 {
                        return Err(too_large(name, bytes, MAX_VALUE_BYTES, "a value"));
                    }
                }
            }
            ColumnarValue::Array(a) => {
                if !is_variable(a.data_type()) {
                    return Ok(());
                }
                let total = logical_bytes(a.as_ref());
                if total > MAX_CALL_BYTES as u128 && total > given_bytes(given)? {
                    return Err(too_large(name, total, MAX_CALL_BYTES, "the values of one batch"));
                }
                if total > MAX_VALUE_BYTES as u128 {
                    let largest = (0..a.len())
                        .map(|r| logical_bytes(a.slice(r, 1).as_ref()))
                        .max()
                        .unwrap_or(0);
                    if largest > MAX_VALUE_BYTES as u128 {
                        return Err(too_large(name, largest, MAX_VALUE_BYTES, "a value"));
                    }
                }
            }
        }
        Ok(())
    }

    /// An error of the call, as the query's: internal failures and panics name the function
    /// and read as a bad argument.
    fn failed(&self, e: DataFusionError) -> DataFusionError {
        if classify(&e) != ErrorClass::Internal {
            return e;
        }
        DataFusionError::Execution(format!(
            "{}(…) cannot be computed for its arguments: {e}",
            self.inner.name()
        ))
    }
}

/// `a || b` on `rows` rows: no value larger than [`MAX_VALUE_BYTES`], and no more than
/// [`MAX_CALL_BYTES`] in all unless the operands are as large (a scalar operand is repeated on
/// every row, so `column || huge_constant` is counted as it would be built).
pub(crate) fn check_concat(a: &ColumnarValue, b: &ColumnarValue, rows: usize) -> Result<()> {
    let (a_bytes, b_bytes) = (row_bytes(a, rows)?, row_bytes(b, rows)?);
    let mut largest = 0u128;
    let mut total = 0u128;
    for (x, y) in a_bytes.iter().zip(&b_bytes) {
        largest = largest.max(x + y);
        total += x + y;
    }
    if largest > MAX_VALUE_BYTES as u128 {
        return Err(too_large("||", largest, MAX_VALUE_BYTES, "a value"));
    }
    if total > MAX_CALL_BYTES as u128 && total > given_bytes(&[a.clone(), b.clone()])? {
        return Err(too_large("||", total, MAX_CALL_BYTES, "the values of one batch"));
    }
    Ok(())
}

/// Whether `result` has no null when its field says it has none (DataFusion's date functions
/// answer NULL out of range while declaring a non-nullable result; the result would then fail
/// later as an internal error).
fn non_null_as_declared(result: &ColumnarValue, nullable: bool) -> bool {
    nullable
        || match result {
            ColumnarValue::Array(a) => a.null_count() == 0,
            ColumnarValue::Scalar(s) => !s.is_null(),
        }
}

/// Whether values of `t` can be of any size.
fn is_variable(t: &DataType) -> bool {
    is_text(t)
        || matches!(
            t,
            DataType::List(_)
                | DataType::LargeList(_)
                | DataType::ListView(_)
                | DataType::LargeListView(_)
                | DataType::FixedSizeList(..)
                | DataType::Map(..)
                | DataType::Struct(_)
        )
}

/// The bytes of the arguments of a call.
fn given_bytes(args: &[ColumnarValue]) -> Result<u128> {
    let mut total = 0u128;
    for a in args {
        total += match a {
            ColumnarValue::Array(a) => logical_bytes(a.as_ref()),
            ColumnarValue::Scalar(s) => logical_bytes(s.to_array_of_size(1)?.as_ref()),
        };
    }
    Ok(total)
}

impl ScalarUDFImpl for Bounded {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = Arc::new(self.inner.inner().with_updated_config(config)?);
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: updated,
            size: self.size,
        }))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // While planning, past the budget for folded constants, nothing more is computed
        // (DataFusion leaves the call to be evaluated when the query runs, under the limits).
        if FOLDED.get().is_some_and(|total| total > MAX_CALL_BYTES as u128) {
            return Err(too_large(
                self.inner.name(),
                FOLDED.get().unwrap_or(0),
                MAX_CALL_BYTES,
                "constants (folded while planning, together)",
            ));
        }
        self.check_arguments(&args)?;
        // Kept to measure only when the result is large (the values are shared, not copied).
        let given = args.args.clone();
        let nullable = args.return_field.is_nullable();
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.invoke_with_args(args))) {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(panic) => {
                let message = crate::limits::panic_message(panic.as_ref());
                tracing::warn!(function = self.inner.name(), panic = %message, "a function panicked on its arguments; the query fails alone");
                return Err(DataFusionError::Execution(format!(
                    "{}(…) cannot be computed for its arguments (they are out of its range)",
                    self.inner.name()
                )));
            }
        };
        if !non_null_as_declared(&result, nullable) {
            return Err(DataFusionError::Execution(format!(
                "{}(…) cannot be computed for its arguments (they are out of its range)",
                self.inner.name()
            )));
        }
        self.check_result(&result, &given)?;
        // Within the limits per value and per call, many calls of one batch can still add up
        // to more than the query may hold.
        crate::memory::check_current()?;
        folded(self.inner.name(), &result)?;
        Ok(result)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(e) => ExprSimplifyResult::Simplified(wrap_calls(e, info.schema())?.data),
            original => original,
        })
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }
}

/// An aggregate that builds one value from many rows (`string_agg`, `array_agg`), whose result
/// and all it returns from one accumulator (a window returns a value per row: `array_agg(x)
/// OVER (ORDER BY …)` returns n lists of up to n elements) are held to [`MAX_VALUE_BYTES`] and
/// [`MAX_CALL_BYTES`]. Window operators do not reserve the values they collect, so no memory
/// limit would see them.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CappedAggregate {
    inner: Arc<AggregateUDF>,
}

impl CappedAggregate {
    /// The value-building aggregates every mesh session uses.
    pub fn udafs() -> Vec<AggregateUDF> {
        [
            datafusion::functions_aggregate::string_agg::string_agg_udaf(),
            datafusion::functions_aggregate::array_agg::array_agg_udaf(),
        ]
        .into_iter()
        .map(|inner| AggregateUDF::new_from_impl(CappedAggregate { inner }))
        .collect()
    }
}

impl AggregateUDFImpl for CappedAggregate {
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
        Ok(Box::new(Capped::new(self.inner.name(), self.inner.accumulator(args)?)))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Capped::new(
            self.inner.name(),
            self.inner.create_sliding_accumulator(args)?,
        )))
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

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let inner = self
            .inner
            .inner()
            .clone()
            .with_beneficial_ordering(beneficial_ordering)?;
        Ok(inner.map(|inner| {
            Arc::new(CappedAggregate {
                inner: Arc::new(AggregateUDF::new_from_shared_impl(inner)),
            }) as Arc<dyn AggregateUDFImpl>
        }))
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
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

/// An accumulator whose state and results are held to the value and call sizes.
#[derive(Debug)]
struct Capped {
    name: String,
    inner: Box<dyn Accumulator>,
    /// Bytes of the values it has returned.
    returned: u128,
}

impl Capped {
    fn new(name: &str, inner: Box<dyn Accumulator>) -> Self {
        Capped {
            name: name.to_string(),
            inner,
            returned: 0,
        }
    }

    fn held(&self) -> Result<()> {
        let size = self.inner.size() as u128;
        if size > MAX_VALUE_BYTES as u128 {
            return Err(too_large(&self.name, size, MAX_VALUE_BYTES, "a value"));
        }
        Ok(())
    }

    fn returning(&mut self, value: &ScalarValue) -> Result<()> {
        self.returned += scalar_bytes(value);
        if self.returned > MAX_CALL_BYTES as u128 {
            return Err(too_large(&self.name, self.returned, MAX_CALL_BYTES, "results"));
        }
        Ok(())
    }
}

impl Accumulator for Capped {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        // The state would grow by the text added: refuse before copying it.
        let incoming: u128 = values.first().map(|v| logical_bytes(v.as_ref())).unwrap_or(0);
        if self.inner.size() as u128 + incoming > 2 * MAX_VALUE_BYTES as u128 {
            return Err(too_large(
                &self.name,
                self.inner.size() as u128 + incoming,
                MAX_VALUE_BYTES,
                "a value",
            ));
        }
        self.inner.update_batch(values)?;
        self.held()
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)?;
        self.held()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let value = self.inner.evaluate()?;
        self.returning(&value)?;
        Ok(value)
    }

    fn size(&self) -> usize {
        self.inner.size() + size_of::<u128>()
    }
}

/// `generate_series` and `range` as tables, refusing a series that would step past the end of
/// `BIGINT` (DataFusion adds the step unchecked: a panic, or a series that never ends).
#[derive(Debug)]
pub struct CheckedSeries {
    inner: Arc<dyn TableFunctionImpl>,
    name: &'static str,
}

impl CheckedSeries {
    /// The series tables every mesh session uses, as (name, function) pairs.
    pub fn all() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
        [
            ("generate_series", datafusion::functions_table::generate_series()),
            ("range", datafusion::functions_table::range()),
        ]
        .into_iter()
        .map(|(name, f)| {
            let checked: Arc<dyn TableFunctionImpl> = Arc::new(CheckedSeries {
                inner: f.function().clone(),
                name,
            });
            (name, checked)
        })
        .collect()
    }
}

impl TableFunctionImpl for CheckedSeries {
    fn call(&self, exprs: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let ints: Vec<Option<i64>> = exprs
            .iter()
            .map(|e| match e {
                Expr::Literal(ScalarValue::Int64(v), _) => *v,
                _ => None,
            })
            .collect();
        let (end, step) = match ints.as_slice() {
            [Some(end)] => (Some(*end), 1),
            [_, Some(end)] => (Some(*end), 1),
            [_, Some(end), Some(step)] => (Some(*end), *step),
            _ => (None, 1),
        };
        if let Some(end) = end {
            if end.checked_add(step).is_none() {
                return Err(DataFusionError::Plan(format!(
                    "{}: a series ending at {end} by steps of {step} would step past the end of BIGINT",
                    self.name
                )));
            }
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(exprs))) {
            Ok(result) => result,
            Err(_) => Err(DataFusionError::Plan(format!(
                "{}: the arguments are out of its range",
                self.name
            ))),
        }
    }
}
