//! Hygraph's assets over upload sessions: `createAsset(data: {fileName})` hands out a presigned
//! POST form (S3's shape: `key`, `policy`, `X-Amz-Signature`, ...), `createAsset(data:
//! {uploadUrl})` fetches a URL in the background (see `ingest_remote.rs`), and an Amplience
//! temp file's `downloadUrl` becomes a permanent asset without a fetch.
//!
//! An asset's id is its File's id, chosen when the asset is created (the session's id has the
//! same bytes), so the id and `url` answered while pending are the ones that serve the bytes.
//! Pending and failed assets are their sessions; a complete asset is its File.
//!
//! The form's `policy` is base64 JSON (expiration, key, algorithm, credential, date, token,
//! `content-length-range`); its signature is an HMAC of the base64 text under the URL key
//! ([`crate::auth::sign`], purpose `AssetPost`), verified in constant time before anything in
//! the policy is trusted. The bytes stream through the one ingest ([`super::upload::PartWriter`]).

use super::sessions::Claim;
use super::upload::{PartWriter, StagedPart};
use super::{blocking, names, Service};
use crate::auth::sign::Purpose;
use crate::auth::{access, Caller, Principal};
use crate::error::{Error, Result, SessionFault};
use crate::meta::{
    FileExtras, FileRecord, ImageRecord, SessionKind, SessionState, StoredBytes, UploadSession,
};
use crate::types::{now_millis, rfc3339, FileId, Millis, SessionId};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Hygraph's upload states.
pub const PENDING: &str = "ASSET_CREATE_PENDING";
pub const COMPLETE: &str = "ASSET_UPLOAD_COMPLETE";
pub const FAILED: &str = "ASSET_ERROR_UPLOAD";

/// The `X-Amz-Algorithm` of our policies (an HMAC-SHA256 of the policy, not AWS SigV4).
pub const ALGORITHM: &str = "DEPOT-HMAC-SHA256";
/// The `bucket` condition of our policies.
const BUCKET: &str = "depot";

/// An asset: its File once the bytes arrived, else its session.
#[derive(Debug, Clone)]
pub struct Asset {
    pub id: FileId,
    pub file: Option<FileRecord>,
    pub session: Option<UploadSession>,
}

impl Asset {
    /// `ASSET_UPLOAD_COMPLETE`, `ASSET_ERROR_UPLOAD` or `ASSET_CREATE_PENDING`.
    pub fn status(&self) -> &'static str {
        match (
            &self.file,
            self.session.as_ref().and_then(|s| s.error.as_ref()),
        ) {
            (Some(_), _) => COMPLETE,
            (None, Some(_)) => FAILED,
            (None, None) => PENDING,
        }
    }

    /// Why the upload failed, while it is failed.
    pub fn error(&self) -> Option<&str> {
        match self.file {
            Some(_) => None,
            None => self.session.as_ref().and_then(|s| s.error.as_deref()),
        }
    }

    pub fn file_name(&self) -> &str {
        match (&self.file, &self.session) {
            (Some(f), _) => &f.name,
            (None, Some(s)) => &s.name,
            _ => "",
        }
    }

    /// The path its bytes are (or will be) served at: `/file/<instance>-<id>[.ext]`.
    pub fn url_path(&self) -> String {
        match (&self.file, &self.session) {
            (Some(f), _) => f.url_path(),
            (None, Some(s)) => match names::extension(&s.name) {
                Some(ext) => format!("/file/{}-{}.{ext}", s.instance, self.id),
                None => format!("/file/{}-{}", s.instance, self.id),
            },
            _ => String::new(),
        }
    }

    /// When the upload capability runs out, while pending.
    pub fn expires_at(&self) -> Option<Millis> {
        self.session.as_ref().map(|s| s.expires)
    }

    pub fn created(&self) -> Millis {
        match (&self.file, &self.session) {
            (Some(f), _) => f.created,
            (None, Some(s)) => s.created,
            _ => 0,
        }
    }

    pub fn updated(&self) -> Millis {
        self.file.as_ref().map_or(self.created(), |f| f.updated)
    }
}

/// The fields of a presigned POST (Hygraph's `requestPostData`, without the base URL).
#[derive(Debug, Clone)]
pub struct PostData {
    /// Path of the form's target (`/assets/upload`).
    pub path: String,
    pub date: String,
    pub key: String,
    pub signature: String,
    pub algorithm: String,
    pub policy: String,
    pub credential: String,
    pub security_token: String,
}

/// `yyyymmddThhmmssZ`, as `X-Amz-Date` is written.
fn amz_date(ms: Millis) -> String {
    rfc3339(ms).replace(['-', ':'], "")
}

fn asset_key(s: &UploadSession) -> String {
    format!("{}/upload/{}", s.instance, s.id)
}

/// The session id of an asset id (the same bytes).
fn session_of(id: FileId) -> SessionId {
    SessionId::from_bytes(id.to_bytes())
}

fn asset_id(raw: &str) -> Result<FileId> {
    raw.parse()
        .map_err(|_| Error::NotFound("no such asset".into()))
}

/// A policy condition's value: `{"name": value}`.
fn condition<'a>(conds: &'a [Value], name: &str) -> Option<&'a str> {
    conds
        .iter()
        .find_map(|c| c.as_object()?.get(name)?.as_str())
}

/// The `[min, max]` of the policy's `content-length-range`.
fn length_range(conds: &[Value]) -> Option<(u64, u64)> {
    conds.iter().find_map(|c| {
        let a = c.as_array()?;
        (a.first()?.as_str()? == "content-length-range").then_some(())?;
        Some((a.get(1)?.as_u64()?, a.get(2)?.as_u64()?))
    })
}

fn mismatch(what: &str) -> Error {
    Error::Session(
        SessionFault::PolicyMismatch,
        format!("the form's {what} is not the one its policy was signed for"),
    )
}

/// The File record of an asset's bytes: a session's File ([`super::sessions::session_file`])
/// under the id chosen when the asset was created.
pub(crate) fn asset_file(
    id: FileId,
    s: &UploadSession,
    bytes: &StoredBytes,
) -> (FileRecord, Option<ImageRecord>) {
    let (mut file, mut image) = super::sessions::session_file(s, bytes, bytes.width, bytes.height);
    file.id = id;
    if let Some(i) = image.as_mut() {
        i.file = id;
    }
    (file, image)
}

impl Service {
    /// A new asset session of `kind` for `p`, named `name`, expiring at `expires`.
    pub(crate) async fn open_asset_session(
        self: &Arc<Self>,
        p: &Principal,
        kind: SessionKind,
        name: String,
        expires: Millis,
        metadata: Option<Value>,
        replaces: Option<FileId>,
    ) -> Result<UploadSession> {
        let svc = self.clone();
        let p = p.clone();
        let max = self.config.max_file_size;
        blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            // A new asset's session shares its id's bytes; a re-upload's has its own id.
            let (id, sid) = match replaces {
                Some(f) => (f, SessionId::new()),
                None => {
                    let f = FileId::new();
                    (f, session_of(f))
                }
            };
            let s = UploadSession {
                id: sid,
                instance: instance.id,
                account: p.account.clone(),
                kind,
                name,
                mime: None,
                size: None,
                max_size: max,
                directory: "/".into(),
                metadata,
                state: SessionState::Open,
                created: now_millis(),
                expires,
                bytes: None,
                file: Some(id),
                error: None,
            };
            svc.create_session(&s)?;
            Ok(s)
        })
        .await
    }

    /// Hygraph's `createAsset(data: {fileName})`: a pending asset whose bytes come by the
    /// presigned POST of [`Service::asset_post_data`] before `sessions.upload_url_ttl_secs`.
    pub async fn create_asset_upload(
        self: &Arc<Self>,
        p: &Principal,
        file_name: &str,
    ) -> Result<Asset> {
        let name = names::sanitize_filename(file_name);
        if name.is_empty() {
            return Err(Error::BadRequest("fileName must name a file".into()));
        }
        let expires = now_millis() + self.config.sessions.upload_url_ttl_secs * 1000;
        let s = self
            .open_asset_session(p, SessionKind::AssetPost, name, expires, None, None)
            .await?;
        Ok(Asset {
            id: s.file.unwrap_or_else(FileId::new),
            file: None,
            session: Some(s),
        })
    }

    /// The presigned POST form of a pending upload asset (the same every time it is asked).
    pub fn asset_post_data(&self, s: &UploadSession) -> Result<Option<PostData>> {
        if s.kind != SessionKind::AssetPost || s.state != SessionState::Open {
            return Ok(None);
        }
        let date = amz_date(s.created);
        let key = asset_key(s);
        let credential = format!("depot/{}/{}/upload", &date[..8], s.instance);
        let security_token = s.id.to_string();
        let policy = json!({
            "expiration": rfc3339(s.expires),
            "conditions": [
                {"bucket": BUCKET},
                {"key": key},
                {"x-amz-algorithm": ALGORITHM},
                {"x-amz-credential": credential},
                {"x-amz-date": date},
                {"x-amz-security-token": security_token},
                ["content-length-range", 0, s.max_size],
            ],
        });
        let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let query = self.keys.urls.query(
            Purpose::AssetPost,
            &s.instance.to_string(),
            &policy,
            s.expires / 1000,
        )?;
        let signature = query
            .rsplit_once("sig=")
            .map(|(_, sig)| sig.to_string())
            .ok_or_else(|| Error::Internal("policy signature".into()))?;
        Ok(Some(PostData {
            path: "/assets/upload".into(),
            date,
            key,
            signature,
            algorithm: ALGORITHM.into(),
            policy,
            credential,
            security_token,
        }))
    }

    /// An asset the caller may see: complete ones by the File's read rules, pending and
    /// failed ones by their creator (or whoever manages them).
    pub async fn asset(self: &Arc<Self>, caller: Caller, id: &str) -> Result<Asset> {
        let id = asset_id(id)?;
        let svc = self.clone();
        blocking(move || {
            match svc.readable(&caller, id) {
                Ok(file) => {
                    return Ok(Asset {
                        id,
                        file: Some(file),
                        session: None,
                    })
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let gone = || Error::NotFound("no such asset".into());
            let p = caller.require().map_err(|_| gone())?;
            let s = svc.meta.session(session_of(id))?.ok_or_else(gone)?;
            let instance = svc.meta.instance_by_domain(&p.instance)?.ok_or_else(gone)?;
            let asset_kind = matches!(s.kind, SessionKind::AssetPost | SessionKind::RemoteIngest);
            if !asset_kind || s.instance != instance.id || !access::manages(p, &s.account) {
                return Err(gone());
            }
            // Made between the two reads: the File answers.
            if s.state == SessionState::Confirmed {
                if let Ok(file) = svc.readable(&caller, id) {
                    return Ok(Asset {
                        id,
                        file: Some(file),
                        session: None,
                    });
                }
            }
            Ok(Asset {
                id,
                file: None,
                session: Some(s),
            })
        })
        .await
    }

    /// Records why an asset's upload failed (its status becomes `ASSET_ERROR_UPLOAD`).
    pub(crate) async fn fail_asset(self: &Arc<Self>, id: SessionId, why: String) {
        let svc = self.clone();
        let res = blocking(move || {
            let _events = svc.upload_failed_events(id, &why)?;
            svc.meta.set_session_error(id, Some(&why))
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(session = %id, error = %e.chain(), "cannot record an asset's failure");
        }
    }

    /// Checks a presigned POST form (every field before `file`) and starts receiving its file:
    /// the signature first (constant time, nothing in the policy is trusted before), then the
    /// expiry, then each field against the policy, then the session. Failures after the
    /// signature are recorded on the asset.
    pub async fn begin_asset_post(
        self: &Arc<Self>,
        fields: &HashMap<String, String>,
        content_length: Option<u64>,
    ) -> Result<(AssetPost, String)> {
        let field = |name: &str| fields.get(name).map(String::as_str);
        let policy_b64 = field("policy")
            .ok_or_else(|| Error::BadRequest("the form has no policy field".into()))?;
        let sig = field("x-amz-signature")
            .ok_or_else(|| Error::BadRequest("the form has no X-Amz-Signature field".into()))?;
        let bad = || {
            Error::Session(
                SessionFault::BadSignature,
                "the form's policy or signature is not valid".into(),
            )
        };
        let policy: Value = base64::engine::general_purpose::STANDARD
            .decode(policy_b64)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(bad)?;
        let expires = policy["expiration"]
            .as_str()
            .and_then(crate::types::parse_rfc3339)
            .ok_or_else(bad)?
            / 1000;
        let conds = policy["conditions"].as_array().cloned().unwrap_or_default();
        let key = condition(&conds, "key").ok_or_else(bad)?.to_string();
        let (instance, session) = key
            .split_once("/upload/")
            .map(|(i, s)| (i.to_string(), s.to_string()))
            .ok_or_else(bad)?;
        let expired = match self.keys.urls.verify(
            Purpose::AssetPost,
            &instance,
            policy_b64,
            expires,
            sig,
            now_millis() / 1000,
        ) {
            Ok(()) => None,
            Err(e @ Error::Session(SessionFault::Expired, _)) => Some(e),
            Err(e) => return Err(e),
        };
        // From here the policy is ours: failures belong to its asset.
        let id: SessionId = session.parse().map_err(|_| bad())?;
        let checked = async {
            if let Some(e) = expired {
                return Err(Error::Session(
                    SessionFault::Expired,
                    format!("the upload policy expired: {e}"),
                ));
            }
            let pairs = [
                ("key", "key"),
                ("x-amz-algorithm", "x-amz-algorithm"),
                ("x-amz-credential", "x-amz-credential"),
                ("x-amz-date", "x-amz-date"),
                ("x-amz-security-token", "x-amz-security-token"),
            ];
            for (form, cond) in pairs {
                if field(form) != condition(&conds, cond) {
                    return Err(mismatch(form));
                }
            }
            let (_, max) = length_range(&conds).ok_or_else(bad)?;
            if let Some(len) = content_length {
                // The form's own fields take a few hundred bytes beside the file.
                if len > max.saturating_add(64 * 1024) {
                    return Err(Error::FileTooLarge(format!(
                        "the form is {len} bytes; the file may have at most {max}"
                    )));
                }
            }
            Ok(max)
        }
        .await;
        let max = match checked {
            Ok(max) => max,
            Err(e) => {
                if self.asset_session(id).await.is_ok() {
                    self.fail_asset(id, e.to_string()).await;
                }
                return Err(e);
            }
        };
        let (s, domain) = self.asset_session(id).await?;
        if s.instance.to_string() != instance {
            return Err(bad());
        }
        if s.state != SessionState::Open {
            return Err(Error::Conflict(
                "this asset's file was uploaded already".into(),
            ));
        }
        let claim = self.claim_session(s.id, "another upload to this asset is in progress")?;
        let writer = self.begin_part(&s.name);
        Ok((
            AssetPost {
                svc: self.clone(),
                session: s,
                writer,
                max,
                received: 0,
                _claim: claim,
            },
            domain,
        ))
    }

    /// An asset-by-file session and its instance's domain.
    async fn asset_session(self: &Arc<Self>, id: SessionId) -> Result<(UploadSession, String)> {
        let svc = self.clone();
        blocking(move || {
            let gone = || Error::NotFound("no such asset".into());
            let s = svc.meta.session(id)?.ok_or_else(gone)?;
            if s.kind != SessionKind::AssetPost {
                return Err(gone());
            }
            let domain = svc.meta.instance(s.instance)?.ok_or_else(gone)?.domain;
            Ok((s, domain))
        })
        .await
    }

    /// Makes the File of an asset session from its staged bytes: blob committed, the session
    /// marked uploaded, then the File (with the asset's id) recorded in its directory.
    pub(crate) async fn complete_asset(
        self: &Arc<Self>,
        s: UploadSession,
        staged: StagedPart,
    ) -> Result<FileRecord> {
        let id = s
            .file
            .ok_or_else(|| Error::Internal("asset session without an id".into()))?;
        if super::reupload::is_reupload(&s) {
            let file = self.replace_with_staged(&s.account, id, staged).await?;
            // Single use: the session ends with the replacement.
            let svc = self.clone();
            blocking(move || svc.meta.delete_session(s.id).map(|_| ())).await?;
            return Ok(file);
        }
        let stored = staged.stored(staged.mime().to_string());
        let svc = self.clone();
        blocking(move || {
            let sha = stored.sha;
            {
                let guard = svc.lock_blobs([&sha])?;
                staged.commit_blob()?;
                if let Err(e) = svc.meta.complete_session(s.id, &stored, 0) {
                    if svc.meta.blob_refs(&sha)? == 0 {
                        svc.remove_blob(&guard, &sha)?;
                    }
                    return Err(e);
                }
            }
            let (file, image) = asset_file(id, &s, &stored);
            svc.confirm_session_file(&s, &file, image.as_ref(), &FileExtras::default())?;
            svc.meta.set_session_error(s.id, None)?;
            Ok(file)
        })
        .await
    }
}

/// The file of a presigned POST on its way in. Dropping it before [`AssetPost::finish`]
/// removes what was written and frees the asset for another try.
pub struct AssetPost {
    svc: Arc<Service>,
    session: UploadSession,
    writer: PartWriter,
    max: u64,
    received: u64,
    _claim: Claim,
}

impl AssetPost {
    /// The account the upload is charged to.
    pub fn account(&self) -> &crate::types::AccountId {
        &self.session.account
    }

    /// Appends a chunk; past the policy's `content-length-range` the upload fails at once and
    /// the asset records why.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.received += chunk.len() as u64;
        let res = if self.received > self.max {
            Err(Error::FileTooLarge(format!(
                "the file is larger than the policy's limit of {} bytes",
                self.max
            )))
        } else {
            self.writer.write(chunk).await
        };
        if let Err(e) = &res {
            self.svc.fail_asset(self.session.id, e.to_string()).await;
        }
        res
    }

    /// Ends the file: durable, recorded, the asset complete.
    pub async fn finish(self) -> Result<FileRecord> {
        let AssetPost {
            svc,
            session,
            writer,
            _claim,
            ..
        } = self;
        let id = session.id;
        let done = async {
            let staged = writer.finish().await?;
            svc.complete_asset(session, staged).await
        }
        .await;
        if let Err(e) = &done {
            svc.fail_asset(id, e.to_string()).await;
        }
        drop(_claim);
        done
    }

    /// Records a failure of the request that is not the file's (a truncated form).
    pub async fn fail(self, e: &Error) {
        self.svc.fail_asset(self.session.id, e.to_string()).await;
    }
}
