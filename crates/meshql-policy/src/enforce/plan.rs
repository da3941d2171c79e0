//! The governed plan: what a principal gets for a product — the contract view with its scans
//! guarded, the row filter, masks and denied columns, under a [`PolicyBarrier`].

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result as DFResult, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::utils::{conjunction, disjunction, split_conjunction};
use datafusion::logical_expr::{
    lit, when, Expr, Extension, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr as DfExpr;

use super::barrier::{AppliedPolicy, PolicyBarrier};
use super::barrier_exec::BarrierGuard;
use super::expr::parse_policy_expr;
use super::pushdown::is_leakproof;
use crate::decide::{Access, ColumnAccess, RowFilter};
use crate::error::PolicyError;
use crate::load::PolicySet;
use crate::mask::{mask_expr, DeniedColumn};
use crate::Principal;

/// Builds the plan `principal` gets for `table`, a product served by `base` (its contract view).
///
/// `contact` (the product's owner and support channel) is named by errors raised under the
/// barrier, whose details are withheld ([`PolicyEvaluationFailed`]).
///
/// [`PolicyEvaluationFailed`]: crate::error::PolicyEvaluationFailed
pub fn governed_plan(
    table: &TableReference,
    base: Arc<dyn TableProvider>,
    access: &Access,
    principal: &Principal,
    policies: &PolicySet,
    contact: Option<String>,
) -> Result<LogicalPlan, PolicyError> {
    let name = match (table.schema(), table.table()) {
        (Some(s), t) => format!("mesh.{s}.{t}"),
        (None, t) => format!("mesh.{t}"),
    };
    let internal = |e: datafusion::error::DataFusionError| PolicyError::Inapplicable {
        rule: "(plan)".into(),
        table: name.clone(),
        reason: e.to_string(),
    };
    // Errors of the product's own planning (a pushed-down filter evaluated on partition values
    // while files are chosen) are guarded like those of its rows: `guard` is set below.
    let guard = Arc::new(std::sync::OnceLock::new());
    let scan = match base.get_logical_plan() {
        // The contract's view, inlined here (as DataFusion would) so that the scans inside it
        // are the ones guarded.
        Some(view) => LogicalPlanBuilder::from(guarded_scans(view.into_owned(), &guard).map_err(internal)?)
            .alias(table.clone())
            .map_err(internal)?,
        None => {
            let guarded: Arc<dyn TableProvider> = Arc::new(GuardedScan {
                inner: base,
                guard: guard.clone(),
            });
            LogicalPlanBuilder::scan(table.clone(), provider_as_source(guarded), None).map_err(internal)?
        }
    };
    let schema = scan.schema().clone();
    let parse = |f: &RowFilter| {
        parse_policy_expr(&f.sql, &schema, principal, f.column.as_deref()).map_err(|reason| PolicyError::Inapplicable {
            rule: f.rule.clone(),
            table: name.clone(),
            reason: reason.to_string(),
        })
    };
    let mut predicates = Vec::new();
    if let Some(grants) = &access.grant_filters {
        let any = grants.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        predicates.push(disjunction(any).unwrap_or_else(|| lit(false)));
    }
    for r in &access.restrictions {
        predicates.push(parse(r)?);
    }
    let mut builder = scan;
    let mut row_filter_terms = 0;
    // Whether nothing the policies evaluate can fail on a row: only then may user predicates
    // run beside them (they would otherwise pick which hidden rows the failure happens on).
    let mut leakproof = true;
    if let Some(predicate) = conjunction(predicates) {
        leakproof = is_leakproof(&predicate, &schema);
        row_filter_terms = split_conjunction(&predicate).len();
        builder = builder.filter(predicate).map_err(internal)?;
    }
    let mut exprs = Vec::with_capacity(access.columns.len());
    for (column, how) in &access.columns {
        let (qualifier, field) = schema.qualified_field_with_unqualified_name(column).map_err(internal)?;
        let col = Expr::Column(Column::from((qualifier, field)));
        let served = match how {
            ColumnAccess::Plain => col,
            ColumnAccess::Hidden => continue,
            ColumnAccess::Denied(why) | ColumnAccess::Conflict(why) => {
                exprs.push(DeniedColumn::expr(why.clone(), col).alias(column));
                continue;
            }
            ColumnAccess::Masked { spec, rule } => {
                let masked = mask_expr(
                    spec,
                    col.clone(),
                    field.data_type(),
                    |k| policies.hash_key(k),
                    |sql| parse_policy_expr(sql, &schema, principal, Some(column)).map_err(|e| e.to_string()),
                );
                match masked {
                    Ok(e) => {
                        // A custom mask may fail on a value; built-in masks cannot.
                        if matches!(spec, crate::MaskSpec::Sql { .. }) && !is_leakproof(&e, &schema) {
                            leakproof = false;
                        }
                        e
                    }
                    Err(why) => {
                        // The reason may name a key file, an environment variable or the
                        // mask's expression: the server log gets it, the principal does not.
                        tracing::error!(table = %name, %column, %rule, reason = %why, "mask cannot be applied");
                        exprs.push(
                            DeniedColumn::expr(
                                format!(
                                    "column '{column}' of {name} cannot be read: policy rule '{rule}' cannot mask it (the reason is in the server log)"
                                ),
                                col,
                            )
                            .alias(column),
                        );
                        continue;
                    }
                }
            }
        };
        // Granted on some rows only: NULL on the others.
        let served = match access.column_filters.iter().find(|(c, _)| c == column) {
            Some((_, filters)) => {
                let any = filters.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
                let condition = disjunction(any).unwrap_or_else(|| lit(false));
                if !is_leakproof(&condition, &schema) {
                    leakproof = false;
                }
                when(condition, served).end().map_err(internal)?
            }
            None => served,
        };
        exprs.push(served.alias(column));
    }
    let plan = builder.project(exprs).map_err(internal)?.build().map_err(internal)?;
    let computed = access
        .columns
        .iter()
        .filter(|(c, how)| {
            !matches!(how, ColumnAccess::Plain | ColumnAccess::Hidden)
                || access.column_filters.iter().any(|(f, _)| f == c)
        })
        .map(|(c, _)| c.clone())
        .collect();
    let mut row_filter_rules: Vec<String> = access
        .grant_filters
        .iter()
        .flatten()
        .chain(&access.restrictions)
        .map(|f| f.rule.clone())
        .collect();
    row_filter_rules.dedup();
    let masks = access
        .columns
        .iter()
        .filter_map(|(c, how)| match how {
            ColumnAccess::Masked { rule, .. } => Some((c.clone(), rule.clone())),
            _ => None,
        })
        .collect();
    let applied = AppliedPolicy {
        row_filter: access.grant_filters.is_some() || !access.restrictions.is_empty(),
        row_filter_rules,
        masks,
        all_columns_plain: access.columns.iter().all(|(_, how)| matches!(how, ColumnAccess::Plain))
            && access.column_filters.is_empty(),
        partial_columns: access
            .column_filters
            .iter()
            .map(|(c, filters)| (c.clone(), filters.iter().map(|f| f.rule.clone()).collect()))
            .collect(),
        leakproof,
        contact,
    };
    let applied = Arc::new(applied);
    let _ = guard.set(BarrierGuard {
        table: name.clone(),
        applied: applied.clone(),
    });
    Ok(LogicalPlan::Extension(Extension {
        node: Arc::new(PolicyBarrier {
            table: name,
            computed,
            row_filter_terms,
            applied,
            input: plan,
        }),
    }))
}

/// `plan` with the source of each of its table scans a [`GuardedScan`].
fn guarded_scans(plan: LogicalPlan, guard: &Arc<std::sync::OnceLock<BarrierGuard>>) -> DFResult<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::TableScan(mut scan) => {
            let inner = source_as_provider(&scan.source)?;
            scan.source = provider_as_source(Arc::new(GuardedScan {
                inner,
                guard: guard.clone(),
            }));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// The product under a barrier, whose planning errors are guarded as the barrier guards the
/// errors of its rows ([`BarrierGuard::error`]): DataFusion evaluates pushed-down filters on
/// partition values while it chooses files, so a hidden row's partition value could otherwise
/// reach the principal in a conversion error.
#[derive(Debug)]
struct GuardedScan {
    inner: Arc<dyn TableProvider>,
    guard: Arc<std::sync::OnceLock<BarrierGuard>>,
}

#[async_trait]
impl TableProvider for GuardedScan {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn constraints(&self) -> Option<&datafusion::common::Constraints> {
        self.inner.constraints()
    }

    fn statistics(&self) -> Option<datafusion::common::Statistics> {
        self.inner.statistics()
    }

    fn supports_filters_pushdown(&self, filters: &[&DfExpr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.inner
            .scan(state, projection, filters, limit)
            .await
            .map_err(|e| match self.guard.get() {
                Some(guard) => guard.error(e),
                None => e,
            })
    }
}
