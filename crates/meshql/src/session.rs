//! Sessions: a principal's SQL over the mesh.
//!
//! This module binds a principal to the mesh's current version and plans statements; `prepare`
//! checks and rewrites a statement before it is planned; `result` holds what a planned statement
//! becomes ([`QueryResult`], [`Runnable`]); `audited` records each query in the audit trail.

mod audited;
mod prepare;
mod result;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use meshql_catalog::{AsOf, MESH_CATALOG};
use meshql_contract::mesh::RESERVED_SCHEMA;
use meshql_policy::enforce::{analyzer_rules, optimizer_rules, GovernedQueryPlanner};
use meshql_policy::{PolicyCheck, Principal};

use self::audited::{new_query_id, Pending};
use self::prepare::{explain_for_principal, needs_no_current_domain, number_placeholders, refuse_non_queries};
pub use self::result::{QueryResult, Runnable};
use crate::audit::AuditRecord;
use crate::governed::{refusal_message, refusal_reason, AccessView, GovernedCatalog};
use crate::limits::isolated;
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
        for f in crate::bounded::CappedAggregate::udafs()
            .into_iter()
            .chain(crate::checked::FiniteAggregate::udafs())
        {
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

    /// The products the principal may discover that match `search`, in catalog order (see
    /// [`crate::discovery`]).
    pub fn search(&self, search: &crate::discovery::Search) -> Vec<meshql_contract::TableEntry> {
        let bound = self.bound();
        let def = bound.snapshot.catalog.definition();
        crate::discovery::find(def, crate::discovery::Viewer::Principal(&bound.governance), search)
            .into_iter()
            .cloned()
            .collect()
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
