//! depot: a self-hosted file upload and download service.
//!
//! Layering (data flows one way): `http` -> `service` -> `store`, `meta`, `auth`, `media`.
//!
//! A map of the code:
//! - `http/`: actix handlers and nothing else. `upload.rs` (`POST /upload/**`) with
//!   `multipart.rs` (the request-side multipart reader the fuzz target drives),
//!   `download.rs` + `range.rs` + `disposition.rs` (`GET /file/...`), `files.rs`, `access.rs`,
//!   `limits.rs` (the body guard on every route: size cap, stall and minimum rate; upload
//!   slots per account and overall), `error.rs` (the error catalogue's HTTP mapping),
//!   `graphiql.rs` + `assets/graphiql/` (GraphiQL embedded in the binary), `console.rs` +
//!   `assets/console/` (the web console at `/console`), `embedded.rs` (serving embedded files),
//!   `views.rs` (JSON shapes).
//! - `graphql/`: the GraphQL schema (async-graphql): resolvers translate to service calls;
//!   request pricing and time budget.
//! - `service/`: the use cases, owning every rule. `upload.rs` (the one ingest path),
//!   `files.rs` (read, list, delete), `access.rs` (grants and their caps), `hot.rs` (download
//!   cache), `maintenance.rs` (fsck, gc), `names.rs`, and `query/` for ArcQL: `fields.rs` (the
//!   one File field table), `view.rs` (what a caller may see), `plan.rs` (index choice),
//!   `paging.rs` (the one paging rule), `mutate.rs`, `arcql/` (parser, evaluation, linear
//!   wildcard matching in `glob.rs`).
//! - `auth/`: tokens (`jwt.rs`) and the one set of access predicates (`access.rs`: `manages`,
//!   `names_caller`, `may_read`).
//! - `store/`: blob storage behind narrow traits (`BlobStore` core, `BlobMaintenance`,
//!   `PartStore`), the local implementation (`local.rs`, O_DIRECT writer), S3 on `object_store`
//!   (`s3.rs`), store-to-store copying for `depot migrate-store` (`migrate.rs`), hashing
//!   (`hash.rs`) and the contract suite every backend runs (`contract.rs`).
//! - `meta/`: metadata behind narrow traits (`InstanceStore`, `FileStore`, `GrantStore`,
//!   `UploadSessionStore`, `MaintenanceStore`), the sled implementation and the contract suite;
//!   the sled -> PostgreSQL copy of `depot migrate-store --from sled:DIR` (`migrate.rs`, with the
//!   stores' export/import calls in `sled_store/export.rs` and `pg/import.rs`).
//! - `service/redirect.rs`: download redirects to a presigned GET (`[store] redirect_downloads`).
//! - `media/`: type sniffing and image dimensions from a file's first bytes.
//! - `error.rs`: the one error catalogue (variant -> code, status) and `StartError` for start-up.
//! - `config.rs`, `types.rs`: typed configuration and the domain newtypes.
//! - `client/`: the `depot upload` (tus, resumable) and `depot download` (Range resume)
//!   commands, an HTTP client of a running server.
//! - `fetch/`: SSRF-safe outbound HTTP (remote URL ingest, webhooks): public addresses only
//!   (`addr.rs`) unless `remote_fetch.allow_hosts` names the host, vetted on every redirect,
//!   size-capped and timed.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod fetch;
pub mod graphql;
pub mod http;
pub mod media;
pub mod meta;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod types;

use crate::config::Config;
use crate::error::StartError;
use crate::service::Service;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Name of the lock file that keeps two servers off one data dir.
const LOCK_FILE: &str = "depot.lock";

/// Takes the data dir's exclusive lock, failing fast if another process holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, StartError> {
    let dir_err = |source| StartError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(dir_err)?;
    let path = data_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(dir_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::DataDirBusy {
            path: data_dir.to_path_buf(),
            hint: "",
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(dir_err(e)),
    }
}

/// Opens the stores under the data dir and wires the service. The caller holds the lock.
pub fn open_service(config: Config) -> Result<Service, StartError> {
    let data = config.data_dir.clone();
    let blobs = store::open_configured(&config)?;
    let swept = match blobs.maintenance() {
        Some(m) => m.sweep_temp()?,
        None => 0,
    };
    if swept > 0 {
        tracing::info!(swept, "removed temp files left by an earlier run");
    }
    let (meta, pg): (Arc<dyn meta::MetaStore>, _) = match config.meta.kind {
        config::MetaKind::Sled => (Arc::new(meta::SledMeta::open(&data.join("meta"))?), None),
        config::MetaKind::Postgres => {
            let pg = Arc::new(meta::PgMeta::open(&config.meta.pg_options())?);
            (pg.clone(), Some(pg))
        }
    };
    let keys = auth::Keys::load(&config.auth, &data)?;
    // Counted for /metrics, whichever backend holds the bytes.
    let blobs = store::Metered::shared(blobs);
    let service = Service::new(config, meta, Arc::new(blobs), keys);
    // Other nodes share the store: the download cache follows their changes (issue 13).
    if let Some(pg) = pg.filter(|_| service.hot.enabled()) {
        service.hot.follow(pg.change_feed(service.hot.clone())?);
    }
    Ok(service)
}

/// Runs the HTTP server until it is stopped.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let _lock = lock_data_dir(&config.data_dir)?;
    let listen = config.listen.clone();
    let workers = config.workers;
    let header_timeout = Duration::from_secs(config.header_timeout_secs);
    let grace = config.shutdown_grace_secs;
    let metrics_listen = config.metrics_listen.clone();
    http::metrics::install();
    let service = Arc::new(open_service(config)?);
    service.spawn_session_sweeper();
    let webhook_worker = service.spawn_webhook_worker(http::webhooks::event_body);
    // Remote URL ingests pending when the server stopped resume (or are marked failed).
    match service.resume_ingests() {
        Ok(0) => {}
        Ok(n) => tracing::info!(ingests = n, "resumed pending remote URL ingests"),
        Err(e) => tracing::warn!(error = %e.chain(), "cannot resume remote URL ingests"),
    }
    store::metered::seed_gauges(service.blobs.clone());
    let limits = http::limits::BodyLimits::from_config(&service.config);
    let rate = http::rate_limit::RateLimits::from_config(&service.config);
    let cors = http::cors::Cors::from_config(&service.config.cors)?;
    let state = actix_web::web::Data::new(http::AppState::new(service.clone()));
    let mut server = actix_web::HttpServer::new(move || {
        let limits = limits.clone();
        let rate = rate.clone();
        let cors = cors.clone();
        actix_web::App::new()
            .app_data(state.clone())
            .configure(http::configure)
            // Every request body, on every route, is bounded in size and time before any
            // handler reads it.
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service as _;
                use futures_util::future::{ready, Either};
                match limits.guard(req) {
                    Ok((req, unread)) => {
                        let res = srv.call(req);
                        Either::Left(async move {
                            let res = res.await?;
                            Ok(match unread {
                                Some(unread) => unread.hold_until_sent(res),
                                None => res,
                            })
                        })
                    }
                    Err(refused) => Either::Right(ready(Ok(*refused))),
                }
            })
            .wrap_fn(move |req, srv| rate.middleware(req, srv))
            // Preflights are answered before the body guard and the rate limits, and every
            // answer (errors and 429s included) carries the CORS headers its origin is due
            // (http/cors.rs).
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service as _;
                use futures_util::future::Either;
                match &cors {
                    Some(cors) => Either::Left(cors.handle(req, srv)),
                    None => {
                        let res = srv.call(req);
                        Either::Right(async move { res.await.map(|r| r.map_into_boxed_body()) })
                    }
                }
            })
            // Outside the guard, so refusals are counted and carry a request id too.
            .wrap_fn(http::metrics::middleware)
            .wrap_fn(http::request_id::middleware)
    })
    .client_request_timeout(header_timeout)
    .keep_alive(Duration::from_secs(75))
    // SIGTERM/SIGINT: see shutdown.rs.
    .disable_signals()
    .shutdown_timeout(grace);
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.bind(&listen).map_err(|source| StartError::Bind {
        addr: listen.clone(),
        source,
    })?;
    let metrics_server = match metrics_listen {
        Some(addr) => Some(http::metrics::open_server(&addr)?),
        None => None,
    };
    for addr in server.addrs() {
        tracing::info!("listening on http://{addr}");
    }
    let server = server.run();
    let mut handles = vec![server.handle()];
    if let Some(m) = &metrics_server {
        handles.push(m.handle());
    }
    actix_web::rt::spawn(shutdown::on_signal(handles, grace));
    let metrics_handle = metrics_server.map(|m| {
        let handle = m.handle();
        actix_web::rt::spawn(m);
        handle
    });
    let result = server.await.map_err(StartError::Server);
    if let Some(m) = metrics_handle {
        m.stop(false).await;
    }
    // The webhook worker finishes the attempts in flight (each bounded by
    // `webhooks.timeout_secs`); what is left stays in the outbox for the next start.
    service.stop_webhook_worker();
    let bound = Duration::from_secs(service.config.webhooks.timeout_secs + 1);
    if tokio::time::timeout(bound, webhook_worker).await.is_err() {
        tracing::warn!("the webhook worker did not stop in time");
    }
    shutdown::finish(&service);
    tracing::info!("stopped");
    result
}
