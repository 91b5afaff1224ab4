//! Webhooks in GraphQL (issue 15), in the caller's instance (its admins only):
//! `webhooks`, `webhookDeliveries(webhook, first)`, `createWebhook(data: {url, secret,
//! events})`, `deleteWebhook(id)`, `redeliverWebhook(webhook, delivery)`. The same shapes
//! serialise as the REST answers (`http/webhooks.rs`).

use super::{gql, parts};
use crate::error::Error;
use crate::meta::webhooks::{Delivery, DeliveryStatus, Webhook as Record};
use crate::service::webhooks::{WebhookInput, MAX_LISTED};
use crate::types::rfc3339;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use serde::Serialize;

/// A webhook; `secret` only in the answer that created it.
// ToSchema: the REST answers are these types, so the OpenAPI document describes them too.
#[derive(SimpleObject, Serialize, Debug, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[schema(value_type = String)]
    pub id: ID,
    pub url: String,
    pub events: Vec<String>,
    pub created_by: String,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One attempt at a delivery.
#[derive(SimpleObject, Serialize, Debug, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttempt {
    pub at: String,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// One event's delivery to a webhook, with its last attempts.
#[derive(SimpleObject, Serialize, Debug, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    #[schema(value_type = String)]
    pub id: ID,
    /// `Depot-Event-Id`: the same on a redelivery.
    pub event_id: String,
    pub event: String,
    pub time: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub created: String,
    /// When it is tried again, while pending.
    pub next_attempt: Option<String>,
    pub attempt_count: u32,
    pub attempts: Vec<WebhookAttempt>,
}

/// A webhook in its answer shape.
pub fn webhook_view(w: &Record, with_secret: bool) -> Webhook {
    Webhook {
        id: ID(w.id.to_string()),
        url: w.url.clone(),
        events: w.events.iter().map(|e| e.name().to_string()).collect(),
        created_by: w.created_by.0.clone(),
        created: rfc3339(w.created),
        secret: with_secret.then(|| w.secret.clone()),
    }
}

/// A delivery in its answer shape.
pub fn delivery_view(d: &Delivery) -> WebhookDelivery {
    WebhookDelivery {
        id: ID(d.id.to_string()),
        event_id: d.event_id.to_string(),
        event: d.event.name().to_string(),
        time: rfc3339(d.time),
        status: match d.status {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
        .to_string(),
        created: rfc3339(d.created),
        next_attempt: (d.status == DeliveryStatus::Pending).then(|| rfc3339(d.next_attempt)),
        attempt_count: d.attempt_count,
        attempts: d
            .attempts
            .iter()
            .map(|a| WebhookAttempt {
                at: rfc3339(a.at),
                status: a.status,
                latency_ms: a.latency_ms,
                error: a.error.clone(),
            })
            .collect(),
    }
}

fn id<T: std::str::FromStr>(raw: &ID, what: &str) -> async_graphql::Result<T> {
    raw.parse()
        .map_err(|_| gql(Error::NotFound(format!("no such {what}"))))
}

/// What `createWebhook` takes.
#[derive(InputObject, Debug)]
pub struct WebhookCreateInput {
    pub url: String,
    /// Made when left out (returned once).
    pub secret: Option<String>,
    pub events: Vec<String>,
}

/// Webhook queries.
#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The webhooks of the caller's instance (its admins).
    async fn webhooks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Webhook>> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let hooks = svc.webhooks(&p, p.instance.clone()).await.map_err(gql)?;
        Ok(hooks.iter().map(|w| webhook_view(w, false)).collect())
    }

    /// A webhook's delivery log, newest first (at most 100).
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        webhook: ID,
        first: Option<u32>,
    ) -> async_graphql::Result<Vec<WebhookDelivery>> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let first = first.map_or(MAX_LISTED, |n| n as usize);
        let log = svc
            .webhook_deliveries(&p, p.instance.clone(), id(&webhook, "webhook")?, first)
            .await
            .map_err(gql)?;
        Ok(log.iter().map(delivery_view).collect())
    }
}

/// Webhook mutations.
#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Creates a webhook in the caller's instance; the answer holds its secret, once.
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        data: WebhookCreateInput,
    ) -> async_graphql::Result<Webhook> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let input = WebhookInput {
            url: data.url,
            secret: data.secret,
            events: data.events,
        };
        let w = svc
            .create_webhook(&p, p.instance.clone(), input)
            .await
            .map_err(gql)?;
        Ok(webhook_view(&w, true))
    }

    /// Deletes a webhook with its pending deliveries and log; true when done.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let wid = self::id(&id, "webhook")?;
        svc.delete_webhook(&p, p.instance.clone(), wid)
            .await
            .map_err(gql)?;
        Ok(true)
    }

    /// Sends a delivery's event again (a new delivery, the same event id).
    async fn redeliver_webhook(
        &self,
        ctx: &Context<'_>,
        webhook: ID,
        delivery: ID,
    ) -> async_graphql::Result<WebhookDelivery> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let d = svc
            .redeliver(
                &p,
                p.instance.clone(),
                id(&webhook, "webhook")?,
                id(&delivery, "delivery")?,
            )
            .await
            .map_err(gql)?;
        Ok(delivery_view(&d))
    }
}
