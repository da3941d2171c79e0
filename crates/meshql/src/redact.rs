//! The one place every error leaves a session through: what the principal is told.
//!
//! Errors are built in many places — DataFusion's planner and operators, meshql's catalog,
//! policies and storage — and some of them can carry what the principal may not see:
//!
//! - values of rows or columns hidden by policies: an expression under a policy barrier (a row
//!   filter's cast, a custom mask) failing on a hidden value. The barrier withholds those
//!   ([`meshql_policy::error::PolicyEvaluationFailed`]); here an administrator gets the cause
//!   back, everyone else keeps the withheld form, and the server log records the cause;
//! - names the principal may not discover: a hidden column, a product or domain the policies
//!   hide (a planner message listing "valid fields", a policy's parse error). Every identifier
//!   of the message that names such a thing is replaced by `<hidden>` — unless the principal
//!   wrote it in the statement (echoing one's own words reveals nothing, and an error for a
//!   hidden name must read exactly like the one for a name that does not exist) or it also
//!   names something the principal may discover.
//!
//! Administrators see errors unredacted: the role exists to diagnose the mesh (it grants no
//! data; policies still shape what their queries read).

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, ErrorClass};
use crate::governed::AccessView;

/// What one statement's errors are redacted against: the principal's view and the statement.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    governance: Arc<AccessView>,
    admin: bool,
    /// The statement, whose identifiers the principal wrote (read only when an error needs it).
    statement: Arc<str>,
}

impl Redactor {
    pub fn new(governance: Arc<AccessView>, admin: bool, statement: &str) -> Self {
        Redactor {
            governance,
            admin,
            statement: Arc::from(statement),
        }
    }

    /// `e` as the principal may see it.
    pub fn error(&self, e: Error) -> Error {
        if let Error::PolicyEvaluation(failed) = &e {
            tracing::warn!(
                principal = %self.governance.principal.id(),
                table = %failed.table,
                cause = %failed.cause,
                "query failed under a policy barrier; cause withheld from the principal"
            );
            if self.admin {
                return Error::Redacted {
                    class: ErrorClass::PolicyEvaluation,
                    message: format!("{failed} (cause, shown to administrators: {})", failed.cause),
                };
            }
        }
        if self.admin {
            return e;
        }
        let message = e.to_string();
        let scrubbed = self.scrub(&message);
        if scrubbed == message {
            e
        } else {
            Error::Redacted {
                class: e.class(),
                message: scrubbed,
            }
        }
    }

    /// `message` with every identifier the principal may not discover replaced by `<hidden>`.
    fn scrub(&self, message: &str) -> String {
        let words: HashSet<String> = identifiers(message).map(|w| w.to_ascii_lowercase()).collect();
        let hidden = self.hidden_names(&words);
        if hidden.is_empty() {
            return message.to_string();
        }
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(start) = rest.find(is_ident_char) {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let end = tail.find(|c: char| !is_ident_char(c)).unwrap_or(tail.len());
            let word = &tail[..end];
            if hidden.contains(&word.to_ascii_lowercase()) {
                out.push_str("<hidden>");
            } else {
                out.push_str(word);
            }
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }

    /// Which of `words` name something the principal may not discover, and nothing it may,
    /// and were not written by the principal.
    fn hidden_names(&self, words: &HashSet<String>) -> HashSet<String> {
        let gov = &self.governance;
        let definition = gov.catalog.definition();
        let mut hidden = HashSet::new();
        let mut visible = HashSet::new();
        let mut visible_domains = HashSet::new();
        for entry in &definition.tables {
            let names = [&entry.name, &entry.product_name, &entry.port_table];
            let columns = crate::governed::columns_of(entry);
            match gov.decision(&entry.domain, &entry.name).filter(|d| d.discover) {
                Some(decision) => {
                    visible_domains.insert(entry.domain.to_ascii_lowercase());
                    visible.extend(names.iter().map(|n| n.to_ascii_lowercase()));
                    for c in columns {
                        let name = c.name.to_ascii_lowercase();
                        if decision.hidden.contains(&c.name) {
                            hidden.insert(name);
                        } else {
                            visible.insert(name);
                        }
                    }
                }
                None => {
                    hidden.extend(names.iter().map(|n| n.to_ascii_lowercase()));
                    hidden.extend(columns.into_iter().map(|c| c.name.to_ascii_lowercase()));
                }
            }
        }
        for domain in &definition.domains {
            let name = domain.name.to_ascii_lowercase();
            if !visible_domains.contains(&name) {
                hidden.insert(name);
            }
        }
        let written: HashSet<String> = identifiers(&self.statement).map(|w| w.to_ascii_lowercase()).collect();
        hidden.retain(|n| words.contains(n) && !visible.contains(n) && !written.contains(n));
        hidden
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier-like words of `text`.
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_ident_char(c)).filter(|w| !w.is_empty())
}
