//! The policy model: rules as loaded, checked and ready for decisions.
//!
//! The YAML form is documented in `docs/policies.md`; this module holds the checked form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::Principal;

/// What a rule grants or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// See that the product exists, its contract and its schema.
    Discover,
    /// Read its data (implies `discover` when granted).
    Select,
}

/// Where a rule was written: the mesh root (the governance council) or one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Global,
    Domain(String),
}

/// What a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// Every product of the mesh (`"*"`, global rules only).
    Mesh,
    /// Every product of one domain (`"customer.*"`).
    Domain(String),
    /// One product — every table derived from it, whichever port or version — or, with `port`
    /// (`"<domain>.<product>:<port>"`) one output port in all its versions, or with a version as
    /// well (`"<domain>.<product>:<port>@<version>"`) one published version of it.
    ///
    /// `name` may also be a table name of the product (`<product>_<port>` for a product with
    /// several ports, or an older version's `<product>_v<version>`): the rule then covers that
    /// port (every version) or that one version table.
    Product {
        domain: String,
        name: String,
        port: Option<String>,
        version: Option<String>,
    },
}

/// The table a rule is matched against: which product, port and version of it the table serves.
#[derive(Debug, Clone, Copy)]
pub struct TableIdentity<'a> {
    pub domain: &'a str,
    /// The table's SQL name (`mesh.<domain>.<table>`).
    pub table: &'a str,
    /// The product's SQL name, shared by all its tables.
    pub product: &'a str,
    /// The output port's name and version as the descriptor writes them.
    pub port: &'a str,
    pub version: &'a str,
    /// The SQL name of the newest version of the port.
    pub port_table: &'a str,
}

impl<'a> TableIdentity<'a> {
    /// A table that is a whole product on its own (one port, one version): tests and tools.
    pub fn single(domain: &'a str, name: &'a str) -> Self {
        TableIdentity {
            domain,
            table: name,
            product: name,
            port: "",
            version: "",
            port_table: name,
        }
    }
}

impl Resource {
    pub fn covers(&self, t: &TableIdentity<'_>) -> bool {
        match self {
            Resource::Mesh => true,
            Resource::Domain(d) => d == t.domain,
            Resource::Product {
                domain,
                name,
                port,
                version,
            } => {
                if domain != t.domain {
                    return false;
                }
                match (port, version) {
                    (None, _) => name == t.product || name == t.port_table || name == t.table,
                    (Some(port), version) => {
                        name == t.product
                            && port.eq_ignore_ascii_case(t.port)
                            && version.as_deref().is_none_or(|v| v.eq_ignore_ascii_case(t.version))
                    }
                }
            }
        }
    }

    pub fn domain(&self) -> Option<&str> {
        match self {
            Resource::Mesh => None,
            Resource::Domain(d) | Resource::Product { domain: d, .. } => Some(d),
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Mesh => f.write_str("*"),
            Resource::Domain(d) => write!(f, "{d}.*"),
            Resource::Product {
                domain,
                name,
                port,
                version,
            } => {
                write!(f, "{domain}.{name}")?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                if let Some(v) = version {
                    write!(f, "@{v}")?;
                }
                Ok(())
            }
        }
    }
}

/// Which principals a rule speaks about. Every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subjects {
    /// `"*"`: everyone (authenticated or anonymous).
    pub everyone: bool,
    pub users: BTreeSet<String>,
    /// Member of at least one of these.
    pub groups: BTreeSet<String>,
    /// Every attribute equal.
    pub attributes: BTreeMap<String, String>,
}

impl Subjects {
    pub fn everyone() -> Self {
        Subjects {
            everyone: true,
            ..Default::default()
        }
    }

    pub fn matches(&self, p: &Principal) -> bool {
        if self.everyone {
            return true;
        }
        (self.users.is_empty() || self.users.contains(p.id()))
            && (self.groups.is_empty() || self.groups.iter().any(|g| p.in_group(g)))
            && self.attributes.iter().all(|(k, v)| p.attribute(k) == Some(v.as_str()))
    }
}

/// How a masked column is shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum MaskSpec {
    /// A typed NULL.
    #[serde(alias = "null")]
    Nullify,
    /// A constant (`value`, default `****` for text and NULL otherwise), of the column's type.
    Redact {
        #[serde(default)]
        value: Option<String>,
    },
    /// HMAC-SHA256 of the value's text under a named key from the global policy file, as hex.
    /// Equal values hash equally, so masked keys still join; without the key nothing can be
    /// recomputed, unlike a plain hash.
    Hash {
        #[serde(default = "default_key")]
        key: String,
    },
    /// The first `n` characters, the rest replaced by `*`.
    ShowFirst { n: usize },
    /// The last `n` characters, the rest replaced by `*`.
    ShowLast { n: usize },
    /// A date or timestamp truncated to the first day of its year.
    Year,
    /// Any SQL expression over the product's columns; `{column}` is the masked column.
    Sql { expression: String },
}

fn default_key() -> String {
    "default".into()
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Grants privileges, optionally only on some columns (`select`) and some rows.
    /// Row filters of the grants that apply are combined with OR.
    Grant {
        privileges: BTreeSet<Privilege>,
        columns: Option<Vec<String>>,
        row_filter: Option<String>,
    },
    /// Denies privileges on the product or, with `columns`, on those columns. Wins over grants.
    Deny {
        privileges: BTreeSet<Privilege>,
        columns: Option<Vec<String>>,
    },
    /// A row filter that always applies on top of the grants (combined with AND).
    Restrict { row_filter: String },
    /// Column masks.
    Mask { masks: BTreeMap<String, MaskSpec> },
}

/// One rule of a policy file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub source: PathBuf,
    pub layer: Layer,
    pub principals: Subjects,
    pub except: Option<Subjects>,
    pub resources: Vec<Resource>,
    pub effect: Effect,
}

impl Rule {
    pub fn applies_to(&self, p: &Principal) -> bool {
        self.principals.matches(p) && !self.except.as_ref().is_some_and(|e| e.matches(p))
    }

    pub fn covers(&self, table: &TableIdentity<'_>) -> bool {
        self.resources.iter().any(|r| r.covers(table))
    }
}

/// Which columns a tag rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagMatch {
    Classification(String),
    Tag(String),
}

impl TagMatch {
    pub fn matches(&self, column: &ColumnInfo) -> bool {
        // Contracts are written by hand: `"Confidential "` or `" phone"` must not slip past a
        // rule about `confidential` or `phone` (fail closed on spelling noise).
        let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        match self {
            TagMatch::Classification(c) => column.classification.as_deref().is_some_and(|x| same(x, c)),
            TagMatch::Tag(t) => column.tags.iter().any(|x| same(x, t)),
        }
    }
}

/// What a tag rule does to each matching column.
#[derive(Debug, Clone, PartialEq)]
pub enum TagAction {
    Deny(BTreeSet<Privilege>),
    /// `{column}` in the expression is the matching column.
    RowFilter(String),
    Mask(MaskSpec),
}

/// A global rule about every column carrying a classification or tag, in every domain.
#[derive(Debug, Clone)]
pub struct TagRule {
    pub name: String,
    pub source: PathBuf,
    pub matcher: TagMatch,
    pub principals: Subjects,
    pub except: Option<Subjects>,
    pub action: TagAction,
}

impl TagRule {
    pub fn applies_to(&self, p: &Principal) -> bool {
        self.principals.matches(p) && !self.except.as_ref().is_some_and(|e| e.matches(p))
    }
}

/// A column as policies see it: its name and its contract's classification and tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnInfo {
    pub name: String,
    pub classification: Option<String>,
    pub tags: Vec<String>,
}

/// A secret key for keyed-hash masks, or why it is not available.
#[derive(Clone)]
pub enum HashKey {
    Available(Arc<[u8]>),
    Unavailable(String),
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::Available(_) => f.write_str("HashKey(<secret>)"),
            HashKey::Unavailable(why) => write!(f, "HashKey(unavailable: {why})"),
        }
    }
}
