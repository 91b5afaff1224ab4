//! tus 1.0 resumable uploads: creation (with upload, deferred length), PATCH at an offset,
//! termination, expiration, checksums and concatenation, over the same upload sessions and
//! ingest as the other flows.
//!
//! An upload is an [`UploadSession`] of kind [`SessionKind::Tus`]. Its bytes live in the blob
//! store's [`crate::store::PartStore`] under the session's id: each PATCH's bytes become the next
//! numbered part, fsynced when the PATCH ends (or when its body breaks off: what arrived is
//! kept, so a dropped connection resumes where the bytes stopped). The offset is what the parts
//! hold; nothing else is written per PATCH. Once every byte is there the parts are assembled
//! into one blob (hashed, deduplicated, fsynced), the session takes a reference on it
//! (`Uploaded`), and it becomes a File exactly as `POST /upload/**` makes one (`Confirmed`):
//! nothing partial is ever a File. A partial upload of the concatenation extension stops at
//! `Uploaded`; a final upload copies its partials' blobs, in order, into its own.
//!
//! PATCHes to one upload are serialised by the session claim (a second one in flight is 409).
//!
//! `Upload-Expires` is the creation deadline (`tus.expiry_secs` after `POST`) and PATCHes do
//! not extend it, as in tusd: the deadline a client was told never moves, and a client that
//! keeps trickling bytes cannot hold an upload's storage past it.

use super::sessions::{is_media_type, normalize_mime, Claim};
use super::upload::{Feed, PartSink};
use super::{blocking, names, Service};
use crate::auth::Principal;
use crate::error::{Error, Result, SessionFault};
use crate::media;
use crate::meta::{FileExtras, FileRecord, SessionKind, SessionState, StoredBytes, UploadSession};
use crate::store::{PartInfo, PartStore, StagedBlob};
use crate::types::{now_millis, SessionId};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The protocol version spoken (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions offered (`Tus-Extension`).
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation";
/// The checksum algorithms taken (`Tus-Checksum-Algorithm`).
pub const TUS_CHECKSUMS: &str = "sha1,sha256";

/// Shortest PATCH that fixes the part size of an upload's placed PATCHes (a small file needs
/// no placing: its one part is linked as it is).
const PLACED_MIN: u64 = 1024 * 1024;
/// Most PATCHes one upload may take (each is a part on disk, all opened at assembly).
pub const MAX_PARTS: usize = 10_000;
/// Largest `Upload-Metadata` header kept.
pub const MAX_UPLOAD_METADATA: usize = 16 * 1024;
/// Most partial uploads one final upload may join.
pub const MAX_CONCAT: usize = 1000;
/// Key of a tus session's own fields in its `metadata`.
const TUS_KEY: &str = "tus";
/// Read buffer when a final upload copies its partials.
const COPY_BUF: usize = 1 << 20;

/// How an upload takes part in the concatenation extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// A plain upload: a File when complete.
    Single,
    /// `Upload-Concat: partial`: kept as bytes for a final upload, never a File of its own.
    Partial,
    /// `Upload-Concat: final;...`: the concatenation of these partial uploads, in order.
    Final(Vec<SessionId>),
}

/// A checksum algorithm of the checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

/// An `Upload-Checksum` header: the algorithm and the digest the body must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses `<algorithm> <base64 digest>`: an algorithm other than sha1/sha256 or a digest
    /// that is not base64 of the algorithm's length is 400.
    pub fn parse(raw: &str) -> Result<Self> {
        let (alg, b64) = raw.trim().split_once(' ').ok_or_else(|| {
            Error::BadRequest("Upload-Checksum must be \"<algorithm> <base64 digest>\"".into())
        })?;
        let (algorithm, len) = match alg.to_ascii_lowercase().as_str() {
            "sha1" => (ChecksumAlgorithm::Sha1, 20),
            "sha256" => (ChecksumAlgorithm::Sha256, 32),
            other => {
                return Err(Error::BadRequest(format!(
                    "checksum algorithm {other:?} is not supported; use one of {TUS_CHECKSUMS}"
                )))
            }
        };
        let digest = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "the Upload-Checksum digest is not the base64 of a {alg} digest"
                ))
            })?;
        Ok(Self { algorithm, digest })
    }
}

/// A running checksum over a PATCH body.
enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(a: ChecksumAlgorithm) -> Self {
        match a {
            ChecksumAlgorithm::Sha1 => Hasher::Sha1(sha1::Digest::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(sha2::Digest::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => sha1::Digest::update(h, bytes),
            Hasher::Sha256(h) => sha2::Digest::update(h, bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => sha1::Digest::finalize(h).to_vec(),
            Hasher::Sha256(h) => sha2::Digest::finalize(h).to_vec(),
        }
    }
}

/// What a creation request (`POST /tus/`) declares.
#[derive(Debug, Clone)]
pub struct TusCreate {
    /// `Upload-Length`; `None` with `Upload-Defer-Length: 1` (and for a final upload).
    pub length: Option<u64>,
    /// The raw `Upload-Metadata` header.
    pub metadata: Option<String>,
    pub concat: Concat,
}

/// What a PATCH declares before its body.
#[derive(Debug, Clone)]
pub struct PatchHead {
    /// `Upload-Offset`.
    pub offset: u64,
    /// `Upload-Length`, for an upload whose length was deferred.
    pub length: Option<u64>,
    /// `Content-Length`, when the body declares one.
    pub content_length: Option<u64>,
    pub checksum: Option<Checksum>,
}

/// An upload as tus reports it.
#[derive(Debug, Clone)]
pub struct TusUpload {
    pub session: UploadSession,
    /// Bytes stored so far.
    pub offset: u64,
    pub concat: Concat,
    /// `Upload-Metadata` as the client sent it.
    pub metadata: Option<String>,
    /// The File it became, once complete (not for partial uploads).
    pub file: Option<FileRecord>,
}

impl TusUpload {
    /// `Upload-Length`; `None` while deferred.
    pub fn length(&self) -> Option<u64> {
        self.session.size
    }
}

/// The tus fields kept in a session's `metadata`.
struct TusFields {
    raw: Option<String>,
    concat: Concat,
    /// Upload-Metadata beyond filename/filetype/directory: the File's `metadata`.
    extra: Option<Value>,
}

impl TusFields {
    fn to_json(&self) -> Value {
        let concat = match &self.concat {
            Concat::Single => Value::Null,
            Concat::Partial => json!("partial"),
            Concat::Final(ids) => json!(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
        };
        json!({ TUS_KEY: { "metadata": self.raw, "concat": concat, "extra": self.extra } })
    }

    fn of(s: &UploadSession) -> Self {
        let t = s.metadata.as_ref().and_then(|m| m.get(TUS_KEY));
        let field = |k: &str| t.and_then(|t| t.get(k)).filter(|v| !v.is_null());
        let concat = match field("concat") {
            Some(Value::String(p)) if p == "partial" => Concat::Partial,
            Some(Value::Array(ids)) => Concat::Final(
                ids.iter()
                    .filter_map(|i| i.as_str()?.parse().ok())
                    .collect(),
            ),
            _ => Concat::Single,
        };
        TusFields {
            raw: field("metadata")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            concat,
            extra: field("extra").cloned(),
        }
    }
}

/// `Upload-Metadata` decoded: comma-separated `key base64value` pairs (the value may be
/// missing). Keys are unique and have no spaces or commas.
pub fn parse_upload_metadata(raw: &str) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = pair.split(' ').filter(|w| !w.is_empty());
        let key = words.next().unwrap_or_default();
        let value = words.next();
        if words.next().is_some() || key.is_empty() || !key.is_ascii() {
            return Err(Error::BadRequest(format!(
                "Upload-Metadata pair {pair:?} is not \"key base64value\""
            )));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(Error::BadRequest(format!(
                "Upload-Metadata names {key:?} twice"
            )));
        }
        let value = value
            .map(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| {
                        Error::BadRequest(format!("Upload-Metadata value of {key:?} is not base64"))
                    })
            })
            .transpose()?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// What the File takes from `Upload-Metadata`: name, declared type, directory, the rest.
struct Declared {
    name: Option<String>,
    mime: Option<String>,
    directory: String,
    extra: Option<Value>,
}

fn declared(raw: Option<&str>) -> Result<Declared> {
    let mut d = Declared {
        name: None,
        mime: None,
        directory: "/".into(),
        extra: None,
    };
    let Some(raw) = raw else { return Ok(d) };
    let mut extra = Map::new();
    for (key, value) in parse_upload_metadata(raw)? {
        let text = value
            .as_deref()
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| {
                    Error::BadRequest(format!("Upload-Metadata value of {key:?} is not UTF-8"))
                })
            })
            .transpose()?;
        match (key.as_str(), text) {
            ("filename", Some(n)) => d.name = Some(names::sanitize_filename(n)),
            ("filetype", Some(t)) if !t.trim().is_empty() => {
                let m = normalize_mime(t);
                if !is_media_type(&m) {
                    return Err(Error::BadRequest(format!(
                        "Upload-Metadata filetype {t:?} is not a media type"
                    )));
                }
                d.mime = Some(m);
            }
            ("directory", Some(dir)) if !dir.trim().is_empty() => {
                let dir = dir.trim();
                d.directory = if dir.starts_with('/') {
                    names::normalize_decoded_directory(dir)?
                } else {
                    names::normalize_decoded_directory(&format!("/{dir}"))?
                };
            }
            ("filename" | "filetype" | "directory", _) => {}
            (_, v) => {
                extra.insert(key, v.map_or(Value::Null, |v| Value::String(v.into())));
            }
        }
    }
    d.extra = (!extra.is_empty()).then_some(Value::Object(extra));
    Ok(d)
}

fn gone() -> Error {
    Error::NotFound("no such upload".into())
}

fn upload_id(raw: &str) -> Result<SessionId> {
    raw.parse().map_err(|_| gone())
}

fn offset_mismatch(asked: u64, have: u64) -> Error {
    Error::Session(
        SessionFault::OffsetMismatch,
        format!("Upload-Offset is {asked}, but the upload has {have} bytes"),
    )
}

/// 413 when a body of `declared` bytes would run past the `room` an upload has left.
fn too_long(declared: Option<u64>, room: u64) -> Result<()> {
    match declared.filter(|&n| n > room) {
        Some(n) => Err(Error::FileTooLarge(format!(
            "the body ({n} bytes) runs past the upload's end ({room} bytes left)"
        ))),
        None => Ok(()),
    }
}

fn expired() -> Error {
    Error::Session(SessionFault::Expired, "this upload has expired".into())
}

/// Whether an upload may still take bytes at `now`: a complete one never expires for reads.
fn past_expiry(s: &UploadSession, now: u64) -> bool {
    s.state == SessionState::Open && s.expired(now)
}

impl Service {
    fn tus_part_store(&self) -> Result<&dyn PartStore> {
        self.blobs.parts().ok_or_else(|| {
            Error::Unavailable(
                "this server's blob store does not take resumable uploads (tus needs one that \
                 stores parts)"
                    .into(),
            )
        })
    }

    /// `POST /tus/`: a new upload of `p`'s, within `tus.max_size`, the per-account session
    /// caps and creation rate. A final upload of partials is assembled at once; an upload of
    /// length 0 is complete at once.
    pub async fn tus_create(self: &Arc<Self>, p: &Principal, req: TusCreate) -> Result<TusUpload> {
        self.tus_part_store()?;
        let max = self.config.tus_max_size();
        if let Some(len) = req.length.filter(|&l| l > max) {
            return Err(Error::FileTooLarge(format!(
                "Upload-Length {len} is larger than Tus-Max-Size {max}"
            )));
        }
        if req
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > MAX_UPLOAD_METADATA)
        {
            return Err(Error::BadRequest(format!(
                "Upload-Metadata is longer than {MAX_UPLOAD_METADATA} bytes"
            )));
        }
        let d = declared(req.metadata.as_deref())?;
        // Upload-Length over what the quota leaves: refused at creation (checked again when
        // the upload completes). A partial upload is counted when its final one is made.
        if !matches!(req.concat, Concat::Partial) {
            self.precheck(p, req.length).await?;
        }
        let svc = self.clone();
        let p = p.clone();
        let ttl = self.config.tus.expiry_secs;
        let id = blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let mut length = req.length;
            if let Concat::Final(partials) = &req.concat {
                if partials.is_empty() || partials.len() > MAX_CONCAT {
                    return Err(Error::BadRequest(format!(
                        "a final upload joins 1 to {MAX_CONCAT} partial uploads"
                    )));
                }
                let mut sum = 0u64;
                for pid in partials {
                    let part = svc.own_session(&p, *pid, SessionKind::Tus).map_err(|_| {
                        Error::BadRequest(format!("partial upload {pid} does not exist"))
                    })?;
                    if TusFields::of(&part).concat != Concat::Partial {
                        return Err(Error::BadRequest(format!(
                            "upload {pid} is not a partial upload"
                        )));
                    }
                    let size = part
                        .bytes
                        .as_ref()
                        .filter(|_| part.state == SessionState::Uploaded)
                        .map(|b| b.size)
                        .ok_or_else(|| {
                            Error::BadRequest(format!("partial upload {pid} is not complete"))
                        })?;
                    sum = sum.saturating_add(size);
                }
                if sum > max {
                    return Err(Error::FileTooLarge(format!(
                        "the concatenation has {sum} bytes, more than Tus-Max-Size {max}"
                    )));
                }
                length = Some(sum);
            }
            let now = now_millis();
            let id = SessionId::new();
            let fields = TusFields {
                raw: req.metadata,
                concat: req.concat,
                extra: d.extra,
            };
            let s = UploadSession {
                id,
                instance: instance.id,
                account: p.account.clone(),
                kind: SessionKind::Tus,
                name: d.name.unwrap_or_else(|| id.to_string()),
                mime: d.mime,
                size: length,
                max_size: max,
                directory: d.directory,
                metadata: Some(fields.to_json()),
                state: SessionState::Open,
                created: now,
                expires: now + ttl * 1000,
                bytes: None,
                file: None,
                error: None,
            };
            svc.create_session(&s)?;
            Ok(id)
        })
        .await?;
        let claim = self.claim_session(id, "this upload is busy")?;
        self.tus_settle(id, claim).await
    }

    /// `HEAD`/`GET /tus/<id>`: the upload of `p`'s (or, for an admin, of their instance), with
    /// its offset. One whose bytes are all there but that is no File yet (a restart cut it
    /// short) is made one now, unless a PATCH holds it.
    pub async fn tus_status(self: &Arc<Self>, p: &Principal, id: &str) -> Result<TusUpload> {
        let id = upload_id(id)?;
        let svc = self.clone();
        let principal = p.clone();
        let s = blocking(move || svc.own_session(&principal, id, SessionKind::Tus)).await?;
        if past_expiry(&s, now_millis()) {
            return Err(expired());
        }
        let svc = self.clone();
        let view = blocking(move || svc.tus_view(id)).await?;
        let unsettled = match view.session.state {
            SessionState::Open => {
                matches!(view.concat, Concat::Final(_)) || view.length() == Some(view.offset)
            }
            SessionState::Uploaded => view.concat != Concat::Partial,
            SessionState::Confirmed => false,
        };
        if !unsettled {
            // Nothing to move on: a HEAD never holds the upload against a PATCH.
            return Ok(view);
        }
        match self.claim_session(id, "busy") {
            Ok(claim) => self.tus_settle(id, claim).await,
            // A PATCH is running: it settles the upload itself.
            Err(_) => Ok(view),
        }
    }

    /// Starts a PATCH: checks the offset (409), the expiry (410), a deferred length, the
    /// declared body length against the upload's (413), and claims the upload (a second PATCH
    /// in flight is 409), all before a byte of the body is read.
    pub async fn tus_patch(
        self: &Arc<Self>,
        p: &Principal,
        id: &str,
        head: PatchHead,
    ) -> Result<TusPatch> {
        self.tus_part_store()?;
        let id = upload_id(id)?;
        let svc = self.clone();
        let principal = p.clone();
        let view = blocking(move || {
            svc.own_session(&principal, id, SessionKind::Tus)?;
            svc.tus_view(id)
        })
        .await?;
        if let Concat::Final(_) = view.concat {
            return Err(Error::Forbidden(
                "a final upload of a concatenation takes no PATCH".into(),
            ));
        }
        // Checked again under the claim; checked here too so that a PATCH at a wrong offset
        // never holds the upload against the right one.
        if head.offset != view.offset {
            return Err(offset_mismatch(head.offset, view.offset));
        }
        let max = self.config.tus_max_size();
        let end = head.length.or(view.length()).unwrap_or(max);
        too_long(head.content_length, end.saturating_sub(view.offset))?;
        let claim = self.claim_session(id, "another PATCH to this upload is in progress")?;
        let svc = self.clone();
        let (s, offset, next) = blocking(move || {
            let mut s = svc.meta.session(id)?.ok_or_else(gone)?;
            if past_expiry(&s, now_millis()) {
                return Err(expired());
            }
            let parts = match s.state {
                SessionState::Open => svc.tus_part_store()?.list_parts(&id.to_string())?,
                _ => vec![],
            };
            let offset = match (&s.state, &s.bytes) {
                (SessionState::Open, _) => parts.iter().map(|p| p.size).sum(),
                (_, Some(b)) => b.size,
                (_, None) => return Err(Error::Internal("complete upload without bytes".into())),
            };
            if head.offset != offset {
                return Err(offset_mismatch(head.offset, offset));
            }
            if let Some(len) = head.length {
                if let Some(have) = s.size.filter(|&have| have != len) {
                    return Err(Error::BadRequest(format!(
                        "Upload-Length {len} differs from the upload's length {have}"
                    )));
                }
                if len < offset {
                    return Err(Error::BadRequest(format!(
                        "Upload-Length {len} is less than the {offset} bytes uploaded"
                    )));
                }
                if len > max {
                    return Err(Error::FileTooLarge(format!(
                        "Upload-Length {len} is larger than Tus-Max-Size {max}"
                    )));
                }
                if s.size.is_none() {
                    s = svc.meta.set_session_size(id, len)?;
                }
            }
            too_long(
                head.content_length,
                s.size.unwrap_or(max).saturating_sub(offset),
            )?;
            if parts.len() >= MAX_PARTS && head.content_length != Some(0) {
                return Err(Error::BadRequest(format!(
                    "this upload took {MAX_PARTS} PATCHes already; send larger chunks"
                )));
            }
            let next = parts.last().map_or(1, |p: &PartInfo| p.number + 1);
            Ok((s, offset, next))
        })
        .await?;
        let limit = s.size.unwrap_or(max);
        Ok(TusPatch {
            svc: self.clone(),
            id,
            number: next,
            room: limit.saturating_sub(offset),
            received: 0,
            pipe: None,
            // PATCHes of one chunk size (tus-js-client's, Uppy's, `depot upload
            // --chunk-size`) are written at their offsets in one staging file, so completing
            // the upload hashes it once instead of copying every chunk; a PATCH cut short
            // keeps its bytes where they are, and what follows falls back to a part of its own.
            place: match (head.content_length, s.size) {
                (Some(len), Some(total)) if len > 0 => Some(crate::store::PartPlace {
                    len,
                    total,
                    min_len: PLACED_MIN,
                }),
                _ => None,
            },
            hasher: head.checksum.as_ref().map(|c| Hasher::new(c.algorithm)),
            checksum: head.checksum,
            claim: Some(claim),
        })
    }

    /// `DELETE /tus/<id>`: removes the upload and its stored parts (the File a complete upload
    /// became stays). A PATCH in flight makes it 409.
    pub async fn tus_terminate(self: &Arc<Self>, p: &Principal, id: &str) -> Result<()> {
        let id = upload_id(id)?;
        let svc = self.clone();
        let principal = p.clone();
        blocking(move || svc.own_session(&principal, id, SessionKind::Tus)).await?;
        let claim = self.claim_session(id, "a PATCH to this upload is in progress")?;
        let svc = self.clone();
        blocking(move || {
            let _claim = claim;
            // Read again under the claim: a PATCH may have moved it on meanwhile.
            match svc.meta.session(id)? {
                Some(s) => svc.remove_session(&s),
                None => Err(gone()),
            }
        })
        .await
    }

    /// The upload as stored, without changing it. Blocking.
    fn tus_view(&self, id: SessionId) -> Result<TusUpload> {
        let s = self.meta.session(id)?.ok_or_else(gone)?;
        let fields = TusFields::of(&s);
        let offset = match (&s.state, &s.bytes) {
            (SessionState::Open, _) => self
                .tus_part_store()?
                .list_parts(&id.to_string())?
                .iter()
                .map(|p| p.size)
                .sum(),
            (_, Some(b)) => b.size,
            (_, None) => 0,
        };
        let file = match (s.state, s.file) {
            (SessionState::Confirmed, Some(f)) => self.meta.file(f)?,
            _ => None,
        };
        Ok(TusUpload {
            offset,
            concat: fields.concat,
            metadata: fields.raw,
            file,
            session: s,
        })
    }

    /// Moves an upload on as far as its bytes allow, holding its claim: all bytes stored ->
    /// assembled, committed, `Uploaded`; `Uploaded` (not partial) -> a File. Each step is one
    /// durable change, so a crash between them is finished by the next HEAD or PATCH.
    async fn tus_settle(self: &Arc<Self>, id: SessionId, claim: Claim) -> Result<TusUpload> {
        let svc = self.clone();
        blocking(move || {
            let _claim = claim;
            let view = svc.tus_view(id)?;
            let mut s = view.session;
            // A final upload's bytes are its partials': it is complete from its creation.
            let complete = matches!(view.concat, Concat::Final(_)) || s.size == Some(view.offset);
            if s.state == SessionState::Open && complete {
                let staged = match &view.concat {
                    Concat::Final(partials) => svc.concatenate(partials)?,
                    _ => {
                        let parts = svc.tus_part_store()?;
                        let numbers: Vec<u32> = parts
                            .list_parts(&id.to_string())?
                            .iter()
                            .map(|p| p.number)
                            .collect();
                        parts.assemble(&id.to_string(), &numbers)?
                    }
                };
                s = svc.tus_commit_bytes(&s, staged)?;
                // The bytes are the session's now; a failure here leaves parts the sweep or a
                // DELETE removes with the session.
                if let Err(e) = svc.tus_part_store()?.drop_session(&id.to_string()) {
                    tracing::warn!(upload = %id, error = %e.chain(), "tus parts not removed");
                }
            }
            if s.state == SessionState::Uploaded && view.concat != Concat::Partial {
                svc.tus_make_file(&s)?;
            }
            svc.tus_view(id)
        })
        .await
    }

    /// Copies the partial uploads' blobs, in order, into one staged blob. Blocking.
    fn concatenate(&self, partials: &[SessionId]) -> Result<Box<dyn StagedBlob>> {
        let mut writer = self.blobs.writer()?;
        for pid in partials {
            let sha = self
                .meta
                .session(*pid)?
                .and_then(|s| s.bytes)
                .map(|b| b.sha)
                .ok_or_else(|| Error::BadRequest(format!("partial upload {pid} is gone")))?;
            let mut handle = self.blobs.open(&sha)?.ok_or_else(|| {
                Error::ContentMissing(format!("the bytes of partial upload {pid} are missing"))
            })?;
            let mut pos = 0u64;
            loop {
                let mut buf = vec![0u8; COPY_BUF];
                let n = handle.read_at(pos, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                pos += n as u64;
                crate::store::write_bytes(writer.as_mut(), Bytes::from(buf))?;
            }
        }
        writer.finish()
    }

    /// Makes assembled bytes the session's: committed under their hash (deduplicated), typed
    /// from their first bytes, and the session `Uploaded` with a reference on them. Blocking.
    fn tus_commit_bytes(
        &self,
        s: &UploadSession,
        staged: Box<dyn StagedBlob>,
    ) -> Result<UploadSession> {
        let (sha, size) = (staged.sha(), staged.size());
        if s.size != Some(size) {
            return Err(Error::Internal(format!(
                "assembled {size} bytes for an upload of {:?}",
                s.size
            )));
        }
        // Under the blob's lock: committed, typed, then referenced by the session (or removed
        // again when nothing else references it).
        self.record_session_bytes(s.id, sha, 0, move || {
            staged.commit()?;
            let mut head = vec![0u8; media::PROBE_LEN.min(size as usize)];
            let mut got = 0;
            if let Some(mut h) = self.blobs.open(&sha)? {
                while got < head.len() {
                    let n = h.read_at(got as u64, &mut head[got..])?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
            head.truncate(got);
            // As POST /upload/** types a file (its bytes, else its name), with the declared
            // filetype before the name's guess.
            let mime = match (infer::get(&head), &s.mime) {
                (Some(k), _) => k.mime_type().to_string(),
                (None, Some(declared)) => declared.clone(),
                (None, None) => media::sniff(&head, &s.name),
            };
            let dims = media::is_image(&mime)
                .then(|| media::dimensions(&head))
                .flatten();
            let stored = StoredBytes {
                sha,
                size,
                mime,
                width: dims.map(|d| d.0),
                height: dims.map(|d| d.1),
                parts: None,
            };
            Ok(stored)
        })
    }

    /// `Uploaded` -> a File (Hypi's record, in its directory, made if missing). Blocking.
    fn tus_make_file(&self, s: &UploadSession) -> Result<()> {
        let bytes = s
            .bytes
            .clone()
            .ok_or_else(|| Error::Internal("uploaded session without bytes".into()))?;
        let (file, image) = super::sessions::session_file(s, &bytes, bytes.width, bytes.height);
        let extras = FileExtras {
            blurhash: None,
            alt: None,
            metadata: TusFields::of(s).extra,
        };
        self.confirm_session_file(s, &file, image.as_ref(), &extras)?;
        Ok(())
    }
}

/// One PATCH's body on its way into the upload's next part. Its bytes are kept when the body
/// breaks off ([`TusPatch::keep`], and on drop), except when an `Upload-Checksum` cannot be
/// verified; the upload stays claimed until they are stored.
pub struct TusPatch {
    svc: Arc<Service>,
    id: SessionId,
    number: u32,
    /// Bytes the upload can still take.
    room: u64,
    received: u64,
    pipe: Option<Feed<PartSink>>,
    /// Where the body goes in the whole, when its length and the upload's are declared: the
    /// store may write it at its offset (see [`crate::store::PartPlace`]).
    place: Option<crate::store::PartPlace>,
    checksum: Option<Checksum>,
    hasher: Option<Hasher>,
    claim: Option<Claim>,
}

impl TusPatch {
    /// Appends a chunk of the body; past the upload's length (or `Tus-Max-Size` while it is
    /// deferred) is 413 and the PATCH's bytes are dropped.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.received += chunk.len() as u64;
        if self.received > self.room {
            if let Some(p) = self.pipe.as_mut() {
                p.abort();
            }
            self.pipe = None;
            return Err(Error::FileTooLarge(format!(
                "the body runs past the upload's end ({} bytes were left)",
                self.room
            )));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        if self.pipe.is_none() {
            let blobs = self.svc.blobs.clone();
            let (session, number, place) = (self.id.to_string(), self.number, self.place);
            self.pipe = Some(Feed::new(move || {
                let parts = blobs
                    .parts()
                    .ok_or_else(|| Error::Unavailable("the blob store takes no parts".into()))?;
                parts
                    .writer_at(&session, number, place, crate::store::PartDigests::Sha256)
                    .map(PartSink)
            }));
        }
        match self.pipe.as_mut() {
            Some(p) => p.write(chunk).await,
            None => Err(Error::Internal("PATCH without a part".into())),
        }
    }

    /// The body ended: checks the checksum (460, nothing kept), stores the bytes durably, and
    /// settles the upload (a File when this was its last byte).
    pub async fn finish(mut self) -> Result<TusUpload> {
        let pipe = self.pipe.take();
        if let (Some(hasher), Some(want)) = (self.hasher.take(), &self.checksum) {
            if hasher.finish() != want.digest {
                drop(pipe);
                return Err(Error::Session(
                    SessionFault::ChecksumMismatch,
                    "the body does not match its Upload-Checksum; nothing was stored".into(),
                ));
            }
        }
        if let Some(mut pipe) = pipe {
            pipe.finish().await?;
        }
        let claim = self
            .claim
            .take()
            .ok_or_else(|| Error::Internal("PATCH without its claim".into()))?;
        self.svc.tus_settle(self.id, claim).await
    }

    /// The body broke off: stores what arrived (unless a checksum was to be verified), so the
    /// upload resumes from there.
    pub async fn keep(mut self) {
        if self.checksum.is_some() {
            return;
        }
        if let Some(mut pipe) = self.pipe.take() {
            if let Err(e) = pipe.finish().await {
                tracing::warn!(upload = %self.id, error = %e.chain(), "tus bytes not kept");
            }
        }
    }
}

impl Drop for TusPatch {
    /// A PATCH dropped mid-body (its connection went and the handler with it): what arrived
    /// is stored in the background, the upload claimed until it is.
    fn drop(&mut self) {
        let Some(mut pipe) = self.pipe.take() else {
            return;
        };
        if self.checksum.is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let claim = self.claim.take();
        let id = self.id;
        rt.spawn(async move {
            let _claim = claim;
            if let Err(e) = pipe.finish().await {
                tracing::warn!(upload = %id, error = %e.chain(), "tus bytes not kept");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_metadata_pairs() {
        let m =
            parse_upload_metadata("filename d29ybGRfZG9taW5hdGlvbi5wZGY=,is_confidential").unwrap();
        assert_eq!(m[0].0, "filename");
        assert_eq!(m[0].1.as_deref(), Some(&b"world_domination.pdf"[..]));
        assert_eq!(m[1], ("is_confidential".to_string(), None));
        assert!(parse_upload_metadata("a !!!").is_err());
        assert!(parse_upload_metadata("a YQ==,a YQ==").is_err());
        assert!(parse_upload_metadata("a YQ== b").is_err());
        assert!(parse_upload_metadata("").unwrap().is_empty());
    }

    #[test]
    fn checksums_parse() {
        let c = Checksum::parse("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(c.algorithm, ChecksumAlgorithm::Sha1);
        assert_eq!(c.digest.len(), 20);
        assert!(Checksum::parse("md5 1B2M2Y8AsgTpgAmY7PhCfg==").is_err());
        assert!(Checksum::parse("sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").is_err());
        assert!(Checksum::parse("sha1").is_err());
    }

    #[test]
    fn declared_fields_map_onto_the_file() {
        let raw =
            "filename YS9iL3Bob3RvLnBuZw==,filetype aW1hZ2UvcG5n,directory L3BpY3MvMjAyNA==,k dg==";
        let d = declared(Some(raw)).unwrap();
        assert_eq!(d.name.as_deref(), Some("photo.png"));
        assert_eq!(d.mime.as_deref(), Some("image/png"));
        assert_eq!(d.directory, "/pics/2024");
        assert_eq!(d.extra, Some(json!({"k": "v"})));
        assert!(declared(Some("directory Ly4uLw==")).is_err());
    }
}
