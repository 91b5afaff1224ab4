//! Image variant records on PostgreSQL: the `variants` table (migration 4); each row's blob
//! reference is counted in `blob_refs` in the same transaction.

use super::files::{add_refs, drop_ref, Pages, PAGE};
use super::usage::apply_usage;
use super::{db_err, in_tx, json, pool_err, record, PgMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::usage::UsageDelta;
use crate::meta::{Records, VariantKey, VariantRecord, VariantStore};
use crate::types::Sha256;

impl VariantStore for PgMeta {
    fn variant(&self, key: &VariantKey) -> Result<Option<VariantRecord>> {
        let key = key.0.clone();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt("SELECT record FROM variants WHERE key = $1", &[&key])
                .await
                .map_err(db_err)?;
            row.map(|r| record(&r, "record"))
                .transpose()
                .map_err(Error::from)
        })
    }

    fn put_variant(&self, v: &VariantRecord) -> Result<VariantRecord> {
        let v = v.clone();
        let rec = json(&v)?;
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let inserted = tx
                    .execute(
                        "INSERT INTO variants (key, source, sha256, record) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (key) DO NOTHING",
                        &[&v.key.0, &v.source.0.as_slice(), &v.sha.0.as_slice(), &rec],
                    )
                    .await?;
                if inserted == 1 {
                    add_refs(&tx, &[v.sha]).await?;
                    if let Some((instance, account)) = &v.charged_to {
                        let delta = UsageDelta::variant(v.size, true);
                        apply_usage(&tx, &[(*instance, account, delta)]).await?;
                    }
                    return Ok(v.clone());
                }
                let row = tx
                    .query_one("SELECT record FROM variants WHERE key = $1", &[&v.key.0])
                    .await?;
                record::<VariantRecord>(&row, "record")
            })
        })
    }

    fn variants_of(&self, source: &Sha256) -> Result<Vec<VariantRecord>> {
        let source = *source;
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT record FROM variants WHERE source = $1 ORDER BY key",
                    &[&source.0.as_slice()],
                )
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| record(r, "record"))
                .collect::<TxResult<Vec<_>>>()
                .map_err(Error::from)
        })
    }

    fn delete_variants_of(&self, source: &Sha256) -> Result<Vec<(VariantRecord, u64)>> {
        let source = *source;
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let rows = tx
                    .query(
                        "DELETE FROM variants WHERE source = $1 RETURNING record",
                        &[&source.0.as_slice()],
                    )
                    .await?;
                let mut gone = rows
                    .iter()
                    .map(|r| record::<VariantRecord>(r, "record"))
                    .collect::<TxResult<Vec<_>>>()?;
                // Counts change in sha order, as everywhere (no two transactions wait on each
                // other in a cycle).
                gone.sort_by_key(|v| v.sha.0);
                let mut out = Vec::with_capacity(gone.len());
                for v in gone {
                    let left = drop_ref(&tx, &v.sha).await?;
                    out.push((v, left));
                }
                let changes: Vec<_> = out
                    .iter()
                    .filter_map(|(v, _)| {
                        let (instance, account) = v.charged_to.as_ref()?;
                        Some((*instance, account, UsageDelta::variant(v.size, false)))
                    })
                    .collect();
                apply_usage(&tx, &changes).await?;
                Ok(out)
            })
        })
    }

    fn all_variants(&self) -> Records<'_, VariantRecord> {
        Pages::boxed(self, String::new(), |m, cursor: &String| {
            let cursor = cursor.clone();
            m.run(move |pool| async move {
                let c = pool.get().await.map_err(pool_err)?;
                let rows = c
                    .query(
                        "SELECT key, record FROM variants WHERE key > $1 ORDER BY key LIMIT $2",
                        &[&cursor, &PAGE],
                    )
                    .await
                    .map_err(db_err)?;
                rows.iter()
                    .map(|r| {
                        let key: String = r.try_get("key")?;
                        Ok((key, record(r, "record")?))
                    })
                    .collect::<TxResult<Vec<_>>>()
                    .map_err(Error::from)
            })
        })
    }
}
