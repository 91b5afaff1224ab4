//! Webhooks and their outbox on sled.
//!
//! `webhooks`: webhook id -> record; `webhooks_by_instance`: `instance ++ webhook id` -> empty.
//! `webhook_outbox`, one tree so a change's transaction adds a single tree:
//! - `'d' ++ webhook ++ seq` -> the delivery (its log entry once finished);
//! - `'p' ++ webhook ++ seq` -> empty while it is pending;
//! - `'i' ++ webhook ++ delivery id` -> seq, to find a delivery by its id;
//! - `'f' ++ webhook ++ seq` -> empty once it is finished (the log to trim, apart from a
//!   backlog of pending ones, so trimming costs what the log holds).
//!
//! `seq` is sled's monotonic id (big-endian), so a webhook's deliveries sort in commit order.

use super::{abort, decode, SledMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::webhooks::{staged, Delivery, DeliveryStatus, Webhook, WebhookStore};
use crate::meta::FileRecord;
use crate::types::{DeliveryId, InstanceId, Millis, WebhookId};
use sled::transaction::TransactionalTree;
use std::sync::Mutex;

const DELIVERY: u8 = b'd';
const PENDING: u8 = b'p';
const BY_ID: u8 = b'i';
const FINISHED: u8 = b'f';

/// Orders webhook creations, so the per-instance cap holds (sled transactions cannot scan).
static CREATING: Mutex<()> = Mutex::new(());

fn key(tag: u8, webhook: WebhookId, tail: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 16 + tail.len());
    k.push(tag);
    k.extend_from_slice(&webhook.to_bytes());
    k.extend_from_slice(tail);
    k
}

/// Adds `deliveries` to the outbox inside a transaction.
fn write(tx: &TransactionalTree, deliveries: &[Delivery]) -> TxResult<()> {
    for d in deliveries {
        let seq = tx.generate_id()?.to_be_bytes();
        let json = serde_json::to_vec(d).map_err(abort)?;
        tx.insert(key(DELIVERY, d.webhook, &seq), json)?;
        if d.status == DeliveryStatus::Pending {
            tx.insert(key(PENDING, d.webhook, &seq), &[])?;
        }
        tx.insert(key(BY_ID, d.webhook, &d.id.to_bytes()), &seq)?;
    }
    Ok(())
}

/// Adds the deliveries staged on this thread (see `meta::webhooks`) inside the transaction of
/// the change they describe; `written` is the file record that change writes, if one.
pub(super) fn write_staged(tx: &TransactionalTree, written: Option<&FileRecord>) -> TxResult<()> {
    let staged = staged(written);
    if staged.is_empty() {
        return Ok(());
    }
    write(tx, &staged)
}

impl SledMeta {
    fn seq_of(&self, webhook: WebhookId, id: DeliveryId) -> Result<Option<sled::IVec>> {
        Ok(self
            .webhook_outbox
            .get(key(BY_ID, webhook, &id.to_bytes()))?)
    }
}

impl WebhookStore for SledMeta {
    fn create_webhook(&self, hook: &Webhook, max_per_instance: usize) -> Result<()> {
        let _one = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        let have = self
            .webhooks_by_instance
            .scan_prefix(hook.instance.to_bytes())
            .count();
        if have >= max_per_instance {
            return Err(Error::TooManyRequests(format!(
                "an instance may have at most {max_per_instance} webhooks: delete one first"
            )));
        }
        let json = serde_json::to_vec(hook)?;
        let mut index = hook.instance.to_bytes().to_vec();
        index.extend_from_slice(&hook.id.to_bytes());
        use sled::Transactional;
        (&self.webhooks, &self.webhooks_by_instance).transaction(|(w, i)| {
            w.insert(&hook.id.to_bytes(), json.as_slice())?;
            i.insert(index.as_slice(), &[])?;
            Ok(())
        })?;
        self.flush()
    }

    fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>> {
        decode(self.webhooks.get(id.to_bytes())?)
    }

    fn webhooks_of(&self, instance: InstanceId) -> Result<Vec<Webhook>> {
        let mut out = Vec::new();
        for k in self
            .webhooks_by_instance
            .scan_prefix(instance.to_bytes())
            .keys()
        {
            let k = k?;
            let Ok(id) = <[u8; 16]>::try_from(&k[16..]) else {
                continue;
            };
            if let Some(w) = self.webhook(WebhookId::from_bytes(id))? {
                out.push(w);
            }
        }
        Ok(out)
    }

    fn delete_webhook(&self, id: WebhookId) -> Result<bool> {
        let Some(hook) = self.webhook(id)? else {
            return Ok(false);
        };
        let mut index = hook.instance.to_bytes().to_vec();
        index.extend_from_slice(&id.to_bytes());
        use sled::Transactional;
        (&self.webhooks, &self.webhooks_by_instance).transaction(|(w, i)| {
            w.remove(&id.to_bytes())?;
            i.remove(index.as_slice())?;
            Ok(())
        })?;
        // The outbox entries of a webhook that is gone are never delivered (the worker drops
        // them), so removing them after the record needs no common transaction.
        let mut batch = sled::Batch::default();
        for tag in [DELIVERY, PENDING, BY_ID, FINISHED] {
            for k in self.webhook_outbox.scan_prefix(key(tag, id, &[])).keys() {
                batch.remove(k?);
            }
        }
        self.webhook_outbox.apply_batch(batch)?;
        self.flush()?;
        Ok(true)
    }

    fn enqueue(&self, deliveries: &[Delivery]) -> Result<()> {
        self.webhook_outbox
            .transaction(|tx| write(tx, deliveries))?;
        self.flush()
    }

    /// One process owns a sled store and its worker waits for each round: no lease needed.
    fn due_deliveries(&self, now: Millis, limit: usize, _lease_ms: u64) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let mut from = vec![PENDING];
        while out.len() < limit {
            let Some(k) = self.webhook_outbox.range(from.as_slice()..).keys().next() else {
                break;
            };
            let k = k?;
            if k.first() != Some(&PENDING) || k.len() != 1 + 16 + 8 {
                break;
            }
            // The head of this webhook's queue; the next webhook's starts past every key of it.
            let mut d = k.to_vec();
            d[0] = DELIVERY;
            if let Some(delivery) = decode::<Delivery>(self.webhook_outbox.get(&d)?)? {
                if delivery.next_attempt <= now {
                    out.push(delivery);
                }
            } else {
                // A pending mark without its delivery (never written so): drop it.
                self.webhook_outbox.remove(&k)?;
            }
            from = k[..17].to_vec();
            from.extend_from_slice(&[0xff; 9]);
        }
        Ok(out)
    }

    fn record_attempt(&self, delivery: &Delivery, keep: usize) -> Result<()> {
        let Some(seq) = self.seq_of(delivery.webhook, delivery.id)? else {
            // The webhook was deleted meanwhile.
            return Ok(());
        };
        let json = serde_json::to_vec(delivery)?;
        let done = delivery.status != DeliveryStatus::Pending;
        self.webhook_outbox.transaction(|tx| {
            tx.insert(key(DELIVERY, delivery.webhook, &seq), json.as_slice())?;
            if done {
                tx.remove(key(PENDING, delivery.webhook, &seq))?;
                tx.insert(key(FINISHED, delivery.webhook, &seq), &[])?;
            }
            Ok(())
        })?;
        if done {
            self.trim_log(delivery.webhook, keep)?;
        }
        self.flush()
    }

    fn deliveries(&self, webhook: WebhookId, limit: usize) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        for v in self
            .webhook_outbox
            .scan_prefix(key(DELIVERY, webhook, &[]))
            .values()
            .rev()
            .take(limit)
        {
            out.push(serde_json::from_slice(&v?)?);
        }
        Ok(out)
    }

    fn delivery(&self, webhook: WebhookId, id: DeliveryId) -> Result<Option<Delivery>> {
        match self.seq_of(webhook, id)? {
            Some(seq) => decode(self.webhook_outbox.get(key(DELIVERY, webhook, &seq))?),
            None => Ok(None),
        }
    }
}

impl SledMeta {
    /// Removes a webhook's oldest finished deliveries beyond the newest `keep`.
    fn trim_log(&self, webhook: WebhookId, keep: usize) -> Result<()> {
        // Newest first: everything past the first `keep` goes.
        let prefix = key(FINISHED, webhook, &[]);
        let mut batch = sled::Batch::default();
        for k in self
            .webhook_outbox
            .scan_prefix(&prefix)
            .keys()
            .rev()
            .skip(keep)
        {
            let k = k?;
            let mut d = k.to_vec();
            d[0] = DELIVERY;
            if let Some(v) = self.webhook_outbox.get(&d)? {
                if let Ok(d) = serde_json::from_slice::<Delivery>(&v) {
                    batch.remove(key(BY_ID, webhook, &d.id.to_bytes()));
                }
            }
            batch.remove(d);
            batch.remove(k);
        }
        self.webhook_outbox.apply_batch(batch)?;
        Ok(())
    }
}
