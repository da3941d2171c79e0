//! Hive partition values as the writers mean them.
//!
//! Writers encode a partition value in its directory name: Spark, DuckDB, pyarrow and polars
//! percent-escape the characters a path cannot hold (`carrier=la%20poste`,
//! `carrier=dhl%2Fexpress`), and write a NULL as `__HIVE_DEFAULT_PARTITION__`. The listing reads
//! each partition column as the directory's text; [`HiveValue`] turns that text into the value —
//! decoded, NULL for the marker, typed as the contract says — in the contract's view over the
//! scan. The function is immutable, so filters on partition columns still prune directories.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The directory name of a NULL partition value (Hive, Spark, DuckDB, pyarrow, polars).
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A partition directory's value text, decoded: `None` for the NULL marker. Malformed escapes
/// are kept as written (as Spark does).
pub fn decode(text: &str) -> Option<String> {
    if text == DEFAULT_PARTITION {
        return None;
    }
    Some(unescape(text))
}

/// `text` with its `%XX` escapes decoded; malformed escapes are kept as written.
pub fn unescape(text: &str) -> String {
    if !text.contains('%') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `hive_value(<partition column>)`: the column's directory text as a value of the contract's
/// type, failing with the product, the column and the value when the text is not one.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HiveValue {
    column: String,
    /// `mesh.<domain>.<product>`, for messages.
    table: String,
    data_type: DataType,
    signature: Signature,
}

impl HiveValue {
    /// `hive_value(expr)` for partition column `column` of `table`, typed `data_type`.
    pub fn call(expr: Expr, column: &str, table: &str, data_type: DataType) -> Expr {
        let udf = ScalarUDF::new_from_impl(HiveValue {
            column: column.to_string(),
            table: table.to_string(),
            data_type,
            signature: Signature::any(1, Volatility::Immutable),
        });
        Arc::new(udf).call(vec![expr])
    }

    fn values(&self, raw: &ArrayRef) -> Result<ArrayRef> {
        if let Some(dict) = raw.as_any_dictionary_opt() {
            // The listing gives a partition column as a dictionary of its directory's text:
            // each text is decoded once, not once per row.
            let decoded = self.values(dict.values())?;
            return Ok(arrow::compute::cast(&dict.with_values(decoded), &self.data_type)?);
        }
        let raw = arrow::compute::cast(raw, &DataType::Utf8)?;
        let text = raw.as_string::<i32>();
        let decoded: StringArray = text.iter().map(|v| v.and_then(decode)).collect();
        if self.data_type == DataType::Utf8 {
            return Ok(Arc::new(decoded));
        }
        let options = arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow::compute::cast_with_options(&decoded, &self.data_type, &options).map_err(|_| {
            // Name the first value that is not one.
            let bad = decoded
                .iter()
                .flatten()
                .find(|v| {
                    let one = StringArray::from(vec![*v]);
                    arrow::compute::cast_with_options(&one, &self.data_type, &options).is_err()
                })
                .unwrap_or_default()
                .to_string();
            DataFusionError::Execution(format!(
                "{}: the partition directory `{}={bad}` does not hold a value of the contract's type {} for column `{}`",
                self.table, self.column, self.data_type, self.column
            ))
        })
    }
}

impl ScalarUDFImpl for HiveValue {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "hive_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return Err(DataFusionError::Internal("hive_value takes one argument".into()));
        };
        match arg {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(self.values(a)?)),
            ColumnarValue::Scalar(s) => {
                let out = self.values(&s.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_the_null_marker_decode_as_writers_mean_them() {
        assert_eq!(decode("la%20poste").as_deref(), Some("la poste"));
        assert_eq!(decode("dhl%2Fexpress").as_deref(), Some("dhl/express"));
        assert_eq!(decode("100%25%20post").as_deref(), Some("100% post"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode(DEFAULT_PARTITION), None);
        // Malformed escapes stay as written.
        assert_eq!(decode("50%").as_deref(), Some("50%"));
        assert_eq!(decode("%zz1").as_deref(), Some("%zz1"));
        assert_eq!(decode("a%2").as_deref(), Some("a%2"));
    }
}
