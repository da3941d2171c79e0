//! Remote object-store clients (S3 and S3-compatible, GCS, Azure Blob / ADLS, HTTP) built from
//! the mesh settings, the environment and AWS profiles.
//!
//! Building a client is pure configuration — no request is made — so a store that is
//! misconfigured or unreachable fails the products that use it when they are read, each with
//! the store's name and the reason, and nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use meshql_contract::storage::{is_secret_option, snake_case};
use meshql_contract::StoreSettings;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{ClientConfigKey, ObjectStore};
use url::Url;

use crate::secrets;

/// The kinds of remote stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    S3,
    Gcs,
    Azure,
    Http,
}

impl StoreKind {
    /// The kind serving URLs of `scheme`, if any.
    pub fn of_scheme(scheme: &str) -> Option<StoreKind> {
        match scheme {
            "s3" | "s3a" => Some(StoreKind::S3),
            "gs" => Some(StoreKind::Gcs),
            "az" | "adl" | "azure" | "abfs" | "abfss" => Some(StoreKind::Azure),
            "http" | "https" => Some(StoreKind::Http),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            StoreKind::S3 => "S3",
            StoreKind::Gcs => "GCS",
            StoreKind::Azure => "Azure",
            StoreKind::Http => "HTTP",
        }
    }
}

/// Why a store client could not be made. Never contains a secret value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store `{store}`: {reason}")]
pub struct StoreConfigError {
    pub store: String,
    pub reason: String,
}

/// A store's configuration, resolved: the kind, the URL it serves and the options to apply.
#[derive(Clone)]
pub struct StorePlan {
    pub name: String,
    pub kind: StoreKind,
    /// `scheme://authority` (S3 bucket, GCS bucket, Azure container, HTTP origin).
    pub url: String,
    /// Canonical option names (snake_case) and resolved values, applied over the environment's
    /// variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for StorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_option(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("StorePlan")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("options", &options)
            .finish()
    }
}

impl StorePlan {
    /// The plan of a configured store: options from the settings (`${VAR}` references resolved),
    /// over the profile's values, over the environment.
    pub fn configured(name: &str, settings: &StoreSettings) -> Result<StorePlan, StoreConfigError> {
        let err = |reason: String| StoreConfigError {
            store: name.to_string(),
            reason,
        };
        let url = Url::parse(&settings.url).map_err(|e| err(format!("url `{}`: {e}", settings.url)))?;
        let kind = StoreKind::of_scheme(url.scheme())
            .ok_or_else(|| err(format!("unsupported store scheme `{}://`", url.scheme())))?;
        if !(url.path().is_empty() || url.path() == "/") {
            return Err(err(format!(
                "url `{}` names a path; a store serves a whole bucket, container or host (scheme://name)",
                settings.url
            )));
        }
        let mut options = BTreeMap::new();
        if let Some(profile) = &settings.profile {
            options.extend(aws_profile(profile).map_err(err)?);
        }
        for (key, value) in &settings.options {
            let key = snake_case(key);
            let value = secrets::resolve(&value.as_text(), is_secret_option(&key))
                .map_err(|e| err(format!("option `{key}`: {}", e.0)))?;
            options.insert(key, value);
        }
        let plan = StorePlan {
            name: name.to_string(),
            kind,
            url: origin(&url),
            options,
        };
        Ok(plan)
    }

    /// The plan for a location no configured store serves: the environment's credentials.
    pub fn from_environment(url: &Url) -> Option<StorePlan> {
        let kind = StoreKind::of_scheme(url.scheme())?;
        Some(StorePlan {
            name: origin(url),
            kind,
            url: origin(url),
            options: BTreeMap::new(),
        })
    }

    /// Makes the client. No request is sent. Every option must be one the store kind knows (a
    /// typo must not silently fall back to a default, such as the wrong endpoint).
    pub fn build(&self) -> Result<Arc<dyn ObjectStore>, StoreConfigError> {
        let err = |e: object_store::Error| StoreConfigError {
            store: self.name.clone(),
            reason: secrets::redact(&e.to_string()),
        };
        let unknown = |key: &str| StoreConfigError {
            store: self.name.clone(),
            reason: format!("unknown option `{key}` for {} stores", self.kind.label()),
        };
        Ok(match self.kind {
            StoreKind::S3 => {
                let mut b = AmazonS3Builder::from_env().with_url(&self.url);
                for (k, v) in &self.options {
                    b = b.with_config(AmazonS3ConfigKey::from_str(k).map_err(|_| unknown(k))?, v);
                }
                Arc::new(b.build().map_err(err)?)
            }
            StoreKind::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_url(&self.url);
                for (k, v) in &self.options {
                    b = b.with_config(GoogleConfigKey::from_str(k).map_err(|_| unknown(k))?, v);
                }
                Arc::new(b.build().map_err(err)?)
            }
            StoreKind::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env().with_url(&self.url);
                for (k, v) in &self.options {
                    b = b.with_config(AzureConfigKey::from_str(k).map_err(|_| unknown(k))?, v);
                }
                Arc::new(b.build().map_err(err)?)
            }
            StoreKind::Http => {
                let mut b = HttpBuilder::new().with_url(&self.url);
                for (k, v) in &self.options {
                    b = b.with_config(ClientConfigKey::from_str(k).map_err(|_| unknown(k))?, v);
                }
                Arc::new(b.build().map_err(err)?)
            }
        })
    }
}

/// `scheme://authority` of a URL (`s3a` read as `s3`).
pub fn origin(url: &Url) -> String {
    let scheme = if url.scheme() == "s3a" { "s3" } else { url.scheme() };
    let authority = &url[url::Position::BeforeUsername..url::Position::AfterPort];
    format!("{scheme}://{authority}")
}

/// Credentials and region of an AWS profile, from the shared credentials and config files
/// (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, default `~/.aws/…`).
///
/// What works: static keys (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`),
/// `region` and `endpoint_url`; a key in both files is taken from the credentials file, as the
/// AWS CLI does, and explicit store options win over both. A profile that gets its
/// credentials another way (`role_arn`, `credential_process`, `sso_*`,
/// `web_identity_token_file`) is refused with a message naming the key: object_store, which
/// makes the requests, has no assume-role or SSO client, and silently using the profile's other
/// keys would read with the wrong identity. Use the environment for those (object_store reads
/// `AWS_WEB_IDENTITY_TOKEN_FILE`/`AWS_ROLE_ARN`, ECS and instance metadata by itself).
///
/// Why not the AWS SDK's profile loader: `aws-config` (without default features) adds 25 crates
/// to the build, among them `aws-sdk-sts` and the smithy runtime (measured with `cargo tree` on
/// 2026-12-02), for a file format of a few lines; and what it would resolve beyond static keys
/// object_store cannot use. Why not a generic INI crate: the AWS format is not plain INI —
/// `[profile x]` in one file and `[x]` in the other, indented sub-properties, `#`/`;` comments
/// only at the start of a line or after whitespace — so the format is read here, to the AWS CLI's
/// rules, and tested below.
fn aws_profile(profile: &str) -> Result<BTreeMap<String, String>, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(default))
    };
    let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = file("AWS_CONFIG_FILE", "config");
    let credentials = std::fs::read_to_string(&credentials_file)
        .ok()
        .and_then(|text| profile_section(&text, |name| name == profile));
    let config = std::fs::read_to_string(&config_file).ok().and_then(|text| {
        profile_section(&text, |name| match name.strip_prefix("profile") {
            Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim() == profile,
            _ => profile == "default" && name == "default",
        })
    });
    if credentials.is_none() && config.is_none() {
        return Err(format!(
            "AWS profile `{profile}` is in neither {} nor {}",
            credentials_file.display(),
            config_file.display()
        ));
    }
    let mut out = BTreeMap::new();
    // The config file first, then the credentials file over it (the AWS CLI's precedence).
    for section in [config, credentials].into_iter().flatten() {
        for (key, value) in section {
            let key = match key.as_str() {
                "aws_access_key_id" => "access_key_id",
                "aws_secret_access_key" => "secret_access_key",
                "aws_session_token" => "session_token",
                "region" => "region",
                "endpoint_url" => "endpoint",
                "role_arn"
                | "source_profile"
                | "credential_source"
                | "credential_process"
                | "web_identity_token_file"
                | "sso_session"
                | "sso_start_url"
                | "sso_account_id"
                | "sso_role_name" => {
                    return Err(format!(
                        "AWS profile `{profile}` gets its credentials through `{key}`, which meshql \
                         does not support: give static keys, or leave `profile` out and let the \
                         environment (AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, ECS or \
                         instance metadata) provide them"
                    ))
                }
                _ => continue,
            };
            if is_secret_option(key) {
                secrets::register(&value);
            }
            out.insert(key.to_string(), value);
        }
    }
    Ok(out)
}

/// The `key = value` pairs of the first section whose name `wanted` accepts, in an AWS
/// shared-config text. Keys are case-insensitive; indented lines are sub-properties of the key
/// above (`s3 =` then `  addressing_style = path`) and are skipped; `#` and `;` start a comment
/// at the start of a line or after whitespace.
fn profile_section(text: &str, wanted: impl Fn(&str) -> bool) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = false;
    let mut out = Vec::new();
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = without_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // Only the first matching section counts; later duplicates are ignored, as the CLI does.
            inside = !found && wanted(name.trim());
            found |= inside;
            continue;
        }
        if inside && !indented {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    found.then_some(out)
}

/// `line` up to a comment: `#` or `;` at its start or after whitespace.
fn without_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if (*b == b'#' || *b == b';') && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshql_contract::OptionValue;

    fn settings(url: &str, options: &[(&str, &str)]) -> StoreSettings {
        StoreSettings {
            url: url.into(),
            profile: None,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), OptionValue::Text(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn s3_options_by_any_spelling_with_secrets_from_the_environment() {
        std::env::set_var("MESHQL_CLOUD_TEST_KEY", "AKIDTESTKEY1");
        std::env::set_var("MESHQL_CLOUD_TEST_SECRET", "s3cr3t-s3-value");
        let plan = StorePlan::configured(
            "lake",
            &settings(
                "s3://lake",
                &[
                    ("endpoint", "http://127.0.0.1:9000"),
                    ("allowHttp", "true"),
                    ("accessKeyId", "${MESHQL_CLOUD_TEST_KEY}"),
                    ("secretAccessKey", "${MESHQL_CLOUD_TEST_SECRET}"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(plan.kind, StoreKind::S3);
        assert_eq!(plan.url, "s3://lake");
        assert_eq!(plan.options["secret_access_key"], "s3cr3t-s3-value");
        assert_eq!(plan.options["allow_http"], "true");
        let shown = format!("{plan:?}");
        assert!(
            !shown.contains("s3cr3t-s3-value") && !shown.contains("AKIDTESTKEY1"),
            "{shown}"
        );
        plan.build().unwrap();
    }

    #[test]
    fn unknown_options_paths_and_missing_variables_are_errors() {
        let e = StorePlan::configured("x", &settings("s3://b", &[("endpiont", "http://x")]))
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("unknown option `endpiont` for S3 stores"), "{e}");
        let e = StorePlan::configured("x", &settings("s3://b/some/prefix", &[])).unwrap_err();
        assert!(e.to_string().contains("names a path"), "{e}");
        let e = StorePlan::configured(
            "x",
            &settings("gs://b", &[("serviceAccountKey", "${MESHQL_UNSET_VAR_1}")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("MESHQL_UNSET_VAR_1 is not set"), "{e}");
    }

    #[test]
    fn gcs_configuration() {
        let plan = StorePlan::configured(
            "g",
            &settings("gs://analytics-bucket", &[("serviceAccountPath", "/etc/gcs/key.json")]),
        )
        .unwrap();
        assert_eq!(plan.kind, StoreKind::Gcs);
        assert_eq!(plan.options["service_account_path"], "/etc/gcs/key.json");
        // a key that is not a service account key fails to build, naming the store, not the key
        std::env::set_var("MESHQL_CLOUD_TEST_GCS_KEY", "{\"not\": \"a key\"}");
        let bad = StorePlan::configured(
            "g",
            &settings("gs://b", &[("serviceAccountKey", "${MESHQL_CLOUD_TEST_GCS_KEY}")]),
        )
        .unwrap();
        let e = bad.build().unwrap_err();
        assert!(e.to_string().starts_with("store `g`:"), "{e}");
        assert!(!e.to_string().contains("a key\""), "{e}");
        // without explicit credentials the client still builds (credentials come later, from
        // the environment or the metadata server)
        StorePlan::configured("g", &settings("gs://b", &[]))
            .unwrap()
            .build()
            .unwrap();
    }

    #[test]
    fn azure_configuration() {
        std::env::set_var("MESHQL_CLOUD_TEST_AZ_KEY", "c2VjcmV0LWF6dXJlLWtleQ==");
        let plan = StorePlan::configured(
            "adls",
            &settings(
                "abfss://sales@acct.dfs.core.windows.net",
                &[("accountKey", "${MESHQL_CLOUD_TEST_AZ_KEY}")],
            ),
        )
        .unwrap();
        assert_eq!(plan.kind, StoreKind::Azure);
        assert_eq!(plan.url, "abfss://sales@acct.dfs.core.windows.net");
        plan.build().unwrap();
        let plan = StorePlan::configured(
            "blob",
            &settings(
                "az://container",
                &[("accountName", "acct"), ("accountKey", "${MESHQL_CLOUD_TEST_AZ_KEY}")],
            ),
        )
        .unwrap();
        plan.build().unwrap();
        assert!(!format!("{plan:?}").contains("c2VjcmV0"));
        let e = StorePlan::configured("blob", &settings("az://c", &[("bucket", "x")]))
            .unwrap()
            .build()
            .unwrap_err();
        assert!(
            e.to_string().contains("unknown option `bucket` for Azure stores"),
            "{e}"
        );
    }

    #[test]
    fn http_is_an_origin() {
        let plan = StorePlan::configured("web", &settings("https://data.example.com", &[("timeout", "30s")])).unwrap();
        assert_eq!(plan.kind, StoreKind::Http);
        plan.build().unwrap();
        let url = Url::parse("https://data.example.com:8443/x/y.parquet").unwrap();
        assert_eq!(origin(&url), "https://data.example.com:8443");
    }

    #[test]
    fn profiles() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = DEF\n[analytics]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret-xyz\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile analytics]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:1\n",
        )
        .unwrap();
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);
        std::env::set_var("AWS_CONFIG_FILE", &config);
        let mut s = settings("s3://b", &[("region", "us-east-2")]);
        s.profile = Some("analytics".into());
        let plan = StorePlan::configured("p", &s).unwrap();
        assert_eq!(plan.options["access_key_id"], "AKIDPROFILE");
        assert_eq!(plan.options["endpoint"], "http://127.0.0.1:1");
        // explicit options win over the profile
        assert_eq!(plan.options["region"], "us-east-2");
        assert_eq!(secrets::redact("x profile-secret-xyz y"), "x *** y");
        s.profile = Some("nope".into());
        let e = StorePlan::configured("p", &s).unwrap_err();
        assert!(e.to_string().contains("AWS profile `nope`"), "{e}");

        // The AWS format: `[profile default]`, sub-properties, comments, duplicates.
        std::fs::write(&creds, "# keys\n[ci]\naws_access_key_id = FROMCREDS ; old\n").unwrap();
        std::fs::write(
            &config,
            "[profile default]\nregion = ap-south-1\n[profile ci]\nregion = eu-north-1 # here\ns3 =\n  endpoint_url = http://wrong\n\
             [profile ci]\nregion = ignored-duplicate\n[profile assumed]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = ci\n",
        )
        .unwrap();
        s.profile = Some("ci".into());
        s.options.remove("region");
        let plan = StorePlan::configured("p", &s).unwrap();
        assert_eq!(plan.options["access_key_id"], "FROMCREDS");
        assert_eq!(plan.options["region"], "eu-north-1");
        assert!(!plan.options.contains_key("endpoint"), "{:?}", plan.options);
        s.profile = Some("default".into());
        assert_eq!(StorePlan::configured("p", &s).unwrap().options["region"], "ap-south-1");
        s.profile = Some("assumed".into());
        let e = StorePlan::configured("p", &s).unwrap_err();
        assert!(e.to_string().contains("`role_arn`"), "{e}");
        std::env::remove_var("AWS_SHARED_CREDENTIALS_FILE");
        std::env::remove_var("AWS_CONFIG_FILE");
    }
}
