//! The loader: every domain's documents found, parsed and validated on all cores, then each
//! product's output ports bound to their contracts as the tables of the mesh.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::binding::{choose_schema, choose_server, location_is_under, storage_spec};
use super::documents::{best_effort_name, documents, from_value, read_document, read_typed};
use super::model::{Domain, DomainDescriptor, MeshDefinition, PortBinding, TableEntry};
use super::settings::MeshSettings;
use super::{DOMAIN_FILE, RESERVED_SCHEMA};
use crate::error::ContractError;
use crate::governance::{CompiledStandards, Compliance};
use crate::naming::{compare_versions, sql_identifier};
use crate::odcs::DataContract;
use crate::odps::{DataProduct, OutputPort};
use crate::validate::{validate, Standard};

/// A product descriptor read from disk, valid or not.
struct ProductFile {
    domain: String,
    path: PathBuf,
    parsed: Result<DataProduct, (ContractError, Option<String>)>,
}

#[derive(Clone, Copy)]
enum DocKind {
    Product,
    Contract,
}

enum Parsed {
    Product(ProductFile),
    Contract(Result<DataContract, (ContractError, Option<String>)>),
}

fn parse_product(file: &Path) -> Result<DataProduct, (ContractError, Option<String>)> {
    let doc = read_document(file)?;
    validate(Standard::Odps, file, &doc).map_err(|e| (e, best_effort_name(&doc)))?;
    let mut product: DataProduct = from_value(file, &doc).map_err(|e| (e, None))?;
    product.raw = doc;
    product.source = file.to_path_buf();
    Ok(product)
}

/// A contract, or why not with the id it declares (when one can be read).
fn parse_contract(file: &Path) -> Result<DataContract, (ContractError, Option<String>)> {
    let doc = read_document(file).map_err(|(e, _)| (e, None))?;
    let declared_id = || doc.get("id").and_then(Value::as_str).map(str::to_string);
    validate(Standard::Odcs, file, &doc).map_err(|e| (e, declared_id()))?;
    let mut contract: DataContract = from_value(file, &doc).map_err(|e| (e, declared_id()))?;
    contract.raw = doc;
    contract.source = file.to_path_buf();
    Ok(contract)
}

/// `f` over `items` on every available core, results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 64 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[derive(Default)]
pub(super) struct Loader {
    domains: Vec<Domain>,
    /// Documents found, not yet parsed: (domain, kind, file).
    pending: Vec<(String, DocKind, PathBuf)>,
    products: Vec<ProductFile>,
    /// Valid contracts by id, with every file that defined the id.
    contracts: HashMap<String, Vec<Arc<DataContract>>>,
    /// Contracts that failed validation, by the id they declare (when one can be read).
    broken_contracts: HashMap<String, ContractError>,
    problems: Vec<ContractError>,
}

impl Loader {
    pub(super) fn load_domain(&mut self, dir: &Path) {
        let descriptor_path = dir.join(DOMAIN_FILE);
        let descriptor: DomainDescriptor = match read_typed(&descriptor_path) {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(e);
                return;
            }
        };
        let Some(name) = sql_identifier(&descriptor.name) else {
            self.problems.push(ContractError::invalid(
                &descriptor_path,
                "/name",
                format!("domain name {:?} has no usable SQL identifier", descriptor.name),
            ));
            return;
        };
        if name == RESERVED_SCHEMA {
            self.problems.push(ContractError::invalid(
                &descriptor_path,
                "/name",
                format!(
                    "domain name {:?} is reserved: mesh.{RESERVED_SCHEMA} holds meshql's system tables",
                    descriptor.name
                ),
            ));
            return;
        }
        if let Some(other) = self.domains.iter().find(|d| d.name == name) {
            self.problems.push(ContractError::Conflict {
                message: format!(
                    "{}: domain `{name}` is already defined by {}; domain names must be unique",
                    descriptor_path.display(),
                    other.dir.join(DOMAIN_FILE).display()
                ),
            });
            return;
        }
        for file in documents(dir, "products", ".odps") {
            self.pending.push((name.clone(), DocKind::Product, file));
        }
        for file in documents(dir, "contracts", ".odcs") {
            self.pending.push((name.clone(), DocKind::Contract, file));
        }
        self.domains.push(Domain {
            name,
            descriptor,
            dir: dir.to_path_buf(),
        });
    }

    /// Reads, validates and deserializes every collected document, on all cores: parsing YAML
    /// and validating against the JSON Schemas is most of the cost of opening a large mesh.
    fn parse_documents(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let parsed = parallel_map(&pending, |(domain, kind, file)| match kind {
            DocKind::Product => Parsed::Product(ProductFile {
                domain: domain.clone(),
                path: file.clone(),
                parsed: parse_product(file),
            }),
            DocKind::Contract => Parsed::Contract(parse_contract(file)),
        });
        for p in parsed {
            match p {
                Parsed::Product(f) => self.products.push(f),
                Parsed::Contract(Ok(c)) => self.contracts.entry(c.id.clone()).or_default().push(Arc::new(c)),
                Parsed::Contract(Err((e, declared_id))) => {
                    self.problems.push(e.clone());
                    if let Some(id) = declared_id {
                        self.broken_contracts.insert(id, e);
                    }
                }
            }
        }
    }

    pub(super) fn finish(
        mut self,
        root: PathBuf,
        settings: MeshSettings,
        standards: &CompiledStandards,
    ) -> MeshDefinition {
        self.parse_documents();
        // Contract ids are global (input ports of one domain reference contracts of another), so
        // a duplicate id is ambiguous everywhere: neither definition is used.
        let mut contracts = BTreeMap::new();
        for (id, defs) in std::mem::take(&mut self.contracts) {
            if defs.len() == 1 {
                contracts.insert(id, defs.into_iter().next().expect("one element"));
            } else {
                let files: Vec<String> = defs.iter().map(|c| c.source.display().to_string()).collect();
                let err = ContractError::Conflict {
                    message: format!("contract id `{id}` is defined more than once: {}", files.join(", ")),
                };
                self.problems.push(err.clone());
                self.broken_contracts.insert(id, err);
            }
        }

        let mut tables = Vec::new();
        for file in std::mem::take(&mut self.products) {
            match file.parsed {
                Ok(product) => {
                    let product = Arc::new(product);
                    self.bind_product(&file.domain, &product, &contracts, &settings, &mut tables);
                }
                Err((err, name)) => {
                    // Register the broken product under the name it tried to have, so querying it
                    // says why it is unavailable instead of "table not found".
                    match name.as_deref().and_then(sql_identifier) {
                        Some(ident) => tables.push(TableEntry {
                            domain: file.domain.clone(),
                            name: ident.clone(),
                            product_name: ident.clone(),
                            port_table: ident,
                            product: Arc::new(DataProduct::placeholder(&file.path, name.unwrap_or_default())),
                            port: String::new(),
                            port_version: String::new(),
                            binding: Err(err),
                            compliance: Compliance::default(),
                        }),
                        None => self.problems.push(err),
                    }
                }
            }
        }

        // Two entries with the same table name: neither is served.
        let mut seen: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            seen.entry((t.domain.clone(), t.name.clone())).or_default().push(i);
        }
        for ((domain, name), idx) in seen {
            if idx.len() < 2 {
                continue;
            }
            let sources: Vec<String> = idx
                .iter()
                .map(|&i| {
                    let t = &tables[i];
                    if t.port.is_empty() {
                        t.product.source.display().to_string()
                    } else {
                        format!("{} (port `{}` {})", t.product.source.display(), t.port, t.port_version)
                    }
                })
                .collect();
            let err = ContractError::Conflict {
                message: format!(
                    "table mesh.{domain}.{name} would be defined {} times, by {}; rename a product or port so their SQL names differ",
                    idx.len(),
                    sources.join(" and ")
                ),
            };
            for i in idx {
                tables[i].binding = Err(err.clone());
            }
        }
        // A product serves its own domain's data: a contract pointing into another domain's
        // directory would let that domain's data be read under this domain's (laxer) policies.
        for t in &mut tables {
            let Ok(binding) = &t.binding else { continue };
            if binding.storage.catalog_table.is_some() {
                continue;
            }
            let Some(owner) = self
                .domains
                .iter()
                .find(|d| d.name != t.domain && location_is_under(&binding.storage.location, &root, &d.dir))
            else {
                continue;
            };
            t.binding = Err(ContractError::invalid(
                &binding.contract.source,
                "/servers",
                format!(
                    "the data location `{}` is in the directory of domain `{}`: a product of domain `{}` may only serve data under its own domain's directory or outside every domain's directory, so that another domain's data is never read under this domain's policies",
                    binding.storage.location, owner.name, t.domain
                ),
            ));
        }
        tables.sort_by(|a, b| (&a.domain, &a.name).cmp(&(&b.domain, &b.name)));
        for t in &mut tables {
            let domain = self.domains.iter().find(|d| d.name == t.domain);
            t.compliance = standards.assess(t, domain);
        }

        MeshDefinition {
            root,
            settings,
            domains: self.domains,
            tables,
            contracts,
            problems: self.problems,
        }
    }

    fn bind_product(
        &mut self,
        domain: &str,
        product: &Arc<DataProduct>,
        contracts: &BTreeMap<String, Arc<DataContract>>,
        settings: &MeshSettings,
        tables: &mut Vec<TableEntry>,
    ) {
        let path = &product.source;
        let Some(product_ident) = sql_identifier(product.display_name()) else {
            self.problems.push(ContractError::invalid(
                path,
                "/name",
                format!("product name {:?} has no usable SQL identifier", product.display_name()),
            ));
            return;
        };
        if product.output_ports.is_empty() {
            self.problems.push(ContractError::invalid(
                path,
                "/outputPorts",
                "the product declares no output ports, so there is nothing to serve",
            ));
            return;
        }
        let domain_error = product.domain.as_deref().and_then(|d| {
            (sql_identifier(d).as_deref() != Some(domain)).then(|| {
                ContractError::invalid(
                    path,
                    "/domain",
                    format!("product says it belongs to domain {d:?} but is published in domain `{domain}`"),
                )
            })
        });

        // Group ports by name; the newest version of each gets the plain table name.
        let mut by_name: BTreeMap<&str, Vec<&OutputPort>> = BTreeMap::new();
        for port in &product.output_ports {
            by_name.entry(port.name.as_str()).or_default().push(port);
        }
        let several_names = by_name.len() > 1;
        for (port_name, mut versions) in by_name {
            versions.sort_by(|a, b| compare_versions(&b.version, &a.version));
            let base = if several_names {
                match sql_identifier(port_name) {
                    Some(p) => format!("{product_ident}_{p}"),
                    None => {
                        self.problems.push(ContractError::invalid(
                            path,
                            "/outputPorts",
                            format!("port name {port_name:?} has no usable SQL identifier"),
                        ));
                        continue;
                    }
                }
            } else {
                product_ident.clone()
            };
            for (i, port) in versions.into_iter().enumerate() {
                let name = if i == 0 {
                    base.clone()
                } else {
                    format!(
                        "{base}_v{}",
                        sql_identifier(&port.version)
                            .unwrap_or_default()
                            .trim_start_matches('_')
                    )
                };
                let binding = match &domain_error {
                    Some(e) => Err(e.clone()),
                    None => self.bind_port(product, port, contracts, settings).map(Arc::new),
                };
                tables.push(TableEntry {
                    domain: domain.to_string(),
                    name,
                    product_name: product_ident.clone(),
                    port_table: base.clone(),
                    product: product.clone(),
                    port: port.name.clone(),
                    port_version: port.version.clone(),
                    binding,
                    compliance: Compliance::default(),
                });
            }
        }
    }

    fn bind_port(
        &self,
        product: &DataProduct,
        port: &OutputPort,
        contracts: &BTreeMap<String, Arc<DataContract>>,
        settings: &MeshSettings,
    ) -> Result<PortBinding, ContractError> {
        let path = &product.source;
        let port_field = format!("/outputPorts[name={}]", port.name);
        let Some(contract_id) = &port.contract_id else {
            return Err(ContractError::invalid(
                path,
                format!("{port_field}/contractId"),
                "the output port names no contract; meshql serves only contracted ports",
            ));
        };
        let contract = match contracts.get(contract_id) {
            Some(c) => c.clone(),
            None => {
                return Err(match self.broken_contracts.get(contract_id) {
                    Some(e) => e.clone(),
                    None => ContractError::invalid(
                        path,
                        format!("{port_field}/contractId"),
                        format!("no contract with id `{contract_id}` was found in the mesh"),
                    ),
                })
            }
        };
        let (server_idx, server) = choose_server(&contract, settings.environment.as_deref())?;
        let schema = choose_schema(&contract, port)?;
        let storage = storage_spec(&contract, server_idx, server, &schema, settings)?;
        Ok(PortBinding {
            contract,
            schema,
            storage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = "apiVersion: v3.1.0\nkind: DataContract\nid: ID\nversion: 1.0.0\nstatus: active\n\
        servers:\n  - server: s\n    type: local\n    format: parquet\n    path: data/x.parquet\n\
        schema:\n  - name: t\n    properties:\n      - name: a\n        logicalType: integer\n";

    fn mesh_with(product: &str, contracts: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("mesh.yaml"), "name: t\n").expect("write");
        let d = dir.path().join("domains/sales");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("domain.yaml"), "name: Sales\n").expect("write");
        std::fs::write(d.join("p.odps.yaml"), product).expect("write");
        for id in contracts {
            std::fs::write(d.join(format!("{id}.odcs.yaml")), CONTRACT.replace("ID", id)).expect("write");
        }
        dir
    }

    #[test]
    fn ports_and_versions_become_table_names() {
        let dir = mesh_with(
            "apiVersion: v1.0.0\nkind: DataProduct\nid: p\nname: Order Lines\nstatus: active\noutputPorts:\n\
             \x20 - {name: daily, version: 1.9.0, contractId: c1}\n\
             \x20 - {name: daily, version: 1.10.0, contractId: c2}\n\
             \x20 - {name: raw-events, version: 2.0.0, contractId: c1}\n",
            &["c1", "c2"],
        );
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let names: Vec<String> = mesh.tables.iter().map(TableEntry::qualified_name).collect();
        assert_eq!(
            names,
            [
                "sales.order_lines_daily",
                "sales.order_lines_daily_v1_9_0",
                "sales.order_lines_raw_events"
            ]
        );
        let newest = mesh.table("sales", "order_lines_daily").expect("table");
        assert_eq!(newest.port_version, "1.10.0");
        assert!(mesh.tables.iter().all(|t| t.binding.is_ok()));
    }

    #[test]
    fn missing_contract_and_bad_pin_are_reported_per_port() {
        let dir = mesh_with(
            "apiVersion: v1.0.0\nkind: DataProduct\nid: p\nname: p\nstatus: active\noutputPorts:\n\
             \x20 - {name: a, version: 1.0.0, contractId: nowhere}\n\
             \x20 - {name: b, version: 1.0.0, contractId: c1}\n\
             \x20 - {name: c, version: 1.0.0}\n",
            &["c1"],
        );
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let err = |t: &str| match &mesh.table("sales", t).expect("table").binding {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(err("p_a").contains("no contract with id `nowhere`"), "{}", err("p_a"));
        assert!(err("p_b").is_empty());
        assert!(err("p_c").contains("names no contract"), "{}", err("p_c"));

        let text = std::fs::read_to_string(dir.path().join("domains/sales/c1.odcs.yaml")).expect("read");
        let text = text.replace(
            "path: data/x.parquet\n",
            "path: data/x.parquet\n    customProperties:\n      - {property: deltaVersion, value: 3}\n",
        );
        std::fs::write(dir.path().join("domains/sales/c1.odcs.yaml"), text).expect("write");
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let b = &mesh.table("sales", "p_b").expect("table").binding;
        let msg = b.as_ref().err().map(ToString::to_string).unwrap_or_default();
        assert!(
            msg.contains("/servers/0/customProperties") && msg.contains("deltaVersion"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_contract_ids_are_ambiguous() {
        let dir = mesh_with(
            "apiVersion: v1.0.0\nkind: DataProduct\nid: p\nname: p\nstatus: active\noutputPorts:\n\
             \x20 - {name: a, version: 1.0.0, contractId: c1}\n",
            &["c1"],
        );
        let d = dir.path().join("domains/sales/contracts");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("again.odcs.yaml"), CONTRACT.replace("ID", "c1")).expect("write");
        let mesh = MeshDefinition::load(dir.path()).expect("load");
        let msg = mesh.tables[0]
            .binding
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(msg.contains("`c1` is defined more than once"), "{msg}");
        assert_eq!(mesh.problems.len(), 1);
    }
}
