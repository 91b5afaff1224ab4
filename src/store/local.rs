//! Blobs on the local filesystem: `<data>/blobs/sha256/ab/cd/<hex>`, written via `<data>/tmp/`
//! with O_DIRECT past the first MiB; blobs of at most [`INLINE_MAX`] bytes are kept inline in a
//! sled database of their own, `<data>/blobs/inline/`.
//!
//! Why small blobs live in sled (issue 14): a file blob costs a temp file created, fsynced,
//! renamed and its directory fsynced (two more directory fsyncs when its fan-out directory is
//! new): three or four journal commits and device cache flushes per upload, most of a 4 KiB
//! upload's time. An inline blob is one append to sled's log and one group-committed
//! `fdatasync` of it ([`LogSync`]), shared by every upload committing at the same time.
//!
//! Durability is the same as a file blob's: [`StagedBlob::commit`] returns only once the bytes
//! are in sled's log file and that file is fdatasynced (sled's flush writes them; the
//! fdatasync makes them and the file's size survive power loss, and flushes the device
//! cache). The caller writes the record that references the blob only after that, so a
//! record that survives a crash always finds its bytes, as with files.

use super::{
    BlobHandle, BlobHasher, BlobInfo, BlobMaintenance, BlobStore, BlobWriter, ByteStream, Md5,
    PartDigests, PartInfo, PartStore, PartWriter, StagedBlob,
};
use crate::error::{Error, Result};
use crate::meta::LogSync;
use crate::types::Sha256;
use bytes::Bytes;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read from disk per chunk of a streamed read: large reads keep downloads near disk and
/// socket speed.
const READ_CHUNK: usize = 1 << 20;

/// [`BlobStore`] on a local directory. Temp and blob dirs share one filesystem, so a rename is
/// atomic.
pub struct LocalStore {
    dirs: Arc<Dirs>,
    /// Small blobs; `None` when inline blobs are off (`open_with(.., 0)`).
    inline: Option<Arc<Inline>>,
}

/// Blobs kept inline up to this size by default: a 64 KiB value stays in sled's log segments
/// (larger ones become files of sled's own, with syncs of their own), and a writer buffers at
/// most this much in memory before it falls back to a temp file.
pub const INLINE_MAX: u64 = 64 * 1024;

/// Memory sled may use to cache the inline blobs' pages (its default is 1 GiB).
const INLINE_CACHE: u64 = 16 * 1024 * 1024;

/// The inline blobs: key the SHA-256, value the time stored (milliseconds since the epoch, u64
/// big-endian) followed by the bytes.
struct Inline {
    db: sled::Db,
    sync: LogSync,
    /// Largest blob kept here.
    max: u64,
}

/// Bytes of an inline value before the blob's own.
const INLINE_HEADER: usize = 8;

fn inline_err(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::from_io("inline blob store", io),
        other => Error::Internal(format!("inline blob store: {other}")),
    }
}

impl Inline {
    fn get(&self, sha: &Sha256) -> Result<Option<sled::IVec>> {
        let v = self.db.get(sha.0).map_err(inline_err)?;
        Ok(v.filter(|v| v.len() >= INLINE_HEADER))
    }

    /// Stores `bytes` under `sha` and makes them durable before returning.
    fn put(&self, sha: &Sha256, bytes: &[u8]) -> Result<()> {
        let mut v = Vec::with_capacity(INLINE_HEADER + bytes.len());
        v.extend_from_slice(&crate::types::now_millis().to_be_bytes());
        v.extend_from_slice(bytes);
        self.db.insert(sha.0, v).map_err(inline_err)?;
        self.sync.sync(&self.db)?;
        Ok(())
    }

    /// Removes `sha`; true when it was here. Durable before returning when it was.
    fn remove(&self, sha: &Sha256) -> Result<bool> {
        if self.db.remove(sha.0).map_err(inline_err)?.is_none() {
            return Ok(false);
        }
        self.sync.sync(&self.db)?;
        Ok(true)
    }
}

struct Dirs {
    tmp: PathBuf,
    blobs: PathBuf,
    quarantine: PathBuf,
    /// `<parts>/<session>/<number>.<sha256 hex>.<md5 hex or ->`: parts of upload sessions.
    parts: PathBuf,
    /// Held while a part is moved into place and the part it replaces removed, so two parts
    /// of one number finished at once leave exactly one (the last renamed).
    part_swap: std::sync::Mutex<()>,
    /// Placed parts being written, by (session, number): a second writer of the same number
    /// meanwhile gets a part file of its own, so two bodies never write one range at once.
    placing: std::sync::Mutex<std::collections::HashSet<(String, u32)>>,
}

fn io(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::from_io(context, e)
}

/// A new temp file in `tmp`.
fn create_temp(tmp: &Path) -> std::io::Result<TempBlob> {
    let path = tmp.join(format!("{}.part", ulid::Ulid::new()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(TempBlob::new(path, file))
}

/// fsync a directory so a rename or create inside it survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Dirs {
    /// Where the blob `sha` lives.
    fn blob_path(&self, sha: &Sha256) -> PathBuf {
        let hex = sha.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }
}

impl LocalStore {
    /// Opens the store under `data_dir`, creating its directories; blobs of at most
    /// [`INLINE_MAX`] bytes are kept inline.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, INLINE_MAX)
    }

    /// As [`LocalStore::open`], keeping blobs of at most `inline_max` bytes inline (0: none;
    /// at most [`INLINE_MAX`] * 4). Inline blobs stored earlier stay readable whatever the
    /// setting.
    pub fn open_with(data_dir: &Path, inline_max: u64) -> Result<Self> {
        let tmp = data_dir.join("tmp");
        let blobs = data_dir.join("blobs").join("sha256");
        fs::create_dir_all(&tmp).map_err(io("creating temp dir"))?;
        fs::create_dir_all(&blobs).map_err(io("creating blob dir"))?;
        let quarantine = data_dir.join("quarantine");
        let parts = data_dir.join("parts");
        let inline_dir = data_dir.join("blobs").join("inline");
        let inline = if inline_max > 0 || inline_dir.exists() {
            let db = sled::Config::new()
                .path(&inline_dir)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(INLINE_CACHE)
                .open()
                .map_err(inline_err)?;
            Some(Arc::new(Inline {
                sync: LogSync::open(&inline_dir)?,
                db,
                max: inline_max.min(4 * INLINE_MAX),
            }))
        } else {
            None
        };
        Ok(Self {
            inline,
            dirs: Arc::new(Dirs {
                tmp,
                blobs,
                quarantine,
                parts,
                part_swap: std::sync::Mutex::new(()),
                placing: std::sync::Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    fn create_temp(&self) -> Result<TempBlob> {
        create_temp(&self.dirs.tmp).map_err(io("creating temp file"))
    }
}

/// [`BlobWriter`] of the local store: the bytes are buffered in memory while they fit an inline
/// blob, then go to a temp file; hashed while written.
struct LocalWriter {
    dirs: Arc<Dirs>,
    inline: Option<Arc<Inline>>,
    /// The bytes so far, while they fit inline (and no temp file exists).
    buf: Vec<u8>,
    temp: Option<TempBlob>,
    hasher: BlobHasher,
}

impl LocalWriter {
    /// The temp file, made (with what was buffered so far) on first need.
    fn spill(&mut self) -> std::io::Result<&mut TempBlob> {
        if self.temp.is_none() {
            let mut temp = create_temp(&self.dirs.tmp)?;
            temp.write_all(&self.buf)?;
            self.buf = Vec::new();
            self.temp = Some(temp);
        }
        self.temp
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp file missing"))
    }
}

impl BlobWriter for LocalWriter {
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        let max = self.inline.as_ref().map_or(0, |i| i.max);
        let mut hasher = std::mem::take(&mut self.hasher);
        let res = hasher.burst(chunks, |chunk| {
            let fits = self.temp.is_none() && (self.buf.len() + chunk.len()) as u64 <= max;
            if fits {
                self.buf.extend_from_slice(chunk);
                Ok(())
            } else {
                self.spill()?.write_all(chunk)
            }
        });
        self.hasher = hasher;
        res.map_err(io("writing blob"))
    }

    fn finish(mut self: Box<Self>) -> Result<Box<dyn StagedBlob>> {
        // Inline blobs off: even an empty blob is a file, as before.
        if self.inline.as_ref().is_none_or(|i| i.max == 0) {
            self.spill().map_err(io("writing blob"))?;
        }
        let LocalWriter {
            dirs,
            inline,
            buf,
            temp,
            hasher,
        } = *self;
        let (size, sha) = (hasher.size(), hasher.finish());
        let body = match temp {
            // Bytes the store holds already are not synced: the commit keeps the stored blob
            // and drops these (a duplicate 1 MiB upload spent about a third of its time in
            // this fsync). Should that blob be gone by the commit, it syncs them first.
            Some(mut temp) => {
                let synced = !stored(&dirs, inline.as_deref(), &sha)?;
                if synced {
                    temp.sync().map_err(io("writing blob"))?;
                }
                Body::File { temp, synced }
            }
            None => Body::Inline(buf),
        };
        Ok(Box::new(LocalStaged {
            dirs,
            inline,
            size,
            sha,
            body,
        }))
    }
}

/// Whether the store holds a blob of `sha`, as a file or inline.
fn stored(dirs: &Dirs, inline: Option<&Inline>, sha: &Sha256) -> Result<bool> {
    if dirs.blob_path(sha).exists() {
        return Ok(true);
    }
    match inline {
        Some(i) => Ok(i.get(sha)?.is_some()),
        None => Ok(false),
    }
}

/// Where staged bytes wait.
enum Body {
    /// A written temp file; fsynced unless the store held the same bytes when it was finished.
    File { temp: TempBlob, synced: bool },
    /// Bytes in memory, small enough for the inline store.
    Inline(Vec<u8>),
}

/// Written bytes not yet visible; a temp file is removed on drop unless committed.
struct LocalStaged {
    dirs: Arc<Dirs>,
    inline: Option<Arc<Inline>>,
    body: Body,
    sha: Sha256,
    size: u64,
}

impl StagedBlob for LocalStaged {
    fn sha(&self) -> Sha256 {
        self.sha
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let LocalStaged {
            dirs,
            inline,
            body,
            sha,
            ..
        } = *self;
        let dest = dirs.blob_path(&sha);
        // Same content stored once, wherever it is: the staged bytes are dropped.
        if stored(&dirs, inline.as_deref(), &sha)? {
            return Ok(());
        }
        let mut temp = match body {
            Body::Inline(bytes) => {
                let Some(i) = &inline else {
                    return Err(Error::Internal(
                        "inline bytes without an inline store".into(),
                    ));
                };
                return i.put(&sha, &bytes);
            }
            Body::File { mut temp, synced } => {
                if !synced {
                    temp.sync().map_err(io("writing blob"))?;
                }
                temp
            }
        };
        let (Some(dir), Some(fan)) = (dest.parent(), dest.parent().and_then(Path::parent)) else {
            return Err(Error::Internal("blob path without parent dirs".into()));
        };
        // Fan-out dirs made here must themselves become durable entries of their parents.
        let (mut new_leaf, mut new_fan) = (false, false);
        if !dir.exists() {
            new_fan = !fan.exists();
            fs::create_dir_all(dir).map_err(io("creating blob dir"))?;
            new_leaf = true;
        }
        temp.file.take();
        // Two writers of the same bytes may race here: rename replaces atomically, and either
        // file holds the same content.
        fs::rename(&temp.path, &dest).map_err(io("moving blob into place"))?;
        // Committed: nothing for Drop to remove.
        temp.path = PathBuf::new();
        // Every directory change is made first and synced after, innermost first, and only the
        // directories that changed: the first fsync commits the journal that holds all of them,
        // so on a journalling filesystem the others find nothing left to write (profiled: a new
        // fan-out dir cost three separate journal commits before the rename's own). Nothing is
        // acknowledged until all of them returned.
        sync_dir(dir).map_err(io("syncing blob dir"))?;
        if new_leaf {
            sync_dir(fan).map_err(io("syncing dir"))?;
        }
        if new_fan {
            sync_dir(&dirs.blobs).map_err(io("syncing dir"))?;
        }
        Ok(())
    }
}

/// An inline blob's bytes (sled shares them; nothing is copied to open one).
struct InlineHandle(sled::IVec);

impl InlineHandle {
    fn bytes(&self) -> &[u8] {
        &self.0[INLINE_HEADER..]
    }
}

impl BlobHandle for InlineHandle {
    fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let b = self.bytes();
        let from = usize::try_from(pos).unwrap_or(usize::MAX).min(b.len());
        let n = (b.len() - from).min(buf.len());
        buf[..n].copy_from_slice(&b[from..from + n]);
        Ok(n)
    }

    fn into_stream(self: Box<Self>, from: u64, len: u64) -> ByteStream {
        let b = self.bytes();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(b.len());
        let end = usize::try_from(from.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(b.len());
        let chunk = Bytes::copy_from_slice(&b[start..end.max(start)]);
        let items: Vec<Result<Bytes>> = if chunk.is_empty() {
            vec![]
        } else {
            vec![Ok(chunk)]
        };
        Box::pin(futures_util::stream::iter(items))
    }
}

/// An open blob file: reads see the inode that was opened, even if the blob is removed after.
struct LocalHandle {
    file: Arc<fs::File>,
    len: u64,
}

impl BlobHandle for LocalHandle {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        read_at(&self.file, self.len, pos, buf).map_err(io("reading blob"))
    }

    fn into_stream(self: Box<Self>, from: u64, len: u64) -> ByteStream {
        let end = from.saturating_add(len).min(self.len);
        let state = (self.file, from.min(end), end);
        Box::pin(futures_util::stream::unfold(
            state,
            |(file, pos, end)| async move {
                if pos >= end {
                    return None;
                }
                let want = ((end - pos) as usize).min(READ_CHUNK);
                // One blocking read per chunk: no thread is held while the client is slow.
                let f = file.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    let n = read_full(&f, pos, &mut buf)?;
                    if n < want {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "blob shorter than when it was opened",
                        ));
                    }
                    Ok(buf)
                })
                .await;
                match res {
                    Ok(Ok(buf)) => {
                        let n = buf.len() as u64;
                        Some((Ok(Bytes::from(buf)), (file, pos + n, end)))
                    }
                    Ok(Err(e)) => Some((Err(Error::from_io("reading blob", e)), (file, end, end))),
                    Err(e) => Some((Err(Error::from(e)), (file, end, end))),
                }
            },
        ))
    }
}

/// Reads up to `buf.len()` bytes at `pos`, stopping at `len`.
fn read_at(file: &fs::File, len: u64, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    if pos >= len {
        return Ok(0);
    }
    let want = ((len - pos) as usize).min(buf.len());
    read_full(file, pos, &mut buf[..want])
}

/// Fills `buf` from `pos` unless the file ends first; returns the count read.
fn read_full(file: &fs::File, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl BlobStore for LocalStore {
    fn writer_buffers(&self) -> u64 {
        // A blob that fits inline stays in the writer's buffer until it is committed.
        self.inline.as_ref().map_or(0, |i| i.max)
    }

    fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        // No file yet: small blobs never get one (see `LocalWriter`).
        Ok(Box::new(LocalWriter {
            dirs: self.dirs.clone(),
            inline: self.inline.clone(),
            buf: Vec::new(),
            temp: None,
            hasher: BlobHasher::new(),
        }))
    }

    fn open(&self, sha: &Sha256) -> Result<Option<Box<dyn BlobHandle>>> {
        if let Some(i) = &self.inline {
            if let Some(v) = i.get(sha)? {
                return Ok(Some(Box::new(InlineHandle(v))));
            }
        }
        match fs::File::open(self.dirs.blob_path(sha)) {
            Ok(f) => {
                let len = f.metadata().map_err(io("reading blob"))?.len();
                Ok(Some(Box::new(LocalHandle {
                    file: Arc::new(f),
                    len,
                })))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_io("opening blob", e)),
        }
    }

    fn remove(&self, sha: &Sha256) -> Result<()> {
        if let Some(i) = &self.inline {
            if i.remove(sha)? {
                return Ok(());
            }
        }
        let path = self.dirs.blob_path(sha);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = sync_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_io("removing blob", e)),
        }
    }

    fn maintenance(&self) -> Option<&dyn BlobMaintenance> {
        Some(self)
    }

    fn parts(&self) -> Option<&dyn PartStore> {
        Some(self)
    }
}

impl LocalStore {
    /// The directory of a session's parts. Session names become path components, so only
    /// plain names are accepted (no separators, no dots).
    pub(super) fn session_dir(&self, session: &str) -> Result<PathBuf> {
        let plain = !session.is_empty()
            && session.len() <= 128
            && session
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(Error::BadRequest(format!(
                "invalid upload session name {session:?}"
            )));
        }
        Ok(self.dirs.parts.join(session))
    }

    /// Stored parts of a session that are files of their own, as (info, file path), by number
    /// (the S3 backend's staging: it never places parts).
    pub(super) fn part_files(&self, session: &str) -> Result<Vec<(PartInfo, PathBuf)>> {
        Ok(self
            .part_sources(session)?
            .into_iter()
            .filter(|(_, b)| !b.placed)
            .map(|(p, b)| (p, b.data))
            .collect())
    }

    /// Every stored part of a session with where its bytes are, by number.
    ///
    /// A part file is named `<number>.<sha256 hex>.<md5 hex or ->` and holds the bytes; a
    /// placed part's record is an empty file named `<number>.<sha256>.<md5>.@<offset>+<len>`
    /// whose bytes are that range of the session's staging file ([`STAGING`]).
    fn part_sources(&self, session: &str) -> Result<Vec<(PartInfo, PartBytes)>> {
        let dir = self.session_dir(session)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::from_io("listing parts", e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("listing parts"))?;
            let name = entry.file_name();
            let parsed = name.to_str().and_then(|n| {
                let mut fields = n.split('.');
                let number = fields.next()?.parse::<u32>().ok()?;
                let sha = fields.next()?.parse::<Sha256>().ok()?;
                let md5 = match fields.next()? {
                    NO_MD5 => None,
                    hex => Some(hex.parse::<Md5>().ok()?),
                };
                let place = match fields.next() {
                    None => None,
                    Some(f) => {
                        let (offset, len) = f.strip_prefix('@')?.split_once('+')?;
                        Some((offset.parse::<u64>().ok()?, len.parse::<u64>().ok()?))
                    }
                };
                fields.next().is_none().then_some((number, sha, md5, place))
            });
            // Anything else (the staging file; a crash's leftovers are in tmp/) is not a part.
            let Some((number, sha, md5, place)) = parsed else {
                continue;
            };
            let (size, bytes) = match place {
                Some((offset, len)) => (
                    len,
                    PartBytes {
                        record: entry.path(),
                        data: dir.join(STAGING),
                        offset,
                        placed: true,
                    },
                ),
                None => (
                    entry.metadata().map_err(io("listing parts"))?.len(),
                    PartBytes {
                        record: entry.path(),
                        data: entry.path(),
                        offset: 0,
                        placed: false,
                    },
                ),
            };
            out.push((
                PartInfo {
                    number,
                    size,
                    sha,
                    md5,
                },
                bytes,
            ));
        }
        out.sort_by_key(|(p, _)| p.number);
        Ok(out)
    }

    /// Puts a finished part's name in place of any earlier part of its number (which is
    /// removed only once the new one is there), durably.
    fn swap_part(
        &self,
        session: &str,
        number: u32,
        put: impl FnOnce() -> Result<PathBuf>,
    ) -> Result<()> {
        let _swap = self
            .dirs
            .part_swap
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let old = self.part_sources(session)?;
        let dest = put()?;
        for (p, b) in old {
            if p.number == number && b.record != dest {
                let _ = fs::remove_file(b.record);
            }
        }
        let dir = self.session_dir(session)?;
        sync_dir(&dir).map_err(io("syncing session dir"))
    }

    /// The session's directory, created (durably) when it is new.
    fn ensure_session_dir(&self, session: &str) -> Result<PathBuf> {
        let dir = self.session_dir(session)?;
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io("creating session dir"))?;
            sync_dir(&self.dirs.parts).map_err(io("syncing dir"))?;
        }
        Ok(dir)
    }

    /// The parts `numbers` as one staged blob without copying, when they are all placed parts
    /// laid end to end over the whole staging file: the file is hashed (one read, no write)
    /// and linked into the temp dir. `None` when they are not (the caller concatenates).
    fn assemble_placed(
        &self,
        session: &str,
        sources: &[(PartInfo, PartBytes)],
        numbers: &[u32],
    ) -> Result<Option<Box<dyn StagedBlob>>> {
        let mut end = 0u64;
        for n in numbers {
            match sources.iter().find(|(p, _)| p.number == *n) {
                Some((p, b)) if b.placed && b.offset == end => end += p.size,
                _ => return Ok(None),
            }
        }
        let path = self.session_dir(session)?.join(STAGING);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::from_io("reading staging file", e)),
        };
        if numbers.is_empty() || len != end {
            return Ok(None);
        }
        // One part over the whole file (a tus upload in one PATCH): its SHA-256 is the file's,
        // hashed as it arrived.
        let whole = match numbers {
            [n] => sources
                .iter()
                .find(|(p, _)| p.number == *n)
                .map(|(p, _)| p.sha),
            _ => None,
        };
        let tmp = self.dirs.tmp.join(format!("{}.part", ulid::Ulid::new()));
        if fs::hard_link(&path, &tmp).is_err() {
            return Ok(None);
        }
        let file = match fs::File::open(&tmp) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::from_io("staging parts", e));
            }
        };
        // From here the link is the TempBlob's: removed on any failure below.
        let temp = TempBlob::new(tmp, file);
        let Some(f) = temp.file.as_ref() else {
            return Err(Error::Internal("staged parts without their file".into()));
        };
        let sha = match whole {
            Some(sha) => sha,
            None => hash_file(&temp.path, f, len).map_err(io("hashing parts"))?,
        };
        Ok(Some(Box::new(LocalStaged {
            dirs: self.dirs.clone(),
            inline: self.inline.clone(),
            body: Body::File { temp, synced: true },
            size: len,
            sha,
        })))
    }
}

impl LocalStore {
    /// Moves parts that were sent again (files of their own, see `placed_part_writer`) into
    /// their ranges of the staging file when the listed parts are otherwise placed end to end
    /// and each re-sent one has the size its place needs, so the assembly copies only those
    /// parts instead of the whole. True when something moved. Runs only inside a complete
    /// (no part of the session is being written): the range it overwrites belongs to no
    /// record (the re-sent part's record replaced the placed one), and the part file goes only
    /// once the placed record is durable, so a crash at any point loses nothing.
    fn place_resent(
        &self,
        session: &str,
        sources: &[(PartInfo, PartBytes)],
        numbers: &[u32],
    ) -> Result<bool> {
        let dir = self.session_dir(session)?;
        let Some(size) = read_part_size(&dir)? else {
            return Ok(false);
        };
        let path = dir.join(STAGING);
        let total = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::from_io("reading staging file", e)),
        };
        let mut end = 0u64;
        let mut moves = Vec::new();
        for n in numbers {
            let Some((p, b)) = sources.iter().find(|(p, _)| p.number == *n) else {
                return Ok(false);
            };
            let place = super::PartPlace {
                len: p.size,
                total,
                min_len: 0,
            };
            match (b.placed, part_offset(Some(size), *n, place)) {
                (true, _) if b.offset == end => {}
                (false, Some((offset, _))) if offset == end => moves.push((p, b)),
                _ => return Ok(false),
            }
            end += p.size;
        }
        if end != total || moves.is_empty() {
            return Ok(false);
        }
        let staging = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("opening staging file"))?;
        for (p, b) in &moves {
            let offset = u64::from(p.number - 1) * size;
            let mut pos = offset;
            feed_ranges(&[(b.data.clone(), 0, p.size)], &mut |chunks| {
                use std::os::unix::fs::FileExt;
                for c in chunks {
                    staging.write_all_at(&c, pos).map_err(io("placing part"))?;
                    pos += c.len() as u64;
                }
                Ok(())
            })?;
        }
        staging.sync_all().map_err(io("placing part"))?;
        for (p, _) in moves {
            let md5 = p.md5.map_or_else(|| NO_MD5.to_string(), |m| m.to_hex());
            let offset = u64::from(p.number - 1) * size;
            let dest = dir.join(format!(
                "{}.{}.{md5}.@{offset}+{}",
                p.number,
                p.sha.to_hex(),
                p.size
            ));
            self.swap_part(session, p.number, || {
                fs::File::create(&dest).map_err(io("recording part"))?;
                Ok(dest.clone())
            })?;
        }
        Ok(true)
    }
}

/// The session's staging file: placed parts' bytes at their offsets in the whole.
const STAGING: &str = "staging";
/// The session's part size for placing parts, once the first placed part fixed it (decimal).
const PART_SIZE: &str = "part-size";

/// Where part `number` goes and the session's part size, when it can be placed: with the part
/// size `fixed`, part N at (N-1) * size when it has that size or ends the file; without one,
/// the part fixes it (its own length, or for a short last part the size that puts it at the
/// file's end). `None`: it cannot be placed (it is stored as a part of its own).
fn part_offset(fixed: Option<u64>, number: u32, place: super::PartPlace) -> Option<(u64, u64)> {
    let (len, total) = (place.len, place.total);
    let k = u64::from(number.checked_sub(1)?);
    if len == 0 || len > total {
        return None;
    }
    match fixed {
        Some(size) => {
            let offset = k.checked_mul(size)?;
            let end = offset.checked_add(len)?;
            let fits = (len == size && end <= total) || (end == total && len <= size);
            fits.then_some((offset, size))
        }
        None => {
            let end = k.checked_mul(len)?.checked_add(len)?;
            if len >= place.min_len && end <= total {
                return Some((k * len, len));
            }
            // The last part, shorter than the others: they fill what lies before it.
            let before = total - len;
            let size = before.checked_div(k)?;
            (k > 0 && before % k == 0 && size >= len && size >= place.min_len)
                .then_some((before, size))
        }
    }
}

/// Read-ahead buffers of [`hash_file`] and their size: a few MiB in flight keep the disk and
/// the hash busy at once without adding to the flat RSS of an assembly.
const HASH_BUFS: usize = 4;
const HASH_BUF: usize = 1024 * 1024;

/// SHA-256 of the first `len` bytes of `file` (at `path`): a scoped thread reads ahead into a
/// few reused buffers while this one hashes. The placed parts were written past the page cache,
/// so the reads go to the disk, and they go with O_DIRECT too where the filesystem allows it:
/// on the bench machine a cold 1 GiB file reads at 1.4-1.6 GB/s that way and at about
/// 600 MB/s through the page cache, which then held the complete back more than the hash did.
fn hash_file(path: &Path, file: &fs::File, len: u64) -> std::io::Result<Sha256> {
    use sha2::Digest;
    use std::sync::mpsc::sync_channel;
    let direct = open_direct(path);
    if direct.is_none() {
        advise_sequential(file);
    }
    let (full_tx, full_rx) = sync_channel::<(AlignedBuf, usize)>(HASH_BUFS);
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(HASH_BUFS);
    for _ in 0..HASH_BUFS {
        free_tx
            .send(AlignedBuf::new(HASH_BUF))
            .map_err(|_| std::io::Error::other("hash buffers"))?;
    }
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> std::io::Result<()> {
            let mut direct = direct;
            let mut pos = 0u64;
            while pos < len {
                let Ok(mut buf) = free_rx.recv() else {
                    return Ok(());
                };
                let want = usize::try_from(len - pos)
                    .unwrap_or(usize::MAX)
                    .min(HASH_BUF);
                let window = buf.window();
                // O_DIRECT reads whole aligned blocks (the last one ends short at the end of
                // the file); a refusal of any kind falls back to the page cache for the rest.
                let n = match direct
                    .as_ref()
                    .map(|d| read_full(d, pos, &mut window[..want.next_multiple_of(DIRECT_ALIGN)]))
                {
                    Some(Ok(n)) if n >= want => want,
                    Some(_) => {
                        direct = None;
                        advise_sequential(file);
                        read_full(file, pos, &mut window[..want])?
                    }
                    None => read_full(file, pos, &mut window[..want])?,
                };
                if n < want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "staging file shorter than its parts",
                    ));
                }
                pos += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let mut h = sha2::Sha256::new();
        for (mut buf, n) in full_rx.iter() {
            h.update(&buf.window()[..n]);
            // The reader may have ended already; then the buffer is simply dropped.
            let _ = free_tx.send(buf);
        }
        match reader.join() {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::other("reading thread panicked")),
        }
        Ok(Sha256(h.finalize().into()))
    })
}

/// A buffer whose window of `len` bytes starts at an address O_DIRECT accepts.
struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let bytes = vec![0u8; len + DIRECT_ALIGN];
        let start = bytes.as_ptr().align_offset(DIRECT_ALIGN);
        Self { bytes, start, len }
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// `path` opened for reading with O_DIRECT; `None` where that is refused (tmpfs) or unknown.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<fs::File> {
    None
}

/// Tells the kernel a file is read front to back (a larger read-ahead); a hint only.
#[cfg(target_os = "linux")]
fn advise_sequential(file: &fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor we own; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_sequential(_file: &fs::File) {}

/// The part size fixed for a session's placed parts, if any.
fn read_part_size(dir: &Path) -> Result<Option<u64>> {
    match fs::read_to_string(dir.join(PART_SIZE)) {
        Ok(t) => Ok(t.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from_io("reading part size", e)),
    }
}

/// Fixes a session's part size, durably (written aside, fsynced, renamed into place).
fn write_part_size(dir: &Path, size: u64) -> Result<()> {
    let tmp = dir.join(format!("{PART_SIZE}.new"));
    let mut f = fs::File::create(&tmp).map_err(io("writing part size"))?;
    std::io::Write::write_all(&mut f, size.to_string().as_bytes())
        .map_err(io("writing part size"))?;
    f.sync_all().map_err(io("writing part size"))?;
    fs::rename(&tmp, dir.join(PART_SIZE)).map_err(io("writing part size"))?;
    sync_dir(dir).map_err(io("syncing session dir"))
}

/// Where a stored part's bytes are.
pub(super) struct PartBytes {
    /// The file naming the part: removed when the part is replaced.
    record: PathBuf,
    /// The file holding the bytes from `offset` on: the part file, or the staging file.
    data: PathBuf,
    offset: u64,
    /// Whether this is a placed part (its bytes are a range of the staging file).
    placed: bool,
}

/// [`PartWriter`] of the local store: a temp file renamed into the session's directory.
struct LocalPartWriter {
    store: LocalStore,
    session: String,
    number: u32,
    temp: TempBlob,
    hasher: BlobHasher,
    /// S3's part ETag, hashed on the writing thread (SHA-256 has its own helper thread), when
    /// the caller wants it.
    md5: Option<md5::Md5>,
}

/// Ends a part's bytes: fsynced, then its size, SHA-256, MD5 and the MD5's field in the part's
/// name.
fn seal_part(
    temp: &mut TempBlob,
    hasher: &mut BlobHasher,
    md5: &mut Option<md5::Md5>,
) -> Result<(u64, Sha256, Option<Md5>, String)> {
    temp.sync().map_err(io("writing part"))?;
    let size = hasher.size();
    let sha = std::mem::take(hasher).finish();
    let md5 = md5.take().map(|m| Md5(md5::Digest::finalize(m).into()));
    let field = md5.map_or_else(|| NO_MD5.to_string(), |m| m.to_hex());
    Ok((size, sha, md5, field))
}

/// The MD5 field of a part file's name when the part has none.
const NO_MD5: &str = "-";

impl PartWriter for LocalPartWriter {
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        use md5::Digest;
        let (temp, md5) = (&mut self.temp, &mut self.md5);
        self.hasher
            .burst(chunks, |chunk| {
                if let Some(m) = md5.as_mut() {
                    m.update(chunk);
                }
                temp.write_all(chunk)
            })
            .map_err(io("writing part"))
    }

    fn finish(mut self: Box<Self>) -> Result<PartInfo> {
        let (size, sha, md5, md5_field) =
            seal_part(&mut self.temp, &mut self.hasher, &mut self.md5)?;
        let dir = self.store.ensure_session_dir(&self.session)?;
        let dest = dir.join(format!("{}.{}.{md5_field}", self.number, sha.to_hex()));
        self.temp.file.take();
        let temp = &mut self.temp;
        self.store.swap_part(&self.session, self.number, || {
            fs::rename(&temp.path, &dest).map_err(io("storing part"))?;
            temp.path = PathBuf::new();
            Ok(dest.clone())
        })?;
        Ok(PartInfo {
            number: self.number,
            size,
            sha,
            md5,
        })
    }
}

/// [`PartWriter`] of a placed part: its bytes go straight to their range of the session's
/// staging file (O_DIRECT past the first MiB, as any temp file), so the complete request finds
/// the whole file laid out already; finishing writes the part's record, an empty file whose
/// name holds its digests and range.
struct PlacedPartWriter {
    store: LocalStore,
    session: String,
    number: u32,
    place: super::PartPlace,
    /// Where the part starts in the staging file.
    offset: u64,
    /// The staging file opened at the part's offset; its path is empty, so nothing is removed
    /// when a write fails (the range is only garbage no record points at).
    temp: TempBlob,
    hasher: BlobHasher,
    md5: Option<md5::Md5>,
    _claim: PlacingClaim,
}

/// A (session, number) being placed; released on drop.
struct PlacingClaim {
    dirs: Arc<Dirs>,
    key: (String, u32),
}

impl Drop for PlacingClaim {
    fn drop(&mut self) {
        self.dirs
            .placing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl PartWriter for PlacedPartWriter {
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        use md5::Digest;
        let (temp, md5, room) = (&mut self.temp, &mut self.md5, self.place.len);
        let mut over = false;
        let res = self.hasher.burst(chunks, |chunk| {
            // Past its declared length the part would overwrite the next part's range.
            if temp.written + (temp.filled + chunk.len()) as u64 > room {
                over = true;
                return Err(std::io::Error::other("part longer than declared"));
            }
            if let Some(m) = md5.as_mut() {
                m.update(chunk);
            }
            temp.write_all(chunk)
        });
        if over {
            return Err(Error::BadRequest(format!(
                "part {} is longer than its declared {} bytes",
                self.number, room
            )));
        }
        res.map_err(io("writing part"))
    }

    fn finish(mut self: Box<Self>) -> Result<PartInfo> {
        let (size, sha, md5, md5_field) =
            seal_part(&mut self.temp, &mut self.hasher, &mut self.md5)?;
        let dir = self.store.ensure_session_dir(&self.session)?;
        let dest = dir.join(format!(
            "{}.{}.{md5_field}.@{}+{size}",
            self.number,
            sha.to_hex(),
            self.offset
        ));
        self.store.swap_part(&self.session, self.number, || {
            fs::File::create(&dest).map_err(io("recording part"))?;
            Ok(dest.clone())
        })?;
        Ok(PartInfo {
            number: self.number,
            size,
            sha,
            md5,
        })
    }
}

impl PartStore for LocalStore {
    fn part_writer(
        &self,
        session: &str,
        number: u32,
        digests: PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        self.session_dir(session)?;
        Ok(Box::new(LocalPartWriter {
            store: LocalStore {
                dirs: self.dirs.clone(),
                inline: self.inline.clone(),
            },
            session: session.to_string(),
            number,
            temp: self.create_temp()?,
            hasher: BlobHasher::new(),
            md5: (digests == PartDigests::WithMd5).then(Default::default),
        }))
    }

    fn list_parts(&self, session: &str) -> Result<Vec<PartInfo>> {
        Ok(self
            .part_sources(session)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    fn assemble(&self, session: &str, numbers: &[u32]) -> Result<Box<dyn StagedBlob>> {
        let mut parts = self.part_sources(session)?;
        if self.place_resent(session, &parts, numbers)? {
            parts = self.part_sources(session)?;
        }
        if let Some(staged) = self.assemble_placed(session, &parts, numbers)? {
            return Ok(staged);
        }
        // One part (a tus upload sent in one PATCH): its bytes and SHA-256 are the blob's
        // already, and a stored part never changes, so a hard link stages it without copying
        // or hashing it again. Where links fail (another filesystem), the copy below runs.
        if let [n] = numbers {
            if let Some((info, b)) = parts.iter().find(|(p, b)| p.number == *n && !b.placed) {
                let tmp = self.dirs.tmp.join(format!("{}.part", ulid::Ulid::new()));
                if fs::hard_link(&b.data, &tmp).is_ok() {
                    let file = fs::File::open(&tmp).map_err(io("staging part"))?;
                    return Ok(Box::new(LocalStaged {
                        dirs: self.dirs.clone(),
                        inline: self.inline.clone(),
                        body: Body::File {
                            temp: TempBlob::new(tmp, file),
                            synced: true,
                        },
                        sha: info.sha,
                        size: info.size,
                    }));
                }
            }
        }
        // Anything else (a re-sent part, parts not laid out end to end): concatenated.
        let ranges = numbers
            .iter()
            .map(|n| {
                parts
                    .iter()
                    .find(|(p, _)| p.number == *n)
                    .map(|(p, b)| (b.data.clone(), b.offset, p.size))
                    .ok_or_else(|| Error::BadRequest(format!("part {n} was not uploaded")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut writer = self.writer()?;
        feed_ranges(&ranges, &mut |chunks| writer.write(chunks))?;
        writer.finish()
    }

    fn placed_part_writer(
        &self,
        session: &str,
        number: u32,
        place: super::PartPlace,
        digests: PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        let key = (session.to_string(), number);
        let dir = self.session_dir(session)?;
        let offset = {
            let mut placing = self.dirs.placing.lock().unwrap_or_else(|p| p.into_inner());
            // A re-send (the number is stored, or being placed) must not write over bytes a
            // record vouches for: it becomes a part file of its own, and the complete falls
            // back to concatenating.
            let resend = placing.contains(&key)
                || self
                    .part_sources(session)?
                    .iter()
                    .any(|(p, _)| p.number == number);
            let fixed = read_part_size(&dir)?;
            let at = if resend {
                None
            } else {
                part_offset(fixed, number, place)
            };
            let Some((offset, size)) = at else {
                drop(placing);
                return self.part_writer(session, number, digests);
            };
            self.ensure_session_dir(session)?;
            if fixed.is_none() {
                write_part_size(&dir, size)?;
            }
            placing.insert(key.clone());
            offset
        };
        let claim = PlacingClaim {
            dirs: self.dirs.clone(),
            key,
        };
        let path = dir.join(STAGING);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening staging file"))?;
        let len = file.metadata().map_err(io("opening staging file"))?.len();
        if len < place.total {
            // Sparse: the size is the whole file's, the blocks come with the parts.
            file.set_len(place.total)
                .map_err(io("sizing staging file"))?;
            sync_dir(&dir).map_err(io("syncing session dir"))?;
        }
        let mut temp = TempBlob::new(PathBuf::new(), file);
        // O_DIRECT past the first MiB as any temp file: through the page cache (so that the
        // complete hashed from memory) the 8 parallel parts of the 1 GiB bench took 3.5-4.1 s
        // instead of 1.9-2.5 s, more than the complete gained (0.8-1.0 s instead of 1.0-1.8 s).
        temp.base = offset;
        Ok(Box::new(PlacedPartWriter {
            store: LocalStore {
                dirs: self.dirs.clone(),
                inline: self.inline.clone(),
            },
            session: session.to_string(),
            number,
            place,
            offset,
            temp,
            hasher: BlobHasher::new(),
            md5: (digests == PartDigests::WithMd5).then(Default::default),
            _claim: claim,
        }))
    }

    fn drop_session(&self, session: &str) -> Result<()> {
        match fs::remove_dir_all(self.session_dir(session)?) {
            Ok(()) => sync_dir(&self.dirs.parts)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(io("syncing parts dir")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_io("dropping upload session", e)),
        }
    }
}

/// The files of the parts `numbers`, in that order; a number not stored is 400.
pub(super) fn chosen_files(parts: &[(PartInfo, PathBuf)], numbers: &[u32]) -> Result<Vec<PathBuf>> {
    numbers
        .iter()
        .map(|n| {
            parts
                .iter()
                .find(|(p, _)| p.number == *n)
                .map(|(_, path)| path.clone())
                .ok_or_else(|| Error::BadRequest(format!("part {n} was not uploaded")))
        })
        .collect()
}

/// Reads `files` one after the other in [`READ_CHUNK`] chunks and hands them to `sink` (a
/// writer's or a hasher's `write`), so assembling never holds more than a chunk of a part.
/// (Reading on a helper thread ahead of the sink was tried: no change in the 1 GiB multipart
/// bench under load, 12 MiB more peak RSS.)
pub(super) fn feed_files(
    files: &[PathBuf],
    sink: &mut dyn FnMut(&mut dyn Iterator<Item = Bytes>) -> Result<()>,
) -> Result<()> {
    let ranges: Vec<(PathBuf, u64, u64)> = files.iter().map(|p| (p.clone(), 0, u64::MAX)).collect();
    feed_ranges(&ranges, sink)
}

/// As [`feed_files`], over `(file, offset, length)` ranges (a length past the file's end stops
/// at the end).
fn feed_ranges(
    ranges: &[(PathBuf, u64, u64)],
    sink: &mut dyn FnMut(&mut dyn Iterator<Item = Bytes>) -> Result<()>,
) -> Result<()> {
    for (path, offset, len) in ranges {
        let file = fs::File::open(path).map_err(io("reading part"))?;
        let end = offset.saturating_add(*len);
        let mut pos = *offset;
        let mut failed = None;
        let written = {
            let mut chunks = std::iter::from_fn(|| {
                let want = usize::try_from(end - pos)
                    .unwrap_or(usize::MAX)
                    .min(READ_CHUNK);
                if want == 0 {
                    return None;
                }
                let mut buf = vec![0u8; want];
                match read_full(&file, pos, &mut buf) {
                    Ok(0) => None,
                    Ok(k) => {
                        buf.truncate(k);
                        pos += k as u64;
                        Some(Bytes::from(buf))
                    }
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                }
            });
            sink(&mut chunks)
        };
        written?;
        if let Some(e) = failed {
            return Err(Error::from_io("reading part", e));
        }
    }
    Ok(())
}

impl BlobMaintenance for LocalStore {
    fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        let read = |p: &Path| fs::read_dir(p).map_err(io("listing blobs"));
        for a in read(&self.dirs.blobs)? {
            let a = a.map_err(io("listing blobs"))?.path();
            if !a.is_dir() {
                continue;
            }
            for b in read(&a)? {
                let b = b.map_err(io("listing blobs"))?.path();
                if !b.is_dir() {
                    continue;
                }
                for f in read(&b)? {
                    let f = f.map_err(io("listing blobs"))?;
                    let meta = f.metadata().map_err(io("listing blobs"))?;
                    let name = f.file_name();
                    // Anything not named by a hash is not ours to judge; fsck reports it via
                    // the records that miss their blob.
                    let Some(sha) = name.to_str().and_then(|n| n.parse::<Sha256>().ok()) else {
                        continue;
                    };
                    out.push(BlobInfo {
                        sha,
                        len: meta.len(),
                        modified: meta.modified().map_err(io("listing blobs"))?,
                    });
                }
            }
        }
        if let Some(i) = &self.inline {
            for kv in i.db.iter() {
                let (k, v) = kv.map_err(inline_err)?;
                let (Ok(key), Some(stored)) = (
                    <[u8; 32]>::try_from(k.as_ref()),
                    v.get(..INLINE_HEADER)
                        .and_then(|h| <[u8; 8]>::try_from(h).ok()),
                ) else {
                    continue;
                };
                out.push(BlobInfo {
                    sha: Sha256(key),
                    len: (v.len() - INLINE_HEADER) as u64,
                    modified: std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(u64::from_be_bytes(stored)),
                });
            }
        }
        Ok(out)
    }

    fn quarantine(&self, sha: &Sha256) -> Result<()> {
        let q = &self.dirs.quarantine;
        fs::create_dir_all(q).map_err(io("creating quarantine dir"))?;
        if let Some(v) = self
            .inline
            .as_ref()
            .map(|i| i.get(sha))
            .transpose()?
            .flatten()
        {
            // Moved aside as a file like any other blob: written and synced before the inline
            // copy goes, so the bytes exist somewhere at every moment.
            let dest = q.join(sha.to_hex());
            let mut f = fs::File::create(&dest).map_err(io("quarantining blob"))?;
            std::io::Write::write_all(&mut f, &v[INLINE_HEADER..])
                .map_err(io("quarantining blob"))?;
            f.sync_all().map_err(io("quarantining blob"))?;
            sync_dir(q).map_err(io("syncing quarantine dir"))?;
            if let Some(i) = &self.inline {
                i.remove(sha)?;
            }
            return Ok(());
        }
        fs::rename(self.dirs.blob_path(sha), q.join(sha.to_hex()))
            .map_err(io("quarantining blob"))?;
        sync_dir(q).map_err(io("syncing quarantine dir"))
    }

    fn sweep_temp(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dirs.tmp).map_err(io("reading temp dir"))? {
            let entry = entry.map_err(io("reading temp dir"))?;
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Written bytes after which [`TempBlob::write_all`] asks the kernel to start writing them back,
/// so the fsync at the end of an upload finds little left to do (it overlaps the transfer).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;
/// The same within the first [`DIRECT_BLOCK`], the page-cache head every file blob has: a 1 MiB
/// upload is over before 8 MiB would be reached, and starting its writeback as it arrives took
/// its fsync from about 1.1 ms to 0.4 ms (`perf trace`): sequential uploads of new 1 MiB
/// contents, p50 6.0-6.4 -> 5.6-5.7 ms. A duplicate pays for writeback it did not need (its
/// temp file is dropped unsynced): p50 4.6-4.9 -> 4.9-5.1 ms. New contents are the common case.
const HEAD_WRITEBACK_STEP: u64 = 256 * 1024;

/// Large files bypass the page cache (O_DIRECT) in blocks of this size.
const DIRECT_BLOCK: usize = 1024 * 1024;
/// Alignment O_DIRECT asks of memory, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;

/// A temp file being written; removed on drop unless it was committed.
struct TempBlob {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Where the first byte goes in the file: 0, or a placed part's offset in its session's
    /// staging file.
    base: u64,
    /// Bytes written so far.
    written: u64,
    /// Bytes whose writeback has been started.
    writeback: u64,
    /// Bytes not yet written: an over-allocated buffer whose aligned window is used.
    pending: Vec<u8>,
    start: usize,
    filled: usize,
    /// Whether the file is (still) written with O_DIRECT.
    direct: bool,
}

impl TempBlob {
    fn new(path: PathBuf, file: std::fs::File) -> Self {
        Self {
            path,
            file: Some(file),
            base: 0,
            written: 0,
            writeback: 0,
            pending: Vec::new(),
            start: 0,
            filled: 0,
            direct: cfg!(target_os = "linux"),
        }
    }

    fn file(&mut self) -> &mut std::fs::File {
        self.file
            .as_mut()
            .expect("temp blob file is present until commit")
    }

    /// Appends `buf`. The first [`DIRECT_BLOCK`] bytes go through the page cache (small files
    /// need no buffer of their own); after that, whole aligned blocks go straight to the disk
    /// (O_DIRECT): the page cache's per-page bookkeeping was about a quarter of a large upload's
    /// CPU time, and the final fsync then has little left to write.
    fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        if !self.direct || self.written < DIRECT_BLOCK as u64 {
            let head = if self.direct {
                (DIRECT_BLOCK - self.written as usize).min(buf.len())
            } else {
                buf.len()
            };
            self.write_buffered(&buf[..head])?;
            buf = &buf[head..];
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.pending.is_empty() {
            self.pending = vec![0; DIRECT_BLOCK + DIRECT_ALIGN];
            self.start = self.pending.as_ptr().align_offset(DIRECT_ALIGN);
        }
        while !buf.is_empty() {
            let take = (DIRECT_BLOCK - self.filled).min(buf.len());
            let at = self.start + self.filled;
            self.pending[at..at + take].copy_from_slice(&buf[..take]);
            self.filled += take;
            buf = &buf[take..];
            if self.filled == DIRECT_BLOCK {
                self.flush_block()?;
                if !self.direct {
                    return self.write_buffered(buf);
                }
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (start, end, at) = (self.start, self.start + self.filled, self.written);
        let pos = self.base + at;
        let block = std::mem::take(&mut self.pending);
        let file = self
            .file
            .as_mut()
            .expect("temp blob file is present until commit");
        // O_DIRECT is switched on with the first block and stays on after.
        let first = at == DIRECT_BLOCK as u64;
        let res = if !first || set_direct(file, true) {
            file.write_all_at(&block[start..end], pos)
        } else {
            Err(std::io::Error::from_raw_os_error(22))
        };
        self.pending = block;
        match res {
            Ok(()) => {
                self.written += self.filled as u64;
                self.filled = 0;
                Ok(())
            }
            // The filesystem does not do O_DIRECT (tmpfs): the page cache it is.
            Err(e) if e.raw_os_error() == Some(22) => {
                self.direct = false;
                self.drain_buffered()
            }
            Err(e) => Err(e),
        }
    }

    /// Writes what is pending through the page cache.
    fn drain_buffered(&mut self) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .expect("temp blob file is present until commit");
        set_direct(file, false);
        let pending = std::mem::take(&mut self.pending);
        let res = self.write_buffered(&pending[self.start..self.start + self.filled]);
        self.filled = 0;
        res
    }

    fn write_buffered(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.base + self.written;
        self.file().write_all_at(buf, at)?;
        self.written += buf.len() as u64;
        let step = if self.written <= DIRECT_BLOCK as u64 {
            HEAD_WRITEBACK_STEP
        } else {
            WRITEBACK_STEP
        };
        if self.written - self.writeback >= step {
            let (from, len) = (self.base + self.writeback, self.written - self.writeback);
            start_writeback(self.file(), from, len);
            self.writeback = self.written;
        }
        Ok(())
    }

    /// Makes everything written durable (fsync).
    fn sync(&mut self) -> std::io::Result<()> {
        if self.filled > 0 {
            self.drain_buffered()?;
        }
        self.file().sync_all()
    }
}

/// Turns O_DIRECT on or off for an open file; false when that is not possible.
#[cfg(target_os = "linux")]
fn set_direct(file: &std::fs::File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let want = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        want == flags || libc::fcntl(fd, libc::F_SETFL, want) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &std::fs::File, on: bool) -> bool {
    !on
}

/// Starts (does not wait for) writeback of a byte range: a hint, so its failure is ignored; the
/// fsync that follows is what counts.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

impl Drop for TempBlob {
    fn drop(&mut self) {
        // Whatever happened (abort, client gone, panic), an uncommitted temp file goes.
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes around the page-cache head and the O_DIRECT blocks, fed in chunks of several
    /// shapes: what is read back is what was written.
    #[test]
    fn temp_blobs_keep_every_byte_across_the_direct_write_boundaries() {
        const MIB: usize = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3 * MIB + 12_345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for size in [
            0,
            1,
            4095,
            MIB - 1,
            MIB,
            MIB + 1,
            2 * MIB + 4096,
            3 * MIB + 12_345,
        ] {
            for chunk in [size.max(1), 7919, 300 * 1024] {
                let mut temp = store.create_temp().unwrap();
                for part in data[..size].chunks(chunk) {
                    temp.write_all(part).unwrap();
                }
                temp.sync().unwrap();
                let back = fs::read(&temp.path).unwrap();
                assert_eq!(back.len(), size, "size {size}, chunks of {chunk}");
                assert!(back == data[..size], "size {size}, chunks of {chunk}");
            }
        }
    }

    /// Parts are placed at (N-1) * the first placed part's size; a short last part fixes the
    /// size that puts it at the end; anything that does not fit the size is not placed.
    #[test]
    fn hash_file_reads_any_length_past_the_page_cache_or_through_it() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        // Lengths around the O_DIRECT alignment and the read-ahead buffer, and a file on
        // /dev/shm (tmpfs: O_DIRECT may be refused, the page cache is used).
        let shm = Path::new("/dev/shm");
        for (k, len) in [
            0usize,
            1,
            4095,
            4096,
            4097,
            HASH_BUF - 1,
            HASH_BUF,
            3 * HASH_BUF + 12_345,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + k) as u8).collect();
            let mut places = vec![dir.path().join(format!("f{k}"))];
            if shm.is_dir() {
                places.push(shm.join(format!("depot-hash-test-{}-{k}", std::process::id())));
            }
            for path in places {
                fs::write(&path, &bytes).unwrap();
                let file = fs::File::open(&path).unwrap();
                let got = hash_file(&path, &file, len as u64).unwrap();
                assert_eq!(
                    got.0,
                    <[u8; 32]>::from(sha2::Sha256::digest(&bytes)),
                    "{len} bytes"
                );
                // A file shorter than asked is an error, not a short hash.
                assert!(hash_file(&path, &file, len as u64 + 1).is_err());
                let _ = fs::remove_file(&path);
            }
        }
    }

    #[test]
    fn part_offsets_follow_the_first_placed_part() {
        const M: u64 = 5 << 20;
        let at = |fixed, number, len, total| {
            part_offset(
                fixed,
                number,
                crate::store::PartPlace {
                    len,
                    total,
                    min_len: M,
                },
            )
        };
        let total = 3 * M + 7;
        // The first part placed fixes the size, whatever its number.
        assert_eq!(at(None, 1, M, total), Some((0, M)));
        assert_eq!(at(None, 3, M, total), Some((2 * M, M)));
        // A short last part sent first: the parts before it are (total - len) / (N - 1).
        assert_eq!(at(None, 4, 7, total), Some((3 * M, M)));
        assert_eq!(at(None, 4, 8, total), None, "3 parts cannot fill 3 * M - 1");
        assert_eq!(
            at(None, 1, 7, 7),
            None,
            "a single small part is a part file"
        );
        assert_eq!(at(None, 2, M, M + 1), None, "past the end");
        // With the size fixed: that size, or the last part ending the file.
        assert_eq!(at(Some(M), 2, M, total), Some((M, M)));
        assert_eq!(at(Some(M), 4, 7, total), Some((3 * M, M)));
        assert_eq!(at(Some(M), 2, M + 1, total), None);
        assert_eq!(at(Some(M), 3, 7, total), None, "short but not at the end");
        assert_eq!(at(Some(M), 5, 7, total), None);
        assert_eq!(at(Some(M), 0, M, total), None);
        assert_eq!(at(Some(M), 1, 0, total), None);
        assert_eq!(at(Some(M), u32::MAX, M, total), None);
    }

    /// Placed parts, one sent again (a part file of its own) and a racing writer of a number
    /// being placed: the assembly moves the re-sent part into its range, and the blob is the
    /// parts' bytes in order.
    #[test]
    fn resent_parts_are_moved_into_place_at_assembly() {
        const M: usize = 5 << 20;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..2 * M + 3).map(|i| (i % 251) as u8).collect();
        let total = data.len() as u64;
        let put = |number: u32, bytes: &[u8]| {
            let place = crate::store::PartPlace {
                len: bytes.len() as u64,
                total,
                min_len: M as u64,
            };
            let mut w = store
                .placed_part_writer("s1", number, place, PartDigests::WithMd5)
                .unwrap();
            w.write(&mut std::iter::once(Bytes::copy_from_slice(bytes)))
                .unwrap();
            w.finish().unwrap()
        };
        let placed = |store: &LocalStore| -> Vec<(u32, bool)> {
            let parts = store.part_sources("s1").unwrap();
            parts.iter().map(|(p, b)| (p.number, b.placed)).collect()
        };
        put(3, &data[2 * M..]);
        put(1, &vec![7u8; M]);
        put(2, &data[M..2 * M]);
        assert_eq!(placed(&store), vec![(1, true), (2, true), (3, true)]);
        // Part 1 again, with the right bytes: a part file beside the placed parts.
        put(1, &data[..M]);
        assert_eq!(placed(&store), vec![(1, false), (2, true), (3, true)]);
        let staged = store.assemble("s1", &[1, 2, 3]).unwrap();
        assert_eq!(placed(&store), vec![(1, true), (2, true), (3, true)]);
        use sha2::Digest;
        assert_eq!(
            staged.sha().0,
            <[u8; 32]>::from(sha2::Sha256::digest(&data))
        );
        assert_eq!(staged.size(), total);
        let sha = staged.sha();
        staged.commit().unwrap();
        let mut h = store.open(&sha).unwrap().unwrap();
        let mut back = vec![0u8; data.len()];
        assert_eq!(h.read_at(0, &mut back).unwrap(), data.len());
        assert!(back == data);
        store.drop_session("s1").unwrap();
        assert!(
            store.open(&sha).unwrap().is_some(),
            "the blob outlives its session"
        );
    }

    /// The contract suite every backend must pass, on the local store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_store_passes_the_blob_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let cases = crate::store::contract::run_all(&store).await;
        assert_eq!(cases, 15, "every case ran");
    }

    /// The same with every blob a file (`inline_max = 0`), and with every blob the contract
    /// writes inline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_store_passes_the_contract_with_and_without_inline_blobs() {
        for max in [0, 4 * INLINE_MAX] {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open_with(dir.path(), max).unwrap();
            let cases = crate::store::contract::run_all(&store).await;
            assert_eq!(cases, 15, "every case ran, inline_max {max}");
            assert_eq!(dir.path().join("blobs/inline").exists(), max > 0);
        }
    }

    /// Bytes the store already holds are not synced when their writer finishes; if that blob
    /// is removed before the commit, the commit syncs them and stores them (a duplicate's
    /// commit otherwise just drops them, leaving no temp file).
    #[test]
    fn a_duplicate_whose_blob_goes_before_its_commit_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Inline blobs off: these bytes go through a temp file.
        let store = LocalStore::open_with(dir.path(), 0).unwrap();
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 5)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let stage = || {
            let mut w = store.writer().unwrap();
            crate::store::write_bytes(w.as_mut(), Bytes::from(data.clone())).unwrap();
            w.finish().unwrap()
        };
        let first = stage();
        let sha = first.sha();
        first.commit().unwrap();
        // A duplicate: dropped at its commit.
        stage().commit().unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // Staged while the blob was there; the blob goes; the commit stores these bytes.
        let late = stage();
        store.remove(&sha).unwrap();
        assert!(store.open(&sha).unwrap().is_none());
        late.commit().unwrap();
        assert_eq!(fs::read(store.dirs.blob_path(&sha)).unwrap(), data);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    /// An inline blob is listed with its size, quarantined to a file that holds its bytes (and
    /// then is no longer served), and a removed one is gone.
    #[test]
    fn inline_blobs_are_listed_quarantined_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let put = |data: &'static [u8]| {
            let mut w = store.writer().unwrap();
            crate::store::write_bytes(w.as_mut(), Bytes::from_static(data)).unwrap();
            let staged = w.finish().unwrap();
            let sha = staged.sha();
            staged.commit().unwrap();
            sha
        };
        let a = put(b"first inline blob");
        let b = put(b"second");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let mut listed: Vec<_> = store
            .list()
            .unwrap()
            .iter()
            .map(|i| (i.sha, i.len))
            .collect();
        listed.sort();
        let mut want = vec![(a, 17), (b, 6)];
        want.sort();
        assert_eq!(listed, want);
        store.quarantine(&a).unwrap();
        assert_eq!(
            fs::read(dir.path().join("quarantine").join(a.to_hex())).unwrap(),
            b"first inline blob"
        );
        assert!(store.open(&a).unwrap().is_none());
        let mut h = store.open(&b).unwrap().unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(h.read_at(2, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"cond");
        assert_eq!(h.read_at(6, &mut buf).unwrap(), 0);
        store.remove(&b).unwrap();
        assert!(store.open(&b).unwrap().is_none());
        assert!(store.list().unwrap().is_empty());
    }
}
