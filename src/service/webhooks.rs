//! Webhooks (issue 15): admins configure where an instance's events go; each change writes its
//! deliveries to the outbox in its own transaction (see `meta::webhooks`), and a background
//! worker delivers them, signed, with retries, in commit order per webhook.

use super::{blocking, Service};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::fetch::{Fetcher, Limits};
use crate::meta::webhooks::{
    self as outbox, Attempt, Delivery, DeliveryStatus, Staged, Subject, Webhook, WebhookEvent,
};
use crate::meta::{AccessRight, FileRecord, Instance};
use crate::types::{now_millis, AccountId, DeliveryId, EventId, InstanceId, SessionId, WebhookId};
use hmac::{Hmac, Mac};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest accepted webhook URL.
const MAX_URL_LEN: usize = 2048;
/// Shortest and longest accepted secret given by the admin.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Bytes of a receiver's answer kept in the delivery log.
const ANSWER_BYTES: u64 = 1024;
/// How long a claim outlives the longest attempt (recording it included), in seconds.
const LEASE_MARGIN_SECS: u64 = 5;
/// Deliveries a listing returns at most.
pub const MAX_LISTED: usize = 100;

/// Renders a delivery's JSON body (the HTTP layer owns the Hypi shapes).
pub type Render = fn(&Webhook, &Delivery) -> serde_json::Value;

/// What an admin asks for when creating a webhook.
#[derive(Debug, Clone)]
pub struct WebhookInput {
    pub url: String,
    pub secret: Option<String>,
    pub events: Vec<String>,
}

/// The worker's shared state: its fetcher and the signal that new deliveries were written.
pub(crate) struct Runtime {
    fetcher: Fetcher,
    wake: Notify,
    stop: Notify,
}

impl Runtime {
    /// From `remote_fetch` (the same SSRF rules and allow list) and `webhooks`.
    pub(crate) fn from_config(cfg: &crate::config::Config) -> Self {
        let w = &cfg.webhooks;
        let timeout = Duration::from_secs(w.timeout_secs);
        // allow_hosts was validated at start-up: an invalid list cannot get here.
        let fetcher = Fetcher::from_config(&cfg.remote_fetch)
            .unwrap_or_else(|_| Fetcher::new(vec![], limits(timeout)))
            .with_limits(limits(timeout));
        Self {
            fetcher,
            wake: Notify::new(),
            stop: Notify::new(),
        }
    }
}

fn limits(timeout: Duration) -> Limits {
    Limits {
        max_bytes: ANSWER_BYTES,
        total: timeout,
        stall: timeout,
        max_redirects: 0,
    }
}

/// Deliveries staged for a change (see `meta::webhooks::stage`); when dropped after the change,
/// wakes the worker.
pub struct EventsStaged<'a> {
    _staged: Option<Staged>,
    svc: &'a Service,
}

impl Drop for EventsStaged<'_> {
    fn drop(&mut self) {
        if self._staged.is_some() {
            self.svc.webhooks.wake.notify_one();
        }
    }
}

/// The `Depot-Signature` header of `body` sent at unix time `t`: Stripe's scheme,
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `n + 1` after `n` failed ones: `base * 2^(n-1)`, at most `max`,
/// then a random point in its upper half (jitter, so receivers coming back are not hit by every
/// retry at once).
pub fn backoff(n: u32, base_ms: u64, max_ms: u64) -> u64 {
    let exp = n.saturating_sub(1).min(40);
    let d = base_ms.saturating_mul(1u64 << exp).min(max_ms.max(base_ms));
    d / 2 + rand::random_range(0..=d - d / 2)
}

impl Service {
    /// The instance `domain` if `p` is one of its admins.
    fn admin_of(&self, p: &Principal, domain: &str) -> Result<String> {
        let domain = domain.to_ascii_lowercase();
        if !p.admin || !p.instance.eq_ignore_ascii_case(&domain) {
            return Err(Error::Forbidden(format!(
                "only an admin of {domain} may manage its webhooks"
            )));
        }
        Ok(domain)
    }

    /// A webhook of `domain`'s instance; another instance's looks like none.
    fn webhook_in(&self, domain: &str, id: WebhookId) -> Result<(Instance, Webhook)> {
        let none = || Error::NotFound("no such webhook".into());
        let instance = self.meta.instance_by_domain(domain)?.ok_or_else(none)?;
        let hook = self
            .meta
            .webhook(id)?
            .filter(|w| w.instance == instance.id)
            .ok_or_else(none)?;
        Ok((instance, hook))
    }

    /// Creates a webhook (admins of the instance). The URL must be http(s) and reachable under
    /// the remote fetch rules; the events known names; a secret is generated when none is
    /// given. The answer holds the secret: the only time it is shown.
    pub async fn create_webhook(
        self: &Arc<Self>,
        p: &Principal,
        domain: String,
        input: WebhookInput,
    ) -> Result<Webhook> {
        let domain = self.admin_of(p, &domain)?;
        let url = check_url(&input.url)?;
        self.webhooks
            .fetcher
            .check(&url)
            .await
            .map_err(|e| Error::InvalidWebhook(format!("the webhook URL is refused: {e}")))?;
        let events = check_events(&input.events)?;
        let secret = match input.secret {
            Some(s) if SECRET_LEN.contains(&s.len()) && !s.chars().any(char::is_control) => s,
            Some(_) => {
                return Err(Error::InvalidWebhook(format!(
                    "a webhook secret has {} to {} characters (or leave it out: one is made)",
                    SECRET_LEN.start(),
                    SECRET_LEN.end()
                )))
            }
            None => format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>())),
        };
        let svc = self.clone();
        let account = p.account.clone();
        blocking(move || {
            let instance = svc.meta.ensure_instance(&domain)?;
            let hook = Webhook {
                id: WebhookId::new(),
                instance: instance.id,
                domain: instance.domain,
                url,
                secret,
                events,
                created_by: account,
                created: now_millis(),
            };
            svc.meta
                .create_webhook(&hook, svc.config.webhooks.max_per_instance)?;
            Ok(hook)
        })
        .await
    }

    /// The webhooks of an instance (admins).
    pub async fn webhooks(self: &Arc<Self>, p: &Principal, domain: String) -> Result<Vec<Webhook>> {
        let domain = self.admin_of(p, &domain)?;
        let svc = self.clone();
        blocking(move || match svc.meta.instance_by_domain(&domain)? {
            Some(i) => svc.meta.webhooks_of(i.id),
            None => Ok(vec![]),
        })
        .await
    }

    /// One webhook (admins).
    pub async fn webhook(
        self: &Arc<Self>,
        p: &Principal,
        domain: String,
        id: WebhookId,
    ) -> Result<Webhook> {
        let domain = self.admin_of(p, &domain)?;
        let svc = self.clone();
        blocking(move || Ok(svc.webhook_in(&domain, id)?.1)).await
    }

    /// Deletes a webhook, its pending deliveries and its log (admins).
    pub async fn delete_webhook(
        self: &Arc<Self>,
        p: &Principal,
        domain: String,
        id: WebhookId,
    ) -> Result<()> {
        let domain = self.admin_of(p, &domain)?;
        let svc = self.clone();
        blocking(move || {
            svc.webhook_in(&domain, id)?;
            svc.meta.delete_webhook(id)?;
            Ok(())
        })
        .await
    }

    /// A webhook's deliveries, newest first (admins).
    pub async fn webhook_deliveries(
        self: &Arc<Self>,
        p: &Principal,
        domain: String,
        id: WebhookId,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let domain = self.admin_of(p, &domain)?;
        let svc = self.clone();
        blocking(move || {
            svc.webhook_in(&domain, id)?;
            svc.meta.deliveries(id, limit.clamp(1, MAX_LISTED))
        })
        .await
    }

    /// Queues a delivery's event again, as a new delivery with the same event id (admins).
    pub async fn redeliver(
        self: &Arc<Self>,
        p: &Principal,
        domain: String,
        id: WebhookId,
        delivery: DeliveryId,
    ) -> Result<Delivery> {
        let domain = self.admin_of(p, &domain)?;
        let svc = self.clone();
        let again = blocking(move || {
            svc.webhook_in(&domain, id)?;
            let old = svc
                .meta
                .delivery(id, delivery)?
                .ok_or_else(|| Error::NotFound("no such delivery".into()))?;
            let now = now_millis();
            let again = Delivery {
                id: DeliveryId::new(),
                status: DeliveryStatus::Pending,
                created: now,
                next_attempt: now,
                attempt_count: 0,
                attempts: vec![],
                ..old
            };
            svc.meta.enqueue(std::slice::from_ref(&again))?;
            Ok(again)
        })
        .await?;
        self.webhooks.wake.notify_one();
        Ok(again)
    }

    /// Stages the deliveries of `event` on each subject for the instance's webhooks that want
    /// it, for the one store write that the caller makes next on this thread (in its
    /// transaction). Call on the blocking pool, right before that write; keep the answer until
    /// the write returned.
    pub(crate) fn webhook_events(
        &self,
        instance: InstanceId,
        actor: &AccountId,
        event: WebhookEvent,
        subjects: Vec<Subject>,
    ) -> Result<EventsStaged<'_>> {
        let hooks = self.meta.webhooks_of(instance)?;
        let now = now_millis();
        let mut out = Vec::new();
        for subject in subjects {
            let event_id = EventId::new();
            for w in hooks.iter().filter(|w| w.events.contains(&event)) {
                out.push(Delivery {
                    id: DeliveryId::new(),
                    webhook: w.id,
                    event_id,
                    event,
                    time: now,
                    actor: actor.clone(),
                    subject: subject.clone(),
                    status: DeliveryStatus::Pending,
                    created: now,
                    next_attempt: now,
                    attempt_count: 0,
                    attempts: vec![],
                });
            }
        }
        Ok(EventsStaged {
            _staged: (!out.is_empty()).then(|| outbox::stage(out)),
            svc: self,
        })
    }

    /// [`Service::webhook_events`] for files.
    pub(crate) fn file_events<'s, 'f>(
        &'s self,
        actor: &AccountId,
        event: WebhookEvent,
        files: impl IntoIterator<Item = &'f FileRecord>,
    ) -> Result<EventsStaged<'s>> {
        let files: Vec<&FileRecord> = files.into_iter().collect();
        let Some(first) = files.first() else {
            return Ok(EventsStaged {
                _staged: None,
                svc: self,
            });
        };
        let instance = first.instance;
        let subjects = files.iter().map(|f| Subject::File((*f).clone())).collect();
        self.webhook_events(instance, actor, event, subjects)
    }

    /// [`Service::webhook_events`] for grants.
    pub(crate) fn right_events(
        &self,
        actor: &AccountId,
        event: WebhookEvent,
        rights: &[AccessRight],
    ) -> Result<EventsStaged<'_>> {
        let Some(first) = rights.first() else {
            return Ok(EventsStaged {
                _staged: None,
                svc: self,
            });
        };
        let subjects = rights.iter().cloned().map(Subject::Right).collect();
        self.webhook_events(first.instance, actor, event, subjects)
    }

    /// [`Service::webhook_events`] for an upload session that failed (`upload.failed`).
    pub(crate) fn upload_failed_events(
        &self,
        id: SessionId,
        why: &str,
    ) -> Result<EventsStaged<'_>> {
        let Some(s) = self.meta.session(id)? else {
            return Ok(EventsStaged {
                _staged: None,
                svc: self,
            });
        };
        let subject = Subject::Upload {
            session: s.id,
            kind: format!("{:?}", s.kind).to_ascii_lowercase(),
            name: Some(s.name.clone()),
            error: why.to_string(),
        };
        self.webhook_events(
            s.instance,
            &s.account,
            WebhookEvent::UploadFailed,
            vec![subject],
        )
    }

    /// Starts the delivery worker: each webhook's oldest due delivery, at most
    /// `webhooks.concurrency` at once; woken by new events, else every `poll_ms`. Stops when
    /// [`Service::stop_webhook_worker`] is called (attempts in flight finish first).
    pub fn spawn_webhook_worker(self: &Arc<Self>, render: Render) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let poll = Duration::from_millis(svc.config.webhooks.poll_ms);
            let limit = svc.config.webhooks.concurrency;
            loop {
                let s = svc.clone();
                // Claimed past the longest attempt, so no other node takes one in flight.
                let lease = (svc.config.webhooks.timeout_secs + LEASE_MARGIN_SECS) * 1000;
                let due = blocking(move || s.meta.due_deliveries(now_millis(), limit, lease)).await;
                let due = due.unwrap_or_else(|e| {
                    tracing::warn!(error = %e.chain(), "cannot read the webhook outbox");
                    vec![]
                });
                let busy = !due.is_empty();
                let mut set = tokio::task::JoinSet::new();
                for d in due {
                    set.spawn(svc.clone().attempt(render, d));
                }
                while set.join_next().await.is_some() {}
                // Right after a round with work, look again: the next deliveries may be due.
                let wait = if busy { Duration::ZERO } else { poll };
                tokio::select! {
                    _ = svc.webhooks.stop.notified() => break,
                    _ = svc.webhooks.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            tracing::info!("webhook worker stopped");
        })
    }

    /// Asks the delivery worker to stop after its current round.
    pub fn stop_webhook_worker(&self) {
        self.webhooks.stop.notify_one();
    }

    /// One attempt at a delivery; its outcome goes to the log and decides what comes next.
    async fn attempt(self: Arc<Self>, render: Render, mut d: Delivery) {
        let s = self.clone();
        let wid = d.webhook;
        let hook = match blocking(move || s.meta.webhook(wid)).await {
            Ok(Some(h)) => h,
            // Deleted meanwhile: its outbox went with it.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "cannot read a webhook");
                return;
            }
        };
        let body = match serde_json::to_vec(&render(&hook, &d)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(delivery = %d.id, "cannot render a webhook body: {e}");
                return;
            }
        };
        let t = now_millis() / 1000;
        let headers = [
            ("content-type", "application/json".to_string()),
            ("depot-event-id", d.event_id.to_string()),
            ("depot-event", d.event.name().to_string()),
            ("depot-delivery-id", d.id.to_string()),
            ("depot-signature", signature(&hook.secret, t, &body)),
        ];
        let start = Instant::now();
        let res = self
            .webhooks
            .fetcher
            .post(&hook.url, &headers, body.into())
            .await;
        let latency_ms = start.elapsed().as_millis() as u64;
        let now = now_millis();
        let attempt = match res {
            Ok(p) if (200..300).contains(&p.status) => Attempt {
                at: now,
                status: Some(p.status),
                latency_ms,
                error: None,
            },
            Ok(p) => Attempt {
                at: now,
                status: Some(p.status),
                latency_ms,
                error: Some(format!(
                    "the receiver answered {}: {}",
                    p.status,
                    String::from_utf8_lossy(&p.body)
                )),
            },
            Err(e) => Attempt {
                at: now,
                status: None,
                latency_ms,
                error: Some(e.to_string()),
            },
        };
        let ok = attempt.error.is_none();
        d.push_attempt(attempt);
        let w = &self.config.webhooks;
        let outcome = if ok {
            d.status = DeliveryStatus::Delivered;
            "delivered"
        } else if now.saturating_sub(d.created) >= w.max_age_secs.saturating_mul(1000) {
            d.status = DeliveryStatus::Failed;
            "failed"
        } else {
            d.next_attempt = now
                + backoff(
                    d.attempt_count,
                    w.base_delay_ms,
                    w.max_delay_secs.saturating_mul(1000),
                );
            "retry"
        };
        metrics::counter!("depot_webhook_deliveries_total", "outcome" => outcome).increment(1);
        let keep = w.log_size;
        let s = self.clone();
        let id = d.id;
        if let Err(e) = blocking(move || s.meta.record_attempt(&d, keep)).await {
            // The delivery stays as it was: it is attempted again (at least once).
            tracing::warn!(delivery = %id, error = %e.chain(), "cannot record a webhook attempt");
        }
    }
}

/// The URL of a webhook: absolute http or https, with a host, of a bounded length.
fn check_url(raw: &str) -> Result<String> {
    if raw.len() > MAX_URL_LEN {
        return Err(Error::InvalidWebhook(format!(
            "a webhook URL has at most {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| Error::InvalidWebhook(format!("invalid webhook URL {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::InvalidWebhook(format!(
            "a webhook URL is http:// or https:// with a host, not {raw:?}"
        )));
    }
    Ok(url.to_string())
}

/// The events asked for: at least one, each a known name, each once.
fn check_events(names: &[String]) -> Result<Vec<WebhookEvent>> {
    if names.is_empty() {
        return Err(Error::InvalidWebhook(
            "a webhook needs at least one event".into(),
        ));
    }
    let mut out = Vec::new();
    for n in names {
        let e = WebhookEvent::parse(n).ok_or_else(|| {
            Error::InvalidWebhook(format!(
                "unknown event {n:?}; known: {}",
                WebhookEvent::ALL.map(WebhookEvent::name).join(", ")
            ))
        })?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_stripes_scheme() {
        // From `printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test`.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, b"{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        for n in 1..20 {
            let d = backoff(n, 100, 10_000);
            let full = (100u64 << (n - 1).min(40)).min(10_000);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {n}: {d} not in [{}, {full}]",
                full / 2
            );
        }
    }
}
