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

/// Orders version strings as Semantic Versioning does (`1.10.0` after `1.9.0`, a pre-release
/// such as `1.0.0-rc1` before `1.0.0`), with a leading `v` and missing minor or patch numbers
/// allowed (`v2` is `2.0.0`). Strings that are no version at all come before every version,
/// ordered by their numeric and text parts.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    version_key(a).cmp(&version_key(b))
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionKey {
    Other(Vec<(u64, String)>),
    Semver(semver::Version),
}

fn version_key(v: &str) -> VersionKey {
    let v = v.trim().trim_start_matches(['v', 'V']);
    let split = v.find(['-', '+']).unwrap_or(v.len());
    let (core, rest) = v.split_at(split);
    let missing = 3usize.saturating_sub(core.split('.').count());
    let padded = format!("{core}{}{rest}", ".0".repeat(missing));
    match semver::Version::parse(&padded) {
        Ok(version) => VersionKey::Semver(version),
        Err(_) => VersionKey::Other(
            v.split(['.', '-', '+'])
                .map(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_string()))
                .collect(),
        ),
    }
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
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0"), Less);
        assert_eq!(compare_versions("1.0.0-rc.2", "1.0.0-rc.10"), Less);
        assert_eq!(compare_versions("2.1", "2.0.5"), Greater);
        assert_eq!(compare_versions("not a version", "0.0.1"), Less);
        let mut all = ["1.0.0", "x", "1.0.0-rc1", "v0.9", "1.0.0+build", "2"];
        all.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(all, ["x", "v0.9", "1.0.0-rc1", "1.0.0", "1.0.0+build", "2"]);
    }
}
