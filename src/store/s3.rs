//! Blobs on S3-compatible object storage (AWS S3, MinIO, Garage, Ceph RGW, R2, moto), through the
//! `object_store` crate. Keys: `sha256/ab/cd/<hex>` (as the local store's paths), `tmp/<ulid>`
//! for uploads being committed, `quarantine/<hex>` for blobs fsck found damaged.
//!
//! How a blob is written (the hash is only known once the last byte has arrived, so the content
//! key cannot be the upload's target from the start):
//! - Up to [`PART_SIZE`] bytes are kept in memory. A blob that ends within that is put straight
//!   to its content key on commit (after a HEAD: bytes already stored are not sent again).
//! - A larger blob becomes a multipart upload to a temp key, one [`PART_SIZE`] part at a time,
//!   with at most one part in flight while the next fills: memory stays flat (two parts) in the
//!   file size, and no local disk is used, so a node stays stateless. When the last part is in,
//!   the content key is HEADed: if the blob exists the multipart upload is aborted (the bytes
//!   are never completed into a second object); otherwise it is completed under the temp key
//!   and [`StagedBlob::commit`] makes it the content key with a server-side copy (no bytes pass
//!   through the node), then deletes the temp object. The alternative (spooling to a local temp
//!   file, then one put to the content key) needs local disk as large as the largest upload and
//!   sends every byte after the upload ended instead of while it arrives.
//! - Concurrent identical uploads are safe: content-addressed objects hold the same bytes, and
//!   each PUT/copy replaces an object atomically, so readers see one whole object or none.
//!   A single CopyObject is limited to 5 GiB on AWS: config validation refuses a larger
//!   `max_file_size` with this store.
//!
//! Calls are blocking (the [`BlobStore`] seam): each runs its request on the store's own small
//! tokio runtime and waits on a channel, so it works from any thread (blocking pool, test
//! threads, even an async worker of a multi-threaded runtime). Streamed reads run their GET on
//! that runtime too and hand chunks over a bounded channel.

use super::s3_parts::S3Parts;
use super::{
    BlobHandle, BlobHasher, BlobInfo, BlobMaintenance, BlobStore, BlobWriter, ByteStream,
    PartStore, StagedBlob,
};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::types::Sha256;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutPayload, RetryConfig,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bytes per multipart part (S3's least part size is 5 MiB, except for the last part).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// A CopyObject of more than this fails on AWS S3.
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Chunks of a streamed read queued between the GET and the consumer.
const READ_QUEUE: usize = 4;
/// Temp objects older than this are left by a crashed node and swept; younger ones may belong to
/// a commit in progress on another node (a staged temp object lives for seconds).
const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);

/// [`BlobStore`] on an S3 bucket.
pub struct S3Store {
    inner: Arc<Inner>,
    /// Upload-session parts, when a staging dir was given ([`S3Store::with_part_staging`]).
    parts: Option<Arc<S3Parts>>,
}

pub(super) struct Inner {
    pub(super) store: Arc<AmazonS3>,
    handle: tokio::runtime::Handle,
    /// Owned here so it lives as long as any writer or handle; shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime inside async code panics; this form never blocks.
            rt.shutdown_background();
        }
    }
}

/// The object store failed or did not answer: 503 for the client, the cause for the log.
pub(super) fn unavailable(context: &str, e: object_store::Error) -> Error {
    Error::StorageUnavailable(format!("{context}: {e}").into())
}

pub(super) fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

pub(super) fn blob_key(sha: &Sha256) -> Path {
    let hex = sha.to_hex();
    Path::from(format!("sha256/{}/{}/{hex}", &hex[0..2], &hex[2..4]))
}

impl Inner {
    /// Runs `fut` on the store's runtime and waits for it from this (any) thread.
    pub(super) fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Internal("object store task ended without an answer".into()))
    }

    /// Runs `fut` on the store's runtime without waiting (cleanup on drop).
    pub(super) fn detach(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(fut);
    }

    /// The object's size, `None` when it does not exist.
    pub(super) fn head(&self, key: &Path) -> Result<Option<u64>> {
        let (store, key) = (self.store.clone(), key.clone());
        match self.block(async move { store.head(&key).await })? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(unavailable("checking a blob", e)),
        }
    }

    fn delete(&self, key: &Path) -> Result<()> {
        let (store, key) = (self.store.clone(), key.clone());
        match self.block(async move { store.delete(&key).await })? {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(unavailable("removing a blob", e)),
        }
    }
}

impl S3Store {
    /// Connects to the bucket `cfg` names. Nothing is sent until the first call.
    pub fn open(cfg: &StoreConfig) -> Result<Self> {
        let bucket = cfg
            .bucket
            .as_deref()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                Error::BadRequest("store.bucket is required for kind = \"s3\"".into())
            })?;
        let client = ClientOptions::new()
            .with_allow_http(cfg.allow_http)
            // Blobs are opaque bytes (some servers mishandle a form content type).
            .with_default_content_type("application/octet-stream")
            .with_connect_timeout(Duration::from_secs(5))
            // No whole-request timeout: a download to a slow client may take long. A GET or PUT
            // whose server stops sending fails after the read timeout instead.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 3,
            // An unreachable store fails an upload in seconds, not minutes.
            retry_timeout: Duration::from_secs(10),
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(cfg.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(client)
            .with_retry(retry);
        if let Some(e) = cfg.endpoint.as_deref().filter(|e| !e.is_empty()) {
            b = b.with_endpoint(e);
        }
        if let Some(k) = cfg.access_key_id.as_deref().filter(|k| !k.is_empty()) {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = cfg.secret_access_key.as_deref().filter(|k| !k.is_empty()) {
            b = b.with_secret_access_key(k);
        }
        let store = b
            .build()
            .map_err(|e| Error::BadRequest(format!("invalid [store] settings: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("depot-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::failed("starting the object store runtime", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            }),
            parts: None,
        })
    }

    /// Takes upload-session parts (multipart, tus), staged under `dir` before they are sent
    /// to the bucket (see [`super::s3_parts`]).
    pub fn with_part_staging(mut self, dir: &std::path::Path) -> Result<Self> {
        self.parts = Some(Arc::new(S3Parts::open(dir, self.inner.clone())?));
        Ok(self)
    }

    /// A new blob's writer on `inner`'s bucket.
    pub(super) fn writer_on(inner: &Arc<Inner>) -> Box<dyn BlobWriter> {
        Box::new(S3Writer {
            inner: inner.clone(),
            hasher: BlobHasher::new(),
            buf: Vec::new(),
            buf_len: 0,
            upload: None,
        })
    }
}

impl BlobStore for S3Store {
    fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Self::writer_on(&self.inner))
    }

    fn open(&self, sha: &Sha256) -> Result<Option<Box<dyn BlobHandle>>> {
        let key = blob_key(sha);
        Ok(self.inner.head(&key)?.map(|len| {
            Box::new(S3Handle {
                inner: self.inner.clone(),
                key,
                len,
            }) as Box<dyn BlobHandle>
        }))
    }

    fn remove(&self, sha: &Sha256) -> Result<()> {
        self.inner.delete(&blob_key(sha))
    }

    fn maintenance(&self) -> Option<&dyn BlobMaintenance> {
        Some(self)
    }

    fn parts(&self) -> Option<&dyn PartStore> {
        self.parts.as_ref().map(|p| p as &dyn PartStore)
    }

    fn presigned_get(
        &self,
        sha: &Sha256,
        ttl: Duration,
        headers: &super::ResponseHeaders,
    ) -> Result<Option<String>> {
        use object_store::signer::{Method, SignedUrlOptions, Signer};
        // The overrides are signed query parameters: a holder of the URL cannot change them.
        let options = SignedUrlOptions::default().with_query([
            ("response-content-type", headers.content_type.as_str()),
            (
                "response-content-disposition",
                headers.content_disposition.as_str(),
            ),
            ("response-cache-control", headers.cache_control.as_str()),
        ]);
        let (store, key) = (self.inner.store.clone(), blob_key(sha));
        // Signing is local (no request), but the credentials may need a refresh.
        let url = self
            .inner
            .block(async move {
                store
                    .signed_url_opts(Method::GET, &key, ttl, &options)
                    .await
            })?
            .map_err(|e| unavailable("signing a download URL", e))?;
        Ok(Some(url.to_string()))
    }
}

/// A multipart upload to a temp key, with the part in flight.
struct Upload {
    temp: Path,
    mp: Box<dyn MultipartUpload>,
    pending: Option<tokio::task::JoinHandle<object_store::Result<()>>>,
}

struct S3Writer {
    inner: Arc<Inner>,
    hasher: BlobHasher,
    /// Bytes not yet sent (at most a part).
    buf: Vec<Bytes>,
    buf_len: usize,
    upload: Option<Upload>,
}

impl S3Writer {
    /// Waits for the part in flight, if any.
    fn wait_pending(&mut self) -> Result<()> {
        if let Some(up) = self.upload.as_mut() {
            if let Some(p) = up.pending.take() {
                self.inner
                    .block(p)?
                    .map_err(Error::from)?
                    .map_err(|e| unavailable("uploading a part", e))?;
            }
        }
        Ok(())
    }

    /// Sends the buffered bytes as the next part, after the previous part is in.
    fn send_part(&mut self) -> Result<()> {
        self.wait_pending()?;
        if self.upload.is_none() {
            let temp = Path::from(format!("tmp/{}", ulid::Ulid::new()));
            let (store, key) = (self.inner.store.clone(), temp.clone());
            let mp = self
                .inner
                .block(async move { store.put_multipart(&key).await })?
                .map_err(|e| unavailable("starting an upload", e))?;
            self.upload = Some(Upload {
                temp,
                mp,
                pending: None,
            });
        }
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        self.buf_len = 0;
        if let Some(up) = self.upload.as_mut() {
            let _rt = self.inner.handle.enter();
            up.pending = Some(self.inner.handle.spawn(up.mp.put_part(payload)));
        }
        Ok(())
    }
}

impl BlobWriter for S3Writer {
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        let mut failed = None;
        let mut hasher = std::mem::take(&mut self.hasher);
        let res = hasher.burst(chunks, |chunk| {
            let mut rest = chunk.clone();
            while !rest.is_empty() {
                let take = rest.len().min(PART_SIZE - self.buf_len);
                self.buf.push(rest.split_to(take));
                self.buf_len += take;
                if self.buf_len == PART_SIZE {
                    if let Err(e) = self.send_part() {
                        failed = Some(e);
                        return Err(std::io::Error::other("part upload failed"));
                    }
                }
            }
            Ok(())
        });
        self.hasher = hasher;
        match (res, failed) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(Error::failed("hashing blob", e)),
            (Ok(()), None) => Ok(()),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<Box<dyn StagedBlob>> {
        let size = self.hasher.size();
        let sha = std::mem::take(&mut self.hasher).finish();
        if self.upload.is_none() {
            let bytes = std::mem::take(&mut self.buf);
            return Ok(Box::new(S3Staged {
                inner: self.inner.clone(),
                sha,
                size,
                state: Staged::Memory(bytes),
            }));
        }
        if self.buf_len > 0 {
            self.send_part()?;
        }
        self.wait_pending()?;
        let Some(mut up) = self.upload.take() else {
            return Err(Error::Internal("multipart upload vanished".into()));
        };
        let inner = self.inner.clone();
        if inner.head(&blob_key(&sha))?.is_some() {
            // Stored already: never complete a second copy of these bytes.
            inner.detach(async move {
                let _ = up.mp.abort().await;
            });
            return Ok(Box::new(S3Staged {
                inner,
                sha,
                size,
                state: Staged::Existing,
            }));
        }
        let temp = up.temp.clone();
        let done = inner.block(async move {
            let res = up.mp.complete().await;
            if res.is_err() {
                let _ = up.mp.abort().await;
            }
            res
        })?;
        done.map_err(|e| unavailable("completing an upload", e))?;
        Ok(Box::new(S3Staged {
            inner,
            sha,
            size,
            state: Staged::Temp(temp),
        }))
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(mut up) = self.upload.take() {
            // Aborting discards every part sent: nothing of this write stays in the bucket.
            self.inner.detach(async move {
                if let Some(p) = up.pending.take() {
                    let _ = p.await;
                }
                let _ = up.mp.abort().await;
            });
        }
    }
}

pub(super) enum Staged {
    /// A small blob, still in memory: put on commit.
    Memory(Vec<Bytes>),
    /// A completed temp object: copied to the content key on commit, deleted either way.
    Temp(Path),
    /// The content key held these bytes already when the write finished.
    Existing,
    /// Committed: nothing to clean up.
    Done,
}

pub(super) struct S3Staged {
    pub(super) inner: Arc<Inner>,
    pub(super) sha: Sha256,
    pub(super) size: u64,
    pub(super) state: Staged,
}

impl StagedBlob for S3Staged {
    fn sha(&self) -> Sha256 {
        self.sha
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let key = blob_key(&self.sha);
        let exists = self.inner.head(&key)?.is_some();
        match std::mem::replace(&mut self.state, Staged::Done) {
            // Same content stored meanwhile (or before): nothing to send.
            Staged::Memory(_) if exists => {}
            Staged::Memory(bytes) => {
                let store = self.inner.store.clone();
                let payload: PutPayload = bytes.into_iter().collect();
                self.inner
                    .block(async move { store.put(&key, payload).await })?
                    .map_err(|e| unavailable("storing a blob", e))?;
            }
            Staged::Temp(temp) => {
                if !exists {
                    let (store, from) = (self.inner.store.clone(), temp.clone());
                    let copied = self
                        .inner
                        .block(async move { store.copy(&from, &key).await });
                    if let Err(e) =
                        copied.and_then(|r| r.map_err(|e| unavailable("storing a blob", e)))
                    {
                        self.state = Staged::Temp(temp); // drop removes it
                        return Err(e);
                    }
                }
                // The blob is in place; a temp object whose delete fails is swept later.
                self.state = Staged::Temp(temp);
            }
            Staged::Existing if !exists => {
                // Removed (by gc or a delete) between finish and commit: the bytes are gone.
                return Err(Error::Conflict(
                    "the stored content was removed while this upload finished; retry".into(),
                ));
            }
            Staged::Existing | Staged::Done => {}
        }
        Ok(())
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        if let Staged::Temp(temp) = std::mem::replace(&mut self.state, Staged::Done) {
            let store = self.inner.store.clone();
            self.inner.detach(async move {
                let _ = store.delete(&temp).await;
            });
        }
    }
}

/// An object found by HEAD. S3 cannot pin bytes that are removed after: reads of a removed blob
/// fail.
struct S3Handle {
    inner: Arc<Inner>,
    key: Path,
    len: u64,
}

impl BlobHandle for S3Handle {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let end = pos.saturating_add(buf.len() as u64).min(self.len);
        if pos >= end {
            return Ok(0);
        }
        let (store, key) = (self.inner.store.clone(), self.key.clone());
        let bytes = self
            .inner
            .block(async move { store.get_range(&key, pos..end).await })?
            .map_err(|e| unavailable("reading a blob", e))?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn into_stream(self: Box<Self>, from: u64, len: u64) -> ByteStream {
        let end = from.saturating_add(len).min(self.len);
        if from >= end {
            return Box::pin(futures_util::stream::empty());
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(READ_QUEUE);
        let (store, key) = (self.inner.store.clone(), self.key.clone());
        self.inner.detach(async move {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(from..end)),
                ..Default::default()
            };
            let mut stream = match store.get_opts(&key, opts).await {
                Ok(r) => r.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(unavailable("reading a blob", e))).await;
                    return;
                }
            };
            let mut got = 0u64;
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(|e| unavailable("reading a blob", e));
                let failed = item.is_err();
                if let Ok(c) = &item {
                    got += c.len() as u64;
                }
                if tx.send(item).await.is_err() || failed {
                    return; // the reader went away, or the error was passed on
                }
            }
            if got != end - from {
                let _ = tx
                    .send(Err(Error::Internal(
                        "blob shorter than when it was opened".into(),
                    )))
                    .await;
            }
        });
        // The handle (and with it the runtime) lives as long as the stream.
        let inner = self.inner;
        Box::pin(futures_util::stream::unfold(
            (rx, inner),
            |(mut rx, inner)| async move { rx.recv().await.map(|item| (item, (rx, inner))) },
        ))
    }
}

impl BlobMaintenance for S3Store {
    fn list(&self) -> Result<Vec<BlobInfo>> {
        let store = self.inner.store.clone();
        let metas = self
            .inner
            .block(async move {
                store
                    .list(Some(&Path::from("sha256")))
                    .try_collect::<Vec<_>>()
                    .await
            })?
            .map_err(|e| unavailable("listing blobs", e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let sha: Sha256 = m.location.filename()?.parse().ok()?;
                // Only objects at their own content key count as blobs.
                (m.location == blob_key(&sha)).then(|| BlobInfo {
                    sha,
                    len: m.size,
                    modified: SystemTime::from(m.last_modified),
                })
            })
            .collect())
    }

    fn quarantine(&self, sha: &Sha256) -> Result<()> {
        let (store, from) = (self.inner.store.clone(), blob_key(sha));
        let to = Path::from(format!("quarantine/{}", sha.to_hex()));
        match self
            .inner
            .block(async move { store.copy(&from, &to).await })?
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(unavailable("quarantining a blob", e)),
        }
        self.inner.delete(&blob_key(sha))
    }

    fn sweep_temp(&self) -> Result<usize> {
        let store = self.inner.store.clone();
        let metas = self
            .inner
            .block(async move {
                store
                    .list(Some(&Path::from("tmp")))
                    .try_collect::<Vec<_>>()
                    .await
            })?
            .map_err(|e| unavailable("listing temp objects", e))?;
        let now = SystemTime::now();
        let mut swept = match &self.parts {
            Some(p) => p.sweep_temp()?,
            None => 0,
        };
        for m in metas {
            let age = now
                .duration_since(SystemTime::from(m.last_modified))
                .unwrap_or_default();
            if age >= TEMP_MAX_AGE {
                self.inner.delete(&m.location)?;
                swept += 1;
            }
        }
        Ok(swept)
    }
}
