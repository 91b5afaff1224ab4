//! Webhooks on PostgreSQL: not kept yet. An instance on this backend has no webhooks (every
//! change writes no deliveries) and creating one is refused with 503.

use super::PgMeta;
use crate::error::{Error, Result};
use crate::meta::webhooks::{Delivery, Webhook, WebhookStore};
use crate::types::{DeliveryId, InstanceId, Millis, WebhookId};

fn unsupported() -> Error {
    Error::Unavailable("webhooks are not kept in the PostgreSQL metadata store yet".into())
}

impl WebhookStore for PgMeta {
    fn create_webhook(&self, _hook: &Webhook, _max_per_instance: usize) -> Result<()> {
        Err(unsupported())
    }
    fn webhook(&self, _id: WebhookId) -> Result<Option<Webhook>> {
        Ok(None)
    }
    fn webhooks_of(&self, _instance: InstanceId) -> Result<Vec<Webhook>> {
        Ok(vec![])
    }
    fn delete_webhook(&self, _id: WebhookId) -> Result<bool> {
        Ok(false)
    }
    fn enqueue(&self, _deliveries: &[Delivery]) -> Result<()> {
        Err(unsupported())
    }
    fn due_deliveries(&self, _now: Millis, _limit: usize) -> Result<Vec<Delivery>> {
        Ok(vec![])
    }
    fn record_attempt(&self, _delivery: &Delivery, _keep: usize) -> Result<()> {
        Err(unsupported())
    }
    fn deliveries(&self, _webhook: WebhookId, _limit: usize) -> Result<Vec<Delivery>> {
        Ok(vec![])
    }
    fn delivery(&self, _webhook: WebhookId, _id: DeliveryId) -> Result<Option<Delivery>> {
        Ok(None)
    }
}
