//! Instances, files (with images, refcounts and scans), maintenance walks and the directory
//! tree on PostgreSQL.

use super::usage::apply_usage;
use super::{big, count, db_err, in_tx, json, pool_err, record, PgMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::usage::UsageDelta;
use crate::meta::{
    DirectoryStore, FileRecord, FileScope, FileStore, ImageRecord, Instance, InstanceStore,
    MaintenanceStore, Records,
};
use crate::types::{now_millis, AccountId, FileId, InstanceId, Sha256};
use deadpool_postgres::Transaction;
use std::collections::VecDeque;

/// Rows a lazy scan reads at a time.
pub(crate) const PAGE: i64 = 256;

/// A lazily paged scan: `fetch(cursor)` answers the next page of `(cursor, record)` after
/// `cursor`; a short page ends it.
pub(crate) struct Pages<'a, K, T> {
    pub(crate) meta: &'a PgMeta,
    pub(crate) cursor: K,
    #[allow(clippy::type_complexity)]
    pub(crate) fetch: Box<dyn FnMut(&PgMeta, &K) -> Result<Vec<(K, T)>> + Send + 'a>,
    pub(crate) buf: VecDeque<T>,
    pub(crate) done: bool,
}

impl<'a, K: Send + 'a, T: Send + 'a> Pages<'a, K, T> {
    pub(crate) fn boxed(
        meta: &'a PgMeta,
        cursor: K,
        fetch: impl FnMut(&PgMeta, &K) -> Result<Vec<(K, T)>> + Send + 'a,
    ) -> Records<'a, T> {
        Box::new(Pages {
            meta,
            cursor,
            fetch: Box::new(fetch),
            buf: VecDeque::new(),
            done: false,
        })
    }
}

impl<K, T> Iterator for Pages<'_, K, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.buf.is_empty() && !self.done {
            match (self.fetch)(self.meta, &self.cursor) {
                Ok(rows) => {
                    self.done = (rows.len() as i64) < PAGE;
                    for (k, t) in rows {
                        self.cursor = k;
                        self.buf.push_back(t);
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

fn id_bytes(row: &tokio_postgres::Row, col: &str) -> TxResult<Vec<u8>> {
    Ok(row.try_get(col)?)
}

/// Adds one reference to each blob, in sha order (two inserts never wait on each other in a
/// cycle).
pub(crate) async fn add_refs(tx: &Transaction<'_>, shas: &[Sha256]) -> TxResult<()> {
    let mut shas: Vec<&Sha256> = shas.iter().collect();
    shas.sort_unstable_by_key(|s| s.0);
    for s in shas {
        tx.execute(
            "INSERT INTO blob_refs (sha256, refs) VALUES ($1, 1)
             ON CONFLICT (sha256) DO UPDATE SET refs = blob_refs.refs + 1",
            &[&s.0.as_slice()],
        )
        .await?;
    }
    Ok(())
}

/// Drops one reference to a blob; answers the references left (0 removes the row).
pub(crate) async fn drop_ref(tx: &Transaction<'_>, sha: &Sha256) -> TxResult<u64> {
    let row = tx
        .query_opt(
            "UPDATE blob_refs SET refs = refs - 1 WHERE sha256 = $1 AND refs > 1 RETURNING refs",
            &[&sha.0.as_slice()],
        )
        .await?;
    match row {
        Some(r) => Ok(count(r.try_get(0)?)),
        None => {
            tx.execute(
                "DELETE FROM blob_refs WHERE sha256 = $1",
                &[&sha.0.as_slice()],
            )
            .await?;
            Ok(0)
        }
    }
}

/// Inserts a file record (and its image) with every indexed column.
pub(crate) async fn insert_file(
    tx: &Transaction<'_>,
    f: &FileRecord,
    image: Option<&ImageRecord>,
) -> TxResult<()> {
    tx.execute(
        "INSERT INTO files (id, instance, owner, directory, path, sha256, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &f.id.to_bytes().as_slice(),
            &f.instance.to_bytes().as_slice(),
            &f.created_by.0,
            &f.directory,
            &f.path(),
            &f.sha256.0.as_slice(),
            &json(f)?,
        ],
    )
    .await?;
    if let Some(img) = image {
        tx.execute(
            "INSERT INTO images (file, record) VALUES ($1, $2)
             ON CONFLICT (file) DO UPDATE SET record = EXCLUDED.record",
            &[&f.id.to_bytes().as_slice(), &json(img)?],
        )
        .await?;
    }
    Ok(())
}

impl PgMeta {
    /// One record by a `bytea` key with a query answering a `record` column.
    pub(crate) fn get_one<T>(&self, sql: &'static str, key: Vec<u8>) -> Result<Option<T>>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c.query_opt(sql, &[&key]).await.map_err(db_err)?;
            Ok(row.map(|r| record(&r, "record")).transpose()?)
        })
    }
}

impl InstanceStore for PgMeta {
    fn ensure_instance(&self, domain: &str) -> Result<Instance> {
        if let Some(i) = self.instance_by_domain(domain)? {
            return Ok(i);
        }
        let now = now_millis();
        let fresh = Instance {
            id: InstanceId::new(),
            domain: domain.to_string(),
            anonymous_requests: false,
            created: now,
            updated: now,
        };
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Two nodes racing: one insert wins, both answer its record.
            c.execute(
                "INSERT INTO instances (id, domain, record) VALUES ($1, $2, $3)
                 ON CONFLICT (domain) DO NOTHING",
                &[
                    &fresh.id.to_bytes().as_slice(),
                    &fresh.domain,
                    &json(&fresh)?,
                ],
            )
            .await
            .map_err(db_err)?;
            let row = c
                .query_one(
                    "SELECT record FROM instances WHERE domain = $1",
                    &[&fresh.domain],
                )
                .await
                .map_err(db_err)?;
            Ok(record(&row, "record")?)
        })
    }

    fn instance_by_domain(&self, domain: &str) -> Result<Option<Instance>> {
        let domain = domain.to_string();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt("SELECT record FROM instances WHERE domain = $1", &[&domain])
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| record(&r, "record")).transpose()?)
        })
    }

    fn instance(&self, id: InstanceId) -> Result<Option<Instance>> {
        self.get_one(
            "SELECT record FROM instances WHERE id = $1",
            id.to_bytes().to_vec(),
        )
    }

    fn put_instance(&self, instance: &Instance) -> Result<()> {
        let i = instance.clone();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Replaces the record with the same domain (its id may differ, as in sled).
            c.execute(
                "INSERT INTO instances (id, domain, record) VALUES ($1, $2, $3)
                 ON CONFLICT (domain) DO UPDATE SET id = EXCLUDED.id, record = EXCLUDED.record",
                &[&i.id.to_bytes().as_slice(), &i.domain, &json(&i)?],
            )
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }
}

impl FileStore for PgMeta {
    fn insert_files(&self, files: &[(FileRecord, Option<ImageRecord>)]) -> Result<()> {
        let files = files.to_vec();
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                for (f, img) in &files {
                    insert_file(&tx, f, img.as_ref()).await?;
                }
                let shas: Vec<Sha256> = files.iter().map(|(f, _)| f.sha256).collect();
                add_refs(&tx, &shas).await?;
                super::webhooks::write_outbox(&tx, &staged).await?;
                let changes: Vec<_> = files
                    .iter()
                    .map(|(f, _)| (f.instance, &f.created_by, UsageDelta::added(f)))
                    .collect();
                apply_usage(&tx, &changes).await?;
                Ok(())
            })
        })
    }

    fn file(&self, id: FileId) -> Result<Option<FileRecord>> {
        self.get_one(
            "SELECT record FROM files WHERE id = $1",
            id.to_bytes().to_vec(),
        )
    }

    fn image(&self, id: FileId) -> Result<Option<ImageRecord>> {
        self.get_one(
            "SELECT record FROM images WHERE file = $1",
            id.to_bytes().to_vec(),
        )
    }

    fn scan_files<'a>(
        &'a self,
        instance: InstanceId,
        scope: FileScope<'a>,
        after: Option<FileId>,
    ) -> Records<'a, FileRecord> {
        // Every id sorts after the empty bytea: one query shape per scope, with or without a
        // cursor, each a range of its index.
        let (sql, text): (&'static str, Option<String>) = match scope {
            FileScope::All => (
                "SELECT id, record FROM files WHERE instance = $1 AND id > $2
                 ORDER BY id LIMIT $3",
                None,
            ),
            FileScope::Owner(o) => (
                "SELECT id, record FROM files WHERE instance = $1 AND id > $2 AND owner = $4
                 ORDER BY id LIMIT $3",
                Some(o.0.clone()),
            ),
            FileScope::Directory(d) => (
                "SELECT id, record FROM files WHERE instance = $1 AND id > $2 AND directory = $4
                 ORDER BY id LIMIT $3",
                Some(d.to_string()),
            ),
            FileScope::Path(p) => (
                "SELECT id, record FROM files WHERE instance = $1 AND id > $2 AND path = $4
                 ORDER BY id LIMIT $3",
                Some(p.to_string()),
            ),
        };
        let start = after.map(|a| a.to_bytes().to_vec()).unwrap_or_default();
        let inst = instance.to_bytes().to_vec();
        Pages::boxed(self, start, move |m, cursor: &Vec<u8>| {
            let (inst, cursor, text) = (inst.clone(), cursor.clone(), text.clone());
            m.run(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                let rows = match &text {
                    None => c.query(sql, &[&inst, &cursor, &PAGE]).await,
                    Some(t) => c.query(sql, &[&inst, &cursor, &PAGE, t]).await,
                }
                .map_err(db_err)?;
                rows.iter()
                    .map(|r| Ok((id_bytes(r, "id")?, record(r, "record")?)))
                    .collect::<TxResult<Vec<_>>>()
                    .map_err(Error::from)
            })
        })
    }

    fn update_file(&self, file: &FileRecord) -> Result<()> {
        let f = file.clone();
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                // Only a record that still exists: an update never resurrects a deleted file.
                let n = tx
                    .execute(
                        "UPDATE files SET record = $2 WHERE id = $1",
                        &[&f.id.to_bytes().as_slice(), &json(&f)?],
                    )
                    .await?;
                if n == 0 {
                    return Err(Error::not_found().into());
                }
                super::webhooks::write_outbox(&tx, &staged).await?;
                Ok(())
            })
        })
    }

    fn delete_file(&self, id: FileId) -> Result<Option<(FileRecord, u64)>> {
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                // The DELETE takes the row lock a grant's FOR KEY SHARE waits on (see mod.rs).
                let Some(row) = tx
                    .query_opt(
                        "DELETE FROM files WHERE id = $1 RETURNING record",
                        &[&id.to_bytes().as_slice()],
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let f: FileRecord = record(&row, "record")?;
                // Images, extras and grants on the file cascade too; stars stay, as in sled (file ids
                // are never reused).
                tx.execute(
                    "DELETE FROM rights WHERE instance = $1 AND resource = $2",
                    &[&f.instance.to_bytes().as_slice(), &f.id.to_string()],
                )
                .await?;
                let left = drop_ref(&tx, &f.sha256).await?;
                super::webhooks::write_outbox(&tx, &staged).await?;
                let delta = UsageDelta::removed(&f);
                apply_usage(&tx, &[(f.instance, &f.created_by, delta)]).await?;
                Ok(Some((f, left)))
            })
        })
    }

    fn blob_refs(&self, sha: &Sha256) -> Result<u64> {
        let sha = *sha;
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT refs FROM blob_refs WHERE sha256 = $1",
                    &[&sha.0.as_slice()],
                )
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| count(r.get(0))).unwrap_or(0))
        })
    }
}

impl MaintenanceStore for PgMeta {
    fn all_files(&self) -> Records<'_, FileRecord> {
        Pages::boxed(self, Vec::new(), |m, cursor: &Vec<u8>| {
            let cursor = cursor.clone();
            m.run(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                let rows = c
                    .query(
                        "SELECT id, record FROM files WHERE id > $1 ORDER BY id LIMIT $2",
                        &[&cursor, &PAGE],
                    )
                    .await
                    .map_err(db_err)?;
                rows.iter()
                    .map(|r| Ok((id_bytes(r, "id")?, record(r, "record")?)))
                    .collect::<TxResult<Vec<_>>>()
                    .map_err(Error::from)
            })
        })
    }

    fn all_blob_refs(&self) -> Result<Vec<(Sha256, u64)>> {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query("SELECT sha256, refs FROM blob_refs ORDER BY sha256", &[])
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| {
                    let k: Vec<u8> = r.get(0);
                    let sha = <[u8; 32]>::try_from(k.as_slice())
                        .map_err(|_| Error::Internal("malformed blob reference key".into()))?;
                    Ok((Sha256(sha), count(r.get(1))))
                })
                .collect()
        })
    }

    fn set_blob_refs(&self, sha: &Sha256, refs: u64) -> Result<()> {
        let sha = *sha;
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            if refs == 0 {
                c.execute(
                    "DELETE FROM blob_refs WHERE sha256 = $1",
                    &[&sha.0.as_slice()],
                )
                .await
            } else {
                c.execute(
                    "INSERT INTO blob_refs (sha256, refs) VALUES ($1, $2)
                     ON CONFLICT (sha256) DO UPDATE SET refs = EXCLUDED.refs",
                    &[&sha.0.as_slice(), &big(refs)],
                )
                .await
            }
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn rights_in(&self, instance: InstanceId) -> Result<Vec<crate::meta::AccessRight>> {
        self.rights_where(
            "SELECT record FROM rights WHERE instance = $1 ORDER BY resource, id",
            instance,
            None,
        )
    }

    /// One statement, so one snapshot: the count and the records it counts are seen as of the
    /// same moment (every write changes both in one transaction). Costs a scan of the files and
    /// sessions (no index by hash); fsck asks only about what its walk found odd.
    fn blob_references(&self, sha: &Sha256) -> Result<crate::meta::BlobReferences> {
        let sha = *sha;
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_one(
                    "SELECT (SELECT refs FROM blob_refs WHERE sha256 = $1),
                            (SELECT count(*) FROM files WHERE sha256 = $1),
                            (SELECT count(*) FROM sessions
                              WHERE record->>'state' = 'Uploaded'
                                AND record->'bytes'->>'sha' = $2),
                            (SELECT count(*) FROM variants WHERE sha256 = $1)",
                    &[&sha.0.as_slice(), &sha.to_hex()],
                )
                .await
                .map_err(db_err)?;
            let recorded: Option<i64> = row.try_get(0).map_err(db_err)?;
            let files: i64 = row.try_get(1).map_err(db_err)?;
            let sessions: i64 = row.try_get(2).map_err(db_err)?;
            let variants: i64 = row.try_get(3).map_err(db_err)?;
            Ok(crate::meta::BlobReferences {
                recorded: recorded.map_or(0, count),
                actual: count(files) + count(sessions) + count(variants),
            })
        })
    }
}

impl DirectoryStore for PgMeta {
    fn scan_subtree<'a>(&'a self, instance: InstanceId, path: &'a str) -> Records<'a, FileRecord> {
        // Every path below `/a` starts `/a/`; in byte order they lie in [`/a/`, `/a0`).
        let base = path.trim_end_matches('/');
        let lo = format!("{base}/");
        let hi = format!("{base}0");
        let inst = instance.to_bytes().to_vec();
        Pages::boxed(
            self,
            (String::new(), Vec::new()),
            move |m, (cpath, cid): &(String, Vec<u8>)| {
                let (inst, lo, hi, cpath, cid) = (
                    inst.clone(),
                    lo.clone(),
                    hi.clone(),
                    cpath.clone(),
                    cid.clone(),
                );
                m.run(move |pool| async move {
                    let c = pool.get().await.map_err(pool_err)?;
                    let rows = c
                        .query(
                            "SELECT path, id, record FROM files
                             WHERE instance = $1 AND path >= $2 AND path < $3
                               AND (path, id) > ($4, $5)
                             ORDER BY path, id LIMIT $6",
                            &[&inst, &lo, &hi, &cpath, &cid, &PAGE],
                        )
                        .await
                        .map_err(db_err)?;
                    rows.iter()
                        .map(|r| {
                            Ok((
                                (r.try_get::<_, String>("path")?, id_bytes(r, "id")?),
                                record(r, "record")?,
                            ))
                        })
                        .collect::<TxResult<Vec<_>>>()
                        .map_err(Error::from)
                })
            },
        )
    }

    fn replace_files(&self, changes: &[(FileRecord, FileRecord)]) -> Result<()> {
        for (old, new) in changes {
            if old.id != new.id
                || old.instance != new.instance
                || old.created_by != new.created_by
                || old.sha256 != new.sha256
            {
                return Err(Error::Internal(format!(
                    "a rewrite of file {} may not change its identity, owner or content",
                    old.id
                )));
            }
        }
        let mut changes = changes.to_vec();
        // Rows locked in id order: two rewrites cannot deadlock.
        changes.sort_by_key(|(old, _)| old.id);
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                for (old, new) in &changes {
                    let current: Option<FileRecord> = match tx
                        .query_opt(
                            "SELECT record FROM files WHERE id = $1 FOR UPDATE",
                            &[&old.id.to_bytes().as_slice()],
                        )
                        .await?
                    {
                        Some(r) => Some(record(&r, "record")?),
                        None => None,
                    };
                    if current.as_ref() != Some(old) {
                        return Err(Error::Conflict(format!(
                            "file {} changed meanwhile; try again",
                            old.id
                        ))
                        .into());
                    }
                    tx.execute(
                        "UPDATE files SET directory = $2, path = $3, record = $4 WHERE id = $1",
                        &[
                            &new.id.to_bytes().as_slice(),
                            &new.directory,
                            &new.path(),
                            &json(new)?,
                        ],
                    )
                    .await?;
                }
                super::webhooks::write_outbox(&tx, &staged).await?;
                Ok(())
            })
        })
    }

    fn set_star(
        &self,
        instance: InstanceId,
        account: &AccountId,
        file: FileId,
        on: bool,
    ) -> Result<()> {
        let account = account.0.clone();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let sql = if on {
                "INSERT INTO stars (instance, account, file) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM stars WHERE instance = $1 AND account = $2 AND file = $3"
            };
            c.execute(
                sql,
                &[
                    &instance.to_bytes().as_slice(),
                    &account,
                    &file.to_bytes().as_slice(),
                ],
            )
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }

    fn starred(&self, instance: InstanceId, account: &AccountId, file: FileId) -> Result<bool> {
        let account = account.0.clone();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT 1 FROM stars WHERE instance = $1 AND account = $2 AND file = $3",
                    &[
                        &instance.to_bytes().as_slice(),
                        &account,
                        &file.to_bytes().as_slice(),
                    ],
                )
                .await
                .map_err(db_err)?;
            Ok(row.is_some())
        })
    }
}
