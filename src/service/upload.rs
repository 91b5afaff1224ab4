//! Ingest: stream each file part to a temp file while hashing, then commit all parts of a request
//! at once (blob renamed into place and fsynced, then metadata written and flushed).

use super::{blocking, names, Service};
use crate::auth::Principal;
use crate::error::{Allowance, Error, Result};
use crate::media;
use crate::meta::{FileRecord, ImageRecord};
use crate::store::{BlobWriter, StagedBlob};
use crate::types::{now_millis, AccountId, FileId, InstanceId};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Network chunks (often a few KiB) are coalesced into batches of this size before they go to
/// the writer: one hand-off and one write per batch instead of per chunk.
const BATCH: usize = 256 * 1024;
/// Chunks at least this large skip the batch (the parser often yields hundreds of KiB).
const DIRECT: usize = 64 * 1024;
/// Chunks in flight between the request and the writer (and between the writer and the hashing
/// thread, which share the same buffers). Deeper queues absorb the scheduling jitter of four
/// busy threads (client, request, writer, hasher) on few cores: 16 uploads 1 GiB about 20%
/// faster than 4 on 2 cores, for about 2 MiB per upload in flight (64 concurrent 32 MiB
/// uploads peaked at ~135 MiB RSS instead of ~87, before the 1 MiB O_DIRECT block per upload).
const CHANNEL_DEPTH: usize = 16;

enum Msg {
    Chunk(Bytes),
    Finish,
}

/// A file part on its way to storage. Dropping it without [`PartWriter::finish`] aborts the
/// part and removes what was written.
pub struct PartWriter {
    name: String,
    original_name: String,
    feed: Feed<BlobSink>,
    /// The first bytes of the part, for probing its type and image size.
    head: Vec<u8>,
    size: u64,
    max: u64,
    /// What the quotas leave this request, when any applies.
    room: Option<super::quota::Room>,
}

/// A store writer that [`Feed`] streams into: a new blob's, or a stored part's (multipart).
pub(crate) trait Sink: Send + 'static {
    /// What finishing yields.
    type Done: Send + 'static;
    /// As [`BlobWriter::write`]: writes every chunk at hand. Blocks.
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()>;
    /// Makes the bytes durable. Blocks.
    fn finish(self) -> Result<Self::Done>;
}

/// A new blob's writer as a [`Sink`] (a named type: futures holding a `Box<dyn ..>` sink lose
/// their `Send` proof in async callers).
pub(crate) struct BlobSink(pub(crate) Box<dyn BlobWriter>);

impl Sink for BlobSink {
    type Done = Box<dyn StagedBlob>;
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        self.0.write(chunks)
    }
    fn finish(self) -> Result<Self::Done> {
        self.0.finish()
    }
}

/// A stored part's writer as a [`Sink`].
pub(crate) struct PartSink(pub(crate) Box<dyn crate::store::PartWriter>);

impl Sink for PartSink {
    type Done = crate::store::PartInfo;
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        self.0.write(chunks)
    }
    fn finish(self) -> Result<Self::Done> {
        self.0.finish()
    }
}

/// Bytes of a request body on their way into a store writer made on the first bytes: batched,
/// handed over through a bounded queue, written by [`drive`] on the blocking pool. Dropping it
/// before [`Feed::finish`] aborts the write (the writer is dropped: nothing is stored).
pub(crate) struct Feed<S: Sink> {
    tx: Option<mpsc::Sender<Msg>>,
    /// The writer's task, started when the first batch is handed over; until then the channel's
    /// receiver and the writer's maker wait here.
    task: Option<tokio::task::JoinHandle<Result<S::Done>>>,
    idle: Option<Idle<S>>,
    /// Bytes received but not yet handed to the writer.
    pending: BytesMut,
    /// A body of at most this many bytes, all still pending when it ends, is written and
    /// finished on the request's own thread: the store's writer keeps that much in memory
    /// without touching storage ([`crate::store::BlobStore::writer_buffers`]). 0: never.
    in_memory: u64,
}

/// The writer's maker and the channel's receiving end, before the writer's task starts.
type Idle<S> = (
    Box<dyn FnOnce() -> Result<S> + Send + 'static>,
    mpsc::Receiver<Msg>,
);

/// A part fully written to the store's staging area, not yet visible (durable once committed).
pub struct StagedPart {
    /// The name as the client sent it (the key of the upload response).
    pub original_name: String,
    name: String,
    blob: Box<dyn StagedBlob>,
    mime: String,
    dims: Option<(u32, u32)>,
}

impl StagedPart {
    /// SHA-256 of the part's bytes.
    pub(crate) fn sha(&self) -> crate::types::Sha256 {
        self.blob.sha()
    }
    /// Size of the part in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.blob.size()
    }
    /// Media type, sniffed from its first bytes (else guessed from its name).
    pub(crate) fn mime(&self) -> &str {
        &self.mime
    }
    /// What the metadata store records of these bytes, typed `mime`.
    pub(crate) fn stored(&self, mime: String) -> crate::meta::StoredBytes {
        crate::meta::StoredBytes {
            sha: self.sha(),
            size: self.size(),
            mime,
            width: self.dims.map(|d| d.0),
            height: self.dims.map(|d| d.1),
            parts: None,
        }
    }
    /// Makes the bytes the blob named by their hash (the caller holds the blob's lock).
    pub(crate) fn commit_blob(self) -> Result<()> {
        self.blob.commit()
    }
}

impl Service {
    /// Starts receiving a file part named `filename` by the client. No thread is taken until
    /// bytes arrive (see [`drive`]).
    pub fn begin_part(&self, filename: &str) -> PartWriter {
        let name = names::sanitize_filename(filename);
        let blobs = self.blobs.clone();
        PartWriter {
            name,
            original_name: filename.to_string(),
            feed: Feed::new(move || blobs.writer().map(BlobSink))
                .in_memory_up_to(self.blobs.writer_buffers()),
            head: Vec::new(),
            size: 0,
            max: self.config.max_file_size,
            room: None,
        }
    }

    /// Makes staged parts visible: each blob goes into the store (once per content), then all
    /// File (and Image) records are written in one transaction and flushed.
    pub async fn commit_upload(
        self: &Arc<Self>,
        principal: &Principal,
        directory: String,
        parts: Vec<StagedPart>,
    ) -> Result<Committed> {
        let svc = self.clone();
        let owner = principal.account.clone();
        let domain = principal.instance.clone();
        blocking(move || {
            let instance = svc.meta.ensure_instance(&domain)?;
            let now = now_millis();
            let shas: Vec<_> = parts.iter().map(|p| p.blob.sha()).collect();
            let incoming = super::quota::Incoming::new_files(parts.iter().map(|p| p.size()));
            if svc.meta.shared() {
                // Other nodes cannot see this node's pins (below): the bytes are stored under
                // the instance's tree lock and the blobs' locks, held until the records are
                // written, so no node's removal (a delete, a take-back, gc) can come between.
                return svc.within_directory(instance.id, &owner, &directory, &shas, |blobs| {
                    let (committed, stored) = commit_parts(parts);
                    let done: Vec<_> = committed.iter().map(|c| c.sha).collect();
                    svc.write_or_take_back(blobs, &done, || {
                        stored?;
                        let room = svc.admit(instance.id, &owner, incoming)?;
                        svc.write_upload_records(
                            instance.id,
                            &owner,
                            &directory,
                            now,
                            committed,
                            &room,
                        )
                    })
                });
            }
            // The bytes go into the store first, under their own locks only: the instance's
            // tree lock and quota permits are the whole instance's, and a blob commit can be
            // long (an S3 copy of a large object). Pinned until the records reference them,
            // so no removal (on this node, the only one) takes them in between.
            let guard = svc.lock_blobs(&shas)?;
            let pins = svc.pin_blobs(&guard, &shas);
            let (committed, stored) = commit_parts(parts);
            drop(guard);
            let done: Vec<_> = committed.iter().map(|c| c.sha).collect();
            let out = stored.and_then(|()| {
                // Every directory of the path exists (created once) and stays put until the
                // records are written; the blobs' locks are held again.
                svc.within_directory(instance.id, &owner, &directory, &shas, |_| {
                    let room = svc.admit(instance.id, &owner, incoming)?;
                    svc.write_upload_records(instance.id, &owner, &directory, now, committed, &room)
                })
            });
            // Referenced now, or taken back below.
            drop(pins);
            if out.is_err() {
                // A refused or failed write leaves no bytes of its own that nothing references.
                // (Those of parts never committed stay as they were: a removal that skipped
                // them while pinned left them to gc.)
                svc.take_back(&done);
            }
            out
        })
        .await
    }

    /// [`Service::commit_upload`] once the blobs are committed and `room` admitted them: the
    /// File (and Image) records, written in one transaction and flushed. Blocks.
    fn write_upload_records(
        &self,
        instance: InstanceId,
        owner: &AccountId,
        directory: &str,
        now: u64,
        parts: Vec<CommittedPart>,
        room: &super::quota::Permit<'_>,
    ) -> Result<Committed> {
        let mut records = Vec::with_capacity(parts.len());
        let mut keys = Vec::with_capacity(parts.len());
        for part in parts {
            let file = FileRecord {
                id: FileId::new(),
                instance,
                created_by: owner.clone(),
                created: now,
                updated: now,
                trashed: None,
                extension: names::extension(&part.name),
                name: part.name,
                directory: directory.to_string(),
                mime: part.mime,
                size: part.size,
                sha256: part.sha,
                width: part.dims.map(|d| d.0),
                height: part.dims.map(|d| d.1),
                is_stared: None,
                is_sharable: None,
            };
            let image = part.dims.map(|(width, height)| ImageRecord {
                file: file.id,
                name: file.name.clone(),
                description: None,
                location: None,
                width,
                height,
            });
            keys.push(part.original_name);
            records.push((file, image));
        }
        super::failpoint("after-blob-commit");
        super::failpoint_error("file-insert")?;
        let _events = self.file_events(
            owner,
            crate::meta::webhooks::WebhookEvent::FileCreated,
            records.iter().map(|(f, _)| f),
        )?;
        self.meta.insert_files(&records)?;
        // What the quotas leave now, for the answer's headers (read here: no second trip to
        // the blocking pool).
        let allowance = self.allowance_after(instance, owner, room)?;
        let files = keys
            .into_iter()
            .zip(records.into_iter().map(|(f, _)| f))
            .collect();
        Ok((files, allowance))
    }
}

/// Commits each part's blob in order, stopping at the first failure: the parts committed, and
/// how the commits went.
fn commit_parts(parts: Vec<StagedPart>) -> (Vec<CommittedPart>, Result<()>) {
    let mut committed = Vec::with_capacity(parts.len());
    for part in parts {
        let StagedPart {
            original_name,
            name,
            blob,
            mime,
            dims,
        } = part;
        let (sha, size) = (blob.sha(), blob.size());
        if let Err(e) = blob.commit() {
            return (committed, Err(e));
        }
        committed.push(CommittedPart {
            original_name,
            name,
            mime,
            dims,
            sha,
            size,
        });
    }
    (committed, Ok(()))
}

/// What an upload made: each File by the name the client sent, and what the quotas leave (no
/// limit: `None`).
type Committed = (Vec<(String, FileRecord)>, Option<Allowance>);

/// A part whose bytes are in the store, its record not yet written.
struct CommittedPart {
    original_name: String,
    name: String,
    mime: String,
    dims: Option<(u32, u32)>,
    sha: crate::types::Sha256,
    size: u64,
}

impl PartWriter {
    /// Bounds the part by what the quotas leave (see [`super::quota::Room`]).
    pub fn within(&mut self, room: super::quota::Room) {
        self.room = Some(room);
    }

    /// Appends a chunk. Fails with FILE_TOO_LARGE as soon as the part crosses the limit (or
    /// a quota's, with its own answer).
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        if let Some(e) = self.room.as_ref().and_then(|r| r.refuse(self.size)) {
            self.feed.abort(); // the writer thread removes the temp file
            return Err(e);
        }
        if self.size > self.max {
            self.feed.abort(); // the writer thread removes the temp file
            return Err(Error::FileTooLarge(format!(
                "{} is larger than the limit of {} bytes",
                self.name, self.max
            )));
        }
        if self.head.len() < media::PROBE_LEN {
            let take = (media::PROBE_LEN - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.feed.write(chunk).await
    }

    /// Ends the part: its bytes are in the store's staging area, its hash and type known.
    pub async fn finish(mut self) -> Result<StagedPart> {
        let blob = self.feed.finish().await?;
        let mime = media::sniff(&self.head, &self.name);
        let dims = if media::is_image(&mime) {
            media::dimensions(&self.head)
        } else {
            None
        };
        Ok(StagedPart {
            original_name: std::mem::take(&mut self.original_name),
            name: std::mem::take(&mut self.name),
            blob,
            mime,
            dims,
        })
    }
}

impl<S: Sink> Feed<S> {
    /// A feed into the writer `open` makes (on the blocking pool, once the first bytes come).
    pub(crate) fn new(open: impl FnOnce() -> Result<S> + Send + 'static) -> Self {
        Self::with_depth(open, CHANNEL_DEPTH)
    }

    /// As [`Feed::new`], with at most `depth` batches queued for the writer (flows that run
    /// many feeds at once for one file, such as parallel parts, queue less per feed).
    pub(crate) fn with_depth(
        open: impl FnOnce() -> Result<S> + Send + 'static,
        depth: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(depth.max(1));
        Feed {
            tx: Some(tx),
            task: None,
            idle: Some((Box::new(open), rx)),
            pending: BytesMut::new(),
            in_memory: 0,
        }
    }

    /// Lets a body of at most `bytes` that ends before any batch was handed over be written
    /// and finished on the request's thread, when the store's writer keeps that much in memory
    /// anyway: a small upload then takes no trip to the blocking pool and starts no task
    /// (profiled: thread hand-offs were about a quarter of a 4 KiB upload's CPU time).
    pub(crate) fn in_memory_up_to(mut self, bytes: u64) -> Self {
        self.in_memory = bytes;
        self
    }

    /// The writer's task, started on first use.
    fn task(&mut self) -> Result<&mut tokio::task::JoinHandle<Result<S::Done>>> {
        if let Some((open, rx)) = self.idle.take() {
            self.task = Some(tokio::spawn(drive(open, rx)));
        }
        self.task
            .as_mut()
            .ok_or_else(|| Error::Internal("the writer's task was lost".into()))
    }

    /// Stops the write: the writer is dropped and what it wrote removed.
    pub(crate) fn abort(&mut self) {
        self.tx = None;
    }

    /// Appends a chunk.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.len() >= DIRECT {
            // Large enough to hand over as it is: no copy into the batch.
            if !self.pending.is_empty() {
                let batch = self.pending.split().freeze();
                self.send(batch).await?;
            }
            return self.send(chunk).await;
        }
        self.pending.extend_from_slice(&chunk);
        if self.pending.len() >= BATCH {
            let batch = self.pending.split().freeze();
            self.send(batch).await?;
        }
        Ok(())
    }

    async fn send(&mut self, batch: Bytes) -> Result<()> {
        if self.tx.is_none() {
            return Err(Error::Internal("write after abort".into()));
        }
        self.task()?;
        let Some(tx) = &self.tx else {
            return Err(Error::Internal("write after abort".into()));
        };
        if tx.send(Msg::Chunk(batch)).await.is_err() {
            // The writer stopped early: its result says why (disk full, I/O error).
            self.tx = None;
            return Err(match self.task()?.await? {
                Err(e) => e,
                Ok(_) => Error::Internal("writer stopped early".into()),
            });
        }
        Ok(())
    }

    /// Ends the write: the writer's result once every byte is written.
    pub(crate) async fn finish(&mut self) -> Result<S::Done> {
        if self.tx.is_some() && self.task.is_none() && self.pending.len() as u64 <= self.in_memory {
            if let Some((open, _)) = self.idle.take() {
                self.tx = None;
                let mut writer = open()?;
                if !self.pending.is_empty() {
                    let body = self.pending.split().freeze();
                    writer.write(&mut std::iter::once(body))?;
                }
                return writer.finish();
            }
        }
        if !self.pending.is_empty() {
            let batch = self.pending.split().freeze();
            self.send(batch).await?;
        }
        let tx = self
            .tx
            .take()
            .ok_or_else(|| Error::Internal("finish after abort".into()))?;
        // If the writer already failed, the send fails and the task's error is reported below.
        let task = self.task()?;
        let _ = tx.send(Msg::Finish).await;
        drop(tx);
        task.await?
    }
}

/// Feeds a part's chunks to a store writer. It waits for bytes on the async executor and takes
/// a blocking-pool thread only while it has bytes to write: each trip writes every chunk already
/// queued and gives the thread back when the queue is empty. A slow client therefore holds no
/// thread (520 slow-drip uploads used to hold 520 pool threads and starve every other storage
/// read), while a fast upload keeps its thread as long as its bytes keep coming.
async fn drive<S: Sink>(
    open: impl FnOnce() -> Result<S> + Send + 'static,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<S::Done> {
    let mut writer: Option<S> = None;
    let mut open = Some(open);
    loop {
        let Some(first) = rx.recv().await else {
            // The sender went away without Finish: the upload was aborted. Dropping the writer
            // removes what it wrote (a blocking call, so not on the executor).
            if let Some(w) = writer.take() {
                let _ = tokio::task::spawn_blocking(move || drop(w)).await;
            }
            return Err(Error::BadRequest("upload aborted".into()));
        };
        let w = writer.take();
        let make = if w.is_none() { open.take() } else { None };
        let (w, back, finish) = blocking(move || {
            // The writer is made on the first trip: creating it may touch storage.
            let mut w = match (w, make) {
                (Some(w), _) => w,
                (None, Some(make)) => make()?,
                (None, None) => return Err(Error::Internal("the writer was lost".into())),
            };
            let mut finish = matches!(first, Msg::Finish);
            if let Msg::Chunk(chunk) = first {
                let mut queued = std::iter::once(chunk).chain(std::iter::from_fn(|| {
                    match rx.try_recv() {
                        Ok(Msg::Chunk(c)) => Some(c),
                        Ok(Msg::Finish) => {
                            finish = true;
                            None
                        }
                        // Nothing queued (or the sender is gone): back to waiting, off the pool.
                        Err(_) => None,
                    }
                }));
                w.write(&mut queued)?;
            }
            if finish {
                return Ok((None, rx, Some(w.finish()?)));
            }
            Ok((Some(w), rx, None))
        })
        .await?;
        if let Some(staged) = finish {
            return Ok(staged);
        }
        writer = w;
        rx = back;
    }
}
