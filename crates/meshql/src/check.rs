//! `meshql check`: every document validated, every product assessed against the governance
//! standards, opened, compared with its contract, and its quality checks run.

use futures::StreamExt;
use meshql_contract::{Format, Lifecycle, RuleFailure};

use crate::quality::{self, QualityResult};
use crate::Mesh;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Only this domain.
    pub domain: Option<String>,
    /// Only this product (`domain.product`).
    pub product: Option<String>,
    /// Run the contracts' quality checks and freshness (default true).
    pub quality: bool,
    /// Store the quality results (default true).
    pub record: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            domain: None,
            product: None,
            quality: true,
            record: true,
        }
    }
}

/// The outcome of checking a mesh (or part of it).
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Documents that could not be loaded at all (not tied to one table).
    pub problems: Vec<String>,
    /// What deserves a look but does not fail the check (a policy rule that matches no product).
    pub warnings: Vec<String>,
    /// One entry per table, in catalog order.
    pub products: Vec<ProductCheck>,
}

impl CheckReport {
    /// No problem anywhere: every product servable, compliant, and no quality check of severity
    /// `error` failed (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.products.iter().all(ProductCheck::is_ok)
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
    /// AccessView standards the product breaks.
    pub compliance: Vec<RuleFailure>,
    pub lifecycle: Lifecycle,
    /// Whom to ask.
    pub contact: Option<String>,
    pub quality: Vec<QualityResult>,
}

impl ProductCheck {
    pub fn is_ok(&self) -> bool {
        matches!(self.status, ProductStatus::Ok { .. })
            && self.compliance.is_empty()
            && !self.quality.iter().any(QualityResult::is_blocking)
    }
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

pub(crate) async fn run(mesh: &Mesh, options: &CheckOptions) -> CheckReport {
    let catalog = mesh.catalog();
    let policies = mesh.policies();
    let selected: Vec<_> = catalog
        .products()
        .filter(|p| {
            let e = p.entry();
            options.domain.as_deref().is_none_or(|d| d == e.domain)
                && options.product.as_deref().is_none_or(|q| q == e.qualified_name())
        })
        .cloned()
        .collect();
    let products = futures::stream::iter(selected)
        .map(|product| {
            let catalog = catalog.clone();
            let policies = policies.clone();
            async move {
                let entry = product.entry();
                let storage = entry.binding.as_ref().ok().map(|b| &b.storage);
                let mut policy_problems = Vec::new();
                let (status, quality) = match catalog.open(&entry.domain, &entry.name).await {
                    Ok(t) => {
                        let columns = crate::governed::columns_of(entry);
                        let product = meshql_policy::ProductRef {
                            table: crate::governed::identity(entry),
                            columns: &columns,
                        };
                        policy_problems = policies.lint(&product, &t.provider.schema());
                        let quality = if options.quality {
                            quality::run_product(mesh, entry, &t).await
                        } else {
                            Vec::new()
                        };
                        let status = ProductStatus::Ok {
                            warnings: t.conformance.warnings,
                            version: t.version,
                        };
                        (status, quality)
                    }
                    Err(e) => (ProductStatus::Unavailable(e.reason()), Vec::new()),
                };
                let check = ProductCheck {
                    table: format!("mesh.{}", entry.qualified_name()),
                    format: storage.map(|s| s.format),
                    location: storage.map(|s| s.location.clone()),
                    status,
                    compliance: entry.compliance.failures.clone(),
                    lifecycle: entry.compliance.lifecycle,
                    contact: crate::ProductUnavailable::contact(entry),
                    quality,
                };
                (check, policy_problems)
            }
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await;
    let whole_mesh = options.domain.is_none() && options.product.is_none();
    let mut problems: Vec<String> = if whole_mesh {
        mesh.definition().problems.iter().map(ToString::to_string).collect()
    } else {
        Vec::new()
    };
    problems.extend(policies.problems().iter().map(|p| format!("policies not loaded: {p}")));
    let mut warnings = Vec::new();
    if whole_mesh {
        let definition = mesh.definition();
        let tables: Vec<_> = definition.tables.iter().map(crate::governed::identity).collect();
        warnings.extend(
            policies
                .unmatched_resources(&tables)
                .into_iter()
                .map(|p| format!("policies: {p}")),
        );
    }
    let mut checks = Vec::with_capacity(products.len());
    for (check, policy_problems) in products {
        problems.extend(policy_problems);
        checks.push(check);
    }
    if options.record {
        let results: Vec<QualityResult> = checks.iter().flat_map(|c| c.quality.iter().cloned()).collect();
        if let Err(e) = mesh.quality().record(&results) {
            problems.push(e);
        }
    }
    CheckReport {
        problems,
        warnings,
        products: checks,
    }
}

impl Mesh {
    /// Runs every product's quality checks and stores the results: what a server's schedule
    /// calls. Returns how many checks failed with severity `error`.
    pub async fn run_quality_checks(&self) -> usize {
        let options = CheckOptions::default();
        let report = self.check(&options).await;
        report
            .products
            .iter()
            .flat_map(|p| p.quality.iter())
            .filter(|r| r.is_blocking())
            .count()
    }

    /// Runs every product's quality checks every `every` (the first run after one interval),
    /// storing the results, until the handle is dropped. Needs a Tokio runtime.
    pub fn schedule_quality_checks(&self, every: std::time::Duration) -> crate::WatchHandle {
        let mesh = self.clone();
        crate::WatchHandle::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let failed = mesh.run_quality_checks().await;
                tracing::info!(failed, "scheduled quality checks done");
            }
        })
    }
}
