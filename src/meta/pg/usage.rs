//! Usage counters and quota limits on PostgreSQL (migration 5): `usage_totals` holds the
//! running totals per account (and per instance, under the empty account), `usage_daily` the
//! upload bytes per UTC day, `quota_limits` the limits an admin set. Counters change in the
//! transaction of the record change that moves them ([`apply_usage`]).

use super::{big, count, db_err, in_tx, pool_err, record, PgMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::usage::{
    Counters, QuotaLimits, QuotaScope, Usage, UsageDelta, UsageStore, UtcDay,
};
use crate::meta::Page;
use crate::types::{AccountId, InstanceId};
use deadpool_postgres::Transaction;

/// Applies usage changes inside `tx` (a row that reaches zero stays, unlisted: deleting it
/// would race another transaction's upsert of it): the accounts' rows first, in (instance, account) order,
/// then each instance's total, so two transactions never wait on each other's rows in a cycle.
pub(crate) async fn apply_usage(
    tx: &Transaction<'_>,
    changes: &[(InstanceId, &AccountId, UsageDelta)],
) -> TxResult<()> {
    let mut rows: Vec<(InstanceId, String, UsageDelta)> = Vec::new();
    for (instance, account, delta) in changes {
        if delta.is_empty() {
            continue;
        }
        for who in [account.0.clone(), String::new()] {
            rows.push((*instance, who, *delta));
        }
    }
    // Accounts before instance totals (empty account last), each in key order.
    rows.sort_by(|a, b| {
        (a.1.is_empty(), a.0.to_bytes(), &a.1).cmp(&(b.1.is_empty(), b.0.to_bytes(), &b.1))
    });
    for (instance, who, d) in rows {
        let clamp = |n: i128| i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX });
        tx.execute(
            "INSERT INTO usage_totals (instance, account, bytes, files, variant_bytes)
             VALUES ($1, $2, greatest($3::bigint, 0), greatest($4::bigint, 0), greatest($5::bigint, 0))
             ON CONFLICT (instance, account) DO UPDATE SET
                 bytes = greatest(usage_totals.bytes + $3::bigint, 0),
                 files = greatest(usage_totals.files + $4::bigint, 0),
                 variant_bytes = greatest(usage_totals.variant_bytes + $5::bigint, 0)",
            &[
                &instance.to_bytes().as_slice(),
                &who,
                &clamp(d.bytes),
                &clamp(d.files),
                &clamp(d.variant_bytes),
            ],
        )
        .await?;
        if let (Some(day), true) = (d.day, d.uploaded > 0) {
            tx.execute(
                "INSERT INTO usage_daily (instance, account, day, bytes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (instance, account, day) DO UPDATE SET
                     bytes = usage_daily.bytes + EXCLUDED.bytes",
                &[
                    &instance.to_bytes().as_slice(),
                    &who,
                    &i64::from(day.0),
                    &big(d.uploaded),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

fn counters(row: &tokio_postgres::Row) -> TxResult<Counters> {
    Ok(Counters {
        bytes: count(row.try_get("bytes")?),
        files: count(row.try_get("files")?),
        variant_bytes: count(row.try_get("variant_bytes")?),
    })
}

fn scope_parts(scope: &QuotaScope) -> (&'static str, String) {
    match scope {
        QuotaScope::Instance => ("instance", String::new()),
        QuotaScope::AccountDefault => ("default", String::new()),
        QuotaScope::Account(a) => ("account", a.0.clone()),
    }
}

impl UsageStore for PgMeta {
    fn usage(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        day: UtcDay,
    ) -> Result<Usage> {
        let who = account.map(|a| a.0.clone()).unwrap_or_default();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_one(
                    "SELECT coalesce(t.bytes, 0) AS bytes, coalesce(t.files, 0) AS files,
                            coalesce(t.variant_bytes, 0) AS variant_bytes,
                            coalesce((SELECT d.bytes FROM usage_daily d WHERE d.instance = $1
                                      AND d.account = $2 AND d.day = $3), 0) AS today
                     FROM (SELECT 1) one
                     LEFT JOIN usage_totals t ON t.instance = $1 AND t.account = $2",
                    &[&instance.to_bytes().as_slice(), &who, &i64::from(day.0)],
                )
                .await
                .map_err(db_err)?;
            Ok(Usage {
                counters: counters(&row)?,
                uploaded_today: count(row.try_get("today").map_err(db_err)?),
            })
        })
    }

    fn usage_page(
        &self,
        instance: InstanceId,
        after: Option<&AccountId>,
        limit: usize,
        day: UtcDay,
    ) -> Result<Page<(AccountId, Usage)>> {
        let after = after.map(|a| a.0.clone()).unwrap_or_default();
        let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Accounts sort bytewise (COLLATE "C"), as sled's keys do.
            let rows = c
                .query(
                    "SELECT t.account, t.bytes, t.files, t.variant_bytes,
                            coalesce(d.bytes, 0) AS today
                     FROM usage_totals t
                     LEFT JOIN usage_daily d ON d.instance = t.instance
                          AND d.account = t.account AND d.day = $3
                     WHERE t.instance = $1 AND t.account > $2 COLLATE \"C\"
                       AND (t.bytes > 0 OR t.files > 0 OR t.variant_bytes > 0)
                     ORDER BY t.account COLLATE \"C\" LIMIT $4",
                    &[
                        &instance.to_bytes().as_slice(),
                        &after,
                        &i64::from(day.0),
                        &take,
                    ],
                )
                .await
                .map_err(db_err)?;
            let has_more = rows.len() > limit;
            let items = rows
                .iter()
                .take(limit)
                .map(|r| {
                    let account: String = r.try_get("account")?;
                    Ok((
                        AccountId(account),
                        Usage {
                            counters: counters(r)?,
                            uploaded_today: count(r.try_get("today")?),
                        },
                    ))
                })
                .collect::<TxResult<Vec<_>>>()?;
            Ok(Page { items, has_more })
        })
    }

    fn quota_limits(
        &self,
        instance: InstanceId,
        scope: &QuotaScope,
    ) -> Result<Option<QuotaLimits>> {
        let (kind, who) = scope_parts(scope);
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT limits FROM quota_limits
                     WHERE instance = $1 AND kind = $2 AND account = $3",
                    &[&instance.to_bytes().as_slice(), &kind, &who],
                )
                .await
                .map_err(db_err)?;
            row.map(|r| record(&r, "limits"))
                .transpose()
                .map_err(Error::from)
        })
    }

    fn put_quota_limits(
        &self,
        instance: InstanceId,
        scope: &QuotaScope,
        limits: &QuotaLimits,
    ) -> Result<()> {
        let (kind, who) = scope_parts(scope);
        let limits = *limits;
        let value = serde_json::to_value(limits)?;
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let id = instance.to_bytes();
            if limits.is_unlimited() {
                c.execute(
                    "DELETE FROM quota_limits WHERE instance = $1 AND kind = $2 AND account = $3",
                    &[&id.as_slice(), &kind, &who],
                )
                .await
                .map_err(db_err)?;
            } else {
                c.execute(
                    "INSERT INTO quota_limits (instance, kind, account, limits)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (instance, kind, account) DO UPDATE SET limits = EXCLUDED.limits",
                    &[&id.as_slice(), &kind, &who, &value],
                )
                .await
                .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn all_counters(&self) -> Result<Vec<(InstanceId, Option<AccountId>, Counters)>> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT instance, account, bytes, files, variant_bytes FROM usage_totals
                     WHERE bytes > 0 OR files > 0 OR variant_bytes > 0
                     ORDER BY instance, account COLLATE \"C\"",
                    &[],
                )
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(|r| {
                    let id: Vec<u8> = r.try_get("instance")?;
                    let id = <[u8; 16]>::try_from(id.as_slice()).map_err(|_| {
                        Error::Internal("malformed instance id in usage_totals".into())
                    })?;
                    let account: String = r.try_get("account")?;
                    let account = (!account.is_empty()).then_some(AccountId(account));
                    Ok((InstanceId::from_bytes(id), account, counters(r)?))
                })
                .collect::<TxResult<Vec<_>>>()
                .map_err(Error::from)
        })
    }

    fn set_counters(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        c: &Counters,
    ) -> Result<()> {
        let who = account.map(|a| a.0.clone()).unwrap_or_default();
        let c = *c;
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let id = instance.to_bytes();
                if c == Counters::default() {
                    tx.execute(
                        "DELETE FROM usage_totals WHERE instance = $1 AND account = $2",
                        &[&id.as_slice(), &who],
                    )
                    .await?;
                } else {
                    tx.execute(
                        "INSERT INTO usage_totals (instance, account, bytes, files, variant_bytes)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (instance, account) DO UPDATE SET bytes = EXCLUDED.bytes,
                             files = EXCLUDED.files, variant_bytes = EXCLUDED.variant_bytes",
                        &[
                            &id.as_slice(),
                            &who,
                            &big(c.bytes),
                            &big(c.files),
                            &big(c.variant_bytes),
                        ],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }
}
