//! Re-upload: new bytes for an existing file (Hygraph's `updateAsset` re-upload, and `PUT
//! /files/{id}/content`). The file keeps its id, name, place and URL; its hash, size, type and
//! dimensions change in one metadata transaction, so a reader sees the old record (and blob)
//! or the new one, never a mix: blobs are immutable and named by content. The new blob gains a
//! reference, the old one loses one and is removed when nothing references it. The download
//! cache's entry for the file is dropped after the change is stored, before the call returns.
//!
//! Only whoever manages the file (its owner, an admin of its instance) may replace it.

use super::assets::Asset;
use super::upload::StagedPart;
use super::{blocking, hot, Service};
use crate::auth::{access, Caller, Principal};
use crate::error::{Error, Result};
use crate::media;
use crate::meta::{FileRecord, SessionKind};
use crate::types::{now_millis, AccountId, FileId};
use serde_json::json;
use std::sync::Arc;

/// Marks an asset session that replaces its file's bytes instead of making a file.
pub(crate) const REUPLOAD: &str = "reUpload";

/// Whether an asset session is a re-upload.
pub(crate) fn is_reupload(s: &crate::meta::UploadSession) -> bool {
    s.metadata
        .as_ref()
        .and_then(|m| m.get(REUPLOAD))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

impl Service {
    /// The file `p` may replace: readable and managed by `p`; a file `p` may read but not
    /// manage is forbidden, anything else not found. Blocking.
    pub(crate) fn replaceable(&self, p: &Principal, id: FileId) -> Result<FileRecord> {
        let f = self.readable(&Caller::User(p.clone()), id)?;
        if f.is_directory() {
            return Err(Error::BadRequest(
                "a directory has no bytes to replace".into(),
            ));
        }
        if !access::manages(p, &f.created_by) {
            return Err(Error::Forbidden(
                "only the file's owner or an admin may replace its content".into(),
            ));
        }
        Ok(f)
    }

    /// Makes staged bytes the content of file `id` (access already checked).
    pub(crate) async fn replace_with_staged(
        self: &Arc<Self>,
        actor: &AccountId,
        id: FileId,
        staged: StagedPart,
    ) -> Result<FileRecord> {
        let content = staged.stored(staged.mime().to_string());
        let svc = self.clone();
        let actor = actor.clone();
        blocking(move || {
            let sha = content.sha;
            let old = svc
                .meta
                .file(id)?
                .filter(|f| f.trashed.is_none())
                .ok_or_else(Error::not_found)?;
            let blobs = svc.lock_blobs([&sha, &old.sha256])?;
            // Declared after the locks: dropped first, once the change is stored.
            let _stale = svc.hot.change(hot::Scope::File(id));
            let incoming = super::quota::Incoming::replacing(&old, content.size);
            // Stored before the quotas are asked, as an upload's (see `commit_upload`).
            staged.commit_blob()?;
            let (room, _events) = svc.write_or_take_back(&blobs, &[sha], || {
                let room = svc.admit(old.instance, &old.created_by, incoming)?;
                let events = svc.webhook_events(
                    old.instance,
                    &actor,
                    crate::meta::webhooks::WebhookEvent::FileUpdated,
                    vec![crate::meta::webhooks::Subject::Written],
                )?;
                Ok((room, events))
            })?;
            let image = media::is_image(&content.mime);
            let replaced = svc.meta.replace_content(id, &content, image, now_millis());
            // The quota lock is the innermost: let go before a blob removal, which may take
            // the locks of the old bytes' variants.
            drop(room);
            match replaced {
                Ok(Some((new, old, left))) => {
                    if left == 0 && old.sha256 != sha {
                        svc.remove_blob(&blobs, &old.sha256)?;
                    }
                    Ok(new)
                }
                outcome => {
                    svc.drop_unreferenced(&blobs, &[sha]);
                    match outcome {
                        Err(e) => Err(e),
                        _ => Err(Error::not_found()),
                    }
                }
            }
        })
        .await
    }

    /// `PUT /files/{id}/content`: checks access, then streams `body` through the ingest and
    /// replaces the file's bytes.
    pub async fn check_replace(self: &Arc<Self>, p: &Principal, id: FileId) -> Result<FileRecord> {
        let svc = self.clone();
        let p = p.clone();
        blocking(move || svc.replaceable(&p, id)).await
    }

    /// Hygraph's `updateAsset(where: {id}, data: {reUpload: true})` (a presigned POST form for
    /// new bytes) or `data: {uploadUrl}` (fetched in the background). The asset stays readable
    /// with its old bytes until the new ones are stored.
    pub async fn reupload_asset(
        self: &Arc<Self>,
        p: &Principal,
        id: &str,
        upload_url: Option<&str>,
        base: &str,
    ) -> Result<Asset> {
        let fid: FileId = id
            .parse()
            .map_err(|_| Error::NotFound("no such asset".into()))?;
        let file = self.check_replace(p, fid).await?;
        let session = match upload_url {
            None => {
                let expires = now_millis() + self.config.sessions.upload_url_ttl_secs * 1000;
                self.open_reupload_session(p, &file, expires).await?
            }
            Some(url) => {
                return self.reupload_from_url(p, &file, url, base).await;
            }
        };
        Ok(Asset {
            id: fid,
            file: Some(file),
            session: Some(session),
        })
    }

    /// A presigned POST session replacing `file`'s bytes.
    async fn open_reupload_session(
        self: &Arc<Self>,
        p: &Principal,
        file: &FileRecord,
        expires: u64,
    ) -> Result<crate::meta::UploadSession> {
        let meta = json!({ REUPLOAD: true });
        self.open_asset_session(
            p,
            SessionKind::AssetPost,
            file.name.clone(),
            expires,
            Some(meta),
            Some(file.id),
        )
        .await
    }
}
