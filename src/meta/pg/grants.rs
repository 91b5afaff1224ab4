//! Grants on PostgreSQL: one row per grant with the columns its lookups need (resource,
//! grantor, members as a GIN-indexed array, the file it is on).

use super::{count, db_err, in_tx, json, lock_key, pool_err, record, PgMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::{AccessRight, FileRecord, GrantStore};
use crate::types::{AccountId, FileId, InstanceId, RightId};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

type Param = Box<dyn ToSql + Send + Sync>;

fn grantor_lock(instance: InstanceId, grantor: &AccountId) -> i64 {
    lock_key(&[b"grants", &instance.to_bytes(), grantor.0.as_bytes()])
}

async fn grants_of(tx: &Transaction<'_>, instance: &[u8], grantor: &str) -> TxResult<u64> {
    let row = tx
        .query_one(
            "SELECT count(*) FROM rights WHERE instance = $1 AND created_by = $2",
            &[&instance, &grantor],
        )
        .await?;
    Ok(count(row.try_get(0)?))
}

impl PgMeta {
    /// The grants a query with a `record` column answers, in its order.
    pub(crate) fn rights_where(
        &self,
        sql: &'static str,
        instance: InstanceId,
        more: Option<Vec<Param>>,
    ) -> Result<Vec<AccessRight>> {
        let inst = instance.to_bytes().to_vec();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&inst];
            let more = more.unwrap_or_default();
            for p in &more {
                params.push(p.as_ref());
            }
            let rows = c.query(sql, &params).await.map_err(db_err)?;
            rows.iter()
                .map(|r| record(r, "record"))
                .collect::<TxResult<Vec<_>>>()
                .map_err(Error::from)
        })
    }
}

impl GrantStore for PgMeta {
    fn put_rights(&self, rights: &[AccessRight], max_per_grantor: u64) -> Result<()> {
        let rights = rights.to_vec();
        let mut grantors: Vec<(InstanceId, AccountId)> = rights
            .iter()
            .map(|r| (r.instance, r.created_by.clone()))
            .collect();
        grantors.sort_by(|a, b| (a.0, &a.1 .0).cmp(&(b.0, &b.1 .0)));
        grantors.dedup();
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                // One writer per grantor at a time: the cap counts rows that a row lock could not
                // guard (they do not exist yet). Locks taken in a fixed order.
                let mut keys: Vec<i64> =
                    grantors.iter().map(|(i, g)| grantor_lock(*i, g)).collect();
                keys.sort_unstable();
                keys.dedup();
                for k in &keys {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[k]).await?;
                }
                let mut before = Vec::with_capacity(grantors.len());
                for (i, g) in &grantors {
                    before.push(grants_of(&tx, &i.to_bytes(), &g.0).await?);
                }
                for r in &rights {
                    let mut on_file = None;
                    if let Ok(fid) = r.resource.parse::<FileId>() {
                        // FOR KEY SHARE: a concurrent delete of the file waits for this grant
                        // (and then removes it), or this waits and finds the file gone.
                        let row = tx
                            .query_opt(
                                "SELECT instance FROM files WHERE id = $1 FOR KEY SHARE",
                                &[&fid.to_bytes().as_slice()],
                            )
                            .await?;
                        let same = match &row {
                            Some(row) => {
                                row.try_get::<_, Vec<u8>>(0)? == r.instance.to_bytes().as_slice()
                            }
                            None => false,
                        };
                        if !same {
                            return Err(
                                Error::NotFound(format!("no such file {}", r.resource)).into()
                            );
                        }
                        on_file = Some(fid.to_bytes().to_vec());
                    }
                    // An upsert may re-point a grant: every column follows the new record.
                    tx.execute(
                        "INSERT INTO rights
                           (id, instance, created_by, resource, file, granted_by_admin, members,
                            record)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (id) DO UPDATE SET
                           instance = EXCLUDED.instance, created_by = EXCLUDED.created_by,
                           resource = EXCLUDED.resource, file = EXCLUDED.file,
                           granted_by_admin = EXCLUDED.granted_by_admin,
                           members = EXCLUDED.members, record = EXCLUDED.record",
                        &[
                            &r.id.to_bytes().as_slice(),
                            &r.instance.to_bytes().as_slice(),
                            &r.created_by.0,
                            &r.resource,
                            &on_file,
                            &r.granted_by_admin,
                            &r.members,
                            &json(r)?,
                        ],
                    )
                    .await?;
                }
                for ((i, g), before) in grantors.iter().zip(before) {
                    let after = grants_of(&tx, &i.to_bytes(), &g.0).await?;
                    if after > max_per_grantor && after > before {
                        return Err(Error::TooManyRequests(format!(
                            "an account may hold at most {max_per_grantor} access rights in an \
                             instance ({before} held, {} more asked for): revoke some first",
                            after - before
                        ))
                        .into());
                    }
                }
                super::webhooks::write_outbox(&tx, &staged).await?;
                Ok(())
            })
        })
    }

    fn right(&self, id: RightId) -> Result<Option<AccessRight>> {
        self.get_one(
            "SELECT record FROM rights WHERE id = $1",
            id.to_bytes().to_vec(),
        )
    }

    fn rights_on(&self, instance: InstanceId, resource: &str) -> Result<Vec<AccessRight>> {
        self.rights_where(
            "SELECT record FROM rights WHERE instance = $1 AND resource = $2 ORDER BY id",
            instance,
            Some(vec![Box::new(resource.to_string())]),
        )
    }

    fn rights_naming(&self, instance: InstanceId, members: &[&str]) -> Result<Vec<AccessRight>> {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        self.rights_where(
            "SELECT record FROM rights WHERE instance = $1 AND members && $2::text[] ORDER BY id",
            instance,
            Some(vec![Box::new(members)]),
        )
    }

    fn rights_reaching(&self, file: &FileRecord) -> Result<Vec<AccessRight>> {
        self.rights_where(
            "SELECT record FROM rights WHERE instance = $1
               AND (resource = $2 OR (resource = '*' AND (granted_by_admin OR created_by = $3)))
             ORDER BY id",
            file.instance,
            Some(vec![
                Box::new(file.id.to_string()),
                Box::new(file.created_by.0.clone()),
            ]),
        )
    }

    fn wildcards_by(&self, instance: InstanceId, grantor: &AccountId) -> Result<Vec<AccessRight>> {
        self.rights_where(
            "SELECT record FROM rights WHERE instance = $1 AND resource = '*' AND created_by = $2
             ORDER BY id",
            instance,
            Some(vec![Box::new(grantor.0.clone())]),
        )
    }

    fn grant_count(&self, instance: InstanceId, grantor: &AccountId) -> Result<u64> {
        let (inst, grantor) = (instance.to_bytes().to_vec(), grantor.0.clone());
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_one(
                    "SELECT count(*) FROM rights WHERE instance = $1 AND created_by = $2",
                    &[&inst, &grantor],
                )
                .await
                .map_err(db_err)?;
            Ok(count(row.get(0)))
        })
    }

    fn delete_right(&self, id: RightId) -> Result<bool> {
        let staged = crate::meta::webhooks::staged(None);
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let n = tx
                    .execute(
                        "DELETE FROM rights WHERE id = $1",
                        &[&id.to_bytes().as_slice()],
                    )
                    .await?;
                // Only a revoke that removed a grant is an event.
                if n > 0 {
                    super::webhooks::write_outbox(&tx, &staged).await?;
                }
                Ok(n > 0)
            })
        })
    }
}
