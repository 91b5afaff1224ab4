//! Webhooks (issue 15): the records an instance's admin configures, and the outbox of
//! deliveries that a change writes in the same transaction as itself.
//!
//! How a change carries its events down to the store without every write method growing a
//! parameter: the service stages the deliveries ([`stage`]) on the calling thread right before
//! the one store call that makes the change, and the store's write transaction adds whatever is
//! staged ([`staged`]) to its own writes. Store calls are synchronous and run on the caller's
//! thread (the service calls them inside `blocking`), so the staged deliveries reach exactly
//! that call; the guard [`stage`] returns clears them when it drops, whether or not the call
//! happened. Backends that keep no outbox ignore them.

use super::{AccessRight, FileRecord};
use crate::error::Result;
use crate::types::{AccountId, DeliveryId, EventId, InstanceId, Millis, SessionId, WebhookId};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// An event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "file.created")]
    FileCreated,
    /// Re-upload, trash, untrash, rename or move.
    #[serde(rename = "file.updated")]
    FileUpdated,
    #[serde(rename = "file.deleted")]
    FileDeleted,
    #[serde(rename = "access.granted")]
    AccessGranted,
    #[serde(rename = "access.revoked")]
    AccessRevoked,
    /// A presigned, remote URL or resumable upload that failed.
    #[serde(rename = "upload.failed")]
    UploadFailed,
}

impl WebhookEvent {
    /// Every event, in the order the README lists them.
    pub const ALL: [WebhookEvent; 6] = [
        WebhookEvent::FileCreated,
        WebhookEvent::FileUpdated,
        WebhookEvent::FileDeleted,
        WebhookEvent::AccessGranted,
        WebhookEvent::AccessRevoked,
        WebhookEvent::UploadFailed,
    ];

    /// The event's name on the wire (`file.created`).
    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::FileCreated => "file.created",
            WebhookEvent::FileUpdated => "file.updated",
            WebhookEvent::FileDeleted => "file.deleted",
            WebhookEvent::AccessGranted => "access.granted",
            WebhookEvent::AccessRevoked => "access.revoked",
            WebhookEvent::UploadFailed => "upload.failed",
        }
    }

    /// The event named `name`, if there is one.
    pub fn parse(name: &str) -> Option<WebhookEvent> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// A webhook: where an instance's events go, signed with its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub instance: InstanceId,
    /// The instance's domain, as the event bodies name it.
    pub domain: String,
    pub url: String,
    /// The HMAC key of `Depot-Signature`.
    pub secret: String,
    pub events: Vec<WebhookEvent>,
    pub created_by: AccountId,
    pub created: Millis,
}

/// What an event is about, as it was when the change was made (a deleted file's last record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Subject {
    File(FileRecord),
    /// The record the store call writes (a re-upload's new record, known only inside the store).
    Written,
    Right(AccessRight),
    /// An upload session that failed, with why.
    Upload {
        session: SessionId,
        kind: String,
        name: Option<String>,
        error: String,
    },
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempted again at `next_attempt`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed until the event was older than `webhooks.max_age_secs`.
    Failed,
}

/// One try at delivering, kept in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Millis,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed (no answer, refused target, non-2xx), if it did.
    pub error: Option<String>,
}

/// One event on its way to one webhook: the outbox entry and, once done, its log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub webhook: WebhookId,
    pub event_id: EventId,
    pub event: WebhookEvent,
    /// When the change happened (the body's `time`).
    pub time: Millis,
    pub actor: AccountId,
    pub subject: Subject,
    pub status: DeliveryStatus,
    /// When this delivery was queued (a redelivery is a new one): retries stop
    /// `webhooks.max_age_secs` later.
    pub created: Millis,
    pub next_attempt: Millis,
    /// Attempts made, counting those no longer in `attempts`.
    pub attempt_count: u32,
    /// The last few attempts (see [`MAX_ATTEMPTS_KEPT`]).
    pub attempts: Vec<Attempt>,
}

/// Attempts a delivery keeps in its log.
pub const MAX_ATTEMPTS_KEPT: usize = 10;

impl Delivery {
    /// Records an attempt, keeping only the last [`MAX_ATTEMPTS_KEPT`].
    pub fn push_attempt(&mut self, a: Attempt) {
        self.attempt_count = self.attempt_count.saturating_add(1);
        self.attempts.push(a);
        if self.attempts.len() > MAX_ATTEMPTS_KEPT {
            let extra = self.attempts.len() - MAX_ATTEMPTS_KEPT;
            self.attempts.drain(..extra);
        }
    }
}

/// Webhooks and their outbox. Deliveries of one webhook are kept in the order their changes
/// were committed; the worker delivers each webhook's oldest pending one first, so a receiver
/// sees every file's events in order.
pub trait WebhookStore {
    /// Stores a new webhook unless its instance has `max_per_instance` already
    /// (`TooManyRequests`, nothing written).
    fn create_webhook(&self, hook: &Webhook, max_per_instance: usize) -> Result<()>;
    fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>>;
    /// The webhooks of an instance (at most its cap), in id order (creation order, to the
    /// millisecond).
    fn webhooks_of(&self, instance: InstanceId) -> Result<Vec<Webhook>>;
    /// Removes a webhook with its outbox and log; false when there was none.
    fn delete_webhook(&self, id: WebhookId) -> Result<bool>;
    /// Adds deliveries outside of any change (a redelivery).
    fn enqueue(&self, deliveries: &[Delivery]) -> Result<()>;
    /// Each webhook's oldest pending delivery whose `next_attempt` is at or before `now`, at
    /// most `limit` of them, claimed for `lease_ms` (a store shared by several nodes gives each
    /// to one node only; the claim ends with [`WebhookStore::record_attempt`] or the lease).
    fn due_deliveries(&self, now: Millis, limit: usize, lease_ms: u64) -> Result<Vec<Delivery>>;
    /// Stores a delivery after an attempt (its status and log), then trims the webhook's
    /// finished deliveries to the newest `keep`.
    fn record_attempt(&self, delivery: &Delivery, keep: usize) -> Result<()>;
    /// A webhook's deliveries, newest first, at most `limit`.
    fn deliveries(&self, webhook: WebhookId, limit: usize) -> Result<Vec<Delivery>>;
    fn delivery(&self, webhook: WebhookId, id: DeliveryId) -> Result<Option<Delivery>>;
}

thread_local! {
    static STAGED: RefCell<Vec<Delivery>> = const { RefCell::new(Vec::new()) };
}

/// Deliveries staged for the next store write on this thread; cleared when dropped.
#[must_use = "the deliveries are staged only while the guard lives"]
pub struct Staged(());

impl Drop for Staged {
    fn drop(&mut self) {
        STAGED.with(|s| s.borrow_mut().clear());
    }
}

/// Stages `deliveries` for the one store write this thread makes next (see the module doc).
pub fn stage(deliveries: Vec<Delivery>) -> Staged {
    STAGED.with(|s| *s.borrow_mut() = deliveries);
    Staged(())
}

/// The deliveries staged on this thread, with [`Subject::Written`] filled in with `written`
/// (the record the calling store write makes). Read, not taken: a store transaction may run its
/// body more than once.
pub fn staged(written: Option<&FileRecord>) -> Vec<Delivery> {
    let staged = STAGED.with(|s| s.borrow().clone());
    match written {
        Some(f) => with_written(&staged, f),
        None => staged,
    }
}

/// `deliveries` with [`Subject::Written`] replaced by `written`.
pub fn with_written(deliveries: &[Delivery], written: &FileRecord) -> Vec<Delivery> {
    deliveries
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if d.subject == Subject::Written {
                d.subject = Subject::File(written.clone());
            }
            d
        })
        .collect()
}
