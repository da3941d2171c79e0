//! The checks: the analyzer rule refusing a plan that reaches storage outside a barrier, the
//! optimiser rule refusing a denied column, and the rule lists governed sessions install.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DFResult, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::barrier::as_barrier;
use super::pushdown::LeakproofPushdown;
use super::table::{GovernedTable, SelfGovernedTable};
use crate::error::AccessDenied;
use crate::mask::DeniedColumn;

/// Refuses a plan that names a product the principal may not read, or that reaches a table
/// outside a policy barrier. Runs first among the analyzer rules, before anything is read.
#[derive(Debug, Default)]
pub struct PolicyCheck;

impl PolicyCheck {
    pub fn check(plan: &LogicalPlan) -> DFResult<()> {
        check_plan(plan, false)
    }
}

impl AnalyzerRule for PolicyCheck {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DFResult<LogicalPlan> {
        check_plan(&plan, false)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "meshql_policy_check"
    }
}

fn check_plan(plan: &LogicalPlan, guarded: bool) -> DFResult<()> {
    let guarded = guarded || as_barrier(plan).is_some();
    if let LogicalPlan::TableScan(scan) = plan {
        let provider = source_as_provider(&scan.source).ok();
        if let Some(g) = provider
            .as_ref()
            .and_then(|p| p.as_any().downcast_ref::<GovernedTable>())
        {
            if let Some(msg) = g.refusal() {
                return Err(AccessDenied::new(msg).into());
            }
        }
        let self_governed = provider.is_some_and(|p| p.as_any().is::<SelfGovernedTable>());
        let name = &scan.table_name;
        let metadata = name.schema() == Some("information_schema");
        let table_function = matches!(name, TableReference::Bare { table } if table.ends_with("()"));
        if !guarded && !metadata && !table_function && !self_governed {
            return Err(AccessDenied::new(format!(
                "access denied: {name} would be read without its access policies; query refused"
            ))
            .into());
        }
    }
    plan.apply_subqueries(|sub| check_plan(sub, false).map(|_| TreeNodeRecursion::Continue))?;
    for input in plan.inputs() {
        check_plan(input, guarded)?;
    }
    Ok(())
}

/// Refuses an optimised plan that still reads a column the principal may not read.
#[derive(Debug, Default)]
pub struct DeniedColumnCheck;

impl OptimizerRule for DeniedColumnCheck {
    fn name(&self) -> &str {
        "meshql_denied_column_check"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DFResult<Transformed<LogicalPlan>> {
        let mut denied = None;
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|e| {
                e.apply(|x| {
                    if let Expr::ScalarFunction(f) = x {
                        if let Some(d) = f.func.inner().as_any().downcast_ref::<DeniedColumn>() {
                            denied = Some(d.message().to_string());
                            return Ok(TreeNodeRecursion::Stop);
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        match denied {
            Some(msg) => Err(AccessDenied::new(format!("access denied: {msg}")).into()),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// DataFusion's optimiser rules with meshql's: leak-proof pushdown right after filter pushdown
/// (followed by another filter pushdown to carry the moved predicates to the scan), and the
/// denied-column check last.
pub fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Vec::new();
    for rule in datafusion::optimizer::Optimizer::new().rules {
        let is_push_down_filter = rule.name() == "push_down_filter";
        rules.push(rule);
        if is_push_down_filter {
            rules.push(Arc::new(LeakproofPushdown) as Arc<dyn OptimizerRule + Send + Sync>);
            rules.push(Arc::new(datafusion::optimizer::push_down_filter::PushDownFilter::new()));
        }
    }
    rules.push(Arc::new(DeniedColumnCheck));
    rules
}

/// DataFusion's analyzer rules with [`PolicyCheck`] first.
pub fn analyzer_rules() -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> = vec![Arc::new(PolicyCheck)];
    rules.extend(datafusion::optimizer::Analyzer::new().rules);
    rules
}
