//! Sessions: a principal's SQL over the mesh.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{col, lit, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{displayable, execute_stream, ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{ExplainStatement, Statement};
use futures::{StreamExt, TryStreamExt};
use meshql_catalog::{AsOf, MESH_CATALOG};
use meshql_contract::mesh::RESERVED_SCHEMA;
use meshql_policy::enforce::{
    analyzer_rules, as_barrier, optimizer_rules, without_policy_internals, GovernedQueryPlanner,
};
use meshql_policy::{ColumnAccess, PolicyCheck, Principal};
use sha2::{Digest, Sha256};

use crate::audit::{AuditLog, AuditRecord};
use crate::error::ErrorClass;
use crate::governed::{refusal_message, refusal_reason, AccessView, GovernedCatalog};
use crate::limits::{engine_fault, isolated};
use crate::memory::QueryPool;
use crate::redact::Redactor;
use crate::system::SystemSchema;
use crate::{Error, Mesh, Snapshot};

/// A principal's session on a mesh. Create one per user connection; it is cheap.
///
/// A session follows the mesh: after a reload its next statement sees the new contracts and
/// policies (a revoked grant stops working at once, not at the next login).
#[derive(Clone)]
pub struct Session {
    mesh: Mesh,
    principal: Arc<Principal>,
    client: Arc<str>,
    bound: Arc<Mutex<Arc<Bound>>>,
}

/// The session bound to one version of the mesh.
struct Bound {
    generation: u64,
    snapshot: Arc<Snapshot>,
    admin: bool,
    governance: Arc<AccessView>,
    ctx: SessionContext,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal.id())
            .finish()
    }
}

/// Options of one statement.
#[derive(Debug, Clone, Default)]
pub struct SqlOptions {
    /// Unqualified table names resolve in this domain (a client's current schema).
    pub default_schema: Option<String>,
    /// The id the audit trail records (a server's query id); generated when absent.
    pub query_id: Option<String>,
}

/// Every session's DataFusion configuration: DataFusion's defaults, then the mesh's `engine:`
/// options, then what meshql relies on, which `engine:` cannot change: the `mesh` catalog only,
/// information_schema, and optimizer rules that fail stop the query (meshql's denied-column
/// check is an optimizer rule: skipping it on error would fail open).
pub(crate) fn session_config(settings: &meshql_contract::MeshSettings) -> Result<SessionConfig, Error> {
    let mut config = SessionConfig::new();
    for (key, value) in &settings.engine {
        config
            .options_mut()
            .set(key, &value.as_text())
            .map_err(|e| Error::EngineOption {
                key: key.clone(),
                reason: e.strip_backtrace().to_string(),
            })?;
    }
    config.options_mut().optimizer.skip_failed_rules = false;
    Ok(config
        .with_information_schema(true)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(MESH_CATALOG, crate::governed::NO_DOMAIN))
}

impl Bound {
    fn new(mesh: &Mesh, snapshot: Arc<Snapshot>, principal: &Arc<Principal>) -> Self {
        let admin = snapshot.policies.is_admin(principal);
        let mut config = snapshot.config.clone();
        // Physical plans name files and partitions, including ones the row filter hides.
        config.options_mut().explain.logical_plan_only = !admin;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(mesh.runtime().clone())
            .with_default_features()
            .with_analyzer_rules({
                let mut rules = analyzer_rules();
                rules.push(Arc::new(crate::checked::CheckedArithmetic));
                rules.push(Arc::new(crate::bounded::BoundFunctions));
                rules
            })
            .with_optimizer_rules({
                let mut rules = optimizer_rules();
                rules.push(Arc::new(crate::bounded::SizedLiterals));
                rules
            })
            .with_query_planner(Arc::new(GovernedQueryPlanner))
            .with_physical_optimizer_rule(Arc::new(crate::compact::CompactBuildSides))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udaf(crate::checked::CheckedSum::udaf());
        ctx.register_udaf(crate::checked::CheckedAvg::udaf());
        for f in crate::bounded::CappedAggregate::udafs() {
            ctx.register_udaf(f);
        }
        for (name, f) in crate::bounded::CheckedSeries::all() {
            ctx.register_udtf(name, f);
        }
        let governance = Arc::new(AccessView::new(
            snapshot.catalog.clone(),
            snapshot.policies.clone(),
            principal.clone(),
        ));
        let system = Arc::new(SystemSchema::new(mesh.clone(), governance.clone(), admin));
        // The only catalog of the session: the mesh as this principal may see it.
        ctx.register_catalog(MESH_CATALOG, Arc::new(GovernedCatalog::new(governance.clone(), system)));
        Bound {
            generation: snapshot.generation,
            snapshot,
            admin,
            governance,
            ctx,
        }
    }
}

impl Session {
    pub(crate) fn new(mesh: Mesh, principal: Principal) -> Self {
        let principal = Arc::new(principal);
        let bound = Bound::new(&mesh, mesh.snapshot(), &principal);
        Session {
            mesh,
            principal,
            client: Arc::from("embedded"),
            bound: Arc::new(Mutex::new(Arc::new(bound))),
        }
    }

    /// The same session, recorded in the audit trail as coming from `client` (`cli`, `flight`, …).
    pub fn with_client(mut self, client: &str) -> Self {
        self.client = Arc::from(client);
        self
    }

    /// The session on the mesh's current version (re-bound after a reload).
    fn bound(&self) -> Arc<Bound> {
        let snapshot = self.mesh.snapshot();
        let mut bound = match self.bound.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if bound.generation != snapshot.generation {
            *bound = Arc::new(Bound::new(&self.mesh, snapshot, &self.principal));
        }
        bound.clone()
    }

    /// Whether the principal has the administrator role (EXPLAIN ANALYZE, physical plans).
    pub fn is_admin(&self) -> bool {
        self.bound().admin
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The mesh definition this session currently sees.
    pub fn definition(&self) -> Arc<meshql_contract::MeshDefinition> {
        self.bound().snapshot.catalog.definition().clone()
    }

    /// The domains in which the principal may discover at least one product.
    pub fn domains(&self) -> Vec<String> {
        let mut names = Self::catalog(&self.bound())
            .map(|c| c.schema_names())
            .unwrap_or_default();
        names.retain(|n| n != RESERVED_SCHEMA);
        names.sort();
        names
    }

    /// The products of `domain` the principal may discover.
    pub fn products(&self, domain: &str) -> Vec<String> {
        if domain == RESERVED_SCHEMA {
            return Vec::new();
        }
        let mut names = Self::catalog(&self.bound())
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
        let bound = self.bound();
        let schema = Self::catalog(&bound)?.schema(domain)?;
        match schema.table(name).await {
            Ok(Some(table)) => Some(table.schema()),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(product = %format!("{domain}.{name}"), error = %e, "described from its contract");
                bound.governance.contract_view(domain, name)
            }
        }
    }

    /// Whether the principal may discover column `column` of `domain.name`.
    pub fn column_visible(&self, domain: &str, name: &str, column: &str) -> bool {
        self.bound()
            .governance
            .decision(domain, name)
            .is_some_and(|d| d.discover && !d.hidden.contains(column))
    }

    fn catalog(bound: &Bound) -> Option<Arc<dyn datafusion::catalog::CatalogProvider>> {
        bound.ctx.catalog(MESH_CATALOG)
    }

    /// Plans `sql`. Nothing is read until the result is collected or streamed.
    ///
    /// Only queries (including `EXPLAIN`, `SHOW`, `DESCRIBE`) are accepted: the mesh is defined
    /// by contracts, not by DDL, and nothing is written through meshql. A query that touches a
    /// product that cannot be served fails here, naming the product, the reason and whom to ask.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, Error> {
        self.sql_with(sql, &SqlOptions::default()).await
    }

    /// Like [`Session::sql`], with unqualified table names resolved in domain `default_schema`
    /// (a client's current schema) instead of the session default.
    pub async fn sql_in(&self, sql: &str, default_schema: Option<&str>) -> Result<QueryResult, Error> {
        let options = SqlOptions {
            default_schema: default_schema.map(str::to_string),
            query_id: None,
        };
        self.sql_with(sql, &options).await
    }

    /// Plans `sql` with `options`. A statement that fails here is recorded in the audit trail
    /// at once (`denied` or `error`); one that runs is recorded when its result ends.
    pub async fn sql_with(&self, sql: &str, options: &SqlOptions) -> Result<QueryResult, Error> {
        let bound = self.bound();
        let started = Instant::now();
        let mut audit = self.mesh.audit().map(|log| {
            let record = AuditRecord {
                query_id: options.query_id.clone().unwrap_or_else(new_query_id),
                started_ms: crate::time::now_ms(),
                principal: self.principal.id().to_string(),
                groups: self.principal.groups().iter().cloned().collect(),
                client: self.client.to_string(),
                statement: crate::audit::bounded(sql, crate::audit::MAX_RECORDED_STATEMENT),
                ..Default::default()
            };
            Pending {
                log: log.clone(),
                record,
                started,
                governance: bound.governance.clone(),
            }
        });
        let redactor = Redactor::new(bound.governance.clone(), bound.admin, sql);
        let mut products = Vec::new();
        let planned = match crate::limits::check_statement(sql) {
            Ok(()) => isolated(self.plan(&bound, sql, options.default_schema.as_deref(), &mut products)).await,
            Err(e) => Err(e),
        };
        let warnings = warnings_for(&bound, &products);
        for w in &warnings {
            tracing::warn!(principal = %self.principal.id(), warning = %w, "query warning");
        }
        if let Some(p) = audit.as_mut() {
            p.record.products = products.clone();
            p.record.warnings = warnings.clone();
        }
        match planned {
            Ok(df) => Ok(QueryResult {
                df,
                audit,
                warnings,
                redactor,
            }),
            Err(e) => {
                let e = redactor.error(e);
                if let Some(p) = audit {
                    p.fail(&e);
                }
                Err(e)
            }
        }
    }

    /// Records in the audit trail, now, that the query `query_id` (statement `sql`) failed with
    /// `error` while its planning or execution may still be going on (a server answered its
    /// client at the query's deadline). What the query's work would record when it ends is not
    /// written: this is the query's record.
    pub fn audit_settled(&self, sql: &str, query_id: &str, error: &str) {
        let Some(log) = self.mesh.audit() else {
            return;
        };
        let record = AuditRecord {
            query_id: query_id.to_string(),
            started_ms: crate::time::now_ms(),
            principal: self.principal.id().to_string(),
            groups: self.principal.groups().iter().cloned().collect(),
            client: self.client.to_string(),
            statement: crate::audit::bounded(sql, crate::audit::MAX_RECORDED_STATEMENT),
            outcome: "error".to_string(),
            error: Some(crate::audit::bounded(error, crate::audit::MAX_RECORDED_ERROR)),
            ..Default::default()
        };
        if let Err(w) = log.settle_early(&record) {
            tracing::error!(error = %w, "audit record not written");
        }
    }

    async fn plan(
        &self,
        bound: &Bound,
        sql: &str,
        default_schema: Option<&str>,
        products: &mut Vec<String>,
    ) -> Result<DataFrame, Error> {
        let mut state = bound.ctx.state();
        if let Some(schema) = default_schema {
            state.config_mut().options_mut().catalog.default_schema = schema.to_string();
        }
        let dialect = state.config().options().sql_parser.dialect;
        let sql = crate::time_travel::rewrite(sql)?;
        let mut statement = state.sql_to_statement(&sql, &dialect)?;
        number_placeholders(&mut statement);
        crate::sql_literals::rewrite(&mut statement)?;
        refuse_non_queries(&statement, bound.admin)?;
        if default_schema.is_none() {
            needs_no_current_domain(&state, &statement)?;
        }
        self.ensure_readable(bound, &state, &statement, products).await?;
        if let (Statement::Explain(explain), false) = (&statement, bound.admin) {
            return explain_for_principal(&state, explain).await;
        }
        let plan = state.statement_to_plan(statement).await?;
        // Refuse now, before anything is read, rather than when the result is pulled.
        PolicyCheck::check(&plan)?;
        Ok(bound.ctx.execute_logical_plan(plan).await?)
    }

    /// Every mesh product the statement names must be readable by the principal and servable;
    /// otherwise fail with the reason and whom to ask. Products the principal may not discover
    /// are left to the planner, which does not find them. `products` receives the products
    /// named (those the principal may discover).
    async fn ensure_readable(
        &self,
        bound: &Bound,
        state: &SessionState,
        statement: &Statement,
        products: &mut Vec<String>,
    ) -> Result<(), Error> {
        use datafusion::sql::sqlparser::ast::Statement as Sql;
        // DESCRIBE and SHOW COLUMNS read the schema only, which `discover` allows.
        let schema_only = matches!(statement, Statement::Statement(s)
            if matches!(s.as_ref(), Sql::ExplainTable { .. } | Sql::ShowColumns { .. }));
        let defaults = &state.config().options().catalog;
        let mut seen = BTreeSet::new();
        let catalog = &bound.snapshot.catalog;
        for reference in state.resolve_table_references(statement)? {
            let resolved = reference.resolve(&defaults.default_catalog, &defaults.default_schema);
            if resolved.catalog.as_ref() != MESH_CATALOG || !seen.insert(resolved.to_string()) {
                continue;
            }
            // `product@version` (time travel) is the product under the same decision.
            let (table, as_of) = AsOf::split(&resolved.table).unwrap_or((&resolved.table, None));
            let Some(decision) = bound.governance.decision(&resolved.schema, table) else {
                continue;
            };
            if !decision.discover {
                continue;
            }
            products.push(format!("{}.{table}", resolved.schema));
            if schema_only {
                continue;
            }
            if let Err(refusal) = &decision.select {
                if let Some(p) = catalog.product(&resolved.schema, table) {
                    return Err(Error::AccessDenied(refusal_message(
                        p.entry(),
                        &self.principal,
                        &refusal_reason(refusal, bound.admin),
                    )));
                }
            }
            if as_of.is_some() {
                if let Some(refusal) = bound.governance.time_travel_refusal(&resolved.schema, table) {
                    return Err(Error::AccessDenied(refusal));
                }
            }
            catalog.open_at(&resolved.schema, table, as_of).await?;
        }
        Ok(())
    }
}

/// Deprecation and compliance warnings for the products a statement reads.
fn warnings_for(bound: &Bound, products: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in products {
        let Some((domain, name)) = p.split_once('.') else {
            continue;
        };
        if let Some(t) = bound.snapshot.catalog.product(domain, name) {
            out.extend(t.entry().compliance.warnings(&format!("mesh.{p}")));
        }
    }
    out
}

/// EXPLAIN for a principal who is not an administrator: the optimised logical plan with every
/// product's policies shown by rule name ([`without_policy_internals`]) — not the text of its
/// row filters and masks, not the files and partitions read (physical plans are for
/// administrators, so `FORMAT TREE`, which shows only the physical plan, is refused).
async fn explain_for_principal(state: &SessionState, explain: &ExplainStatement) -> Result<DataFrame, Error> {
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
fn needs_no_current_domain(state: &SessionState, statement: &Statement) -> Result<(), Error> {
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

/// The audit outcome of a failed statement: `denied` for policy refusals — whether raised before
/// planning or inside DataFusion (a denied column) — else `error`.
fn failure_outcome(e: &Error) -> &'static str {
    match e.class() {
        ErrorClass::AccessDenied => "denied",
        _ => "error",
    }
}

fn new_query_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}-{seq:x}", crate::time::now_ms(), std::process::id())
}

/// A statement's audit record, waiting for its end.
struct Pending {
    log: Arc<AuditLog>,
    record: AuditRecord,
    started: Instant,
    governance: Arc<AccessView>,
}

impl Pending {
    /// Notes what the optimised plan scans and which policies shape it.
    fn observe(&mut self, plan: &LogicalPlan) {
        let mut columns = BTreeSet::new();
        let mut products = BTreeSet::new();
        let _ = plan.apply_with_subqueries(|node| {
            // The columns the query reads are those it takes from each product's barrier: what
            // the principal sees. (The scans below also read what row filters and masks need;
            // naming those would tell the principal which columns, hidden ones included, its
            // policies look at.)
            if let Some(barrier) = as_barrier(node) {
                let product = barrier.table.strip_prefix("mesh.").unwrap_or(&barrier.table);
                for f in node.schema().fields() {
                    columns.insert(format!("{product}.{}", f.name()));
                }
            }
            if let LogicalPlan::TableScan(scan) = node {
                if let TableReference::Full { catalog, schema, table } = &scan.table_name {
                    if catalog.as_ref() == MESH_CATALOG && schema.as_ref() != RESERVED_SCHEMA {
                        products.insert(format!("{schema}.{table}"));
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let mut policies = BTreeSet::new();
        for p in products.iter().chain(self.record.products.iter()) {
            let Some((domain, name)) = p.split_once('.') else {
                continue;
            };
            let Some(decision) = self.governance.decision(domain, name) else {
                continue;
            };
            if let Ok(access) = &decision.select {
                policies.extend(access.grant_filters.iter().flatten().map(|f| f.rule.clone()));
                policies.extend(access.restrictions.iter().map(|f| f.rule.clone()));
                for (_, how) in &access.columns {
                    if let ColumnAccess::Masked { rule, .. } = how {
                        policies.insert(rule.clone());
                    }
                }
            }
        }
        for p in products {
            if !self.record.products.contains(&p) {
                self.record.products.push(p);
            }
        }
        self.record.columns = columns.into_iter().collect();
        self.record.policies = policies.into_iter().collect();
    }

    /// Records a statement that failed before returning rows.
    fn fail(self, e: &Error) {
        if let Err(w) = self.finish(failure_outcome(e), Some(e.to_string()), 0, 0) {
            tracing::error!(error = %w, "audit record not written");
        }
    }

    /// Records, durably, that the query's first rows are about to leave: a result is never
    /// delivered unless the trail holds a record of it.
    fn announce(&self) -> std::io::Result<()> {
        let mut record = self.record.clone();
        record.outcome = crate::audit::STARTED.to_string();
        record.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.log.append(&record)
    }

    fn finish(mut self, outcome: &str, error: Option<String>, rows: u64, bytes: u64) -> std::io::Result<()> {
        if self.log.take_settled(&self.record.query_id) {
            return Ok(());
        }
        self.record.outcome = outcome.to_string();
        // Last barrier: a credential a remote service echoed back never reaches the trail.
        self.record.error = error
            .map(|e| crate::audit::bounded(&meshql_catalog::secrets::redact(&e), crate::audit::MAX_RECORDED_ERROR));
        self.record.rows = rows;
        self.record.bytes = bytes;
        self.record.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.log.append(&self.record)
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

/// A planned query.
pub struct QueryResult {
    df: DataFrame,
    audit: Option<Pending>,
    warnings: Vec<String>,
    redactor: Redactor,
}

impl QueryResult {
    /// The schema of the result.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.df.schema().as_arrow().clone())
    }

    /// What readers of the products should know: deprecated products, products that do not
    /// meet the mesh's governance standards.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The logical plan that will run.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.df.logical_plan()
    }

    /// The plan after DataFusion's and meshql's optimiser rules: what would run. Fails if the
    /// query reads a column the principal may not read.
    pub fn into_optimized_plan(self) -> Result<LogicalPlan, Error> {
        let redactor = self.redactor;
        crate::bounded::while_folding(|| self.df.into_optimized_plan()).map_err(|e| redactor.error(e.into()))
    }

    /// Runs the query and gathers every batch.
    pub async fn collect(self) -> Result<Vec<RecordBatch>, Error> {
        let stream = self.stream().await?;
        Ok(stream.try_collect().await?)
    }

    /// Runs the query as a stream of batches; dropping the stream stops it.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, Error> {
        self.execute(None).await
    }

    /// Runs the query as a stream whose operators may hold at most `memory_limit` bytes
    /// (sorts, joins and aggregations fail with "resources exhausted" beyond it). The limit is
    /// this query's own: other queries of the mesh do not count against it.
    pub async fn stream_with_memory_limit(self, memory_limit: usize) -> Result<SendableRecordBatchStream, Error> {
        self.execute(Some(memory_limit)).await
    }

    async fn execute(self, memory_limit: Option<usize>) -> Result<SendableRecordBatchStream, Error> {
        self.into_runnable(memory_limit).await?.stream()
    }

    /// Plans the query down to the plan that runs, without starting it: to look at its
    /// partitions, or to run only some of them ([`Runnable`]). `memory_limit` as for
    /// [`QueryResult::stream_with_memory_limit`].
    pub async fn into_runnable(self, memory_limit: Option<usize>) -> Result<Runnable, Error> {
        let QueryResult {
            df,
            mut audit,
            redactor,
            ..
        } = self;
        let planned = isolated(async {
            let (state, plan) = df.into_parts();
            let optimized = crate::bounded::while_folding(|| state.optimize(&plan))?;
            if let Some(p) = audit.as_mut() {
                p.observe(&optimized);
            }
            let physical = state.query_planner().create_physical_plan(&optimized, &state).await?;
            // The query's own pool, drawing on the process's budget too (crate::memory).
            let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                .with_memory_pool(Arc::new(QueryPool::new(memory_limit.unwrap_or(usize::MAX))))
                .build_arc()?;
            let task = TaskContext::from(&state).with_runtime(runtime);
            Ok::<_, Error>((physical, Arc::new(task)))
        })
        .await;
        match planned {
            Ok((plan, task)) => Ok(Runnable {
                plan,
                task,
                audit,
                redactor,
            }),
            Err(e) => {
                let e = redactor.error(e);
                if let Some(p) = audit {
                    p.fail(&e);
                }
                Err(e)
            }
        }
    }

    /// The query's placeholders (`$1`, `?`) in order, with the type the planner inferred for
    /// each (`None` when the context does not say).
    pub fn parameters(&self) -> Result<Vec<(String, Option<DataType>)>, Error> {
        let mut params: Vec<_> = self
            .df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| self.redactor.error(e.into()))?
            .into_iter()
            .collect();
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
        let QueryResult {
            df,
            audit,
            warnings,
            redactor,
        } = self;
        match df.with_param_values(ParamValues::List(values.into_iter().map(Into::into).collect())) {
            Ok(df) => Ok(QueryResult {
                df,
                audit,
                warnings,
                redactor,
            }),
            Err(e) => Err(redactor.error(e.into())),
        }
    }
}

/// A planned query that has not started: its result is the union of its partitions.
///
/// When every partition can run alone — a scan of files, filtered, projected and shaped by
/// policies, with no exchange, sort, aggregate, join or limit above it — a server can hand
/// out one stream per partition (Flight SQL endpoints) and clients fetch them in parallel.
/// The plan's [`fingerprint`](Runnable::fingerprint) names what each partition reads, so that
/// a partition planned again later (by another request, on another replica) can be checked to
/// read the same data and not a newer commit.
pub struct Runnable {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    audit: Option<Pending>,
    redactor: Redactor,
}

/// Operators that keep every row in the partition it came from.
const PARTITION_LOCAL: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "PolicyBarrierExec",
    "DeltaScanExec",
];
/// Sources whose partitions read disjoint parts of the data.
const PARTITIONED_SOURCES: &[&str] = &["DataSourceExec", "PartitionedIcebergScan"];

fn partition_local(plan: &dyn ExecutionPlan, partitions: usize) -> bool {
    if plan.output_partitioning().partition_count() != partitions {
        return false;
    }
    match plan.children().as_slice() {
        [] => PARTITIONED_SOURCES.contains(&plan.name()),
        [child] => PARTITION_LOCAL.contains(&plan.name()) && partition_local(child.as_ref(), partitions),
        _ => false,
    }
}

impl Runnable {
    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// The physical plan that will run (policies included).
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// How many partitions can be run separately ([`Runnable::stream_partitions`]): the
    /// plan's partitions when each reads its own part of the data, else 1.
    pub fn independent_partitions(&self) -> usize {
        let n = self.plan.output_partitioning().partition_count();
        if n > 1 && partition_local(self.plan.as_ref(), n) {
            n
        } else {
            1
        }
    }

    /// SHA-256 of the plan as EXPLAIN VERBOSE prints it — its operators, filters and masks,
    /// and every file with the byte range each partition reads — and of the size and
    /// modification time of every file scanned, so that a file rewritten in place changes it too.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let text = displayable(self.plan.as_ref())
            .set_show_schema(true)
            .indent(true)
            .to_string();
        hash.update(text.as_bytes());
        let mut stack = vec![self.plan.clone()];
        while let Some(node) = stack.pop() {
            let files = node
                .as_any()
                .downcast_ref::<DataSourceExec>()
                .and_then(|d| d.data_source().as_any().downcast_ref::<FileScanConfig>());
            for file in files.iter().flat_map(|c| c.file_groups.iter()).flat_map(|g| g.iter()) {
                let meta = &file.object_meta;
                hash.update(format!(
                    "\n{} {} {}",
                    meta.location,
                    meta.size,
                    meta.last_modified.timestamp_micros()
                ));
            }
            stack.extend(node.children().into_iter().cloned());
        }
        hash.finalize().into()
    }

    /// Runs the whole query.
    pub fn stream(self) -> Result<SendableRecordBatchStream, Error> {
        let Runnable {
            plan,
            task,
            audit,
            redactor,
        } = self;
        audited(execute_stream(plan, task).map_err(Error::from), audit, redactor)
    }

    /// Runs only the given partitions (numbers below [`Runnable::independent_partitions`]),
    /// each in its own task, their batches interleaved.
    pub fn stream_partitions(self, partitions: &[usize]) -> Result<SendableRecordBatchStream, Error> {
        let available = self.independent_partitions();
        if let Some(bad) = partitions.iter().find(|p| **p >= available) {
            return Err(Error::NotAllowed(format!(
                "partition {bad} of a query with {available} independent partitions"
            )));
        }
        let Runnable {
            plan,
            task,
            audit,
            redactor,
        } = self;
        let stream = match partitions {
            [one] => plan.execute(*one, task).map_err(Error::from),
            many => {
                let mut builder = RecordBatchReceiverStream::builder(plan.schema(), many.len().max(1));
                for &p in many {
                    let (plan, task, tx) = (plan.clone(), task.clone(), builder.tx());
                    builder.spawn(async move {
                        let mut batches = plan.execute(p, task)?;
                        while let Some(batch) = batches.next().await {
                            if tx.send(batch).await.is_err() {
                                break; // the reader went away
                            }
                        }
                        Ok(())
                    });
                }
                Ok(builder.build())
            }
        };
        audited(stream, audit, redactor)
    }
}

/// `stream` as the principal gets it: its errors redacted, and recorded in the audit trail when
/// it ends (or its failure to start, at once).
fn audited(
    stream: Result<SendableRecordBatchStream, Error>,
    audit: Option<Pending>,
    redactor: Redactor,
) -> Result<SendableRecordBatchStream, Error> {
    match stream {
        Ok(stream) => Ok(Box::pin(AuditedStream {
            schema: stream.schema(),
            inner: stream,
            pending: audit,
            redactor,
            rows: 0,
            bytes: 0,
            faulted: false,
            announced: false,
        })),
        Err(e) => {
            let e = redactor.error(e);
            if let Some(p) = audit {
                p.fail(&e);
            }
            Err(e)
        }
    }
}

/// A result stream whose errors are redacted for the principal and that records the query in
/// the audit trail (when the mesh keeps one) when it ends: `ok` when it finishes, `error` or
/// `denied` when it fails, `cancelled` when it is dropped early. If the record cannot be written
/// the stream ends with an error.
struct AuditedStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    pending: Option<Pending>,
    redactor: Redactor,
    rows: u64,
    bytes: u64,
    /// The inner stream panicked: it is not polled again.
    faulted: bool,
    /// The `started` record is written (before the first batch left).
    announced: bool,
}

impl AuditedStream {
    fn finish(&mut self, outcome: &str, error: Option<String>) -> std::io::Result<()> {
        match self.pending.take() {
            Some(p) => p.finish(outcome, error, self.rows, self.bytes),
            None => Ok(()),
        }
    }
}

impl futures::Stream for AuditedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.faulted {
            return Poll::Ready(None);
        }
        // A panic inside an operator ends this query with an error, not the process; the
        // stream is not polled again.
        let polled = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll_next(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                self.faulted = true;
                Poll::Ready(Some(Err(DataFusionError::from(engine_fault(panic)))))
            }
        };
        match polled {
            Poll::Ready(Some(Ok(batch))) => {
                if !self.announced {
                    self.announced = true;
                    if let Some(Err(w)) = self.pending.as_ref().map(Pending::announce) {
                        tracing::error!(error = %w, "audit record not written");
                        let withheld = format!("the audit trail cannot be written, so the result is withheld: {w}");
                        if let Err(w) = self.finish("error", Some(withheld.clone())) {
                            tracing::error!(error = %w, "audit record not written");
                        }
                        self.faulted = true;
                        return Poll::Ready(Some(Err(DataFusionError::External(Box::new(std::io::Error::other(
                            withheld,
                        ))))));
                    }
                }
                self.rows += batch.num_rows() as u64;
                self.bytes += batch.get_array_memory_size() as u64;
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = self.redactor.error(Error::from(e));
                if let Err(w) = self.finish(failure_outcome(&e), Some(e.to_string())) {
                    tracing::error!(error = %w, "audit record not written");
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => match self.finish("ok", None) {
                Ok(()) => Poll::Ready(None),
                Err(w) => {
                    tracing::error!(error = %w, "audit record not written");
                    Poll::Ready(Some(Err(datafusion::error::DataFusionError::External(Box::new(
                        std::io::Error::other(format!(
                            "the audit trail cannot be written, so the result is withheld: {w}"
                        )),
                    )))))
                }
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

impl datafusion::physical_plan::RecordBatchStream for AuditedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Drop for AuditedStream {
    fn drop(&mut self) {
        if self.pending.is_some() {
            if let Err(w) = self.finish("cancelled", None) {
                tracing::error!(error = %w, "audit record not written");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> meshql_contract::MeshSettings {
        serde_yaml::from_str(yaml).expect("mesh.yaml")
    }

    #[test]
    fn engine_options_apply_and_meshql_settings_win() {
        let s = settings(
            "name: m\nengine:\n  datafusion.execution.parquet.pushdown_filters: true\n  \
             datafusion.execution.batch_size: 4096\n  datafusion.catalog.information_schema: false\n  \
             datafusion.optimizer.skip_failed_rules: true\n",
        );
        let config = session_config(&s).expect("valid options");
        assert!(config.options().execution.parquet.pushdown_filters);
        assert_eq!(config.options().execution.batch_size, 4096);
        // meshql relies on these: an engine option cannot turn them off
        assert!(config.options().catalog.information_schema);
        assert_eq!(config.options().catalog.default_catalog, MESH_CATALOG);
        assert!(!config.options().optimizer.skip_failed_rules);
    }

    #[test]
    fn unknown_engine_option_or_bad_value_is_an_error_naming_the_key() {
        for (yaml, key) in [
            (
                "name: m\nengine:\n  datafusion.execution.no_such_option: 1\n",
                "datafusion.execution.no_such_option",
            ),
            (
                "name: m\nengine:\n  datafusion.execution.batch_size: many\n",
                "datafusion.execution.batch_size",
            ),
            ("name: m\nengine:\n  target_partitions: 4\n", "target_partitions"),
        ] {
            let err = session_config(&settings(yaml)).expect_err(yaml).to_string();
            assert!(err.contains(&format!("engine option `{key}`")), "{err}");
        }
    }
}
