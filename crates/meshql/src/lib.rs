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
//! `<domain>.<product>` works too. `mesh.system.*` describes the mesh itself (see [`system`]).
//!
//! A mesh is live: [`Mesh::reload`] (or [`Mesh::watch`], which polls) picks up edited contracts,
//! descriptors and policies; sessions see the new version at their next statement. Every query is
//! recorded in the audit trail ([`audit`]); quality checks run with [`Mesh::check`].

pub mod audit;
mod bounded;
mod check;
mod checked;
pub mod compact;
pub mod discovery;
mod error;
mod governed;
pub mod limits;
pub mod memory;
pub mod quality;
mod redact;
mod reload;
pub mod results;
mod session;
mod sql_literals;
pub mod system;
use meshql_catalog::time;
mod time_travel;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use meshql_catalog::MeshCatalog;
use meshql_contract::MeshDefinition;

pub use audit::{AuditLog, AuditRecord};
pub use check::{CheckOptions, CheckReport, ProductCheck, ProductStatus};
pub use error::{classify, Error, ErrorClass};
pub use meshql_catalog::secrets::redact as redact_secrets;
pub use meshql_catalog::{ProductUnavailable, MESH_CATALOG};
pub use meshql_contract as contract;
pub use meshql_policy::{PolicySet, Principal};
pub use quality::{QualityOutcome, QualityResult, QualityStore, Severity};
pub use reload::{ReloadOutcome, WatchHandle};
pub use session::{QueryResult, Runnable, Session, SqlOptions};

/// An opened mesh. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Mesh {
    inner: Arc<MeshInner>,
}

#[derive(Debug)]
struct MeshInner {
    root: PathBuf,
    runtime: Arc<RuntimeEnv>,
    /// The version being served; replaced as a whole by a reload.
    current: RwLock<Arc<Snapshot>>,
    audit: Option<Arc<AuditLog>>,
    quality: Arc<QualityStore>,
    /// What the last reloads could not apply (kept until a reload applies cleanly).
    reload_problems: Mutex<Vec<reload::ReloadProblem>>,
    /// Reloads that removed restrictions, shown in `mesh.system.problems` for a day.
    loosened: Mutex<Vec<reload::ReloadProblem>>,
    /// A change seen on disk but not applied yet (the watcher waits until it is stable):
    /// its fingerprint and when it was first seen.
    pending: Mutex<Option<(u64, std::time::Instant)>>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    /// The policies were given by the embedding code ([`Mesh::with_policies`]): a reload keeps
    /// them and never reads policy files over them.
    policies_from_code: bool,
}

/// One consistent version of the mesh: documents, catalog and policies that belong together.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub catalog: Arc<MeshCatalog>,
    pub policies: Arc<PolicySet>,
    /// Increases with every applied reload; sessions re-bind when it changes.
    pub generation: u64,
    /// The documents' fingerprint when this version was read.
    pub fingerprint: u64,
    /// Every session's DataFusion configuration (meshql's, with `engine:` from mesh.yaml).
    pub config: SessionConfig,
}

impl Mesh {
    /// Opens the mesh in directory `dir` (the one holding `mesh.yaml`).
    ///
    /// Fails only if `dir` is not a mesh, or if the audit trail is enabled and its directory
    /// cannot be written (queries must not run unrecorded). Broken products are reported by
    /// [`Mesh::check`] and by queries that touch them, and everything else is served.
    pub fn open(dir: impl AsRef<Path>) -> Result<Mesh, Error> {
        let fingerprint = reload::fingerprint(dir.as_ref());
        let definition = MeshDefinition::load(dir)?;
        for problem in &definition.problems {
            tracing::warn!(%problem, "mesh document not loaded");
        }
        let policies = PolicySet::load(&definition);
        Self::build(definition, policies, fingerprint, false)
    }

    /// Serves an already loaded definition, with the policy files found in its directory.
    pub fn from_definition(definition: MeshDefinition) -> Result<Mesh, Error> {
        let policies = PolicySet::load(&definition);
        let fingerprint = reload::fingerprint(&definition.root);
        Self::build(definition, policies, fingerprint, false)
    }

    /// Serves an already loaded definition under `policies`. They stay in force across live
    /// reloads (the mesh's documents reload; policy files in its directory are not read).
    pub fn with_policies(definition: MeshDefinition, policies: PolicySet) -> Result<Mesh, Error> {
        let fingerprint = reload::fingerprint(&definition.root);
        Self::build(definition, policies, fingerprint, true)
    }

    fn build(
        definition: MeshDefinition,
        policies: PolicySet,
        fingerprint: u64,
        policies_from_code: bool,
    ) -> Result<Mesh, Error> {
        if !memory::counting_installed() {
            tracing::warn!(
                "meshql::memory::Counting is not this program's global allocator: queries are held \
                 only to the memory their operators reserve, not to what functions and joins build"
            );
        }
        let config = session::session_config(&definition.settings)?;
        let (stores, runtime) = MeshCatalog::runtime_for(&definition)?;
        let root = definition.root.clone();
        let state_dir = state_dir(&definition);
        let audit = if definition.settings.audit.enabled {
            let dir = state_dir.join("audit");
            let log = AuditLog::open(&dir, &definition.settings.audit).map_err(|e| Error::AuditUnavailable {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            Some(Arc::new(log))
        } else {
            tracing::warn!("audit trail disabled in mesh.yaml: queries are not recorded");
            None
        };
        let quality = Arc::new(QualityStore::new(state_dir.join("quality")));
        let catalog = Arc::new(MeshCatalog::new(
            Arc::new(definition),
            stores,
            runtime.clone(),
            config.clone(),
        ));
        Ok(Mesh {
            inner: Arc::new(MeshInner {
                root,
                runtime,
                current: RwLock::new(Arc::new(Snapshot {
                    catalog,
                    policies: Arc::new(policies),
                    generation: 1,
                    fingerprint,
                    config,
                })),
                audit,
                quality,
                reload_problems: Mutex::new(Vec::new()),
                loosened: Mutex::new(Vec::new()),
                pending: Mutex::new(None),
                reloading: tokio::sync::Mutex::new(()),
                policies_from_code,
            }),
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The mesh directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The access policies sessions enforce now.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.snapshot().policies.clone()
    }

    /// What the mesh defines now: settings, domains, products, contracts, load problems.
    pub fn definition(&self) -> Arc<MeshDefinition> {
        self.snapshot().catalog.definition().clone()
    }

    /// Every product matching `search`, whatever the policies say, including products that do
    /// not load: the operator's view of a mesh directory (`meshql catalog list|search`). What a
    /// principal may find is [`Session::search`].
    pub fn search_as_operator(&self, search: &discovery::Search) -> Vec<meshql_contract::TableEntry> {
        let def = self.definition();
        discovery::find(&def, discovery::Viewer::Operator, search)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The unrestricted DataFusion catalog of the mesh: every product, no policies. For trusted
    /// code only (checks, administration); principals get [`Mesh::session`], which enforces the
    /// policies.
    pub fn catalog(&self) -> Arc<MeshCatalog> {
        self.snapshot().catalog.clone()
    }

    /// Increases whenever a reload applies a change.
    pub fn generation(&self) -> u64 {
        self.snapshot().generation
    }

    /// A session in which `principal` runs queries.
    pub fn session(&self, principal: Principal) -> Session {
        Session::new(self.clone(), principal)
    }

    /// Validates every document, assesses every product against the governance standards, opens
    /// its storage, compares it with its contract and runs its quality checks (see
    /// [`CheckOptions`]). Quality results are stored ([`Mesh::quality`]).
    pub async fn check(&self, options: &CheckOptions) -> CheckReport {
        check::run(self, options).await
    }

    /// The audit trail, unless disabled in `mesh.yaml`.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.inner.audit.as_ref()
    }

    /// Stored quality results, with history.
    pub fn quality(&self) -> &Arc<QualityStore> {
        &self.inner.quality
    }

    pub(crate) fn runtime(&self) -> &Arc<RuntimeEnv> {
        &self.inner.runtime
    }
}

/// Where the mesh keeps its records: `MESHQL_STATE_DIR` if set, else `stateDir` of `mesh.yaml`
/// (relative to the mesh root).
fn state_dir(definition: &MeshDefinition) -> PathBuf {
    match std::env::var_os("MESHQL_STATE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => definition.settings.state_path(&definition.root),
    }
}
