//! Upload sessions: Foir's presigned PUT + confirm, Amplience's temp files and signed download
//! links, all one persisted record ([`UploadSession`]) behind a signed URL. Bytes go through the
//! same ingest as `POST /upload/**` ([`super::upload::PartWriter`]: hash, dedup, fsync, never
//! buffered); a session holds a reference on its blob until it is confirmed (the File takes it
//! over) or swept.

use super::{blocking, names, Service};
use crate::auth::sign::Purpose;
use crate::auth::{access, Caller, Principal};
use crate::error::{Error, Result, SessionFault};
use crate::media;
use crate::meta::{
    FileExtras, FileRecord, ImageRecord, SessionKind, SessionState, StoredBytes, UploadSession,
};
use crate::store::BlobHandle;
use crate::types::{now_millis, FileId, InstanceId, SessionId};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes kept from the start of a session's upload to check its type.
const HEAD: usize = 8 * 1024;
/// Images decoded for a blurhash at once (each may take up to the decode memory cap).
const DECODES: usize = 2;
/// Sessions removed per sweep batch.
const SWEEP_BATCH: usize = 256;
/// Largest `metadata` kept on a session (and its File), serialised.
const MAX_METADATA: usize = 16 * 1024;
/// Accounts remembered by the creation-rate limiter before stale windows are dropped.
const RATE_ACCOUNTS: usize = 100_000;

/// In-memory state beside the persisted sessions: which sessions have a PUT in flight (so
/// two PUTs to one URL cannot both write), the creation rate per account, and the decode lane.
pub struct Runtime {
    pub(crate) claims: Mutex<HashSet<SessionId>>,
    rate: Mutex<HashMap<(InstanceId, String), (Instant, u32)>>,
    decode: tokio::sync::Semaphore,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            claims: Mutex::default(),
            rate: Mutex::default(),
            decode: tokio::sync::Semaphore::new(DECODES),
        }
    }
}

/// A PUT in flight on a session; dropping it frees the session for another try.
pub(crate) struct Claim {
    pub(crate) svc: Arc<Service>,
    pub(crate) id: SessionId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut c = self
            .svc
            .sessions
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.remove(&self.id);
    }
}

/// What `createFileUpload` declares.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub filename: String,
    pub mime_type: String,
    pub size: i64,
    pub folder: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// A capability as it arrives in a URL.
#[derive(Debug, Clone)]
pub struct Capability {
    pub instance: String,
    pub session: String,
    pub expires: u64,
    pub sig: String,
}

/// A File in Foir's shape: the record and its extra fields.
#[derive(Debug, Clone)]
pub struct FoirFile {
    pub file: FileRecord,
    pub extras: FileExtras,
}

/// Bytes served through a signed URL (a temp file, a link's file).
pub struct SignedDownload {
    pub name: String,
    pub mime: String,
    pub sha: crate::types::Sha256,
    pub len: u64,
    pub handle: Box<dyn BlobHandle>,
}

/// A media type as compared: lower case, without parameters; `image/jpg` is `image/jpeg`.
pub fn normalize_mime(raw: &str) -> String {
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        _ => essence,
    }
}

/// Foir's rule: the last path component, unsafe characters replaced with `-`.
pub fn foir_filename(raw: &str) -> String {
    names::sanitize_filename(raw)
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Parses a link's `expiresIn`: `1h`, `15m`, `90s`, `1d`, or bare seconds.
pub fn parse_expires_in(raw: &str) -> Result<Duration> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(raw)
        .map_err(|e| Error::BadRequest(format!("expiresIn {raw:?} is not a duration: {e}")))
}

fn session_id(s: &str) -> Result<SessionId> {
    s.parse()
        .map_err(|_| Error::NotFound("no such upload session".into()))
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

/// Reads a blob through `Read + Seek` (for the image decoder).
struct BlobReader {
    handle: Box<dyn BlobHandle>,
    pos: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .handle
            .read_at(self.pos, buf)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.handle.len() as i128;
        let next = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => len + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if next < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = next as u64;
        Ok(self.pos)
    }
}

impl Service {
    /// Counts one session creation against the account's per-minute budget.
    fn charge_creation(&self, instance: InstanceId, account: &str) -> Result<()> {
        let cap = self.config.sessions.max_created_per_minute;
        let mut rate = self.sessions.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let window = Duration::from_secs(60);
        if rate.len() >= RATE_ACCOUNTS {
            rate.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = rate
            .entry((instance, account.to_string()))
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= cap {
            return Err(Error::TooManyRequests(format!(
                "at most {cap} upload sessions or links a minute per account; try again later"
            )));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Persists a new session after the rate and open-count checks.
    pub(crate) fn create_session(&self, session: &UploadSession) -> Result<()> {
        self.charge_creation(session.instance, &session.account.0)?;
        self.meta
            .create_session(session, self.config.sessions.max_open_per_account)
    }

    /// The signed path (`/...?expires=..&sig=..`) of a session for `purpose`.
    pub fn signed_path(&self, purpose: Purpose, s: &UploadSession) -> Result<String> {
        let (instance, id) = (s.instance.to_string(), s.id.to_string());
        let query = self
            .keys
            .urls
            .query(purpose, &instance, &id, secs(s.expires))?;
        let path = match purpose {
            Purpose::Put => format!("/uploads/put/{instance}/{id}"),
            Purpose::TempPut => format!("/temp-files/{instance}/{id}/upload"),
            Purpose::TempGet => format!("/temp-files/{instance}/{id}"),
            Purpose::Link => format!("/links/{instance}/{id}"),
            Purpose::AssetPost => "/assets/upload".to_string(),
        };
        Ok(format!("{path}?{query}"))
    }

    /// Foir's `createFileUpload`: checks the declared size against `max_file_size` before any
    /// byte, sanitises the name, and opens a session whose PUT URL expires after
    /// `sessions.upload_url_ttl_secs`.
    pub async fn create_file_upload(
        self: &Arc<Self>,
        p: &Principal,
        req: NewUpload,
    ) -> Result<UploadSession> {
        let max = self.config.max_file_size;
        let size = u64::try_from(req.size)
            .map_err(|_| Error::BadRequest("size must not be negative".into()))?;
        if size > max {
            return Err(Error::FileTooLarge(format!(
                "{size} bytes is larger than the limit of {max} bytes"
            )));
        }
        let mime = normalize_mime(&req.mime_type);
        if !is_media_type(&mime) {
            return Err(Error::BadRequest(format!(
                "mimeType {:?} is not a media type",
                req.mime_type
            )));
        }
        let directory = match req.folder.as_deref().map(str::trim) {
            None | Some("") => "/".to_string(),
            Some(f) if f.starts_with('/') => names::normalize_decoded_directory(f)?,
            Some(f) => names::normalize_decoded_directory(&format!("/{f}"))?,
        };
        if let Some(m) = &req.metadata {
            if serde_json::to_vec(m).map_or(true, |b| b.len() > MAX_METADATA) {
                return Err(Error::BadRequest(format!(
                    "metadata must be a JSON value of at most {MAX_METADATA} bytes"
                )));
            }
        }
        let name = foir_filename(&req.filename);
        let svc = self.clone();
        let p = p.clone();
        let ttl = self.config.sessions.upload_url_ttl_secs;
        blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let now = now_millis();
            let s = UploadSession {
                id: SessionId::new(),
                instance: instance.id,
                account: p.account.clone(),
                kind: SessionKind::PresignedPut,
                name,
                mime: Some(mime),
                size: Some(size),
                max_size: size,
                directory,
                metadata: req.metadata,
                state: SessionState::Open,
                created: now,
                expires: now + ttl * 1000,
                bytes: None,
                file: None,
                error: None,
            };
            svc.create_session(&s)?;
            Ok(s)
        })
        .await
    }

    /// Amplience's `createTempFileUploadUrl`: a session for one PUT of up to
    /// `sessions.temp_file_max_size` bytes, served back until `sessions.temp_file_ttl_secs`.
    pub async fn create_temp_file(self: &Arc<Self>, p: &Principal) -> Result<UploadSession> {
        let svc = self.clone();
        let p = p.clone();
        let cfg = self.config.sessions.clone();
        blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let now = now_millis();
            let s = UploadSession {
                id: SessionId::new(),
                instance: instance.id,
                account: p.account.clone(),
                kind: SessionKind::TempFile,
                name: "temp-file".into(),
                mime: None,
                size: None,
                max_size: cfg.temp_file_max_size,
                directory: "/".into(),
                metadata: None,
                state: SessionState::Open,
                created: now,
                expires: now + cfg.temp_file_ttl_secs * 1000,
                bytes: None,
                file: None,
                error: None,
            };
            svc.create_session(&s)?;
            Ok(s)
        })
        .await
    }

    /// Verifies a URL capability and loads its session (with its instance's domain). The
    /// session must be of `kind`, in the URL's instance, and not expired.
    pub async fn open_capability(
        self: &Arc<Self>,
        purpose: Purpose,
        kind: SessionKind,
        cap: Capability,
    ) -> Result<(UploadSession, String)> {
        self.keys.urls.verify(
            purpose,
            &cap.instance,
            &cap.session,
            cap.expires,
            &cap.sig,
            now_millis() / 1000,
        )?;
        let id = session_id(&cap.session)?;
        let svc = self.clone();
        blocking(move || {
            let gone = || Error::NotFound("no such upload session".into());
            let s = svc.meta.session(id)?.ok_or_else(gone)?;
            if s.kind != kind || s.instance.to_string() != cap.instance {
                return Err(gone());
            }
            if s.expired(now_millis()) {
                return Err(Error::Session(
                    SessionFault::Expired,
                    "this upload session has expired".into(),
                ));
            }
            let domain = svc.meta.instance(s.instance)?.ok_or_else(gone)?.domain;
            Ok((s, domain))
        })
        .await
    }

    /// Starts the one PUT of a session: refuses a used session (409), a Content-Type that is
    /// not the declared one and a Content-Length that is not the declared size, before a byte
    /// of the body is read.
    pub fn begin_session_put(
        self: &Arc<Self>,
        session: UploadSession,
        content_type: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<SessionPut> {
        if session.state != SessionState::Open {
            return Err(Error::Conflict("this upload URL was used already".into()));
        }
        let header = content_type.map(normalize_mime).filter(|m| !m.is_empty());
        match (&session.mime, &header) {
            (Some(declared), Some(h)) if declared != h => {
                return Err(Error::Session(
                    SessionFault::TypeMismatch,
                    format!("Content-Type {h} is not the declared type {declared}"),
                ))
            }
            (Some(declared), None) => {
                return Err(Error::Session(
                    SessionFault::TypeMismatch,
                    format!("the request has no Content-Type; the declared type is {declared}"),
                ))
            }
            (None, None) => {
                return Err(Error::Session(
                    SessionFault::TypeMismatch,
                    "a temp file upload needs a Content-Type (image/jpeg, image/png, ...)".into(),
                ))
            }
            _ => {}
        }
        if let (Some(declared), Some(len)) = (session.size, content_length) {
            if len != declared {
                return Err(Error::Session(
                    SessionFault::LengthMismatch,
                    format!("Content-Length {len} is not the declared size {declared}"),
                ));
            }
        }
        if let Some(len) = content_length {
            if len > session.max_size {
                return Err(Error::FileTooLarge(format!(
                    "{len} bytes is larger than the limit of {} bytes",
                    session.max_size
                )));
            }
        }
        {
            let mut claims = self
                .sessions
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !claims.insert(session.id) {
                return Err(Error::Conflict(
                    "another upload to this URL is in progress".into(),
                ));
            }
        }
        let claim = Claim {
            svc: self.clone(),
            id: session.id,
        };
        let writer = self.begin_part(&session.name);
        Ok(SessionPut {
            svc: self.clone(),
            mime: header.unwrap_or_default(),
            session,
            writer,
            head: Vec::new(),
            received: 0,
            _claim: claim,
        })
    }

    /// Foir's `confirmFileUpload`: makes the File of an uploaded session, with its dimensions
    /// and blurhash computed now. Idempotent: a confirmed session answers its File again, and
    /// concurrent confirms make one File.
    pub async fn confirm_file_upload(
        self: &Arc<Self>,
        p: &Principal,
        upload_id: &str,
    ) -> Result<FoirFile> {
        let id = session_id(upload_id)?;
        let svc = self.clone();
        let principal = p.clone();
        let s =
            blocking(move || svc.own_session(&principal, id, SessionKind::PresignedPut)).await?;
        match s.state {
            SessionState::Confirmed => {
                let fid = s
                    .file
                    .ok_or_else(|| Error::Internal("confirmed session without a file".into()))?;
                return self.foir_file(Caller::User(p.clone()), fid).await;
            }
            SessionState::Open => {
                return Err(Error::Session(
                    SessionFault::Incomplete,
                    "no bytes were uploaded to this session's uploadUrl yet".into(),
                ))
            }
            SessionState::Uploaded => {}
        }
        if s.expired(now_millis()) {
            return Err(Error::Session(
                SessionFault::Expired,
                "this upload session has expired".into(),
            ));
        }
        let bytes = s
            .bytes
            .clone()
            .ok_or_else(|| Error::Internal("uploaded session without bytes".into()))?;
        let described = self.describe_image(&bytes).await?;
        let svc = self.clone();
        let fid = blocking(move || {
            let now = now_millis();
            let (width, height, blurhash) = match described {
                Some(d) => (Some(d.width), Some(d.height), Some(d.blurhash)),
                None => (bytes.width, bytes.height, None),
            };
            let file = FileRecord {
                id: FileId::new(),
                instance: s.instance,
                // The session's creator owns the File, even when an admin confirms it.
                created_by: s.account.clone(),
                created: now,
                updated: now,
                trashed: None,
                extension: names::extension(&s.name),
                name: s.name.clone(),
                directory: s.directory.clone(),
                mime: bytes.mime.clone(),
                size: bytes.size,
                sha256: bytes.sha,
                width,
                height,
                is_stared: None,
                is_sharable: None,
            };
            let image = match (width, height) {
                (Some(w), Some(h)) if media::is_image(&file.mime) => Some(ImageRecord {
                    file: file.id,
                    name: file.name.clone(),
                    description: None,
                    location: None,
                    width: w,
                    height: h,
                }),
                _ => None,
            };
            let alt = s
                .metadata
                .as_ref()
                .and_then(|m| m.get("alt"))
                .and_then(|a| a.as_str())
                .map(str::to_string);
            let extras = FileExtras {
                blurhash,
                alt,
                metadata: s.metadata.clone(),
            };
            // Like every File, it lands in an existing directory (made if missing), under
            // the tree lock so a concurrent move or trash of that directory is not missed.
            svc.within_directory(s.instance, &s.account, &s.directory, &[], || {
                svc.meta
                    .confirm_session(s.id, &file, image.as_ref(), &extras)
            })
        })
        .await?;
        self.foir_file(Caller::User(p.clone()), fid).await
    }

    /// Dimensions and blurhash of an image blob, decoded within bounds, at most [`DECODES`]
    /// at once. `None` for what is not a decodable image (or fails to decode: the File is made
    /// without a placeholder, and the reason logged).
    async fn describe_image(
        self: &Arc<Self>,
        bytes: &StoredBytes,
    ) -> Result<Option<media::blurhash::Described>> {
        if !media::blurhash::decodable(&bytes.mime) {
            return Ok(None);
        }
        let _lane = self
            .sessions
            .decode
            .acquire()
            .await
            .map_err(|e| Error::Internal(format!("decode lane: {e}")))?;
        let svc = self.clone();
        let (sha, mime) = (bytes.sha, bytes.mime.clone());
        blocking(move || {
            let Some(handle) = svc.blobs.open(&sha)? else {
                return Err(Error::ContentMissing(
                    "the uploaded bytes are missing from storage".into(),
                ));
            };
            let reader = std::io::BufReader::new(BlobReader { handle, pos: 0 });
            match media::blurhash::describe(reader, &mime) {
                Ok(d) => Ok(Some(d)),
                Err(why) => {
                    tracing::warn!(blob = %sha, "no blurhash: {why}");
                    Ok(None)
                }
            }
        })
        .await
    }

    /// A session of `kind` that `p` created (or, as an admin, that their instance holds);
    /// anything else is not found.
    fn own_session(
        &self,
        p: &Principal,
        id: SessionId,
        kind: SessionKind,
    ) -> Result<UploadSession> {
        let gone = || Error::NotFound("no such upload session".into());
        let s = self.meta.session(id)?.ok_or_else(gone)?;
        let instance = self
            .meta
            .instance_by_domain(&p.instance)?
            .ok_or_else(gone)?;
        if s.kind != kind || s.instance != instance.id || !access::manages(p, &s.account) {
            return Err(gone());
        }
        Ok(s)
    }

    /// Foir's `file(id:)`: a File the caller may read, with its extra fields.
    pub async fn foir_file(self: &Arc<Self>, caller: Caller, id: FileId) -> Result<FoirFile> {
        let svc = self.clone();
        blocking(move || {
            let file = svc.readable(&caller, id)?;
            let extras = svc.meta.file_extras(id)?.unwrap_or_default();
            Ok(FoirFile { file, extras })
        })
        .await
    }

    /// Opens the bytes of an uploaded temp file (its download URL was verified).
    pub async fn open_temp_download(
        self: &Arc<Self>,
        session: UploadSession,
    ) -> Result<SignedDownload> {
        let Some(bytes) = session
            .bytes
            .filter(|_| session.state == SessionState::Uploaded)
        else {
            return Err(Error::NotFound(
                "nothing was uploaded to this temp file yet".into(),
            ));
        };
        let ext = match bytes.mime.as_str() {
            "image/jpeg" => Some("jpg"),
            other => mime_guess::get_mime_extensions_str(other).and_then(|e| e.first().copied()),
        };
        let name = match ext {
            Some(ext) => format!("temp-file.{ext}"),
            None => "temp-file".into(),
        };
        self.open_signed(name, bytes.mime, bytes.sha).await
    }

    async fn open_signed(
        self: &Arc<Self>,
        name: String,
        mime: String,
        sha: crate::types::Sha256,
    ) -> Result<SignedDownload> {
        let svc = self.clone();
        blocking(move || {
            let handle = svc.blobs.open(&sha)?.ok_or_else(|| {
                Error::ContentMissing("the content is missing from storage".into())
            })?;
            Ok(SignedDownload {
                name,
                mime,
                sha,
                len: handle.len(),
                handle,
            })
        })
        .await
    }

    /// A signed download link to a file the caller may read, valid for `expires_in` (at most
    /// `sessions.link_max_ttl_secs`).
    pub async fn create_link(
        self: &Arc<Self>,
        p: &Principal,
        file: FileId,
        expires_in: Duration,
    ) -> Result<UploadSession> {
        let max = self.config.sessions.link_max_ttl_secs;
        if expires_in.as_secs() > max || expires_in.is_zero() {
            return Err(Error::BadRequest(format!(
                "expiresIn must be between 1 second and {max} seconds"
            )));
        }
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            let (f, _, horizon) = svc.readable_in(&Caller::User(p.clone()), file)?;
            if f.is_directory() {
                return Err(Error::BadRequest(
                    "a directory has no bytes to link to; link a file".into(),
                ));
            }
            let now = now_millis();
            let expires = now + expires_in.as_millis() as u64;
            // A grantee cannot hand out more than they hold: the link ends no later than the
            // grant that lets them read the file.
            if let Some(until) = horizon.filter(|&until| expires > until) {
                return Err(Error::BadRequest(format!(
                    "expiresIn reaches past the end of your access to this file (in {} s)",
                    until.saturating_sub(now) / 1000
                )));
            }
            let s = UploadSession {
                id: SessionId::new(),
                instance: f.instance,
                account: p.account.clone(),
                kind: SessionKind::DownloadLink,
                name: f.name.clone(),
                mime: Some(f.mime.clone()),
                size: Some(f.size),
                max_size: 0,
                directory: f.directory.clone(),
                metadata: None,
                state: SessionState::Open,
                created: now,
                expires,
                bytes: None,
                file: Some(f.id),
                error: None,
            };
            svc.create_session(&s)?;
            Ok(s)
        })
        .await
    }

    /// Revokes a link: its creator, or whoever manages the file, may.
    pub async fn delete_link(
        self: &Arc<Self>,
        p: &Principal,
        file: FileId,
        link: &str,
    ) -> Result<()> {
        let id = session_id(link)?;
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            let gone = || Error::NotFound("no such link".into());
            let s = svc.meta.session(id)?.ok_or_else(gone)?;
            if s.kind != SessionKind::DownloadLink || s.file != Some(file) {
                return Err(gone());
            }
            let instance = svc.meta.instance_by_domain(&p.instance)?.ok_or_else(gone)?;
            let owner = svc.meta.file(file)?.map(|f| f.created_by);
            let allowed = s.instance == instance.id
                && (access::manages(&p, &s.account)
                    || owner.is_some_and(|o| access::manages(&p, &o)));
            if !allowed {
                return Err(gone());
            }
            svc.meta.delete_session(id)?;
            Ok(())
        })
        .await
    }

    /// Opens the file of a verified link: while the link exists and the file is neither
    /// deleted nor trashed; no grant or instance switch is consulted.
    pub async fn open_link_download(
        self: &Arc<Self>,
        session: UploadSession,
    ) -> Result<SignedDownload> {
        let fid = session
            .file
            .ok_or_else(|| Error::NotFound("no such link".into()))?;
        let svc = self.clone();
        let f = blocking(move || {
            svc.meta
                .file(fid)?
                .filter(|f| {
                    f.trashed.is_none() && f.instance == session.instance && !f.is_directory()
                })
                .ok_or_else(Error::not_found)
        })
        .await?;
        self.open_signed(f.name, f.mime, f.sha256).await
    }

    /// Removes expired sessions and the bytes only they held; sessions with a PUT in flight
    /// wait for the next sweep. Returns how many were removed. Blocking.
    pub fn sweep_sessions(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let batch = self.meta.expired_sessions(now_millis(), SWEEP_BATCH)?;
            let full = batch.len() == SWEEP_BATCH;
            let mut progress = false;
            for s in batch {
                let claimed = self
                    .sessions
                    .claims
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&s.id);
                if claimed {
                    continue;
                }
                let sha = s.bytes.as_ref().map(|b| b.sha);
                let _guard = self.lock_blobs(sha.iter());
                if let Some((gone, Some(0))) = self.meta.delete_session(s.id)? {
                    if let Some(b) = gone.bytes {
                        self.blobs.remove(&b.sha)?;
                    }
                }
                removed += 1;
                progress = true;
            }
            if !full || !progress {
                return Ok(removed);
            }
        }
    }

    /// Sweeps expired sessions every `sessions.sweep_interval_secs` while the server runs.
    pub fn spawn_session_sweeper(self: &Arc<Self>) {
        let svc = self.clone();
        let every = Duration::from_secs(self.config.sessions.sweep_interval_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let s = svc.clone();
                match blocking(move || s.sweep_sessions()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "swept expired upload sessions"),
                    Err(e) => tracing::warn!(error = %e.chain(), "session sweep failed"),
                }
            }
        });
    }
}

/// The one PUT of a session, streaming into the ingest. Dropping it before
/// [`SessionPut::finish`] removes what was written and frees the session for another try.
pub struct SessionPut {
    svc: Arc<Service>,
    session: UploadSession,
    /// The request's normalised Content-Type.
    mime: String,
    writer: super::upload::PartWriter,
    head: Vec<u8>,
    received: u64,
    _claim: Claim,
}

impl SessionPut {
    /// Appends a chunk; fails as soon as the body passes the declared size (or the cap).
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.received += chunk.len() as u64;
        if let Some(declared) = self.session.size {
            if self.received > declared {
                return Err(Error::Session(
                    SessionFault::LengthMismatch,
                    format!("the body is longer than the declared {declared} bytes"),
                ));
            }
        }
        if self.received > self.session.max_size {
            return Err(Error::FileTooLarge(format!(
                "the body is larger than the limit of {} bytes",
                self.session.max_size
            )));
        }
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.writer.write(chunk).await
    }

    /// Ends the body: checks its length and type, makes the bytes durable and marks the
    /// session uploaded (single use from here on).
    pub async fn finish(self) -> Result<UploadSession> {
        let SessionPut {
            svc,
            session,
            mime,
            writer,
            head,
            received,
            _claim,
        } = self;
        if let Some(declared) = session.size {
            if received != declared {
                return Err(Error::Session(
                    SessionFault::LengthMismatch,
                    format!("the body has {received} bytes, not the declared {declared}"),
                ));
            }
        }
        let want = session.mime.clone().unwrap_or(mime);
        let sniffed = infer::get(&head).map(|k| normalize_mime(k.mime_type()));
        let binary_image = want.starts_with("image/") && !media::is_active_content(&want);
        match &sniffed {
            Some(t) if *t != want => {
                return Err(Error::Session(
                    SessionFault::ContentMismatch,
                    format!("the bytes are {t}, not the declared {want}"),
                ))
            }
            None if binary_image => {
                return Err(Error::Session(
                    SessionFault::ContentMismatch,
                    format!("the bytes are not {want}"),
                ))
            }
            _ => {}
        }
        let staged = writer.finish().await?;
        let stored = StoredBytes {
            sha: staged.sha(),
            size: staged.size(),
            mime: sniffed.unwrap_or(want),
            width: staged.dims().map(|d| d.0),
            height: staged.dims().map(|d| d.1),
        };
        let id = session.id;
        // A presigned upload may be confirmed for a full URL lifetime after its bytes arrive,
        // however long the PUT took; a temp file keeps its own expiry.
        let keep_until = match session.kind {
            SessionKind::PresignedPut => {
                now_millis() + svc.config.sessions.upload_url_ttl_secs * 1000
            }
            _ => 0,
        };
        let done = blocking(move || {
            let sha = stored.sha;
            let _guard = svc.lock_blobs([&sha]);
            staged.commit_blob()?;
            match svc.meta.complete_session(id, &stored, keep_until) {
                Ok(s) => Ok(s),
                Err(e) => {
                    // Nothing else counted on these bytes: they go (else gc would find them).
                    if svc.meta.blob_refs(&sha)? == 0 {
                        svc.blobs.remove(&sha)?;
                    }
                    Err(e)
                }
            }
        })
        .await?;
        drop(_claim);
        Ok(done)
    }
}

/// `type "/" subtype`, both RFC 9110 tokens, at most 255 bytes: anything else (spaces,
/// parameters, quotes) could dodge the checks that keep active content from being served inline.
fn is_media_type(m: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    m.len() <= 255 && m.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}
