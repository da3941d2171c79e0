//! The policy barrier as a logical plan node: the boundary between a product's policies and the
//! user's query, the policies it applies, and what non-administrators' EXPLAIN shows in its place.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{plan_err, DFSchemaRef, Result as DFResult};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};

/// The boundary between a product's policies and the user's query. Only leak-proof predicates
/// cross it (see [`LeakproofPushdown`]); projections are pushed through it.
///
/// [`LeakproofPushdown`]: super::LeakproofPushdown
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct PolicyBarrier {
    pub table: String,
    /// Output columns the policies compute (masks, denied-column markers): never crossed by a
    /// user predicate, whatever shape the optimiser gives the plan below.
    pub computed: BTreeSet<String>,
    /// How many conjuncts the product's row filter has (0: none). The physical planner uses it
    /// to recognise the row filter on its own, not merged with user predicates.
    pub row_filter_terms: usize,
    /// Which policies shape the product for this principal, by rule name.
    pub applied: Arc<AppliedPolicy>,
    pub input: LogicalPlan,
}

/// The policies a barrier applies, by rule name: what errors and non-administrators' EXPLAIN say
/// instead of the filters' and masks' text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Default)]
pub struct AppliedPolicy {
    /// Some rows are filtered out (possibly all: a grant filter list that is empty).
    pub row_filter: bool,
    /// The rules whose row filters apply.
    pub row_filter_rules: Vec<String>,
    /// Masked columns with the rule that masks each.
    pub masks: Vec<(String, String)>,
    /// Columns granted on some rows only, with the rules of the grants that give them.
    pub partial_columns: Vec<(String, Vec<String>)>,
    /// Every contract column is served as stored: nothing hidden, denied, masked or granted on
    /// some rows only.
    pub all_columns_plain: bool,
    /// Nothing the policies evaluate (row filter, custom masks, per-column grant filters) can
    /// fail on a row: user predicates may then cross the barrier ([`LeakproofPushdown`]).
    ///
    /// [`LeakproofPushdown`]: super::LeakproofPushdown
    pub leakproof: bool,
    /// Whom to ask about the product.
    pub contact: Option<String>,
}

impl AppliedPolicy {
    /// No policy restricts what the principal reads: no row filter, every column as stored. An
    /// error raised under such a barrier can only show what the principal may read anyway.
    pub fn unrestricted(&self) -> bool {
        !self.row_filter && self.all_columns_plain
    }

    /// The rules applied, for people: `row filter 'a', 'b'; masks email ('c')`.
    pub fn summary(&self) -> String {
        let quote = |v: &[String]| v.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if self.row_filter {
            parts.push(format!("row filter {}", quote(&self.row_filter_rules)));
        }
        if !self.masks.is_empty() {
            let masks: Vec<String> = self.masks.iter().map(|(c, r)| format!("{c} ('{r}')")).collect();
            parts.push(format!("masks {}", masks.join(", ")));
        }
        if !self.partial_columns.is_empty() {
            let cols: Vec<String> = self
                .partial_columns
                .iter()
                .map(|(c, rules)| format!("{c} ({})", quote(rules)))
                .collect();
            parts.push(format!("on the rows of their grants only: {}", cols.join(", ")));
        }
        if parts.is_empty() {
            "no row filter or mask".into()
        } else {
            parts.join("; ")
        }
    }

    /// What was evaluated when an error rose under the barrier, for [`PolicyEvaluationFailed`].
    ///
    /// [`PolicyEvaluationFailed`]: crate::error::PolicyEvaluationFailed
    pub(super) fn evaluated(&self) -> String {
        if self.row_filter || !self.masks.is_empty() {
            format!(
                "applying its access policies ({}) or reading its stored data",
                self.summary()
            )
        } else {
            "reading its stored data under its access policies".into()
        }
    }
}

impl UserDefinedLogicalNodeCore for PolicyBarrier {
    fn name(&self) -> &str {
        "PolicyBarrier"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.input.schema().fields().iter().map(|f| f.name().clone()).collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PolicyBarrier: {}", self.table)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> DFResult<Self> {
        if inputs.len() != 1 {
            return plan_err!("PolicyBarrier takes one input");
        }
        Ok(PolicyBarrier {
            table: self.table.clone(),
            computed: self.computed.clone(),
            row_filter_terms: self.row_filter_terms,
            applied: self.applied.clone(),
            input: inputs.swap_remove(0),
        })
    }

    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }
}

/// The barrier `plan` is, if it is one.
pub fn as_barrier(plan: &LogicalPlan) -> Option<&PolicyBarrier> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<PolicyBarrier>(),
        _ => None,
    }
}

/// The plan as a principal who is not an administrator may see it: every [`PolicyBarrier`]
/// with what is below it replaced by one line naming the product and the rules that shape it —
/// never the text of row filters and masks (they may hold other principals' values, keys' names
/// or the shape of hidden data), nor the files and partitions read.
pub fn without_policy_internals(plan: LogicalPlan) -> DFResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let Some(barrier) = as_barrier(&node) else {
            return Ok(Transformed::no(node));
        };
        let read = PolicyRead {
            table: barrier.table.clone(),
            applied: barrier.applied.clone(),
            schema: barrier.input.schema().clone(),
        };
        Ok(Transformed::yes(LogicalPlan::Extension(Extension {
            node: Arc::new(read),
        })))
    })
    .map(|t| t.data)
}

/// What [`without_policy_internals`] shows in place of a barrier: a leaf, for display only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PolicyRead {
    table: String,
    applied: Arc<AppliedPolicy>,
    schema: DFSchemaRef,
}

impl PartialOrd for PolicyRead {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (&self.table, &self.applied).partial_cmp(&(&other.table, &other.applied))
    }
}

impl UserDefinedLogicalNodeCore for PolicyRead {
    fn name(&self) -> &str {
        "PolicyBarrier"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(
            f,
            "PolicyBarrier: {} ({}), columns [{}]",
            self.table,
            self.applied.summary(),
            columns.join(", ")
        )
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> DFResult<Self> {
        Ok(self.clone())
    }
}
