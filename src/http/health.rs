//! `GET /health` (liveness: the process answers) and `GET /ready` (readiness: the blob store and
//! the metadata store both take a write). Both are tokenless, so a readiness answer is reused
//! for [`READY_TTL`] and probes never overlap within a worker: hammering `/ready` cannot turn
//! into a stream of fsyncs.

use super::AppState;
use crate::error::{Error, Result};
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long one readiness answer is reused.
pub const READY_TTL: Duration = Duration::from_secs(1);

/// The last readiness answer of this worker: when, and the failure if there was one.
#[derive(Default)]
pub struct ReadyCache(tokio::sync::Mutex<Option<(Instant, Option<String>)>>);

/// `GET /health`: 200 while the process serves requests.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    security(()),
    responses((status = 200, description = "The process serves requests", body = super::openapi::Health)),
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 when a tiny write and delete go through both stores, else 503
/// `UNAVAILABLE` naming the store (the cause goes to the log, not to the tokenless caller).
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Both stores take a write", body = super::openapi::Ready),
        (status = 503, description = "A store cannot be written (`UNAVAILABLE`)"),
    ),
)]
pub async fn ready(
    state: web::Data<AppState>,
    cache: web::Data<ReadyCache>,
) -> Result<HttpResponse> {
    // Held across the probe: concurrent callers wait for it and share its answer.
    let mut last = cache.0.lock().await;
    let fresh = last.as_ref().filter(|(at, _)| at.elapsed() < READY_TTL);
    let failure = match fresh {
        Some((_, failure)) => failure.clone(),
        None => {
            let failure = probe(&state).await;
            *last = Some((Instant::now(), failure.clone()));
            failure
        }
    };
    match failure {
        None => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": {"blobStore": "ok", "metadataStore": "ok"}
        }))),
        Some(what) => Err(Error::Unavailable(format!("not ready: {what}"))),
    }
}

/// Runs both probes; the first failure, in words a client may see.
async fn probe(state: &AppState) -> Option<String> {
    let svc = state.service.clone();
    let blobs = crate::service::blocking(move || svc.probe_blob_store()).await;
    if let Err(e) = blobs {
        tracing::warn!(error = %e.chain(), "readiness: the blob store cannot be written");
        return Some("the blob store cannot be written".into());
    }
    let svc = state.service.clone();
    let meta = crate::service::blocking(move || svc.probe_meta_store()).await;
    if let Err(e) = meta {
        tracing::warn!(error = %e.chain(), "readiness: the metadata store cannot be written");
        return Some("the metadata store cannot be written".into());
    }
    None
}
