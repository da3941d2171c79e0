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

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{plan_err, Column, DFSchema, DFSchemaRef, Result as DFResult, ScalarValue, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::{conjunction, disjunction, split_conjunction};
use datafusion::logical_expr::{
    lit, when, BinaryExpr, ColumnarValue, Expr, ExprSchemable, Extension, Filter, LogicalPlan, LogicalPlanBuilder,
    Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TableProviderFilterPushDown, TableType,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Volatility,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::split_conjunction as physical_split_conjunction;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, Statistics};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::Expr as DfExpr;
use futures::TryStreamExt;

use crate::decide::{Access, ColumnAccess, RowFilter};
use crate::error::{AccessDenied, PolicyError, PolicyEvaluationFailed};
use crate::load::PolicySet;
use crate::mask::{mask_expr, DeniedColumn};
use crate::Principal;

// ---------------------------------------------------------------------------------------------
// The governed plan

/// Builds the plan `principal` gets for `table`, a product served by `base` (its contract view).
///
/// `contact` (the product's owner and support channel) is named by errors raised under the
/// barrier, whose details are withheld ([`PolicyEvaluationFailed`]).
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
            reason,
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
                    |sql| parse_policy_expr(sql, &schema, principal, Some(column)),
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
                        exprs.push(
                            DeniedColumn::expr(
                                format!(
                                    "column '{column}' of {name} cannot be read: policy rule '{rule}' cannot mask it ({why})"
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

/// Placeholders a policy expression may use for the principal's identity.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PrincipalPlaceholder {
    name: &'static str,
    returns: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for PrincipalPlaceholder {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(self.returns.clone())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        plan_err!("{}() may only be used in access policies", self.name)
    }
}

/// A session used only to parse policy expressions: default functions plus the placeholders.
static POLICY_PARSER: LazyLock<SessionState> = LazyLock::new(|| {
    let placeholders = [
        (
            "principal_attribute",
            DataType::Utf8,
            Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        ),
        (
            "principal_in_group",
            DataType::Boolean,
            Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        ),
        (
            "principal_id",
            DataType::Utf8,
            Signature::exact(vec![], Volatility::Immutable),
        ),
    ];
    let mut functions: Vec<Arc<ScalarUDF>> = datafusion::functions::all_default_functions();
    for (name, returns, signature) in placeholders {
        functions.push(Arc::new(ScalarUDF::new_from_impl(PrincipalPlaceholder {
            name,
            returns,
            signature,
        })));
    }
    SessionStateBuilder::new()
        .with_default_features()
        .with_scalar_functions(functions)
        .build()
});

/// Parses a row filter or custom mask over `schema`, with the principal's values substituted
/// as literals (never as SQL text) and `{column}` standing for `column`.
///
/// `${principal.id}`, `${principal.<attribute>}` are shorthands for `principal_id()` and
/// `principal_attribute('<attribute>')`; `principal_in_group('<group>')` tests membership. A
/// missing attribute is NULL, so a filter comparing with it keeps no row.
pub fn parse_policy_expr(
    sql: &str,
    schema: &DFSchemaRef,
    principal: &Principal,
    column: Option<&str>,
) -> Result<Expr, String> {
    let text = expand_placeholders(sql, column)?;
    let expr = POLICY_PARSER
        .create_logical_expr(&text, schema)
        .map_err(|e| format!("`{sql}`: {e}"))?;
    let expr = expr
        .transform(|e| {
            let Expr::ScalarFunction(ScalarFunction { func, args }) = &e else {
                return Ok(Transformed::no(e));
            };
            if func.inner().as_any().downcast_ref::<PrincipalPlaceholder>().is_none() {
                return Ok(Transformed::no(e));
            }
            let arg = match args.first() {
                Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _)) => Some(s.clone()),
                Some(_) => return plan_err!("{}() takes a string literal", func.name()),
                None => None,
            };
            let value = match (func.name(), arg) {
                ("principal_id", _) => lit(principal.id()),
                ("principal_attribute", Some(a)) => lit(ScalarValue::Utf8(principal.attribute(&a).map(String::from))),
                ("principal_in_group", Some(g)) => lit(principal.in_group(&g)),
                (name, _) => return plan_err!("{name}() is missing its argument"),
            };
            Ok(Transformed::yes(value))
        })
        .map_err(|e| format!("`{sql}`: {e}"))?
        .data;
    let mut bad = None;
    expr.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
        ) {
            bad = Some(format!(
                "`{sql}`: subqueries, aggregates and window functions are not allowed in policies"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| e.to_string())?;
    if let Some(b) = bad {
        return Err(b);
    }
    // Types and constants are settled now, not while a user's query is optimised: a policy
    // whose literal does not convert (`order_date = 'zz'`) or whose types do not meet fails as
    // this rule (a refusal naming it), never as a planner error quoting the filter's text.
    let simplifier = ExprSimplifier::new(SimplifyContext::default().with_schema(schema.clone()));
    simplifier
        .coerce(expr.clone(), schema)
        .and_then(|e| simplifier.simplify(e))
        .map_err(|e| format!("`{sql}`: {}", e.strip_backtrace()))?;
    Ok(expr)
}

fn expand_placeholders(sql: &str, column: Option<&str>) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(['$', '{']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("${principal.") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{sql}`: unclosed ${{principal.…}}"))?;
            let key = &after[..end];
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(format!("`{sql}`: '{key}' is not an attribute name"));
            }
            if key == "id" {
                out.push_str("principal_id()");
            } else {
                out.push_str(&format!("principal_attribute('{key}')"));
            }
            rest = &after[end + 1..];
        } else if let Some(after) = tail.strip_prefix("{column}") {
            let Some(c) = column else {
                return Err(format!("`{sql}`: {{column}} is only meaningful in tag rules and masks"));
            };
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The governed table

/// A product as one principal sees it: either the governed plan, or a refusal that fails any
/// query naming it (the product stays discoverable: listed, described, its schema shown).
#[derive(Debug)]
pub struct GovernedTable {
    schema: SchemaRef,
    plan: Option<LogicalPlan>,
    refusal: Option<String>,
}

impl GovernedTable {
    /// The principal may read the product through `plan` (from [`governed_plan`]).
    pub fn served(plan: LogicalPlan) -> Self {
        GovernedTable {
            schema: Arc::new(plan.schema().as_arrow().clone()),
            plan: Some(plan),
            refusal: None,
        }
    }

    /// The principal may see `schema` but not read the product; `message` says why and whom to ask.
    pub fn refused(schema: SchemaRef, message: String) -> Self {
        GovernedTable {
            schema,
            plan: None,
            refusal: Some(message),
        }
    }

    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }
}

/// A table that shows each principal only what it may see by construction: meshql's
/// `mesh.system.*` tables, computed per session from the principal's decisions. The policy check
/// lets scans of it through without a barrier. The exemption travels with the table object, which
/// only meshql's system schema creates — not with a name a query could spell.
#[derive(Debug)]
pub struct SelfGovernedTable(Arc<dyn TableProvider>);

impl SelfGovernedTable {
    pub fn new(inner: Arc<dyn TableProvider>) -> Self {
        SelfGovernedTable(inner)
    }
}

#[async_trait]
impl TableProvider for SelfGovernedTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&DfExpr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }
}

#[async_trait]
impl TableProvider for GovernedTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.plan.as_ref().map(Cow::Borrowed)
    }

    fn supports_filters_pushdown(&self, filters: &[&DfExpr]) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[DfExpr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let (Some(plan), None) = (&self.plan, &self.refusal) else {
            return Err(AccessDenied::new(self.refusal.as_deref().unwrap_or("access denied")).into());
        };
        let mut builder = LogicalPlanBuilder::from(plan.clone());
        if let Some(p) = projection {
            let cols: Vec<Expr> = p
                .iter()
                .map(|i| Expr::Column(Column::from(plan.schema().qualified_field(*i))))
                .collect();
            builder = builder.project(cols)?;
        }
        if let Some(n) = limit {
            builder = builder.limit(0, Some(n))?;
        }
        state.create_physical_plan(&builder.build()?).await
    }
}

// ---------------------------------------------------------------------------------------------
// The barrier

/// The boundary between a product's policies and the user's query. Only leak-proof predicates
/// cross it (see [`LeakproofPushdown`]); projections are pushed through it.
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
    fn evaluated(&self) -> String {
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

/// Physical form of [`PolicyBarrier`]: passes its input through and lets no filter from above
/// be pushed into it.
#[derive(Debug)]
pub struct PolicyBarrierExec {
    guard: BarrierGuard,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl PolicyBarrierExec {
    pub fn new(table: String, applied: Arc<AppliedPolicy>, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = input.properties().clone();
        PolicyBarrierExec {
            guard: BarrierGuard { table, applied },
            input,
            properties,
        }
    }
}

/// What a barrier turns errors from below into.
#[derive(Debug, Clone)]
struct BarrierGuard {
    table: String,
    applied: Arc<AppliedPolicy>,
}

impl BarrierGuard {
    /// An error from below the barrier, as the principal may see it: unchanged when it cannot
    /// carry data (storage unreachable, memory exhausted, a refusal) or when no policy restricts
    /// the product; otherwise withheld behind [`PolicyEvaluationFailed`].
    fn error(&self, e: DataFusionError) -> DataFusionError {
        if self.applied.unrestricted() || carries_no_data(&e) {
            return e;
        }
        tracing::debug!(table = %self.table, error = %e, "error under a policy barrier withheld from the principal");
        PolicyEvaluationFailed {
            table: self.table.clone(),
            what: self.applied.evaluated(),
            contact: self.applied.contact.clone(),
            cause: Arc::new(e),
        }
        .into()
    }
}

/// Errors that describe the system, never the data: storage and I/O failures, memory limits,
/// refusals, errors already withheld, a product that cannot be served.
fn carries_no_data(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) | DataFusionError::ResourcesExhausted(_) => true,
        DataFusionError::Shared(inner) => carries_no_data(inner),
        DataFusionError::Context(_, inner) => carries_no_data(inner),
        DataFusionError::External(inner) => {
            inner.is::<AccessDenied>() || inner.is::<PolicyEvaluationFailed>() || inner.is::<std::io::Error>()
        }
        _ => false,
    }
}

impl DisplayAs for PolicyBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PolicyBarrierExec: {}", self.guard.table)
    }
}

impl ExecutionPlan for PolicyBarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrierExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return plan_err!("PolicyBarrierExec takes one child");
        }
        Ok(Arc::new(PolicyBarrierExec::new(
            self.guard.table.clone(),
            self.guard.applied.clone(),
            children.swap_remove(0),
        )))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DFResult<SendableRecordBatchStream> {
        let stream = self
            .input
            .execute(partition, context)
            .map_err(|e| self.guard.error(e))?;
        let guard = self.guard.clone();
        let schema = stream.schema();
        let guarded = stream.map_err(move |e| guard.error(e));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, guarded)))
    }

    fn partition_statistics(&self, partition: Option<usize>) -> DFResult<Statistics> {
        // The input already applies the row filter and masks, so its statistics are the
        // principal's (inexact once filtered), never the raw table's.
        self.input.partition_statistics(partition)
    }
}

#[derive(Debug)]
struct BarrierPlanner;

#[async_trait]
impl ExtensionPlanner for BarrierPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _state: &SessionState,
    ) -> DFResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(barrier) = node.as_any().downcast_ref::<PolicyBarrier>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return plan_err!("PolicyBarrier takes one input");
        };
        let input = match barrier.row_filter_terms {
            0 => input.clone(),
            terms => unestimated_row_filter_keeps_every_row(input.clone(), terms)?,
        };
        Ok(Some(Arc::new(PolicyBarrierExec::new(
            barrier.table.clone(),
            barrier.applied.clone(),
            input,
        ))))
    }
}

/// The barrier's input with its row filter's fallback selectivity set to 100%: when DataFusion
/// cannot estimate the filter (its interval analysis has no decimals, no string functions, no
/// attributes compared through casts), it assumes the filter keeps every row rather than
/// DataFusion's default 20%.
///
/// Why: an underestimated side is what the optimiser picks to build a hash table on. TPC-H Q18
/// with the benchmark's credit-desk filter (`c_acctbal >= …`, decimal) was estimated at a fifth
/// of `customer`, which made the whole customer ⋈ orders ⋈ lineitem join the build side of the
/// `IN` semi-join: 1.6× slower at scale factor 1 and more than 24 GB (killed) at 10, where the
/// same query without the filter peaks at 4.7 GB. Taking the unfiltered count as the estimate
/// is an upper bound: a plan built on it may be less clever about a very selective filter, but
/// never sizes a hash table on a guess below the truth. The estimate stays Inexact, so no
/// statistic-based shortcut (`count(*)` from metadata) can answer from it.
///
/// Only a filter that is the row filter alone (`terms` conjuncts) is changed: user predicates
/// that crossed the barrier ([`LeakproofPushdown`]) merge into the same filter, and their own
/// estimate (DataFusion's default, for `c_mktsegment = 'BUILDING'`) is then left as it was.
fn unestimated_row_filter_keeps_every_row(
    plan: Arc<dyn ExecutionPlan>,
    terms: usize,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    if let Some(filter) = plan.as_any().downcast_ref::<FilterExec>() {
        if physical_split_conjunction(filter.predicate()).len() != terms {
            return Ok(plan);
        }
        return Ok(Arc::new(
            FilterExecBuilder::from(filter).with_default_selectivity(100).build()?,
        ));
    }
    // Masks and the contract's projection sit between the barrier and the filter.
    if plan.as_any().is::<ProjectionExec>() {
        if let [child] = plan.children().as_slice() {
            let child = unestimated_row_filter_keeps_every_row((*child).clone(), terms)?;
            return plan.with_new_children(vec![child]);
        }
    }
    Ok(plan)
}

/// The query planner of governed sessions: DataFusion's, plus the barrier.
#[derive(Debug, Default)]
pub struct GovernedQueryPlanner;

#[async_trait]
impl QueryPlanner for GovernedQueryPlanner {
    async fn create_physical_plan(&self, plan: &LogicalPlan, state: &SessionState) -> DFResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(BarrierPlanner)])
            .create_physical_plan(plan, state)
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Leak-proof predicates

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

// ---------------------------------------------------------------------------------------------
// Checks

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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::col;

    fn schema() -> DFSchemaRef {
        let s = Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
        ]);
        Arc::new(DFSchema::try_from_qualified_schema("t", &s).expect("schema"))
    }

    #[test]
    fn principal_values_become_literals_not_sql() {
        let p = Principal::new("o'brien").with_attribute("region", "EU' OR 1=1 --");
        let e = parse_policy_expr(
            "region = ${principal.region} AND ${principal.id} <> ''",
            &schema(),
            &p,
            None,
        )
        .expect("parses");
        let text = e.to_string();
        assert!(text.contains("Utf8(\"EU' OR 1=1 --\")"), "{text}");
        assert!(text.contains("Utf8(\"o'brien\")"), "{text}");
        // A missing attribute is NULL, never "match everything".
        let e = parse_policy_expr("region = principal_attribute('nope')", &schema(), &p, None).expect("parses");
        assert!(e.to_string().contains("Utf8(NULL)"), "{e}");
        assert!(parse_policy_expr("principal_in_group('x')", &schema(), &p, None)
            .expect("parses")
            .to_string()
            .contains("false"));
    }

    #[test]
    fn policy_expressions_fail_closed() {
        let p = Principal::new("a");
        for bad in [
            "missing_column = 1",
            "region = (SELECT max(region) FROM t)",
            "{column} = 1",
            "${principal.} = 'x'",
            "region = ${principal.region",
            "count(n) > 1",
        ] {
            assert!(
                parse_policy_expr(bad, &schema(), &p, None).is_err(),
                "{bad} should be refused"
            );
        }
        let tagged = parse_policy_expr("{column} = 'EU'", &schema(), &p, Some("region")).expect("tag filter");
        assert!(tagged.to_string().contains("region"), "{tagged}");
    }

    #[test]
    fn leakproof_predicates() {
        let s = schema();
        assert!(is_leakproof(&col("t.region").eq(lit("EU")), &s));
        assert!(is_leakproof(
            &col("t.n")
                .in_list(vec![lit(1), lit(2)], false)
                .and(col("t.n").is_null()),
            &s
        ));
        assert!(is_leakproof(
            &datafusion::logical_expr::cast(col("t.n"), DataType::Int64).gt(lit(1i64)),
            &s
        ));
        assert!(!is_leakproof(&(lit(1) / col("t.n")).gt(lit(0)), &s));
        assert!(!is_leakproof(&(col("t.n") + lit(1)).gt(lit(0)), &s));
        assert!(!is_leakproof(
            &datafusion::logical_expr::cast(col("t.region"), DataType::Int32).eq(lit(1)),
            &s
        ));
        assert!(!is_leakproof(&col("t.n").in_list(vec![lit(1) / col("t.n")], false), &s));
    }
}
