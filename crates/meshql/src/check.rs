//! `meshql check`: every document validated, every product opened and compared with its
//! contract.

use futures::StreamExt;
use meshql_contract::Format;

use crate::Mesh;

/// The outcome of checking a whole mesh.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Documents that could not be loaded at all (not tied to one table).
    pub problems: Vec<String>,
    /// One entry per table, in catalog order.
    pub products: Vec<ProductCheck>,
}

impl CheckReport {
    /// No problem anywhere (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
            && self
                .products
                .iter()
                .all(|p| matches!(p.status, ProductStatus::Ok { .. }))
    }
}

/// The check of one table.
#[derive(Debug, Clone)]
pub struct ProductCheck {
    /// `mesh.<domain>.<table>`.
    pub table: String,
    pub format: Option<Format>,
    pub location: Option<String>,
    pub status: ProductStatus,
}

#[derive(Debug, Clone)]
pub enum ProductStatus {
    /// Servable; `warnings` are promises the schema alone cannot confirm.
    Ok {
        warnings: Vec<String>,
        version: Option<i64>,
    },
    /// Not servable, with the reason.
    Unavailable(String),
}

pub(crate) async fn run(mesh: &Mesh) -> CheckReport {
    let catalog = mesh.catalog();
    let products = futures::stream::iter(catalog.products())
        .map(|product| async move {
            let entry = product.entry();
            let storage = entry.binding.as_ref().ok().map(|b| &b.storage);
            let mut policy_problems = Vec::new();
            let status = match catalog.open(&entry.domain, &entry.name).await {
                Ok(t) => {
                    let columns = crate::governed::columns_of(entry);
                    policy_problems = mesh
                        .policies()
                        .lint(&entry.domain, &entry.name, &columns, &t.provider.schema());
                    ProductStatus::Ok {
                        warnings: t.conformance.warnings,
                        version: t.version,
                    }
                }
                Err(e) => ProductStatus::Unavailable(e.reason),
            };
            let check = ProductCheck {
                table: format!("mesh.{}", entry.qualified_name()),
                format: storage.map(|s| s.format),
                location: storage.map(|s| s.location.clone()),
                status,
            };
            (check, policy_problems)
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await;
    let mut problems: Vec<String> = mesh.definition().problems.iter().map(ToString::to_string).collect();
    problems.extend(
        mesh.policies()
            .problems()
            .iter()
            .map(|p| format!("policies not loaded: {p}")),
    );
    let mut checks = Vec::with_capacity(products.len());
    for (check, policy_problems) in products {
        problems.extend(policy_problems);
        checks.push(check);
    }
    CheckReport {
        problems,
        products: checks,
    }
}
