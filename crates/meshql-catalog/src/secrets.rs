//! Secrets: resolved from the environment, remembered only to be blotted out.
//!
//! Every secret meshql resolves (a store's keys, a profile's credentials, a catalog's token or
//! password) is registered here; [`redact`] replaces each with `***` in any text. Catalog errors
//! pass through it when they are made, and the outer layers (server status messages, the audit
//! trail) pass their texts through it once more, so a secret a remote service echoes back in an
//! error never reaches a client, a log or a system table.

use std::sync::RwLock;

use meshql_contract::storage::env_reference;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shorter values are not treated as secrets for redaction (they would blot out ordinary words).
const MIN_SECRET_LEN: usize = 4;

/// Remembers `value` as a secret.
pub fn register(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = match SECRETS.write() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let secrets = match SECRETS.read() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// Why a setting could not be resolved (names the variable, never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved(pub String);

/// Resolves `${VAR}` references in a setting value. A reference that is the whole value yields
/// the variable's value (registered for redaction when `secret`); references inside a longer
/// value — a URI with `${PASSWORD}` in it — are substituted and always registered, since that is
/// how a password is written into a URI.
pub fn resolve(value: &str, secret: bool) -> Result<String, Unresolved> {
    if let Some(var) = env_reference(value) {
        let v = lookup(var)?;
        if secret {
            register(&v);
        }
        return Ok(v);
    }
    let mut out = String::new();
    let mut rest = value;
    let mut substituted = false;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let reference = &rest[start..start + len + 1];
        let Some(var) = env_reference(reference) else {
            break;
        };
        let v = lookup(var)?;
        register(&v);
        out.push_str(&rest[..start]);
        out.push_str(&v);
        rest = &rest[start + len + 1..];
        substituted = true;
    }
    out.push_str(rest);
    if secret && !substituted {
        register(&out);
    }
    Ok(out)
}

fn lookup(var: &str) -> Result<String, Unresolved> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(Unresolved(format!("environment variable {var} is not set"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_redacts() {
        std::env::set_var("MESHQL_TEST_SECRET_A", "sekrit-value-123");
        assert_eq!(resolve("${MESHQL_TEST_SECRET_A}", true).unwrap(), "sekrit-value-123");
        assert_eq!(
            resolve("postgresql://u:${MESHQL_TEST_SECRET_A}@h/db", false).unwrap(),
            "postgresql://u:sekrit-value-123@h/db"
        );
        assert_eq!(redact("denied for sekrit-value-123 at h"), "denied for *** at h");
        let err = resolve("${MESHQL_TEST_SECRET_UNSET}", true).unwrap_err();
        assert!(err.0.contains("MESHQL_TEST_SECRET_UNSET"));
        assert_eq!(resolve("plain", false).unwrap(), "plain");
        // a non-secret setting given by reference (an endpoint, a region) is not blotted out
        std::env::set_var("MESHQL_TEST_ENDPOINT_B", "http://store.internal:9000");
        assert_eq!(
            resolve("${MESHQL_TEST_ENDPOINT_B}", false).unwrap(),
            "http://store.internal:9000"
        );
        assert_eq!(redact("at http://store.internal:9000"), "at http://store.internal:9000");
    }
}
