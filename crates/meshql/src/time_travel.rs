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
use datafusion::sql::sqlparser::keywords::Keyword;
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
    // Each clause renames the table before it: (index of the name's last word, new text), and
    // its own tokens are dropped. Everything else is the original text, byte for byte.
    let mut renamed: Vec<(usize, String)> = Vec::new();
    let mut dropped: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let Some((as_of, consumed)) = clause_at(&tokens, i)? else {
            i += 1;
            continue;
        };
        let name = table_name_before(&tokens, i)
            .filter(|k| !dropped.iter().any(|r| r.contains(k)))
            .ok_or_else(|| {
                invalid(
                    "a version clause must directly follow a table name in FROM or JOIN, once: \
                     FROM t FOR VERSION AS OF 3 [AS alias]",
                )
            })?;
        let Token::Word(word) = &tokens[name] else {
            return Err(invalid("a version clause must follow a table name"));
        };
        renamed.push((
            name,
            meshql_policy::sql_text::quoted(&format!("{}{}", word.value, as_of.suffix())),
        ));
        // The whitespace before the clause goes with it.
        dropped.push(name + 1..i + consumed);
        i += consumed;
    }
    if renamed.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    let mut out = String::with_capacity(sql.len() + 16 * renamed.len());
    for (j, t) in spanned.iter().enumerate() {
        if dropped.iter().any(|r| r.contains(&j)) {
            continue;
        }
        match renamed.iter().find(|(k, _)| *k == j) {
            Some((_, text)) => out.push_str(text),
            None => out.push_str(&sql[t.range.clone()]),
        }
    }
    Ok(Cow::Owned(out))
}

/// The index of the table name's last word when the significant token before `clause` ends a
/// table name in a FROM list or after JOIN (`FROM a.b.t`, `JOIN t`, `FROM x, t`); `None` when it
/// is anything else (an alias, a column, another clause).
fn table_name_before(tokens: &[Token], clause: usize) -> Option<usize> {
    let significant_before = |mut k: usize| loop {
        if k == 0 {
            return None;
        }
        k -= 1;
        if !matches!(tokens[k], Token::Whitespace(_)) {
            return Some(k);
        }
    };
    let last = significant_before(clause)?;
    if !matches!(tokens[last], Token::Word(_)) {
        return None;
    }
    // Back over `a.b.` to the first part of the name.
    let mut first = last;
    while let Some(dot) = significant_before(first).filter(|&d| tokens[d] == Token::Period) {
        first = significant_before(dot).filter(|&w| matches!(tokens[w], Token::Word(_)))?;
    }
    let keyword =
        |k: usize, kw: Keyword| matches!(&tokens[k], Token::Word(w) if w.quote_style.is_none() && w.keyword == kw);
    let before = significant_before(first)?;
    if keyword(before, Keyword::FROM) || keyword(before, Keyword::JOIN) {
        return Some(last);
    }
    if tokens[before] != Token::Comma {
        return None;
    }
    // After a comma: only in a FROM list (back at the same depth to FROM, before any other clause).
    let mut depth = 0i32;
    let mut k = before;
    while let Some(p) = significant_before(k) {
        k = p;
        match &tokens[k] {
            Token::RParen => depth += 1,
            Token::LParen if depth == 0 => return None,
            Token::LParen => depth -= 1,
            Token::Word(w) if depth == 0 && w.quote_style.is_none() => match w.keyword {
                Keyword::FROM => return Some(last),
                Keyword::SELECT
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::ON
                | Keyword::USING
                | Keyword::BY
                | Keyword::VALUES
                | Keyword::SET => return None,
                _ => {}
            },
            _ => {}
        }
    }
    None
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
    fn a_clause_must_follow_the_table_name_itself() {
        // Comma-separated tables and joins, schemas and quoting.
        assert_eq!(
            rw("SELECT * FROM a, mesh.d.b FOR VERSION AS OF 2 x, c"),
            "SELECT * FROM a, mesh.d.\"b@v2\" x, c"
        );
        assert_eq!(
            rw("SELECT * FROM (SELECT 1) s, b VERSION AS OF 2"),
            "SELECT * FROM (SELECT 1) s, \"b@v2\""
        );
        // After an alias, a column, a subquery, another clause or outside FROM: refused, never
        // applied to the wrong name or silently ignored.
        for sql in [
            "SELECT count(*) FROM mesh.order.shipments s FOR VERSION AS OF 0",
            "SELECT count(*) FROM mesh.order.shipments AS s VERSION AS OF 0",
            "SELECT count(*) FROM (SELECT * FROM t) x FOR VERSION AS OF 0",
            "SELECT carrier FOR VERSION AS OF 0 FROM t",
            "SELECT * FROM a JOIN b ON a.k = b.k FOR VERSION AS OF 0",
            "SELECT c FROM t GROUP BY c FOR VERSION AS OF 0",
            "SELECT * FROM t FOR VERSION AS OF 0 VERSION AS OF 1",
            "SELECT a, b FOR VERSION AS OF 0 FROM t",
            "SELECT * FROM t WHERE x IN (1, y) FOR VERSION AS OF 0",
        ] {
            let e = rewrite(sql).expect_err(sql);
            assert!(
                e.to_string().contains("must directly follow a table name"),
                "{sql}: {e}"
            );
        }
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
