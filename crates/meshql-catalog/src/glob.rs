//! Globs in Parquet locations, matched one path segment at a time.
//!
//! `site_events/*/*.parquet`, `day=2026-01-0[12]/*.parquet`, `part-?.parquet`, `logs/**/*.parquet`:
//! as DuckDB, Spark and shells read them. `*`, `?` and `[…]`/`[!…]` match within one segment
//! (never across `/`), `**` matches any number of whole segments (none included).
//!
//! DataFusion's listing cannot serve these (53.1: `ListingTableUrl` matches a glob against the
//! first segment below its prefix only, lets `*` cross `/` otherwise, and skips `key=value`
//! segments before matching). So a glob location is served as a directory — its root is the
//! path before the first segment with a wildcard, which keeps hive `key=value` discovery and
//! partition pruning — through a [`GlobStore`]: the real store, whose listings hold only the
//! objects the glob matches.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use url::Url;

use crate::hive::unescape;

/// The wildcard characters of a glob segment.
const WILDCARDS: [char; 3] = ['*', '?', '['];

/// One segment of a glob.
#[derive(Debug, Clone)]
enum Segment {
    /// `**`: any number of whole segments.
    AnyDepth,
    /// A segment name or a pattern for one.
    One(glob::Pattern),
}

/// The part of a location below its root, as segments to match.
#[derive(Debug, Clone)]
pub struct PathGlob {
    text: String,
    segments: Vec<Segment>,
}

/// A glob location split into the directory it lies in and the glob below it.
#[derive(Debug, Clone)]
pub struct GlobLocation {
    /// The directory before the first segment with a wildcard (ends with `/`).
    pub root: Url,
    pub glob: Arc<PathGlob>,
}

/// Why a glob is refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid glob `{segment}`: {reason}")]
pub struct GlobError {
    segment: String,
    reason: String,
}

impl GlobLocation {
    /// Splits `url` at its first segment with a wildcard; `None` if it has none. `?` and `[` may
    /// reach the URL percent-encoded: the path is decoded before it is read as a glob.
    pub fn parse(url: &Url) -> Result<Option<GlobLocation>, GlobError> {
        let raw: Vec<&str> = url.path().split('/').collect();
        let Some(first) = raw.iter().position(|s| unescape(s).contains(WILDCARDS)) else {
            return Ok(None);
        };
        let mut root = url.clone();
        root.set_path(&format!("{}/", raw[..first].join("/")));
        root.set_query(None);
        root.set_fragment(None);
        let below: Vec<String> = raw[first..].iter().map(|s| unescape(s)).collect();
        Ok(Some(GlobLocation {
            root,
            glob: Arc::new(PathGlob::new(&below)?),
        }))
    }
}

impl PathGlob {
    fn new(segments: &[String]) -> Result<PathGlob, GlobError> {
        let mut parsed = Vec::with_capacity(segments.len());
        for s in segments {
            let segment = match s.as_str() {
                "**" => Segment::AnyDepth,
                // `a//b` and a trailing `/`: no empty segment to match
                "" => continue,
                _ if s.contains("**") => {
                    return Err(GlobError {
                        segment: s.clone(),
                        reason: "`**` must be a whole path segment".into(),
                    })
                }
                _ => Segment::One(glob::Pattern::new(s).map_err(|e| GlobError {
                    segment: s.clone(),
                    reason: e.msg.to_string(),
                })?),
            };
            // `**/**` is `**`
            if matches!(segment, Segment::AnyDepth) && matches!(parsed.last(), Some(Segment::AnyDepth)) {
                continue;
            }
            parsed.push(segment);
        }
        Ok(PathGlob {
            text: segments.join("/"),
            segments: parsed,
        })
    }

    /// Whether the glob names the files' extension itself (`*.parquet*`, `part-?.pq`): then it
    /// alone chooses the files, as DuckDB's; a last segment without one (`*`, `**`) takes the
    /// `.parquet` files only (a Spark directory also holds `_SUCCESS` and `.crc` files).
    pub fn names_extension(&self) -> bool {
        let last = self.text.rsplit('/').next().unwrap_or_default();
        last != "**" && last.contains('.')
    }

    /// Does the path made of `names` (decoded segment names below the root) match?
    pub fn matches(&self, names: &[&str]) -> bool {
        self.walk(names, false)
    }

    /// Could a path below the directory made of `names` match?
    pub fn may_match_below(&self, names: &[&str]) -> bool {
        self.walk(names, true)
    }

    /// Matches segment by segment, remembering which (pattern, name) positions were tried, so
    /// that `**` never makes it exponential: at most (patterns + 1) × (names + 1) steps.
    fn walk(&self, names: &[&str], below: bool) -> bool {
        let (m, n) = (self.segments.len(), names.len());
        let mut tried = vec![false; (m + 1) * (n + 1)];
        let mut todo = vec![(0usize, 0usize)];
        while let Some((i, j)) = todo.pop() {
            let seen = &mut tried[i * (n + 1) + j];
            if *seen {
                continue;
            }
            *seen = true;
            if j == n {
                // every name consumed: a file needs the rest to be empty (or `**` only); a
                // directory needs something left for what lies below it
                if below {
                    if i < m {
                        return true;
                    }
                } else if self.segments[i..].iter().all(|s| matches!(s, Segment::AnyDepth)) {
                    return true;
                }
                continue;
            }
            match self.segments.get(i) {
                None => {}
                Some(Segment::AnyDepth) => {
                    todo.push((i + 1, j));
                    todo.push((i, j + 1));
                }
                Some(Segment::One(p)) if p.matches_with(names[j], OPTIONS) => todo.push((i + 1, j + 1)),
                Some(Segment::One(_)) => {}
            }
        }
        false
    }
}

/// Within a segment: case-sensitive; a leading `.` is matched by wildcards (as DuckDB does).
const OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A store whose listings below `root` hold only the objects `glob` matches; everything else
/// (reads by path) is the inner store's. Read-only.
#[derive(Debug)]
pub struct GlobStore {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    glob: Arc<PathGlob>,
}

impl GlobStore {
    pub fn new(inner: Arc<dyn ObjectStore>, root: Path, glob: Arc<PathGlob>) -> GlobStore {
        GlobStore { inner, root, glob }
    }

    /// The decoded segment names of `path` below the root; `None` if it is not below it.
    fn names_below(root: &Path, path: &Path) -> Option<Vec<String>> {
        let parts = path.prefix_match(root)?;
        Some(parts.map(|p| unescape(p.as_ref())).collect())
    }

    fn keeps(root: &Path, glob: &PathGlob, path: &Path) -> bool {
        Self::names_below(root, path)
            .is_some_and(|names| glob.matches(&names.iter().map(String::as_str).collect::<Vec<_>>()))
    }

    fn keeps_directory(&self, path: &Path) -> bool {
        Self::names_below(&self.root, path).is_some_and(|names| {
            self.glob
                .may_match_below(&names.iter().map(String::as_str).collect::<Vec<_>>())
        })
    }

    fn read_only(&self) -> object_store::Error {
        object_store::Error::NotSupported {
            source: format!("the glob view {self} is read-only").into(),
        }
    }

    fn filtered(
        &self,
        listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (root, glob) = (self.root.clone(), self.glob.clone());
        listing
            .filter(move |meta| {
                let keep = match meta {
                    Ok(meta) => Self::keeps(&root, &glob, &meta.location),
                    Err(_) => true,
                };
                std::future::ready(keep)
            })
            .boxed()
    }
}

impl fmt::Display for GlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.inner, self.root, self.glob)
    }
}

#[async_trait]
impl ObjectStore for GlobStore {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> object_store::Result<PutResult> {
        Err(self.read_only())
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(self.read_only())
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let refused = self.to_string();
        locations
            .map(move |_| {
                Err(object_store::Error::NotSupported {
                    source: format!("the glob view {refused} is read-only").into(),
                })
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.filtered(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.filtered(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed
            .objects
            .retain(|meta| Self::keeps(&self.root, &self.glob, &meta.location));
        listed.common_prefixes.retain(|dir| self.keeps_directory(dir));
        Ok(listed)
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(self.read_only())
    }

    async fn rename_opts(&self, _: &Path, _: &Path, _: RenameOptions) -> object_store::Result<()> {
        Err(self.read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> PathGlob {
        let segments: Vec<String> = text.split('/').map(str::to_string).collect();
        PathGlob::new(&segments).expect("a valid glob")
    }

    fn matches(g: &str, path: &str) -> bool {
        glob(g).matches(&path.split('/').collect::<Vec<_>>())
    }

    #[test]
    fn wildcards_stay_within_a_segment() {
        assert!(matches("*/*.parquet", "a/x.parquet"));
        assert!(!matches("*/*.parquet", "x.parquet"));
        assert!(!matches("*/*.parquet", "archive/old/x.parquet"));
        assert!(!matches("*.parquet", "a/x.parquet"));
        assert!(matches("part-?.parquet", "part-1.parquet"));
        assert!(!matches("part-?.parquet", "part-10.parquet"));
        assert!(matches("day=2026-01-0[12]/*.parquet", "day=2026-01-02/f.parquet"));
        assert!(!matches("day=2026-01-0[12]/*.parquet", "day=2026-01-03/f.parquet"));
        assert!(matches("day=2026-01-0[!12]/*.parquet", "day=2026-01-03/f.parquet"));
    }

    #[test]
    fn double_star_takes_any_number_of_segments() {
        assert!(matches("**/*.parquet", "x.parquet"));
        assert!(matches("**/*.parquet", "a/b/c/x.parquet"));
        assert!(matches("a/**/z/*.parquet", "a/z/f.parquet"));
        assert!(matches("a/**/z/*.parquet", "a/b/c/z/f.parquet"));
        assert!(!matches("a/**/z/*.parquet", "a/b/c/y/f.parquet"));
        assert!(matches("**", "a/b"));
        assert!(matches("**/**/**/*.parquet", "x.parquet"));
    }

    #[test]
    fn many_double_stars_stay_linear() {
        let g = glob(&format!("{}/*.csv", ["**"; 200].join("/x*/")));
        let long: Vec<&str> = std::iter::repeat_n("xa", 400).chain(["nomatch.parquet"]).collect();
        assert!(!g.matches(&long));
    }

    #[test]
    fn directories_that_may_hold_matches() {
        let g = glob("*/day=0[12]/*.parquet");
        assert!(g.may_match_below(&[]));
        assert!(g.may_match_below(&["a"]));
        assert!(g.may_match_below(&["a", "day=01"]));
        assert!(!g.may_match_below(&["a", "day=03"]));
        assert!(!g.may_match_below(&["a", "day=01", "deeper"]));
        assert!(glob("**/*.parquet").may_match_below(&["a", "b", "c"]));
    }

    #[test]
    fn globs_that_name_an_extension_choose_the_files_alone() {
        assert!(glob("*/*.parquet*").names_extension());
        assert!(glob("part-?.pq").names_extension());
        assert!(!glob("**").names_extension());
        assert!(!glob("a/*").names_extension());
    }

    #[test]
    fn locations_split_at_the_first_wildcard_segment() {
        let url = Url::parse("file:///data/events/day=2026-01-0%5B12%5D/*.parquet").expect("url");
        let at = GlobLocation::parse(&url).expect("valid").expect("a glob");
        assert_eq!(at.root.as_str(), "file:///data/events/");
        assert_eq!(at.glob.to_string(), "day=2026-01-0[12]/*.parquet");
        let plain = Url::parse("s3://bucket/events/2026/").expect("url");
        assert!(GlobLocation::parse(&plain).expect("valid").is_none());
        let bad = Url::parse("file:///data/a**b/x.parquet").expect("url");
        assert!(GlobLocation::parse(&bad).is_err());
    }
}
