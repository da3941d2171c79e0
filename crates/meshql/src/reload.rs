//! Live changes: edited contracts, descriptors and policies take effect without a restart.
//!
//! A reload reads every document again and swaps the whole version (catalog + policies) at once,
//! so no query sees half of a change. What does not load does not replace what served before:
//!
//! - `mesh.yaml` that does not load → nothing changes;
//! - a policy file that does not load → the previous policies stay (all of them: policies are
//!   applied as a set, never partly);
//! - a product whose descriptor or contract no longer loads → its last good version stays;
//! - a product whose files were deleted → it is no longer served (that is how one unpublishes).
//!
//! Each kept version is reported in the log and in `mesh.system.problems`. Unchanged products keep
//! their opened storage.
//!
//! The watcher ([`Mesh::watch`]) applies a change only once the documents have stayed as they are
//! for a settle period, and a change that removes policy restrictions (a deny, a row filter, a
//! mask) only after five: a policy file cut halfway (a crashed editor, a non-atomic copy) is a
//! valid YAML prefix that loads as laxer rules. Such a reload is logged at warning level with the
//! rules removed and shown in `mesh.system.problems` for a day. Operators publish policy files
//! atomically: write a temporary file in the same directory and rename it over the old one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meshql_contract::{ContractError, MeshDefinition};
use meshql_policy::PolicySet;

use crate::{Mesh, Snapshot};

/// How long the watcher waits, at least, for changed documents to stay unchanged.
pub const MIN_SETTLE: Duration = Duration::from_secs(1);
/// A change that removes policy restrictions waits this many settle periods.
pub const LOOSENING_SETTLE_FACTOR: u32 = 5;
/// How long a reload that removed restrictions stays in `mesh.system.problems`.
const LOOSENING_SHOWN_MS: i64 = 24 * 3600 * 1000;

/// Something a reload could not apply, kept for `mesh.system.problems`.
#[derive(Debug, Clone)]
pub(crate) struct ReloadProblem {
    pub at_ms: i64,
    /// `domain.product`, or empty for mesh-wide problems.
    pub product: String,
    pub message: String,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Whether a new version is being served.
    pub applied: bool,
    /// Products added, changed, removed (`domain.product`).
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Whether policies changed.
    pub policies_changed: bool,
    /// Edits that were rejected, with the version kept instead.
    pub rejected: Vec<String>,
    /// Policy restrictions the applied version no longer has (rules removed or changed).
    pub loosened: Vec<String>,
}

impl Mesh {
    /// Reads the mesh's documents again if any changed on disk, and serves the result (see the
    /// module docs for what is kept when an edit does not load).
    pub async fn reload(&self) -> ReloadOutcome {
        self.reload_settled(Duration::ZERO).await
    }

    /// [`Mesh::reload`], applying a change only once the documents have stayed as they are for
    /// `settle` (a file being written is not read halfway), and a change that removes policy
    /// restrictions only once they have stayed so for [`LOOSENING_SETTLE_FACTOR`] × `settle`.
    async fn reload_settled(&self, settle: Duration) -> ReloadOutcome {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let current = self.snapshot();
        let root = self.root().to_path_buf();
        let fingerprint = fingerprint(&root);
        if fingerprint == current.fingerprint {
            self.set_pending(None);
            return ReloadOutcome::default();
        }
        let stable_for = self.stable_for(fingerprint);
        if stable_for < settle {
            return ReloadOutcome::default();
        }
        let from_code = self.inner.policies_from_code;
        let loaded = tokio::task::spawn_blocking(move || {
            let def = MeshDefinition::load(&root);
            let policies = match from_code {
                // The embedding code's policies stand; an empty set stands for "unchanged".
                true => def.as_ref().ok().map(|_| None),
                false => def.as_ref().ok().map(|d| Some(PolicySet::load(d))),
            };
            (def, policies)
        })
        .await;
        let now = crate::time::now_ms();
        let (definition, policies) = match loaded {
            Ok((Ok(def), Some(p))) => (def, p),
            Ok((Err(e), _)) => {
                return self.reject_all(
                    fingerprint,
                    format!("mesh settings do not load, nothing changed: {e}"),
                    now,
                );
            }
            Ok((Ok(_), None)) => return ReloadOutcome::default(),
            Err(e) => return self.reject_all(fingerprint, format!("reload failed: {e}"), now),
        };
        let config = match crate::session::session_config(&definition.settings) {
            Ok(c) => c,
            Err(e) => {
                return self.reject_all(
                    fingerprint,
                    format!("mesh settings do not load, nothing changed: {e}"),
                    now,
                )
            }
        };
        let old_def = current.catalog.definition();
        let mut outcome = ReloadOutcome::default();
        let mut problems = Vec::new();
        let mut definition = definition;

        // Products whose new documents do not load keep their last good version.
        let mut kept = Vec::new();
        for entry in &mut definition.tables {
            if let (Err(err), Some(old)) = (&entry.binding, old_def.table(&entry.domain, &entry.name)) {
                if old.binding.is_ok() && is_document_error(err) {
                    keep_last_good(&mut outcome, &mut problems, entry.qualified_name(), err, now);
                    *entry = old.clone();
                }
            }
        }
        // A product file that no longer parses at all (no name to register it under) keeps its
        // last good version too, as long as the file is still there.
        for old in &old_def.tables {
            let still_defined = definition
                .tables
                .iter()
                .any(|t| t.domain == old.domain && t.name == old.name);
            if still_defined || old.binding.is_err() || !old.product.source.is_file() {
                continue;
            }
            let from_same_file = definition.tables.iter().any(|t| t.product.source == old.product.source);
            if from_same_file {
                continue;
            }
            if let Some(err) = definition.problems.iter().find(|p| mentions(p, &old.product.source)) {
                keep_last_good(&mut outcome, &mut problems, old.qualified_name(), err, now);
                kept.push(old.clone());
            }
        }
        definition.tables.extend(kept);
        definition
            .tables
            .sort_by(|a, b| (&a.domain, &a.name).cmp(&(&b.domain, &b.name)));

        let policies = match policies {
            // Policies given by the embedding code stay.
            None => current.policies.clone(),
            Some(policies) if policies.problems().is_empty() => {
                outcome.policies_changed = policies.version() != current.policies.version();
                let removed = current.policies.removed_restrictions(&policies);
                if !removed.is_empty() {
                    if stable_for < settle * LOOSENING_SETTLE_FACTOR {
                        // Loosening waits longer: a file cut halfway loads as a laxer prefix.
                        return ReloadOutcome::default();
                    }
                    let message = format!(
                    "a policy reload removed restrictions: {} (if unintended, restore the files; publish policy files by writing a temporary file and renaming it over the old one)",
                    removed.join(", ")
                );
                    tracing::warn!(%message, "reload");
                    outcome.loosened = removed;
                    if let Ok(mut loosened) = self.inner.loosened.lock() {
                        loosened.retain(|p| now - p.at_ms < LOOSENING_SHOWN_MS);
                        loosened.push(ReloadProblem {
                            at_ms: now,
                            product: String::new(),
                            message,
                        });
                    }
                }
                Arc::new(policies)
            }
            Some(policies) => {
                for p in policies.problems() {
                    let message = format!("policy edit rejected, previous policies still enforced: {p}");
                    tracing::error!(%message, "reload");
                    problems.push(ReloadProblem {
                        at_ms: now,
                        product: String::new(),
                        message,
                    });
                }
                outcome.rejected.push("policies".to_string());
                current.policies.clone()
            }
        };

        for t in &definition.tables {
            match old_def.table(&t.domain, &t.name) {
                None => outcome.added.push(t.qualified_name()),
                Some(old) if !meshql_catalog::same_entry(old, t) => outcome.changed.push(t.qualified_name()),
                Some(_) => {}
            }
        }
        for old in &old_def.tables {
            if definition.table(&old.domain, &old.name).is_none() {
                outcome.removed.push(old.qualified_name());
            }
        }
        let catalog = Arc::new(current.catalog.reloaded(Arc::new(definition), config.clone()));
        let next = Arc::new(Snapshot {
            catalog,
            policies,
            generation: current.generation + 1,
            fingerprint,
            config,
        });
        match self.inner.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        if let Ok(mut p) = self.inner.reload_problems.lock() {
            *p = problems;
        }
        self.set_pending(None);
        outcome.applied = true;
        tracing::info!(
            added = ?outcome.added,
            changed = ?outcome.changed,
            removed = ?outcome.removed,
            policies_changed = outcome.policies_changed,
            rejected = ?outcome.rejected,
            "mesh reloaded"
        );
        outcome
    }

    fn reject_all(&self, fingerprint: u64, message: String, now: i64) -> ReloadOutcome {
        tracing::error!(%message, "reload");
        if let Ok(mut p) = self.inner.reload_problems.lock() {
            *p = vec![ReloadProblem {
                at_ms: now,
                product: String::new(),
                message,
            }];
        }
        // Remember the fingerprint so the same broken state is not re-read every poll.
        let current = self.snapshot();
        let next = Arc::new(Snapshot {
            catalog: current.catalog.clone(),
            policies: current.policies.clone(),
            generation: current.generation,
            fingerprint,
            config: current.config.clone(),
        });
        if let Ok(mut c) = self.inner.current.write() {
            *c = next;
        }
        ReloadOutcome {
            rejected: vec!["mesh".to_string()],
            ..Default::default()
        }
    }

    pub(crate) fn reload_problems(&self) -> Vec<ReloadProblem> {
        let mut out = self.inner.reload_problems.lock().map(|p| p.clone()).unwrap_or_default();
        let now = crate::time::now_ms();
        if let Ok(loosened) = self.inner.loosened.lock() {
            out.extend(loosened.iter().filter(|p| now - p.at_ms < LOOSENING_SHOWN_MS).cloned());
        }
        out
    }

    /// How long the documents have had `fingerprint` (zero when it is new).
    fn stable_for(&self, fingerprint: u64) -> Duration {
        let Ok(mut pending) = self.inner.pending.lock() else {
            return Duration::ZERO;
        };
        match *pending {
            Some((seen, since)) if seen == fingerprint => since.elapsed(),
            _ => {
                *pending = Some((fingerprint, std::time::Instant::now()));
                Duration::ZERO
            }
        }
    }

    fn set_pending(&self, value: Option<(u64, std::time::Instant)>) {
        if let Ok(mut pending) = self.inner.pending.lock() {
            *pending = value;
        }
    }

    /// Polls the mesh's documents every `interval` and reloads on change, until the handle is
    /// dropped. Needs a Tokio runtime.
    ///
    /// A change is applied once the documents have stayed unchanged for one more `interval`
    /// (at least [`MIN_SETTLE`]), so a file caught halfway through being written is not read;
    /// one that removes policy restrictions waits [`LOOSENING_SETTLE_FACTOR`] times as long, and
    /// is logged and shown in `mesh.system.problems` for a day.
    pub fn watch(&self, interval: Duration) -> WatchHandle {
        let mesh = self.clone();
        let settle = interval.max(MIN_SETTLE);
        WatchHandle::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                mesh.reload_settled(settle).await;
            }
        })
    }
}

/// A background task of the mesh (watching, scheduled checks); stops when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl WatchHandle {
    pub(crate) fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        WatchHandle { task: tokio::spawn(f) }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records that `product`'s edit was rejected (`err`) and its last good version kept.
fn keep_last_good(
    outcome: &mut ReloadOutcome,
    problems: &mut Vec<ReloadProblem>,
    product: String,
    err: &ContractError,
    now: i64,
) {
    let message = format!("edit rejected, last good version still served: {err}");
    tracing::error!(%product, %message, "reload");
    problems.push(ReloadProblem {
        at_ms: now,
        product: product.clone(),
        message,
    });
    outcome.rejected.push(product);
}

fn is_document_error(e: &ContractError) -> bool {
    matches!(
        e,
        ContractError::Read { .. }
            | ContractError::Parse { .. }
            | ContractError::Schema { .. }
            | ContractError::Invalid { .. }
    )
}

fn mentions(problem: &ContractError, file: &Path) -> bool {
    match problem {
        ContractError::Read { path, .. }
        | ContractError::Parse { path, .. }
        | ContractError::Schema { path, .. }
        | ContractError::Invalid { path, .. } => path == file,
        ContractError::Conflict { message } => message.contains(&file.display().to_string()),
    }
}

/// A cheap fingerprint of every document a mesh reads (names, sizes, modification times): the
/// settings, policy files, domain descriptors, product descriptors and contracts. Data files are
/// not looked at. Thousands of products cost one `stat` each.
pub(crate) fn fingerprint(root: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    let stat = |p: &Path, h: &mut DefaultHasher| {
        p.hash(h);
        if let Ok(m) = std::fs::metadata(p) {
            m.len().hash(h);
            if let Ok(t) = m.modified() {
                t.hash(h);
            }
        }
    };
    for file in meshql_contract::mesh::mesh_documents(root) {
        stat(&file, &mut h);
    }
    h.finish()
}
