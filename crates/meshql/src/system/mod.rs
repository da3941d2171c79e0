//! `mesh.system.*`: the mesh described in SQL, so every client (Flight SQL, JDBC, ADBC, the
//! embedded API) can discover products without a separate API.
//!
//! | table       | one row per                               | who sees what                                  |
//! |-------------|-------------------------------------------|------------------------------------------------|
//! | `domains`   | domain with a discoverable product        | principals who may discover one of its products |
//! | `products`  | product table (compliance, lifecycle, …)  | products the principal may discover            |
//! | `ports`     | output port with its contract and storage | same; storage location only if readable        |
//! | `columns`   | contract column (type, classification, tags, whether masked) | discoverable, non-hidden columns |
//! | `quality`   | stored quality result (history; `latest`) | discoverable products; values, expectations, messages and durations only to those who may read the whole product (admins, owners, unrestricted readers), checks of hidden columns not at all |
//! | `lineage`   | input-port edge product → product         | both ends discoverable                         |
//! | `usage`     | (product, consumer) from the audit trail  | the product's owners and administrators        |
//! | `queries`   | audited query                             | administrators: all; others: their own         |
//! | `problems`  | document, policy or reload problem        | administrators                                 |
//!
//! Tables are computed when scanned, from the session's version of the mesh.
//!
//! Each table is one type in its own module: which rows the principal sees, and its columns,
//! each named, typed and filled by one call, so its schema and its arrays come from the same
//! list and cannot disagree.

mod columns;
mod domains;
mod lineage;
mod ports;
mod problems;
mod products;
mod quality;
mod queries;
mod usage;

use std::any::Any;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session as CatalogSession, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use meshql_contract::TableEntry;
use meshql_policy::SelfGovernedTable;

use crate::discovery::{self, Search, Viewer};
use crate::governed::AccessView;
use crate::Mesh;

/// One system table: its name, its schema, and its columns over what a [`View`] may see.
trait SystemTableKind: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;

    /// Its fields, in order: those of [`SystemTableKind::build`] over no rows.
    fn schema(&self) -> SchemaRef;

    /// Its columns over the rows `view` may see.
    fn build(&self, view: &View) -> Batch;
}

/// The system tables. An unknown name is no table.
const TABLES: [&dyn SystemTableKind; 9] = [
    &columns::Columns,
    &domains::Domains,
    &lineage::Lineage,
    &ports::Ports,
    &problems::Problems,
    &products::Products,
    &quality::Quality,
    &queries::Queries,
    &usage::Usage,
];

fn named(name: &str) -> Option<&'static dyn SystemTableKind> {
    TABLES.into_iter().find(|t| t.name() == name)
}

/// The `mesh.system` schema of one session.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    mesh: Mesh,
    gov: Arc<AccessView>,
    admin: bool,
}

impl SystemSchema {
    pub fn new(mesh: Mesh, gov: Arc<AccessView>, admin: bool) -> Self {
        SystemSchema { mesh, gov, admin }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.name().to_string()).collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let Some(kind) = named(name) else {
            return Ok(None);
        };
        let table = SystemTable {
            kind,
            schema: kind.schema(),
            view: View {
                mesh: self.mesh.clone(),
                gov: self.gov.clone(),
                admin: self.admin,
            },
        };
        Ok(Some(Arc::new(SelfGovernedTable::new(Arc::new(table)))))
    }

    fn table_exist(&self, name: &str) -> bool {
        named(name).is_some()
    }

    fn register_table(&self, name: String, _table: Arc<dyn TableProvider>) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot create mesh.system.{name}: system tables are meshql's"
        )))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot drop mesh.system.{name}: system tables are meshql's"
        )))
    }
}

/// What a system table may show: the session's mesh version and principal.
#[derive(Debug, Clone)]
struct View {
    mesh: Mesh,
    gov: Arc<AccessView>,
    admin: bool,
}

impl View {
    /// The products the principal may discover.
    fn entries(&self) -> Vec<&TableEntry> {
        let def = self.gov.catalog.definition();
        discovery::find(def, Viewer::Principal(&self.gov), &Search::all())
    }

    /// Whether the principal may read `e` (not just discover it).
    fn readable(&self, e: &TableEntry) -> bool {
        self.gov.decision(&e.domain, &e.name).is_some_and(|d| d.select.is_ok())
    }

    fn owns(&self, e: &TableEntry) -> bool {
        discovery::is_owner(&self.gov.principal, self.gov.catalog.definition(), e)
    }

    fn audit_records(&self) -> Vec<crate::AuditRecord> {
        match self.mesh.audit().map(|a| a.read_all()) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "audit trail unreadable");
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}

#[derive(Debug)]
struct SystemTable {
    kind: &'static dyn SystemTableKind,
    schema: SchemaRef,
    view: View,
}

#[async_trait]
impl TableProvider for SystemTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let view = self.view.clone();
        let kind = self.kind;
        let schema = self.schema.clone();
        let columns = tokio::task::spawn_blocking(move || kind.build(&view).into_arrays())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        MemTable::try_new(schema, vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// A system table's columns as they are built: each field pushed with its array, in order.
#[derive(Debug, Default)]
struct Batch {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Batch {
    fn push(mut self, field: Field, array: ArrayRef) -> Self {
        self.fields.push(field);
        self.arrays.push(array);
        self
    }

    /// A nullable `Utf8` column.
    fn utf8<T: AsRef<str>>(self, name: &str, v: impl IntoIterator<Item = Option<T>>) -> Self {
        let array: StringArray = v.into_iter().collect();
        self.push(Field::new(name, DataType::Utf8, true), Arc::new(array))
    }

    /// A `Boolean` column (nullable in the schema, with no nulls).
    fn boolean(self, name: &str, v: impl IntoIterator<Item = bool>) -> Self {
        let array = BooleanArray::from(v.into_iter().collect::<Vec<_>>());
        self.push(Field::new(name, DataType::Boolean, true), Arc::new(array))
    }

    /// An `Int64` column (nullable in the schema, with no nulls).
    fn int64(self, name: &str, v: impl IntoIterator<Item = i64>) -> Self {
        let array = Int64Array::from(v.into_iter().collect::<Vec<_>>());
        self.push(Field::new(name, DataType::Int64, true), Arc::new(array))
    }

    /// A nullable `Float64` column.
    fn float64(self, name: &str, v: impl IntoIterator<Item = Option<f64>>) -> Self {
        let array = Float64Array::from(v.into_iter().collect::<Vec<_>>());
        self.push(Field::new(name, DataType::Float64, true), Arc::new(array))
    }

    /// A nullable UTC timestamp column, in milliseconds since the epoch.
    fn timestamp(self, name: &str, v: impl IntoIterator<Item = Option<i64>>) -> Self {
        let array = TimestampMillisecondArray::from(v.into_iter().collect::<Vec<_>>()).with_timezone("UTC");
        let data_type = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        self.push(Field::new(name, data_type, true), Arc::new(array))
    }

    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.fields.clone()))
    }

    fn into_arrays(self) -> Vec<ArrayRef> {
        self.arrays
    }
}

/// A list as one string (`a, b`); none if empty.
fn join(v: &[String]) -> Option<String> {
    (!v.is_empty()).then(|| v.join(", "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use meshql_policy::Principal;

    use super::*;

    /// The sample mesh, seen by an administrator who may also read everything.
    fn admin_view() -> View {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/mesh");
        let mesh = Mesh::open(dir).expect("the sample mesh opens");
        let principal = Principal::new("test-admin").with_groups(["platform-admins", "analysts", "pii-readers"]);
        let snapshot = mesh.snapshot();
        let admin = snapshot.policies.is_admin(&principal);
        assert!(admin, "the sample's platform-admins are administrators");
        let gov = AccessView::new(snapshot.catalog.clone(), snapshot.policies.clone(), Arc::new(principal));
        View {
            mesh,
            gov: Arc::new(gov),
            admin,
        }
    }

    #[test]
    fn every_system_table_builds_a_batch_of_its_schema() {
        let view = admin_view();
        let names: BTreeSet<_> = TABLES.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), TABLES.len(), "table names are unique");
        for table in TABLES {
            let built = table.build(&view);
            assert_eq!(built.schema(), table.schema(), "{}", table.name());
            let batch = RecordBatch::try_new(table.schema(), built.into_arrays());
            assert!(batch.is_ok(), "mesh.system.{}: {:?}", table.name(), batch.err());
            assert!(named(table.name()).is_some());
        }
        for name in ["domains", "products", "ports", "columns", "lineage"] {
            let rows = named(name).expect(name).build(&view).into_arrays()[0].len();
            assert!(rows > 0, "the sample mesh has {name}");
        }
        assert!(named("nope").is_none());
        assert!(named("").is_none());
    }
}
