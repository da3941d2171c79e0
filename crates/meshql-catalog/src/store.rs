//! Locations and object stores.
//!
//! Every location a contract names is turned into a URL here: relative paths are resolved
//! against the mesh root, absolute paths become `file://` URLs, URLs are kept. The matching
//! [`ObjectStore`] comes from one registry per mesh, so all formats read through the same
//! stores (DataFusion's `RuntimeEnv` for Parquet, delta-rs's log store for Delta, and an
//! `object_store`-backed Iceberg `FileIO`), and remote stores slot in by registering them here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{CatalogError, Result};

/// Resolves locations and hands out object stores.
#[derive(Debug)]
pub struct StoreRegistry {
    root: PathBuf,
    local: Arc<dyn ObjectStore>,
}

impl StoreRegistry {
    /// A registry for a mesh rooted at `root` (an absolute directory).
    pub fn new(root: &Path) -> Self {
        StoreRegistry {
            root: root.to_path_buf(),
            local: Arc::new(LocalFileSystem::new()),
        }
    }

    /// Turns a location from a contract into a URL.
    pub fn resolve(&self, location: &str) -> Result<Url> {
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
            return Url::parse(trimmed).map_err(|e| err(e.to_string()));
        }
        let path = Path::new(trimmed);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        };
        let abs = normalize(&abs);
        Url::from_file_path(&abs).map_err(|()| err(format!("cannot make a file URL of {}", abs.display())))
    }

    /// The object store serving `url`.
    pub fn store_for(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match url.scheme() {
            "file" => Ok(self.local.clone()),
            other => Err(CatalogError::Location {
                location: url.to_string(),
                reason: format!("no object store is configured for `{other}://` locations"),
            }),
        }
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
        match store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            // The local store reports a directory as an error of its own kind.
            Err(_) if url.scheme() == "file" => Ok(false),
            Err(e) => Err(CatalogError::storage(url, e)),
        }
    }

    /// Registers every store this registry serves with a DataFusion runtime.
    pub fn register_with(&self, env: &RuntimeEnv) {
        if let Ok(url) = ObjectStoreUrl::parse("file://") {
            env.register_object_store(url.as_ref(), self.local.clone());
        }
    }
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
        let s3 = r.resolve("s3://bucket/key").unwrap();
        assert!(r.store_for(&s3).unwrap_err().to_string().contains("s3://"));
    }
}
