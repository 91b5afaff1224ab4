//! Prometheus metrics: the recorder (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus` without its HTTP listener), the middleware that counts every
//! request, and `GET /metrics`.
//!
//! Labels are bounded: a request is labelled by its route pattern (`/files/{id}`), never its
//! raw path, and by method and status. The series (all prefixed `depot_`):
//! - `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}`
//!   (histogram, to the response head), `http_request_bytes_total`, `http_response_bytes_total`
//! - `uploads_in_flight` (http/limits.rs), `download_cache_hits_total` / `_misses_total`
//!   (service/hot.rs), `metadata_errors_total` (error.rs), `download_cache_unconfirmed_total`
//!   (service/hot.rs), `change_feed_reconnects_total` (meta/pg/notify.rs)
//! - `blob_store_bytes`, `blob_store_objects`, `dedup_bytes_saved_total`,
//!   `dedup_uploads_total` (store/metered.rs)

use super::AppState;
use crate::error::{Error, Result, StartError};
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Request duration buckets, in seconds: from a cache hit to a long upload.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide recorder once (the server calls it at start); before that, and in
/// processes that never call it (the in-process tests), every metric is a no-op.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed already; /metrics stays empty");
        }
        describe();
        // Histograms keep their samples until upkeep folds them in: bounded memory.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start metrics upkeep: {e}");
        }
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "depot_http_requests_total",
        "Requests by method, route and status"
    );
    describe_histogram!(
        "depot_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head, by method and route"
    );
    describe_counter!(
        "depot_http_request_bytes_total",
        Unit::Bytes,
        "Request body bytes read"
    );
    describe_counter!(
        "depot_http_response_bytes_total",
        Unit::Bytes,
        "Response body bytes sent"
    );
    describe_gauge!("depot_uploads_in_flight", "Uploads holding a slot");
    describe_counter!(
        "depot_webhook_deliveries_total",
        "Webhook delivery attempts by outcome (delivered, retry, failed)"
    );
    describe_gauge!(
        "depot_blob_store_bytes",
        Unit::Bytes,
        "Bytes in the blob store"
    );
    describe_gauge!("depot_blob_store_objects", "Blobs in the blob store");
    describe_counter!(
        "depot_dedup_bytes_saved_total",
        Unit::Bytes,
        "Bytes not stored again because the same content was there"
    );
    describe_counter!(
        "depot_dedup_uploads_total",
        "Blobs committed whose content was stored already"
    );
    describe_counter!(
        "depot_download_cache_hits_total",
        "Download cache lookups (one per download while the cache is on) that found the file"
    );
    describe_counter!(
        "depot_download_redirects_total",
        "Downloads answered with 303 to a presigned GET on the bucket ([store] redirect_downloads)"
    );
    describe_counter!(
        "depot_download_cache_misses_total",
        "Download cache lookups that did not find the file"
    );
    describe_counter!(
        "depot_metadata_errors_total",
        "Failures of the metadata store"
    );
}

/// Counts every request: by route pattern and status, its duration to the response head, and
/// the body bytes in and out.
pub fn middleware<S, B>(
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<Counted<B>>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let start = Instant::now();
    // A fixed set: a client inventing methods must not create series.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "OTHER",
    }
    .to_string();
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        req.set_payload(payload);
    } else {
        let counted = payload.inspect(|chunk| {
            if let Ok(b) = chunk {
                metrics::counter!("depot_http_request_bytes_total").increment(b.len() as u64);
            }
        });
        req.set_payload(Payload::from(
            Box::pin(counted) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
        ));
    }
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        // Unmatched paths share one label: a scanner cannot grow the series.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let status = res.status().as_u16().to_string();
        metrics::counter!("depot_http_requests_total",
            "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
        metrics::histogram!("depot_http_request_duration_seconds",
            "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
        Ok(res.map_body(|_, body| Counted { body }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts the bytes it yields.
    pub struct Counted<B> {
        #[pin]
        body: B,
    }
}

impl<B: MessageBody> MessageBody for Counted<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let item = self.project().body.poll_next(cx);
        if let Poll::Ready(Some(Ok(b))) = &item {
            metrics::counter!("depot_http_response_bytes_total").increment(b.len() as u64);
        }
        item
    }
}

/// `GET /metrics` on the main address: only with `Authorization: Bearer <metrics_token>`.
/// Without a configured token the route does not exist (404); a missing or wrong token is 401.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or wrong metrics token"),
        (status = 404, description = "No metrics token is configured: the route does not exist"),
    ),
)]
pub async fn scrape(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let Some(token) = state.service.config.metrics_token.as_deref() else {
        return Err(Error::NotFound("no such route".into()));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => Ok(render()),
        _ => Err(Error::Unauthenticated(
            "GET /metrics needs Authorization: Bearer <metrics_token>".into(),
        )),
    }
}

/// `GET /metrics` on `metrics_listen`: no token (that address is the operator's to protect).
pub async fn scrape_open() -> HttpResponse {
    render()
}

fn render() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(install().render())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    // Hashing first makes the lengths equal too.
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The app served on `metrics_listen`: `/metrics` and nothing else.
pub fn configure_open(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape_open))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(Error::NotFound(
                "only GET /metrics is served on this address".into(),
            ))
        }));
}

/// The server on `metrics_listen` (one worker, no signals of its own: `crate::serve` stops it).
pub fn open_server(addr: &str) -> std::result::Result<actix_web::dev::Server, StartError> {
    let server = actix_web::HttpServer::new(|| actix_web::App::new().configure(configure_open))
        .workers(1)
        .disable_signals()
        .bind(addr)
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    for a in server.addrs() {
        // Not "listening on": that line names the main address.
        tracing::info!("serving /metrics without a token at http://{a}");
    }
    Ok(server.run())
}
