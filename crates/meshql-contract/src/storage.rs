//! Where products' data lives beyond the local disk: object stores and Iceberg catalogs, as the
//! mesh settings (`mesh.yaml`) configure them.
//!
//! ```yaml
//! dataRoot: s3://lake/mesh/            # relative output-port locations resolve here
//! stores:
//!   lake:                              # a name for people; never a secret
//!     url: s3://lake                   # the bucket (or container, or host) this store serves
//!     options:                         # object_store options, by name (camelCase or snake_case)
//!       endpoint: http://127.0.0.1:9000
//!       region: us-east-1
//!       allowHttp: true
//!       accessKeyId: ${LAKE_KEY_ID}    # secrets only by reference to an environment variable
//!       secretAccessKey: ${LAKE_SECRET}
//!   archive:
//!     url: s3://archive
//!     profile: analytics               # credentials and region of an AWS profile
//! icebergCatalogs:
//!   warehouse:
//!     type: sql                        # PyIceberg's SqlCatalog tables, on SQLite or PostgreSQL
//!     uri: sqlite:catalogs/warehouse.db
//!   lakehouse:
//!     type: rest
//!     uri: https://catalog.example.com/api/catalog
//!     warehouse: prod
//!     options: { token: "${CATALOG_TOKEN}" }
//! ```
//!
//! Secrets never appear in contracts and never as literals in the settings: a secret-bearing
//! option must be a `${VAR}` reference, resolved from the environment of the process that serves
//! the mesh when the store is first used. This module only checks the shape; resolving and using
//! the values is `meshql-catalog`'s job.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One object store: the bucket/container/host it serves and how to reach it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreSettings {
    /// `s3://bucket`, `gs://bucket`, `az://container` (or `abfss://container@account.dfs.core.windows.net`),
    /// `https://host`: every location under it is read through this store.
    pub url: String,
    /// An AWS shared-configuration profile (`~/.aws/credentials`, `~/.aws/config`) for S3 stores.
    #[serde(default)]
    pub profile: Option<String>,
    /// `object_store` options by name (`endpoint`, `region`, `allow_http`, `access_key_id`,
    /// `account_name`, `service_account_path`, …); camelCase spellings are accepted.
    #[serde(default)]
    pub options: BTreeMap<String, OptionValue>,
}

/// An Iceberg catalog products may name (ODCS server `catalog`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcebergCatalogSettings {
    #[serde(rename = "type")]
    pub kind: IcebergCatalogKind,
    /// SQL: `sqlite:<path>` (relative to the mesh root) or `postgresql://user@host/db`
    /// (a password only as `${VAR}`); REST: the catalog's base URL.
    pub uri: String,
    /// The catalog name recorded in the SQL catalog's tables (PyIceberg's catalog name); defaults
    /// to the name of this entry.
    #[serde(default)]
    pub name: Option<String>,
    /// REST: the warehouse to ask the catalog for.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// REST: `token` (bearer), `credential` (`client_id:client_secret` for OAuth2), `scope`,
    /// `oauth2ServerUri`, `prefix`; SQL: `password`. Secrets only as `${VAR}`.
    #[serde(default)]
    pub options: BTreeMap<String, OptionValue>,
}

/// The kinds of Iceberg catalogs meshql reads.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IcebergCatalogKind {
    Sql,
    Rest,
}

/// A scalar option value (YAML booleans and numbers are accepted and used as text).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OptionValue {
    Text(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl OptionValue {
    pub fn as_text(&self) -> String {
        match self {
            OptionValue::Text(s) => s.clone(),
            OptionValue::Bool(b) => b.to_string(),
            OptionValue::Int(i) => i.to_string(),
            OptionValue::Float(f) => f.to_string(),
        }
    }
}

/// `accessKeyId` → `access_key_id` (snake_case names pass through).
pub fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether an option carries a secret (and so may only be given as a `${VAR}` reference).
pub fn is_secret_option(key: &str) -> bool {
    let key = snake_case(key);
    let bare = ["aws_", "azure_storage_", "azure_", "google_", "gcs_"]
        .iter()
        .find_map(|p| key.strip_prefix(p))
        .unwrap_or(&key);
    matches!(
        bare,
        "access_key_id"
            | "secret_access_key"
            | "session_token"
            | "token"
            | "bearer_token"
            | "account_key"
            | "access_key"
            | "master_key"
            | "client_secret"
            | "sas_key"
            | "sas_token"
            | "service_account_key"
            | "password"
            | "credential"
            | "sse_customer_key_base64"
    )
}

/// `${VAR}` → `Some("VAR")`.
pub fn env_reference(value: &str) -> Option<&str> {
    let name = value.trim().strip_prefix("${")?.strip_suffix('}')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}

/// Checks the stores and catalogs of the settings: URLs that parse, no literal secrets, no
/// credentials inside URLs. Returns (field, reason) of the first problem.
pub fn check_settings(
    data_root: Option<&str>,
    stores: &BTreeMap<String, StoreSettings>,
    catalogs: &BTreeMap<String, IcebergCatalogSettings>,
) -> Result<(), (String, String)> {
    if let Some(root) = data_root {
        if let Some((scheme, rest)) = root.split_once("://") {
            let known = [
                "file", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https",
            ];
            if !known.contains(&scheme) {
                return Err(("/dataRoot".into(), format!("unsupported scheme `{scheme}://`")));
            }
            let authority = rest.split('/').next().unwrap_or("");
            if (authority.contains('@') && !scheme.starts_with("abfs")) || rest.contains('?') {
                return Err((
                    "/dataRoot".into(),
                    "the data root may not carry credentials or query parameters; configure its store in `stores`"
                        .into(),
                ));
            }
        }
    }
    for (name, store) in stores {
        let field = format!("/stores/{name}");
        let (scheme, rest) = store
            .url
            .split_once("://")
            .ok_or_else(|| (format!("{field}/url"), format!("`{}` is not a URL", store.url)))?;
        let supported = [
            "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https",
        ];
        if !supported.contains(&scheme) {
            return Err((
                format!("{field}/url"),
                format!("unsupported store scheme `{scheme}://` (supported: s3, gs, az/abfss, http(s))"),
            ));
        }
        if rest.split('/').next().unwrap_or("").contains('@') && !scheme.starts_with("abfs") {
            return Err((
                format!("{field}/url"),
                "the URL carries credentials; give them as options referencing environment variables".into(),
            ));
        }
        if store.profile.is_some() && !matches!(scheme, "s3" | "s3a") {
            return Err((format!("{field}/profile"), "profiles apply to S3 stores only".into()));
        }
        check_options(&field, &store.options)?;
    }
    for (name, catalog) in catalogs {
        let field = format!("/icebergCatalogs/{name}");
        check_options(&field, &catalog.options)?;
        if let Some((_, rest)) = catalog.uri.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if let Some((_, password)) = userinfo.split_once(':') {
                    if env_reference(password).is_none() {
                        return Err((
                            format!("{field}/uri"),
                            "the URI carries a password; write `${VAR}` in its place (an environment variable)".into(),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_options(field: &str, options: &BTreeMap<String, OptionValue>) -> Result<(), (String, String)> {
    for (key, value) in options {
        if is_secret_option(key) {
            let literal = match value {
                OptionValue::Text(s) => env_reference(s).is_none(),
                _ => true,
            };
            if literal {
                // The value is never repeated: it may be a secret.
                return Err((
                    format!("{field}/options/{key}"),
                    "secrets may only be given as a reference to an environment variable (`${VAR}`), never as the value itself".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str, options: &[(&str, &str)]) -> BTreeMap<String, StoreSettings> {
        BTreeMap::from([(
            "s".to_string(),
            StoreSettings {
                url: url.into(),
                profile: None,
                options: options
                    .iter()
                    .map(|(k, v)| (k.to_string(), OptionValue::Text(v.to_string())))
                    .collect(),
            },
        )])
    }

    #[test]
    fn secrets_only_by_reference() {
        let none = BTreeMap::new();
        assert!(check_settings(None, &store("s3://b", &[("secretAccessKey", "${S}")]), &none).is_ok());
        let (field, reason) =
            check_settings(None, &store("s3://b", &[("secretAccessKey", "hunter2")]), &none).unwrap_err();
        assert_eq!(field, "/stores/s/options/secretAccessKey");
        assert!(!reason.contains("hunter2"));
        assert!(check_settings(None, &store("az://c", &[("azure_storage_account_key", "abc")]), &none).is_err());
        assert!(check_settings(None, &store("gs://b", &[("serviceAccountKey", "{}")]), &none).is_err());
        // not secrets
        assert!(check_settings(
            None,
            &store("s3://b", &[("region", "eu"), ("endpoint", "http://x")]),
            &none
        )
        .is_ok());
        assert!(check_settings(None, &store("s3://key:secret@b", &[]), &none).is_err());
        assert!(check_settings(None, &store("ftp://b", &[]), &none).is_err());
    }

    #[test]
    fn catalog_uri_passwords_by_reference() {
        let cat = |uri: &str| {
            BTreeMap::from([(
                "c".to_string(),
                IcebergCatalogSettings {
                    kind: IcebergCatalogKind::Sql,
                    uri: uri.into(),
                    name: None,
                    warehouse: None,
                    options: BTreeMap::new(),
                },
            )])
        };
        let none = BTreeMap::new();
        assert!(check_settings(None, &none, &cat("postgresql://u:${PG_PASS}@h/db")).is_ok());
        assert!(check_settings(None, &none, &cat("postgresql://u@h/db")).is_ok());
        assert!(check_settings(None, &none, &cat("postgresql://u:pw@h/db")).is_err());
    }

    #[test]
    fn data_roots() {
        let (none, no_catalogs) = (BTreeMap::new(), BTreeMap::new());
        assert!(check_settings(Some("s3://lake/mesh/"), &none, &no_catalogs).is_ok());
        assert!(check_settings(Some("data"), &none, &no_catalogs).is_ok());
        assert!(check_settings(Some("ftp://x/"), &none, &no_catalogs).is_err());
        assert!(check_settings(Some("s3://k:s@lake/"), &none, &no_catalogs).is_err());
        assert!(check_settings(Some("https://h/x?sig=1"), &none, &no_catalogs).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(snake_case("accessKeyId"), "access_key_id");
        assert_eq!(snake_case("allow_http"), "allow_http");
        assert_eq!(env_reference("${A_B1}"), Some("A_B1"));
        assert_eq!(env_reference("$A"), None);
        assert!(is_secret_option("aws_secret_access_key"));
        assert!(!is_secret_option("endpoint"));
    }
}
