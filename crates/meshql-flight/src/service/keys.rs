//! Key metadata rows: the primary and foreign keys a principal may discover, for GetExportedKeys,
//! GetImportedKeys and GetCrossReference.

use tonic::{Response, Status};

use super::auth_layer::Caller;
use super::status::arrow_status;
use super::{batch_stream, DoGetStream, Handlers};
use crate::metadata;

/// One side of a foreign key as a key RPC names it: catalog, domain (absent: the session's
/// current one, else any), table.
pub(super) struct KeyEnd {
    catalog: Option<String>,
    schema: Option<String>,
    table: String,
}

impl KeyEnd {
    pub(super) fn new(catalog: Option<String>, schema: Option<String>, table: String) -> KeyEnd {
        KeyEnd { catalog, schema, table }
    }

    fn matches(&self, key: &metadata::KeyColumn, current: Option<&str>) -> bool {
        Handlers::selects_mesh(self.catalog.as_deref())
            && key.table == self.table
            && self.schema.as_deref().or(current).is_none_or(|d| d == key.domain)
    }
}

impl Handlers {
    /// GetImportedKeys / GetExportedKeys / GetCrossReference: the foreign keys the caller may
    /// discover whose referenced (`pk`) and referencing (`fk`) sides match, ordered as the
    /// spec asks (by the other side's table, then key sequence).
    pub(super) fn foreign_key_rows(
        &self,
        caller: &Caller,
        pk: Option<KeyEnd>,
        fk: Option<KeyEnd>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session(&caller.principal);
        let current = caller.schema.as_deref();
        let mut keys: Vec<_> = metadata::foreign_keys(&session, &session.definition())
            .into_iter()
            .filter(|k| pk.as_ref().is_none_or(|e| e.matches(&k.pk, current)))
            .filter(|k| fk.as_ref().is_none_or(|e| e.matches(&k.fk, current)))
            .collect();
        let exported = fk.is_none();
        keys.sort_by(|a, b| {
            let side = |k: &metadata::ForeignKey| {
                let other = if exported { &k.fk } else { &k.pk };
                (other.domain.clone(), other.table.clone(), k.fk.sequence)
            };
            side(a).cmp(&side(b))
        });
        Ok(batch_stream(metadata::foreign_keys_batch(&keys).map_err(arrow_status)?))
    }
}
