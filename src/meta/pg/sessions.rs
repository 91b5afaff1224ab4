//! Upload sessions on PostgreSQL: one row per session (locked `FOR UPDATE` while its state
//! moves), an expiry index for the sweep, open-session caps under an advisory lock.

use super::files::{add_refs, drop_ref, insert_file, Pages};
use super::usage::apply_usage;
use super::{big, count, db_err, in_tx, json, lock_key, pool_err, record, PgMeta, TxResult};
use crate::error::{Error, Result, SessionFault};
use crate::meta::usage::UsageDelta;
use crate::meta::{
    FileExtras, FileRecord, ImageRecord, Records, SessionState, StoredBytes, UploadSession,
    UploadSessionStore,
};
use crate::types::{AccountId, FileId, InstanceId, Millis, SessionId};
use deadpool_postgres::Transaction;

fn gone() -> Error {
    Error::NotFound("no such upload session".into())
}

fn kind(s: &UploadSession) -> String {
    char::from(s.kind.tag()).to_string()
}

/// The session, locked until the transaction ends.
async fn locked(tx: &Transaction<'_>, id: SessionId) -> TxResult<Option<UploadSession>> {
    match tx
        .query_opt(
            "SELECT record FROM sessions WHERE id = $1 FOR UPDATE",
            &[&id.to_bytes().as_slice()],
        )
        .await?
    {
        Some(r) => Ok(Some(record(&r, "record")?)),
        None => Ok(None),
    }
}

async fn store(tx: &Transaction<'_>, s: &UploadSession) -> TxResult<()> {
    tx.execute(
        "UPDATE sessions SET open = $2, expires = $3, record = $4 WHERE id = $1",
        &[
            &s.id.to_bytes().as_slice(),
            &s.counts_as_open(),
            &big(s.expires),
            &json(s)?,
        ],
    )
    .await?;
    Ok(())
}

impl UploadSessionStore for PgMeta {
    fn create_session(&self, session: &UploadSession, max_open: u64) -> Result<()> {
        let s = session.clone();
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let (inst, k) = (s.instance.to_bytes(), kind(&s));
                if s.counts_as_open() {
                    // Serialises session creation per account and kind, across nodes.
                    let key = lock_key(&[b"sessions", k.as_bytes(), &inst, s.account.0.as_bytes()]);
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                        .await?;
                    let row = tx
                        .query_one(
                            "SELECT count(*) FROM sessions
                             WHERE kind = $1 AND instance = $2 AND account = $3 AND open",
                            &[&k, &inst.as_slice(), &s.account.0],
                        )
                        .await?;
                    if count(row.try_get(0)?) >= max_open {
                        return Err(Error::TooManyRequests(format!(
                            "this account has {max_open} open sessions of this kind; \
                             finish or let some expire first"
                        ))
                        .into());
                    }
                }
                tx.execute(
                    "INSERT INTO sessions (id, instance, account, kind, open, expires, record)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &s.id.to_bytes().as_slice(),
                        &inst.as_slice(),
                        &s.account.0,
                        &k,
                        &s.counts_as_open(),
                        &big(s.expires),
                        &json(&s)?,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn charge_session_creation(
        &self,
        instance: InstanceId,
        account: &AccountId,
        now: Millis,
        per_minute: u32,
    ) -> Result<()> {
        let refused = || {
            Error::TooManyRequests(format!(
                "at most {per_minute} upload sessions or links a minute per account; \
                 try again later"
            ))
        };
        if per_minute == 0 {
            return Err(refused());
        }
        let (inst, account) = (instance.to_bytes().to_vec(), account.0.clone());
        let minute = big(now / 60_000);
        let limit = i64::from(per_minute);
        // One upsert: a new minute starts the count at 1, the same minute adds 1 unless the
        // limit is reached (then the WHERE keeps the row and nothing comes back). Concurrent
        // charges of one account wait on the row's lock, across nodes.
        let charged = self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "INSERT INTO session_rates (instance, account, minute, count)
                     VALUES ($1, $2, $3, 1)
                     ON CONFLICT (instance, account) DO UPDATE SET
                         minute = EXCLUDED.minute,
                         count = CASE WHEN session_rates.minute = EXCLUDED.minute
                                      THEN session_rates.count + 1 ELSE 1 END
                     WHERE session_rates.minute <> EXCLUDED.minute
                        OR session_rates.count < $4
                     RETURNING count",
                    &[&inst, &account, &minute, &limit],
                )
                .await
                .map_err(db_err)?;
            Ok(row.is_some())
        })?;
        if charged {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn session(&self, id: SessionId) -> Result<Option<UploadSession>> {
        self.get_one(
            "SELECT record FROM sessions WHERE id = $1",
            id.to_bytes().to_vec(),
        )
    }

    fn complete_session(
        &self,
        id: SessionId,
        bytes: &StoredBytes,
        keep_until: Millis,
    ) -> Result<UploadSession> {
        let bytes = bytes.clone();
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let Some(mut s) = locked(&tx, id).await? else {
                    return Err(gone().into());
                };
                if s.state != SessionState::Open {
                    return Err(Error::Conflict("this upload URL was used already".into()).into());
                }
                s.state = SessionState::Uploaded;
                s.bytes = Some(bytes.clone());
                s.expires = s.expires.max(keep_until);
                store(&tx, &s).await?;
                add_refs(&tx, &[bytes.sha]).await?;
                Ok(s)
            })
        })
    }

    fn confirm_session(
        &self,
        id: SessionId,
        file: &FileRecord,
        image: Option<&ImageRecord>,
        extras: &FileExtras,
    ) -> Result<FileId> {
        let (file, image, extras) = (file.clone(), image.cloned(), extras.clone());
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let Some(mut s) = locked(&tx, id).await? else {
                    return Err(gone().into());
                };
                match s.state {
                    SessionState::Confirmed => {
                        return s.file.ok_or_else(|| {
                            Error::Internal("confirmed session without a file".into()).into()
                        })
                    }
                    SessionState::Open => {
                        return Err(Error::Session(
                            SessionFault::Incomplete,
                            "no bytes were uploaded to this session's URL yet".into(),
                        )
                        .into())
                    }
                    SessionState::Uploaded => {}
                }
                insert_file(&tx, &file, image.as_ref()).await?;
                tx.execute(
                    "INSERT INTO file_extras (file, record) VALUES ($1, $2)",
                    &[&file.id.to_bytes().as_slice(), &json(&extras)?],
                )
                .await?;
                let delta = UsageDelta::added(&file);
                apply_usage(&tx, &[(file.instance, &file.created_by, delta)]).await?;
                // The session's blob reference is now the file's: the count stays.
                s.state = SessionState::Confirmed;
                s.file = Some(file.id);
                store(&tx, &s).await?;
                // Only the confirm that made the File announces it.
                super::webhooks::write_outbox(&tx, &staged).await?;
                Ok(file.id)
            })
        })
    }

    fn delete_session(&self, id: SessionId) -> Result<Option<(UploadSession, Option<u64>)>> {
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let Some(row) = tx
                    .query_opt(
                        "DELETE FROM sessions WHERE id = $1 RETURNING record",
                        &[&id.to_bytes().as_slice()],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let s: UploadSession = record(&row, "record")?;
                let left = match (&s.state, &s.bytes) {
                    (SessionState::Uploaded, Some(b)) => Some(drop_ref(&tx, &b.sha).await?),
                    _ => None,
                };
                Ok(Some((s, left)))
            })
        })
    }

    fn expired_sessions(&self, now: Millis, limit: usize) -> Result<Vec<UploadSession>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT record FROM sessions WHERE expires <= $1 ORDER BY expires, id LIMIT $2",
                    &[&big(now), &limit],
                )
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| record(r, "record"))
                .collect::<TxResult<Vec<_>>>()
                .map_err(Error::from)
        })
    }

    fn file_extras(&self, id: FileId) -> Result<Option<FileExtras>> {
        self.get_one(
            "SELECT record FROM file_extras WHERE file = $1",
            id.to_bytes().to_vec(),
        )
    }

    fn all_sessions(&self) -> Records<'_, UploadSession> {
        Pages::boxed(self, Vec::new(), |m, cursor: &Vec<u8>| {
            let cursor = cursor.clone();
            m.run(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                let rows = c
                    .query(
                        "SELECT id, record FROM sessions WHERE id > $1 ORDER BY id LIMIT $2",
                        &[&cursor, &super::files::PAGE],
                    )
                    .await
                    .map_err(db_err)?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<_, Vec<u8>>("id")?, record(r, "record")?)))
                    .collect::<TxResult<Vec<_>>>()
                    .map_err(Error::from)
            })
        })
    }

    fn set_session_error(&self, id: SessionId, error: Option<&str>) -> Result<()> {
        let error = error.map(str::to_string);
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let Some(mut s) = locked(&tx, id).await? else {
                    return Err(gone().into());
                };
                s.error = error.clone();
                store(&tx, &s).await?;
                super::webhooks::write_outbox(&tx, &staged).await?;
                Ok(())
            })
        })
    }

    fn set_session_size(&self, id: SessionId, size: u64) -> Result<UploadSession> {
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let Some(mut s) = locked(&tx, id).await? else {
                    return Err(gone().into());
                };
                match s.size {
                    Some(have) if have == size => return Ok(s),
                    Some(have) => return Err(crate::meta::session::size_conflict(have).into()),
                    None => s.size = Some(size),
                }
                store(&tx, &s).await?;
                Ok(s)
            })
        })
    }

    fn replace_content(
        &self,
        id: FileId,
        content: &StoredBytes,
        image: bool,
        updated: Millis,
    ) -> Result<Option<(FileRecord, FileRecord, u64)>> {
        let content = content.clone();
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let fid = id.to_bytes();
                let Some(row) = tx
                    .query_opt(
                        "SELECT record FROM files WHERE id = $1 FOR UPDATE",
                        &[&fid.as_slice()],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let old: FileRecord = record(&row, "record")?;
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
                tx.execute(
                    "UPDATE files SET sha256 = $2, record = $3 WHERE id = $1",
                    &[&fid.as_slice(), &new.sha256.0.as_slice(), &json(&new)?],
                )
                .await?;
                let kept: Option<ImageRecord> = match tx
                    .query_opt(
                        "SELECT record FROM images WHERE file = $1",
                        &[&fid.as_slice()],
                    )
                    .await?
                {
                    Some(r) => record(&r, "record").ok(),
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
                        tx.execute(
                            "INSERT INTO images (file, record) VALUES ($1, $2)
                             ON CONFLICT (file) DO UPDATE SET record = EXCLUDED.record",
                            &[&fid.as_slice(), &json(&rec)?],
                        )
                        .await?;
                    }
                    _ => {
                        tx.execute("DELETE FROM images WHERE file = $1", &[&fid.as_slice()])
                            .await?;
                    }
                }
                // Reference changes in sha order, as everywhere (no lock cycles across nodes).
                let left = if new.sha256.0 <= old.sha256.0 {
                    add_refs(&tx, &[new.sha256]).await?;
                    drop_ref(&tx, &old.sha256).await?
                } else {
                    let left = drop_ref(&tx, &old.sha256).await?;
                    add_refs(&tx, &[new.sha256]).await?;
                    left
                };
                let staged = crate::meta::webhooks::with_written(&staged, &new);
                super::webhooks::write_outbox(&tx, &staged).await?;
                let delta = UsageDelta::replaced(&old, &new);
                apply_usage(&tx, &[(new.instance, &new.created_by, delta)]).await?;
                Ok(Some((new.clone(), old.clone(), left)))
            })
        })
    }
}
