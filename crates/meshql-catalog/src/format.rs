//! The seam between a product and its table format. Every format opens through one signature,
//! [`open`], and answers the same questions: the stored table, the version served, when it was
//! committed, and whether newer commits exist. `table.rs` puts the contract's view over what
//! comes out and never looks at the format again; adding a format is adding one file that
//! provides `open_stored` and one arm below.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::execution::session_state::SessionState;
use meshql_contract::{Format, StorageSpec};
use url::Url;

use crate::error::Result;
use crate::ownership::ForeignDirs;
use crate::store::StoreRegistry;
use crate::table::AsOf;
use crate::{delta, iceberg, parquet};

/// What opening a product's storage needs, whatever the format.
pub(crate) struct OpenRequest<'a> {
    /// The engine options storage is read with.
    pub state: Arc<SessionState>,
    pub stores: &'a Arc<StoreRegistry>,
    pub storage: &'a StorageSpec,
    /// The version asked for (time travel or the contract's pin); `None`: the newest.
    pub as_of: Option<AsOf>,
    /// Other domains' directories, whose files this product may not read.
    pub foreign: ForeignDirs,
    /// `mesh.<domain>.<product>`, for messages.
    pub table: &'a str,
    /// (domain, product).
    pub ident: (&'a str, &'a str),
}

/// A format's table, opened.
pub(crate) struct Stored {
    /// Where it was read: the table's URL, or the Iceberg metadata file read.
    pub location: Url,
    pub provider: Arc<dyn TableProvider>,
    /// The version served (Delta version, Iceberg snapshot id); `None` for Parquet.
    pub version: Option<i64>,
    /// When the served version was committed, in epoch milliseconds.
    pub committed_ms: Option<i64>,
    /// Hive partition columns, whose values are directory text (Parquet).
    pub hive_columns: Vec<String>,
    /// Columns renamed since the version served: (current name, name then) (Iceberg).
    pub renamed: Vec<(String, String)>,
    /// What tells whether newer commits exist.
    pub(crate) source: Source,
}

/// What a format needs to tell whether a table has moved on.
pub(crate) enum Source {
    /// A listing: files are listed on every scan, so the schema is re-read on every refresh.
    Parquet,
    Delta(delta::DeltaSource),
    Iceberg {
        metadata_file: Url,
    },
}

/// Opens `request.storage` in its format.
pub(crate) async fn open(request: OpenRequest<'_>) -> Result<Stored> {
    match request.storage.format {
        Format::Parquet => parquet::open_stored(request).await,
        Format::Delta => delta::open_stored(request).await,
        Format::Iceberg => iceberg::open_stored(request).await,
    }
}

/// Whether a format keeps versions one can travel to.
pub(crate) fn has_versions(format: Format) -> bool {
    !matches!(format, Format::Parquet)
}

/// Whether the location names one version for good (an Iceberg metadata file).
pub(crate) fn fixed_location(storage: &StorageSpec) -> bool {
    storage.format == Format::Iceberg && storage.location.ends_with(".metadata.json")
}

impl Source {
    /// Whether the table opened as `self` has newer commits now.
    pub(crate) async fn has_new_commits(&self, stores: &Arc<StoreRegistry>, storage: &StorageSpec) -> Result<bool> {
        match self {
            Source::Parquet => Ok(true),
            Source::Delta(d) => Ok(Some(d.latest_version().await?) != d.version()),
            Source::Iceberg { metadata_file } => {
                Ok(&iceberg::current_metadata(stores, storage).await? != metadata_file)
            }
        }
    }
}
