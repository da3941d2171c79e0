//! Editing SQL text by its tokens: what is replaced is found by the tokenizer (so nothing inside
//! a string literal, a quoted identifier or a comment is ever touched), and everything else is
//! copied from the original text byte for byte.
//!
//! Rejoining sqlparser's tokens with `to_string()` is not a faithful round trip: a string token
//! prints without its doubled quotes (`'o''brien'` comes back as `'o'brien'`, and
//! `'a'' OR 1=1 --'` as SQL), a quoted identifier likewise. Policy placeholders, quality-rule
//! table names and time-travel clauses are therefore spliced into the original text instead.

use std::ops::Range;

use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, TokenizerError};

/// A token and the bytes of the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub token: Token,
    pub range: Range<usize>,
}

/// The tokens of `sql` in `dialect`, each with its byte range in `sql`; the ranges cover `sql`
/// exactly, in order.
pub fn tokens(sql: &str, dialect: &dyn Dialect) -> Result<Vec<Spanned>, TokenizerError> {
    let located = Tokenizer::new(dialect, sql).tokenize_with_location()?;
    let mut starts = Vec::with_capacity(located.len());
    let mut cursor = Cursor::new(sql);
    for t in &located {
        starts.push(cursor.advance_to(t.span.start));
    }
    let mut out = Vec::with_capacity(located.len());
    for (i, t) in located.into_iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(sql.len());
        out.push(Spanned {
            token: t.token,
            range: starts[i]..end,
        });
    }
    Ok(out)
}

/// Walks `sql` to a tokenizer location (1-based line and column, counted in characters, a new
/// line at each `\n`), returning its byte offset. Locations come in order, so the walk is linear.
struct Cursor<'a> {
    sql: &'a str,
    byte: usize,
    line: u64,
    column: u64,
}

impl<'a> Cursor<'a> {
    fn new(sql: &'a str) -> Self {
        Cursor {
            sql,
            byte: 0,
            line: 1,
            column: 1,
        }
    }

    fn advance_to(&mut self, to: Location) -> usize {
        while (self.line, self.column) < (to.line, to.column) {
            let Some(ch) = self.sql[self.byte..].chars().next() else {
                break;
            };
            self.byte += ch.len_utf8();
            if ch == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.byte
    }
}

/// `name` as a double-quoted SQL identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    #[test]
    fn ranges_cover_the_text_exactly() {
        for sql in [
            "SELECT 'o''brien', \"a\"\"b\" FROM t -- c\nWHERE x = 'é€' /* z */",
            "select\r\n\t1",
            "",
            "SELECT ${principal.region} = {column}",
        ] {
            let toks = tokens(sql, &GenericDialect {}).expect("tokenizes");
            let joined: String = toks.iter().map(|t| &sql[t.range.clone()]).collect();
            assert_eq!(joined, sql);
            for t in &toks {
                if let Token::SingleQuotedString(s) = &t.token {
                    assert_eq!(&sql[t.range.clone()], format!("'{}'", s.replace('\'', "''")));
                }
            }
        }
    }
}
