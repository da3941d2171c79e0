//! Limits every statement is held to before it is parsed, and the isolation of one query's
//! faults from every other query.
//!
//! DataFusion plans and evaluates expressions recursively: a `1 + 1 + … + 1` chain of a few
//! hundred terms, deep `NOT`s or nested `CASE`s overflow the stack of a thread with the default
//! 2 MiB, and a stack overflow aborts the whole process — it cannot be caught. So:
//!
//! - a statement may have at most [`MAX_STATEMENT_BYTES`] bytes and [`MAX_EXPRESSION_OPERATORS`]
//!   operators (arithmetic, comparison, concatenation, `AND`/`OR`/`NOT`, `CASE`/`WHEN`, `IS`,
//!   `LIKE`, `BETWEEN`, `UNION`/`INTERSECT`/`EXCEPT`, …), [`MAX_CASE_NESTING`] nested `CASE`s
//!   and [`MAX_NESTING`] nested parentheses and brackets; these bound any expression's depth,
//!   and are counted on the tokens, without recursion, before parsing;
//! - meshql's own binaries run queries on threads with [`QUERY_THREAD_STACK`] of stack, enough
//!   for every statement under those limits in a debug build (an embedding application should
//!   give its runtime's threads as much: `tokio::runtime::Builder::thread_stack_size`);
//! - a panic inside the engine while one query is planned or run (DataFusion has `unreachable!`s
//!   and overflowing arithmetic that a query can reach) becomes that query's error
//!   ([`Error::EngineFault`]); the process and the other queries go on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::FutureExt;

use crate::Error;

/// The longest statement accepted (4 MiB: room for the large `IN` lists BI tools send).
pub const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// The most operators one statement may contain: an upper bound of the depth of any of its
/// expressions (DuckDB's default expression depth limit is 1,000 too).
pub const MAX_EXPRESSION_OPERATORS: usize = 1_000;

/// The most `CASE` expressions one statement may nest: planning a nested `CASE` takes far more
/// stack per level than other operators do.
pub const MAX_CASE_NESTING: usize = 16;

/// The deepest nesting of parentheses and brackets one statement may have: below the parser's
/// recursion limit (50), which `ARRAY[` nested up to it made the parser (sqlparser 0.61) try
/// exponentially many ways before failing — planning threads busy for hours.
pub const MAX_NESTING: usize = 40;

/// The largest value a built-in function (or `||`) may build: memory no operator reserves, so
/// no memory limit would see it. See [`crate::bounded`].
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// The most bytes such a function may build in one call (one batch of rows), unless its
/// arguments were as large.
pub const MAX_CALL_BYTES: usize = 256 << 20;

/// The stack meshql's binaries give every thread that plans or runs queries.
pub const QUERY_THREAD_STACK: usize = 64 << 20;

/// Refuses, with a clear error and before any parsing, a statement beyond the limits.
pub fn check_statement(sql: &str) -> Result<(), Error> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::LimitExceeded(format!(
            "the statement has {} bytes; at most {MAX_STATEMENT_BYTES} are accepted",
            sql.len()
        )));
    }
    // A statement that does not tokenize is left to the parser, which says why.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let mut operators = 0usize;
    let mut case_depth = 0usize;
    let mut deepest_case = 0usize;
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for token in &tokens {
        if is_operator(token) {
            operators += 1;
        }
        match token {
            Token::LParen | Token::LBracket => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            _ => {}
        }
        if let Token::Word(w) = token {
            match w.keyword {
                Keyword::CASE => {
                    case_depth += 1;
                    deepest_case = deepest_case.max(case_depth);
                }
                Keyword::END => case_depth = case_depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    if operators > MAX_EXPRESSION_OPERATORS {
        return Err(Error::LimitExceeded(format!(
            "the statement has {operators} operators; at most {MAX_EXPRESSION_OPERATORS} are accepted (split long expressions, or use IN lists instead of chains of OR)"
        )));
    }
    if deepest > MAX_NESTING {
        return Err(Error::LimitExceeded(format!(
            "the statement nests parentheses and brackets {deepest} deep; at most {MAX_NESTING} are accepted"
        )));
    }
    if deepest_case > MAX_CASE_NESTING {
        return Err(Error::LimitExceeded(format!(
            "the statement nests {deepest_case} CASE expressions; at most {MAX_CASE_NESTING} are accepted"
        )));
    }
    Ok(())
}

fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::XOR
                | Keyword::CASE
                | Keyword::WHEN
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT
                // Set operations: a chain of 5,000 `UNION ALL`s overflowed the stack.
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
        ),
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::DuckIntDiv
        | Token::Mod
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::Tilde
        | Token::TildeAsterisk
        | Token::ExclamationMarkTilde
        | Token::ExclamationMarkTildeAsterisk
        | Token::DoubleColon
        | Token::Arrow
        | Token::LongArrow
        | Token::HashArrow
        | Token::HashLongArrow
        | Token::AtArrow
        | Token::ArrowAt => true,
        _ => false,
    }
}

/// `fut`, with a panic inside it turned into an error for this query alone.
pub(crate) async fn isolated<T>(fut: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(engine_fault(panic)),
    }
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The error for a panic caught while a query was planned or run. The panic's own message may
/// quote values the principal may not read, so it goes to the server log only.
pub(crate) fn engine_fault(panic: Box<dyn Any + Send>) -> Error {
    let message = panic_message(panic.as_ref());
    tracing::error!(panic = %message, "a query panicked inside the engine; it failed alone");
    Error::EngineFault
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_counted_on_tokens() {
        let chain = |n: usize, op: &str| format!("SELECT {}", vec!["1"; n + 1].join(op));
        assert!(check_statement(&chain(MAX_EXPRESSION_OPERATORS, " + ")).is_ok());
        for op in [" + ", " || ", " AND ", " OR ", " = "] {
            let e = check_statement(&chain(MAX_EXPRESSION_OPERATORS + 1, op)).expect_err(op);
            assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
            assert!(e.to_string().contains("operators"), "{e}");
        }
        let nots = format!("SELECT {} true", "NOT ".repeat(MAX_EXPRESSION_OPERATORS + 1));
        assert!(check_statement(&nots).is_err());
        let case = |n: usize| {
            format!(
                "SELECT {} 1 {}",
                "CASE WHEN true THEN ".repeat(n),
                "ELSE 0 END ".repeat(n)
            )
        };
        assert!(check_statement(&case(MAX_CASE_NESTING)).is_ok());
        assert!(check_statement(&case(MAX_CASE_NESTING + 1))
            .expect_err("nested CASE")
            .to_string()
            .contains("CASE"));
        // Operators inside string literals and comments are text, not operators.
        let quoted = format!("SELECT '{}' -- {}", "+".repeat(5000), "+".repeat(5000));
        assert!(check_statement(&quoted).is_ok());
        let huge = "x".repeat(MAX_STATEMENT_BYTES + 1);
        assert!(check_statement(&huge).unwrap_err().to_string().contains("bytes"));
    }
}
