//! The governed table: a product as one principal's catalog holds it (its governed plan or a
//! refusal), and the self-governed tables of meshql's system schema.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::common::{Column, Result as DFResult};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr as DfExpr;

use crate::error::AccessDenied;

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
    ///
    /// [`governed_plan`]: super::governed_plan
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
