//! Bounds on request bodies, for every route and every caller (tokenless too): a size cap on
//! every route except uploads, a stall timeout and a minimum data rate on all of them, and a cap
//! on uploads in flight per account and overall.
//!
//! One mechanism serves every route: [`BodyLimits::guard`] runs before routing (see
//! `crate::serve`) and wraps the request's payload in a [`Guarded`] stream. Handlers read their
//! bodies as usual; when a bound trips, the read fails with an I/O error carrying a [`Tripped`],
//! which [`from_payload`] turns into the JSON error (413 or 408).

use crate::config::Config;
use crate::error::Error;
use crate::types::AccountId;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpMessage, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The size and time bounds on request bodies, from the configuration.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body on a non-upload route.
    pub max_bytes: u64,
    /// Longest wait for the next byte.
    pub stall: Duration,
    /// Least average rate in bytes per second over each window; 0 = no rate check.
    pub min_rate: u64,
    /// The window `min_rate` is averaged over; the first one is the grace period.
    pub window: Duration,
}

impl BodyLimits {
    /// The bounds configured for this server.
    pub fn from_config(c: &Config) -> Self {
        Self {
            max_bytes: c.max_body_bytes,
            stall: Duration::from_secs(c.body_timeout_secs),
            min_rate: c.body_min_rate,
            window: Duration::from_secs(c.body_rate_window_secs),
        }
    }

    /// Wraps the request's body in the bounds of its route. A body declared larger than the
    /// route accepts is refused here, before a byte of it is read (the connection is then
    /// closed rather than drained).
    pub fn guard(
        &self,
        mut req: ServiceRequest,
    ) -> Result<(ServiceRequest, Option<Unread>), Box<ServiceResponse>> {
        let cap = (!is_upload_route(req.path())).then_some(self.max_bytes);
        if let Some(cap) = cap {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > cap) {
                let e = Tripped::TooLarge(cap).into_error();
                let resp = e.error_response();
                return Err(Box::new(req.into_response(resp)));
            }
        }
        let payload = req.take_payload();
        if matches!(payload, Payload::None) {
            // No body (most GETs, downloads): nothing to bound, nothing to allocate.
            req.set_payload(payload);
            return Ok((req, None));
        }
        let shared = Shared(Rc::new(RefCell::new(Some(payload))));
        let unread = Unread(shared.0.clone());
        let guarded = Guarded::new(shared, self.clone(), cap);
        req.set_payload(Payload::from(
            Box::pin(guarded) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
        ));
        Ok((req, Some(unread)))
    }
}

/// The request's body, shared by the handler's reader and [`Unread`].
struct Shared(Rc<RefCell<Option<Payload>>>);

impl Stream for Shared {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.0.borrow_mut();
        match inner.as_mut() {
            Some(p) => {
                let item = Pin::new(p).poll_next(cx);
                if matches!(item, Poll::Ready(None)) {
                    // Read to its end: nothing left for the server to drain.
                    *inner = None;
                }
                item
            }
            None => Poll::Ready(None),
        }
    }
}

/// The part of a body the handler did not read. actix-http drains an unread chunked body after
/// the response, without a time or size bound, when the body's reader was dropped; kept alive
/// until the response is sent, it makes actix close the connection instead. So a refused
/// client (401, 413, 408, 429) cannot keep a connection busy by going on sending.
pub struct Unread(Rc<RefCell<Option<Payload>>>);

impl Unread {
    /// The response, holding the unread body (if any is left) until it is sent.
    pub fn hold_until_sent(self, res: ServiceResponse) -> ServiceResponse {
        if self.0.borrow().is_none() {
            return res;
        }
        res.map_body(|_, body| {
            actix_web::body::BoxBody::new(HoldWhileSending {
                body,
                _unread: self,
            })
        })
    }
}

/// A response body that keeps the request's unread body alive while it is sent.
struct HoldWhileSending {
    body: actix_web::body::BoxBody,
    _unread: Unread,
}

impl actix_web::body::MessageBody for HoldWhileSending {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Routes whose bodies are files: no size cap here (the upload path enforces `max_file_size`
/// per part), but the same stall timeout and minimum rate. Routes added later that take file
/// bodies belong here too.
pub fn is_upload_route(path: &str) -> bool {
    path == "/upload"
        || path.starts_with("/upload/")
        // Presigned PUTs and temp file PUTs (http/direct.rs), capped by their sessions.
        || path.starts_with("/uploads/put/")
        || (path.starts_with("/temp-files/") && path.ends_with("/upload"))
        // Parts of multipart temp files (http/temp_multipart.rs), capped by maxPartSize.
        || (path.starts_with("/temp-files/") && path.contains("/parts/"))
        // Hygraph's presigned POST form (http/assets.rs), capped by its policy.
        || path == "/assets/upload"
        // A file's new content (http/assets.rs), capped by max_file_size.
        || (path.starts_with("/files/") && path.ends_with("/content"))
        // tus PATCHes and creation-with-upload (http/tus.rs), capped by the upload's length.
        || path == "/tus"
        || path.starts_with("/tus/")
}

/// Why a body was cut off. Carried inside the payload's I/O error so that every reader (JSON,
/// GraphQL, multipart) can report it as what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// Over the route's size cap (the cap in bytes).
    TooLarge(u64),
    /// No byte arrived for the stall timeout.
    Stalled(Duration),
    /// Fewer than `min_rate` bytes per second over a window.
    TooSlow(u64, Duration),
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tripped::TooLarge(cap) => write!(f, "the request body is larger than {cap} bytes"),
            Tripped::Stalled(d) => {
                write!(f, "the request body stalled: no data for {} s", d.as_secs())
            }
            Tripped::TooSlow(rate, w) => write!(
                f,
                "the request body is too slow: less than {rate} bytes/s over {} s",
                w.as_secs()
            ),
        }
    }
}

impl std::error::Error for Tripped {}

impl Tripped {
    /// The error the client is answered with.
    pub fn into_error(self) -> Error {
        match self {
            Tripped::TooLarge(_) => Error::PayloadTooLarge(self.to_string()),
            Tripped::Stalled(_) | Tripped::TooSlow(..) => Error::Timeout(self.to_string()),
        }
    }

    fn into_payload_error(self) -> PayloadError {
        PayloadError::Io(std::io::Error::other(self))
    }

    /// The bound a payload error came from, if it came from one.
    pub fn of(e: &PayloadError) -> Option<Self> {
        match e {
            PayloadError::Io(io) => io.get_ref()?.downcast_ref::<Tripped>().copied(),
            _ => None,
        }
    }
}

/// The answer for a failed body read: the bound that tripped, else a broken body (400).
pub fn from_payload(e: &PayloadError) -> Error {
    match Tripped::of(e) {
        Some(t) => t.into_error(),
        None => Error::BadRequest(format!("the request body could not be read: {e}")),
    }
}

/// Reads a whole (small) body, at most `cap` bytes. The guard already enforces the route's cap;
/// this one also holds where the guard is not installed.
pub async fn read_body(mut payload: actix_web::web::Payload, cap: u64) -> Result<Bytes, Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| from_payload(&e))?;
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(Tripped::TooLarge(cap).into_error());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A request body under time and size bounds.
///
/// Time is counted only while the handler waits for the client (this stream is pending): time
/// the handler spends on its own work (writing to disk) is not the client's fault.
pub struct Guarded<S> {
    inner: S,
    limits: BodyLimits,
    cap: Option<u64>,
    /// Bytes received so far.
    bytes: u64,
    /// Time spent waiting for the client, over closed intervals.
    waited: Duration,
    /// Since when the current wait runs (the last poll returned Pending).
    waiting_since: Option<Instant>,
    /// Start of the current rate window, on the `waited` clock, and the bytes received by then.
    window_start: Duration,
    window_bytes: u64,
    /// Wakes the reader when a bound is due; made on the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// A bound tripped: the body is over for good.
    failed: bool,
}

impl<S> Guarded<S> {
    /// `inner` under `limits`, with a size cap when `cap` is given.
    pub fn new(inner: S, limits: BodyLimits, cap: Option<u64>) -> Self {
        Self {
            inner,
            limits,
            cap,
            bytes: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            window_start: Duration::ZERO,
            window_bytes: 0,
            timer: None,
            failed: false,
        }
    }

    /// Checks the time bounds at `now`; advances the rate window past every full window that
    /// met the rate.
    fn check(&mut self, now: Instant) -> Result<(), Tripped> {
        let current = self.waiting_since.map_or(Duration::ZERO, |s| now - s);
        if self.waiting_since.is_some() && current >= self.limits.stall {
            return Err(Tripped::Stalled(self.limits.stall));
        }
        if self.limits.min_rate == 0 {
            return Ok(());
        }
        let waited = self.waited + current;
        let window = self.limits.window;
        while waited >= self.window_start + window {
            let need = self.limits.min_rate.saturating_mul(window.as_secs().max(1));
            if self.bytes - self.window_bytes < need {
                return Err(Tripped::TooSlow(self.limits.min_rate, window));
            }
            self.window_start += window;
            self.window_bytes = self.bytes;
        }
        Ok(())
    }

    /// When the next time bound falls due, while waiting since `since`.
    fn deadline(&self, since: Instant) -> Instant {
        let mut due = since + self.limits.stall;
        if self.limits.min_rate > 0 {
            let left = (self.window_start + self.limits.window).saturating_sub(self.waited);
            due = due.min(since + left);
        }
        due
    }
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let item = Pin::new(&mut this.inner).poll_next(cx);
        let now = Instant::now();
        let verdict = match &item {
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert(now);
                this.check(now).map(|()| Some(since))
            }
            Poll::Ready(ready) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += now - since;
                }
                if let Some(Ok(chunk)) = ready {
                    this.bytes += chunk.len() as u64;
                }
                match this.cap {
                    Some(cap) if this.bytes > cap => Err(Tripped::TooLarge(cap)),
                    // A body that ended or failed has nothing left to time.
                    _ if !matches!(ready, Some(Ok(_))) => Ok(None),
                    _ => this.check(now).map(|()| None),
                }
            }
        };
        match verdict {
            Err(t) => {
                this.failed = true;
                this.timer = None;
                Poll::Ready(Some(Err(t.into_payload_error())))
            }
            Ok(Some(since)) => {
                // Still waiting: make sure we are woken when a bound falls due.
                let due = this.deadline(since);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // Due already (the clock moved past it between the check and here):
                    // poll again at once rather than sleep.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Ok(None) => item,
        }
    }
}

/// Uploads in flight, per account and overall.
#[derive(Clone)]
pub struct UploadSlots {
    inner: Arc<Mutex<SlotCounts>>,
    per_account: usize,
    total: usize,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    by_account: HashMap<(String, AccountId), usize>,
}

/// One upload in flight; dropping it frees the slot.
pub struct UploadSlot {
    inner: Arc<Mutex<SlotCounts>>,
    key: (String, AccountId),
}

impl UploadSlots {
    /// Caps from the configuration.
    pub fn from_config(c: &Config) -> Self {
        Self {
            inner: Arc::default(),
            per_account: c.max_uploads_per_account,
            total: c.max_uploads,
        }
    }

    /// A slot for one more upload by `account` of `instance`, or 429.
    pub fn acquire(&self, instance: &str, account: &AccountId) -> Result<UploadSlot, Error> {
        // A poisoned lock only means a panic elsewhere while counting; the counts stay usable.
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.total {
            return Err(Error::TooManyRequests(format!(
                "the server has {} uploads in flight; try again later",
                self.total
            )));
        }
        let key = (instance.to_string(), account.clone());
        let mine = counts.by_account.entry(key.clone()).or_default();
        if *mine >= self.per_account {
            return Err(Error::TooManyRequests(format!(
                "this account has {} uploads in flight; finish those first",
                self.per_account
            )));
        }
        *mine += 1;
        counts.total += 1;
        metrics::gauge!("depot_uploads_in_flight").increment(1.0);
        Ok(UploadSlot {
            inner: self.inner.clone(),
            key,
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        metrics::gauge!("depot_uploads_in_flight").decrement(1.0);
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_account.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.by_account.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AccountId;

    type Chunk = Result<Bytes, PayloadError>;

    /// A body fed by the test, chunk by chunk.
    fn channel() -> (
        tokio::sync::mpsc::UnboundedSender<Chunk>,
        impl Stream<Item = Chunk> + Unpin,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        (
            tx,
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
        )
    }

    fn limits(stall: u64, rate: u64, window: u64) -> BodyLimits {
        BodyLimits {
            max_bytes: 10,
            stall: Duration::from_secs(stall),
            min_rate: rate,
            window: Duration::from_secs(window),
        }
    }

    #[test]
    fn slots_are_capped_per_account_and_overall_and_freed_on_drop() {
        let slots = UploadSlots {
            inner: Arc::default(),
            per_account: 2,
            total: 3,
        };
        let a = AccountId("a".into());
        let b = AccountId("b".into());
        let a1 = slots.acquire("i", &a).unwrap();
        let _a2 = slots.acquire("i", &a).unwrap();
        assert!(matches!(
            slots.acquire("i", &a),
            Err(Error::TooManyRequests(_))
        ));
        // The same name in another instance is another account.
        let _b1 = slots.acquire("j", &a).unwrap();
        assert!(matches!(
            slots.acquire("i", &b),
            Err(Error::TooManyRequests(_))
        ));
        drop(a1);
        assert!(slots.acquire("i", &b).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_below_the_rate_is_cut_after_the_first_window() {
        // One byte every 2 s never stalls (3 s), but is far below 10 B/s over 5 s.
        let (tx, rx) = channel();
        let mut g = Guarded::new(rx, limits(3, 10, 5), None);
        let start = Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..10 {
                if tx.send(Ok(Bytes::from_static(b"x"))).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        let mut got = 0;
        let err = loop {
            match g.next().await {
                Some(Ok(b)) => got += b.len(),
                Some(Err(e)) => break e,
                None => panic!("the body ended without a verdict"),
            }
        };
        assert_eq!(
            Tripped::of(&err),
            Some(Tripped::TooSlow(10, Duration::from_secs(5)))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(got, 3);
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_and_a_fast_one_passes() {
        let (tx, rx) = channel();
        let mut g = Guarded::new(rx, limits(3, 0, 5), None);
        tx.send(Ok(Bytes::from_static(b"abc"))).unwrap();
        assert_eq!(g.next().await.unwrap().unwrap().len(), 3);
        let start = Instant::now();
        let err = g.next().await.unwrap().unwrap_err();
        assert_eq!(
            Tripped::of(&err),
            Some(Tripped::Stalled(Duration::from_secs(3)))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(g.next().await.is_none(), "nothing after the verdict");

        let chunks = (0..20).map(|_| Ok(Bytes::from_static(b"0123456789")));
        let mut fast = Guarded::new(futures_util::stream::iter(chunks), limits(3, 10, 5), None);
        let mut n = 0;
        while let Some(c) = fast.next().await {
            n += c.unwrap().len();
        }
        assert_eq!(n, 200);
    }

    #[tokio::test]
    async fn a_body_over_the_cap_fails_with_413() {
        let chunks = vec![
            Ok(Bytes::from_static(b"123456")),
            Ok(Bytes::from_static(b"789012")),
        ];
        let mut g = Guarded::new(
            futures_util::stream::iter(chunks),
            limits(3, 0, 5),
            Some(10),
        );
        assert!(g.next().await.unwrap().is_ok());
        let err = g.next().await.unwrap().unwrap_err();
        assert!(matches!(from_payload(&err), Error::PayloadTooLarge(_)));
    }
}
