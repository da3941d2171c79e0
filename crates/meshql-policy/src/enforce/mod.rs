//! Plan-time enforcement.
//!
//! A principal's session never sees a product's storage directly. It sees a [`GovernedTable`]
//! whose plan is
//!
//! ```text
//! PolicyBarrier: mesh.<domain>.<product>
//!   Projection: <masks; denied columns as access_denied(..); hidden columns left out>
//!     Filter: (<grant filter> OR <grant filter> …) AND <restriction> AND …
//!       <the contract view over the storage scan>
//! ```
//!
//! DataFusion inlines that plan wherever the table is named (FROM, JOIN, subqueries, CTEs), so
//! user expressions see only filtered rows and masked values. The [`PolicyBarrier`] stops the
//! optimiser from moving user predicates below the row filter, where they would run on hidden
//! rows and could leak them through errors (division by zero, failing casts) — except predicates
//! that are leak-proof (comparisons of columns with literals, IS NULL, IN lists, …), which
//! [`LeakproofPushdown`] moves inside so partition and row-group pruning keep working.
//! Physically the barrier is [`PolicyBarrierExec`], a pass-through that accepts no filter from
//! above. [`PolicyCheck`] refuses, before any I/O, a plan that reads a product the principal
//! may not read or that reaches storage outside a barrier; [`DeniedColumnCheck`] refuses an
//! optimised plan that still reads a denied column.
//!
//! The code follows the plan's layers:
//! - `expr`: policy expressions (row filters, custom masks), the principal's values as literals;
//! - `plan`: the governed plan of a product for a principal, its scans guarded;
//! - `table`: the table a principal's catalog holds for a product, and self-governed tables;
//! - `barrier`: the logical barrier node, and what non-administrators' EXPLAIN shows instead;
//! - `barrier_exec`: the barrier's physical operator, its error guard and its planner;
//! - `pushdown`: which predicates are leak-proof, and the rule moving them inside the barrier;
//! - `checks`: the rules refusing ungoverned plans, and the rule lists sessions install.

mod barrier;
mod barrier_exec;
mod checks;
mod expr;
mod plan;
mod pushdown;
mod table;
#[cfg(test)]
mod tests;

pub use barrier::{as_barrier, without_policy_internals, AppliedPolicy, PolicyBarrier};
pub use barrier_exec::{GovernedQueryPlanner, PolicyBarrierExec};
pub use checks::{analyzer_rules, optimizer_rules, DeniedColumnCheck, PolicyCheck};
pub use expr::{parse_policy_expr, PolicyExprError};
pub use plan::governed_plan;
pub use pushdown::{is_leakproof, LeakproofPushdown};
pub use table::{GovernedTable, SelfGovernedTable};
