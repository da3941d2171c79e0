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

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
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
use meshql_policy::{ColumnAccess, SelfGovernedTable};

use crate::discovery::{self, Search, Viewer};
use crate::governed::AccessView;
use crate::Mesh;

/// The system tables. Every match on it is exhaustive: a table added here must get its schema
/// and its rows, and an unknown name is no table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Columns,
    Domains,
    Lineage,
    Ports,
    Problems,
    Products,
    Quality,
    Queries,
    Usage,
}

impl Table {
    const ALL: [Table; 9] = [
        Table::Columns,
        Table::Domains,
        Table::Lineage,
        Table::Ports,
        Table::Problems,
        Table::Products,
        Table::Quality,
        Table::Queries,
        Table::Usage,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Columns => "columns",
            Table::Domains => "domains",
            Table::Lineage => "lineage",
            Table::Ports => "ports",
            Table::Problems => "problems",
            Table::Products => "products",
            Table::Quality => "quality",
            Table::Queries => "queries",
            Table::Usage => "usage",
        }
    }

    fn named(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
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
        Table::ALL.iter().map(|t| t.name().to_string()).collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let Some(kind) = Table::named(name) else {
            return Ok(None);
        };
        let table = SystemTable {
            kind,
            schema: schema_of(kind),
            view: View {
                mesh: self.mesh.clone(),
                gov: self.gov.clone(),
                admin: self.admin,
            },
        };
        Ok(Some(Arc::new(SelfGovernedTable::new(Arc::new(table)))))
    }

    fn table_exist(&self, name: &str) -> bool {
        Table::named(name).is_some()
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

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn ts(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    )
}

fn schema_of(kind: Table) -> SchemaRef {
    let b = |n: &str| Field::new(n, DataType::Boolean, true);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    let fields = match kind {
        Table::Domains => vec![
            utf8("domain"),
            utf8("title"),
            utf8("description"),
            utf8("owner"),
            utf8("support"),
            i("products"),
        ],
        Table::Products => vec![
            utf8("domain"),
            utf8("product"),
            utf8("table_name"),
            utf8("name"),
            utf8("id"),
            utf8("version"),
            utf8("status"),
            utf8("lifecycle"),
            utf8("owner"),
            utf8("description"),
            utf8("tags"),
            utf8("format"),
            b("compliant"),
            utf8("compliance_failures"),
            b("served"),
            utf8("not_served_reason"),
            b("readable"),
            utf8("contact"),
        ],
        Table::Ports => vec![
            utf8("domain"),
            utf8("product"),
            utf8("port"),
            utf8("port_version"),
            utf8("contract_id"),
            utf8("contract_version"),
            utf8("contract_status"),
            utf8("format"),
            utf8("location"),
            utf8("problem"),
        ],
        Table::Columns => vec![
            utf8("domain"),
            utf8("product"),
            utf8("column_name"),
            i("ordinal"),
            utf8("logical_type"),
            utf8("physical_type"),
            utf8("description"),
            utf8("classification"),
            utf8("tags"),
            b("required"),
            b("is_unique"),
            b("primary_key"),
            b("readable"),
            b("masked"),
        ],
        Table::Quality => vec![
            utf8("domain"),
            utf8("product"),
            utf8("check_name"),
            utf8("column_name"),
            utf8("kind"),
            utf8("dimension"),
            utf8("severity"),
            utf8("outcome"),
            f("value"),
            utf8("expectation"),
            utf8("message"),
            ts("run_at"),
            f("duration_ms"),
            b("latest"),
        ],
        Table::Lineage => vec![
            utf8("from_domain"),
            utf8("from_product"),
            utf8("to_domain"),
            utf8("to_product"),
            utf8("input_port"),
            utf8("contract_id"),
        ],
        Table::Usage => vec![
            utf8("domain"),
            utf8("product"),
            utf8("consumer"),
            i("queries"),
            i("denied"),
            ts("last_access"),
            i("rows"),
            i("bytes"),
        ],
        Table::Queries => vec![
            utf8("query_id"),
            ts("started_at"),
            utf8("principal"),
            utf8("client"),
            utf8("statement"),
            utf8("products"),
            utf8("columns"),
            utf8("policies"),
            utf8("outcome"),
            utf8("error"),
            i("rows"),
            i("bytes"),
            f("duration_ms"),
            utf8("warnings"),
        ],
        Table::Problems => vec![ts("at"), utf8("product"), utf8("message")],
    };
    Arc::new(Schema::new(fields))
}

/// What a system table may show: the session's mesh version and principal.
#[derive(Debug, Clone)]
struct View {
    mesh: Mesh,
    gov: Arc<AccessView>,
    admin: bool,
}

#[derive(Debug)]
struct SystemTable {
    kind: Table,
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
        let columns = tokio::task::spawn_blocking(move || view.build(kind))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        MemTable::try_new(schema, vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

fn s<T: AsRef<str>>(v: Vec<Option<T>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v.iter().map(|x| x.as_ref().map(AsRef::as_ref))))
}

fn b(v: Vec<bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(v))
}

fn i(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

fn f(v: Vec<Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(v))
}

fn t(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
}

fn join(v: &[String]) -> Option<String> {
    (!v.is_empty()).then(|| v.join(", "))
}

impl View {
    fn entries(&self) -> Vec<&TableEntry> {
        let def = self.gov.catalog.definition();
        discovery::find(def, Viewer::Principal(&self.gov), &Search::all())
    }

    fn build(&self, kind: Table) -> Vec<ArrayRef> {
        match kind {
            Table::Domains => self.domains(),
            Table::Products => self.products(),
            Table::Ports => self.ports(),
            Table::Columns => self.columns(),
            Table::Quality => self.quality(),
            Table::Lineage => self.lineage(),
            Table::Usage => self.usage(),
            Table::Queries => self.queries(),
            Table::Problems => self.problems(),
        }
    }

    fn domains(&self) -> Vec<ArrayRef> {
        let def = self.gov.catalog.definition();
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for e in self.entries() {
            *counts.entry(e.domain.as_str()).or_default() += 1;
        }
        let domains: Vec<_> = def
            .domains
            .iter()
            .filter(|d| counts.contains_key(d.name.as_str()))
            .collect();
        vec![
            s(domains.iter().map(|d| Some(d.name.clone())).collect()),
            s(domains.iter().map(|d| d.descriptor.title.clone()).collect()),
            s(domains.iter().map(|d| d.descriptor.description.clone()).collect()),
            s(domains.iter().map(|d| d.descriptor.owner.clone()).collect()),
            s(domains.iter().map(|d| d.descriptor.support.clone()).collect()),
            i(domains.iter().map(|d| counts[d.name.as_str()]).collect()),
        ]
    }

    /// Whether the principal may read `e` (not just discover it).
    fn readable(&self, e: &TableEntry) -> bool {
        self.gov.decision(&e.domain, &e.name).is_some_and(|d| d.select.is_ok())
    }

    fn products(&self) -> Vec<ArrayRef> {
        let entries = self.entries();
        vec![
            s(entries.iter().map(|e| Some(e.domain.clone())).collect()),
            s(entries.iter().map(|e| Some(e.name.clone())).collect()),
            s(entries
                .iter()
                .map(|e| Some(format!("mesh.{}", e.qualified_name())))
                .collect()),
            s(entries
                .iter()
                .map(|e| Some(e.product.display_name().to_string()))
                .collect()),
            s(entries.iter().map(|e| Some(e.product.id.clone())).collect()),
            s(entries.iter().map(|e| e.product.version.clone()).collect()),
            s(entries.iter().map(|e| Some(e.product.status.clone())).collect()),
            s(entries.iter().map(|e| Some(e.compliance.lifecycle.as_str())).collect()),
            s(entries.iter().map(|e| e.product.owner()).collect()),
            s(entries
                .iter()
                .map(|e| e.product.description.as_ref().and_then(|d| d.purpose.clone()))
                .collect()),
            s(entries.iter().map(|e| join(&e.product.tags)).collect()),
            s(entries
                .iter()
                .map(|e| e.binding.as_ref().ok().map(|b| b.storage.format.as_str()))
                .collect()),
            b(entries.iter().map(|e| e.compliance.is_compliant()).collect()),
            s(entries
                .iter()
                .map(|e| {
                    join(
                        &e.compliance
                            .failures
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>(),
                    )
                })
                .collect()),
            b(entries
                .iter()
                .map(|e| e.binding.is_ok() && e.compliance.refusal().is_none())
                .collect()),
            s(entries
                .iter()
                .map(|e| match &e.binding {
                    Err(err) => Some(err.to_string()),
                    Ok(_) => e.compliance.refusal(),
                })
                .collect()),
            b(entries.iter().map(|e| self.readable(e)).collect()),
            s(entries.iter().map(|e| crate::ProductUnavailable::contact(e)).collect()),
        ]
    }

    fn ports(&self) -> Vec<ArrayRef> {
        let entries = self.entries();
        let binding = |e: &TableEntry| e.binding.as_ref().ok().cloned();
        let stores = self.gov.catalog.stores();
        vec![
            s(entries.iter().map(|e| Some(e.domain.clone())).collect()),
            s(entries.iter().map(|e| Some(e.name.clone())).collect()),
            s(entries.iter().map(|e| Some(e.port.clone())).collect()),
            s(entries.iter().map(|e| Some(e.port_version.clone())).collect()),
            s(entries
                .iter()
                .map(|e| binding(e).map(|b| b.contract.id.clone()))
                .collect()),
            s(entries
                .iter()
                .map(|e| binding(e).map(|b| b.contract.version.clone()))
                .collect()),
            s(entries
                .iter()
                .map(|e| binding(e).map(|b| b.contract.status.clone()))
                .collect()),
            s(entries
                .iter()
                .map(|e| binding(e).map(|b| b.storage.format.as_str()))
                .collect()),
            s(entries
                .iter()
                .map(|e| {
                    // Where it is read from: relative locations resolved (against `dataRoot`).
                    binding(e)
                        .filter(|_| self.readable(e))
                        .map(|b| match &b.storage.catalog_table {
                            Some(_) => b.storage.location.clone(),
                            None => stores
                                .resolve(&b.storage.location)
                                .map(|u| u.to_string())
                                .unwrap_or_else(|_| b.storage.location.clone()),
                        })
                })
                .collect()),
            s(entries
                .iter()
                .map(|e| e.binding.as_ref().err().map(ToString::to_string))
                .collect()),
        ]
    }

    fn columns(&self) -> Vec<ArrayRef> {
        let mut rows = Vec::new();
        for e in self.entries() {
            let Some(decision) = self.gov.decision(&e.domain, &e.name) else {
                continue;
            };
            let Ok(b) = &e.binding else {
                continue;
            };
            let access: BTreeMap<&str, &ColumnAccess> = match &decision.select {
                Ok(a) => a.columns.iter().map(|(n, h)| (n.as_str(), h)).collect(),
                Err(_) => BTreeMap::new(),
            };
            // Ordinals count the columns the principal sees: a gap would place a hidden one.
            let visible = b
                .schema
                .properties
                .iter()
                .filter(|p| !decision.hidden.contains(&p.name));
            for (ordinal, p) in visible.enumerate() {
                let how = access.get(p.name.as_str());
                let readable = matches!(how, Some(ColumnAccess::Plain) | Some(ColumnAccess::Masked { .. }));
                let masked = matches!(how, Some(ColumnAccess::Masked { .. }));
                rows.push((e, ordinal, p, readable, masked));
            }
        }
        vec![
            s(rows.iter().map(|r| Some(r.0.domain.clone())).collect()),
            s(rows.iter().map(|r| Some(r.0.name.clone())).collect()),
            s(rows.iter().map(|r| Some(r.2.name.clone())).collect()),
            i(rows.iter().map(|r| r.1 as i64 + 1).collect()),
            s(rows.iter().map(|r| r.2.logical_type.map(|l| l.to_string())).collect()),
            s(rows.iter().map(|r| r.2.physical_type.clone()).collect()),
            s(rows.iter().map(|r| r.2.description.clone()).collect()),
            s(rows.iter().map(|r| r.2.classification.clone()).collect()),
            s(rows.iter().map(|r| join(&r.2.tags)).collect()),
            b(rows.iter().map(|r| r.2.required).collect()),
            b(rows.iter().map(|r| r.2.unique).collect()),
            b(rows.iter().map(|r| r.2.primary_key).collect()),
            b(rows.iter().map(|r| r.3).collect()),
            b(rows.iter().map(|r| r.4).collect()),
        ]
    }

    /// Whether the principal may see quality values of `e`: computed over every row and column
    /// of the product, they are for those who may read all of it anyway — administrators, the
    /// product's owners, and principals whose access has no row filter and every column as
    /// stored. Everyone else who may discover the product sees each check's outcome only.
    fn sees_quality_values(&self, e: &TableEntry) -> bool {
        if self.admin || self.owns(e) {
            return true;
        }
        self.gov
            .decision(&e.domain, &e.name)
            .is_some_and(|d| d.select.as_ref().is_ok_and(|a| a.unrestricted()))
    }

    fn owns(&self, e: &TableEntry) -> bool {
        discovery::is_owner(&self.gov.principal, self.gov.catalog.definition(), e)
    }

    fn quality(&self) -> Vec<ArrayRef> {
        let history = self.mesh.quality().history();
        let mut latest_index: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (idx, r) in history.iter().enumerate() {
            latest_index.insert((r.product.as_str(), r.check.as_str()), idx);
        }
        let latest: BTreeSet<usize> = latest_index.into_values().collect();
        let def = self.gov.catalog.definition();
        // Per product: whether values are shown, and the columns the principal may not discover.
        let mut views: BTreeMap<String, Option<(bool, BTreeSet<String>)>> = BTreeMap::new();
        let mut view_of = |product: &str| -> Option<(bool, BTreeSet<String>)> {
            if let Some(v) = views.get(product) {
                return v.clone();
            }
            let v = product.split_once('.').and_then(|(d, p)| {
                let decision = self.gov.decision(d, p).filter(|x| x.discover)?;
                let entry = def.tables.iter().find(|e| e.domain == d && e.name == p)?;
                Some((self.sees_quality_values(entry), decision.hidden.clone()))
            });
            views.insert(product.to_string(), v.clone());
            v
        };
        // (index, result, domain, product, values shown)
        let mut rows: Vec<(usize, &crate::QualityResult, &str, &str, bool)> = Vec::new();
        for (idx, r) in history.iter().enumerate() {
            let Some((d, p)) = r.product.split_once('.') else {
                continue;
            };
            let Some((values, hidden)) = view_of(&r.product) else {
                continue;
            };
            // A check about a column the principal may not discover is not shown at all.
            if r.column.as_ref().is_some_and(|c| hidden.contains(c)) {
                continue;
            }
            rows.push((idx, r, d, p, values));
        }
        let shown = |r: &(usize, &crate::QualityResult, &str, &str, bool)| r.4;
        vec![
            s(rows.iter().map(|r| Some(r.2)).collect()),
            s(rows.iter().map(|r| Some(r.3)).collect()),
            s(rows.iter().map(|r| Some(r.1.check.clone())).collect()),
            s(rows.iter().map(|r| r.1.column.clone()).collect()),
            s(rows.iter().map(|r| Some(r.1.kind.clone())).collect()),
            s(rows.iter().map(|r| r.1.dimension.clone()).collect()),
            s(rows.iter().map(|r| Some(r.1.severity.as_str())).collect()),
            s(rows.iter().map(|r| Some(r.1.outcome.as_str())).collect()),
            f(rows.iter().map(|r| r.1.value.filter(|_| shown(r))).collect()),
            s(rows.iter().map(|r| shown(r).then(|| r.1.expectation.clone())).collect()),
            s(rows.iter().map(|r| shown(r).then(|| r.1.message.clone())).collect()),
            t(rows.iter().map(|r| Some(r.1.run_at_ms)).collect()),
            // How long a check took says how much data it read: values only.
            f(rows.iter().map(|r| shown(r).then_some(r.1.duration_ms)).collect()),
            b(rows.iter().map(|r| latest.contains(&r.0)).collect()),
        ]
    }

    fn lineage(&self) -> Vec<ArrayRef> {
        let def = self.gov.catalog.definition();
        // Which tables publish each contract.
        let mut by_contract: BTreeMap<&str, Vec<&TableEntry>> = BTreeMap::new();
        for e in &def.tables {
            if let Ok(b) = &e.binding {
                by_contract.entry(b.contract.id.as_str()).or_default().push(e);
            }
        }
        let mut rows = Vec::new();
        let mut seen = BTreeSet::new();
        for to in self.entries() {
            for input in &to.product.input_ports {
                for from in by_contract.get(input.contract_id.as_str()).into_iter().flatten() {
                    if !self.gov.discoverable(&from.domain, &from.name) {
                        continue;
                    }
                    let key = (from.qualified_name(), to.qualified_name(), input.name.clone());
                    if seen.insert(key) {
                        rows.push((*from, to, input));
                    }
                }
            }
        }
        vec![
            s(rows.iter().map(|r| Some(r.0.domain.clone())).collect()),
            s(rows.iter().map(|r| Some(r.0.name.clone())).collect()),
            s(rows.iter().map(|r| Some(r.1.domain.clone())).collect()),
            s(rows.iter().map(|r| Some(r.1.name.clone())).collect()),
            s(rows.iter().map(|r| Some(r.2.name.clone())).collect()),
            s(rows.iter().map(|r| Some(r.2.contract_id.clone())).collect()),
        ]
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

    fn usage(&self) -> Vec<ArrayRef> {
        let def = self.gov.catalog.definition();
        let owned: BTreeSet<String> = def
            .tables
            .iter()
            .filter(|e| self.admin || self.owns(e))
            .map(TableEntry::qualified_name)
            .collect();
        #[derive(Default)]
        struct Use {
            queries: i64,
            denied: i64,
            last: i64,
            rows: i64,
            bytes: i64,
        }
        let mut usage: BTreeMap<(String, String), Use> = BTreeMap::new();
        if !owned.is_empty() {
            // Consumers only: meshql's own quality checks are not usage.
            for r in self.audit_records().into_iter().filter(|r| r.client != "check") {
                for p in &r.products {
                    if !owned.contains(p) {
                        continue;
                    }
                    let u = usage.entry((p.clone(), r.principal.clone())).or_default();
                    u.queries += 1;
                    if r.outcome == "denied" {
                        u.denied += 1;
                    }
                    u.last = u.last.max(r.started_ms);
                    // Rows and bytes are per query; with several products they are shared.
                    u.rows += r.rows as i64;
                    u.bytes += r.bytes as i64;
                }
            }
        }
        let rows: Vec<_> = usage.iter().collect();
        let split = |p: &str, first: bool| {
            p.split_once('.')
                .map(|(d, n)| if first { d.to_string() } else { n.to_string() })
        };
        vec![
            s(rows.iter().map(|((p, _), _)| split(p, true)).collect()),
            s(rows.iter().map(|((p, _), _)| split(p, false)).collect()),
            s(rows.iter().map(|((_, c), _)| Some(c.clone())).collect()),
            i(rows.iter().map(|(_, u)| u.queries).collect()),
            i(rows.iter().map(|(_, u)| u.denied).collect()),
            t(rows.iter().map(|(_, u)| Some(u.last)).collect()),
            i(rows.iter().map(|(_, u)| u.rows).collect()),
            i(rows.iter().map(|(_, u)| u.bytes).collect()),
        ]
    }

    fn queries(&self) -> Vec<ArrayRef> {
        let me = self.gov.principal.id();
        let records: Vec<_> = self
            .audit_records()
            .into_iter()
            .filter(|r| self.admin || r.principal == me)
            .collect();
        vec![
            s(records.iter().map(|r| Some(r.query_id.clone())).collect()),
            t(records.iter().map(|r| Some(r.started_ms)).collect()),
            s(records.iter().map(|r| Some(r.principal.clone())).collect()),
            s(records.iter().map(|r| Some(r.client.clone())).collect()),
            s(records.iter().map(|r| Some(r.statement.clone())).collect()),
            s(records.iter().map(|r| join(&r.products)).collect()),
            s(records.iter().map(|r| join(&r.columns)).collect()),
            s(records.iter().map(|r| join(&r.policies)).collect()),
            s(records.iter().map(|r| Some(r.outcome.clone())).collect()),
            s(records.iter().map(|r| r.error.clone()).collect()),
            i(records.iter().map(|r| r.rows as i64).collect()),
            i(records.iter().map(|r| r.bytes as i64).collect()),
            f(records.iter().map(|r| Some(r.duration_ms)).collect()),
            s(records.iter().map(|r| join(&r.warnings)).collect()),
        ]
    }

    fn problems(&self) -> Vec<ArrayRef> {
        let mut rows: Vec<(Option<i64>, String, String)> = Vec::new();
        if self.admin {
            let def = self.gov.catalog.definition();
            rows.extend(def.problems.iter().map(|p| (None, String::new(), p.to_string())));
            rows.extend(
                self.gov
                    .policies
                    .problems()
                    .iter()
                    .map(|p| (None, String::new(), format!("policies: {p}"))),
            );
            rows.extend(
                self.mesh
                    .reload_problems()
                    .into_iter()
                    .map(|p| (Some(p.at_ms), p.product, p.message)),
            );
        }
        vec![
            t(rows.iter().map(|r| r.0).collect()),
            s(rows.iter().map(|r| (!r.1.is_empty()).then(|| r.1.clone())).collect()),
            s(rows.iter().map(|r| Some(r.2.clone())).collect()),
        ]
    }
}
