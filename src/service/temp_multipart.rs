//! Amplience's multipart temp files (`createTempFileMultipartUploadUrl`), with S3's semantics:
//! one signed URL per part number, parts PUT in any order and in parallel (each answered with
//! the MD5 of its bytes as its ETag; a re-sent part replaces the earlier one), then one complete
//! request listing the parts (ETag or `ChecksumSHA256` each), which assembles them in the part
//! store into one content-addressed blob. From then on the session is an uploaded temp file: the
//! `downloadUrl` serves it until the session expires, and the sweep removes it.
//!
//! Parts live in the blob store's [`crate::store::PartStore`] under the session's id; the session
//! record (sled or PostgreSQL) holds the declared size and the part layout (`metadata`), so a
//! restart between parts and complete loses nothing. The sweep drops the parts of an expired
//! session (on its timer and in `depot gc`).

use super::upload::{Feed, PartSink};
use super::{blocking, Service};
use crate::auth::sign::Purpose;
use crate::auth::Principal;
use crate::error::{Error, Result, S3Fault};
use crate::meta::{CompletedParts, SessionKind, SessionState, StoredBytes, UploadSession};
use crate::store::{PartInfo, PartStore};
use crate::types::{now_millis, SessionId};
use base64::Engine;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Smallest part but the last (S3's and Amplience's `minPartSize`: 5 MiB).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Most parts of one upload (S3's limit); larger files get larger parts.
pub const MAX_PARTS: u64 = 10_000;
/// Batches (of up to 256 KiB) queued per part PUT: clients send parts of one file in parallel
/// (8 at once in the bench), so each queues a quarter of a single upload's 16, keeping a file's
/// buffers where one upload's are (RSS stays flat however many parts run).
const PART_QUEUE_DEPTH: usize = 4;
/// Bytes read from the start of an assembled file to tell its type.
const SNIFF: usize = 8 * 1024;

/// How a file of a declared size is cut into parts: what `uploadPartUrls` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    /// Number of part URLs handed out (part numbers `1..=count`).
    pub count: u32,
    /// The part size the URLs are counted for (`split -b` with it uses every URL).
    pub part_size: u64,
    /// Largest part accepted.
    pub max_part_size: u64,
}

impl PartLayout {
    /// The layout of a file of `filesize` bytes: parts of [`MIN_PART_SIZE`], or larger when
    /// that would take more than [`MAX_PARTS`] parts.
    pub fn for_size(filesize: u64, max_part_size: u64) -> Self {
        let part_size = MIN_PART_SIZE.max(filesize.div_ceil(MAX_PARTS));
        let count = filesize.div_ceil(part_size).max(1);
        PartLayout {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            part_size,
            max_part_size,
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "partCount": self.count,
            "partSize": self.part_size,
            "maxPartSize": self.max_part_size,
        })
    }

    /// The layout a multipart session was created with.
    pub fn of(s: &UploadSession) -> Result<Self> {
        let m = s.metadata.as_ref();
        let field = |k: &str| m.and_then(|m| m.get(k)).and_then(|v| v.as_u64());
        match (field("partCount"), field("partSize"), field("maxPartSize")) {
            (Some(count), Some(part_size), Some(max_part_size)) => Ok(PartLayout {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                part_size,
                max_part_size,
            }),
            _ => Err(Error::Internal(
                "a multipart session without its part layout".into(),
            )),
        }
    }
}

/// One `<Part>` of a complete request, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    /// The ETag as the client sent it (quoted or not).
    pub etag: Option<String>,
    /// `ChecksumSHA256`: base64 (S3's form) or hex of the part's SHA-256.
    pub checksum_sha256: Option<String>,
}

/// The answer to a complete request (the same for a repeated one).
#[derive(Debug, Clone)]
pub struct Completed {
    pub session: UploadSession,
    /// S3's multipart ETag, quoted: `"<md5 of the parts' md5s>-<count>"`.
    pub etag: String,
    /// S3's composite checksum: `<base64 sha256 of the parts' sha256s>-<count>`.
    pub checksum_sha256: String,
}

/// What `createTempFileMultipartUploadUrl` answers, with absolute URLs.
#[derive(Debug, Clone)]
pub struct MultipartUrls {
    pub upload_part_urls: Vec<String>,
    pub complete_url: String,
    pub download_url: String,
    pub min_part_size: u64,
    pub max_part_size: u64,
}

/// Which multipart sessions have part PUTs or a complete in flight: a complete waits for no
/// part (it is refused while one is being written), and no part starts during a complete.
#[derive(Default)]
pub struct Inflight {
    inner: Mutex<HashMap<SessionId, Busy>>,
}

#[derive(Default)]
struct Busy {
    parts: u32,
    completing: bool,
}

/// A part PUT or a complete registered in [`Inflight`]; deregistered on drop.
pub struct InflightGuard {
    svc: Arc<Service>,
    id: SessionId,
    part: bool,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self
            .svc
            .sessions
            .multipart
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get_mut(&self.id) {
            if self.part {
                b.parts = b.parts.saturating_sub(1);
            } else {
                b.completing = false;
            }
            if b.parts == 0 && !b.completing {
                map.remove(&self.id);
            }
        }
    }
}

impl Service {
    fn enter_multipart(self: &Arc<Self>, id: SessionId, part: bool) -> Result<InflightGuard> {
        let mut map = self
            .sessions
            .multipart
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let b = map.entry(id).or_default();
        if b.completing {
            return Err(Error::Conflict(
                "this upload is being completed; no part can be sent now".into(),
            ));
        }
        if part {
            b.parts += 1;
        } else if b.parts > 0 {
            return Err(Error::Conflict(format!(
                "{} part upload(s) of this upload are in progress; complete once they end",
                b.parts
            )));
        } else {
            b.completing = true;
        }
        Ok(InflightGuard {
            svc: self.clone(),
            id,
            part,
        })
    }

    fn part_store(&self) -> Result<&dyn PartStore> {
        self.blobs.parts().ok_or_else(|| {
            Error::BadRequest("multipart uploads need a blob store with part storage".into())
        })
    }

    /// Amplience's `createTempFileMultipartUploadUrl(input: {filesize})`: a session for a file
    /// of `filesize` bytes (at most `sessions.multipart_max_size`) sent in parts, served back
    /// until `sessions.temp_file_ttl_secs` (one hour by default), its URLs with it.
    pub async fn create_multipart_temp_file(
        self: &Arc<Self>,
        p: &Principal,
        filesize: i64,
    ) -> Result<UploadSession> {
        let cfg = self.config.sessions.clone();
        let size = u64::try_from(filesize)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::BadRequest("filesize must be at least 1 byte".into()))?;
        if size > cfg.multipart_max_size {
            return Err(Error::FileTooLarge(format!(
                "{size} bytes is larger than the multipart limit of {} bytes",
                cfg.multipart_max_size
            )));
        }
        self.part_store()?;
        self.precheck(p, Some(size)).await?;
        let layout = PartLayout::for_size(size, cfg.multipart_max_part_size);
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let now = now_millis();
            let s = UploadSession {
                id: SessionId::new(),
                instance: instance.id,
                account: p.account.clone(),
                kind: SessionKind::MultipartTempFile,
                name: "temp-file".into(),
                mime: None,
                size: Some(size),
                max_size: size,
                directory: "/".into(),
                metadata: Some(layout.to_json()),
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

    /// The URLs of multipart session `s`, under `base` (scheme and host).
    pub fn multipart_urls(&self, s: &UploadSession, base: &str) -> Result<MultipartUrls> {
        let layout = PartLayout::of(s)?;
        let upload_part_urls = (1..=layout.count)
            .map(|n| Ok(format!("{base}{}", self.signed_part_path(s, n)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MultipartUrls {
            upload_part_urls,
            complete_url: format!("{base}{}", self.signed_path(Purpose::MultipartComplete, s)?),
            download_url: format!("{base}{}", self.signed_path(Purpose::TempGet, s)?),
            min_part_size: MIN_PART_SIZE,
            max_part_size: layout.max_part_size,
        })
    }

    /// The id a part's URL signs: the session and the part number, so a part URL uploads that
    /// part only.
    pub fn part_signed_id(session: &str, number: u32) -> String {
        format!("{session}.{number}")
    }

    /// The signed path of part `number` of a multipart session.
    pub fn signed_part_path(&self, s: &UploadSession, number: u32) -> Result<String> {
        let (instance, id) = (s.instance.to_string(), s.id.to_string());
        let query = self.keys.urls.query(
            Purpose::MultipartPart,
            &instance,
            &Self::part_signed_id(&id, number),
            s.expires / 1000,
        )?;
        Ok(format!(
            "/temp-files/{instance}/{id}/parts/{number}?{query}"
        ))
    }

    /// Starts a part PUT on a verified part URL: the session must still be open (not yet
    /// completed, not being swept), the number one of its parts, and a declared
    /// Content-Length within the part's bound, before a byte of the body is read.
    pub async fn begin_multipart_part(
        self: &Arc<Self>,
        session: UploadSession,
        number: u32,
        content_length: Option<u64>,
    ) -> Result<PartPut> {
        let layout = PartLayout::of(&session)?;
        if number == 0 || number > layout.count {
            return Err(Error::S3(
                S3Fault::InvalidArgument,
                format!(
                    "part number must be between 1 and {} for this upload",
                    layout.count
                ),
            ));
        }
        let id = session.id;
        let no_upload = || {
            Error::S3(
                S3Fault::NoSuchUpload,
                "the upload does not exist, has expired or was completed".into(),
            )
        };
        // Leased before the session is read again: the sweep either skips it until the part
        // is stored, or removed it already and this part is refused (never an orphan part).
        let lease = self.sessions.leases.lease(id).ok_or_else(no_upload)?;
        let inflight = self.enter_multipart(id, true)?;
        let svc = self.clone();
        let (now_open, others) = blocking(move || {
            let open = svc
                .meta
                .session(id)?
                .is_some_and(|s| s.state == SessionState::Open);
            // Bytes the other part numbers hold already: a part may only fill what is left of
            // the declared size, so no caller stores more than it declared.
            let others: u64 = svc
                .part_store()?
                .list_parts(&id.to_string())?
                .iter()
                .filter(|p| p.number != number)
                .map(|p| p.size)
                .sum();
            Ok((open, others))
        })
        .await?;
        if !now_open {
            return Err(no_upload());
        }
        let declared = session.size.unwrap_or(session.max_size);
        let cap = layout.max_part_size.min(declared.saturating_sub(others));
        if let Some(len) = content_length.filter(|&len| len > cap) {
            return Err(part_too_large(len, cap, layout.max_part_size));
        }
        // A declared length lets the store write the part straight to its place in the whole
        // (a chunked body is stored as a part of its own and concatenated at the complete).
        let place = content_length.map(|len| crate::store::PartPlace {
            len,
            total: declared,
            min_len: MIN_PART_SIZE,
        });
        let blobs = self.blobs.clone();
        let name = id.to_string();
        let feed = Feed::with_depth(
            move || {
                let parts = blobs
                    .parts()
                    .ok_or_else(|| Error::Internal("the part store went away".into()))?;
                parts
                    .writer_at(&name, number, place, crate::store::PartDigests::WithMd5)
                    .map(PartSink)
            },
            PART_QUEUE_DEPTH,
        );
        Ok(PartPut {
            feed,
            received: 0,
            cap,
            max_part_size: layout.max_part_size,
            _lease: lease,
            _inflight: inflight,
        })
    }

    /// S3's CompleteMultipartUpload: checks the listed parts (ascending, uploaded, ETag or
    /// checksum matching, all but the last at least [`MIN_PART_SIZE`], adding up to the
    /// declared size), assembles them into one blob (streamed, hashed as a whole) and makes the
    /// session an uploaded temp file. Repeating the same complete answers the same; a
    /// different one after success is refused.
    pub async fn complete_multipart(
        self: &Arc<Self>,
        session: UploadSession,
        listed: Vec<CompletedPart>,
    ) -> Result<Completed> {
        if session.state != SessionState::Open {
            return repeat_complete(session, &listed);
        }
        let layout = PartLayout::of(&session)?;
        let declared = session.size.unwrap_or(session.max_size);
        check_order(&listed)?;
        let claim = self.claim_session(session.id, "this upload is being completed already")?;
        let inflight = self.enter_multipart(session.id, false)?;
        let svc = self.clone();
        blocking(move || {
            let (_claim, _inflight) = (claim, inflight);
            // The file must still fit (the quota may have filled since the upload began).
            svc.precheck_in(session.instance, &session.account, Some(declared))?;
            let id = session.id;
            let name = id.to_string();
            let parts = svc.part_store()?;
            // The session may have been completed by a request that finished meanwhile.
            let now = svc.meta.session(id)?.ok_or_else(no_such_upload)?;
            if now.state != SessionState::Open {
                return repeat_complete(now, &listed);
            }
            let stored = parts.list_parts(&name)?;
            let chosen = match_parts(&listed, &stored, layout.count, declared)?;
            let numbers: Vec<u32> = chosen.iter().map(|p| p.number).collect();
            let digest = composite(&chosen);
            let staged = parts.assemble(&name, &numbers)?;
            if staged.size() != declared {
                return Err(Error::Internal(format!(
                    "assembled {} bytes from parts that add up to {declared}",
                    staged.size()
                )));
            }
            let sha = staged.sha();
            let size = staged.size();
            let done = svc.record_session_bytes(id, sha, 0, || {
                staged.commit()?;
                Ok(StoredBytes {
                    sha,
                    size,
                    // The bytes are committed: an unreadable head only loses the type.
                    mime: svc
                        .sniff_blob(&sha)
                        .unwrap_or_else(|_| "application/octet-stream".into()),
                    width: None,
                    height: None,
                    parts: Some(digest.clone()),
                })
            })?;
            // The parts are in the blob now; a crash before this leaves them to the sweep.
            if let Err(e) = parts.drop_session(&name) {
                tracing::warn!(session = %id, error = %e.chain(), "parts left after assembly");
            }
            metrics::counter!("depot_multipart_completed_total").increment(1);
            Ok(answer(done, &digest))
        })
        .await
    }

    /// The media type of a stored blob, from its first bytes; `application/octet-stream` when
    /// they tell nothing. Blocking.
    fn sniff_blob(&self, sha: &crate::types::Sha256) -> Result<String> {
        let Some(mut h) = self.blobs.open(sha)? else {
            return Err(Error::ContentMissing(
                "the assembled bytes are missing from storage".into(),
            ));
        };
        let mut head = vec![0u8; SNIFF];
        let n = h.read_at(0, &mut head)?;
        head.truncate(n);
        Ok(infer::get(&head)
            .map(|k| super::sessions::normalize_mime(k.mime_type()))
            .unwrap_or_else(|| "application/octet-stream".into()))
    }
}

fn no_such_upload() -> Error {
    Error::S3(
        S3Fault::NoSuchUpload,
        "the upload does not exist, has expired or was completed".into(),
    )
}

fn part_too_large(len: u64, cap: u64, max_part_size: u64) -> Error {
    let why = if cap < max_part_size {
        format!(
            "the part ({len} bytes so far) would take the parts past the declared filesize \
             ({cap} bytes are left for it)"
        )
    } else {
        format!("the part ({len} bytes so far) is larger than maxPartSize ({max_part_size} bytes)")
    };
    Error::S3(S3Fault::EntityTooLarge, why)
}

/// Part numbers must ascend strictly (S3: `InvalidPartOrder`, duplicates included); an empty
/// list is not a complete request.
fn check_order(listed: &[CompletedPart]) -> Result<()> {
    if listed.is_empty() {
        return Err(Error::S3(
            S3Fault::MalformedXml,
            "the complete request lists no <Part>".into(),
        ));
    }
    for w in listed.windows(2) {
        if w[1].number <= w[0].number {
            return Err(Error::S3(
                S3Fault::InvalidPartOrder,
                format!(
                    "part numbers must be listed in ascending order: {} follows {}",
                    w[1].number, w[0].number
                ),
            ));
        }
    }
    Ok(())
}

/// An ETag as clients send it: with or without its quotes, any case.
fn parse_etag(raw: &str) -> Option<crate::store::Md5> {
    let t = raw.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t);
    t.to_ascii_lowercase().parse().ok()
}

/// A `ChecksumSHA256`: base64 as S3 sends it, or hex.
fn parse_checksum(raw: &str) -> Option<[u8; 32]> {
    let t = raw.trim();
    if t.len() == 64 {
        let mut out = [0u8; 32];
        if hex::decode_to_slice(t.to_ascii_lowercase(), &mut out).is_ok() {
            return Some(out);
        }
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

/// The stored parts a complete request names, checked against S3's rules, in order.
fn match_parts(
    listed: &[CompletedPart],
    stored: &[PartInfo],
    count: u32,
    declared: u64,
) -> Result<Vec<PartInfo>> {
    let invalid = |msg: String| Error::S3(S3Fault::InvalidPart, msg);
    let mut chosen = Vec::with_capacity(listed.len());
    for l in listed {
        if l.number == 0 || l.number > count {
            return Err(invalid(format!(
                "part {} is not one of this upload's parts (1 to {count})",
                l.number
            )));
        }
        let Some(p) = stored.iter().find(|p| p.number == l.number) else {
            return Err(invalid(format!("part {} was not uploaded", l.number)));
        };
        match (&l.etag, &l.checksum_sha256) {
            (None, None) => {
                return Err(invalid(format!(
                    "part {} has neither an ETag nor a ChecksumSHA256",
                    l.number
                )))
            }
            (Some(e), _) if p.md5.is_none() || parse_etag(e) != p.md5 => {
                return Err(invalid(format!(
                    "the ETag of part {} ({}) is not the uploaded part's (\"{}\")",
                    l.number,
                    e.trim(),
                    p.md5.map(|m| m.to_hex()).unwrap_or_default()
                )))
            }
            (_, Some(c)) if parse_checksum(c) != Some(p.sha.0) => {
                return Err(invalid(format!(
                    "the ChecksumSHA256 of part {} is not the uploaded part's",
                    l.number
                )))
            }
            _ => {}
        }
        chosen.push(p.clone());
    }
    if let Some((_, but_last)) = chosen.split_last() {
        if let Some(small) = but_last.iter().find(|p| p.size < MIN_PART_SIZE) {
            return Err(Error::S3(
                S3Fault::EntityTooSmall,
                format!(
                    "part {} has {} bytes; every part but the last needs at least {MIN_PART_SIZE}",
                    small.number, small.size
                ),
            ));
        }
    }
    let total: u64 = chosen.iter().map(|p| p.size).sum();
    if total < declared {
        return Err(Error::S3(
            S3Fault::IncompleteBody,
            format!(
                "the parts add up to {total} bytes, less than the declared filesize {declared}"
            ),
        ));
    }
    if total > declared {
        return Err(Error::S3(
            S3Fault::EntityTooLarge,
            format!(
                "the parts add up to {total} bytes, more than the declared filesize {declared}"
            ),
        ));
    }
    Ok(chosen)
}

/// S3's composite digests of the parts, in order.
fn composite(parts: &[PartInfo]) -> CompletedParts {
    use md5::Digest as _;
    use sha2::Digest as _;
    let mut m = md5::Md5::new();
    let mut s = sha2::Sha256::new();
    for p in parts {
        md5::Digest::update(&mut m, p.md5.map(|m| m.0).unwrap_or_default());
        sha2::Digest::update(&mut s, p.sha.0);
    }
    CompletedParts {
        count: parts.len() as u32,
        md5_of_md5s: hex::encode(md5::Digest::finalize(m)),
        sha_of_shas: hex::encode(sha2::Digest::finalize(s)),
    }
}

/// The answer of a completed upload.
fn answer(session: UploadSession, d: &CompletedParts) -> Completed {
    let sha = hex::decode(&d.sha_of_shas).unwrap_or_default();
    Completed {
        etag: format!("\"{}-{}\"", d.md5_of_md5s, d.count),
        checksum_sha256: format!(
            "{}-{}",
            base64::engine::general_purpose::STANDARD.encode(sha),
            d.count
        ),
        session,
    }
}

/// A complete request on an upload completed already: the same parts get the same answer
/// (a client retrying after a lost response), any other list is refused.
fn repeat_complete(session: UploadSession, listed: &[CompletedPart]) -> Result<Completed> {
    let Some(done) = session
        .bytes
        .as_ref()
        .and_then(|b| b.parts.clone())
        .filter(|_| session.state == SessionState::Uploaded)
    else {
        return Err(no_such_upload());
    };
    check_order(listed)?;
    let same = listed.len() == done.count as usize && {
        let etags: Option<Vec<_>> = listed
            .iter()
            .map(|l| l.etag.as_deref().and_then(parse_etag))
            .collect();
        let sums: Option<Vec<_>> = listed
            .iter()
            .map(|l| l.checksum_sha256.as_deref().and_then(parse_checksum))
            .collect();
        let by_etag = etags.is_some_and(|e| {
            use md5::Digest as _;
            let mut m = md5::Md5::new();
            for x in e {
                md5::Digest::update(&mut m, x.0);
            }
            hex::encode(md5::Digest::finalize(m)) == done.md5_of_md5s
        });
        let by_sum = sums.is_some_and(|e| {
            use sha2::Digest as _;
            let mut s = sha2::Sha256::new();
            for x in e {
                sha2::Digest::update(&mut s, x);
            }
            hex::encode(sha2::Digest::finalize(s)) == done.sha_of_shas
        });
        by_etag || by_sum
    };
    if !same {
        return Err(Error::S3(
            S3Fault::NoSuchUpload,
            "this upload was completed already, with other parts".into(),
        ));
    }
    Ok(answer(session, &done))
}

/// One part's PUT, streaming into the part store. Dropping it before [`PartPut::finish`]
/// stores nothing (an earlier part of that number stays as it was).
pub struct PartPut {
    feed: Feed<PartSink>,
    received: u64,
    cap: u64,
    max_part_size: u64,
    _lease: super::session_leases::Lease,
    _inflight: InflightGuard,
}

impl PartPut {
    /// Appends a chunk; cut off as soon as the part passes its bound.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.received += chunk.len() as u64;
        if self.received > self.cap {
            self.feed.abort();
            return Err(part_too_large(self.received, self.cap, self.max_part_size));
        }
        self.feed.write(chunk).await
    }

    /// Ends the body: the part is durable and replaces any earlier one of its number.
    pub async fn finish(mut self) -> Result<PartInfo> {
        self.feed.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_amplience_and_s3() {
        // The seed's example: 11723249 bytes in 5 MiB parts is three parts.
        let l = PartLayout::for_size(11_723_249, 2 << 30);
        assert_eq!((l.count, l.part_size), (3, MIN_PART_SIZE));
        assert_eq!(PartLayout::for_size(1, 2 << 30).count, 1);
        assert_eq!(PartLayout::for_size(MIN_PART_SIZE, 2 << 30).count, 1);
        assert_eq!(PartLayout::for_size(MIN_PART_SIZE + 1, 2 << 30).count, 2);
        // 2 GiB: 410 parts of 5 MiB; 100 GiB would need more than S3's 10,000.
        assert_eq!(PartLayout::for_size(2 << 30, 2 << 30).count, 410);
        let big = PartLayout::for_size(100 << 30, 5 << 30);
        assert!(big.count as u64 <= MAX_PARTS && big.part_size * big.count as u64 >= 100 << 30);
    }

    #[test]
    fn etags_and_checksums_parse_as_clients_send_them() {
        let md5 = "625c1805577b471034e03f28c5620eff";
        let want = parse_etag(md5);
        assert!(want.is_some());
        assert_eq!(parse_etag(&format!("\"{md5}\"")), want);
        assert_eq!(parse_etag(&format!(" \"{}\" ", md5.to_uppercase())), want);
        assert_eq!(parse_etag("\"nothex\""), None);
        let sha = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
        assert_eq!(parse_checksum(&b64), Some(sha));
        assert_eq!(parse_checksum(&hex::encode(sha)), Some(sha));
        assert_eq!(parse_checksum("AAAA"), None);
    }

    fn part(number: u32, size: u64, seed: u8) -> PartInfo {
        PartInfo {
            number,
            size,
            sha: crate::types::Sha256([seed; 32]),
            md5: Some(crate::store::Md5([seed; 16])),
        }
    }

    fn listed(number: u32, seed: u8) -> CompletedPart {
        CompletedPart {
            number,
            etag: Some(format!("\"{}\"", hex::encode([seed; 16]))),
            checksum_sha256: None,
        }
    }

    fn fault(r: Result<impl std::fmt::Debug>) -> S3Fault {
        match r {
            Err(Error::S3(f, _)) => f,
            other => panic!("not an S3 error: {other:?}"),
        }
    }

    #[test]
    fn complete_rules_answer_s3s_errors() {
        let m = MIN_PART_SIZE;
        let stored = vec![part(1, m, 1), part(2, m, 2), part(3, 10, 3)];
        let total = 2 * m + 10;
        let ok = [listed(1, 1), listed(2, 2), listed(3, 3)];
        assert_eq!(match_parts(&ok, &stored, 3, total).unwrap().len(), 3);
        let wrong_etag = [listed(1, 1), listed(2, 9), listed(3, 3)];
        assert_eq!(
            fault(match_parts(&wrong_etag, &stored, 3, total)),
            S3Fault::InvalidPart
        );
        assert_eq!(
            fault(check_order(&[listed(2, 2), listed(1, 1)])),
            S3Fault::InvalidPartOrder
        );
        assert_eq!(
            fault(check_order(&[listed(1, 1), listed(1, 1)])),
            S3Fault::InvalidPartOrder
        );
        assert_eq!(fault(check_order(&[])), S3Fault::MalformedXml);
        let small = vec![part(1, 10, 1), part(2, m, 2)];
        assert_eq!(
            fault(match_parts(
                &[listed(1, 1), listed(2, 2)],
                &small,
                2,
                m + 10
            )),
            S3Fault::EntityTooSmall
        );
        assert_eq!(
            fault(match_parts(
                &[listed(1, 1), listed(2, 2)],
                &stored,
                3,
                total
            )),
            S3Fault::IncompleteBody
        );
        assert_eq!(
            fault(match_parts(&[listed(4, 4)], &stored, 3, total)),
            S3Fault::InvalidPart
        );
        let sum_only = [CompletedPart {
            number: 3,
            etag: None,
            checksum_sha256: Some(base64::engine::general_purpose::STANDARD.encode([3u8; 32])),
        }];
        assert_eq!(match_parts(&sum_only, &stored, 3, 10).unwrap().len(), 1);
    }
}
