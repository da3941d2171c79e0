//! A product reads only its own domain's files.
//!
//! Domain `d`'s data lives under `domains/d/` and is governed by `d`'s policies. Another domain
//! must not serve it under its own, laxer rules: not by naming the path in its contract (refused
//! when the mesh loads), and not by reaching it indirectly — a symbolic link, a Delta log whose
//! add actions point at `../../customer/…` or at an absolute `file://` URL, an Iceberg manifest
//! listing another directory's data files. So every local data file a product is about to read
//! is resolved (symbolic links followed) and refused when it lies in another domain's directory.
//! A hard link has no path to resolve — it *is* the other domain's file under a second name — so
//! a data file with more than one link is refused too (in a mesh of several domains).
//! Remote stores (S3, GCS, Azure, HTTP) are governed by their own credentials per store, not by
//! this check.

use std::path::{Path, PathBuf};

use datafusion::error::{DataFusionError, Result as DFResult};
use meshql_contract::mesh::lexically_normal;
use url::Url;

/// The directories of the mesh's other domains, for one product.
#[derive(Debug, Clone, Default)]
pub struct ForeignDirs {
    /// (domain, its directory with symbolic links resolved).
    dirs: Vec<(String, PathBuf)>,
}

impl ForeignDirs {
    /// The directories of every domain of `domains` but `own`.
    pub fn new<'a>(domains: impl IntoIterator<Item = (&'a str, &'a Path)>, own: &str) -> Self {
        let dirs = domains
            .into_iter()
            .filter(|(name, _)| *name != own)
            .filter_map(|(name, dir)| std::fs::canonicalize(dir).ok().map(|d| (name.to_string(), d)))
            .collect();
        ForeignDirs { dirs }
    }

    /// Refuses `path` (a local file) if it resolves into another domain's directory.
    pub fn check_path(&self, table: &str, path: &Path) -> DFResult<()> {
        if self.dirs.is_empty() {
            return Ok(());
        }
        // A file that does not exist (yet) cannot be read either; resolve what exists of it.
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| lexically_normal(path));
        if let Some((domain, _)) = self.dirs.iter().find(|(_, dir)| resolved.starts_with(dir)) {
            return Err(DataFusionError::Plan(format!(
                "{table} is not served: one of its data files is in the directory of domain `{domain}` (through a link or its table metadata); a product may only serve its own domain's data"
            )));
        }
        if hard_links(&resolved) > 1 {
            return Err(DataFusionError::Plan(format!(
                "{table} is not served: one of its data files has another name (a hard link), which may be in another domain's directory; a product may only serve its own domain's data (copy the file instead)"
            )));
        }
        Ok(())
    }

    /// [`ForeignDirs::check_path`] for a file named by URL or path; remote URLs pass.
    pub fn check_location(&self, table: &str, location: &str) -> DFResult<()> {
        if let Ok(url) = Url::parse(location) {
            return match (url.scheme(), url.to_file_path()) {
                ("file", Ok(path)) => self.check_path(table, &path),
                _ => Ok(()),
            };
        }
        self.check_path(table, Path::new(location))
    }
}

/// How many names (hard links) the file at `path` has; 1 when it cannot be told.
fn hard_links(path: &Path) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map(|m| m.nlink()).unwrap_or(1)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_other_domains_are_refused_through_links() {
        let root = tempfile::tempdir().expect("tmp");
        let mine = root.path().join("domains/marketing");
        let theirs = root.path().join("domains/customer");
        std::fs::create_dir_all(mine.join("data")).expect("dirs");
        std::fs::create_dir_all(theirs.join("data")).expect("dirs");
        std::fs::write(theirs.join("data/p.parquet"), b"x").expect("file");
        std::fs::write(mine.join("data/own.parquet"), b"x").expect("file");
        #[cfg(unix)]
        std::os::unix::fs::symlink(theirs.join("data"), mine.join("data/link")).expect("link");
        let guard = ForeignDirs::new(
            [("marketing", mine.as_path()), ("customer", theirs.as_path())],
            "marketing",
        );
        assert!(guard.check_path("t", &mine.join("data/own.parquet")).is_ok());
        assert!(guard.check_path("t", &theirs.join("data/p.parquet")).is_err());
        assert!(guard
            .check_path("t", &mine.join("data/../../customer/data/p.parquet"))
            .is_err());
        #[cfg(unix)]
        assert!(guard.check_path("t", &mine.join("data/link/p.parquet")).is_err());
        let url = Url::from_file_path(theirs.join("data/p.parquet")).expect("url");
        assert!(guard.check_location("t", url.as_str()).is_err());
        assert!(guard
            .check_location("t", "s3://bucket/domains/customer/p.parquet")
            .is_ok());
    }
}
