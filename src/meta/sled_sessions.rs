//! [`UploadSessionStore`] on sled: the session records, an expiry index for the sweep, a
//! per-account count of open sessions by kind, and Foir's extra File fields.

use super::{abort, decode, owner_key, read_count, usage, FileIndexTx, SledMeta, TxResult};
use crate::error::{Error, Result, SessionFault};
use crate::meta::usage::UsageDelta;
use crate::meta::{
    FileExtras, FileRecord, ImageRecord, Records, SessionState, StoredBytes, UploadSession,
    UploadSessionStore,
};
use crate::types::{AccountId, FileId, InstanceId, Millis, SessionId};
use sled::transaction::TransactionalTree;
use sled::Transactional;

/// `expires ++ id`: the sweep walks sessions in expiry order.
fn expiry_key(s: &UploadSession) -> Vec<u8> {
    let mut k = s.expires.to_be_bytes().to_vec();
    k.extend_from_slice(&s.id.to_bytes());
    k
}

/// The counter of one account's open sessions of one kind.
fn count_key(s: &UploadSession) -> Vec<u8> {
    let mut k = vec![s.kind.tag()];
    k.extend_from_slice(&owner_key(s.instance, &s.account));
    k
}

fn bump(counts: &TransactionalTree, key: &[u8], up: bool) -> TxResult<u64> {
    let n = read_count(counts.get(key)?);
    let n = if up { n + 1 } else { n.saturating_sub(1) };
    if n == 0 {
        counts.remove(key)?;
    } else {
        counts.insert(key, &n.to_be_bytes())?;
    }
    Ok(n)
}

fn load(tree: &TransactionalTree, id: &[u8; 16]) -> TxResult<Option<UploadSession>> {
    match tree.get(id)? {
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(abort),
        None => Ok(None),
    }
}

fn store(tree: &TransactionalTree, s: &UploadSession) -> TxResult<()> {
    let json = serde_json::to_vec(s).map_err(abort)?;
    tree.insert(&s.id.to_bytes(), json)?;
    Ok(())
}

fn gone() -> Error {
    Error::NotFound("no such upload session".into())
}

impl UploadSessionStore for SledMeta {
    fn create_session(&self, session: &UploadSession, max_open: u64) -> Result<()> {
        let ckey = count_key(session);
        (
            &self.sessions,
            &self.sessions_by_expiry,
            &self.session_counts,
        )
            .transaction(|(ts, te, tc)| {
                if session.counts_as_open() {
                    if read_count(tc.get(&ckey)?) >= max_open {
                        return Err(abort(Error::TooManyRequests(format!(
                            "this account has {max_open} open sessions of this kind; \
                             finish or let some expire first"
                        ))));
                    }
                    bump(tc, &ckey, true)?;
                }
                store(ts, session)?;
                te.insert(expiry_key(session), &[])?;
                Ok(())
            })?;
        self.flush()
    }

    fn charge_session_creation(
        &self,
        instance: InstanceId,
        account: &AccountId,
        now: Millis,
        per_minute: u32,
    ) -> Result<()> {
        // `r` ++ owner -> minute (8 bytes) ++ count (4 bytes), beside the open-session counts.
        let mut key = vec![b'r'];
        key.extend_from_slice(&owner_key(instance, account));
        let minute = now / 60_000;
        let mut refused = false;
        self.session_counts.fetch_and_update(&key, |old| {
            let (m, n) = match old {
                Some(v) if v.len() == 12 => {
                    let m = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                    let n = u32::from_be_bytes(v[8..].try_into().unwrap_or_default());
                    (m, n)
                }
                _ => (minute, 0),
            };
            let n = if m == minute { n } else { 0 };
            refused = n >= per_minute;
            let mut v = minute.to_be_bytes().to_vec();
            v.extend_from_slice(&(n + u32::from(!refused)).to_be_bytes());
            Some(v)
        })?;
        if refused {
            return Err(Error::TooManyRequests(format!(
                "at most {per_minute} upload sessions or links a minute per account; \
                 try again later"
            )));
        }
        Ok(())
    }

    fn session(&self, id: SessionId) -> Result<Option<UploadSession>> {
        decode(self.sessions.get(id.to_bytes())?)
    }

    fn complete_session(
        &self,
        id: SessionId,
        bytes: &StoredBytes,
        keep_until: Millis,
    ) -> Result<UploadSession> {
        let key = id.to_bytes();
        let trees = (&self.sessions, &self.sessions_by_expiry, &self.blob_refs);
        let done = trees.transaction(|(ts, te, tr)| {
            let Some(mut s) = load(ts, &key)? else {
                return Err(abort(gone()));
            };
            if s.state != SessionState::Open {
                return Err(abort(Error::Conflict(
                    "this upload URL was used already".into(),
                )));
            }
            s.state = SessionState::Uploaded;
            s.bytes = Some(bytes.clone());
            if keep_until > s.expires {
                te.remove(expiry_key(&s))?;
                s.expires = keep_until;
                te.insert(expiry_key(&s), &[])?;
            }
            store(ts, &s)?;
            let n = read_count(tr.get(bytes.sha.0)?);
            tr.insert(&bytes.sha.0, &(n + 1).to_be_bytes())?;
            Ok(s)
        })?;
        self.flush()?;
        Ok(done)
    }

    fn confirm_session(
        &self,
        id: SessionId,
        file: &FileRecord,
        image: Option<&ImageRecord>,
        extras: &FileExtras,
    ) -> Result<FileId> {
        let key = id.to_bytes();
        let fjson = serde_json::to_vec(file)?;
        let ijson = image.map(serde_json::to_vec).transpose()?;
        let xjson = serde_json::to_vec(extras)?;
        let made = (
            &self.sessions,
            &self.session_counts,
            &self.files,
            &self.images,
            &self.file_extras,
            &self.by_owner,
            &self.by_instance,
            &self.by_dir,
            &self.by_path,
            &self.files_sorted,
            &self.webhook_outbox,
            &self.blob_refs,
        )
            .transaction(|(ts, tc, tf, ti, tx, o, i, d, p, srt, out, tr)| {
                let Some(mut s) = load(ts, &key)? else {
                    return Err(abort(gone()));
                };
                match s.state {
                    SessionState::Confirmed => {
                        return s.file.ok_or_else(|| {
                            abort(Error::Internal("confirmed session without a file".into()))
                        })
                    }
                    SessionState::Open => {
                        return Err(abort(Error::Session(
                            SessionFault::Incomplete,
                            "no bytes were uploaded to this session's URL yet".into(),
                        )))
                    }
                    SessionState::Uploaded => {}
                }
                let fid = file.id.to_bytes();
                tf.insert(&fid, fjson.as_slice())?;
                if let Some(ijson) = &ijson {
                    ti.insert(&fid, ijson.as_slice())?;
                }
                tx.insert(&fid, xjson.as_slice())?;
                FileIndexTx([o, i, d, p, srt]).add(file)?;
                usage::apply_tx(
                    tr,
                    file.instance,
                    &file.created_by,
                    &UsageDelta::added(file),
                )?;
                // The session's blob reference is now the file's: the count stays.
                s.state = SessionState::Confirmed;
                s.file = Some(file.id);
                store(ts, &s)?;
                bump(tc, &count_key(&s), false)?;
                // Only the confirm that made the File announces it.
                super::webhooks::write_staged(out, None)?;
                Ok(file.id)
            })?;
        self.flush()?;
        Ok(made)
    }

    fn delete_session(&self, id: SessionId) -> Result<Option<(UploadSession, Option<u64>)>> {
        let key = id.to_bytes();
        let out = (
            &self.sessions,
            &self.sessions_by_expiry,
            &self.session_counts,
            &self.blob_refs,
        )
            .transaction(|(ts, te, tc, tr)| {
                let Some(s) = load(ts, &key)? else {
                    return Ok(None);
                };
                ts.remove(&key)?;
                te.remove(expiry_key(&s))?;
                if s.counts_as_open() {
                    bump(tc, &count_key(&s), false)?;
                }
                let left = match (&s.state, &s.bytes) {
                    (SessionState::Uploaded, Some(b)) => {
                        let left = read_count(tr.get(b.sha.0)?).saturating_sub(1);
                        if left == 0 {
                            tr.remove(&b.sha.0)?;
                        } else {
                            tr.insert(&b.sha.0, &left.to_be_bytes())?;
                        }
                        Some(left)
                    }
                    _ => None,
                };
                Ok(Some((s, left)))
            })?;
        if out.is_some() {
            self.flush()?;
        }
        Ok(out)
    }

    fn expired_sessions(&self, now: Millis, limit: usize) -> Result<Vec<UploadSession>> {
        let end = now.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for k in self.sessions_by_expiry.range(..end.as_slice()).keys() {
            if out.len() >= limit {
                break;
            }
            let k = k?;
            let Ok(id) = <[u8; 16]>::try_from(&k[8..]) else {
                continue;
            };
            if let Some(s) = self.session(SessionId::from_bytes(id))? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn file_extras(&self, id: FileId) -> Result<Option<FileExtras>> {
        decode(self.file_extras.get(id.to_bytes())?)
    }

    fn all_sessions(&self) -> Records<'_, UploadSession> {
        Box::new(
            self.sessions
                .iter()
                .values()
                .map(|v| Ok(serde_json::from_slice(&v?)?)),
        )
    }

    fn set_session_error(&self, id: SessionId, error: Option<&str>) -> Result<()> {
        let key = id.to_bytes();
        (&self.sessions, &self.webhook_outbox).transaction(|(ts, out)| {
            let Some(mut s) = load(ts, &key)? else {
                return Err(abort(gone()));
            };
            s.error = error.map(str::to_string);
            store(ts, &s)?;
            super::webhooks::write_staged(out, None)
        })?;
        self.flush()
    }

    fn set_session_size(&self, id: SessionId, size: u64) -> Result<UploadSession> {
        let key = id.to_bytes();
        let out = self.sessions.transaction(|ts| {
            let Some(mut s) = load(ts, &key)? else {
                return Err(abort(gone()));
            };
            match s.size {
                Some(have) if have == size => return Ok(s),
                Some(have) => return Err(abort(crate::meta::session::size_conflict(have))),
                None => s.size = Some(size),
            }
            store(ts, &s)?;
            Ok(s)
        })?;
        self.flush()?;
        Ok(out)
    }

    fn replace_content(
        &self,
        id: FileId,
        content: &StoredBytes,
        image: bool,
        updated: Millis,
    ) -> Result<Option<(FileRecord, FileRecord, u64)>> {
        let fid = id.to_bytes();
        let [o, i, d, p, s] = self.file_index_trees();
        let hooks = &self.webhook_outbox;
        let out = (
            &self.files,
            &self.images,
            &self.blob_refs,
            o,
            i,
            d,
            p,
            s,
            hooks,
        )
            .transaction(|(tf, ti, tr, o, i, d, p, s, hooks)| {
                let old: FileRecord = match tf.get(fid)? {
                    Some(v) => serde_json::from_slice(&v).map_err(abort)?,
                    None => return Ok(None),
                };
                if old.trashed.is_some() || old.is_directory() {
                    return Ok(None);
                }
                let mut new = old.clone();
                new.sha256 = content.sha;
                new.size = content.size;
                new.mime = content.mime.clone();
                new.width = content.width;
                new.height = content.height;
                new.updated = updated;
                tf.insert(&fid, serde_json::to_vec(&new).map_err(abort)?)?;
                FileIndexTx([o, i, d, p, s]).replace(&old, &new)?;
                let kept: Option<ImageRecord> = match ti.get(fid)? {
                    Some(v) => serde_json::from_slice(&v).ok(),
                    None => None,
                };
                match (image, content.width, content.height) {
                    (true, Some(width), Some(height)) => {
                        let rec = ImageRecord {
                            file: id,
                            name: new.name.clone(),
                            description: kept.as_ref().and_then(|i| i.description.clone()),
                            location: kept.and_then(|i| i.location),
                            width,
                            height,
                        };
                        ti.insert(&fid, serde_json::to_vec(&rec).map_err(abort)?)?;
                    }
                    _ => {
                        ti.remove(&fid)?;
                    }
                }
                let n = read_count(tr.get(content.sha.0)?);
                tr.insert(&content.sha.0, &(n + 1).to_be_bytes())?;
                let left = read_count(tr.get(old.sha256.0)?).saturating_sub(1);
                if left == 0 {
                    tr.remove(&old.sha256.0)?;
                } else {
                    tr.insert(&old.sha256.0, &left.to_be_bytes())?;
                }
                super::webhooks::write_staged(hooks, Some(&new))?;
                let delta = UsageDelta::replaced(&old, &new);
                usage::apply_tx(tr, new.instance, &new.created_by, &delta)?;
                Ok(Some((new, old, left)))
            })?;
        if out.is_some() {
            self.flush()?;
        }
        Ok(out)
    }
}
