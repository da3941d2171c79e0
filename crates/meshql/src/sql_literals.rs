//! Literals of a statement, read as the SQL standard (and PostgreSQL, DuckDB) reads them, where
//! DataFusion 53 reads them otherwise.
//!
//! - `TIMESTAMP '…'` (or a string cast to `TIMESTAMP`) without a precision is microseconds, as in
//!   PostgreSQL: DataFusion makes it nanoseconds, which end in 2262 (`valid_to = TIMESTAMP
//!   '9999-12-31'` failed to plan, although microsecond columns hold such values). A literal with
//!   an explicit precision keeps it.
//! - A number DataFusion would read as a 64-bit float while the float cannot hold it —
//!   an integer beyond `BIGINT UNSIGNED`, or a decimal with more than 15 significant digits —
//!   is an exact `DECIMAL`: `99999999999999999999` is not `1e20`, `0.1234567890123456789` keeps
//!   its digits, `-9223372036854775809` is not `-9.223372036854776e18`. A number of more than 38
//!   digits is refused (no exact type holds it); numbers with an exponent (`1e30`) stay floats.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, CastKind, DataType as SqlType, ExactNumberInfo, Expr, UnaryOperator, Value,
};

use crate::Error;

/// The most digits an exact decimal holds.
const MAX_DIGITS: u64 = 38;

/// The most significant digits a 64-bit float holds exactly.
const FLOAT_DIGITS: u64 = 15;

/// Rewrites the literals of `statement` (see the module documentation).
pub(crate) fn rewrite(statement: &mut Statement) -> Result<(), Error> {
    let Statement::Statement(s) = statement else {
        return Ok(());
    };
    let flow = visit_expressions_mut(s.as_mut(), |e| {
        microsecond_timestamp(e);
        exact_number(e)
    });
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn microsecond_timestamp(e: &mut Expr) {
    let data_type = match e {
        Expr::TypedString(ts) => Some(&mut ts.data_type),
        // `CAST('9999-12-31' AS TIMESTAMP)`, `'…'::timestamp`: a literal too.
        Expr::Cast { expr, data_type, .. } if matches!(expr.as_ref(), Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_))) => {
            Some(data_type)
        }
        _ => None,
    };
    if let Some(SqlType::Timestamp(precision @ None, _)) = data_type {
        *precision = Some(6);
    }
}

/// The exact type of a number literal that a float would not hold, if any.
fn exact_type(text: &str) -> Result<Option<(u64, u64)>, Error> {
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') || text.bytes().filter(|b| *b == b'.').count() > 1 {
        return Ok(None);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole = whole.trim_start_matches('0');
    if fraction.is_empty() {
        if text.parse::<u64>().is_ok() {
            return Ok(None);
        }
        if whole.len() as u64 > MAX_DIGITS {
            return Err(Error::Syntax(format!(
                "the number {text} has more than {MAX_DIGITS} digits: no exact type holds it (write it as a float, e.g. 1e40)"
            )));
        }
        return Ok(Some((MAX_DIGITS, 0)));
    }
    let significant = if whole.is_empty() {
        fraction.trim_start_matches('0').len()
    } else {
        whole.len() + fraction.len()
    } as u64;
    let (precision, scale) = (whole.len() as u64 + fraction.len() as u64, fraction.len() as u64);
    if significant <= FLOAT_DIGITS {
        return Ok(None);
    }
    if precision > MAX_DIGITS {
        return Err(Error::Syntax(format!(
            "the number {text} has more than {MAX_DIGITS} digits: no exact type holds it (write it with an exponent, e.g. 1.5e0, for a float)"
        )));
    }
    Ok(Some((precision.max(1), scale)))
}

/// `-n` where `n` fits `BIGINT UNSIGNED` but `-n` does not fit `BIGINT`: DataFusion reads the
/// negated number as a float (`-9223372036854775809` was `-9.223372036854776e18`).
fn exact_negative(e: &mut Expr) -> bool {
    let Expr::UnaryOp {
        op: UnaryOperator::Minus,
        expr,
    } = e
    else {
        return false;
    };
    let Expr::Value(v) = expr.as_ref() else {
        return false;
    };
    let Value::Number(text, _) = &v.value else {
        return false;
    };
    let negated = format!("-{text}");
    if text.parse::<u64>().is_err() || negated.parse::<i64>().is_ok() {
        return false;
    }
    *e = exact_decimal(negated, MAX_DIGITS, 0);
    true
}

/// `CAST('<text>' AS DECIMAL(precision, scale))`.
fn exact_decimal(text: String, precision: u64, scale: u64) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(Expr::Value(Value::SingleQuotedString(text).into())),
        data_type: SqlType::Decimal(ExactNumberInfo::PrecisionAndScale(precision, scale as i64)),
        array: false,
        format: None,
    }
}

fn exact_number(e: &mut Expr) -> ControlFlow<Error> {
    if exact_negative(e) {
        return ControlFlow::Continue(());
    }
    let Expr::Value(v) = e else {
        return ControlFlow::Continue(());
    };
    let Value::Number(text, _) = &v.value else {
        return ControlFlow::Continue(());
    };
    match exact_type(text) {
        Err(error) => ControlFlow::Break(error),
        Ok(None) => ControlFlow::Continue(()),
        Ok(Some((precision, scale))) => {
            *e = exact_decimal(text.clone(), precision, scale);
            ControlFlow::Continue(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exact_type;

    #[test]
    fn numbers_a_float_cannot_hold_become_exact() {
        assert_eq!(exact_type("42").expect("valid"), None);
        assert_eq!(exact_type("18446744073709551615").expect("valid"), None);
        assert_eq!(exact_type("18446744073709551616").expect("valid"), Some((38, 0)));
        assert_eq!(exact_type("1.5").expect("valid"), None);
        assert_eq!(exact_type("123456789.123456").expect("valid"), None);
        assert_eq!(exact_type("123456789.1234567").expect("valid"), Some((16, 7)));
        assert_eq!(exact_type("0.1234567890123456789").expect("valid"), Some((19, 19)));
        assert_eq!(exact_type("0.000000000000000001").expect("valid"), None);
        assert_eq!(exact_type("1e30").expect("valid"), None);
        assert!(exact_type(&"9".repeat(39)).is_err());
        assert!(exact_type(&format!("0.{}", "1".repeat(40))).is_err());
        assert!(exact_type("1.00000000000000000000000000000000000001").is_err());
    }
}
