//! Documents on disk: finding a domain's products and contracts, and reading YAML or JSON into
//! JSON values and typed structures.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::ContractError;

pub(super) fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The document files (YAML or JSON, not hidden) directly in `dir`, sorted.
fn document_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !is_hidden(p)
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                && p.is_file()
        })
        .collect();
    out.sort();
    out
}

/// The domain directories under `domains_dir` (not hidden), sorted.
pub(super) fn domain_dirs(domains_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(domains_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Files ending in `<kind>.yaml|.yml|.json` directly in `dir` or in `dir/<sub>`, sorted.
pub(super) fn documents(dir: &Path, sub: &str, kind: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [dir.to_path_buf(), dir.join(sub)]
        .iter()
        .flat_map(|d| document_files_in(d))
        .filter(|p| {
            p.file_stem()
                .and_then(|n| n.to_str())
                .is_some_and(|stem| stem.ends_with(kind))
        })
        .collect();
    out.sort();
    out
}

/// Every document file the mesh at `root` may read, in a stable order: its settings and global
/// policies, and in every domain directory the documents there and under `products/` and
/// `contracts/`. The loader reads these directories with the same rules ([`domain_dirs`],
/// [`documents`]); live reload fingerprints this list.
pub fn mesh_documents(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join(super::SETTINGS_FILE), root.join("policies.yaml")];
    for dir in domain_dirs(&super::MeshDefinition::domains_dir_of(root)).unwrap_or_default() {
        for sub in [dir.clone(), dir.join("products"), dir.join("contracts")] {
            out.extend(document_files_in(&sub));
        }
    }
    out
}

/// Reads a YAML or JSON document into a JSON value.
pub fn read_document(path: &Path) -> Result<Value, (ContractError, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            ContractError::Read {
                path: path.to_path_buf(),
                source: std::sync::Arc::new(e),
            },
            None,
        )
    })?;
    type Source = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<Value>(&text).map_err(|e| -> Source { std::sync::Arc::new(e) })
    } else {
        serde_yaml::from_str::<Value>(&text).map_err(|e| -> Source { std::sync::Arc::new(e) })
    };
    parsed.map_err(|source| {
        (
            ContractError::Parse {
                path: path.to_path_buf(),
                source,
            },
            None,
        )
    })
}

pub(super) fn from_value<T: serde::de::DeserializeOwned>(path: &Path, doc: &Value) -> Result<T, ContractError> {
    T::deserialize(doc).map_err(|e| ContractError::Parse {
        path: path.to_path_buf(),
        source: std::sync::Arc::new(e),
    })
}

pub(super) fn read_typed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ContractError> {
    let doc = read_document(path).map_err(|(e, _)| e)?;
    from_value(path, &doc).map_err(|e| match e {
        ContractError::Parse { path, source } => ContractError::Invalid {
            path,
            field: "/".into(),
            reason: source.to_string(),
        },
        other => other,
    })
}

pub(super) fn best_effort_name(doc: &Value) -> Option<String> {
    doc.get("name")
        .or_else(|| doc.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}
