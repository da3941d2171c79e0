//! Casts arrow does not check: to 32- and 64-bit decimals ([`DecimalCast`]), and of lists,
//! structs, maps and durations to text ([`TextCast`]).
//!
//! ## Decimals
//!
//! arrow 58 casts an integer to `Decimal32`/`Decimal64` by converting it to the target's
//! storage width first, wrapping: `arrow_cast(4294967301, 'Decimal32(9,0)')` is 5
//! (apache/arrow-rs#10706, fixed after arrow 59.2; remove this when meshql moves past it). Every cast to
//! those types (`arrow_cast` becomes a cast while planning) is replaced by [`DecimalCast`], which
//! casts to `Decimal128(38, scale)` first and then narrows with arrow's checked decimal cast.
//! It keeps the cast's column name and display.
//!
//! ## Text
//!
//! arrow writes a list or struct as text without a bound: each `true` of a boolean list (one
//! bit) becomes five bytes and a separator, so a list within the value limits becomes gigabytes
//! of text. And a duration in seconds beyond chrono's range (±292 million years) becomes the
//! text `<invalid>`. A cast of such a value to text is replaced by [`TextCast`], which bounds
//! the text from the input's shape before casting (held to [`MAX_CALL_BYTES`] per batch, unless
//! the input is as large, and to [`MAX_VALUE_BYTES`] per value) and refuses durations it
//! cannot write.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{
    DataType, DurationSecondType, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::ExprSchemable;

use crate::limits::{MAX_CALL_BYTES, MAX_VALUE_BYTES};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// A cast to a 32- or 64-bit decimal type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DecimalCast {
    target: DataType,
    signature: Signature,
}

/// `expr` as a checked cast when it is a cast to a 32- or 64-bit decimal.
pub(super) fn checked_decimal_cast(expr: &Expr) -> Option<Expr> {
    let Expr::Cast(Cast { expr, data_type }) = expr else {
        return None;
    };
    if !matches!(data_type, DataType::Decimal32(..) | DataType::Decimal64(..)) {
        return None;
    }
    let udf = ScalarUDF::new_from_impl(DecimalCast {
        target: data_type.clone(),
        signature: Signature::any(1, Volatility::Immutable),
    });
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        vec![expr.as_ref().clone()],
    )))
}

impl DecimalCast {
    fn cast(&self, array: &ArrayRef) -> Result<ArrayRef> {
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let scale = match self.target {
            DataType::Decimal32(_, s) | DataType::Decimal64(_, s) => s,
            _ => 0,
        };
        let wide = match array.data_type() {
            t if t.is_integer() => cast_with_options(array, &DataType::Decimal128(38, scale), &options)?,
            _ => array.clone(),
        };
        Ok(cast_with_options(&wide, &self.target, &options)?)
    }
}

impl ScalarUDFImpl for DecimalCast {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "meshql_decimal_cast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.target.clone())
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(cast_display_name(args, &self.target))
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(cast_schema_name(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        invoke_cast(&args, &self.target, |a| self.cast(a))
    }
}

/// Whether `t` is written as text by arrow without a bound on its size or range.
fn needs_text_check(t: &DataType) -> bool {
    match t {
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..)
        | DataType::Union(..)
        | DataType::Duration(TimeUnit::Second) => true,
        DataType::Dictionary(_, v) => needs_text_check(v),
        DataType::RunEndEncoded(_, v) => needs_text_check(v.data_type()),
        _ => false,
    }
}

fn has_second_durations(t: &DataType) -> bool {
    match t {
        DataType::Duration(TimeUnit::Second) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_second_durations(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_second_durations(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_second_durations(f.data_type())),
        DataType::Dictionary(_, v) => has_second_durations(v),
        DataType::RunEndEncoded(_, v) => has_second_durations(v.data_type()),
        _ => false,
    }
}

/// `expr` as a checked cast when it casts a list, struct, map or duration in seconds
/// (typed in `schema`) to text.
pub(super) fn checked_text_cast(expr: &Expr, schema: &DFSchema) -> Option<Expr> {
    let Expr::Cast(Cast { expr, data_type }) = expr else {
        return None;
    };
    if !matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return None;
    }
    let source = expr.get_type(schema).ok()?;
    if !needs_text_check(&source) {
        return None;
    }
    let udf = ScalarUDF::new_from_impl(TextCast {
        target: data_type.clone(),
        durations: has_second_durations(&source),
        signature: Signature::any(1, Volatility::Immutable),
    });
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        vec![expr.as_ref().clone()],
    )))
}

/// A cast to text of a value arrow writes without a bound (see the module documentation).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextCast {
    target: DataType,
    /// Whether the input holds durations in seconds, which may be beyond what can be written.
    durations: bool,
    signature: Signature,
}

/// At most how many bytes of text arrow writes for one value of `t` that is not text itself.
fn width(t: &DataType) -> u128 {
    match t {
        DataType::Null => 4,
        DataType::Boolean => 5,
        DataType::Int8 | DataType::UInt8 => 4,
        DataType::Int16 | DataType::UInt16 => 6,
        DataType::Int32 | DataType::UInt32 => 11,
        DataType::Int64 | DataType::UInt64 => 20,
        DataType::Float16 | DataType::Float32 => 16,
        DataType::Float64 => 25,
        DataType::Decimal32(p, _)
        | DataType::Decimal64(p, _)
        | DataType::Decimal128(p, _)
        | DataType::Decimal256(p, _) => u128::from(*p) + 3,
        _ => 64,
    }
}

/// An upper bound of the text arrow writes for all of `array`'s values (separators, brackets
/// and field names included).
fn text_bound(array: &dyn Array) -> u128 {
    let n = array.len() as u128;
    match array.data_type() {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            // Binary is written as hex: two characters a byte.
            2 * super::logical_bytes(array) + 4 * n
        }
        DataType::List(_) => 4 * n + text_bound(array.as_list::<i32>().values().as_ref()),
        DataType::LargeList(_) => 4 * n + text_bound(array.as_list::<i64>().values().as_ref()),
        DataType::FixedSizeList(..) => 4 * n + text_bound(array.as_fixed_size_list().values().as_ref()),
        DataType::Map(..) => 4 * n + text_bound(array.as_map().entries()),
        DataType::Struct(fields) => {
            let names: u128 = fields.iter().map(|f| f.name().len() as u128 + 4).sum();
            4 * n
                + n * names
                + array
                    .as_struct()
                    .columns()
                    .iter()
                    .map(|c| text_bound(c.as_ref()))
                    .sum::<u128>()
        }
        DataType::Dictionary(..) => {
            // Every key may name the longest value.
            let values = array.as_any_dictionary().values();
            let longest = (0..values.len())
                .map(|i| text_bound(values.slice(i, 1).as_ref()))
                .max()
                .unwrap_or(0);
            n * longest.max(4)
        }
        // Views and other nested shapes: not bounded from their shape, so refused when large.
        DataType::ListView(_) | DataType::LargeListView(_) | DataType::Union(..) | DataType::RunEndEncoded(..) => {
            u128::MAX / 4
        }
        DataType::Boolean => {
            let b = array.as_boolean();
            // "true" and "false", and a separator each.
            6 * b.true_count() as u128 + 7 * b.false_count() as u128 + 6 * b.null_count() as u128
        }
        DataType::Int8 => digits(array.as_primitive::<Int8Type>().iter().flatten().map(i128::from), n),
        DataType::Int16 => digits(array.as_primitive::<Int16Type>().iter().flatten().map(i128::from), n),
        DataType::Int32 => digits(array.as_primitive::<Int32Type>().iter().flatten().map(i128::from), n),
        DataType::Int64 => digits(array.as_primitive::<Int64Type>().iter().flatten().map(i128::from), n),
        DataType::UInt8 => digits(array.as_primitive::<UInt8Type>().iter().flatten().map(i128::from), n),
        DataType::UInt16 => digits(array.as_primitive::<UInt16Type>().iter().flatten().map(i128::from), n),
        DataType::UInt32 => digits(array.as_primitive::<UInt32Type>().iter().flatten().map(i128::from), n),
        DataType::UInt64 => digits(array.as_primitive::<UInt64Type>().iter().flatten().map(i128::from), n),
        t => n * (width(t) + 2),
    }
}

/// The text of `values` (integers) and of `n` separators or nulls, exactly enough.
fn digits(values: impl Iterator<Item = i128>, n: u128) -> u128 {
    let text: u128 = values
        .map(|v| u128::from(v.unsigned_abs().checked_ilog10().unwrap_or(0)) + 1 + u128::from(v < 0))
        .sum();
    text + 4 * n
}

impl TextCast {
    fn cast(&self, array: &ArrayRef) -> Result<ArrayRef> {
        // Refused before the text is built (and cheaply, as constant folding retries a failed
        // constant on every pass of the optimiser): one value is held to the value limit,
        // a batch to the call limit unless its input is as large.
        let bound = text_bound(array.as_ref());
        let given = super::logical_bytes(array.as_ref());
        if array.len() == 1 && bound > MAX_VALUE_BYTES as u128 {
            return Err(too_large(bound, MAX_VALUE_BYTES, "a value"));
        }
        if bound > MAX_CALL_BYTES as u128 && bound > given {
            return Err(too_large(bound, MAX_CALL_BYTES, "the values of one batch"));
        }
        if let Some(seconds) = array.as_primitive_opt::<DurationSecondType>() {
            // chrono's longest duration: i64::MAX milliseconds.
            if let Some(v) = seconds
                .iter()
                .flatten()
                .find(|v| v.unsigned_abs() > (i64::MAX / 1000) as u64)
            {
                return Err(unwritable(v));
            }
        }
        // DataFusion's own options: durations written as "1 days 2 hours …", as its cast does.
        let text = cast_with_options(array, &self.target, &datafusion::common::format::DEFAULT_CAST_OPTIONS)?;
        let mut largest = 0usize;
        let mut invalid = false;
        for value in text_values(&text).into_iter().flatten() {
            largest = largest.max(value.len());
            invalid |= self.durations && value.contains("<invalid>");
        }
        if invalid {
            return Err(DataFusionError::Execution(
                "CAST(… AS text): a duration in it is beyond ±292 million years and cannot be written as text".into(),
            ));
        }
        if largest > MAX_VALUE_BYTES {
            return Err(too_large(largest as u128, MAX_VALUE_BYTES, "a value"));
        }
        Ok(text)
    }
}

fn too_large(bytes: u128, limit: usize, what: &str) -> DataFusionError {
    DataFusionError::External(Box::new(crate::Error::LimitExceeded(format!(
        "CAST(… AS text) would build {what} of about {} MiB of text; at most {} MiB are allowed",
        bytes / (1 << 20),
        limit / (1 << 20)
    ))))
}

fn unwritable(seconds: i64) -> DataFusionError {
    DataFusionError::Execution(format!(
        "CAST(… AS text): a duration of {seconds} seconds is beyond ±292 million years and cannot be written as text"
    ))
}

fn text_values(text: &ArrayRef) -> Vec<Option<&str>> {
    match text.data_type() {
        DataType::Utf8 => text.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => text.as_string::<i64>().iter().collect(),
        DataType::Utf8View => text.as_string_view().iter().collect(),
        _ => Vec::new(),
    }
}

impl ScalarUDFImpl for TextCast {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "meshql_text_cast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.target.clone())
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(cast_display_name(args, &self.target))
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(cast_schema_name(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        invoke_cast(&args, &self.target, |a| self.cast(a))
    }
}

// A cast's own names: `CAST(x AS Decimal32(9, 0))` shown, `x` as the column name.
fn cast_display_name(args: &[Expr], target: &DataType) -> String {
    match args.first() {
        Some(a) => match large_constant(a) {
            Some(name) => format!("CAST({name} AS {target})"),
            None => format!("CAST({a} AS {target})"),
        },
        None => String::new(),
    }
}

fn cast_schema_name(args: &[Expr]) -> String {
    match args.first() {
        // A constant that failed to cast while planning stays in the plan, and its name is
        // asked for again and again: written out, a list of millions of values took a minute.
        Some(a) => large_constant(a).unwrap_or_else(|| a.schema_name().to_string()),
        None => String::new(),
    }
}

/// `cast` of the one argument, an array or a scalar.
fn invoke_cast(
    args: &ScalarFunctionArgs,
    target: &DataType,
    cast: impl Fn(&ArrayRef) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let Some(input) = args.args.first() else {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from(target)?));
    };
    Ok(match input {
        ColumnarValue::Array(a) => ColumnarValue::Array(cast(a)?),
        ColumnarValue::Scalar(v) => {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&cast(&v.to_array_of_size(1)?)?, 0)?)
        }
    })
}

/// A short name for `expr` when it is a constant larger than [`super::literal::LARGE_LITERAL`].
fn large_constant(expr: &Expr) -> Option<String> {
    let value = match expr {
        Expr::Literal(value, _) => value,
        // The same constant, once wrapped to be checked where it is repeated (super::literal).
        Expr::ScalarFunction(ScalarFunction { func, args })
            if func.inner().as_any().is::<super::literal::SizedLiteral>() =>
        {
            match args.as_slice() {
                [Expr::Literal(value, _)] => value,
                _ => return None,
            }
        }
        _ => return None,
    };
    let bytes = super::scalar_bytes(value);
    (bytes > super::literal::LARGE_LITERAL).then(|| format!("a constant of about {} MiB", bytes / (1 << 20)))
}
