//! The server's configuration: a YAML file (`meshql serve --config server.yaml`), overridable
//! by command-line flags. Secrets are never written in it: keys are named by environment
//! variable or file, passwords and service tokens are stored as hashes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::FlightError;

/// Everything `meshql serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (the bound address is logged and printed).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub results: ResultOptions,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls: None,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            results: ResultOptions::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 32010))
}

/// TLS for the listener; with `clientCa`, clients must present a certificate it signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Who may connect and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Key that signs session tokens, statement handles and tickets. Replicas behind one load
    /// balancer must share it. Without one, a random key is made at start-up: tokens and handles
    /// then die with the process.
    #[serde(default)]
    pub signing_key: Option<SecretRef>,
    /// Lifetime of the session token a password login returns.
    #[serde(default = "default_token_ttl", with = "seconds")]
    pub token_ttl: Duration,
    /// Lifetime of prepared-statement handles and tickets.
    #[serde(default = "default_handle_ttl", with = "seconds")]
    pub handle_ttl: Duration,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub service_tokens: Vec<ServiceTokenConfig>,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub anonymous: AnonymousConfig,
    /// Serve with a signing key published in meshql's repository (the demo's) on an address
    /// other than loopback. Anyone can mint tokens with such a key: for demos only.
    #[serde(default)]
    pub allow_demo_key: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signing_key: None,
            token_ttl: default_token_ttl(),
            handle_ttl: default_handle_ttl(),
            users: Vec::new(),
            service_tokens: Vec::new(),
            jwt: None,
            anonymous: AnonymousConfig::default(),
            allow_demo_key: false,
        }
    }
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_handle_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A secret named by where it lives, never its value: `{env: VAR}` or `{file: path}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SecretRefFields")]
pub enum SecretRef {
    /// An environment variable holding the secret.
    Env(String),
    /// A file holding the secret (surrounding whitespace ignored); relative to the config file.
    File(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRefFields {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<SecretRefFields> for SecretRef {
    type Error = String;

    fn try_from(f: SecretRefFields) -> Result<Self, Self::Error> {
        match (f.env, f.file) {
            (Some(env), None) => Ok(SecretRef::Env(env)),
            (None, Some(file)) => Ok(SecretRef::File(file)),
            _ => Err("a secret is given as exactly one of {env: VARIABLE} or {file: PATH}".into()),
        }
    }
}

impl SecretRef {
    /// Reads the secret.
    pub fn read(&self) -> Result<Vec<u8>, FlightError> {
        let raw = match self {
            SecretRef::Env(var) => std::env::var(var)
                .map_err(|_| FlightError::Config(format!("environment variable {var} (signing key) is not set")))?
                .into_bytes(),
            SecretRef::File(path) => std::fs::read(path)
                .map_err(|e| FlightError::Config(format!("cannot read key file {}: {e}", path.display())))?,
        };
        // Only surrounding ASCII whitespace goes: a binary key keeps every byte.
        Ok(raw.trim_ascii().to_vec())
    }
}

/// A user who logs in with a password (Flight handshake with HTTP basic credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Argon2 hash in PHC form (`meshql auth hash-password` makes one).
    pub password_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// A disabled user cannot log in, and the tokens already issued to them stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Session tokens issued before this time (Unix seconds) are refused: revokes them all.
    #[serde(default)]
    pub tokens_valid_after: Option<i64>,
}

/// A long-lived token for a service (dashboards, embedded analytics), sent as
/// `authorization: Bearer <token>` on every call.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceTokenConfig {
    /// The principal the token authenticates as.
    pub name: String,
    /// `sha256:<hex>` of the token (`meshql auth new-service-token` makes both).
    pub token_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub revoked: bool,
}

/// Single sign-on: JWTs from an identity provider, checked against a local JWKS file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    /// The provider's public keys (JWKS JSON).
    pub jwks_file: PathBuf,
    /// Claim naming the principal.
    #[serde(default = "default_subject_claim")]
    pub principal_claim: String,
    /// Claim listing the principal's groups (an array of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Principal attribute → claim holding its value.
    #[serde(default)]
    pub attribute_claims: BTreeMap<String, String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "seconds")]
    pub leeway: Duration,
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

/// Unauthenticated access, off unless enabled.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnonymousConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The principal anonymous callers are (default `anonymous`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Resource limits per query and for the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Memory one query's operators may hold (bytes, or with a unit: `512MiB`, `2GiB`).
    #[serde(default = "default_memory", deserialize_with = "bytes")]
    pub memory_per_query: usize,
    /// Memory all running queries' operators may hold together (bytes or with a unit); a query
    /// that would go beyond fails with RESOURCE_EXHAUSTED (its sorts and joins spill first).
    /// Default: three quarters of the machine's memory (or of the container's limit).
    #[serde(default = "default_memory_total", deserialize_with = "bytes")]
    pub memory_total: usize,
    /// Wall-clock limit of one query, from the first DoGet until its last batch.
    #[serde(default = "default_timeout", with = "seconds")]
    pub query_timeout: Duration,
    /// Queries running at once; more wait for a slot (up to the query timeout).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_queries: usize,
    /// Queries expected to read more rows than this (the products' row counts, from Parquet
    /// footers, Delta logs and Iceberg manifests) run on threads of lower CPU priority, so that
    /// small queries keep answering in milliseconds while large ones run; alone, a large query
    /// runs as fast as before. 0 runs every query at normal priority.
    #[serde(default = "default_large_query_rows")]
    pub large_query_rows: usize,
    /// Password verifications (argon2: ~19 MiB and a core each) running at once; more logins
    /// wait up to 10 s for their turn, then get UNAVAILABLE. Default: the number of cores.
    #[serde(default = "default_concurrent_logins")]
    pub max_concurrent_logins: usize,
    /// Failed logins one source address may make per minute; beyond, its logins are refused
    /// (UNAUTHENTICATED, as for a wrong password) without checking, until the minute has passed.
    #[serde(default = "default_failed_logins")]
    pub max_failed_logins_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_per_query: default_memory(),
            memory_total: default_memory_total(),
            query_timeout: default_timeout(),
            max_concurrent_queries: default_concurrency(),
            large_query_rows: default_large_query_rows(),
            max_concurrent_logins: default_concurrent_logins(),
            max_failed_logins_per_minute: default_failed_logins(),
        }
    }
}

fn default_concurrent_logins() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn default_failed_logins() -> u32 {
    20
}

fn default_memory_total() -> usize {
    meshql::memory::available_memory().map_or(8 << 30, |m| m / 4 * 3)
}

fn default_memory() -> usize {
    4 << 30
}

fn default_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_concurrency() -> usize {
    32
}

fn default_large_query_rows() -> usize {
    2_000_000
}

/// How results are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultOptions {
    /// Send Utf8View/BinaryView (and view lists) as Utf8/Binary/List: the Arrow Flight SQL JDBC
    /// driver and older clients do not read view types.
    #[serde(default = "yes")]
    pub plain_types: bool,
    /// Largest Flight data message, below gRPC's usual 4 MiB receive limit.
    #[serde(default = "default_message", deserialize_with = "bytes")]
    pub max_message_bytes: usize,
    /// At most this many endpoints per query result. Above 1, a query whose plan is a scan
    /// (filtered, projected, shaped by policies) is answered with one endpoint per group of
    /// its independent partitions, unordered, so clients that fetch endpoints in parallel
    /// (ADBC, Spark, custom pyarrow code) read it over several streams. Queries with a join,
    /// aggregate, sort or limit keep one endpoint. 1 (the default) suits clients that read
    /// only the first endpoint.
    #[serde(default = "one")]
    pub max_endpoints: usize,
}

impl Default for ResultOptions {
    fn default() -> Self {
        ResultOptions {
            plain_types: true,
            max_message_bytes: default_message(),
            max_endpoints: 1,
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn default_message() -> usize {
    2 << 20
}

impl ServerConfig {
    /// Reads a configuration file; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<ServerConfig, FlightError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FlightError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config: ServerConfig =
            serde_yaml::from_str(&text).map_err(|e| FlightError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
        }
        if let Some(SecretRef::File(p)) = &mut self.auth.signing_key {
            fix(p);
        }
        if let Some(jwt) = &mut self.auth.jwt {
            fix(&mut jwt.jwks_file);
        }
    }
}

/// `Duration` as whole seconds in YAML.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// Byte sizes: an integer, or a number with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`).
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(usize),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => Ok(n),
        Size::S(s) => {
            parse_size(&s).ok_or_else(|| serde::de::Error::custom(format!("not a size: {s:?} (e.g. 512MiB)")))
        }
    }
}

/// Parses `2GiB`, `512 MB`, `1048576`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_configuration_loads_as_documented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/server/server.yaml");
        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(config.limits.max_concurrent_queries, 32);
        assert_eq!(config.limits.large_query_rows, 2_000_000);
        assert_eq!(config.limits.query_timeout, Duration::from_secs(900));
        assert!(config.results.plain_types);
        // Unset, the defaults are the documented ones.
        let empty: ServerConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(empty.limits.large_query_rows, 2_000_000);
    }

    #[test]
    fn secrets_keep_their_bytes_and_lose_only_surrounding_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key: Vec<u8> = vec![0xff, 0x00, b' ', 0xfe, 0x80];
        std::fs::write(&path, [key.as_slice(), b"\n"].concat()).unwrap();
        assert_eq!(SecretRef::File(path).read().unwrap(), key);
        let missing = SecretRef::Env("MESHQL_TEST_SURELY_UNSET".into()).read().unwrap_err();
        assert!(missing.to_string().contains("MESHQL_TEST_SURELY_UNSET"), "{missing}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("512 MB"), Some(512_000_000));
        assert_eq!(parse_size("77"), Some(77));
        assert_eq!(parse_size("1 XB"), None);
        assert_eq!(parse_size("MiB"), None);
    }

    #[test]
    fn parses_a_full_file_and_rejects_unknown_keys() {
        let c: ServerConfig = serde_yaml::from_str(
            r#"
listen: 0.0.0.0:1234
auth:
  signingKey: {env: KEY}
  tokenTtl: 60
  users: [{name: a, passwordHash: "$argon2id$x", groups: [g], attributes: {region: EU}}]
  serviceTokens: [{name: s, tokenHash: "sha256:00"}]
  anonymous: {enabled: true}
limits: {memoryPerQuery: 1GiB, queryTimeout: 5, maxConcurrentQueries: 2}
results: {plainTypes: false, maxEndpoints: 8}
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.auth.token_ttl, Duration::from_secs(60));
        assert_eq!(c.limits.memory_per_query, 1 << 30);
        assert!(!c.results.plain_types && c.auth.anonymous.enabled);
        assert_eq!(c.results.max_endpoints, 8);
        let err = serde_yaml::from_str::<ServerConfig>("listen: 0.0.0.0:1\nusers: []\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `users`"), "{err}");
    }
}
