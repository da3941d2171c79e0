//! Functions whose result can be far larger than their arguments, held to
//! [`MAX_VALUE_BYTES`] per value and [`MAX_CALL_BYTES`] per call.
//!
//! `repeat('x', 1e9)` builds a 1 GB string from a 10-byte statement, `range(3e8)` a list of
//! 300 million integers: memory that no operator reserves, so the query's memory limit never
//! sees it, and that encoding the result copies again. Such functions are replaced in every
//! session by the same function behind a check of the size its arguments ask for, made before
//! anything is allocated.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use crate::limits::{MAX_CALL_BYTES, MAX_VALUE_BYTES};
use crate::Error;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Size {
    /// `repeat(text, n)`: `n` times the text.
    Repeat,
    /// `lpad`/`rpad(text, n, …)`: `n` characters.
    Pad,
    /// `array_repeat(element, n)`: `n` elements.
    ArrayRepeat,
    /// `array_resize(list, n, …)`: `n` elements.
    Resize,
    /// `range`/`generate_series(start, stop[, step])` on integers: (stop − start) / step elements.
    Series,
}

/// The functions bounded, by name.
const BOUNDED: &[(&str, Size)] = &[
    ("repeat", Size::Repeat),
    ("lpad", Size::Pad),
    ("rpad", Size::Pad),
    ("array_repeat", Size::ArrayRepeat),
    ("array_resize", Size::Resize),
    ("range", Size::Series),
    ("generate_series", Size::Series),
];

/// `inner` behind the size check of `size`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    size: Size,
}

/// The bounded replacement of each function of `functions` that can build huge values.
pub(crate) fn bounded_functions(functions: &std::collections::HashMap<String, Arc<ScalarUDF>>) -> Vec<ScalarUDF> {
    BOUNDED
        .iter()
        .filter_map(|(name, size)| {
            let inner = functions.get(*name)?.clone();
            Some(ScalarUDF::new_from_impl(Bounded { inner, size: *size }))
        })
        .collect()
}

fn too_large(name: &str, bytes: u128) -> DataFusionError {
    let (what, limit) = if bytes > MAX_VALUE_BYTES as u128 && bytes <= MAX_CALL_BYTES as u128 {
        ("a value", MAX_VALUE_BYTES)
    } else {
        ("the values of one batch", MAX_CALL_BYTES)
    };
    DataFusionError::External(Box::new(Error::LimitExceeded(format!(
        "{name}(…) would build {what} of about {} MiB; at most {} MiB are allowed",
        bytes / (1 << 20),
        limit / (1 << 20)
    ))))
}

/// `value` as `rows` 64-bit integers (null where it is null or not an integer).
fn integers(value: &ColumnarValue, rows: usize) -> Result<Vec<Option<i64>>> {
    let array = value.to_array(rows)?;
    if !array.data_type().is_integer() {
        return Ok(vec![None; rows]);
    }
    let array = arrow::compute::cast(&array, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

/// The byte length of each of `rows` values (8 for values that are not text or binary).
fn byte_lengths(value: &ColumnarValue, rows: usize) -> Result<Vec<u128>> {
    let array: ArrayRef = value.to_array(rows)?;
    let text = matches!(
        array.data_type(),
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    );
    if !text {
        return Ok(vec![8; rows]);
    }
    let lengths = arrow::compute::kernels::length::length(&array)?;
    let lengths = arrow::compute::cast(&lengths, &DataType::Int64)?;
    Ok(lengths
        .as_primitive::<Int64Type>()
        .iter()
        .map(|l| l.unwrap_or(0).max(0) as u128)
        .collect())
}

impl Bounded {
    /// The bytes each row's value would take, from the arguments.
    fn sizes(&self, args: &[ColumnarValue], rows: usize) -> Result<Vec<u128>> {
        let count = |i: usize| -> Result<Vec<u128>> {
            Ok(match args.get(i) {
                Some(v) => integers(v, rows)?
                    .into_iter()
                    .map(|n| n.unwrap_or(0).max(0) as u128)
                    .collect(),
                None => vec![0; rows],
            })
        };
        Ok(match self.size {
            Size::Repeat | Size::ArrayRepeat => {
                let unit = match args.first() {
                    Some(v) => byte_lengths(v, rows)?,
                    None => vec![0; rows],
                };
                let unit = if self.size == Size::ArrayRepeat {
                    unit.into_iter().map(|u| u.max(8)).collect()
                } else {
                    unit
                };
                count(1)?
                    .into_iter()
                    .zip(unit)
                    .map(|(n, u)| n.saturating_mul(u))
                    .collect()
            }
            Size::Pad => count(1)?,
            Size::Resize => count(1)?.into_iter().map(|n| n.saturating_mul(8)).collect(),
            Size::Series => {
                let int = |i: usize| match args.get(i) {
                    Some(v) => integers(v, rows).map(Some),
                    None => Ok(None),
                };
                let (a, b, step) = (int(0)?, int(1)?, int(2)?);
                (0..rows)
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
                    .collect()
            }
        })
    }

    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let sizes = self.sizes(&args.args, args.number_rows.max(1))?;
        let largest = sizes.iter().copied().max().unwrap_or(0);
        if largest > MAX_VALUE_BYTES as u128 {
            return Err(too_large(self.inner.name(), largest));
        }
        let total = sizes.iter().fold(0u128, |t, s| t.saturating_add(*s));
        if total > MAX_CALL_BYTES as u128 {
            return Err(too_large(self.inner.name(), total));
        }
        Ok(())
    }
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

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
