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
use crate::types::{now_millis, FileId, Millis, SessionId};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes kept from the start of a session's upload to check its type.
const HEAD: usize = 8 * 1024;
/// Read buffer of an image decode: large reads, so a blob on S3 is fetched in a few ranged
/// GETs rather than one per 8 KiB.
const DECODE_READ_BUF: u64 = 4 * 1024 * 1024;
/// Link access decisions remembered (see [`Service::open_link_download`]) before a reset.
const LINK_DECISIONS: usize = 100_000;
/// Sessions removed per sweep batch.
const SWEEP_BATCH: usize = 256;
/// Largest `metadata` kept on a session (and its File), serialised.
const MAX_METADATA: usize = 16 * 1024;

/// In-memory state beside the persisted sessions: which sessions have a PUT in flight (so
/// two PUTs to one URL cannot both write), which temp files are being downloaded, the decode
/// lanes, and links' cached access decisions.
#[derive(Default)]
pub struct Runtime {
    pub(crate) claims: Mutex<HashSet<SessionId>>,
    pub(crate) leases: Arc<super::session_leases::Leases>,
    /// Multipart temp files' part PUTs and completes in flight.
    pub(crate) multipart: super::temp_multipart::Inflight,
    pub(crate) decode: super::decode_lanes::DecodeLanes,
    /// Link -> (the hot cache's generation when decided, allowed until): the maker may still
    /// read the file while no file, grant or instance change happened since.
    link_checks: Mutex<HashMap<SessionId, (u64, Millis)>>,
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

impl Service {
    /// Marks session `id` as having an upload in flight until the claim drops; `Conflict`
    /// (`busy`) when another one holds it.
    pub(crate) fn claim_session(self: &Arc<Self>, id: SessionId, busy: &str) -> Result<Claim> {
        let mut claims = self
            .sessions
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !claims.insert(id) {
            return Err(Error::Conflict(busy.into()));
        }
        Ok(Claim {
            svc: self.clone(),
            id,
        })
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
    /// Last change of the bytes (Last-Modified).
    pub modified: Millis,
    pub handle: Box<dyn BlobHandle>,
    /// Keeps the sweep off a temp file's bytes while they are sent.
    pub lease: Option<super::session_leases::Lease>,
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

/// Key of a link's `metadata` marking that an admin made it.
const LINK_BY_ADMIN: &str = "makerAdmin";

fn link_maker_admin(s: &UploadSession) -> bool {
    s.metadata
        .as_ref()
        .and_then(|m| m.get(LINK_BY_ADMIN))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

fn session_id(s: &str) -> Result<SessionId> {
    s.parse()
        .map_err(|_| Error::NotFound("no such upload session".into()))
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

/// Reads a blob through `Read + Seek` (for the image decoder); fails once `deadline` passed,
/// so a decode given up on stops reading.
pub(crate) struct BlobReader {
    handle: Box<dyn BlobHandle>,
    pos: u64,
    deadline: Instant,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the decode ran out of time",
            ));
        }
        let n = self
            .handle
            .read_at(self.pos, buf)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The reader an image is decoded from: buffered in reads of up to [`DECODE_READ_BUF`].
pub(crate) fn decode_reader(
    handle: Box<dyn BlobHandle>,
    deadline: Instant,
) -> std::io::BufReader<BlobReader> {
    let cap = handle.len().clamp(8 * 1024, DECODE_READ_BUF) as usize;
    let reader = BlobReader {
        handle,
        pos: 0,
        deadline,
    };
    std::io::BufReader::with_capacity(cap, reader)
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
    /// Makes an uploaded session's bytes the File `file` (and Image): in its directory (made
    /// if missing, under the tree lock so a concurrent move or trash of that directory is not
    /// missed), admitted by the quotas, with its `file.created` event staged for the same
    /// write. Every session flow (presigned, Hygraph assets, tus) ends here; returns the
    /// File's id. Blocks.
    pub(crate) fn confirm_session_file(
        &self,
        s: &UploadSession,
        file: &FileRecord,
        image: Option<&ImageRecord>,
        extras: &FileExtras,
    ) -> Result<FileId> {
        self.within_directory(s.instance, &s.account, &s.directory, &[], |_| {
            let _events = self.file_events(
                &s.account,
                crate::meta::webhooks::WebhookEvent::FileCreated,
                [file],
            )?;
            let _room = self.admit(
                s.instance,
                &s.account,
                super::quota::Incoming::file(file.size),
            )?;
            self.meta.confirm_session(s.id, file, image, extras)
        })
    }

    /// Persists a new session after the rate and open-count checks.
    ///
    /// The creation rate is counted in the metadata store (one small write, no flush): a restart
    /// does not hand every account a fresh minute's budget.
    pub(crate) fn create_session(&self, session: &UploadSession) -> Result<()> {
        let cfg = &self.config.sessions;
        self.meta.charge_session_creation(
            session.instance,
            &session.account,
            now_millis(),
            cfg.max_created_per_minute,
        )?;
        self.meta.create_session(session, cfg.max_open_per_account)
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
            Purpose::MultipartComplete => format!("/temp-files/{instance}/{id}/complete"),
            // Each part signs its number too (see `signed_part_path`).
            Purpose::MultipartPart => {
                return Err(Error::Internal("a part URL needs its part number".into()))
            }
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
        // Refused before any byte is sent when it cannot fit (checked again at confirm).
        self.precheck(p, Some(size)).await?;
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
        // Size unknown yet: refused now only when the quota is full.
        self.precheck(p, None).await?;
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
        let signed = cap.session.clone();
        self.open_signed_session(purpose, &signed, &[kind], cap)
            .await
    }

    /// As [`Service::open_capability`], for a signature over `signed` (the session id, or the
    /// session id and more: a part URL signs its part number too) and a session of any of
    /// `kinds`.
    pub async fn open_signed_session(
        self: &Arc<Self>,
        purpose: Purpose,
        signed: &str,
        kinds: &[SessionKind],
        cap: Capability,
    ) -> Result<(UploadSession, String)> {
        self.keys.urls.verify(
            purpose,
            &cap.instance,
            signed,
            cap.expires,
            &cap.sig,
            now_millis() / 1000,
        )?;
        let id = session_id(&cap.session)?;
        let svc = self.clone();
        let kinds = kinds.to_vec();
        blocking(move || {
            let gone = || Error::NotFound("no such upload session".into());
            let s = svc.meta.session(id)?.ok_or_else(gone)?;
            if !kinds.contains(&s.kind) || s.instance.to_string() != cap.instance {
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
        let claim = self.claim_session(session.id, "another upload to this URL is in progress")?;
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
        let described = self.describe_image(&s.account.0, &bytes).await?;
        let svc = self.clone();
        let fid = blocking(move || {
            let (width, height, blurhash) = match described {
                Some(d) => (Some(d.width), Some(d.height), Some(d.blurhash)),
                None => (bytes.width, bytes.height, None),
            };
            let (file, image) = session_file(&s, &bytes, width, height);
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
            svc.confirm_session_file(&s, &file, image.as_ref(), &extras)
        })
        .await?;
        self.foir_file(Caller::User(p.clone()), fid).await
    }

    /// Dimensions and blurhash of an image blob, decoded within bounds in one of the decode
    /// lanes (one per account at a time, see [`super::decode_lanes`]). `None` for what is not
    /// a decodable image, fails to decode, or is not described within
    /// `sessions.decode_timeout_secs` (waiting for a lane included): the File is then made
    /// without a placeholder (dimensions from the header), and the reason logged. A decode given
    /// up on keeps its lane until it stops (at its next read), so the lanes stay a real bound.
    async fn describe_image(
        self: &Arc<Self>,
        account: &str,
        bytes: &StoredBytes,
    ) -> Result<Option<media::blurhash::Described>> {
        if !media::blurhash::decodable(&bytes.mime) {
            return Ok(None);
        }
        let limit = Duration::from_secs(self.config.sessions.decode_timeout_secs);
        let deadline = Instant::now() + limit;
        let svc = self.clone();
        let (sha, mime) = (bytes.sha, bytes.mime.clone());
        let work = async move {
            let Some(lane) = svc.sessions.decode.acquire(account).await else {
                return Err(Error::Internal("the decode lanes are closed".into()));
            };
            let svc2 = svc.clone();
            blocking(move || {
                let _lane = lane;
                let Some(handle) = svc2.blobs.open(&sha)? else {
                    return Err(Error::ContentMissing(
                        "the uploaded bytes are missing from storage".into(),
                    ));
                };
                let reader = decode_reader(handle, deadline);
                match media::blurhash::describe(reader, &mime) {
                    Ok(d) => Ok(Some(d)),
                    Err(why) => {
                        tracing::warn!(blob = %sha, "no blurhash: {why}");
                        Ok(None)
                    }
                }
            })
            .await
        };
        match tokio::time::timeout(limit, work).await {
            Ok(done) => done,
            Err(_) => {
                metrics::counter!("depot_decode_timeouts_total").increment(1);
                tracing::warn!(blob = %sha, "no blurhash: not decoded within {limit:?}");
                Ok(None)
            }
        }
    }

    /// A session of `kind` that `p` created (or, as an admin, that their instance holds);
    /// anything else is not found.
    pub(crate) fn own_session(
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
            let file = svc.for_caller(&caller, file)?;
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
        // Leased before the session is read again: the sweep either skips it until the body
        // is sent, or removed it already and this answers as for any expired temp file.
        let gone = || Error::Session(SessionFault::Expired, "this temp file has expired".into());
        let lease = self.sessions.leases.lease(session.id).ok_or_else(gone)?;
        let svc = self.clone();
        let id = session.id;
        let still = blocking(move || Ok(svc.meta.session(id)?.is_some())).await?;
        if !still {
            return Err(gone());
        }
        let mut dl = self
            .open_signed(name, bytes.mime, bytes.sha, session.created)
            .await?;
        dl.lease = Some(lease);
        Ok(dl)
    }

    async fn open_signed(
        self: &Arc<Self>,
        name: String,
        mime: String,
        sha: crate::types::Sha256,
        modified: Millis,
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
                modified,
                handle,
                lease: None,
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
                // Whether the maker was an admin: each download re-checks the maker's access.
                metadata: p.admin.then(|| serde_json::json!({ LINK_BY_ADMIN: true })),
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

    /// Opens the file of a verified link (of an instance whose domain is `domain`): while the
    /// link exists, the file is neither deleted nor trashed, and the link's maker may still
    /// read it (a revoked grant ends the maker's links too). No grant of the downloader's or
    /// instance switch is consulted.
    ///
    /// The maker's access is decided through the same rule as a download, and the decision is
    /// remembered with the hot cache's generation: any file, grant or instance change moves it,
    /// so a repeat download pays one lookup until something changed.
    pub async fn open_link_download(
        self: &Arc<Self>,
        session: UploadSession,
        domain: String,
    ) -> Result<SignedDownload> {
        let fid = session
            .file
            .ok_or_else(|| Error::NotFound("no such link".into()))?;
        let svc = self.clone();
        let f = blocking(move || {
            let now = now_millis();
            let generation = svc.hot.generation();
            let cached = svc
                .sessions
                .link_checks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&session.id)
                .is_some_and(|&(g, until)| g == generation && now < until);
            let f = if cached {
                svc.meta.file(fid)?.filter(|f| f.trashed.is_none())
            } else {
                let maker = Caller::User(Principal {
                    account: session.account.clone(),
                    instance: domain,
                    admin: link_maker_admin(&session),
                });
                match svc.readable_in(&maker, fid) {
                    Ok((f, _, until)) => {
                        let mut checks = svc
                            .sessions
                            .link_checks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        if checks.len() >= LINK_DECISIONS {
                            checks.clear();
                        }
                        checks.insert(session.id, (generation, until.unwrap_or(Millis::MAX)));
                        Some(f)
                    }
                    Err(Error::NotFound(_) | Error::Unauthenticated(_)) => None,
                    Err(e) => return Err(e),
                }
            };
            f.filter(|f| f.instance == session.instance && !f.is_directory())
                .ok_or_else(Error::not_found)
        })
        .await?;
        self.open_signed(f.name, f.mime, f.sha256, f.updated).await
    }

    /// Makes a session's bytes durable (`commit` commits the blob named `sha` and says what it
    /// holds) and records them on the session (`Open` -> `Uploaded`), under the blob's lock. If
    /// the record fails, bytes nothing else counts on go (else gc would find them). Blocking.
    pub(crate) fn record_session_bytes(
        &self,
        id: SessionId,
        sha: crate::types::Sha256,
        keep_until: Millis,
        commit: impl FnOnce() -> Result<StoredBytes>,
    ) -> Result<UploadSession> {
        let guard = self.lock_blobs([&sha])?;
        let stored = commit()?;
        match self.meta.complete_session(id, &stored, keep_until) {
            Ok(s) => Ok(s),
            Err(e) => {
                // Nothing else counted on these bytes: they go (else gc would find them).
                if self.meta.blob_refs(&sha)? == 0 {
                    self.remove_blob(&guard, &sha)?;
                }
                Err(e)
            }
        }
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
                // A temp file being downloaded waits for a later sweep.
                let Some(_doom) = self.sessions.leases.doom(s.id) else {
                    continue;
                };
                self.note_abandoned(&s)?;
                self.remove_session(&s)?;
                removed += 1;
                progress = true;
            }
            if !full || !progress {
                return Ok(removed);
            }
        }
    }

    /// An upload that expired before it became a File failed: its `upload.failed` webhook
    /// event is written together with the session's error, before the session goes, so a sweep
    /// interrupted between the two does not send it twice (the error is set). Temp files and
    /// completed multipart temp files simply reached the end of their life; download links are
    /// not uploads; a remote ingest or asset that failed earlier has its event already.
    fn note_abandoned(&self, s: &UploadSession) -> Result<()> {
        let abandoned = match s.kind {
            SessionKind::PresignedPut | SessionKind::AssetPost | SessionKind::RemoteIngest => {
                s.state != SessionState::Confirmed
            }
            SessionKind::Tus | SessionKind::MultipartTempFile => s.state == SessionState::Open,
            SessionKind::TempFile | SessionKind::DownloadLink => false,
        };
        if !abandoned || s.error.is_some() {
            return Ok(());
        }
        let why = "the upload expired before it was completed";
        let _events = self.upload_failed_events(s.id, why)?;
        match self.meta.set_session_error(s.id, Some(why)) {
            // Removed meanwhile (a DELETE of a tus upload): nothing failed.
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Removes a session with what only it holds: a tus upload's parts first (a crash in
    /// between leaves a session reporting fewer bytes, never parts without a session), then
    /// the record, then its blob when an unconfirmed upload held the last reference (a
    /// confirmed session's bytes are its File's). Blocking.
    pub(crate) fn remove_session(&self, s: &UploadSession) -> Result<()> {
        // Parts go first: a crash after leaves a session without parts, which the next sweep
        // removes (never parts without a session).
        if matches!(s.kind, SessionKind::Tus | SessionKind::MultipartTempFile) {
            if let Some(parts) = self.blobs.parts() {
                parts.drop_session(&s.id.to_string())?;
            }
        }
        // Only an unconfirmed upload holds a reference of its own: a confirmed session's bytes
        // are its File's, and removing the record leaves them alone.
        let sha = (s.state == SessionState::Uploaded)
            .then(|| s.bytes.as_ref().map(|b| b.sha))
            .flatten();
        let guard = self.lock_blobs(sha.iter())?;
        if let Some((gone, Some(0))) = self.meta.delete_session(s.id)? {
            if let Some(b) = gone.bytes {
                self.remove_blob(&guard, &b.sha)?;
            }
        }
        Ok(())
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
        let stored = staged.stored(sniffed.unwrap_or(want));
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
            svc.record_session_bytes(id, stored.sha, keep_until, move || {
                staged.commit_blob()?;
                Ok(stored)
            })
        })
        .await?;
        drop(_claim);
        Ok(done)
    }
}

/// The File (and Image, for an image with dimensions) a session's bytes become: the session's
/// creator owns it, even when an admin confirms it.
pub(crate) fn session_file(
    s: &UploadSession,
    bytes: &StoredBytes,
    width: Option<u32>,
    height: Option<u32>,
) -> (FileRecord, Option<ImageRecord>) {
    let now = now_millis();
    let file = FileRecord {
        id: FileId::new(),
        instance: s.instance,
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
    (file, image)
}

/// `type "/" subtype`, both RFC 9110 tokens, at most 255 bytes: anything else (spaces,
/// parameters, quotes) could dodge the checks that keep active content from being served inline.
pub(crate) fn is_media_type(m: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    m.len() <= 255 && m.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A blob in memory that counts its reads (each would be a ranged GET on S3).
    struct Counted {
        data: Vec<u8>,
        reads: Arc<AtomicUsize>,
    }

    impl BlobHandle for Counted {
        fn len(&self) -> u64 {
            self.data.len() as u64
        }
        fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let from = (pos as usize).min(self.data.len());
            let n = buf.len().min(self.data.len() - from);
            buf[..n].copy_from_slice(&self.data[from..from + n]);
            Ok(n)
        }
        fn into_stream(self: Box<Self>, _: u64, _: u64) -> crate::store::ByteStream {
            Box::pin(futures_util::stream::empty())
        }
    }

    #[test]
    fn a_decode_reads_a_large_blob_in_a_few_large_reads() {
        let reads = Arc::new(AtomicUsize::new(0));
        let len = 10 * 1000 * 1000;
        let handle = Box::new(Counted {
            data: vec![7; len],
            reads: reads.clone(),
        });
        let deadline = Instant::now() + Duration::from_secs(3600);
        let mut r = decode_reader(handle, deadline);
        // As a decoder does: small reads (headers), a rewind, then the rest.
        let mut small = [0u8; 16];
        for _ in 0..100 {
            r.read_exact(&mut small).unwrap();
        }
        r.rewind().unwrap();
        let mut total = 0;
        loop {
            let n = r.fill_buf().unwrap().len();
            if n == 0 {
                break;
            }
            total += n;
            r.consume(n);
        }
        assert_eq!(total, len);
        // An 8 KiB buffer would take over 1,200 reads.
        assert!(reads.load(Ordering::Relaxed) <= 5, "{reads:?} reads");
    }

    #[test]
    fn a_decode_past_its_deadline_stops_reading() {
        let reads = Arc::new(AtomicUsize::new(0));
        let handle = Box::new(Counted {
            data: vec![7; 1000],
            reads: reads.clone(),
        });
        let mut r = decode_reader(handle, Instant::now());
        let err = r.fill_buf().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(reads.load(Ordering::Relaxed), 0);
    }
}
