//! Readiness: can the service still write to its blob store and its metadata store? Each probe
//! writes something no client can name and removes it again, through the same seams an upload
//! uses.

use super::Service;
use crate::error::Result;
use crate::types::Sha256;
use bytes::Bytes;

impl Service {
    /// Writes, commits and removes a tiny blob of content unique to this probe (so it is never
    /// deduplicated against, nor removed from under, a real file). Blocks.
    pub fn probe_blob_store(&self) -> Result<()> {
        let mut writer = self.blobs.writer()?;
        let content = format!("depot readiness probe {}", ulid::Ulid::new());
        crate::store::write_bytes(&mut *writer, Bytes::from(content))?;
        let staged = writer.finish()?;
        let sha = staged.sha();
        staged.commit()?;
        self.blobs.remove(&sha)
    }

    /// Sets and clears a reference count under a random hash (no content has it). Blocks.
    pub fn probe_meta_store(&self) -> Result<()> {
        let sha = Sha256(rand::random());
        self.meta.set_blob_refs(&sha, 1)?;
        self.meta.set_blob_refs(&sha, 0)
    }
}
