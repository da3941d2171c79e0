//! Validation against the official ODPS v1.0 and ODCS v3.1 JSON Schemas.
//!
//! The schemas are compiled once per process (they are embedded in the binary, so meshql never
//! fetches anything to validate). A document is accepted exactly when it validates; meshql's own
//! model then reads what it needs and keeps the rest.

use std::path::Path;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

use crate::error::{ContractError, Violation};

const ODPS_SCHEMA: &str = include_str!("../specs/odps-json-schema-v1.0.0.json");
const ODCS_SCHEMA: &str = include_str!("../specs/odcs-json-schema-v3.1.0.json");

/// The standards meshql validates against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standard {
    /// Open Data Product Standard v1.0 (product descriptors).
    Odps,
    /// Open Data Contract Standard v3.1 (data contracts).
    Odcs,
}

impl Standard {
    pub fn label(self) -> &'static str {
        match self {
            Standard::Odps => "ODPS v1.0 (data product)",
            Standard::Odcs => "ODCS v3.1 (data contract)",
        }
    }

    fn validator(self) -> &'static Validator {
        static ODPS: OnceLock<Validator> = OnceLock::new();
        static ODCS: OnceLock<Validator> = OnceLock::new();
        let (cell, text) = match self {
            Standard::Odps => (&ODPS, ODPS_SCHEMA),
            Standard::Odcs => (&ODCS, ODCS_SCHEMA),
        };
        cell.get_or_init(|| {
            // The embedded schemas are part of the build: failing here is a packaging bug that
            // every test would catch, not something a user's input can cause.
            let schema: Value = serde_json::from_str(text).expect("embedded JSON Schema is JSON");
            jsonschema::draft201909::new(&schema).expect("embedded JSON Schema compiles")
        })
    }
}

/// Validates `doc` (read from `path`) against `standard`, listing every violation.
pub fn validate(standard: Standard, path: &Path, doc: &Value) -> Result<(), ContractError> {
    let validator = standard.validator();
    if validator.is_valid(doc) {
        return Ok(());
    }
    let mut violations: Vec<Violation> = validator
        .iter_errors(doc)
        .map(|e| {
            let field = e.instance_path().to_string();
            Violation {
                field: if field.is_empty() { "/".to_string() } else { field },
                reason: e.to_string(),
            }
        })
        .collect();
    violations.dedup();
    Err(ContractError::Schema {
        path: path.to_path_buf(),
        standard: standard.label(),
        violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_documents_validate() {
        let p = Path::new("x.yaml");
        validate(
            Standard::Odps,
            p,
            &json!({"apiVersion": "v1.0.0", "kind": "DataProduct", "id": "p1", "status": "active"}),
        )
        .unwrap();
        validate(
            Standard::Odcs,
            p,
            &json!({"apiVersion": "v3.1.0", "kind": "DataContract", "id": "c1", "version": "1.0.0", "status": "active"}),
        )
        .unwrap();
    }

    #[test]
    fn violations_name_the_field() {
        let err = validate(
            Standard::Odcs,
            Path::new("c.yaml"),
            &json!({"apiVersion": "v3.1.0", "kind": "DataContract", "id": "c1", "version": "1.0.0",
                    "status": "active",
                    "schema": [{"name": "t", "properties": [{"name": "a", "logicalType": "text"}]}]}),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("c.yaml"), "{text}");
        assert!(text.contains("/schema/0/properties/0/logicalType"), "{text}");
        assert!(text.contains("text"), "{text}");
    }

    #[test]
    fn unknown_odps_field_is_rejected_because_the_schema_says_so() {
        let err = validate(
            Standard::Odps,
            Path::new("p.yaml"),
            &json!({"apiVersion": "v1.0.0", "kind": "DataProduct", "id": "p1", "status": "active", "colour": "red"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
