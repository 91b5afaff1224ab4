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
pub mod openapi;
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
use actix_web::http::header;
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

#[utoipa::path(
    post, path = "/graphql", tag = "graphql",
    request_body(content = openapi::AnyJson, description = "One GraphQL request: `{query, variables, operationName}`"),
    security((), ("bearer" = [], "hypiDomain" = [])),
    responses(
        (status = 200, description = "The GraphQL response (errors inside it)", content(
            (openapi::AnyJson = "application/graphql-response+json"),
            (openapi::AnyJson = "application/json"),
        )),
        (status = 400, description = "Not a GraphQL request, or a multipart one"),
        (status = 401, description = "Bad token"),
    ),
)]
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
    let request: async_graphql::Request = json_body(&state, payload, "GraphQL request").await?;
    let domain = crate::graphql::RequestDomain::of(req.headers());
    let request = crate::graphql::for_caller(request, caller, &state.service.config);
    let base = crate::graphql::direct::PublicBase(direct::public_base(&req, &state));
    let mut response = state.schema.execute(request.data(domain).data(base)).await;
    request_id::tag_graphql_errors(&mut response);
    Ok(response.into())
}

/// Reads a JSON body of at most `max_body_bytes` as a `T`; a body that does not parse is 400
/// "invalid {what}: ...". Call it once the caller is known, so a tokenless or bad-token request
/// is answered without its body being read.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    payload: web::Payload,
    what: &str,
) -> Result<T> {
    let body = limits::read_body(payload, state.service.config.max_body_bytes).await?;
    serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("invalid {what}: {e}")))
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

/// 405 for a known path asked with a method it does not serve, with `Allow` naming the ones it
/// does (RFC 9110 section 15.5.6), from [`ROUTES`].
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    with_allow(
        &req,
        actix_web::ResponseError::error_response(&Error::method_not_allowed()),
    )
}

/// Adds `Allow` to a 405 answer of `req`'s route: the methods [`ROUTES`] lists for its path.
pub(crate) fn with_allow(req: &HttpRequest, mut res: HttpResponse) -> HttpResponse {
    let path = route_path(req.match_pattern().as_deref().unwrap_or(req.path()));
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, p)| *p == path)
        .map(|(m, _)| *m)
        .collect();
    if let Ok(allow) = header::HeaderValue::from_str(&methods.join(", ")) {
        if !methods.is_empty() {
            res.headers_mut().insert(header::ALLOW, allow);
        }
    }
    res
}

/// An actix route pattern in [`ROUTES`]' (OpenAPI's) spelling.
fn route_path(actix: &str) -> String {
    match actix.trim_end_matches('/') {
        // The download scope reads the name itself (download.rs).
        p if p == "/file" || p.starts_with("/file/") => "/file/{name}".into(),
        "/upload/{tail:.*}" => "/upload/{directory}".into(),
        "/dirs/{tail:.*}" => "/dirs/{path}".into(),
        p => p.to_string(),
    }
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

/// Every (method, path) [`configure`] serves, paths in OpenAPI's spelling (`{tail:.*}` is one
/// named parameter; `/tus/` and `/console/` are aliases of the paths listed). Each must be an
/// operation of the OpenAPI document (tests/openapi.rs); a path `configure` registers that is
/// missing here fails `routes_list_matches_the_router` below. See http/openapi.rs for how to
/// document a new route.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("GET", "/file/{name}"),
    ("HEAD", "/file/{name}"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/graphql"),
    ("GET", "/graphql"),
    ("GET", "/graphql/assets/{version}/{name}"),
    ("GET", "/console"),
    ("GET", "/console/assets/{version}/{name}"),
    ("POST", "/upload"),
    ("POST", "/upload/{directory}"),
    ("GET", "/files"),
    ("GET", "/files/{id}"),
    ("DELETE", "/files/{id}"),
    ("POST", "/dirs"),
    ("GET", "/dirs"),
    ("POST", "/dirs/{path}"),
    ("GET", "/dirs/{path}"),
    ("POST", "/files/{id}/move"),
    ("PUT", "/files/{id}/star"),
    ("DELETE", "/files/{id}/star"),
    ("POST", "/access-rights"),
    ("GET", "/access-rights"),
    ("DELETE", "/access-rights/{id}"),
    ("PUT", "/instances/{domain}"),
    ("GET", "/instances/{domain}"),
    ("GET", "/instances/{domain}/quotas"),
    ("PUT", "/instances/{domain}/quotas"),
    ("GET", "/instances/{domain}/accounts/{account}/quota"),
    ("PUT", "/instances/{domain}/accounts/{account}/quota"),
    ("GET", "/instances/{domain}/usage"),
    // Registered by webhooks::routes.
    ("POST", "/instances/{domain}/webhooks"),
    ("GET", "/instances/{domain}/webhooks"),
    ("GET", "/instances/{domain}/webhooks/{id}"),
    ("DELETE", "/instances/{domain}/webhooks/{id}"),
    ("GET", "/instances/{domain}/webhooks/{id}/deliveries"),
    (
        "POST",
        "/instances/{domain}/webhooks/{id}/deliveries/{delivery}/redeliver",
    ),
    ("POST", "/uploads/presigned"),
    ("PUT", "/uploads/put/{instance}/{id}"),
    ("POST", "/uploads/{id}/confirm"),
    ("POST", "/temp-files"),
    ("POST", "/temp-files/multipart"),
    ("PUT", "/temp-files/{instance}/{id}/parts/{number}"),
    ("POST", "/temp-files/{instance}/{id}/complete"),
    ("PUT", "/temp-files/{instance}/{id}/upload"),
    ("GET", "/temp-files/{instance}/{id}"),
    ("HEAD", "/temp-files/{instance}/{id}"),
    ("POST", "/files/{id}/links"),
    ("DELETE", "/files/{id}/links/{link}"),
    ("GET", "/links/{instance}/{id}"),
    ("HEAD", "/links/{instance}/{id}"),
    ("POST", "/assets"),
    ("POST", "/assets/upload"),
    ("GET", "/assets/{id}"),
    ("POST", "/assets/{id}/reupload"),
    ("PUT", "/files/{id}/content"),
    ("POST", "/tus"),
    ("OPTIONS", "/tus"),
    ("HEAD", "/tus/{id}"),
    ("GET", "/tus/{id}"),
    ("PATCH", "/tus/{id}"),
    ("DELETE", "/tus/{id}"),
    ("POST", "/tus/{id}"),
    ("OPTIONS", "/tus/{id}"),
];

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
        .service(
            web::resource("/openapi.json")
                .route(web::get().to(openapi::openapi_json))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/health")
                .route(web::get().to(health::live))
                .default_service(web::to(method_not_allowed)),
        )
        .app_data(web::Data::new(health::ReadyCache::default()))
        .service(
            web::resource("/ready")
                .route(web::get().to(health::ready))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(metrics::scrape))
                .default_service(web::to(method_not_allowed)),
        )
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

#[cfg(test)]
mod tests {
    use super::ROUTES;
    // `route_path` is how a registered pattern is spelled in ROUTES.
    use std::collections::BTreeSet;

    /// The (method, path) pairs `configure` registers, read from its source and from the
    /// route functions it hands on to (`.configure(webhooks::routes)`): a route added there but
    /// not to [`ROUTES`] (and so, by tests/openapi.rs, not documented) fails here.
    fn registered() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (src, function) in [
            (include_str!("mod.rs"), "pub fn configure("),
            (include_str!("webhooks.rs"), "pub fn routes("),
        ] {
            let body = src
                .split(function)
                .nth(1)
                .and_then(|b| b.split("\n}\n").next())
                .unwrap_or("");
            scan(body, &mut out);
        }
        out
    }

    /// Adds the (method, path) pairs the registrations in `body` make.
    fn scan(body: &str, out: &mut BTreeSet<(String, String)>) {
        let quoted = |s: &str| -> Vec<String> {
            s.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        // Each registration starts at `web::resource(`, `web::scope(` or `.route("`.
        let mut rest = body;
        while let Some(at) = ["web::resource(", "web::scope(", ".route(\""]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, *k)))
            .min()
        {
            let (i, key) = at;
            let after = &rest[i + key.len()..];
            let next = ["web::resource(", "web::scope(", ".route(\""]
                .iter()
                .filter_map(|k| after.find(k))
                .min()
                .unwrap_or(after.len());
            let chunk = &after[..next];
            let head = chunk.split(')').next().unwrap_or("");
            let paths: Vec<String> = if key == ".route(\"" {
                vec![chunk.split('"').next().unwrap_or("").to_string()]
            } else {
                quoted(head)
            };
            let mut methods: Vec<String> = ["get", "post", "put", "delete", "patch", "head"]
                .iter()
                .filter(|m| chunk.contains(&format!("web::{m}()")))
                .map(|m| m.to_uppercase())
                .collect();
            if chunk.contains("Method::OPTIONS") {
                methods.push("OPTIONS".into());
            }
            if key == "web::scope(" {
                // The download scope serves GET and HEAD of any name under it.
                methods = vec!["GET".into(), "HEAD".into()];
            }
            for p in paths {
                for m in &methods {
                    out.insert((m.clone(), p.clone()));
                }
            }
            rest = &after[next..];
        }
    }

    #[test]
    fn routes_list_matches_the_router() {
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(listed.len(), ROUTES.len(), "ROUTES lists a pair twice");
        let found = registered();
        assert!(found.len() > 40, "the scan found too few routes: {found:?}");
        let router: BTreeSet<(String, String)> = found
            .iter()
            .map(|(m, p)| (m.clone(), super::route_path(p)))
            .collect();
        let unlisted: Vec<_> = router.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "routes missing from ROUTES: {unlisted:?}"
        );
        let stale: Vec<_> = listed.difference(&router).collect();
        assert!(
            stale.is_empty(),
            "ROUTES entries the router lacks: {stale:?}"
        );
    }
}
