//! Iceberg output ports, through `iceberg` / `iceberg-datafusion`.
//!
//! A location is either a metadata file (`…/metadata/00002-….metadata.json`, fixed) or a table
//! directory, in which case the newest metadata file under `metadata/` is used and later commits
//! are picked up on refresh; or a table in an Iceberg catalog ([`crate::iceberg_catalog`]),
//! which names the current metadata file. A contract may pin a snapshot (`icebergSnapshotId`),
//! and a query may ask for an earlier one ([`AsOf`]).
//!
//! All reads go through meshql's [`StoreRegistry`] by way of an Iceberg `Storage` backed by
//! `object_store`. That storage also *relocates* tables: Iceberg metadata records absolute file
//! locations, so a table that was copied or moved (a mesh checked out elsewhere, a bucket
//! mirrored) still names its old place. When the metadata's `location` differs from where meshql
//! found the table, paths under the old location are read from the new one.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::TableProvider;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use iceberg::io::{
    FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory,
};
use iceberg::spec::TableMetadata;
use iceberg::table::StaticTable;
use iceberg::{Error as IcebergError, ErrorKind, TableIdent};
use iceberg_datafusion::IcebergStaticTableProvider;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{CatalogError, Result};
use crate::iceberg_scan::PartitionedIceberg;
use crate::ownership::ForeignDirs;
use crate::store::{as_directory, StoreRegistry};
use crate::table::AsOf;

/// An opened Iceberg table.
pub struct IcebergTable {
    pub provider: Arc<dyn TableProvider>,
    /// The metadata file that was read; a newer one means new commits.
    pub metadata_file: Url,
    /// The snapshot served: the pinned one, else the current one (`None` for an empty table).
    pub snapshot_id: Option<i64>,
    /// When the served snapshot was committed (milliseconds since the epoch).
    pub committed_ms: Option<i64>,
    /// Columns renamed since the served (older) snapshot: (current name, name at the snapshot),
    /// matched by Iceberg field id.
    pub renamed: Vec<(String, String)>,
}

/// Opens the table whose current metadata file is `metadata_file`: its current snapshot, or
/// the one `as_of` names (a snapshot id, or the snapshot current at a time).
/// [`crate::format`]'s entrance: the product's Iceberg table (its current metadata file, from
/// its catalog or its directory) at the snapshot asked for.
pub(crate) async fn open_stored(r: crate::format::OpenRequest<'_>) -> Result<crate::format::Stored> {
    let metadata_file = current_metadata(r.stores, r.storage).await?;
    let t = open(r.stores, &metadata_file, r.as_of, r.ident, r.foreign, r.table).await?;
    Ok(crate::format::Stored {
        location: metadata_file,
        provider: t.provider,
        version: t.snapshot_id,
        committed_ms: t.committed_ms,
        hive_columns: Vec::new(),
        renamed: t.renamed,
        source: crate::format::Source::Iceberg {
            metadata_file: t.metadata_file,
        },
    })
}

/// The current metadata file of an Iceberg product: from its catalog, or the newest in its
/// table directory.
pub(crate) async fn current_metadata(stores: &StoreRegistry, storage: &meshql_contract::StorageSpec) -> Result<Url> {
    match &storage.catalog_table {
        Some(table) => {
            let location = stores
                .iceberg_catalogs()
                .metadata_location(table)
                .await
                .map_err(|e| CatalogError::storage(table, e))?;
            stores.resolve(&location)
        }
        None => {
            let url = stores.resolve(&storage.location)?;
            find_metadata(stores, &url).await
        }
    }
}

pub async fn open(
    stores: &Arc<StoreRegistry>,
    metadata_file: &Url,
    as_of: Option<AsOf>,
    ident: (&str, &str),
    foreign: ForeignDirs,
    table_name: &str,
) -> Result<IcebergTable> {
    let metadata_file = metadata_file.clone();
    let (store, path) = stores.locate(&metadata_file)?;
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| stores.error(&metadata_file, e))?
        .bytes()
        .await
        .map_err(|e| stores.error(&metadata_file, e))?;
    let metadata: TableMetadata = serde_json::from_slice(&bytes)
        .map_err(|e| CatalogError::storage(&metadata_file, format!("not valid Iceberg table metadata: {e}")))?;

    // The table root is the parent of the `metadata/` directory holding the metadata file.
    let actual_root = metadata_file
        .join("..")
        .map_err(|e| CatalogError::storage(&metadata_file, e))?;
    let actual_root = actual_root.as_str().trim_end_matches('/').to_string();
    let recorded_root = to_url(metadata.location())
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .map_err(|e| CatalogError::storage(&metadata_file, e))?;
    let relocate = (recorded_root != actual_root).then_some((recorded_root, actual_root));
    if let Some((from, to)) = &relocate {
        tracing::debug!(%from, %to, "reading relocated Iceberg table");
    }

    let storage = MeshIcebergStorage {
        stores: stores.clone(),
        relocate,
    };
    let file_io = FileIOBuilder::new(Arc::new(MeshIcebergStorageFactory { storage })).build();
    let ident = TableIdent::from_strs([ident.0, ident.1]).map_err(|e| CatalogError::storage(&metadata_file, e))?;
    let snapshot = match as_of {
        None => None,
        Some(as_of) => Some(snapshot_as_of(&metadata, as_of).map_err(|e| CatalogError::storage(&metadata_file, e))?),
    };
    let served_snapshot = snapshot.or_else(|| metadata.current_snapshot_id());
    let committed_ms = served_snapshot
        .and_then(|id| metadata.snapshot_by_id(id))
        .map(|s| s.timestamp_ms());
    let renamed = snapshot.map(|id| renamed_since(&metadata, id)).unwrap_or_default();
    let table = StaticTable::from_metadata(metadata, ident, file_io)
        .await
        .map_err(|e| CatalogError::storage(&metadata_file, e))?
        .into_table();
    let provider = match snapshot {
        None => IcebergStaticTableProvider::try_new_from_table(table).await,
        Some(id) => IcebergStaticTableProvider::try_new_from_table_snapshot(table, id).await,
    }
    .map_err(|e| CatalogError::storage(&metadata_file, e))?;
    Ok(IcebergTable {
        provider: Arc::new(PartitionedIceberg::new(Arc::new(provider), foreign, table_name)),
        metadata_file,
        snapshot_id: served_snapshot,
        committed_ms,
        renamed,
    })
}

/// The top-level columns whose name in the current schema differs from their name in the schema
/// of snapshot `id` (same field id): (current name, name at the snapshot).
fn renamed_since(metadata: &TableMetadata, id: i64) -> Vec<(String, String)> {
    let Some(old) = metadata
        .snapshot_by_id(id)
        .and_then(|s| s.schema_id())
        .and_then(|sid| metadata.schema_by_id(sid))
    else {
        return Vec::new();
    };
    let current = metadata.current_schema();
    current
        .as_struct()
        .fields()
        .iter()
        .filter_map(|now| {
            let then = old.as_struct().fields().iter().find(|f| f.id == now.id)?;
            (then.name != now.name).then(|| (now.name.clone(), then.name.clone()))
        })
        .collect()
}

/// The snapshot `as_of` names: a snapshot id the table has, or the snapshot that was current at
/// a time (the snapshot log, else the newest snapshot committed by then).
fn snapshot_as_of(metadata: &TableMetadata, as_of: AsOf) -> std::result::Result<i64, String> {
    let ids: Vec<i64> = metadata.snapshots().map(|s| s.snapshot_id()).collect();
    match as_of {
        AsOf::Version(id) => {
            if ids.contains(&id) {
                Ok(id)
            } else {
                Err(format!("the table has no snapshot {id} (snapshots: {ids:?})"))
            }
        }
        AsOf::Timestamp(ms) => {
            let from_log = metadata
                .history()
                .iter()
                .filter(|l| l.timestamp_ms <= ms)
                .max_by_key(|l| l.timestamp_ms)
                .map(|l| l.snapshot_id)
                .filter(|id| ids.contains(id));
            let by_commit = || {
                metadata
                    .snapshots()
                    .filter(|s| s.timestamp_ms() <= ms)
                    .max_by_key(|s| s.timestamp_ms())
                    .map(|s| s.snapshot_id())
            };
            from_log.or_else(by_commit).ok_or_else(|| {
                let first = metadata.snapshots().map(|s| s.timestamp_ms()).min();
                match first {
                    Some(first) => format!(
                        "the table has no snapshot at or before {} (its first is from {})",
                        crate::time::rfc3339(ms),
                        crate::time::rfc3339(first)
                    ),
                    None => "the table has no snapshots".to_string(),
                }
            })
        }
    }
}

/// The metadata file to read: `url` itself if it is one, else the newest under `url/metadata/`.
pub async fn find_metadata(stores: &StoreRegistry, url: &Url) -> Result<Url> {
    if url.path().ends_with(".metadata.json") {
        return Ok(url.clone());
    }
    let dir = as_directory(url)
        .join("metadata/")
        .map_err(|e| CatalogError::storage(url, e))?;
    let (store, prefix) = stores.locate(&dir)?;
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| stores.error(&dir, e))?;
    let newest = listed
        .iter()
        .filter_map(|m| {
            let name = m.location.filename()?;
            let stem = name.strip_suffix(".metadata.json")?;
            // `00003-<uuid>` (catalog-written) or `v3` (Hadoop tables)
            let version = stem
                .strip_prefix('v')
                .unwrap_or(stem)
                .split('-')
                .next()?
                .parse::<u64>()
                .ok()?;
            Some((version, m.last_modified, m.location.clone()))
        })
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    match newest {
        Some((_, _, location)) => dir
            .join(location.filename().unwrap_or_default())
            .map_err(|e| CatalogError::storage(&dir, e)),
        None => Err(CatalogError::storage(
            url,
            "no Iceberg metadata file (metadata/*.metadata.json) found: is this an Iceberg table directory?",
        )),
    }
}

/// An Iceberg path (`/abs`, `file:/abs`, `file:///abs`, `s3://b/k`) as a URL.
fn to_url(path: &str) -> std::result::Result<Url, String> {
    let local = if path.starts_with('/') {
        Some(path.to_string())
    } else {
        path.strip_prefix("file:")
            .map(|rest| format!("/{}", rest.trim_start_matches('/')))
    };
    match local {
        Some(p) => Url::from_file_path(&p).map_err(|()| format!("not an absolute path: {p}")),
        None => Url::parse(path).map_err(|e| format!("{path}: {e}")),
    }
}

/// Iceberg `Storage` over meshql's object stores, read-only, with relocation.
#[derive(Debug, Clone)]
struct MeshIcebergStorage {
    stores: Arc<StoreRegistry>,
    /// (recorded table root, actual table root), both without a trailing slash.
    relocate: Option<(String, String)>,
}

fn io_error(path: &str, e: impl std::fmt::Display) -> IcebergError {
    IcebergError::new(ErrorKind::Unexpected, format!("{path}: {e}"))
}

impl MeshIcebergStorage {
    fn locate(&self, path: &str) -> iceberg::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let mut url = to_url(path).map_err(|e| io_error(path, e))?;
        if let Some((from, to)) = &self.relocate {
            let s = url.as_str();
            if let Some(rest) = s.strip_prefix(from.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    url = Url::parse(&format!("{to}{rest}")).map_err(|e| io_error(path, e))?;
                }
            }
        }
        self.stores.locate(&url).map_err(|e| io_error(path, e))
    }

    fn read_only(path: &str) -> IcebergError {
        IcebergError::new(
            ErrorKind::FeatureUnsupported,
            format!("{path}: meshql reads Iceberg tables and never writes them"),
        )
    }
}

struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
}

#[async_trait]
impl FileRead for ObjectReader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(|e| io_error(self.path.as_ref(), e))
    }
}

#[async_trait]
#[typetag::serde(name = "meshql_object_store")]
impl Storage for MeshIcebergStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (store, p) = self.locate(path)?;
        match store.head(&p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (store, p) = self.locate(path)?;
        let meta = store.head(&p).await.map_err(|e| io_error(path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (store, p) = self.locate(path)?;
        store
            .get(&p)
            .await
            .map_err(|e| io_error(path, e))?
            .bytes()
            .await
            .map_err(|e| io_error(path, e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (store, path) = self.locate(path)?;
        Ok(Box::new(ObjectReader { store, path }))
    }

    async fn write(&self, path: &str, _bs: Bytes) -> iceberg::Result<()> {
        Err(Self::read_only(path))
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Err(Self::read_only(path))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        Err(Self::read_only(path))
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        Err(Self::read_only(path))
    }

    async fn delete_stream(&self, _paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        Err(Self::read_only("(several files)"))
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

#[derive(Debug)]
struct MeshIcebergStorageFactory {
    storage: MeshIcebergStorage,
}

#[typetag::serde(name = "meshql_object_store_factory")]
impl StorageFactory for MeshIcebergStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

// Iceberg's storage traits are serializable so that plans can cross process boundaries. meshql's
// storage holds live object-store clients (and, later, credentials), which must never be
// serialized; both directions fail loudly instead.
macro_rules! not_serializable {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, _s: S) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom(concat!(
                    stringify!($t),
                    " cannot be serialized"
                )))
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(_d: D) -> std::result::Result<Self, D::Error> {
                Err(serde::de::Error::custom(concat!(
                    stringify!($t),
                    " cannot be deserialized"
                )))
            }
        }
    };
}
not_serializable!(MeshIcebergStorage);
not_serializable!(MeshIcebergStorageFactory);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iceberg_paths_become_urls() {
        assert_eq!(to_url("/a/b").unwrap().as_str(), "file:///a/b");
        assert_eq!(to_url("file:/a/b").unwrap().as_str(), "file:///a/b");
        assert_eq!(to_url("file:///a/b").unwrap().as_str(), "file:///a/b");
        assert_eq!(to_url("s3://bucket/k").unwrap().as_str(), "s3://bucket/k");
    }

    #[test]
    fn relocation_rewrites_only_paths_under_the_recorded_root() {
        let s = MeshIcebergStorage {
            stores: Arc::new(StoreRegistry::new(std::path::Path::new("/"))),
            relocate: Some(("file:///old/t".into(), "file:///new/place/t".into())),
        };
        assert_eq!(
            s.locate("/old/t/data/f.parquet").unwrap().1.as_ref(),
            "new/place/t/data/f.parquet"
        );
        assert_eq!(s.locate("file:/old/t").unwrap().1.as_ref(), "new/place/t");
        // a sibling whose name merely starts the same is not under the root
        assert_eq!(s.locate("/old/t2/x").unwrap().1.as_ref(), "old/t2/x");
    }
}
