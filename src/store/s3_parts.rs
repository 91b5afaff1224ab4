//! Parts of upload sessions (Amplience multipart, tus) on the S3 store: each part maps onto a
//! part of one S3 multipart upload per session, so completing an upload sends no bytes again.
//!
//! - A part is first written to a local staging file (the local store's part files, under
//!   `<data>/s3-parts/`): durable when its request is answered, listed by the same code, and
//!   the source the session's SHA-256 is read from at completion (S3 cannot hash an object for
//!   us, and part SHA-256s do not compose into the whole's).
//! - A part of at least [`MIN_SHIPPED`] bytes is then sent as S3 part `number` of the session's
//!   multipart upload (created with the first such part, at a `tmp/` key, its id kept in the
//!   session's staging dir) and its S3 ETag kept beside it (`<part file>.s3`). A re-sent part is
//!   sent again and replaces the earlier one on S3 as well. The upload is a plain
//!   `UploadPart` from a memory map of the staged file: the part's bytes are never copied
//!   into the heap, so memory stays flat whatever `maxPartSize` is (the mapping is page cache
//!   the kernel may reclaim).
//! - [`PartStore::assemble`] hashes the staged parts in order (local reads, no network), and
//!   when the parts are `1..=k`, all but the last at least [`MIN_SHIPPED`] bytes (S3's rule;
//!   every Amplience upload and every tus upload sent in PATCHes of 5 MiB or more), sends any
//!   part not sent yet (the last, small one), completes the multipart upload at its `tmp/`
//!   key and stages that object: commit copies it to the content key server-side
//!   ([`super::s3`]'s commit path). If the content is stored already the multipart upload is
//!   aborted instead. Any other shape (tus PATCHes under 5 MiB, a part list with gaps) and a
//!   completion S3 refuses (a part replaced on S3 by a racing re-send) fall back to streaming
//!   the staged parts through the ordinary S3 blob writer.
//! - [`PartStore::drop_session`] aborts the session's multipart upload (so S3 keeps no
//!   orphaned parts), then removes its staging dir; the sweep of expired sessions calls it.
//!
//! Known limits: staging is node-local, so all requests of one upload session must reach the
//! same node (sticky routing) when several nodes share a bucket; a crash between creating the
//! S3 upload and recording its id leaves an incomplete upload only a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes.

use super::local::{chosen_files, feed_files};
use super::s3::{blob_key, is_not_found, unavailable, Inner, S3Staged, Staged};
use super::{BlobHasher, LocalStore, PartDigests, PartInfo, PartStore, PartWriter, StagedBlob};
use crate::error::{Error, Result};
use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Smallest S3 part but the last (S3's rule); smaller parts are only sent when they end the
/// upload.
pub const MIN_SHIPPED: u64 = 5 * 1024 * 1024;
/// Largest S3 part (S3's rule).
const MAX_SHIPPED: u64 = 5 * 1024 * 1024 * 1024;
/// Most parts of one S3 multipart upload (S3's rule).
const MAX_S3_PARTS: u32 = 10_000;
/// File in a session's staging dir naming its S3 multipart upload: `<key>\n<upload id>`.
const UPLOAD_FILE: &str = "s3-upload";
/// Suffix of the file beside a staged part holding its S3 ETag (its `PartId`).
const SENT_SUFFIX: &str = ".s3";

/// The part store of [`super::S3Store`].
pub(super) struct S3Parts {
    local: LocalStore,
    s3: Arc<Inner>,
    /// Held while a session's multipart upload is looked up or created, so parts sent at once
    /// share one upload.
    create: Mutex<()>,
}

/// A session's S3 multipart upload.
struct Upload {
    key: Key,
    id: String,
}

fn io(context: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::from_io(context, e)
}

/// Writes `text` to `path` durably (temp file, fsync, rename, fsync of the dir).
fn write_durably(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", ulid::Ulid::new()));
    let mut f = fs::File::create(&tmp).map_err(io("writing part state"))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::from_io("writing part state", e)
        })?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing part state"))?;
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from_io("reading part state", e)),
    }
}

fn sent_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(SENT_SUFFIX);
    PathBuf::from(s)
}

impl S3Parts {
    /// Part staging under `dir` (created), parts sent to the bucket `s3` serves.
    pub(super) fn open(dir: &Path, s3: Arc<Inner>) -> Result<Self> {
        Ok(Self {
            local: LocalStore::open(dir)?,
            s3,
            create: Mutex::new(()),
        })
    }

    /// Removes staging files a crash left (not the parts: their sessions still own them).
    pub(super) fn sweep_temp(&self) -> Result<usize> {
        use super::BlobMaintenance;
        self.local.sweep_temp()
    }

    fn upload_file(&self, session: &str) -> Result<PathBuf> {
        Ok(self.local.session_dir(session)?.join(UPLOAD_FILE))
    }

    /// The session's S3 multipart upload, if one was started.
    fn upload(&self, session: &str) -> Result<Option<Upload>> {
        let Some(text) = read_optional(&self.upload_file(session)?)? else {
            return Ok(None);
        };
        let (key, id) = text
            .split_once('\n')
            .ok_or_else(|| Error::Internal(format!("damaged {UPLOAD_FILE} of {session}")))?;
        Ok(Some(Upload {
            key: Key::from(key),
            id: id.to_string(),
        }))
    }

    /// The session's S3 multipart upload, started now when there is none.
    fn upload_or_create(&self, session: &str) -> Result<Upload> {
        let _one = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(up) = self.upload(session)? {
            return Ok(up);
        }
        let key = Key::from(format!("tmp/{}", ulid::Ulid::new()));
        let (store, k) = (self.s3.store.clone(), key.clone());
        let id = self
            .s3
            .block(async move { store.create_multipart(&k).await })?
            .map_err(|e| unavailable("starting a multipart upload", e))?;
        let dir = self.local.session_dir(session)?;
        fs::create_dir_all(&dir).map_err(io("creating session dir"))?;
        write_durably(&dir.join(UPLOAD_FILE), &format!("{key}\n{id}"))?;
        Ok(Upload { key, id })
    }

    /// Forgets the session's S3 upload (after it was completed or aborted): a later assembly
    /// starts a new one and sends every part again.
    fn forget_upload(&self, session: &str, parts: &[(PartInfo, PathBuf)]) {
        for (_, path) in parts {
            let _ = fs::remove_file(sent_path(path));
        }
        if let Ok(f) = self.upload_file(session) {
            let _ = fs::remove_file(f);
        }
    }

    /// Sends the staged part at `path` as S3 part `number` of the session's upload and keeps
    /// its ETag beside it.
    fn send(&self, session: &str, number: u32, path: &Path) -> Result<PartId> {
        let up = self.upload_or_create(session)?;
        let payload = map_file(path)?;
        let store = self.s3.store.clone();
        let idx = number as usize - 1;
        let part = self
            .s3
            .block(async move { store.put_part(&up.key, &up.id, idx, payload.into()).await })?
            .map_err(|e| unavailable("uploading a part", e))?;
        write_durably(&sent_path(path), &part.content_id)?;
        Ok(part)
    }

    /// Whether parts `numbers` can be completed as one S3 multipart upload: `1..=k` (object
    /// store numbers the completed parts from 1), S3's size rules.
    fn completes_on_s3(chosen: &[&PartInfo]) -> bool {
        let Some((_, but_last)) = chosen.split_last() else {
            return false;
        };
        chosen.len() <= MAX_S3_PARTS as usize
            && chosen
                .iter()
                .enumerate()
                .all(|(i, p)| p.number as usize == i + 1 && p.size <= MAX_SHIPPED)
            && but_last.iter().all(|p| p.size >= MIN_SHIPPED)
    }

    /// Completes the session's upload from parts `files` (all sent, or sent now) at its `tmp/`
    /// key; `None` when S3 refused (the caller falls back to streaming).
    fn complete(&self, session: &str, chosen: &[(&PartInfo, PathBuf)]) -> Result<Option<Upload>> {
        let mut ids = Vec::with_capacity(chosen.len());
        for (info, path) in chosen {
            let id = match read_optional(&sent_path(path))? {
                Some(content_id) => PartId { content_id },
                None => self.send(session, info.number, path)?,
            };
            ids.push(id);
        }
        let Some(up) = self.upload(session)? else {
            return Err(Error::Internal("the multipart upload vanished".into()));
        };
        let (store, key, id) = (self.s3.store.clone(), up.key.clone(), up.id.clone());
        match self
            .s3
            .block(async move { store.complete_multipart(&key, &id, ids).await })?
        {
            Ok(_) => Ok(Some(up)),
            Err(e) => {
                tracing::warn!(session, error = %e, "S3 refused to complete the parts; streaming them");
                Ok(None)
            }
        }
    }

    /// Aborts the session's S3 upload in the background (the bytes are not needed).
    fn abort_detached(&self, up: Upload) {
        let store = self.s3.store.clone();
        self.s3.detach(async move {
            let _ = store.abort_multipart(&up.key, &up.id).await;
        });
    }
}

/// A staged part file as an immutable, reference-counted buffer without reading it into the
/// heap: a stored part file is never written again (a re-sent part is a new file renamed over
/// it, the old inode stays whole while mapped).
fn map_file(path: &Path) -> Result<Bytes> {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).map_err(io("reading part"))?;
    let len = file.metadata().map_err(io("reading part"))?.len() as usize;
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: a read-only private mapping of a file we opened; checked for failure below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Error::from_io(
            "mapping part",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Bytes::from_owner(Mapped { ptr, len }))
}

/// A read-only memory map, unmapped on drop.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned; nothing writes through `ptr`.
unsafe impl Send for Mapped {}
// SAFETY: as above: shared reads of immutable memory.
unsafe impl Sync for Mapped {}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap returned, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// A part staged locally, then sent to S3 when it is large enough.
struct S3PartWriter {
    parts: Arc<S3Parts>,
    session: String,
    local: Box<dyn PartWriter>,
}

impl PartWriter for S3PartWriter {
    fn write(&mut self, chunks: &mut dyn Iterator<Item = Bytes>) -> Result<()> {
        self.local.write(chunks)
    }

    fn finish(self: Box<Self>) -> Result<PartInfo> {
        let info = self.local.finish()?;
        if info.size >= MIN_SHIPPED && info.number <= MAX_S3_PARTS && info.size <= MAX_SHIPPED {
            // The staged file of exactly these bytes; a racing re-send of the number may have
            // replaced it already, and that writer sends its own.
            let staged = self.parts.local.part_files(&self.session)?;
            if let Some((_, path)) = staged.iter().find(|(p, _)| *p == info) {
                self.parts.send(&self.session, info.number, path)?;
            }
        }
        Ok(info)
    }
}

impl PartStore for Arc<S3Parts> {
    fn part_writer(
        &self,
        session: &str,
        number: u32,
        digests: PartDigests,
    ) -> Result<Box<dyn PartWriter>> {
        Ok(Box::new(S3PartWriter {
            parts: self.clone(),
            session: session.to_string(),
            local: self.local.part_writer(session, number, digests)?,
        }))
    }

    fn list_parts(&self, session: &str) -> Result<Vec<PartInfo>> {
        self.local.list_parts(session)
    }

    fn assemble(&self, session: &str, numbers: &[u32]) -> Result<Box<dyn StagedBlob>> {
        let staged = self.local.part_files(session)?;
        let files = chosen_files(&staged, numbers)?;
        let chosen: Vec<(&PartInfo, PathBuf)> = numbers
            .iter()
            .zip(files.iter())
            .filter_map(|(n, path)| {
                let info = staged.iter().find(|(p, _)| p.number == *n)?;
                Some((&info.0, path.clone()))
            })
            .collect();
        let infos: Vec<&PartInfo> = chosen.iter().map(|(p, _)| *p).collect();
        if !S3Parts::completes_on_s3(&infos) {
            return stream(self, session, &staged, &files);
        }
        // The content address, from the staged parts (local reads, no network).
        let mut hasher = BlobHasher::new();
        feed_files(&files, &mut |chunks| {
            hasher
                .burst(chunks, |_| Ok(()))
                .map_err(|e| Error::failed("hashing parts", e))
        })?;
        let size = hasher.size();
        let sha = hasher.finish();
        if self.s3.head(&blob_key(&sha))?.is_some() {
            // Stored already: the parts sent are not needed.
            if let Some(up) = self.upload(session)? {
                self.abort_detached(up);
            }
            self.forget_upload(session, &staged);
            return Ok(Box::new(S3Staged {
                inner: self.s3.clone(),
                sha,
                size,
                state: Staged::Existing,
            }));
        }
        match self.complete(session, &chosen)? {
            Some(up) => {
                // The upload is an object now; a retry of the assembly starts another.
                self.forget_upload(session, &staged);
                Ok(Box::new(S3Staged {
                    inner: self.s3.clone(),
                    sha,
                    size,
                    state: Staged::Temp(up.key),
                }))
            }
            None => stream(self, session, &staged, &files),
        }
    }

    fn drop_session(&self, session: &str) -> Result<()> {
        if let Some(up) = self.upload(session)? {
            let (store, key, id) = (self.s3.store.clone(), up.key, up.id);
            match self
                .s3
                .block(async move { store.abort_multipart(&key, &id).await })?
            {
                Ok(()) => {}
                // Completed or aborted already (or expired by a lifecycle rule).
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(unavailable("aborting a multipart upload", e)),
            }
        }
        self.local.drop_session(session)
    }
}

/// The fallback assembly: the staged parts streamed through the S3 blob writer (the session's
/// multipart upload, if any, is aborted: its parts cannot form this blob).
fn stream(
    parts: &Arc<S3Parts>,
    session: &str,
    staged: &[(PartInfo, PathBuf)],
    files: &[PathBuf],
) -> Result<Box<dyn StagedBlob>> {
    if let Some(up) = parts.upload(session)? {
        parts.abort_detached(up);
    }
    parts.forget_upload(session, staged);
    let mut writer = super::S3Store::writer_on(&parts.s3);
    feed_files(files, &mut |chunks| writer.write(chunks))?;
    writer.finish()
}
