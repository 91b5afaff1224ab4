//! The use cases: ingest uploads, read files, grant access, delete. Owns the rules; knows
//! nothing about HTTP.

pub mod access;
pub mod assets;
pub mod content;
pub mod decode_lanes;
pub mod dirs;
pub mod files;
pub mod foir_view;
pub mod hot;
pub mod ingest_remote;
pub mod maintenance;
pub mod names;
pub mod query;
pub mod quota;
pub mod ready;
pub mod redirect;
pub mod reupload;
pub mod session_leases;
pub mod sessions;
pub mod temp_multipart;
pub mod transform;
pub mod tus;
pub mod upload;
pub mod usage;
pub mod webhooks;

use crate::auth::{Caller, Keys};
use crate::config::Config;
use crate::error::Result;
use crate::meta::{HeldLock, MetaStore};
use crate::store::BlobStore;
use crate::types::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Number of lock stripes guarding blob reference changes.
const STRIPES: usize = 64;

/// The service and everything it owns. Cheap to share behind an `Arc`.
pub struct Service {
    pub config: Config,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub keys: Keys,
    /// Serialises "blob on disk + reference added" against "reference dropped + blob removed"
    /// for the same content, so a racing delete never removes a blob a write just counted on
    /// (uploads into a metadata store of this process's own let go between the two and rely
    /// on [`Service::pin_blobs`] meanwhile). In process; a shared metadata store extends the
    /// order to every node ([`crate::meta::NodeLocks`]), taken after these.
    blob_locks: Vec<Mutex<()>>,
    /// Blobs committed by writes whose records are not written yet, with how many such writes
    /// each: [`Service::remove_blob`] leaves them be (see [`Service::pin_blobs`]).
    pins: Mutex<HashMap<Sha256, usize>>,
    /// Small files recently downloaded by their owners, answered without storage reads.
    pub(crate) hot: Arc<hot::HotFiles>,
    /// Upload sessions' in-memory state (PUTs in flight, creation rate, decode lane).
    pub(crate) sessions: sessions::Runtime,
    /// The directory trees' locks, per instance: moves write, uploads and listings read (see
    /// `dirs`).
    pub(crate) tree: dirs::TreeLock,
    /// Remote URL ingests (Hygraph `createAsset(data: {uploadUrl})`): fetcher and bounds.
    pub(crate) ingests: ingest_remote::Runtime,
    /// Image transforms: the rules and the variants being computed (see `transform`).
    pub(crate) transforms: transform::Runtime,
    /// Webhook deliveries: the fetcher and the worker's signals (see `webhooks`).
    pub(crate) webhooks: webhooks::Runtime,
    /// Quota admissions (see `quota`).
    pub(crate) quotas: quota::Runtime,
}

impl Service {
    /// Wires the service together.
    pub fn new(
        config: Config,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        keys: Keys,
    ) -> Self {
        Self {
            hot: Arc::new(hot::HotFiles::new(config.download_cache_bytes)),
            ingests: ingest_remote::Runtime::from_config(&config),
            transforms: transform::Runtime::from_config(&config),
            webhooks: webhooks::Runtime::from_config(&config),
            tree: dirs::TreeLock::new(meta.clone()),
            config,
            meta,
            blobs,
            keys,
            blob_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            pins: Mutex::default(),
            sessions: sessions::Runtime::default(),
            quotas: quota::Runtime::default(),
        }
    }

    /// Resolves request headers into a caller.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Caller> {
        crate::auth::authenticate(
            &self.keys,
            authorization,
            domain,
            self.config.default_instance.as_deref(),
        )
    }

    /// Locks these blobs against reference changes and removal: this process's stripes, in a
    /// fixed order so two callers cannot deadlock, then (on a shared metadata store) the same
    /// blobs for every node. Fails (503) only when the shared store cannot be reached.
    fn lock_blobs<'a>(
        &'a self,
        shas: impl IntoIterator<Item = &'a Sha256>,
    ) -> Result<BlobGuard<'a>> {
        let shas: Vec<Sha256> = shas.into_iter().copied().collect();
        let mut idx: Vec<usize> = shas.iter().map(|s| usize::from(s.0[0]) % STRIPES).collect();
        idx.sort_unstable();
        idx.dedup();
        let local = idx
            .iter()
            .map(|&i| self.blob_locks[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        // One node's threads queue on the stripes above, so at most one of them per stripe
        // waits here for the other nodes.
        let nodes = self.meta.lock_blobs(&shas)?;
        Ok(BlobGuard {
            nodes,
            _local: local,
            stripes: idx,
        })
    }

    /// Keeps `shas`, locked by `_held`, from removal by this process until the pins are
    /// dropped. For an upload into a metadata store of this process's own (sled), which
    /// commits its blobs under their locks alone, lets go, then takes the instance's tree lock
    /// and quota permit (both the whole instance's, while a commit can be long: an S3 copy of
    /// a large object) and writes the records that reference them: in between, a removal (a
    /// refused upload of the same bytes taking them back, the last other file of these bytes
    /// deleted) would leave those records without bytes. Every removal decides under the
    /// blobs' locks, so it ran before the pin (the commit then stores the bytes, or fails if
    /// the store's writer had found them stored and kept none of its own) or sees the pin.
    /// Other processes' removals would not see it: with a shared metadata store uploads keep
    /// the locks from the commit to the records instead.
    fn pin_blobs(&self, _held: &BlobGuard<'_>, shas: &[Sha256]) -> Pins<'_> {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for sha in shas {
            *pins.entry(*sha).or_default() += 1;
        }
        Pins {
            svc: self,
            shas: shas.to_vec(),
        }
    }

    fn pinned(&self, sha: &Sha256) -> bool {
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sha)
    }

    /// After a write that committed `shas` failed, with no lock held and its pins dropped:
    /// removes each of them that nothing references under its lock. Best effort, as
    /// [`Service::drop_unreferenced`].
    fn take_back(&self, shas: &[Sha256]) {
        match self.lock_blobs(shas) {
            Ok(guard) => self.drop_unreferenced(&guard, shas),
            Err(e) => {
                tracing::warn!(error = %e, "could not take back the bytes of a failed write; gc collects them")
            }
        }
    }

    /// Removes a blob whose reference count reached zero under `guard`, the blob's lock, and
    /// only while that lock is certainly still held: a lock lost with its database session
    /// could let another node count a new reference on these bytes meanwhile, so the blob
    /// stays (unreferenced, `gc` collects it later under the lock).
    fn remove_blob(&self, guard: &BlobGuard<'_>, sha: &Sha256) -> Result<()> {
        if self.pinned(sha) {
            // A write committed these bytes and is about to reference them: they stay (should
            // it fail, it takes them back itself once unpinned).
            return Ok(());
        }
        if let Some(l) = &guard.nodes {
            l.check()?;
        }
        self.blobs.remove(sha)?;
        // Its image variants go with it (their records, references and unshared blobs).
        self.drop_variants(guard, sha)
    }

    /// Runs `write`, the rest of a write that committed the blobs `shas` (held by `guard`)
    /// before its quota check; when it fails, the blobs nothing references are taken back
    /// ([`Service::drop_unreferenced`]).
    fn write_or_take_back<T>(
        &self,
        guard: &BlobGuard<'_>,
        shas: &[Sha256],
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let out = write();
        if out.is_err() {
            self.drop_unreferenced(guard, shas);
        }
        out
    }

    /// For a write that failed after committing `shas` (held by `guard`): removes each of them
    /// nothing references, so a refused upload leaves no bytes behind. Best effort: the caller
    /// is failing already; a blob that stays is unreferenced and `gc` collects it.
    fn drop_unreferenced(&self, guard: &BlobGuard<'_>, shas: &[Sha256]) {
        let mut seen = std::collections::HashSet::new();
        for sha in shas.iter().filter(|s| seen.insert(**s)) {
            let res = match self.meta.blob_refs(sha) {
                Ok(0) => self.remove_blob(guard, sha),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                tracing::warn!(blob = %sha.to_hex(), error = %e, "could not remove the bytes of a failed write");
            }
        }
    }
}

/// Blob locks held (see [`Service::lock_blobs`]); released when dropped.
pub(crate) struct BlobGuard<'a> {
    nodes: Option<Box<dyn HeldLock>>,
    _local: Vec<MutexGuard<'a, ()>>,
    /// The stripes held (sorted), so a holder can tell which further blobs it holds already.
    stripes: Vec<usize>,
}

/// Blobs pinned by [`Service::pin_blobs`]; unpinned when dropped.
pub(crate) struct Pins<'a> {
    svc: &'a Service,
    shas: Vec<Sha256>,
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut pins = self.svc.pins.lock().unwrap_or_else(|p| p.into_inner());
        for sha in &self.shas {
            if let Some(n) = pins.get_mut(sha) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(sha);
                }
            }
        }
    }
}

/// Crash-testing hook: when `DEPOT_FAILPOINT` names this point, the process aborts there, as a
/// power cut would. Read once; costs one comparison per call otherwise.
pub(crate) fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if POINT
        .get_or_init(|| std::env::var("DEPOT_FAILPOINT").ok())
        .as_deref()
        == Some(name)
    {
        std::process::abort();
    }
}

/// Failure-testing hook: when `DEPOT_FAILPOINT` is `error:<name>`, the write at this point
/// fails with INTERNAL (as a full disk or a broken database would), and the request with it.
pub(crate) fn failpoint_error(name: &str) -> Result<()> {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("DEPOT_FAILPOINT").ok());
    match point.as_deref().and_then(|p| p.strip_prefix("error:")) {
        Some(p) if p == name => Err(crate::error::Error::Internal(format!("failpoint {name}"))),
        _ => Ok(()),
    }
}

/// Runs blocking work (sled, the filesystem) off the async executor.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    // The blocking pool logs under the request's span too (its request id).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await?
}
