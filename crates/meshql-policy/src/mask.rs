//! Column masks as expressions, and the functions behind them.
//!
//! The functions here are never registered in a session: they exist only inside the plans that
//! policies build, so a user cannot call them (a user who could call the keyed hash could test
//! guesses against masked values). The keyed hash holds its key inside the function, so the key
//! never appears in a plan, an EXPLAIN or an error.

use std::any::Any;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{exec_err, Result as DFResult, ScalarValue};
use datafusion::logical_expr::{
    cast, lit, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{HashKey, MaskSpec};

/// Builds the masked expression for `column` (of type `data_type`), or says why it cannot.
/// `sql` parses a custom SQL mask.
pub fn mask_expr(
    spec: &MaskSpec,
    column: Expr,
    data_type: &DataType,
    key: impl FnOnce(&str) -> HashKey,
    sql: impl FnOnce(&str) -> Result<Expr, String>,
) -> Result<Expr, String> {
    let is_text = matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    Ok(match spec {
        MaskSpec::Nullify => lit(ScalarValue::try_from(data_type).map_err(|e| e.to_string())?),
        MaskSpec::Redact { value } => match (value, is_text) {
            (Some(v), _) => lit(ScalarValue::try_from_string(v.clone(), data_type)
                .map_err(|e| format!("redact value '{v}' is not a {data_type}: {e}"))?),
            (None, true) => cast(lit("****"), data_type.clone()),
            (None, false) => lit(ScalarValue::try_from(data_type).map_err(|e| e.to_string())?),
        },
        MaskSpec::Hash { key: name } => match key(name) {
            HashKey::Available(k) => ScalarUDF::new_from_impl(KeyedHash::new(k)).call(vec![column]),
            HashKey::Unavailable(why) => return Err(why),
        },
        MaskSpec::ShowFirst { n } => ScalarUDF::new_from_impl(ShowPart::new(*n, true)).call(vec![column]),
        MaskSpec::ShowLast { n } => ScalarUDF::new_from_impl(ShowPart::new(*n, false)).call(vec![column]),
        MaskSpec::Year => {
            let trunc = datafusion::functions::datetime::date_trunc();
            match data_type {
                DataType::Date32 | DataType::Date64 => cast(
                    trunc.call(vec![
                        lit("year"),
                        cast(column, DataType::Timestamp(TimeUnit::Microsecond, None)),
                    ]),
                    data_type.clone(),
                ),
                DataType::Timestamp(_, _) => cast(trunc.call(vec![lit("year"), column]), data_type.clone()),
                other => return Err(format!("a `year` mask needs a date or timestamp column, not {other}")),
            }
        }
        MaskSpec::Sql { expression } => sql(expression)?,
    })
}

/// HMAC-SHA256 of the value's text, as lowercase hex. NULL stays NULL.
#[derive(PartialEq, Eq, Hash)]
pub struct KeyedHash {
    key: Arc<[u8]>,
    signature: Signature,
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(<secret key>)")
    }
}

impl KeyedHash {
    pub fn new(key: Arc<[u8]>) -> Self {
        KeyedHash {
            key,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    /// The hex HMAC of one value: what a masked cell holds.
    pub fn hash(&self, value: &[u8]) -> String {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value);
        hex::encode(mac.finalize().into_bytes())
    }
}

impl ScalarUDFImpl for KeyedHash {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "mask_keyed_hash"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_text(&args, |s, out| {
            let _ = out.write_str(&self.hash(s.as_bytes()));
        })
    }
}

/// The first or last `n` characters; the others become `*`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ShowPart {
    n: usize,
    first: bool,
    name: String,
    signature: Signature,
}

impl ShowPart {
    pub fn new(n: usize, first: bool) -> Self {
        ShowPart {
            n,
            first,
            name: format!("mask_show_{}_{n}", if first { "first" } else { "last" }),
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    pub fn apply(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        self.write_masked(s, &mut out);
        out
    }

    /// Writes `s` masked into `out`, without an allocation per value.
    fn write_masked(&self, s: &str, out: &mut impl std::fmt::Write) {
        let len = if s.is_ascii() { s.len() } else { s.chars().count() };
        let keep = self.n.min(len);
        for (i, c) in s.chars().enumerate() {
            let shown = if self.first { i < keep } else { i >= len - keep };
            // Writing into a String or an Arrow string builder cannot fail.
            let _ = out.write_char(if shown { c } else { '*' });
        }
    }
}

impl ScalarUDFImpl for ShowPart {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_text(&args, |s, out| self.write_masked(s, out))
    }
}

/// Writes `f` of the text of every non-null value of the single argument into a new string
/// column (nulls stay null). Reads Utf8, LargeUtf8 and Utf8View without copying them first.
fn map_text(args: &ScalarFunctionArgs, f: impl Fn(&str, &mut StringBuilder)) -> DFResult<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(&args.args)?;
    let Some(input) = arrays.first() else {
        return exec_err!("a mask function takes one argument");
    };
    let mut out = StringBuilder::with_capacity(input.len(), input.len() * 16);
    let mut fill = |values: &mut dyn Iterator<Item = Option<&str>>| {
        for v in values {
            match v {
                Some(s) => {
                    f(s, &mut out);
                    out.append_value("");
                }
                None => out.append_null(),
            }
        }
    };
    match input.data_type() {
        DataType::Utf8View => fill(&mut input.as_string_view().iter()),
        DataType::Utf8 => fill(&mut input.as_string::<i32>().iter()),
        DataType::LargeUtf8 => fill(&mut input.as_string::<i64>().iter()),
        _ => {
            let text = arrow::compute::cast(input, &DataType::Utf8)?;
            fill(&mut text.as_string::<i32>().iter())
        }
    }
    let out: ArrayRef = Arc::new(out.finish());
    Ok(ColumnarValue::Array(out))
}

/// Stands in for a column the principal may see but not read. A plan in which it survives
/// optimisation reads that column and is refused; evaluating it fails too (fail closed).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DeniedColumn {
    message: String,
    signature: Signature,
}

impl DeniedColumn {
    pub fn expr(message: String, column: Expr) -> Expr {
        ScalarUDF::new_from_impl(DeniedColumn {
            message,
            signature: Signature::any(1, Volatility::Immutable),
        })
        .call(vec![column])
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl ScalarUDFImpl for DeniedColumn {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "access_denied"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        exec_err!("{}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_part_keeps_n_characters() {
        assert_eq!(ShowPart::new(4, false).apply("+31-612-3456"), "********3456");
        assert_eq!(ShowPart::new(1, true).apply("Müller"), "M*****");
        assert_eq!(ShowPart::new(9, true).apply("ab"), "ab");
    }

    #[test]
    fn keyed_hash_depends_on_the_key() {
        let a = KeyedHash::new(Arc::from(&b"key-a"[..]));
        let b = KeyedHash::new(Arc::from(&b"key-b"[..]));
        assert_eq!(a.hash(b"x"), a.hash(b"x"));
        assert_ne!(a.hash(b"x"), b.hash(b"x"));
        assert_eq!(a.hash(b"x").len(), 64);
        // RFC 4231 test case 2.
        let rfc = KeyedHash::new(Arc::from(&b"Jefe"[..]));
        assert_eq!(
            rfc.hash(b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(!format!("{a:?}").contains("key-a"));
    }
}
