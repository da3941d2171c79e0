//! Sessions: a principal's SQL over the mesh.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
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

    /// Plans `sql`. Nothing is read until the result is collected or streamed.
    ///
    /// Only queries (including `EXPLAIN`, `SHOW`, `DESCRIBE`) are accepted: the mesh is defined
    /// by contracts, not by DDL, and nothing is written through meshql. A query that touches a
    /// product that cannot be served fails here, naming the product, the reason and whom to ask.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, Error> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
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
}
