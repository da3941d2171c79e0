//! Storage types the contract names otherwise, converted in the product's view.
//!
//! - A UUID (DuckDB, Spark and pyarrow write Parquet `UUID`: 16 bytes, Arrow
//!   `FixedSizeBinary(16)`) under a contract `string` column is served as its canonical text,
//!   `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower case, so that `WHERE id = '…'` works.
//! - A column of Arrow type `Null` (pandas writes one for a column that is all `None`) is served
//!   as NULLs of the contract's type.

use std::any::Any;
use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Whether a stored UUID is served as text for the contract.
pub fn is_uuid(stored: &DataType) -> bool {
    matches!(stored, DataType::FixedSizeBinary(16))
}

/// `uuid_text(<16 bytes>)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UuidText {
    signature: Signature,
}

impl UuidText {
    pub fn call(expr: Expr) -> Expr {
        let udf = ScalarUDF::new_from_impl(UuidText {
            signature: Signature::any(1, Volatility::Immutable),
        });
        Arc::new(udf).call(vec![expr])
    }
}

/// The canonical text of a 16-byte UUID.
pub fn uuid_text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn texts(array: &ArrayRef) -> Result<ArrayRef> {
    let DataType::FixedSizeBinary(16) = array.data_type() else {
        return Err(DataFusionError::Internal(format!("uuid_text of {}", array.data_type())));
    };
    let bytes = array.as_fixed_size_binary();
    let out: StringArray = bytes.iter().map(|v| v.map(uuid_text)).collect();
    Ok(Arc::new(out))
}

impl ScalarUDFImpl for UuidText {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "uuid_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.first() {
            Some(ColumnarValue::Array(a)) => Ok(ColumnarValue::Array(texts(a)?)),
            Some(ColumnarValue::Scalar(s)) => {
                let out = texts(&s.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
            None => Err(DataFusionError::Internal("uuid_text takes one argument".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_read_as_their_canonical_text() {
        let bytes: Vec<u8> = (0..16).map(|i| i * 17).collect();
        assert_eq!(super::uuid_text(&bytes), "00112233-4455-6677-8899-aabbccddeeff");
    }
}
