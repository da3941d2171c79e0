//! The `mesh` catalog as one principal sees it.
//!
//! Each session registers only this catalog: products the principal may not discover do not
//! exist in it (not in `information_schema`, `SHOW TABLES`, errors or EXPLAIN), products it may
//! discover but not read resolve to a refusal that fails the query at plan time, and readable
//! products resolve to their governed plan (see [`meshql_policy::enforce`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::system::SystemSchema;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::TableType;
use meshql_catalog::conform::contract_schema;
use meshql_catalog::{AsOf, MeshCatalog, ProductUnavailable, MESH_CATALOG};
use meshql_contract::mesh::RESERVED_SCHEMA;
use meshql_contract::TableEntry;
use meshql_policy::enforce::governed_plan;
use meshql_policy::{
    Access, ColumnAccess, ColumnInfo, Decision, GovernedTable, PolicyError, PolicySet, Principal, ProductRef, Refusal,
    TableIdentity,
};

/// What a principal's catalog knows — the mesh under its access policies (not the governance
/// standards of `meshql_contract::governance`): the mesh, the policies, the principal, and decisions
/// already taken (the session is bound to one principal and one policy version, so that is the
/// cache key).
#[derive(Debug)]
pub(crate) struct AccessView {
    pub catalog: Arc<MeshCatalog>,
    pub policies: Arc<PolicySet>,
    pub principal: Arc<Principal>,
    decisions: Mutex<HashMap<(String, String), Arc<Decision>>>,
    /// Governed tables already built, with the storage provider they were built over: reused
    /// while the product's storage has not been re-opened.
    tables: Mutex<HashMap<(String, String), BuiltTable>>,
}

/// A governed table and the storage provider it was built over.
type BuiltTable = (Arc<dyn TableProvider>, Arc<dyn TableProvider>);

impl AccessView {
    pub fn new(catalog: Arc<MeshCatalog>, policies: Arc<PolicySet>, principal: Arc<Principal>) -> Self {
        AccessView {
            catalog,
            policies,
            principal,
            decisions: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
        }
    }

    /// The decision for `domain.name`, if the mesh has that product.
    pub fn decision(&self, domain: &str, name: &str) -> Option<Arc<Decision>> {
        let product = self.catalog.product(domain, name)?;
        let key = (domain.to_string(), name.to_string());
        if let Some(d) = self.decisions.lock().ok()?.get(&key) {
            return Some(d.clone());
        }
        let d = Arc::new(decide(&self.policies, &self.principal, product.entry()));
        if let Ok(mut cache) = self.decisions.lock() {
            cache.insert(key, d.clone());
        }
        Some(d)
    }

    /// Whether the principal is an administrator of the mesh (sees policy internals and causes).
    pub fn admin(&self) -> bool {
        self.policies.is_admin(&self.principal)
    }

    /// Why the principal may not travel in time on `domain.name`, if it may not: earlier
    /// versions of its storage may be what another port of the product serves (a port pinned
    /// to a first commit beside one following the latest), so time travel is allowed only when
    /// every other port over the same storage is served to the principal exactly like this one.
    pub fn time_travel_refusal(&self, domain: &str, name: &str) -> Option<String> {
        let definition = self.catalog.definition();
        let entry = definition.table(domain, name)?;
        let location = entry.binding.as_ref().ok().map(|b| &b.storage.location)?;
        let mine = self.decision(domain, name)?;
        let siblings = definition.tables.iter().filter(|t| {
            t.domain == entry.domain
                && t.product_name == entry.product_name
                && t.name != entry.name
                && t.binding.as_ref().is_ok_and(|b| &b.storage.location == location)
        });
        for sibling in siblings {
            let same = self.decision(&sibling.domain, &sibling.name).is_some_and(|theirs| {
                match (&mine.select, &theirs.select) {
                    (Ok(a), Ok(b)) => same_restrictions(a, b),
                    _ => false,
                }
            });
            if !same {
                return Some(format!(
                    "access denied: time travel on mesh.{domain}.{name} is refused: earlier versions of its storage are also served by another port of the product, under policies that differ for you; query the current version"
                ));
            }
        }
        None
    }

    pub fn discoverable(&self, domain: &str, name: &str) -> bool {
        self.decision(domain, name).is_some_and(|d| d.discover)
    }

    /// The contract's columns of `domain.name` the principal may discover; `None` if it may not
    /// discover the product.
    pub fn contract_view(&self, domain: &str, name: &str) -> Option<SchemaRef> {
        let decision = self.decision(domain, name).filter(|d| d.discover)?;
        let entry = self.catalog.product(domain, name)?.entry();
        Some(visible_schema(entry, &decision))
    }

    fn domain_visible(&self, domain: &str) -> bool {
        self.product_names(domain)
            .iter()
            .any(|name| self.discoverable(domain, name))
    }

    /// Every product table of `domain`, visible or not.
    fn product_names(&self, domain: &str) -> Vec<String> {
        self.catalog.schema(domain).map(|s| s.table_names()).unwrap_or_default()
    }
}

/// Whether two tables' accesses filter rows alike and treat their common columns alike.
fn same_restrictions(a: &Access, b: &Access) -> bool {
    a.grant_filters == b.grant_filters
        && a.restrictions == b.restrictions
        && a.column_filters == b.column_filters
        && a.columns.iter().all(|(name, how)| {
            b.columns
                .iter()
                .find(|(n, _)| n == name)
                .is_none_or(|(_, theirs)| theirs == how)
        })
}

/// The columns of a product's contract, as policies see them.
pub(crate) fn columns_of(entry: &TableEntry) -> Vec<ColumnInfo> {
    entry
        .binding
        .as_ref()
        .map(|b| {
            b.schema
                .properties
                .iter()
                .map(|p| ColumnInfo {
                    name: p.name.clone(),
                    classification: p.classification.clone(),
                    tags: p.tags.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Which product, port and version `entry` serves, as policies match it.
pub(crate) fn identity(entry: &TableEntry) -> TableIdentity<'_> {
    TableIdentity {
        domain: &entry.domain,
        table: &entry.name,
        product: &entry.product_name,
        port: &entry.port,
        version: &entry.port_version,
        port_table: &entry.port_table,
    }
}

fn decide(policies: &PolicySet, principal: &Principal, entry: &TableEntry) -> Decision {
    let columns = columns_of(entry);
    policies.decide(
        principal,
        &ProductRef {
            table: identity(entry),
            columns: &columns,
        },
    )
}

/// Why `refusal` stops the principal, as the principal is told: a broken policy's details (rule,
/// file, the parser's message naming columns) only for administrators — everyone else learns
/// that the policies cannot be applied, and the server log has the reason.
pub(crate) fn refusal_reason(refusal: &Refusal, admin: bool) -> String {
    match refusal {
        Refusal::Broken { rule, reason } if !admin => {
            tracing::warn!(%reason, "access policies cannot be applied");
            let rule = rule.as_ref().map(|r| format!(" (rule '{r}')")).unwrap_or_default();
            format!("its access policies cannot be applied{rule}, so it is not served (an administrator finds why in the server log and in `meshql check`)")
        }
        other => other.to_string(),
    }
}

/// The refusal text for a product the principal may see but not read.
pub(crate) fn refusal_message(entry: &TableEntry, principal: &Principal, why: &str) -> String {
    format!(
        "access denied: '{}' may not read mesh.{}: {why}{}",
        principal.id(),
        entry.qualified_name(),
        ask_owner(entry)
    )
}

/// The contract's columns the principal may discover: the schema of a product it may not read.
fn visible_schema(entry: &TableEntry, decision: &Decision) -> SchemaRef {
    let fields = entry
        .binding
        .as_ref()
        .map(|b| contract_schema(&b.schema).fields().to_vec())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !decision.hidden.contains(f.name()))
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// "; to request access, contact …" with the product's owner and support channel, if known.
fn ask_owner(entry: &TableEntry) -> String {
    ProductUnavailable::contact(entry)
        .map(|c| format!("; to request access, contact the product owner: {c}"))
        .unwrap_or_default()
}

/// The principal's `mesh` catalog.
#[derive(Debug)]
pub(crate) struct GovernedCatalog {
    gov: Arc<AccessView>,
    system: Arc<SystemSchema>,
}

impl GovernedCatalog {
    pub fn new(gov: Arc<AccessView>, system: Arc<SystemSchema>) -> Self {
        GovernedCatalog { gov, system }
    }
}

impl CatalogProvider for GovernedCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .gov
            .catalog
            .schema_names()
            .into_iter()
            .filter(|d| self.gov.domain_visible(d))
            .collect();
        names.push(RESERVED_SCHEMA.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == RESERVED_SCHEMA {
            return Some(self.system.clone() as Arc<dyn SchemaProvider>);
        }
        self.gov.domain_visible(name).then(|| {
            Arc::new(GovernedSchema {
                domain: name.to_string(),
                gov: self.gov.clone(),
            }) as Arc<dyn SchemaProvider>
        })
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DFResult<Option<Arc<dyn SchemaProvider>>> {
        // The mesh catalog refuses: it is defined by contracts.
        self.gov.catalog.register_schema(name, schema)
    }
}

/// The schema DataFusion resolves unqualified table names in when no current domain is chosen:
/// not a domain, so such names are refused before planning with a message that says how to name
/// the table (see `Session::plan`), rather than one naming a schema that does not exist.
pub(crate) const NO_DOMAIN: &str = "public";

/// One domain, as the principal sees it.
#[derive(Debug)]
struct GovernedSchema {
    domain: String,
    gov: Arc<AccessView>,
}

#[async_trait]
impl SchemaProvider for GovernedSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        self.gov
            .product_names(&self.domain)
            .into_iter()
            .filter(|name| self.gov.discoverable(&self.domain, name))
            .collect()
    }

    /// `name`, or `name@<version>`: an earlier version of the product (time travel), under the
    /// product's decision — the same grants, filters and masks.
    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let (product_name, as_of) = match AsOf::split(name) {
            Ok(split) => split,
            Err(e) => {
                // Say what is wrong only about a product the principal may discover.
                let base = name.rsplit_once('@').map(|(b, _)| b).unwrap_or(name);
                if self.gov.discoverable(&self.domain, base) {
                    return Err(DataFusionError::Plan(format!("mesh.{}.{name}: {e}", self.domain)));
                }
                return Ok(None);
            }
        };
        let Some(decision) = self.gov.decision(&self.domain, product_name).filter(|d| d.discover) else {
            return Ok(None);
        };
        let Some(product) = self.gov.catalog.product(&self.domain, product_name) else {
            return Ok(None);
        };
        let entry = product.entry();
        let access = match &decision.select {
            Ok(access) => access,
            // Refused: described from the contract, storage never touched.
            Err(refusal) => {
                let why = refusal_reason(refusal, self.gov.admin());
                let msg = refusal_message(entry, &self.gov.principal, &why);
                return Ok(Some(Arc::new(GovernedTable::refused(
                    visible_schema(entry, &decision),
                    msg,
                ))));
            }
        };
        let Some(domain) = self.gov.catalog.schema(&self.domain) else {
            return Ok(None);
        };
        let Some(base) = domain.table(name).await? else {
            return Ok(None);
        };
        if as_of.is_some() {
            // Earlier versions are not kept per session (a time may name a new one each query).
            return Ok(Some(self.build(&decision, access, entry, base, name)));
        }
        let key = (self.domain.clone(), name.to_string());
        if let Some((built_over, table)) = self.gov.tables.lock().ok().and_then(|t| t.get(&key).cloned()) {
            if Arc::ptr_eq(&built_over, &base) {
                return Ok(Some(table));
            }
        }
        let table = self.build(&decision, access, entry, base.clone(), name);
        if let Ok(mut cache) = self.gov.tables.lock() {
            cache.insert(key, (base, table.clone()));
        }
        Ok(Some(table))
    }

    async fn table_type(&self, name: &str) -> DFResult<Option<TableType>> {
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        let base = AsOf::split(name).map(|(b, _)| b).unwrap_or(name);
        self.gov.discoverable(&self.domain, base)
    }

    fn register_table(&self, name: String, _table: Arc<dyn TableProvider>) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(&self.domain, &name))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(&self.domain, name))
    }
}

impl GovernedSchema {
    /// The readable product as the principal sees it: its governed plan, or a refusal when the
    /// policies cannot be applied to it.
    fn build(
        &self,
        decision: &Decision,
        access: &Access,
        entry: &TableEntry,
        base: Arc<dyn TableProvider>,
        name: &str,
    ) -> Arc<dyn TableProvider> {
        // Column refusals say whom to ask, like product refusals.
        let mut access = access.clone();
        let ask = ask_owner(entry);
        for (_, how) in &mut access.columns {
            if let ColumnAccess::Denied(why) | ColumnAccess::Conflict(why) = how {
                why.push_str(&ask);
            }
        }
        let table = TableReference::full(MESH_CATALOG, self.domain.as_str(), name);
        let contact = ProductUnavailable::contact(entry);
        match governed_plan(
            &table,
            base.clone(),
            &access,
            &self.gov.principal,
            &self.gov.policies,
            contact,
        ) {
            Ok(plan) => Arc::new(GovernedTable::served(plan)),
            Err(e) => {
                tracing::error!(table = %table, error = %e, "policy cannot be applied: refusing reads");
                let rule = match &e {
                    PolicyError::Inapplicable { rule, .. } => Some(rule.clone()),
                    PolicyError::Invalid { .. } => None,
                };
                let refusal = Refusal::Broken {
                    rule,
                    reason: e.to_string(),
                };
                let msg = refusal_message(entry, &self.gov.principal, &refusal_reason(&refusal, self.gov.admin()));
                Arc::new(GovernedTable::refused(visible_schema(entry, decision), msg))
            }
        }
    }
}

fn read_only(domain: &str, name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "cannot create or change table mesh.{domain}.{name}: the mesh catalog is defined by the domains' contracts, not by SQL"
    ))
}
