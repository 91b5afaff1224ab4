//! Webhooks and their outbox on PostgreSQL (migration 5).
//!
//! A change's deliveries are inserted by [`write_outbox`] inside the change's own transaction.
//! Several nodes run a delivery worker each: [`WebhookStore::due_deliveries`] claims each
//! webhook's oldest pending delivery with a lease (`lease_until`), in one `UPDATE` whose row
//! lock and re-check (READ COMMITTED re-evaluates the `WHERE` on the row as committed) let only
//! one node claim it; a webhook whose head is leased is skipped, so its later deliveries wait
//! and stay in order. A node that dies mid-delivery loses its lease when it runs out.

use super::{big, db_err, in_tx, json, lock_key, pool_err, record, PgMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::webhooks::{Delivery, DeliveryStatus, Webhook, WebhookStore};
use crate::types::{DeliveryId, InstanceId, Millis, WebhookId};
use deadpool_postgres::Transaction;

/// Adds `deliveries` (staged by the service for this change) in the change's transaction.
pub(crate) async fn write_outbox(tx: &Transaction<'_>, deliveries: &[Delivery]) -> TxResult<()> {
    for d in deliveries {
        tx.execute(
            "INSERT INTO webhook_deliveries (id, webhook, pending, next_attempt, record) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &d.id.to_bytes().as_slice(),
                &d.webhook.to_bytes().as_slice(),
                &(d.status == DeliveryStatus::Pending),
                &big(d.next_attempt),
                &json(d)?,
            ],
        )
        .await?;
    }
    Ok(())
}

impl WebhookStore for PgMeta {
    fn create_webhook(&self, hook: &Webhook, max_per_instance: usize) -> Result<()> {
        let hook = hook.clone();
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let instance = hook.instance.to_bytes();
                // One creator per instance at a time: the cap counts rows a row lock cannot
                // guard (they do not exist yet).
                let k = lock_key(&[b"webhooks", &instance]);
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&k])
                    .await?;
                let have: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM webhooks WHERE instance = $1",
                        &[&instance.as_slice()],
                    )
                    .await?
                    .try_get(0)?;
                if have >= big(max_per_instance as u64) {
                    return Err(Error::TooManyRequests(format!(
                        "an instance may have at most {max_per_instance} webhooks: delete one first"
                    ))
                    .into());
                }
                tx.execute(
                    "INSERT INTO webhooks (id, instance, record) VALUES ($1, $2, $3)",
                    &[
                        &hook.id.to_bytes().as_slice(),
                        &instance.as_slice(),
                        &json(&hook)?,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT record FROM webhooks WHERE id = $1",
                    &[&id.to_bytes().as_slice()],
                )
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| record(&r, "record")).transpose()?)
        })
    }

    fn webhooks_of(&self, instance: InstanceId) -> Result<Vec<Webhook>> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT record FROM webhooks WHERE instance = $1 ORDER BY id",
                    &[&instance.to_bytes().as_slice()],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| record(r, "record"))
                .collect::<TxResult<Vec<_>>>()?)
        })
    }

    fn delete_webhook(&self, id: WebhookId) -> Result<bool> {
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let key = id.to_bytes();
                let n = tx
                    .execute("DELETE FROM webhooks WHERE id = $1", &[&key.as_slice()])
                    .await?;
                tx.execute(
                    "DELETE FROM webhook_deliveries WHERE webhook = $1",
                    &[&key.as_slice()],
                )
                .await?;
                Ok(n > 0)
            })
        })
    }

    fn enqueue(&self, deliveries: &[Delivery]) -> Result<()> {
        let deliveries = deliveries.to_vec();
        self.run(move |pool| async move { in_tx!(pool, |tx| write_outbox(&tx, &deliveries).await) })
    }

    fn due_deliveries(&self, now: Millis, limit: usize, lease_ms: u64) -> Result<Vec<Delivery>> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Deliveries of a webhook that is gone (deleted while a change wrote them) are
            // never claimed: the join leaves them out.
            let rows = c
                .query(
                    // One index probe per webhook, however long a backlog is.
                    "WITH heads AS ( \
                         SELECT h.seq, h.next_attempt, h.lease_until FROM webhooks w \
                         CROSS JOIN LATERAL ( \
                             SELECT d.seq, d.next_attempt, d.lease_until \
                             FROM webhook_deliveries d WHERE d.webhook = w.id AND d.pending \
                             ORDER BY d.seq LIMIT 1) h) \
                     UPDATE webhook_deliveries d SET lease_until = $2 \
                     FROM (SELECT seq FROM heads WHERE next_attempt <= $1 AND lease_until <= $1 \
                           ORDER BY seq LIMIT $3) h \
                     WHERE d.seq = h.seq AND d.pending AND d.lease_until <= $1 \
                     RETURNING d.record",
                    &[
                        &big(now),
                        &big(now.saturating_add(lease_ms)),
                        &big(limit as u64),
                    ],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| record(r, "record"))
                .collect::<TxResult<Vec<_>>>()?)
        })
    }

    fn record_attempt(&self, delivery: &Delivery, keep: usize) -> Result<()> {
        let d = delivery.clone();
        self.run(move |pool| async move {
            in_tx!(pool, |tx| {
                let pending = d.status == DeliveryStatus::Pending;
                tx.execute(
                    "UPDATE webhook_deliveries SET record = $2, pending = $3, next_attempt = $4, \
                     lease_until = 0 WHERE id = $1",
                    &[
                        &d.id.to_bytes().as_slice(),
                        &json(&d)?,
                        &pending,
                        &big(d.next_attempt),
                    ],
                )
                .await?;
                if !pending {
                    tx.execute(
                        "DELETE FROM webhook_deliveries WHERE seq IN ( \
                             SELECT seq FROM webhook_deliveries WHERE webhook = $1 AND NOT pending \
                             ORDER BY seq DESC OFFSET $2)",
                        &[&d.webhook.to_bytes().as_slice(), &big(keep as u64)],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn deliveries(&self, webhook: WebhookId, limit: usize) -> Result<Vec<Delivery>> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT record FROM webhook_deliveries WHERE webhook = $1 \
                     ORDER BY seq DESC LIMIT $2",
                    &[&webhook.to_bytes().as_slice(), &big(limit as u64)],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| record(r, "record"))
                .collect::<TxResult<Vec<_>>>()?)
        })
    }

    fn delivery(&self, webhook: WebhookId, id: DeliveryId) -> Result<Option<Delivery>> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_opt(
                    "SELECT record FROM webhook_deliveries WHERE webhook = $1 AND id = $2",
                    &[&webhook.to_bytes().as_slice(), &id.to_bytes().as_slice()],
                )
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| record(&r, "record")).transpose()?)
        })
    }
}
