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

/// Files ending in `<kind>.yaml|.yml|.json` directly in `dir` or in `dir/<sub>`, sorted.
pub(super) fn documents(dir: &Path, sub: &str, kind: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join(sub)] {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for entry in rd.filter_map(Result::ok) {
            let p = entry.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || !p.is_file() {
                continue;
            }
            if [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(&format!("{kind}{ext}")))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads a YAML or JSON document into a JSON value.
pub fn read_document(path: &Path) -> Result<Value, (ContractError, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            ContractError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            None,
        )
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str::<Value>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| {
        (
            ContractError::Parse {
                path: path.to_path_buf(),
                message,
            },
            None,
        )
    })
}

pub(super) fn from_value<T: serde::de::DeserializeOwned>(path: &Path, doc: &Value) -> Result<T, ContractError> {
    T::deserialize(doc).map_err(|e| ContractError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub(super) fn read_typed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ContractError> {
    let doc = read_document(path).map_err(|(e, _)| e)?;
    from_value(path, &doc).map_err(|e| match e {
        ContractError::Parse { path, message } => ContractError::Invalid {
            path,
            field: "/".into(),
            reason: message,
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
