//! Casts to 32- and 64-bit decimals, checked through 128 bits.
//!
//! arrow 58 casts an integer to `Decimal32`/`Decimal64` by converting it to the target's
//! storage width first, wrapping: `arrow_cast(4294967301, 'Decimal32(9,0)')` is 5
//! (apache/arrow-rs#10706, fixed after arrow 59.2; remove this when meshql moves past it). Every cast to
//! those types (`arrow_cast` becomes a cast while planning) is replaced by [`DecimalCast`], which
//! casts to `Decimal128(38, scale)` first and then narrows with arrow's checked decimal cast.
//! It keeps the cast's column name and display.

use std::any::Any;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
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

    // A cast's own names: `CAST(x AS Decimal32(9, 0))` shown, `x` as the column name.
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        Ok(match args.first() {
            Some(a) => format!("CAST({a} AS {})", self.target),
            None => String::new(),
        })
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args.first().map(|a| a.schema_name().to_string()).unwrap_or_default())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(input) = args.args.first() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.target)?));
        };
        Ok(match input {
            ColumnarValue::Array(a) => ColumnarValue::Array(self.cast(a)?),
            ColumnarValue::Scalar(v) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&self.cast(&v.to_array_of_size(1)?)?, 0)?)
            }
        })
    }
}
