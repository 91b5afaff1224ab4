//! Reading, listing and deleting files, with the access rules applied.

use super::{blocking, hot, Service};
use crate::auth::{access, Caller, Principal};
use crate::error::{Error, Result};
use crate::meta::{FileRecord, FileScope, ImageRecord, Instance, Page};
use crate::store::BlobHandle;
use crate::types::{now_millis, AccountId, FileId, InstanceId, Millis};
use std::sync::Arc;

/// Files up to this size are read in the same blocking call that authorises the download.
pub(super) const SMALL_FILE: u64 = 64 * 1024;

/// A file opened for download.
pub struct Download {
    pub file: FileRecord,
    pub len: u64,
    pub body: Body,
}

/// The bytes of a download.
pub enum Body {
    /// Small files, read whole in the call that authorised the download (saves a second trip
    /// to the blocking pool per request).
    Read(bytes::Bytes),
    /// Larger files, open in the store, to be streamed (a range of them).
    Open(Box<dyn BlobHandle>),
}

/// Owners and admins of the file's instance read it without grants.
fn privileged(caller: &Caller, file: &FileRecord, domain: &str) -> bool {
    matches!(caller, Caller::User(p)
        if p.instance.eq_ignore_ascii_case(domain) && access::manages(p, &file.created_by))
}

/// The download path names this file: the extension (and the instance, when given) must match.
pub(super) fn path_matches(
    file: &FileRecord,
    instance: Option<InstanceId>,
    ext: Option<&str>,
) -> bool {
    let ext_ok = match (&file.extension, ext) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    };
    ext_ok && instance.is_none_or(|i| i == file.instance)
}

/// Reads a small blob whole (at most [`SMALL_FILE`] bytes: the caller checked its length);
/// `what` names it in the error.
pub(super) fn read_whole(
    handle: &mut dyn BlobHandle,
    what: &dyn std::fmt::Display,
) -> Result<bytes::Bytes> {
    let mut buf = vec![0; handle.len() as usize];
    let mut got = 0;
    while got < buf.len() {
        match handle.read_at(got as u64, &mut buf[got..])? {
            0 => return Err(Error::Internal(format!("the blob of {what} shrank"))),
            n => got += n,
        }
    }
    Ok(bytes::Bytes::from(buf))
}

impl Service {
    /// The file if `caller` may read it. Missing and forbidden look the same (404); a caller
    /// without a token who finds no anonymous grant gets 401 instead, so clients know to log in.
    pub(super) fn readable(&self, caller: &Caller, id: FileId) -> Result<FileRecord> {
        self.readable_in(caller, id).map(|(file, _, _)| file)
    }

    /// [`Service::readable`], with the file's instance and, for a caller who needs a grant,
    /// until when the grants read allow it (`None` for owners and admins).
    pub(crate) fn readable_in(
        &self,
        caller: &Caller,
        id: FileId,
    ) -> Result<(FileRecord, Instance, Option<Millis>)> {
        let denied = || match caller {
            Caller::Anonymous => Error::Unauthenticated("a token is required for this file".into()),
            Caller::User(_) => Error::not_found(),
        };
        let Some(file) = self.meta.file(id)? else {
            return Err(denied());
        };
        if file.trashed.is_some() {
            return Err(denied());
        }
        let Some(instance) = self.meta.instance(file.instance)? else {
            return Err(denied());
        };
        // Owners and admins need no grant: skip reading the grants on the hot path. Others
        // read only the grants that can reach this file, through indexes: the cost does not
        // grow with the instance's grant count.
        if privileged(caller, &file, &instance.domain) {
            return Ok((file, instance, None));
        }
        // The record and the directories above it are read from one tree (a move in between
        // would make a directory grant look absent).
        let (file, rights) = self.tree.of(file.instance).consistent(|| {
            let Some(file) = self.meta.file(id)?.filter(|f| f.trashed.is_none()) else {
                return Ok((file.clone(), None));
            };
            let mut rights = self.meta.rights_reaching(&file)?;
            // Grants on the directories above it reach it too.
            rights.extend(self.rights_through_directories(&file)?);
            Ok((file, Some(rights)))
        })?;
        let Some(rights) = rights else {
            return Err(denied());
        };
        match access::granted_until(caller, &file, &instance, &rights, now_millis()) {
            Some(until) => Ok((file, instance, Some(until))),
            None => Err(denied()),
        }
    }

    /// Opens a file for download by its path parts: the optional instance prefix and the
    /// extension must match the record (a wrong extension is 404).
    ///
    /// A small file downloaded before is answered from memory, on the calling thread, to its
    /// owner, an admin, or a caller whose grant decision is cached with it (see [`hot`]);
    /// everything else reads storage on the blocking pool.
    pub async fn open_download(
        self: &Arc<Self>,
        caller: Caller,
        instance: Option<InstanceId>,
        id: FileId,
        ext: Option<String>,
    ) -> Result<Download> {
        if let Some(hot::Hit { file: hot, granted }) =
            self.hot.get_fresh(id, &caller, now_millis()).await
        {
            if (granted || privileged(&caller, &hot.file, &hot.domain))
                && path_matches(&hot.file, instance, ext.as_deref())
            {
                return Ok(Download {
                    file: hot.file.clone(),
                    len: hot.bytes.len() as u64,
                    body: Body::Read(hot.bytes.clone()),
                });
            }
        }
        let svc = self.clone();
        blocking(move || {
            let generation = svc.hot.generation();
            let (file, inst, until) = svc.readable_in(&caller, id)?;
            // A directory has no bytes to download.
            if !path_matches(&file, instance, ext.as_deref()) || file.is_directory() {
                return Err(Error::not_found());
            }
            let Some(mut handle) = svc.blobs.open(&file.sha256)? else {
                // The record outlived its bytes (lost, or quarantined by fsck): the operator's
                // problem, so it is logged with what `depot fsck` lists.
                tracing::error!(file = %file.id, blob = %file.sha256, "file content is missing");
                return Err(Error::ContentMissing(format!(
                    "the content of file {} is missing from storage",
                    file.id
                )));
            };
            let len = handle.len();
            if len > SMALL_FILE {
                return Ok(Download {
                    file,
                    len,
                    body: Body::Open(handle),
                });
            }
            let bytes = read_whole(handle.as_mut(), &file.id)?;
            // Kept with the decision that let the caller in, when a grant did: any grant or
            // instance change kills the decision before the call making it returns, and
            // `until` ends it with the grants that allowed it.
            svc.hot.insert(
                generation,
                hot::HotFile {
                    file: file.clone(),
                    domain: inst.domain,
                    bytes: bytes.clone(),
                },
                until.map(|u| (&caller, u)),
            );
            Ok(Download {
                file,
                len,
                body: Body::Read(bytes),
            })
        })
        .await
    }

    /// A file record (and its Image, for images) the caller may read.
    pub async fn get_file(
        self: &Arc<Self>,
        caller: Caller,
        id: FileId,
    ) -> Result<(FileRecord, Option<ImageRecord>)> {
        let svc = self.clone();
        blocking(move || {
            let file = svc.readable(&caller, id)?;
            let image = svc.meta.image(id)?;
            Ok((svc.for_caller(&caller, file)?, image))
        })
        .await
    }

    /// The caller's own files, in upload order, a page at a time (the paging rule of
    /// [`super::query::paging`], at most [`super::query::paging::REST_MAX_PAGE`] a page).
    pub async fn list_files(
        self: &Arc<Self>,
        principal: &Principal,
        directory: Option<String>,
        first: Option<i64>,
        after: Option<FileId>,
    ) -> Result<Page<FileRecord>> {
        use super::query::paging;
        let limit = paging::page_size(first, paging::REST_MAX_PAGE, "first")?;
        let directory = directory
            .map(|d| super::names::normalize_decoded_directory(&d))
            .transpose()?;
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let Some(instance) = svc.meta.instance_by_domain(&p.instance)? else {
                return Ok(Page {
                    items: vec![],
                    has_more: false,
                });
            };
            let scope = match &directory {
                Some(d) => FileScope::Directory(d),
                None => FileScope::Owner(&p.account),
            };
            let own = svc.meta.scan_files(instance.id, scope, after).filter(|f| {
                // Files only: directories are listed by `GET /dirs/**` and `children`.
                f.as_ref().map_or(true, |f| {
                    f.trashed.is_none() && f.created_by == p.account && !f.is_directory()
                })
            });
            let (items, has_more) = paging::take_page(own, limit)?;
            Ok(Page { items, has_more })
        })
        .await
    }

    /// Deletes a file (owner or instance admin). The blob goes once nothing references it.
    pub async fn delete_file(
        self: &Arc<Self>,
        principal: &Principal,
        id: FileId,
    ) -> Result<FileRecord> {
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let file = svc.readable(&Caller::User(p.clone()), id)?;
            if !access::manages(&p, &file.created_by) {
                return Err(Error::Forbidden(
                    "only the owner or an admin may delete this file".into(),
                ));
            }
            if file.is_directory() {
                svc.remove_tree(&p, &file)?;
            } else if !svc.remove_file(&p.account, &file)? {
                return Err(Error::not_found());
            }
            Ok(file)
        })
        .await
    }

    /// Removes a file's record, then its blob when nothing references it any more. False when
    /// the record was already gone. The caller has checked the right to delete.
    /// `actor` is who the deletion is attributed to (webhooks' `file.deleted`).
    pub(super) fn remove_file(&self, actor: &AccountId, file: &FileRecord) -> Result<bool> {
        let guard = self.lock_blobs([&file.sha256])?;
        let _stale = self.hot.change(hot::Scope::File(file.id));
        let deleted = [file].into_iter().filter(|f| !f.is_directory());
        let _events = self.file_events(
            actor,
            crate::meta::webhooks::WebhookEvent::FileDeleted,
            deleted,
        )?;
        let Some((file, left)) = self.meta.delete_file(file.id)? else {
            return Ok(false);
        };
        if left == 0 {
            self.remove_blob(&guard, &file.sha256)?;
        }
        Ok(true)
    }
}
