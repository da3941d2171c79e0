//! Decisions: what one principal may do with one product, from every rule that applies.
//!
//! The combining rules, in order:
//! 1. deny by default: a product no rule grants is invisible and unreadable;
//! 2. any matching deny wins over every grant (product-wide, or per column);
//! 3. `select` needs at least one grant; it implies `discover`;
//! 4. the row filters of the grants combine with OR (a grant without a filter means all rows),
//!    restrictions (`rowFilter` rules and tag row filters) combine with AND on top;
//! 5. at most one mask per column: global (and tag) masks win over domain masks; two different
//!    masks in the same layer are a conflict, and reading that column fails.

use std::collections::{BTreeMap, BTreeSet};

use crate::load::PolicySet;
use crate::model::*;
use crate::Principal;

/// The product a decision is about.
#[derive(Debug, Clone, Copy)]
pub struct ProductRef<'a> {
    /// The table: its domain and name, and which product, port and version it serves (rules
    /// about the product cover every one of its tables).
    pub table: TableIdentity<'a>,
    /// The contract's columns, in order (empty when the contract itself is broken).
    pub columns: &'a [ColumnInfo],
}

/// Why a product may not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No grant of `select` applies.
    NotGranted,
    /// A deny rule applies.
    Denied { rule: String },
    /// The policies cannot be applied (a rule names a missing column, a policy file does not
    /// load, …): fail closed. `rule`: the rule at fault, when one is.
    Broken { rule: Option<String>, reason: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotGranted => f.write_str("no policy grants you select on it"),
            Refusal::Denied { rule } => write!(f, "denied by policy rule '{rule}'"),
            Refusal::Broken { reason, .. } => write!(
                f,
                "its access policies cannot be applied ({reason}), so it is not served"
            ),
        }
    }
}

/// How one column is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnAccess {
    /// As stored.
    Plain,
    /// Not discoverable: absent from the schema.
    Hidden,
    /// Discoverable but not readable: a query that reads it fails with this reason.
    Denied(String),
    /// Served through a mask.
    Masked { spec: MaskSpec, rule: String },
    /// Two masks of the same layer disagree: reading the column fails.
    Conflict(String),
}

/// A row filter to apply, with the rule it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub rule: String,
    pub sql: String,
    /// For tag rules: the column that `{column}` stands for.
    pub column: Option<String>,
}

/// What a principal may read of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Every contract column with how it is served, in contract order.
    pub columns: Vec<(String, ColumnAccess)>,
    /// `None`: some grant allows every row. `Some(filters)`: rows passing any of them.
    pub grant_filters: Option<Vec<RowFilter>>,
    /// Rows must pass every one of these as well.
    pub restrictions: Vec<RowFilter>,
    /// Columns granted on some of the visible rows only: each is served on the rows passing
    /// any of its filters (the filters of the grants that give it) and is NULL on the others.
    /// A grant's columns are readable on that grant's rows, never on rows another grant opens.
    pub column_filters: Vec<(String, Vec<RowFilter>)>,
}

impl Access {
    /// Nothing restricts what the principal reads: every row, every column as stored.
    pub fn unrestricted(&self) -> bool {
        self.grant_filters.is_none()
            && self.restrictions.is_empty()
            && self.column_filters.is_empty()
            && self.columns.iter().all(|(_, how)| matches!(how, ColumnAccess::Plain))
    }
}

/// The decision for one principal and one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub discover: bool,
    /// Columns the principal may not even see (absent from the schema).
    pub hidden: BTreeSet<String>,
    pub select: Result<Access, Refusal>,
}

impl Decision {
    fn invisible(refusal: Refusal) -> Decision {
        Decision {
            discover: false,
            hidden: BTreeSet::new(),
            select: Err(refusal),
        }
    }
}

/// A grant that applies, borrowed from its rule.
struct Grant<'a> {
    rule: &'a Rule,
    privileges: &'a BTreeSet<Privilege>,
    columns: Option<&'a Vec<String>>,
    row_filter: Option<&'a String>,
}

impl PolicySet {
    /// Decides what `principal` may do with `product`.
    pub fn decide(&self, principal: &Principal, product: &ProductRef<'_>) -> Decision {
        if let Some(reason) = &self.fatal {
            return Decision::invisible(Refusal::Broken {
                rule: None,
                reason: format!("the global policy file does not load: {reason}"),
            });
        }
        let domain = product.table.domain;
        if let Some(reason) = self.broken_domains.get(domain) {
            return Decision::invisible(Refusal::Broken {
                rule: None,
                reason: format!("the policy file of domain '{domain}' does not load: {reason}"),
            });
        }
        let rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.covers(&product.table) && r.applies_to(principal))
            .collect();
        let tag_rules: Vec<&TagRule> = self.tag_rules.iter().filter(|t| t.applies_to(principal)).collect();
        let table = format!("mesh.{domain}.{}", product.table.table);

        // Product-wide denies.
        let product_deny = |p: Privilege| {
            rules
                .iter()
                .find(|r| matches!(&r.effect, Effect::Deny { privileges, columns: None } if privileges.contains(&p)))
        };
        if let Some(rule) = product_deny(Privilege::Discover) {
            return Decision::invisible(Refusal::Denied {
                rule: rule.name.clone(),
            });
        }
        let grants: Vec<Grant<'_>> = rules
            .iter()
            .filter_map(|r| match &r.effect {
                Effect::Grant {
                    privileges,
                    columns,
                    row_filter,
                } => Some(Grant {
                    rule: r,
                    privileges,
                    columns: columns.as_ref(),
                    row_filter: row_filter.as_ref(),
                }),
                _ => None,
            })
            .collect();
        let discover = !grants.is_empty();
        if !discover {
            return Decision::invisible(Refusal::NotGranted);
        }

        // Columns no one may see.
        let mut hidden = BTreeSet::new();
        for r in &rules {
            if let Effect::Deny {
                privileges,
                columns: Some(cols),
            } = &r.effect
            {
                if privileges.contains(&Privilege::Discover) {
                    hidden.extend(cols.iter().map(|c| c.to_ascii_lowercase()));
                }
            }
        }
        for t in &tag_rules {
            if let TagAction::Deny(p) = &t.action {
                if p.contains(&Privilege::Discover) {
                    hidden.extend(
                        product
                            .columns
                            .iter()
                            .filter(|c| t.matcher.matches(c))
                            .map(|c| c.name.clone()),
                    );
                }
            }
        }
        let decision = |select| Decision {
            discover: true,
            hidden: hidden.clone(),
            select,
        };

        if let Some(rule) = product_deny(Privilege::Select) {
            return decision(Err(Refusal::Denied {
                rule: rule.name.clone(),
            }));
        }
        let selects: Vec<_> = grants
            .iter()
            .filter(|g| g.privileges.contains(&Privilege::Select))
            .collect();
        if selects.is_empty() {
            return decision(Err(Refusal::NotGranted));
        }

        // Every column a rule names must exist, or the rule cannot mean what it says: fail closed.
        let known: BTreeSet<&str> = product.columns.iter().map(|c| c.name.as_str()).collect();
        for r in &rules {
            let named: Vec<&String> = match &r.effect {
                Effect::Grant { columns: Some(c), .. } | Effect::Deny { columns: Some(c), .. } => c.iter().collect(),
                Effect::Mask { masks } => masks.keys().collect(),
                _ => continue,
            };
            if let Some(missing) = named.iter().find(|c| !known.contains(c.to_ascii_lowercase().as_str())) {
                return decision(Err(Refusal::Broken {
                    rule: Some(r.name.clone()),
                    reason: format!(
                        "rule '{}' in {} names column '{missing}', which {table} does not have",
                        r.name,
                        r.source.display()
                    ),
                }));
            }
        }

        // Selectable columns: the union of the select grants' columns.
        let all_columns = selects.iter().any(|g| g.columns.is_none());
        let granted: BTreeSet<String> = selects
            .iter()
            .filter_map(|g| g.columns)
            .flatten()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let grant_filters = if selects.iter().any(|g| g.row_filter.is_none()) {
            None
        } else {
            Some(
                selects
                    .iter()
                    .map(|g| RowFilter {
                        rule: g.rule.name.clone(),
                        sql: g.row_filter.cloned().unwrap_or_default(),
                        column: None,
                    })
                    .collect(),
            )
        };
        let mut restrictions: Vec<RowFilter> = rules
            .iter()
            .filter_map(|r| match &r.effect {
                Effect::Restrict { row_filter } => Some(RowFilter {
                    rule: r.name.clone(),
                    sql: row_filter.clone(),
                    column: None,
                }),
                _ => None,
            })
            .collect();
        for t in &tag_rules {
            if let TagAction::RowFilter(sql) = &t.action {
                for c in product.columns.iter().filter(|c| t.matcher.matches(c)) {
                    restrictions.push(RowFilter {
                        rule: t.name.clone(),
                        sql: sql.clone(),
                        column: Some(c.name.clone()),
                    });
                }
            }
        }

        let columns: Vec<(String, ColumnAccess)> = product
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    self.column_access(c, &rules, &tag_rules, &hidden, all_columns, &granted, &table),
                )
            })
            .collect();
        // A column that only some of the row-granting grants give is readable on their rows
        // only — unless one of them opens every row.
        let mut column_filters = Vec::new();
        for (name, how) in &columns {
            if matches!(
                how,
                ColumnAccess::Hidden | ColumnAccess::Denied(_) | ColumnAccess::Conflict(_)
            ) {
                continue;
            }
            let giving: Vec<&&Grant<'_>> = selects
                .iter()
                .filter(|g| {
                    g.columns
                        .is_none_or(|cols| cols.iter().any(|c| c.eq_ignore_ascii_case(name)))
                })
                .collect();
            if giving.len() == selects.len() || giving.iter().any(|g| g.row_filter.is_none()) {
                continue;
            }
            let filters = giving
                .iter()
                .map(|g| RowFilter {
                    rule: g.rule.name.clone(),
                    sql: g.row_filter.cloned().unwrap_or_default(),
                    column: None,
                })
                .collect();
            column_filters.push((name.clone(), filters));
        }
        decision(Ok(Access {
            columns,
            grant_filters,
            restrictions,
            column_filters,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn column_access(
        &self,
        column: &ColumnInfo,
        rules: &[&Rule],
        tag_rules: &[&TagRule],
        hidden: &BTreeSet<String>,
        all_columns: bool,
        granted: &BTreeSet<String>,
        table: &str,
    ) -> ColumnAccess {
        let name = column.name.as_str();
        if hidden.contains(name) {
            return ColumnAccess::Hidden;
        }
        let denied_by = rules
            .iter()
            .find_map(|r| match &r.effect {
                Effect::Deny {
                    privileges,
                    columns: Some(cols),
                } if privileges.contains(&Privilege::Select) && cols.iter().any(|c| c.eq_ignore_ascii_case(name)) => {
                    Some(r.name.clone())
                }
                _ => None,
            })
            .or_else(|| {
                tag_rules.iter().find_map(|t| match &t.action {
                    TagAction::Deny(p) if p.contains(&Privilege::Select) && t.matcher.matches(column) => {
                        Some(t.name.clone())
                    }
                    _ => None,
                })
            });
        if let Some(rule) = denied_by {
            return ColumnAccess::Denied(format!(
                "column '{name}' of {table} is denied to you by policy rule '{rule}'"
            ));
        }
        if !all_columns && !granted.contains(name) {
            return ColumnAccess::Denied(format!("column '{name}' of {table} is not granted to you"));
        }
        // Masks by layer: global rules and tag rules first.
        let mut global: BTreeMap<String, &MaskSpec> = BTreeMap::new();
        let mut local: BTreeMap<String, &MaskSpec> = BTreeMap::new();
        for r in rules {
            if let Effect::Mask { masks } = &r.effect {
                for (c, spec) in masks {
                    if c.eq_ignore_ascii_case(name) {
                        match r.layer {
                            Layer::Global => global.insert(r.name.clone(), spec),
                            Layer::Domain(_) => local.insert(r.name.clone(), spec),
                        };
                    }
                }
            }
        }
        for t in tag_rules {
            if let TagAction::Mask(spec) = &t.action {
                if t.matcher.matches(column) {
                    global.insert(t.name.clone(), spec);
                }
            }
        }
        for layer in [global, local] {
            let distinct: BTreeSet<String> = layer.values().map(|s| format!("{s:?}")).collect();
            match distinct.len() {
                0 => continue,
                1 => {
                    let (rule, spec) = layer.into_iter().next().expect("one mask");
                    return ColumnAccess::Masked {
                        spec: spec.clone(),
                        rule,
                    };
                }
                _ => {
                    let names: Vec<String> = layer.keys().map(|k| format!("'{k}'")).collect();
                    return ColumnAccess::Conflict(format!(
                        "column '{name}' of {table} has conflicting masks from rules {}; the policies must be fixed before it can be read",
                        names.join(", ")
                    ));
                }
            }
        }
        ColumnAccess::Plain
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
