//! actix handlers: parse the request, call the service, shape the response. No storage code.

mod access;
mod assets;
mod console;
pub mod cors;
mod direct;
mod dirs;
mod disposition;
mod download;
mod embedded;
pub mod error;
mod files;
mod graphiql;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod multipart;
mod quota;
pub mod range;
pub mod rate_limit;
pub mod request_id;
mod temp_multipart;
mod transform;
pub mod tus;
mod upload;
pub mod views;
pub mod webhooks;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::service::Service;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

/// Shared state of every handler.
pub struct AppState {
    pub service: Arc<Service>,
    pub schema: crate::graphql::DepotSchema,
    /// Uploads in flight, capped per account and overall.
    pub uploads: limits::UploadSlots,
}

impl AppState {
    /// State around a service.
    pub fn new(service: Arc<Service>) -> Self {
        Self {
            schema: crate::graphql::schema(service.clone()),
            uploads: limits::UploadSlots::from_config(&service.config),
            service,
        }
    }
}

/// `POST /graphql`: the caller comes from the same headers as REST; a bad token is a 401,
/// answered before a byte of the body is read. The body is one JSON GraphQL request of at most
/// `max_body_bytes`; GraphQL multipart (file uploads) is refused: files go through `/upload`,
/// which streams them to disk instead of holding them in memory.
async fn graphql(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<async_graphql_actix_web::GraphQLResponse> {
    let caller = caller(&req, &state)?;
    let multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if multipart {
        return Err(Error::BadRequest(
            "GraphQL multipart requests are not accepted: upload files with POST /upload".into(),
        ));
    }
    let body = limits::read_body(payload, state.service.config.max_body_bytes).await?;
    let request: async_graphql::Request = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("invalid GraphQL request: {e}")))?;
    let domain = crate::graphql::RequestDomain::of(req.headers());
    let request = crate::graphql::for_caller(request, caller, &state.service.config);
    let base = crate::graphql::direct::PublicBase(direct::public_base(&req, &state));
    let mut response = state.schema.execute(request.data(domain).data(base)).await;
    request_id::tag_graphql_errors(&mut response);
    Ok(response.into())
}

/// The caller of a request, from `Authorization` and `hypi-domain`.
pub fn caller(req: &HttpRequest, state: &AppState) -> Result<Caller> {
    let header = |name: &str| -> Result<Option<&str>> {
        req.headers()
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| Error::Unauthenticated(format!("{name} header is not ASCII")))
            })
            .transpose()
    };
    state
        .service
        .authenticate(header("authorization")?, header("hypi-domain")?)
}

async fn not_found() -> Result<HttpResponse> {
    Err(Error::NotFound("no such route".into()))
}

pub(crate) async fn method_not_allowed() -> HttpResponse {
    actix_web::ResponseError::error_response(&Error::method_not_allowed())
}

/// A JSON body that could not be read: too large (413), too slow (408) or malformed (400).
fn json_error(e: actix_web::error::JsonPayloadError) -> Error {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            Error::PayloadTooLarge(format!("the request body is larger than {limit} bytes"))
        }
        J::Payload(p) => limits::from_payload(&p),
        other => Error::BadRequest(format!("invalid JSON body: {other}")),
    }
}

/// Registers every route, and JSON errors for bodies, queries and paths that do not parse.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The body guard (limits.rs) enforces `max_body_bytes` before this; the JSON limit is a
    // backstop where the guard is not installed.
    let json_cfg = web::JsonConfig::default()
        .limit(1 << 20)
        .error_handler(|e, _| json_error(e).into());
    let query_cfg = web::QueryConfig::default()
        .error_handler(|e, _| Error::BadRequest(format!("invalid query: {e}")).into());
    let path_cfg = web::PathConfig::default()
        .error_handler(|_, _| Error::NotFound("no such route".into()).into());
    cfg.app_data(json_cfg)
        .app_data(query_cfg)
        .app_data(path_cfg)
        // Downloads first: routes are tried in order, and this is the hot path.
        .service(web::scope("/file").default_service(web::to(download::download)))
        .route("/health", web::get().to(health::live))
        .app_data(web::Data::new(health::ReadyCache::default()))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(metrics::scrape))
        .service(
            web::resource("/graphql")
                .route(web::post().to(graphql))
                .route(web::get().to(graphiql::page))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/graphql/assets/{version}/{name}")
                .route(web::get().to(graphiql::asset))
                .default_service(web::to(method_not_allowed)),
        )
        // The web console (console.rs).
        .service(
            web::resource(["/console", "/console/"])
                .route(web::get().to(console::page))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/console/assets/{version}/{name}")
                .route(web::get().to(console::asset))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(["/upload", "/upload/{tail:.*}"])
                .route(web::post().to(upload::upload))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files")
                .route(web::get().to(files::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files/{id}")
                .route(web::get().to(files::get))
                .route(web::delete().to(files::delete))
                .default_service(web::to(method_not_allowed)),
        )
        // The virtual file system (http/dirs.rs).
        .service(
            web::resource(["/dirs", "/dirs/{tail:.*}"])
                .route(web::post().to(dirs::create))
                .route(web::get().to(dirs::get))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files/{id}/move")
                .route(web::post().to(dirs::move_entry))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files/{id}/star")
                .route(web::put().to(dirs::star))
                .route(web::delete().to(dirs::unstar))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/access-rights")
                .route(web::post().to(access::create))
                .route(web::get().to(access::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/access-rights/{id}")
                .route(web::delete().to(access::delete))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/instances/{domain}/quotas")
                .route(web::get().to(quota::get_quotas))
                .route(web::put().to(quota::put_quotas))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/instances/{domain}/accounts/{account}/quota")
                .route(web::get().to(quota::get_account_quota))
                .route(web::put().to(quota::put_account_quota))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/instances/{domain}/usage")
                .route(web::get().to(quota::get_usage))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/instances/{domain}")
                .route(web::put().to(access::put_instance))
                .route(web::get().to(access::get_instance))
                .default_service(web::to(method_not_allowed)),
        )
        .configure(webhooks::routes)
        // Direct upload flows and signed URLs (direct.rs).
        .service(
            web::resource("/uploads/presigned")
                .route(web::post().to(direct::create_upload))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/uploads/put/{instance}/{id}")
                .route(web::put().to(direct::put_upload))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/uploads/{id}/confirm")
                .route(web::post().to(direct::confirm_upload))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/temp-files")
                .route(web::post().to(direct::create_temp))
                .default_service(web::to(method_not_allowed)),
        )
        // Amplience's multipart temp files (temp_multipart.rs), S3 semantics on the parts.
        .service(
            web::resource("/temp-files/multipart")
                .route(web::post().to(temp_multipart::create))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/temp-files/{instance}/{id}/parts/{number}")
                .route(web::put().to(temp_multipart::put_part))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/temp-files/{instance}/{id}/complete")
                .route(web::post().to(temp_multipart::complete))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/temp-files/{instance}/{id}/upload")
                .route(web::put().to(direct::put_temp))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/temp-files/{instance}/{id}")
                .route(web::get().to(direct::get_temp))
                .route(web::head().to(direct::get_temp))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files/{id}/links")
                .route(web::post().to(direct::create_link))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files/{id}/links/{link}")
                .route(web::delete().to(direct::delete_link))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/links/{instance}/{id}")
                .route(web::get().to(direct::get_link))
                .route(web::head().to(direct::get_link))
                .default_service(web::to(method_not_allowed)),
        )
        // Hygraph's assets (assets.rs).
        .service(
            web::resource("/assets")
                .route(web::post().to(assets::create_asset))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/assets/upload")
                .route(web::post().to(assets::upload_form))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/assets/{id}")
                .route(web::get().to(assets::get_asset))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/assets/{id}/reupload")
                .route(web::post().to(assets::reupload_asset))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/files/{id}/content")
                .route(web::put().to(assets::put_content))
                .default_service(web::to(method_not_allowed)),
        )
        // tus 1.0 resumable uploads (tus.rs).
        .service(
            web::resource(["/tus", "/tus/"])
                .route(web::post().to(tus::create))
                .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options))
                .default_service(web::to(tus::not_allowed)),
        )
        .service(
            web::resource("/tus/{id}")
                .route(web::head().to(tus::head))
                .route(web::get().to(tus::get))
                .route(web::patch().to(tus::patch))
                .route(web::delete().to(tus::delete))
                .route(web::post().to(tus::overridden))
                .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options))
                .default_service(web::to(tus::not_allowed)),
        )
        .default_service(web::to(not_found));
}
