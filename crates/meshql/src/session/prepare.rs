//! Statement preparation: what a statement must be to be planned (a query, naming its domain
//! when there is no current domain), `?` placeholders numbered, and EXPLAIN for principals who
//! are not administrators.

use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{col, lit, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::parser::{ExplainStatement, Statement};
use meshql_policy::enforce::without_policy_internals;
use meshql_policy::PolicyCheck;

use crate::Error;

/// EXPLAIN for a principal who is not an administrator: the optimised logical plan with every
/// product's policies shown by rule name ([`without_policy_internals`]) — not the text of its
/// row filters and masks, not the files and partitions read (physical plans are for
/// administrators, so `FORMAT TREE`, which shows only the physical plan, is refused).
pub(super) async fn explain_for_principal(
    state: &SessionState,
    explain: &ExplainStatement,
) -> Result<DataFrame, Error> {
    // Formats other than these were refused with the other non-queries.
    let render: fn(&LogicalPlan) -> String = match explain.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("pgjson") => |p| p.display_pg_json().to_string(),
        Some("graphviz") => |p| p.display_graphviz().to_string(),
        _ => |p| p.display_indent().to_string(),
    };
    let plan = state.statement_to_plan(explain.statement.as_ref().clone()).await?;
    PolicyCheck::check(&plan)?;
    let optimized = crate::bounded::while_folding(|| state.optimize(&plan))?;
    let shown = without_policy_internals(optimized)?;
    let rows = LogicalPlanBuilder::values(vec![vec![lit("logical_plan"), lit(render(&shown))]])?
        .project(vec![col("column1").alias("plan_type"), col("column2").alias("plan")])?
        .build()?;
    Ok(DataFrame::new(state.clone(), rows))
}

/// Refuses a statement naming a table without its domain when no current domain is chosen
/// (table functions such as `generate_series` are not tables). DataFusion would look it up in
/// its default schema and report that schema, which is not a domain.
pub(super) fn needs_no_current_domain(state: &SessionState, statement: &Statement) -> Result<(), Error> {
    for reference in state.resolve_table_references(statement)? {
        if let TableReference::Bare { table } = &reference {
            if !state.table_functions().contains_key(table.as_ref()) {
                return Err(Error::DataFusion(DataFusionError::Plan(format!(
                    "table '{table}' not found: name it with its domain (`<domain>.{table}` or \
                     `mesh.<domain>.{table}`), or choose a current domain (the session option `schema`)"
                ))));
            }
        }
    }
    Ok(())
}

/// JDBC and ODBC write parameters as `?`; DataFusion numbers them `$1`, `$2`, …. Each `?` becomes
/// the next number, in the order they appear.
pub(super) fn number_placeholders(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr, Value};
    use std::ops::ControlFlow;
    let Statement::Statement(s) = statement else {
        return;
    };
    let mut n = 0;
    let _ = visit_expressions_mut(s.as_mut(), |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &mut v.value {
                if p == "?" {
                    n += 1;
                    *p = format!("${n}");
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

pub(super) fn refuse_non_queries(statement: &Statement, admin: bool) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    if let Statement::Explain(e) = statement {
        if (e.analyze || e.verbose) && !admin {
            return Err(Error::NotAllowed(
                "EXPLAIN ANALYZE and EXPLAIN VERBOSE are for administrators: their metrics and plans describe rows and files your access policies hide".into(),
            ));
        }
        let format = e.format.as_deref().map(str::to_ascii_lowercase);
        if !admin && !matches!(format.as_deref(), None | Some("indent" | "pgjson" | "graphviz")) {
            return Err(Error::NotAllowed(format!(
                "EXPLAIN FORMAT {} shows the physical plan, which is for administrators (it names files and partitions your access policies may hide); use EXPLAIN or EXPLAIN FORMAT indent, pgjson or graphviz",
                format.unwrap_or_default()
            )));
        }
    }
    let allowed = match statement {
        Statement::Statement(s) => match s.as_ref() {
            Sql::Query(q) => !writes_a_table(q),
            Sql::ShowTables { .. } | Sql::ShowColumns { .. } | Sql::ExplainTable { .. } => true,
            _ => false,
        },
        Statement::Explain(e) => {
            matches!(e.statement.as_ref(), Statement::Statement(s) if matches!(s.as_ref(), Sql::Query(q) if !writes_a_table(q)))
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::NotAllowed(format!(
            "only queries are allowed: meshql serves the mesh read-only and its tables are defined by contracts (refused: {})",
            first_words(&statement.to_string())
        )))
    }
}

/// Whether a query creates a table (`SELECT … INTO t`), anywhere in it: in a set operation, a
/// CTE or a subquery.
fn writes_a_table(query: &datafusion::sql::sqlparser::ast::Query) -> bool {
    use datafusion::sql::sqlparser::ast::{Query, SetExpr, Visit, Visitor};
    use std::ops::ControlFlow;
    struct Into;
    impl Visitor for Into {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            fn has_into(body: &SetExpr) -> bool {
                match body {
                    SetExpr::Select(s) => s.into.is_some(),
                    SetExpr::SetOperation { left, right, .. } => has_into(left) || has_into(right),
                    SetExpr::Query(q) => has_into(&q.body),
                    _ => false,
                }
            }
            if has_into(&query.body) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    query.visit(&mut Into).is_break()
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
