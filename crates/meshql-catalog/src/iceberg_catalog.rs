//! Iceberg catalogs: where a table's current metadata file is, by namespace and name.
//!
//! - **SQL** catalogs are the tables PyIceberg's `SqlCatalog` (and iceberg-rust's) keep in SQLite
//!   or PostgreSQL: one row per table in `iceberg_tables` with its `metadata_location`. meshql
//!   reads that row (SQLite read-only) and nothing else.
//! - **REST** catalogs follow the Iceberg REST catalog protocol: `GET /v1/config`, then
//!   `GET /v1/{prefix}/namespaces/{ns}/tables/{table}` for the metadata location, with a bearer
//!   token or OAuth2 client credentials.
//!
//! Either way only the metadata location comes from the catalog; the metadata and data files
//! are read through meshql's object stores like any other Iceberg table, so store credentials
//! and relocation apply unchanged. Connections are made on first use and shared by every
//! product of the catalog.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use meshql_contract::storage::{is_secret_option, snake_case};
use meshql_contract::{CatalogTable, IcebergCatalogKind, IcebergCatalogSettings};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::Mutex;

use crate::secrets;

/// Why a catalog lookup failed. Shown redacted: never contains a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Iceberg catalog `{catalog}`: {}", secrets::redact(&.source.to_string()))]
pub struct CatalogLookupError {
    pub catalog: String,
    #[source]
    pub source: Arc<LookupFailure>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong asking an Iceberg catalog, by kind; the underlying error is the source.
#[derive(Debug, thiserror::Error)]
pub enum LookupFailure {
    /// The catalog's settings in `mesh.yaml` are wrong or incomplete.
    #[error("{0}")]
    Settings(String),
    /// The catalog (or its token endpoint) could not be reached or opened.
    #[error("{what}: {source}")]
    Unreachable {
        what: String,
        #[source]
        source: BoxError,
    },
    /// The catalog has no such table.
    #[error("{0}")]
    NotFound(String),
    /// The catalog refused the request or the credentials.
    #[error("{0}")]
    Refused(String),
    /// The catalog answered something that is not what the protocol says.
    #[error("{what}: {source}")]
    Malformed {
        what: String,
        #[source]
        source: BoxError,
    },
}

fn unreachable(what: impl Into<String>) -> impl FnOnce(BoxError) -> LookupFailure {
    let what = what.into();
    move |source| LookupFailure::Unreachable { what, source }
}

fn malformed(what: impl Into<String>) -> impl FnOnce(BoxError) -> LookupFailure {
    let what = what.into();
    move |source| LookupFailure::Malformed { what, source }
}

/// The mesh's Iceberg catalogs, connected on first use.
#[derive(Default)]
pub struct IcebergCatalogs {
    root: PathBuf,
    settings: std::collections::BTreeMap<String, IcebergCatalogSettings>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl std::fmt::Debug for IcebergCatalogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergCatalogs")
            .field("catalogs", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

enum Client {
    Sqlite { pool: SqlitePool, name: String },
    Postgres { pool: PgPool, name: String },
    Rest(Box<RestCatalog>),
}

impl IcebergCatalogs {
    pub fn new(root: &Path, settings: std::collections::BTreeMap<String, IcebergCatalogSettings>) -> Self {
        IcebergCatalogs {
            root: root.to_path_buf(),
            settings,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The current metadata file of `table`, as the catalog records it.
    pub async fn metadata_location(&self, table: &CatalogTable) -> Result<String, CatalogLookupError> {
        let err = |failure: LookupFailure| CatalogLookupError {
            catalog: table.catalog.clone(),
            source: Arc::new(failure),
        };
        let client = self.client(&table.catalog).await.map_err(err)?;
        let found = match client.as_ref() {
            Client::Sqlite { pool, name } => sql_lookup_sqlite(pool, name, table).await,
            Client::Postgres { pool, name } => sql_lookup_postgres(pool, name, table).await,
            Client::Rest(rest) => rest.metadata_location(table).await,
        };
        found.map_err(err)
    }

    async fn client(&self, name: &str) -> Result<Arc<Client>, LookupFailure> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(name) {
            return Ok(c.clone());
        }
        let settings = self
            .settings
            .get(name)
            .ok_or_else(|| LookupFailure::Settings("not defined in mesh.yaml (icebergCatalogs)".into()))?;
        let client = Arc::new(connect(&self.root, name, settings).await?);
        clients.insert(name.to_string(), client.clone());
        Ok(client)
    }
}

fn option(settings: &IcebergCatalogSettings, key: &str) -> Result<Option<String>, LookupFailure> {
    let Some((k, v)) = settings.options.iter().find(|(k, _)| snake_case(k) == key) else {
        return Ok(None);
    };
    secrets::resolve(&v.as_text(), is_secret_option(k))
        .map(Some)
        .map_err(|e| LookupFailure::Settings(format!("option `{k}`: {}", e.0)))
}

async fn connect(root: &Path, name: &str, settings: &IcebergCatalogSettings) -> Result<Client, LookupFailure> {
    let catalog_name = settings.name.clone().unwrap_or_else(|| name.to_string());
    match settings.kind {
        IcebergCatalogKind::Sql => {
            let uri =
                secrets::resolve(&settings.uri, false).map_err(|e| LookupFailure::Settings(format!("uri: {}", e.0)))?;
            let (scheme, rest) = uri
                .split_once(':')
                .ok_or_else(|| LookupFailure::Settings(format!("uri `{uri}` has no scheme")))?;
            // SQLAlchemy spellings (PyIceberg's) are accepted: `postgresql+psycopg2://…`.
            let scheme = scheme.split('+').next().unwrap_or(scheme);
            match scheme {
                "sqlite" => {
                    let path = sqlite_path(root, rest);
                    if !path.is_file() {
                        return Err(LookupFailure::Settings(format!(
                            "SQLite catalog file {} does not exist",
                            path.display()
                        )));
                    }
                    let options = SqliteConnectOptions::new()
                        .filename(&path)
                        .read_only(true)
                        .create_if_missing(false);
                    let pool = SqlitePoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_with(options)
                        .await
                        .map_err(|e| unreachable(format!("cannot open SQLite catalog {}", path.display()))(e.into()))?;
                    Ok(Client::Sqlite {
                        pool,
                        name: catalog_name,
                    })
                }
                "postgres" | "postgresql" => {
                    let url = format!("postgresql:{rest}");
                    let mut options =
                        PgConnectOptions::from_str(&url).map_err(|e| LookupFailure::Settings(format!("uri: {e}")))?;
                    if let Some(password) = option(settings, "password")? {
                        options = options.password(&password);
                    }
                    let pool = PgPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_lazy_with(options);
                    Ok(Client::Postgres {
                        pool,
                        name: catalog_name,
                    })
                }
                other => Err(LookupFailure::Settings(format!(
                    "unsupported SQL catalog `{other}:` (sqlite: or postgresql://)"
                ))),
            }
        }
        IcebergCatalogKind::Rest => Ok(Client::Rest(Box::new(RestCatalog::new(settings)?))),
    }
}

/// `sqlite:` URI tail → file path: `///abs` or `////abs` (SQLAlchemy), `//path`, `path`;
/// relative paths are relative to the mesh root.
fn sqlite_path(root: &Path, rest: &str) -> PathBuf {
    let p = rest
        .strip_prefix("///")
        .or_else(|| rest.strip_prefix("//"))
        .unwrap_or(rest);
    let p = p.split('?').next().unwrap_or(p);
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    }
}

const LOOKUP: &str = "SELECT metadata_location FROM iceberg_tables \
     WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3";

fn not_found(catalog_name: &str) -> LookupFailure {
    LookupFailure::NotFound(format!(
        "not in the catalog (no row for catalog name `{catalog_name}` in iceberg_tables)"
    ))
}

async fn sql_lookup_sqlite(pool: &SqlitePool, name: &str, table: &CatalogTable) -> Result<String, LookupFailure> {
    let row: Option<Option<String>> = sqlx::query_scalar(LOOKUP)
        .bind(name)
        .bind(table.namespace.join("."))
        .bind(&table.table)
        .fetch_optional(pool)
        .await
        .map_err(|e| unreachable("lookup failed")(e.into()))?;
    row.flatten().ok_or_else(|| not_found(name))
}

async fn sql_lookup_postgres(pool: &PgPool, name: &str, table: &CatalogTable) -> Result<String, LookupFailure> {
    let row: Option<Option<String>> = sqlx::query_scalar(LOOKUP)
        .bind(name)
        .bind(table.namespace.join("."))
        .bind(&table.table)
        .fetch_optional(pool)
        .await
        .map_err(|e| unreachable("lookup failed")(e.into()))?;
    row.flatten().ok_or_else(|| not_found(name))
}

/// A client of the Iceberg REST catalog protocol (only what reading needs).
struct RestCatalog {
    http: reqwest::Client,
    base: String,
    warehouse: Option<String>,
    credential: Option<(String, String)>,
    scope: String,
    oauth_uri: Option<String>,
    /// The prefix from `GET /v1/config` (or the settings) and the bearer token, once known.
    state: Mutex<RestState>,
}

#[derive(Default)]
struct RestState {
    prefix: Option<String>,
    configured: bool,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

#[derive(Deserialize)]
struct LoadTableResponse {
    #[serde(rename = "metadata-location")]
    metadata_location: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

impl RestCatalog {
    fn new(settings: &IcebergCatalogSettings) -> Result<RestCatalog, LookupFailure> {
        let base = secrets::resolve(&settings.uri, false)
            .map_err(|e| LookupFailure::Settings(format!("uri: {}", e.0)))?
            .trim_end_matches('/')
            .to_string();
        url::Url::parse(&base).map_err(|e| LookupFailure::Settings(format!("uri `{}`: {e}", settings.uri)))?;
        let credential = match option(settings, "credential")? {
            None => None,
            Some(c) => {
                let (id, secret) = c.split_once(':').ok_or_else(|| {
                    LookupFailure::Settings("option `credential` must be `client_id:client_secret`".into())
                })?;
                secrets::register(secret);
                Some((id.to_string(), secret.to_string()))
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| unreachable("cannot build an HTTP client")(e.into()))?;
        Ok(RestCatalog {
            http,
            base,
            warehouse: settings.warehouse.clone(),
            credential,
            scope: option(settings, "scope")?.unwrap_or_else(|| "catalog".to_string()),
            oauth_uri: option(settings, "oauth2_server_uri")?,
            state: Mutex::new(RestState {
                prefix: option(settings, "prefix")?,
                configured: false,
                token: option(settings, "token")?,
            }),
        })
    }

    async fn metadata_location(&self, table: &CatalogTable) -> Result<String, LookupFailure> {
        let (prefix, token) = self.prepare().await?;
        let namespace = table
            .namespace
            .iter()
            .map(|p| encode(p))
            .collect::<Vec<_>>()
            .join("%1F");
        let prefix = prefix.map(|p| format!("/{}", p.trim_matches('/'))).unwrap_or_default();
        let url = format!(
            "{}/v1{prefix}/namespaces/{namespace}/tables/{}",
            self.base,
            encode(&table.table)
        );
        let response = self.get(self.http.get(&url), token.as_deref(), "the table").await?;
        let loaded: LoadTableResponse = response
            .json()
            .await
            .map_err(|e| malformed("not a LoadTableResult")(e.into()))?;
        loaded.metadata_location.ok_or_else(|| LookupFailure::Malformed {
            what: "the catalog's LoadTableResult".into(),
            source: "it has no metadata-location for the table".into(),
        })
    }

    /// Fetches the token (OAuth2 client credentials) and the prefix (`/v1/config`) once.
    async fn prepare(&self) -> Result<(Option<String>, Option<String>), LookupFailure> {
        let mut state = self.state.lock().await;
        if state.token.is_none() {
            if let Some((id, secret)) = &self.credential {
                let uri = self
                    .oauth_uri
                    .clone()
                    .unwrap_or_else(|| format!("{}/v1/oauth/tokens", self.base));
                let response = self
                    .http
                    .post(&uri)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", id.as_str()),
                        ("client_secret", secret.as_str()),
                        ("scope", self.scope.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(|e| unreachable("cannot reach the token endpoint")(e.into()))?;
                if !response.status().is_success() {
                    return Err(LookupFailure::Refused(format!(
                        "the token endpoint refused the client credentials ({})",
                        response.status()
                    )));
                }
                let token: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| malformed("not an OAuth2 token response")(e.into()))?;
                secrets::register(&token.access_token);
                state.token = Some(token.access_token);
            }
        }
        if !state.configured {
            let mut request = self.http.get(format!("{}/v1/config", self.base));
            if let Some(w) = &self.warehouse {
                request = request.query(&[("warehouse", w)]);
            }
            let response = self
                .get(request, state.token.as_deref(), "the catalog configuration")
                .await?;
            let config: ConfigResponse = response
                .json()
                .await
                .map_err(|e| malformed("not a catalog config response")(e.into()))?;
            if state.prefix.is_none() {
                state.prefix = config
                    .overrides
                    .get("prefix")
                    .or_else(|| config.defaults.get("prefix"))
                    .cloned();
            }
            state.configured = true;
        }
        Ok((state.prefix.clone(), state.token.clone()))
    }

    /// Sends a GET (with the bearer token, if any) and turns failures into words.
    async fn get(
        &self,
        request: reqwest::RequestBuilder,
        token: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, LookupFailure> {
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| unreachable("cannot reach the catalog")(e.into()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(LookupFailure::NotFound(format!(
                "{what} is not in the catalog (404 Not Found)"
            )));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(LookupFailure::Refused(format!(
                "the catalog refused the request ({status}): check its credentials"
            )));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(LookupFailure::Malformed {
                what: format!("asking for {what}, the catalog answered {status}"),
                source: truncate(&body).into(),
            });
        }
        Ok(response)
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn truncate(body: &str) -> String {
    let mut s: String = body.chars().take(300).collect();
    if body.len() > s.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_uris() {
        let root = Path::new("/mesh");
        assert_eq!(sqlite_path(root, "////abs/cat.db"), PathBuf::from("/abs/cat.db"));
        assert_eq!(sqlite_path(root, "///rel/cat.db"), PathBuf::from("/mesh/rel/cat.db"));
        assert_eq!(sqlite_path(root, "catalogs/c.db"), PathBuf::from("/mesh/catalogs/c.db"));
        assert_eq!(sqlite_path(root, "/abs/c.db?mode=ro"), PathBuf::from("/abs/c.db"));
    }

    #[test]
    fn rest_namespaces_are_encoded() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
