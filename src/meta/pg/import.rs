//! Writes the [`crate::meta::MetaStore`] traits have no call for, used only by the sled ->
//! PostgreSQL migration (`depot migrate-store --from sled:DIR`). Never on a request path.

use super::{db_err, json, pool_err, PgMeta};
use crate::error::Result;
use crate::meta::FileExtras;
use crate::types::FileId;

impl PgMeta {
    /// Stores a File's extra fields as they were (in the service they are only ever written
    /// with the File by `confirm_session`). The File must exist (a foreign key); an existing
    /// record is replaced, so a re-run writes the same thing again.
    pub fn import_file_extras(&self, file: FileId, extras: &FileExtras) -> Result<()> {
        let record = json(extras)?;
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute(
                "INSERT INTO file_extras (file, record) VALUES ($1, $2)
                 ON CONFLICT (file) DO UPDATE SET record = EXCLUDED.record",
                &[&file.to_bytes().as_slice(), &record],
            )
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }
}

/// How many records of each kind the database holds (the migration's count check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub instances: u64,
    pub files: u64,
    pub images: u64,
    pub file_extras: u64,
    pub grants: u64,
    pub sessions: u64,
    pub stars: u64,
    pub blob_refs: u64,
}

impl PgMeta {
    /// Counts every record kind, in one statement (one snapshot).
    pub fn record_counts(&self) -> Result<RecordCounts> {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_one(
                    "SELECT (SELECT count(*) FROM instances), (SELECT count(*) FROM files),
                            (SELECT count(*) FROM images), (SELECT count(*) FROM file_extras),
                            (SELECT count(*) FROM rights), (SELECT count(*) FROM sessions),
                            (SELECT count(*) FROM stars), (SELECT count(*) FROM blob_refs)",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let n = |i: usize| -> Result<u64> { Ok(super::count(row.try_get(i).map_err(db_err)?)) };
            Ok(RecordCounts {
                instances: n(0)?,
                files: n(1)?,
                images: n(2)?,
                file_extras: n(3)?,
                grants: n(4)?,
                sessions: n(5)?,
                stars: n(6)?,
                blob_refs: n(7)?,
            })
        })
    }
}
