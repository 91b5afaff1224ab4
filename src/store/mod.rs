//! Content-addressed blob storage behind narrow traits, so local disk can later give way to an
//! object store (S3).
//!
//! The seam follows pict-rs's `Store` and tusd's `DataStore`:
//! - [`BlobStore`] (the core every backend implements): hand out a [`BlobWriter`] (write chunks;
//!   finish gives the SHA-256 and size as a [`StagedBlob`]; commit it, or drop it and it is
//!   gone), open a blob for ranged reads ([`BlobHandle`]), remove a blob.
//! - [`BlobMaintenance`] (optional capability): listings for fsck and gc, quarantine, the sweep
//!   of temp files left by a crash.
//! - [`PartStore`] (optional capability, for presigned/multipart/tus sessions): parts of an
//!   upload stored one by one and assembled into a blob.
//!
//! Nothing outside this module sees a filesystem path of a blob. [`contract`] is the test suite
//! every backend must pass.

pub mod contract;
mod hash;
mod local;
pub mod metered;
mod migrate;
mod s3;
mod s3_parts;

pub use hash::BlobHasher;
pub use local::{LocalStore, INLINE_MAX};
pub use metered::Metered;
pub use migrate::{migrate, MigrateReport};
pub use s3::{S3Store, MAX_COPY_SIZE as S3_MAX_FILE_SIZE};

/// The blob store `config` names (`[store] kind`).
pub fn open_configured(config: &crate::config::Config) -> Result<std::sync::Arc<dyn BlobStore>> {
    Ok(match config.store.kind {
        crate::config::StoreKind::Local => std::sync::Arc::new(LocalStore::open_with(
            &config.data_dir,
            config.store.inline_max.unwrap_or(INLINE_MAX),
        )?),
        crate::config::StoreKind::S3 => std::sync::Arc::new(
            S3Store::open(&config.store)?.with_part_staging(&config.data_dir.join("s3-parts"))?,
        ),
    })
}

use crate::error::Result;
use crate::types::Sha256;
use bytes::Bytes;
use std::pin::Pin;

/// A blob's bytes as an async stream of chunks.
pub type ByteStream = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes>> + Send>>;

/// A blob as found on storage.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub sha: Sha256,
    pub len: u64,
    pub modified: std::time::SystemTime,
}

/// A blob being written. Calls block (run them off the async executor). Dropping it before
/// [`BlobWriter::finish`] aborts the write and removes what was written.
pub trait BlobWriter: Send {
    /// Appends every chunk `chunks` yields, in order, hashing them as they go. The iterator
    /// should only yield bytes that are already at hand: a backend may use helper threads for
    /// the duration of the call, so a call must never wait for the network.
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()>;
    /// Ends the write: the bytes are in the store's staging area and their SHA-256 and size are
    /// known. Nothing is visible under the hash until [`StagedBlob::commit`], and nothing may be
    /// acknowledged before it returns: staged bytes the store already holds may not be durable
    /// (the commit drops them, or makes them durable if that blob is gone by then).
    fn finish(self: Box<Self>) -> Result<Box<dyn StagedBlob>>;
}

/// A fully written blob that is not yet visible (durable once committed). Dropping it removes
/// it.
pub trait StagedBlob: Send {
    /// SHA-256 of the bytes written.
    fn sha(&self) -> Sha256;
    /// Number of bytes written.
    fn size(&self) -> u64;
    /// Makes the bytes the blob named by their hash, durably. If that blob exists already the
    /// staged bytes are dropped (same content: stored once; it was made durable before its first
    /// reference). Blocks.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// An open blob. Its length and bytes stay those of the blob as it was opened, even if the blob
/// is removed meanwhile (where the backend allows).
pub trait BlobHandle: Send {
    /// The blob's length in bytes.
    fn len(&self) -> u64;
    /// Whether the blob is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads from byte `pos` into `buf`; returns the count read, 0 at or past the end. Blocks.
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize>;
    /// The bytes `from..from + len`, clamped to the blob (past the end yields nothing), as an
    /// async stream that holds no thread while the consumer is slow.
    fn into_stream(self: Box<Self>, from: u64, len: u64) -> ByteStream;
}

/// What the service needs from blob storage. Calls block: run them off the async executor.
pub trait BlobStore: Send + Sync + 'static {
    /// A writer for a new blob.
    fn writer(&self) -> Result<Box<dyn BlobWriter>>;
    /// Bytes a new [`BlobStore::writer`] keeps in memory before it touches storage: making
    /// one, writing that much and finishing it neither blocks nor does I/O (the staged blob's
    /// `commit` does). 0 when any of it may.
    fn writer_buffers(&self) -> u64 {
        0
    }
    /// Opens a blob for reading; `None` when it does not exist.
    fn open(&self, sha: &Sha256) -> Result<Option<Box<dyn BlobHandle>>>;
    /// Removes a blob; a missing blob is not an error.
    fn remove(&self, sha: &Sha256) -> Result<()>;
    /// The bytes `from..from + len` of a blob (clamped to it), `None` when it does not exist.
    fn read(&self, sha: &Sha256, from: u64, len: u64) -> Result<Option<ByteStream>> {
        Ok(self.open(sha)?.map(|h| h.into_stream(from, len)))
    }
    /// The maintenance operations, when this backend has them.
    fn maintenance(&self) -> Option<&dyn BlobMaintenance> {
        None
    }
    /// Upload sessions in parts, when this backend has them.
    fn parts(&self) -> Option<&dyn PartStore> {
        None
    }
    /// A URL that serves the blob's bytes, with `headers` as the response's, to whoever holds
    /// it until `ttl` passes (a download redirect); `None` when this backend cannot sign one.
    fn presigned_get(
        &self,
        _sha: &Sha256,
        _ttl: std::time::Duration,
        _headers: &ResponseHeaders,
    ) -> Result<Option<String>> {
        Ok(None)
    }
}

/// The response headers a presigned GET makes the bucket send (S3's `response-*` overrides),
/// so a redirected download is typed and named as the node would serve it.
#[derive(Debug, Clone)]
pub struct ResponseHeaders {
    pub content_type: String,
    pub content_disposition: String,
    pub cache_control: String,
}

/// Operations only `depot fsck`/`gc` and start-up need. Blocking.
pub trait BlobMaintenance: Send + Sync {
    /// Every blob: its name, length and last modification.
    fn list(&self) -> Result<Vec<BlobInfo>>;
    /// Moves a damaged blob aside, so it is neither served nor deduplicated against.
    fn quarantine(&self, sha: &Sha256) -> Result<()>;
    /// Removes staged or temporary data left by a previous run. Call before serving.
    fn sweep_temp(&self) -> Result<usize>;
}

/// An MD5 digest: what S3 (and Amplience) answer as a part's ETag. Never used for identity or
/// integrity of stored content (that is the SHA-256), only to match the client's ETags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Md5(pub [u8; 16]);

impl Md5 {
    /// Lower-case hex, the ETag's text without its quotes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Md5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Md5({})", self.to_hex())
    }
}

impl std::str::FromStr for Md5 {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Md5(out))
    }
}

/// One stored part of an upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// The part's number, as the client gave it (S3 and Amplience count from 1).
    pub number: u32,
    pub size: u64,
    /// SHA-256 of the part's bytes (S3's `ChecksumSHA256`).
    pub sha: Sha256,
    /// MD5 of the part's bytes (S3's part ETag), when its writer was asked for it
    /// ([`PartDigests::WithMd5`]).
    pub md5: Option<Md5>,
}

/// The digests a part's writer computes besides the SHA-256 (which every part has: a tus upload
/// sent in one PATCH is staged under its part's hash without hashing it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartDigests {
    /// SHA-256 only: tus, where nothing asks for a part's ETag (MD5 ran at about 700 MB/s,
    /// slower than SHA-256 with SHA-NI, and was a third of a 1 GiB PATCH's CPU time).
    Sha256,
    /// SHA-256 and MD5: S3-style multipart, whose part ETag is the MD5.
    WithMd5,
}

/// A part being written; dropping it before `finish` leaves any earlier part of that number as
/// it was.
pub trait PartWriter: Send {
    /// As [`BlobWriter::write`].
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()>;
    /// Stores the part durably (replacing an earlier one of the same number). Of two parts of
    /// one number finished at once, one wins whole: never a mix, never both.
    fn finish(self: Box<Self>) -> Result<PartInfo>;
}

/// Parts of an upload session (presigned multipart, tus, S3-style multipart uploads), stored
/// one by one, possibly over many requests, and assembled into one blob. A session is named by
/// the caller (an upload-session id from the metadata store); the store keeps no other state
/// about it. Blocking.
pub trait PartStore: Send + Sync {
    /// A writer for part `number` of `session`, computing `digests`.
    fn part_writer(
        &self,
        session: &str,
        number: u32,
        digests: PartDigests,
    ) -> Result<Box<dyn PartWriter>>;
    /// The parts stored for `session`, by number.
    fn list_parts(&self, session: &str) -> Result<Vec<PartInfo>>;
    /// Concatenates the parts `numbers` (in that order) into a staged blob, hashed as a whole;
    /// committing it is the caller's step. The parts stay until [`PartStore::drop_session`].
    fn assemble(&self, session: &str, numbers: &[u32]) -> Result<Box<dyn StagedBlob>>;
    /// Removes every part of `session`; a session without parts is not an error.
    fn drop_session(&self, session: &str) -> Result<()>;
    /// A writer for part `number`, declared (Content-Length) at `place.len` bytes of a file of
    /// `place.total`: a backend may write it straight to its range of the whole, laying parts
    /// of one size end to end, so that assembling them needs no copy. Everything else behaves
    /// as [`PartStore::part_writer`] (which is what backends without that ability use).
    fn placed_part_writer(
        &self,
        session: &str,
        number: u32,
        place: PartPlace,
        digests: PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        let _ = place;
        self.part_writer(session, number, digests)
    }
    /// [`PartStore::placed_part_writer`] when the part's place is known (its length and the
    /// whole's are declared), else [`PartStore::part_writer`].
    fn writer_at(
        &self,
        session: &str,
        number: u32,
        place: Option<PartPlace>,
        digests: PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        match place {
            Some(place) => self.placed_part_writer(session, number, place, digests),
            None => self.part_writer(session, number, digests),
        }
    }
}

/// What a part PUT declares about where its bytes belong. S3-style clients cut a file into
/// parts of one size (the last may be shorter), so part N of size P starts at (N-1) * P; the
/// first part placed fixes P for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlace {
    /// The part's length as declared (its Content-Length); a body that runs past it is refused.
    pub len: u64,
    /// The whole file's declared length.
    pub total: u64,
    /// Smallest size of a part that is not the last (S3's 5 MiB): a shorter part can only be
    /// the last one, so it never fixes the session's part size.
    pub min_len: u64,
}

/// Writes one buffer; a convenience over [`BlobWriter::write`].
pub fn write_bytes(writer: &mut dyn BlobWriter, bytes: Bytes) -> Result<()> {
    writer.write(&mut std::iter::once(bytes))
}
