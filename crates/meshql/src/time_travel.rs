//! Time travel in SQL: reading a Delta or Iceberg product as it was at an earlier version.
//!
//! Consumers write any of
//!
//! ```sql
//! SELECT … FROM mesh."order".transactions FOR VERSION AS OF 3                      -- Trino
//! SELECT … FROM mesh."order".transactions FOR TIMESTAMP AS OF '2024-06-01 12:00:00' -- Trino
//! SELECT … FROM mesh."order".transactions FOR SYSTEM_TIME AS OF '2024-06-01'        -- SQL:2011
//! SELECT … FROM mesh."order".transactions VERSION AS OF 3                          -- Spark, Databricks
//! SELECT … FROM mesh."order"."transactions@v3"                                     -- any client
//! ```
//!
//! A version is a Delta table version or an Iceberg snapshot id; a time selects the version that
//! was current then (times without a zone are UTC). The clauses are rewritten, before parsing,
//! into the last form: the table name with a version suffix, which the catalog resolves to the
//! same product at that version — so the same grants, row filters and masks apply, and a
//! product the principal cannot read at its current version cannot be read at any other.
//!
//! Why a token pass and not the parser: sqlparser 0.61 parses `FOR SYSTEM_TIME AS OF`,
//! `TIMESTAMP AS OF` and `VERSION AS OF` into a table's `version` only in dialects with table
//! versioning (BigQuery, Databricks, MsSql, Snowflake — not the generic dialect meshql serves),
//! and Trino's `FOR VERSION AS OF`/`FOR TIMESTAMP AS OF` in none. The pass finds the clauses by
//! their tokens and splices the new table name into the original text
//! (`meshql_policy::sql_text`), so the rest of the statement is kept byte for byte.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::Token;
use meshql_catalog::AsOf;

use crate::Error;

/// `sql` with every time-travel clause folded into its table name.
pub(crate) fn rewrite(sql: &str) -> Result<Cow<'_, str>, Error> {
    if !mentions_as_of(sql) {
        return Ok(Cow::Borrowed(sql));
    }
    let dialect = GenericDialect {};
    let Ok(spanned) = meshql_policy::sql_text::tokens(sql, &dialect) else {
        // The parser reports the problem with its own message.
        return Ok(Cow::Borrowed(sql));
    };
    let tokens: Vec<Token> = spanned.iter().map(|t| t.token.clone()).collect();
    // The output as pieces of text, each with the token it came from; a clause replaces the
    // table name before it. Everything else is the original text, byte for byte.
    let mut out: Vec<(&Token, Cow<'_, str>)> = Vec::with_capacity(tokens.len());
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        if let Some((as_of, consumed)) = clause_at(&tokens, i)? {
            // The clause follows the table name (whitespace between).
            while matches!(out.last(), Some((Token::Whitespace(_), _))) {
                out.pop();
            }
            let Some((Token::Word(name), _)) = out.pop() else {
                return Err(invalid(
                    "a version clause (FOR VERSION/TIMESTAMP AS OF) must follow a table name",
                ));
            };
            let renamed = meshql_policy::sql_text::quoted(&format!("{}{}", name.value, as_of.suffix()));
            out.push((&tokens[i], Cow::Owned(renamed)));
            i += consumed;
            changed = true;
            continue;
        }
        out.push((&tokens[i], Cow::Borrowed(&sql[spanned[i].range.clone()])));
        i += 1;
    }
    if !changed {
        return Ok(Cow::Borrowed(sql));
    }
    Ok(Cow::Owned(out.into_iter().map(|(_, text)| text).collect()))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::DataFusion(datafusion::error::DataFusionError::Plan(message.into()))
}

/// Cheap test before tokenizing: do the words `AS OF` occur at all?
fn mentions_as_of(sql: &str) -> bool {
    let mut previous_as = false;
    for word in sql.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        if word.is_empty() {
            continue;
        }
        if previous_as && word.eq_ignore_ascii_case("of") {
            return true;
        }
        previous_as = word.eq_ignore_ascii_case("as");
    }
    false
}

/// A clause starting at `i`: `[FOR] VERSION|TIMESTAMP|SYSTEM_TIME AS OF <literal>`; returns the
/// version and how many tokens it spans.
fn clause_at(tokens: &[Token], i: usize) -> Result<Option<(AsOf, usize)>, Error> {
    let mut j = i;
    let word = |t: &Token| match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    let skip_ws = |mut k: usize| {
        while matches!(tokens.get(k), Some(Token::Whitespace(_))) {
            k += 1;
        }
        k
    };
    let Some(first) = tokens.get(j).and_then(word) else {
        return Ok(None);
    };
    let kind = if first == "FOR" {
        j = skip_ws(j + 1);
        match tokens.get(j).and_then(word) {
            Some(k) if matches!(k.as_str(), "VERSION" | "TIMESTAMP" | "SYSTEM_TIME") => k,
            _ => return Ok(None),
        }
    } else if first == "VERSION" || first == "TIMESTAMP" {
        first
    } else {
        return Ok(None);
    };
    j = skip_ws(j + 1);
    if tokens.get(j).and_then(word).as_deref() != Some("AS") {
        return Ok(None);
    }
    j = skip_ws(j + 1);
    if tokens.get(j).and_then(word).as_deref() != Some("OF") {
        return Ok(None);
    }
    j = skip_ws(j + 1);
    // `TIMESTAMP '…'` typed literal (Trino)
    if matches!(tokens.get(j).and_then(word).as_deref(), Some("TIMESTAMP" | "DATE")) {
        let k = skip_ws(j + 1);
        if matches!(tokens.get(k), Some(Token::SingleQuotedString(_))) {
            j = k;
        }
    }
    let literal = match tokens.get(j) {
        Some(Token::Number(n, _)) => n.clone(),
        Some(Token::SingleQuotedString(s)) => s.clone(),
        _ => {
            return Err(invalid(format!(
                "{kind} AS OF needs a literal: a version number (VERSION AS OF 3) or a time in quotes (TIMESTAMP AS OF '2024-06-01 12:00:00')"
            )))
        }
    };
    let as_of = match kind.as_str() {
        "VERSION" => match AsOf::parse(&literal) {
            Ok(v @ AsOf::Version(_)) => v,
            _ => {
                return Err(invalid(format!(
                    "VERSION AS OF {literal}: a version is a number (Delta version or Iceberg snapshot id)"
                )))
            }
        },
        _ => match AsOf::parse(&literal) {
            Ok(AsOf::Timestamp(ms)) => AsOf::Timestamp(ms),
            _ => {
                return Err(invalid(format!(
                    "{kind} AS OF '{literal}': not a time (2024-06-01T12:00:00Z, 2024-06-01 12:00:00, 2024-06-01)"
                )))
            }
        },
    };
    Ok(Some((as_of, j + 1 - i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> String {
        rewrite(sql).unwrap().into_owned()
    }

    #[test]
    fn folds_clauses_into_table_names() {
        assert_eq!(
            rw("SELECT * FROM mesh.\"order\".transactions FOR VERSION AS OF 3 WHERE x = 1"),
            "SELECT * FROM mesh.\"order\".\"transactions@v3\" WHERE x = 1"
        );
        assert_eq!(
            rw("select * from t for timestamp as of timestamp '2024-06-01 00:00:00' t2"),
            "select * from \"t@2024-06-01T00:00:00Z\" t2"
        );
        assert_eq!(
            rw("SELECT * FROM t FOR SYSTEM_TIME AS OF '2024-06-01T00:00:00+02:00'"),
            "SELECT * FROM \"t@2024-05-31T22:00:00Z\""
        );
        assert_eq!(
            rw("SELECT * FROM \"My T\" VERSION AS OF 2"),
            "SELECT * FROM \"My T@v2\""
        );
        // both sides of a join, at different versions
        assert_eq!(
            rw("SELECT * FROM a FOR VERSION AS OF 1 JOIN b FOR VERSION AS OF 2 ON a.k = b.k"),
            "SELECT * FROM \"a@v1\" JOIN \"b@v2\" ON a.k = b.k"
        );
    }

    #[test]
    fn leaves_other_sql_alone() {
        let sql = "SELECT CAST(x AS TIMESTAMP) AS of_x, version AS v FROM t";
        assert!(matches!(rewrite(sql).unwrap(), Cow::Borrowed(_)));
        let sql = "SELECT 'VERSION AS OF 3' FROM t";
        assert_eq!(rw(sql), sql);
    }

    #[test]
    fn the_rest_of_the_statement_is_kept_byte_for_byte() {
        // Rejoining tokens would print `'a'' OR 1=1 --'` as `'a' OR 1=1 --'`: SQL out of a string.
        assert_eq!(
            rw("SELECT * FROM t VERSION AS OF 3 WHERE s = 'a'' OR 1=1 --' AND \"q\"\"c\" = 1 -- note\n"),
            "SELECT * FROM \"t@v3\" WHERE s = 'a'' OR 1=1 --' AND \"q\"\"c\" = 1 -- note\n"
        );
        assert_eq!(
            rw("SELECT * FROM \"we\"\"ird\" VERSION AS OF 1"),
            "SELECT * FROM \"we\"\"ird@v1\""
        );
    }

    #[test]
    fn bad_literals_are_errors() {
        let e = rewrite("SELECT * FROM t FOR VERSION AS OF 'yesterday'").unwrap_err();
        assert!(e.to_string().contains("a version is a number"), "{e}");
        let e = rewrite("SELECT * FROM t FOR TIMESTAMP AS OF 'noon'").unwrap_err();
        assert!(e.to_string().contains("not a time"), "{e}");
        let e = rewrite("SELECT * FROM t FOR VERSION AS OF now()").unwrap_err();
        assert!(e.to_string().contains("needs a literal"), "{e}");
    }
}
