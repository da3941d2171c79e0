//! How domain, product and port names become SQL identifiers.
//!
//! The rule (documented in the README):
//! 1. lower-case the name;
//! 2. replace every run of characters outside `[a-z0-9_]` with a single `_`, and trim `_` from
//!    both ends;
//! 3. if the result starts with a digit, prefix it with `_`;
//! 4. an empty result is an error.
//!
//! Lower-case ASCII identifiers are what DataFusion's SQL front end produces from unquoted
//! identifiers, so every mesh table can be written without quotes (`mesh.customer.profiles`).
//! Two names that map to the same identifier collide, and the loader reports both.

/// Turns a name from a descriptor into a SQL identifier, or `None` if nothing usable remains.
pub fn sql_identifier(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut pending_sep = false;
    for ch in name.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' {
            if pending_sep && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            pending_sep = false;
            out.push(ch);
        } else {
            pending_sep = true;
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        return None;
    }
    let mut id = String::with_capacity(trimmed.len() + 1);
    if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        id.push('_');
    }
    id.push_str(trimmed);
    Some(id)
}

/// Orders version strings the way people expect (`1.10.0` after `1.9.0`): numeric components
/// compare as numbers, others as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.trim_start_matches(['v', 'V'])
            .split(['.', '-', '+'])
            .map(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(
            sql_identifier("Customer Profiles").as_deref(),
            Some("customer_profiles")
        );
        assert_eq!(sql_identifier("order-lines.v2").as_deref(), Some("order_lines_v2"));
        assert_eq!(sql_identifier("  __x__ ").as_deref(), Some("x"));
        assert_eq!(sql_identifier("2024 sales").as_deref(), Some("_2024_sales"));
        assert_eq!(sql_identifier("a  --  b").as_deref(), Some("a_b"));
        assert_eq!(sql_identifier("Ünïcode").as_deref(), Some("n_code"));
        assert_eq!(sql_identifier("!!!"), None);
        assert_eq!(sql_identifier(""), None);
    }

    #[test]
    fn versions() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10.0", "1.9.0"), Greater);
        assert_eq!(compare_versions("v2", "1.0.0"), Greater);
        assert_eq!(compare_versions("1.0.0", "1.0.0"), Equal);
    }
}
