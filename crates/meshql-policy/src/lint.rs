//! Checking policies against a product without a principal: what `meshql check` reports, so a
//! rule that would fail closed at query time is found before anyone queries.

use arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use std::sync::Arc;

use crate::decide::ProductRef;
use crate::enforce::parse_policy_expr;
use crate::load::PolicySet;
use crate::model::{Effect, HashKey, MaskSpec, Resource, TableIdentity, TagAction};
use crate::Principal;

impl PolicySet {
    /// Problems of the rules that cover `domain.name`, whose contract columns are `columns` and
    /// whose served schema is `schema`: columns that do not exist, expressions that do not parse,
    /// hash keys that are not configured. Each names the rule and its file.
    pub fn lint(&self, product: &ProductRef<'_>, schema: &Schema) -> Vec<String> {
        let columns = product.columns;
        let table = format!("mesh.{}.{}", product.table.domain, product.table.table);
        let Ok(df_schema) = DFSchema::try_from_qualified_schema(table.as_str(), schema) else {
            return vec![format!("{table}: its schema cannot be checked")];
        };
        let df_schema = Arc::new(df_schema);
        let someone = Principal::new("meshql-check");
        let known = |c: &str| columns.iter().any(|x| x.name.eq_ignore_ascii_case(c));
        let mut out = Vec::new();
        let check_mask =
            |rule: &str, source: &std::path::Path, column: &str, spec: &MaskSpec, out: &mut Vec<String>| match spec {
                MaskSpec::Hash { key } => {
                    if let HashKey::Unavailable(why) = self.hash_key(key) {
                        out.push(format!("{table}: rule '{rule}' ({}): {why}", source.display()));
                    }
                }
                MaskSpec::Sql { expression } => {
                    if let Err(why) = parse_policy_expr(expression, &df_schema, &someone, Some(column)) {
                        out.push(format!("{table}: rule '{rule}' ({}): {why}", source.display()));
                    }
                }
                _ => {}
            };
        for r in self.rules.iter().filter(|r| r.covers(&product.table)) {
            let mut problem =
                |why: String| out.push(format!("{table}: rule '{}' ({}): {why}", r.name, r.source.display()));
            match &r.effect {
                Effect::Grant {
                    columns: cols,
                    row_filter,
                    ..
                } => {
                    for c in cols.iter().flatten().filter(|c| !known(c)) {
                        problem(format!("names column '{c}', which {table} does not have"));
                    }
                    if let Some(f) = row_filter {
                        if let Err(why) = parse_policy_expr(f, &df_schema, &someone, None) {
                            problem(why.to_string());
                        }
                    }
                }
                Effect::Deny { columns: cols, .. } => {
                    for c in cols.iter().flatten().filter(|c| !known(c)) {
                        problem(format!("names column '{c}', which {table} does not have"));
                    }
                }
                Effect::Restrict { row_filter } => {
                    if let Err(why) = parse_policy_expr(row_filter, &df_schema, &someone, None) {
                        problem(why.to_string());
                    }
                }
                Effect::Mask { masks } => {
                    for (c, spec) in masks {
                        if known(c) {
                            check_mask(&r.name, &r.source, c, spec, &mut out);
                        } else {
                            out.push(format!(
                                "{table}: rule '{}' ({}): names column '{c}', which {table} does not have",
                                r.name,
                                r.source.display()
                            ));
                        }
                    }
                }
            }
        }
        for t in &self.tag_rules {
            for c in columns.iter().filter(|c| t.matcher.matches(c)) {
                match &t.action {
                    TagAction::RowFilter(f) => {
                        if let Err(why) = parse_policy_expr(f, &df_schema, &someone, Some(&c.name)) {
                            out.push(format!(
                                "{table}: tag rule '{}' ({}): {why}",
                                t.name,
                                t.source.display()
                            ));
                        }
                    }
                    TagAction::Mask(spec) => check_mask(&t.name, &t.source, &c.name, spec, &mut out),
                    TagAction::Deny(_) => {}
                }
            }
        }
        out
    }

    /// Resources of rules that cover none of `tables` (every table of the mesh): a rule naming a
    /// product, port or version that does not exist — a typo, or a product renamed since —
    /// protects nothing. One line per resource, naming the rule and its file.
    pub fn unmatched_resources(&self, tables: &[TableIdentity<'_>]) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rules {
            for resource in &r.resources {
                if matches!(resource, Resource::Mesh) || tables.iter().any(|t| resource.covers(t)) {
                    continue;
                }
                out.push(format!(
                    "rule '{}' ({}): resource '{resource}' matches no product of the mesh",
                    r.name,
                    r.source.display()
                ));
            }
        }
        out
    }
}
