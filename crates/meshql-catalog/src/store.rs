//! Locations and object stores.
//!
//! Every location a contract names is turned into a URL here: relative paths are resolved
//! against the mesh's data root (`dataRoot` in `mesh.yaml`, else the mesh directory), absolute
//! paths become `file://` URLs, URLs are kept. The matching [`ObjectStore`] comes from one
//! registry per mesh, so all formats read through the same clients: DataFusion asks it through
//! [`ObjectStoreRegistry`] (Parquet scans), delta-rs gets the client as its storage backend,
//! and Iceberg reads through an `object_store`-backed `FileIO`.
//!
//! Remote clients are made on first use, one per configured store (a bucket, container or
//! host with its credentials) or, for locations no store is configured for, one per bucket with
//! the environment's credentials; they are shared by every product on them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use meshql_contract::{IcebergCatalogSettings, MeshSettings, StoreSettings};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::cloud::{origin, StoreKind, StorePlan};
use crate::error::{CatalogError, Result};
use crate::glob::{GlobLocation, GlobStore};
use crate::iceberg_catalog::IcebergCatalogs;

/// Resolves locations and hands out object stores.
pub struct StoreRegistry {
    root: PathBuf,
    local: Arc<dyn ObjectStore>,
    /// Read on every store lookup (DataFusion asks at each scan): shared, not copied.
    config: RwLock<Arc<StoreConfig>>,
    /// Clients made so far, by store name (configured) or origin (environment).
    clients: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Stores others registered through DataFusion (delta-rs registers its own), by origin.
    registered: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    /// The Iceberg catalogs of the settings (connected on first use).
    catalogs: RwLock<Arc<IcebergCatalogs>>,
    /// Glob locations served as directories of a [`GlobStore`], by the host of their view URL.
    globs: RwLock<HashMap<String, GlobLocation>>,
}

/// The URL scheme of glob views ([`StoreRegistry::glob_view`]).
const GLOB_SCHEME: &str = "meshql-glob";

/// The settings the registry follows; replaced by a reload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreConfig {
    /// Where relative locations resolve: a directory URL (or why `dataRoot` does not resolve).
    data_root: Option<std::result::Result<Url, String>>,
    /// Configured stores: (origin, name, settings).
    stores: Vec<(String, String, StoreSettings)>,
    catalogs: BTreeMap<String, IcebergCatalogSettings>,
}

impl StoreConfig {
    /// The store part of `settings`, with `dataRoot` resolved against `root`.
    pub fn of(settings: &MeshSettings, root: &Path) -> StoreConfig {
        // Checked when the settings were read (`meshql_contract::storage::check_settings`); a
        // root that still does not resolve must not fall back to the mesh directory (that would
        // serve other data than the settings name): relative locations then fail.
        let data_root = settings.data_root.as_deref().map(|r| {
            resolve_against(root, None, r)
                .map(|u| as_directory(&u))
                .map_err(|e| e.to_string())
        });
        let stores = settings
            .stores
            .iter()
            .map(|(name, s)| {
                let key = Url::parse(&s.url).map(|u| origin(&u)).unwrap_or_else(|_| s.url.clone());
                (key, name.clone(), s.clone())
            })
            .collect();
        StoreConfig {
            data_root,
            stores,
            catalogs: settings.iceberg_catalogs.clone(),
        }
    }
}

impl std::fmt::Debug for StoreRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Clients hold credentials: only names are shown.
        let names: Vec<String> = self
            .clients
            .read()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("StoreRegistry")
            .field("root", &self.root)
            .field("clients", &names)
            .finish()
    }
}

impl StoreRegistry {
    /// A registry for a mesh rooted at `root` (an absolute directory) without remote stores.
    pub fn new(root: &Path) -> Self {
        StoreRegistry {
            root: root.to_path_buf(),
            local: Arc::new(LocalFileSystem::new()),
            config: RwLock::new(Arc::new(StoreConfig::default())),
            clients: RwLock::new(HashMap::new()),
            registered: RwLock::new(HashMap::new()),
            catalogs: RwLock::new(Arc::new(IcebergCatalogs::default())),
            globs: RwLock::new(HashMap::new()),
        }
    }

    /// A registry following the store settings of `settings`.
    pub fn with_settings(root: &Path, settings: &MeshSettings) -> Self {
        let registry = Self::new(root);
        registry.reconfigure(StoreConfig::of(settings, root));
        registry
    }

    /// Follows new settings; returns whether they differ from the current ones (clients are
    /// then made anew on next use).
    pub fn reconfigure(&self, config: StoreConfig) -> bool {
        let mut current = match self.config.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if **current == config {
            return false;
        }
        if current.catalogs != config.catalogs {
            let catalogs = Arc::new(IcebergCatalogs::new(&self.root, config.catalogs.clone()));
            match self.catalogs.write() {
                Ok(mut c) => *c = catalogs,
                Err(p) => *p.into_inner() = catalogs,
            }
        }
        *current = Arc::new(config);
        if let Ok(mut clients) = self.clients.write() {
            clients.clear();
        }
        true
    }

    /// The Iceberg catalogs of the current settings.
    pub fn iceberg_catalogs(&self) -> Arc<IcebergCatalogs> {
        match self.catalogs.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn config(&self) -> Arc<StoreConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Turns a location from a contract into a URL.
    pub fn resolve(&self, location: &str) -> Result<Url> {
        match &self.config().data_root {
            None => resolve_against(&self.root, None, location),
            Some(Ok(base)) => resolve_against(&self.root, Some(base), location),
            Some(Err(reason)) => Err(CatalogError::Location {
                location: location.to_string(),
                reason: format!("dataRoot in mesh.yaml does not resolve: {reason}"),
            }),
        }
    }

    /// The object store serving `url`.
    pub fn store_for(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if url.scheme() == "file" {
            return Ok(self.local.clone());
        }
        let key = origin(url);
        let config = self.config();
        let configured = config.stores.iter().find(|(o, _, _)| *o == key);
        let client_key = configured
            .map(|(_, name, _)| name.clone())
            .unwrap_or_else(|| key.clone());
        if let Some(client) = self.clients.read().ok().and_then(|c| c.get(&client_key).cloned()) {
            return Ok(client);
        }
        let plan = match configured {
            Some((_, name, settings)) => StorePlan::configured(name, settings).map_err(|e| CatalogError::Location {
                location: url.to_string(),
                reason: e.to_string(),
            })?,
            None => StorePlan::from_environment(url).ok_or_else(|| CatalogError::Location {
                location: url.to_string(),
                reason: format!(
                    "no object store serves `{}://` locations (supported: s3, gs, az/abfss, http(s), local paths)",
                    url.scheme()
                ),
            })?,
        };
        let client = plan.build().map_err(|e| CatalogError::Location {
            location: url.to_string(),
            reason: e.to_string(),
        })?;
        tracing::debug!(store = %plan.name, kind = ?plan.kind, "object store client made");
        if let Ok(mut clients) = self.clients.write() {
            // Another thread may have made it meanwhile: keep the first, so all share one.
            return Ok(clients.entry(client_key).or_insert(client).clone());
        }
        Ok(client)
    }

    /// A directory URL under which the objects matched by `location` are listed, and nothing
    /// else ([`GlobStore`]); objects are read from the store of the location's root.
    pub fn glob_view(&self, location: &GlobLocation) -> Result<Url> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        location.root.as_str().hash(&mut hasher);
        location.glob.to_string().hash(&mut hasher);
        let host = format!("g{:016x}", hasher.finish());
        let view = Url::parse(&format!("{GLOB_SCHEME}://{host}{}", location.root.path())).map_err(|e| {
            CatalogError::Location {
                location: format!("{}{}", location.root, location.glob),
                reason: e.to_string(),
            }
        })?;
        let mut globs = match self.globs.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        globs.entry(host).or_insert_with(|| location.clone());
        Ok(view)
    }

    /// The store of a glob view: the root's store, listing only what the glob matches.
    fn glob_store(&self, view: &Url) -> Result<Arc<dyn ObjectStore>> {
        let host = view.host_str().unwrap_or_default();
        let location = match self.globs.read() {
            Ok(g) => g.get(host).cloned(),
            Err(p) => p.into_inner().get(host).cloned(),
        }
        .ok_or_else(|| CatalogError::Location {
            location: view.to_string(),
            reason: "no glob location is known by this name".into(),
        })?;
        let inner = self.store_for(&location.root)?;
        let root = ObjectPath::from_url_path(location.root.path()).map_err(|e| CatalogError::Location {
            location: location.root.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(GlobStore::new(inner, root, location.glob)))
    }

    /// The name of the store serving `url`, for messages (never a credential).
    pub fn store_name(&self, url: &Url) -> String {
        if url.scheme() == "file" {
            return "local disk".into();
        }
        let key = origin(url);
        self.config()
            .stores
            .iter()
            .find(|(o, _, _)| *o == key)
            .map(|(_, name, _)| format!("store `{name}`"))
            .unwrap_or_else(|| format!("{key} (credentials from the environment)"))
    }

    /// The store and the object path of `url`.
    pub fn locate(&self, url: &Url) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let store = self.store_for(url)?;
        let path = ObjectPath::from_url_path(url.path()).map_err(|e| CatalogError::Location {
            location: url.to_string(),
            reason: e.to_string(),
        })?;
        Ok((store, path))
    }

    /// Is `url` a single object (as opposed to a directory / prefix)?
    pub async fn is_object(&self, url: &Url) -> Result<bool> {
        if url.path().ends_with('/') {
            return Ok(false);
        }
        let (store, path) = self.locate(url)?;
        if url.scheme() != "file" {
            // Object stores have no directories: a prefix with objects under it is one. Asked
            // first, because some S3 servers answer HEAD on a prefix with an error, not 404.
            let listed = store
                .list_with_delimiter(Some(&path))
                .await
                .map_err(|e| self.error(url, e))?;
            if !listed.objects.is_empty() || !listed.common_prefixes.is_empty() {
                return Ok(false);
            }
        }
        match store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            // The local store reports a directory as an error of its own kind.
            Err(_) if url.scheme() == "file" => Ok(false),
            Err(e) => Err(self.error(url, e)),
        }
    }

    /// A storage error at `url`, saying which store it came from.
    pub fn error(&self, url: &Url, e: object_store::Error) -> CatalogError {
        CatalogError::storage(
            url,
            crate::error::StoreRequestFailed {
                store: self.store_name(url),
                source: e,
            },
        )
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        let mut registered = match self.registered.write() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        registered.insert(origin(url), store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let mut registered = match self.registered.write() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        registered
            .remove(&origin(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no object store registered for {}", origin(url))))
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if url.scheme() == GLOB_SCHEME {
            return self
                .glob_store(url)
                .map_err(|e| DataFusionError::Execution(e.to_string()));
        }
        if let Some(store) = self.registered.read().ok().and_then(|r| r.get(&origin(url)).cloned()) {
            return Ok(store);
        }
        self.store_for(url)
            .map_err(|e| DataFusionError::Execution(e.to_string()))
    }
}

/// Resolves `location` against `data_root` (if relative and a data root is set), else `root`.
fn resolve_against(root: &Path, data_root: Option<&Url>, location: &str) -> Result<Url> {
    let err = |reason: String| CatalogError::Location {
        location: location.to_string(),
        reason,
    };
    let trimmed = location.trim();
    if let Some(rest) = trimmed.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(err("file:// URLs must be absolute (file:///path)".into()));
        }
        return Url::parse(trimmed).map_err(|e| err(e.to_string()));
    }
    if trimmed.contains("://") {
        // In a bucket location `?` is a glob wildcard and `#` part of a name (HTTP locations
        // keep their query, refused below)
        let scheme = trimmed.split("://").next().unwrap_or_default();
        let escaped;
        let trimmed = if matches!(
            StoreKind::of_scheme(scheme),
            Some(StoreKind::S3 | StoreKind::Gcs | StoreKind::Azure)
        ) {
            escaped = escape_path_marks(trimmed);
            escaped.as_str()
        } else {
            trimmed
        };
        let url = Url::parse(trimmed).map_err(|e| err(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "locations may not carry credentials; configure the store in mesh.yaml (`stores`)".into(),
            ));
        }
        if url.query().is_some() && StoreKind::of_scheme(url.scheme()).is_some() {
            return Err(err(
                "locations may not carry query parameters (signatures, tokens); configure the store in mesh.yaml"
                    .into(),
            ));
        }
        return Ok(url);
    }
    let path = Path::new(trimmed);
    if path.is_absolute() {
        return Url::from_file_path(normalize(path)).map_err(|()| err(format!("cannot make a file URL of {trimmed}")));
    }
    if let Some(base) = data_root {
        let mut depth = 0i32;
        for c in path.components() {
            match c {
                std::path::Component::ParentDir => depth -= 1,
                std::path::Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(err(
                    "a location relative to the data root may not leave it (`..`)".into()
                ));
            }
        }
        let relative = normalize(path);
        let relative = relative.to_string_lossy().replace('\\', "/");
        return base.join(&escape_path_marks(&relative)).map_err(|e| err(e.to_string()));
    }
    let abs = normalize(&root.join(path));
    Url::from_file_path(&abs).map_err(|()| err(format!("cannot make a file URL of {}", abs.display())))
}

/// `?` and `#` as path characters of a URL (a glob wildcard, a name), not a query or fragment.
fn escape_path_marks(location: &str) -> String {
    location.replace('?', "%3F").replace('#', "%23")
}

/// `a/./b/../c` → `a/c`, without touching the file system (the location may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The URL of a directory: guaranteed to end with `/`.
pub fn as_directory(url: &Url) -> Url {
    let mut u = url.clone();
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

/// A storage reader's filter pushdown answers, with `Exact` lowered to `Inexact`: DataFusion then
/// evaluates every filter again above the scan, so no reader can let a row through unfiltered
/// (delta-rs took `carrier = NULL`, folded to a constant, as an exact partition filter and
/// applied nothing: every row passed a row filter comparing with a missing attribute).
pub fn at_most_inexact(
    answers: Vec<datafusion::logical_expr::TableProviderFilterPushDown>,
) -> Vec<datafusion::logical_expr::TableProviderFilterPushDown> {
    use datafusion::logical_expr::TableProviderFilterPushDown as P;
    answers
        .into_iter()
        .map(|p| if p == P::Exact { P::Inexact } else { p })
        .collect()
}

/// `stats` without the column ranges that span a 64-bit type whole (`i64::MIN..=i64::MAX`,
/// `0..=u64::MAX`): DataFusion's interval arithmetic counts such a range's values as
/// `u64::MAX + 1`, which overflows — a panic in a debug build, an "out of limit" selectivity
/// error in release — and fails every filter on the column. Unknown bounds plan the same
/// queries without that estimate; answers never depended on it.
pub fn sane_statistics(mut stats: datafusion::common::Statistics) -> datafusion::common::Statistics {
    use datafusion::common::stats::Precision;
    use datafusion::common::ScalarValue as S;
    for column in stats.column_statistics.iter_mut() {
        let bound = |p: &Precision<S>| match p {
            Precision::Exact(v) | Precision::Inexact(v) => Some(v.clone()),
            Precision::Absent => None,
        };
        let whole = matches!(
            (bound(&column.min_value), bound(&column.max_value)),
            (Some(S::Int64(Some(i64::MIN))), Some(S::Int64(Some(i64::MAX))))
                | (Some(S::UInt64(Some(0))), Some(S::UInt64(Some(u64::MAX))))
                | (
                    Some(S::TimestampSecond(Some(i64::MIN), _)),
                    Some(S::TimestampSecond(Some(i64::MAX), _))
                )
                | (
                    Some(S::TimestampMillisecond(Some(i64::MIN), _)),
                    Some(S::TimestampMillisecond(Some(i64::MAX), _))
                )
                | (
                    Some(S::TimestampMicrosecond(Some(i64::MIN), _)),
                    Some(S::TimestampMicrosecond(Some(i64::MAX), _))
                )
                | (
                    Some(S::TimestampNanosecond(Some(i64::MIN), _)),
                    Some(S::TimestampNanosecond(Some(i64::MAX), _))
                )
        );
        if whole {
            column.min_value = Precision::Absent;
            column.max_value = Precision::Absent;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_absolute_and_urls() {
        let r = StoreRegistry::new(Path::new("/mesh"));
        assert_eq!(
            r.resolve("data/x.parquet").unwrap().as_str(),
            "file:///mesh/data/x.parquet"
        );
        assert_eq!(r.resolve("./a/../b").unwrap().as_str(), "file:///mesh/b");
        assert_eq!(r.resolve("/abs/t").unwrap().as_str(), "file:///abs/t");
        assert_eq!(r.resolve("file:///abs/t").unwrap().as_str(), "file:///abs/t");
        assert!(r.resolve("file://relative").is_err());
        let ftp = r.resolve("ftp://host/key").unwrap();
        assert!(r.store_for(&ftp).unwrap_err().to_string().contains("ftp://"));
        assert!(r.resolve("s3://key:secret@bucket/x").is_err());
        assert!(r.resolve("https://host/x.parquet?sig=abc").is_err());
    }

    #[test]
    fn data_root_takes_relative_locations() {
        let base = Url::parse("s3://lake/mesh/").unwrap();
        let url = resolve_against(Path::new("/mesh"), Some(&base), "data/x").unwrap();
        assert_eq!(url.as_str(), "s3://lake/mesh/data/x");
        assert_eq!(
            resolve_against(Path::new("/mesh"), Some(&base), "./a/./b")
                .unwrap()
                .as_str(),
            "s3://lake/mesh/a/b"
        );
        assert!(resolve_against(Path::new("/mesh"), Some(&base), "../other").is_err());
        // absolute paths and URLs are not affected
        assert_eq!(
            resolve_against(Path::new("/mesh"), Some(&base), "/abs")
                .unwrap()
                .as_str(),
            "file:///abs"
        );
    }
}
