//! Sessions: a principal's SQL over the mesh.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use meshql_catalog::MESH_CATALOG;
use meshql_policy::enforce::{analyzer_rules, optimizer_rules, GovernedQueryPlanner};
use meshql_policy::{PolicyCheck, Principal};

use crate::governed::{refusal_message, Governance, GovernedCatalog};
use crate::{Error, Mesh};

/// A principal's session on a mesh. Create one per user connection; it is cheap.
#[derive(Clone)]
pub struct Session {
    mesh: Mesh,
    principal: Arc<Principal>,
    admin: bool,
    governance: Arc<Governance>,
    ctx: SessionContext,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal.id())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(mesh: Mesh, principal: Principal) -> Self {
        let principal = Arc::new(principal);
        let admin = mesh.policies().is_admin(&principal);
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(MESH_CATALOG, "public");
        // Physical plans name files and partitions, including ones the row filter hides.
        config.options_mut().explain.logical_plan_only = !admin;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(mesh.runtime().clone())
            .with_default_features()
            .with_analyzer_rules(analyzer_rules())
            .with_optimizer_rules(optimizer_rules())
            .with_query_planner(Arc::new(GovernedQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let governance = Arc::new(Governance::new(
            mesh.catalog().clone(),
            mesh.policies().clone(),
            principal.clone(),
        ));
        // The only catalog of the session: the mesh as this principal may see it.
        ctx.register_catalog(MESH_CATALOG, Arc::new(GovernedCatalog::new(governance.clone())));
        Session {
            mesh,
            principal,
            admin,
            governance,
            ctx,
        }
    }

    /// Whether the principal has the administrator role (EXPLAIN ANALYZE, physical plans).
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The domains in which the principal may discover at least one product.
    pub fn domains(&self) -> Vec<String> {
        let mut names = self.catalog().map(|c| c.schema_names()).unwrap_or_default();
        names.sort();
        names
    }

    /// The products of `domain` the principal may discover.
    pub fn products(&self, domain: &str) -> Vec<String> {
        let mut names = self
            .catalog()
            .and_then(|c| c.schema(domain))
            .map(|s| s.table_names())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The schema of `domain.name` as the principal would read it (after masks, without hidden
    /// columns). A product whose storage cannot be opened is described from its contract, so
    /// listings never fail because of one broken product. `None` if it may not be discovered.
    pub async fn product_schema(&self, domain: &str, name: &str) -> Option<SchemaRef> {
        let schema = self.catalog()?.schema(domain)?;
        match schema.table(name).await {
            Ok(Some(table)) => Some(table.schema()),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(product = %format!("{domain}.{name}"), error = %e, "described from its contract");
                self.governance.contract_view(domain, name)
            }
        }
    }

    /// Whether the principal may discover column `column` of `domain.name`.
    pub fn column_visible(&self, domain: &str, name: &str, column: &str) -> bool {
        self.governance
            .decision(domain, name)
            .is_some_and(|d| d.discover && !d.hidden.contains(column))
    }

    fn catalog(&self) -> Option<Arc<dyn datafusion::catalog::CatalogProvider>> {
        self.ctx.catalog(MESH_CATALOG)
    }

    /// Plans `sql`. Nothing is read until the result is collected or streamed.
    ///
    /// Only queries (including `EXPLAIN`, `SHOW`, `DESCRIBE`) are accepted: the mesh is defined
    /// by contracts, not by DDL, and nothing is written through meshql. A query that touches a
    /// product that cannot be served fails here, naming the product, the reason and whom to ask.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, Error> {
        self.sql_in(sql, None).await
    }

    /// Like [`Session::sql`], with unqualified table names resolved in domain `default_schema`
    /// (a client's current schema) instead of the session default.
    pub async fn sql_in(&self, sql: &str, default_schema: Option<&str>) -> Result<QueryResult, Error> {
        let mut state = self.ctx.state();
        if let Some(schema) = default_schema {
            state.config_mut().options_mut().catalog.default_schema = schema.to_string();
        }
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, &dialect)?;
        number_placeholders(&mut statement);
        refuse_non_queries(&statement, self.admin)?;
        self.ensure_readable(&state, &statement).await?;
        let plan = state.statement_to_plan(statement).await?;
        // Refuse now, before anything is read, rather than when the result is pulled.
        PolicyCheck::check(&plan)?;
        let df = self.ctx.execute_logical_plan(plan).await?;
        Ok(QueryResult { df })
    }

    /// Every mesh product the statement names must be readable by the principal and servable;
    /// otherwise fail with the reason and whom to ask. Products the principal may not discover
    /// are left to the planner, which does not find them.
    async fn ensure_readable(&self, state: &SessionState, statement: &Statement) -> Result<(), Error> {
        let defaults = &state.config().options().catalog;
        let mut seen = BTreeSet::new();
        for reference in state.resolve_table_references(statement)? {
            let resolved = reference.resolve(&defaults.default_catalog, &defaults.default_schema);
            if resolved.catalog.as_ref() != MESH_CATALOG || !seen.insert(resolved.to_string()) {
                continue;
            }
            let Some(decision) = self.governance.decision(&resolved.schema, &resolved.table) else {
                continue;
            };
            if !decision.discover {
                continue;
            }
            if let Err(refusal) = &decision.select {
                if let Some(p) = self.mesh.catalog().product(&resolved.schema, &resolved.table) {
                    return Err(Error::AccessDenied(refusal_message(
                        p.entry(),
                        &self.principal,
                        &refusal.to_string(),
                    )));
                }
            }
            self.mesh.catalog().open(&resolved.schema, &resolved.table).await?;
        }
        Ok(())
    }
}

/// JDBC and ODBC write parameters as `?`; DataFusion numbers them `$1`, `$2`, …. Each `?` becomes
/// the next number, in the order they appear.
fn number_placeholders(statement: &mut Statement) {
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

fn refuse_non_queries(statement: &Statement, admin: bool) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    if let Statement::Explain(e) = statement {
        if (e.analyze || e.verbose) && !admin {
            return Err(Error::NotAllowed(
                "EXPLAIN ANALYZE and EXPLAIN VERBOSE are for administrators: their metrics and plans describe rows and files your access policies hide".into(),
            ));
        }
    }
    let allowed = match statement {
        Statement::Statement(s) => matches!(
            s.as_ref(),
            Sql::Query(_) | Sql::ShowTables { .. } | Sql::ShowColumns { .. } | Sql::ExplainTable { .. }
        ),
        Statement::Explain(e) => {
            matches!(e.statement.as_ref(), Statement::Statement(s) if matches!(s.as_ref(), Sql::Query(_)))
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

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A planned query.
pub struct QueryResult {
    df: DataFrame,
}

impl QueryResult {
    /// The schema of the result.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.df.schema().as_arrow().clone())
    }

    /// The logical plan that will run.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.df.logical_plan()
    }

    /// The plan after DataFusion's and meshql's optimiser rules: what would run. Fails if the
    /// query reads a column the principal may not read.
    pub fn into_optimized_plan(self) -> Result<LogicalPlan, Error> {
        Ok(self.df.into_optimized_plan()?)
    }

    /// Runs the query and gathers every batch.
    pub async fn collect(self) -> Result<Vec<RecordBatch>, Error> {
        Ok(self.df.collect().await?)
    }

    /// Runs the query as a stream of batches; dropping the stream stops it.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, Error> {
        Ok(self.df.execute_stream().await?)
    }

    /// Runs the query as a stream whose operators may hold at most `memory_limit` bytes
    /// (sorts, joins and aggregations fail with "resources exhausted" beyond it). The limit is
    /// this query's own: other queries of the mesh do not count against it.
    pub async fn stream_with_memory_limit(self, memory_limit: usize) -> Result<SendableRecordBatchStream, Error> {
        let (state, plan) = self.df.into_parts();
        let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(memory_limit)))
            .build_arc()?;
        let physical = state.create_physical_plan(&plan).await?;
        let task = TaskContext::from(&state).with_runtime(runtime);
        Ok(execute_stream(physical, Arc::new(task))?)
    }

    /// The query's placeholders (`$1`, `?`) in order, with the type the planner inferred for
    /// each (`None` when the context does not say).
    pub fn parameters(&self) -> Result<Vec<(String, Option<DataType>)>, Error> {
        let mut params: Vec<_> = self.df.logical_plan().get_parameter_types()?.into_iter().collect();
        // `$10` after `$9`: order by the number, not the text.
        params.sort_by_key(|(name, _)| {
            (
                name.trim_start_matches('$').parse::<u64>().unwrap_or(u64::MAX),
                name.clone(),
            )
        });
        Ok(params)
    }

    /// Binds positional parameter values (`$1` is the first).
    pub fn with_params(self, values: Vec<ScalarValue>) -> Result<QueryResult, Error> {
        Ok(QueryResult {
            df: self
                .df
                .with_param_values(ParamValues::List(values.into_iter().map(Into::into).collect()))?,
        })
    }
}
