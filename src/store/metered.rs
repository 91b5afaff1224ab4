//! A [`BlobStore`] decorator that keeps the blob store's gauges (`depot_blob_store_bytes`,
//! `depot_blob_store_objects`) and dedup counters (`depot_dedup_bytes_saved_total`,
//! `depot_dedup_uploads_total`) as blobs are committed and removed, so a scrape never walks the
//! store. The gauges start from one walk of the store in the background at start-up
//! ([`seed_gauges`]).
//!
//! The service commits and removes a given content under its stripe lock, so "is it there
//! already?" and the commit that follows are not raced by the same content.

use super::{
    BlobHandle, BlobInfo, BlobMaintenance, BlobStore, BlobWriter, PartInfo, PartStore, PartWriter,
    StagedBlob,
};
use crate::error::Result;
use crate::types::Sha256;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Blobs being written or staged (not yet committed or dropped), over every metered store.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many blob writes are open: a writer or a staged blob not yet committed or dropped. At
/// shutdown the server waits for this to reach 0, so aborted uploads have removed their temp
/// files before the process exits.
pub fn writes_in_flight() -> usize {
    LIVE.load(Ordering::Acquire)
}

/// Counts one open write while alive.
struct Live;

impl Live {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::AcqRel);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A store whose commits and removals are counted.
pub struct Metered<S: ?Sized> {
    inner: Arc<S>,
}

impl<S: BlobStore> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self::shared(Arc::new(inner))
    }
}

impl<S: BlobStore + ?Sized> Metered<S> {
    /// Wraps a store already shared (the configured `Arc<dyn BlobStore>`).
    pub fn shared(inner: Arc<S>) -> Self {
        Self { inner }
    }
}

/// Starts the walk of `store` that adds what it holds to the gauges (the server calls it once
/// at start; commits and removals meanwhile are counted as they happen).
pub fn seed_gauges(store: Arc<dyn BlobStore>) {
    let spawned = std::thread::Builder::new()
        .name("blob-gauges".into())
        .spawn(move || {
            let Some(m) = store.maintenance() else {
                return;
            };
            match m.list() {
                Ok(all) => {
                    let bytes: u64 = all.iter().map(|b| b.len).sum();
                    metrics::gauge!("depot_blob_store_bytes").increment(bytes as f64);
                    metrics::gauge!("depot_blob_store_objects").increment(all.len() as f64);
                }
                Err(e) => tracing::warn!(error = %e.chain(), "cannot size the blob store"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the blob store walk: {e}");
    }
}

/// Commits `staged` into `store`, counting a new blob or a deduplicated one.
fn commit_counted<S: BlobStore + ?Sized>(store: &S, staged: Box<dyn StagedBlob>) -> Result<()> {
    let (sha, size) = (staged.sha(), staged.size());
    let existed = store.open(&sha)?.is_some();
    staged.commit()?;
    if existed {
        metrics::counter!("depot_dedup_bytes_saved_total").increment(size);
        metrics::counter!("depot_dedup_uploads_total").increment(1);
    } else {
        metrics::gauge!("depot_blob_store_bytes").increment(size as f64);
        metrics::gauge!("depot_blob_store_objects").increment(1.0);
    }
    Ok(())
}

struct MeteredStaged<S: ?Sized> {
    store: Arc<S>,
    staged: Box<dyn StagedBlob>,
    /// Declared last: released after the staged blob is dropped (and its file removed).
    _live: Live,
}

impl<S: BlobStore + ?Sized> StagedBlob for MeteredStaged<S> {
    fn sha(&self) -> Sha256 {
        self.staged.sha()
    }
    fn size(&self) -> u64 {
        self.staged.size()
    }
    fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        let result = commit_counted(&*this.store, this.staged);
        drop(this._live);
        result
    }
}

struct MeteredWriter<S: ?Sized> {
    store: Arc<S>,
    writer: Box<dyn BlobWriter>,
    _live: Live,
}

impl<S: BlobStore + ?Sized> BlobWriter for MeteredWriter<S> {
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        self.writer.write(chunks)
    }
    fn finish(self: Box<Self>) -> Result<Box<dyn StagedBlob>> {
        let this = *self;
        let staged = this.writer.finish()?;
        Ok(Box::new(MeteredStaged {
            store: this.store,
            staged,
            _live: this._live,
        }))
    }
}

impl<S: BlobStore + ?Sized> BlobStore for Metered<S> {
    fn writer_buffers(&self) -> u64 {
        self.inner.writer_buffers()
    }
    fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MeteredWriter {
            store: self.inner.clone(),
            writer: self.inner.writer()?,
            _live: Live::new(),
        }))
    }
    fn open(&self, sha: &Sha256) -> Result<Option<Box<dyn BlobHandle>>> {
        self.inner.open(sha)
    }
    fn remove(&self, sha: &Sha256) -> Result<()> {
        let len = self.inner.open(sha)?.map(|h| h.len());
        self.inner.remove(sha)?;
        if let Some(len) = len {
            metrics::gauge!("depot_blob_store_bytes").decrement(len as f64);
            metrics::gauge!("depot_blob_store_objects").decrement(1.0);
        }
        Ok(())
    }
    fn read(&self, sha: &Sha256, from: u64, len: u64) -> Result<Option<super::ByteStream>> {
        self.inner.read(sha, from, len)
    }
    fn maintenance(&self) -> Option<&dyn BlobMaintenance> {
        self.inner
            .maintenance()
            .map(|_| self as &dyn BlobMaintenance)
    }
    fn parts(&self) -> Option<&dyn PartStore> {
        self.inner.parts().map(|_| self as &dyn PartStore)
    }
    fn presigned_get(
        &self,
        sha: &Sha256,
        ttl: std::time::Duration,
        headers: &super::ResponseHeaders,
    ) -> Result<Option<String>> {
        self.inner.presigned_get(sha, ttl, headers)
    }
}

impl<S: BlobStore + ?Sized> BlobMaintenance for Metered<S> {
    fn list(&self) -> Result<Vec<BlobInfo>> {
        match self.inner.maintenance() {
            Some(m) => m.list(),
            None => Ok(Vec::new()),
        }
    }
    fn quarantine(&self, sha: &Sha256) -> Result<()> {
        let len = self.inner.open(sha)?.map(|h| h.len());
        if let Some(m) = self.inner.maintenance() {
            m.quarantine(sha)?;
        }
        if let Some(len) = len {
            metrics::gauge!("depot_blob_store_bytes").decrement(len as f64);
            metrics::gauge!("depot_blob_store_objects").decrement(1.0);
        }
        Ok(())
    }
    fn sweep_temp(&self) -> Result<usize> {
        match self.inner.maintenance() {
            Some(m) => m.sweep_temp(),
            None => Ok(0),
        }
    }
}

impl<S: BlobStore + ?Sized> PartStore for Metered<S> {
    fn part_writer(
        &self,
        session: &str,
        number: u32,
        digests: super::PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        match self.inner.parts() {
            Some(p) => p.part_writer(session, number, digests),
            None => Err(no_parts()),
        }
    }
    fn list_parts(&self, session: &str) -> Result<Vec<PartInfo>> {
        match self.inner.parts() {
            Some(p) => p.list_parts(session),
            None => Err(no_parts()),
        }
    }
    fn assemble(&self, session: &str, numbers: &[u32]) -> Result<Box<dyn StagedBlob>> {
        let staged = match self.inner.parts() {
            Some(p) => p.assemble(session, numbers)?,
            None => return Err(no_parts()),
        };
        Ok(Box::new(MeteredStaged {
            store: self.inner.clone(),
            staged,
            _live: Live::new(),
        }))
    }
    fn drop_session(&self, session: &str) -> Result<()> {
        match self.inner.parts() {
            Some(p) => p.drop_session(session),
            None => Err(no_parts()),
        }
    }
    fn placed_part_writer(
        &self,
        session: &str,
        number: u32,
        place: super::PartPlace,
        digests: super::PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        match self.inner.parts() {
            Some(p) => p.placed_part_writer(session, number, place, digests),
            None => Err(no_parts()),
        }
    }
}

/// Unreachable through [`BlobStore::parts`], which offers parts only when the inner store has
/// them.
fn no_parts() -> crate::error::Error {
    crate::error::Error::Internal("this blob store has no part storage".into())
}
