//! Leak-proof predicates: which expressions may run on rows the row filter removes, and the
//! optimiser rule that moves them inside a [`PolicyBarrier`] so that pruning keeps working.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result as DFResult};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Extension, Filter, LogicalPlan, Operator};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::barrier::{as_barrier, PolicyBarrier};

/// Moves the leak-proof conjuncts of a filter sitting on a [`PolicyBarrier`] inside it, where
/// DataFusion's filter pushdown takes them to the scan for pruning. Everything else stays above
/// and runs only on rows the row filter kept.
#[derive(Debug, Default)]
pub struct LeakproofPushdown;

impl OptimizerRule for LeakproofPushdown {
    fn name(&self) -> &str {
        "meshql_leakproof_pushdown"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DFResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(barrier) = as_barrier(&filter.input) else {
            return Ok(Transformed::no(plan));
        };
        if !barrier.applied.leakproof {
            // A policy expression that can fail must fail on every row it is evaluated on, not
            // on the rows a user predicate selects (that would answer yes/no about hidden rows).
            return Ok(Transformed::no(plan));
        }
        let schema = barrier.input.schema();
        let plain = plain_columns(&barrier.input);
        let (inside, above): (Vec<&Expr>, Vec<&Expr>) =
            split_conjunction(&filter.predicate).into_iter().partition(|e| {
                is_leakproof(e, schema)
                    && e.column_refs()
                        .iter()
                        .all(|c| plain.contains(*c) && !barrier.computed.contains(&c.name))
            });
        if inside.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let Some(inside) = conjunction(inside.into_iter().cloned()) else {
            return Ok(Transformed::no(plan));
        };
        let inner = LogicalPlan::Filter(Filter::try_new(inside, Arc::new(barrier.input.clone()))?);
        let moved = LogicalPlan::Extension(Extension {
            node: Arc::new(PolicyBarrier {
                table: barrier.table.clone(),
                computed: barrier.computed.clone(),
                row_filter_terms: barrier.row_filter_terms,
                applied: barrier.applied.clone(),
                input: inner,
            }),
        });
        let out = match conjunction(above.into_iter().cloned()) {
            Some(rest) => LogicalPlan::Filter(Filter::try_new(rest, Arc::new(moved))?),
            None => moved,
        };
        Ok(Transformed::yes(out))
    }
}

/// Output columns of a barrier's input that are stored values (or leak-proof functions of them),
/// not masks or markers.
fn plain_columns(input: &LogicalPlan) -> HashSet<Column> {
    let mut node = input;
    loop {
        match node {
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::Projection(p) => {
                // Stored columns, possibly through a cast that cannot fail (the contract view);
                // mask functions and denied-column markers are not leak-proof.
                return p
                    .expr
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| is_leakproof(e, p.input.schema()))
                    .map(|(i, _)| Column::from(p.schema.qualified_field(i)))
                    .collect();
            }
            other => return other.schema().columns().into_iter().collect(),
        }
    }
}

/// Whether evaluating `e` on any row can neither fail nor have an effect: only then may it run
/// on rows the row filter removes.
pub fn is_leakproof(e: &Expr, schema: &DFSchema) -> bool {
    use Operator::*;
    let literal = |e: &Expr| matches!(e, Expr::Literal(..));
    if is_constant(e) {
        // Evaluated once, whatever the rows (`CAST('2024-03-20' AS DATE)`): its failure, if
        // any, says nothing about them.
        return true;
    }
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::Alias(a) => is_leakproof(&a.expr, schema),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(
                op,
                Eq | NotEq | Lt | LtEq | Gt | GtEq | IsDistinctFrom | IsNotDistinctFrom | And | Or
            ) && is_leakproof(left, schema)
                && is_leakproof(right, schema)
        }
        Expr::Not(x)
        | Expr::IsNull(x)
        | Expr::IsNotNull(x)
        | Expr::IsTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNotFalse(x)
        | Expr::IsNotUnknown(x) => is_leakproof(x, schema),
        Expr::InList(l) => is_leakproof(&l.expr, schema) && l.list.iter().all(literal),
        Expr::Between(b) => is_leakproof(&b.expr, schema) && literal(&b.low) && literal(&b.high),
        Expr::Like(l) => is_leakproof(&l.expr, schema) && literal(&l.pattern),
        Expr::TryCast(c) => is_leakproof(&c.expr, schema),
        Expr::Cast(c) => {
            is_leakproof(&c.expr, schema)
                && c.expr
                    .get_type(schema)
                    .is_ok_and(|from| cast_cannot_fail(&from, &c.data_type))
        }
        _ => false,
    }
}

/// Whether `e` reads no row: no column, no subquery (literals, parameters, functions of them).
fn is_constant(e: &Expr) -> bool {
    let mut constant = true;
    let _ = e.apply(|x| {
        if matches!(
            x,
            Expr::Column(_)
                | Expr::OuterReferenceColumn(..)
                | Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
        ) {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    constant
}

/// Casts that succeed for every value of `from`.
fn cast_cannot_fail(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let int_digits = |t: &DataType| match t {
        Int8 | UInt8 => Some(3),
        Int16 | UInt16 => Some(5),
        Int32 | UInt32 => Some(10),
        Int64 => Some(19),
        UInt64 => Some(20),
        _ => None,
    };
    if from == to {
        return true;
    }
    match (from, to) {
        (Binary | LargeBinary | BinaryView | FixedSizeBinary(_), _) => false,
        (_, Utf8 | LargeUtf8 | Utf8View) => true,
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
        (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64) => true,
        (UInt16, UInt32 | UInt64 | Int32 | Int64) | (UInt32, UInt64 | Int64) => true,
        (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32, Float64) => true,
        (Int8 | Int16 | UInt8 | UInt16, Float32) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16),
        (f, Decimal128(p, s)) => int_digits(f).is_some_and(|d| (*p as i16 - *s as i16) >= d),
        (Dictionary(_, v), t) => v.as_ref() == t,
        _ => false,
    }
}
