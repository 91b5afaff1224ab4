//! Request rate limits on the upload and GraphQL routes, per client IP and per account (token
//! buckets from the `governor` crate; both off by default). A request over either limit gets
//! 429 `TOO_MANY_REQUESTS` with `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
//! `Retry-After`; a request within them carries the same `RateLimit-*` headers.
//!
//! The IP is the TCP peer's (a forwarded-for header is the client's to forge). The account is
//! the verified token's; a request with a bad or no token is limited by IP only (its handler
//! answers 401 anyway). Buckets of keys idle for a full period are dropped every minute, so the
//! memory held grows with recently active clients only.

use super::AppState;
use crate::config::Config;
use crate::error::Error;
use crate::types::AccountId;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, ResponseError};
use futures_util::future::{ready, Either};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One limit: a bucket per key of `per_minute` requests, refilled evenly over the minute.
struct Limit<K: Hash + Eq + Clone> {
    per_minute: u32,
    buckets: Keyed<K>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            per_minute,
            buckets: RateLimiter::dashmap(Quota::per_minute(n))
                .with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Ok(requests left), or Err(seconds until the next one is allowed).
    fn check(&self, key: &K) -> Result<u32, u64> {
        match self.buckets.check_key(key) {
            Ok(state) => Ok(state.remaining_burst_capacity()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
        }
    }
}

/// The configured limits; cheap to clone (one per worker shares them).
#[derive(Clone, Default)]
pub struct RateLimits {
    per_ip: Option<Arc<Limit<IpAddr>>>,
    per_account: Option<Arc<Limit<(String, AccountId)>>>,
}

impl RateLimits {
    /// From `rate_limit_per_ip_per_minute` and `rate_limit_per_account_per_minute` (0 = off).
    /// Starts the sweep of idle buckets when either is on.
    pub fn from_config(c: &Config) -> Self {
        let limits = Self {
            per_ip: Limit::new(c.rate_limit_per_ip_per_minute).map(Arc::new),
            per_account: Limit::new(c.rate_limit_per_account_per_minute).map(Arc::new),
        };
        if limits.per_ip.is_some() || limits.per_account.is_some() {
            let sweep = limits.clone();
            let spawned = std::thread::Builder::new()
                .name("rate-limit-sweep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(60));
                    if let Some(l) = &sweep.per_ip {
                        l.buckets.retain_recent();
                        l.buckets.shrink_to_fit();
                    }
                    if let Some(l) = &sweep.per_account {
                        l.buckets.retain_recent();
                        l.buckets.shrink_to_fit();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start the rate limit sweep: {e}");
            }
        }
        limits
    }

    /// Whether any limit is on.
    pub fn enabled(&self) -> bool {
        self.per_ip.is_some() || self.per_account.is_some()
    }

    /// Checks one request: Ok(headers to add) or Err(the 429 answer's headers and message).
    fn check(&self, req: &ServiceRequest) -> Result<Headers, (Headers, String)> {
        let mut tightest: Option<Headers> = None;
        if let (Some(l), Some(ip)) = (&self.per_ip, req.peer_addr().map(|a| a.ip())) {
            match l.check(&ip) {
                Ok(left) => tightest = Some(Headers::min(tightest, l.per_minute, left)),
                Err(wait) => {
                    return Err((
                        Headers::refused(l.per_minute, wait),
                        format!(
                            "more than {} requests a minute from this address; retry in {wait} s",
                            l.per_minute
                        ),
                    ))
                }
            }
        }
        if let Some(l) = &self.per_account {
            if let Some(key) = account(req) {
                match l.check(&key) {
                    Ok(left) => tightest = Some(Headers::min(tightest, l.per_minute, left)),
                    Err(wait) => {
                        return Err((
                            Headers::refused(l.per_minute, wait),
                            format!(
                            "more than {} requests a minute from this account; retry in {wait} s",
                            l.per_minute
                        ),
                        ))
                    }
                }
            }
        }
        Ok(tightest.unwrap_or_default())
    }

    /// The middleware: limits `POST /upload/**` and `POST /graphql`, passes everything else.
    pub fn middleware<S, B>(
        &self,
        req: ServiceRequest,
        srv: &S,
    ) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>> + use<S, B>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let limited = self.enabled()
            && req.method() == actix_web::http::Method::POST
            && (super::limits::is_upload_route(req.path()) || req.path() == "/graphql");
        if !limited {
            return Either::Left(Either::Left(map_left(srv.call(req))));
        }
        match self.check(&req) {
            Ok(headers) => {
                let fut = srv.call(req);
                Either::Left(Either::Right(async move {
                    let mut res = fut.await?;
                    headers.apply(res.headers_mut());
                    Ok(res.map_into_left_body())
                }))
            }
            Err((headers, message)) => {
                let mut res = Error::TooManyRequests(message).error_response();
                headers.apply(res.headers_mut());
                // The body is not read: close rather than let the server drain it unbounded.
                res.head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                Either::Right(ready(Ok(req.into_response(res).map_into_right_body())))
            }
        }
    }
}

async fn map_left<B, F>(fut: F) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: MessageBody,
{
    Ok(fut.await?.map_into_left_body())
}

/// The verified account of a request, if its token is good.
fn account(req: &ServiceRequest) -> Option<(String, AccountId)> {
    let state = req.app_data::<web::Data<AppState>>()?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    match state
        .service
        .authenticate(header("authorization"), header("hypi-domain"))
    {
        Ok(crate::auth::Caller::User(p)) => Some((p.instance, p.account)),
        _ => None,
    }
}

/// The `RateLimit-*` headers of the tightest limit a request met.
#[derive(Default)]
struct Headers {
    limit: u32,
    remaining: u32,
    /// Seconds until a refused caller may retry (0 when it was not refused).
    reset: u64,
    set: bool,
}

impl Headers {
    fn min(prev: Option<Headers>, limit: u32, remaining: u32) -> Headers {
        match prev {
            Some(p) if p.remaining <= remaining => p,
            _ => Headers {
                limit,
                remaining,
                reset: 0,
                set: true,
            },
        }
    }

    fn refused(limit: u32, reset: u64) -> Headers {
        Headers {
            limit,
            remaining: 0,
            reset,
            set: true,
        }
    }

    fn apply(&self, h: &mut actix_web::http::header::HeaderMap) {
        if !self.set {
            return;
        }
        let mut put = |name: &'static str, v: u64| {
            h.insert(HeaderName::from_static(name), HeaderValue::from(v));
        };
        put("ratelimit-limit", u64::from(self.limit));
        put("ratelimit-remaining", u64::from(self.remaining));
        if self.reset > 0 {
            put("ratelimit-reset", self.reset);
            put("retry-after", self.reset);
        }
    }
}
