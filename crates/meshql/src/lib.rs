//! meshql, embedded: open a data mesh, get a session for a principal, run SQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshql::Error> {
//! use meshql::{Mesh, Principal};
//!
//! let mesh = Mesh::open("testdata/mesh")?;
//! // Principals come from your application's authentication; policies decide what they see.
//! let session = mesh.session(Principal::new("alice").with_group("analysts"));
//! let batches = session
//!     .sql("SELECT region, count(*) FROM mesh.customer.profiles GROUP BY region")
//!     .await?
//!     .collect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Opening a mesh reads its YAML documents only; each product's storage is opened on first use.
//! Every mesh table is `mesh.<domain>.<product>`; the `mesh` catalog is the session's default, so
//! `<domain>.<product>` works too.

mod check;
mod error;
mod governed;
mod session;

use std::path::Path;
use std::sync::Arc;

use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use meshql_catalog::MeshCatalog;
use meshql_contract::MeshDefinition;

pub use check::{CheckReport, ProductCheck, ProductStatus};
pub use error::Error;
pub use meshql_catalog::ProductUnavailable;
pub use meshql_contract as contract;
pub use meshql_policy::{PolicySet, Principal};
pub use session::{QueryResult, Session};

/// An opened mesh. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<MeshInner>,
}

#[derive(Debug)]
struct MeshInner {
    catalog: Arc<MeshCatalog>,
    policies: Arc<PolicySet>,
    runtime: Arc<RuntimeEnv>,
}

impl Mesh {
    /// Opens the mesh in directory `dir` (the one holding `mesh.yaml`).
    ///
    /// Fails only if `dir` is not a mesh; broken products are reported by [`Mesh::check`] and
    /// by queries that touch them, and everything else is served.
    pub fn open(dir: impl AsRef<Path>) -> Result<Mesh, Error> {
        let definition = MeshDefinition::load(dir)?;
        for problem in &definition.problems {
            tracing::warn!(%problem, "mesh document not loaded");
        }
        Self::from_definition(definition)
    }

    /// Serves an already loaded definition, with the policy files found in its directory.
    pub fn from_definition(definition: MeshDefinition) -> Result<Mesh, Error> {
        let policies = PolicySet::load(&definition);
        Self::with_policies(definition, policies)
    }

    /// Serves an already loaded definition under `policies`.
    pub fn with_policies(definition: MeshDefinition, policies: PolicySet) -> Result<Mesh, Error> {
        let runtime = RuntimeEnvBuilder::new().build_arc()?;
        let catalog = Arc::new(MeshCatalog::new(Arc::new(definition), runtime.clone()));
        Ok(Mesh {
            inner: Arc::new(MeshInner {
                catalog,
                policies: Arc::new(policies),
                runtime,
            }),
        })
    }

    /// The access policies every session of this mesh enforces.
    pub fn policies(&self) -> &Arc<PolicySet> {
        &self.inner.policies
    }

    /// What the mesh defines: settings, domains, products, contracts, load problems.
    pub fn definition(&self) -> &MeshDefinition {
        self.inner.catalog.definition()
    }

    /// The unrestricted DataFusion catalog of the mesh: every product, no policies. For trusted
    /// code only (checks, administration); principals get [`Mesh::session`], which enforces the
    /// policies.
    pub fn catalog(&self) -> &Arc<MeshCatalog> {
        &self.inner.catalog
    }

    /// A session in which `principal` runs queries.
    pub fn session(&self, principal: Principal) -> Session {
        Session::new(self.clone(), principal)
    }

    /// Validates every document and opens every product's storage, comparing it with its
    /// contract.
    pub async fn check(&self) -> CheckReport {
        check::run(self).await
    }

    pub(crate) fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.inner.runtime
    }
}
