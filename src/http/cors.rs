//! CORS: which web pages on other origins may call depot from a browser, and with what.
//!
//! One table ([`ROUTES`]) says, per route pattern, the methods and request headers a page may
//! use and whether the route takes credentials. Routes not in it (new ones) get [`DEFAULT`]:
//! every method, the token headers, listed origins only; a new route that needs something else
//! (a capability URL that `*` may reach, a header of its own) is one line in the table.
//!
//! - An origin in `cors.allowed_origins` gets `Access-Control-Allow-Origin` (its own origin)
//!   and `Access-Control-Expose-Headers` ([`EXPOSE`]) on every answer, errors included, so a
//!   page can read depot's JSON errors. `*` in the list admits any origin, but only on routes
//!   marked [`Credentials::None`] (answered with `Access-Control-Allow-Origin: *`).
//! - Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered here, before the
//!   body guard and the routes: 204 with the route's methods and headers, or 403 with a JSON
//!   error (origin not allowed, method or header the route does not take) and no CORS headers,
//!   so the browser refuses the request.
//! - An actual request from an origin not allowed is served as if it had no `Origin` (no CORS
//!   headers): the browser hides the answer from the page. depot authenticates by header, never
//!   by cookie, so `Access-Control-Allow-Credentials` is never sent.
//! - `Vary: Origin` is on every answer while CORS is configured, so caches keep them apart.

use crate::config::{normalize_origin, CorsConfig};
use crate::error::{Error, StartError};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use std::sync::Arc;

/// Response headers a page may read, on every route: ours, then every tus header
/// ([`super::tus::EXPOSED`]), so tus-js-client in a browser reads offsets and `Location`.
pub const EXPOSE: &[&str] = &[
    "ETag",
    "Location",
    "Content-Disposition",
    "Content-Range",
    "Accept-Ranges",
];

/// What a route authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization` / `hypi-domain`: only listed origins, never `*`.
    Token,
    /// Nothing, or a capability in the URL: `*` may admit any origin.
    None,
}

/// What one route pattern takes from a cross-origin page.
#[derive(Debug)]
pub struct Route {
    /// `/exact`, `/prefix/*` (one segment), `/prefix/**` (anything below).
    pub pattern: &'static str,
    pub methods: &'static [&'static str],
    /// Request headers a page may send (lower case; the CORS-safelisted ones need not be here).
    pub headers: &'static [&'static str],
    pub credentials: Credentials,
}

const TOKEN: &[&str] = &["authorization", "hypi-domain", "content-type"];
const DOWNLOAD: &[&str] = &[
    "authorization",
    "hypi-domain",
    "range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
];

/// Capability-URL downloads: no token, but ranges and conditional requests.
const RANGED: &[&str] = &[
    "range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
];

const fn token(pattern: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        pattern,
        methods,
        headers: TOKEN,
        credentials: Credentials::Token,
    }
}

const fn capability(
    pattern: &'static str,
    methods: &'static [&'static str],
    headers: &'static [&'static str],
) -> Route {
    Route {
        pattern,
        methods,
        headers,
        credentials: Credentials::None,
    }
}

/// The routes, first match wins. Routes that carry their capability in the URL (upload URLs,
/// signed download links) are `Credentials::None` with the methods and headers they take
/// (`content-type` for a PUT).
pub const ROUTES: &[Route] = &[
    Route {
        pattern: "/file/**",
        methods: &["GET", "HEAD"],
        headers: DOWNLOAD,
        credentials: Credentials::Token,
    },
    token("/upload", &["POST"]),
    token("/upload/**", &["POST"]),
    token("/graphql", &["POST"]),
    token("/files", &["GET"]),
    token("/files/*", &["GET", "DELETE"]),
    token("/access-rights", &["GET", "POST"]),
    token("/access-rights/*", &["DELETE"]),
    token("/instances/*", &["GET", "PUT"]),
    // Upload sessions (presigned PUT, temp files) and signed download links: the routes that
    // take a capability in the URL may be opened to `*`; the ones that create them take a token.
    token("/uploads/presigned", &["POST"]),
    token("/uploads/*/confirm", &["POST"]),
    capability("/uploads/put/*/*", &["PUT"], &["content-type"]),
    token("/temp-files", &["POST"]),
    capability("/temp-files/*/*/upload", &["PUT"], &["content-type"]),
    token("/temp-files/multipart", &["POST"]),
    capability("/temp-files/*/*/parts/*", &["PUT"], &["content-type"]),
    capability("/temp-files/*/*/complete", &["POST"], &["content-type"]),
    capability("/temp-files/*/*", &["GET", "HEAD"], RANGED),
    token("/files/*/links", &["POST"]),
    token("/files/*/links/*", &["DELETE"]),
    capability("/links/*/*", &["GET", "HEAD"], RANGED),
    // Hygraph's assets (assets.rs): the upload form carries its capability in the signed policy.
    capability("/assets/upload", &["POST"], &["content-type"]),
    token("/assets", &["POST"]),
    token("/assets/*", &["GET"]),
    token("/assets/*/reupload", &["POST"]),
    token("/files/*/content", &["PUT"]),
    // tus (tus.rs): a token, and tus's own request headers.
    Route {
        pattern: "/tus",
        methods: &["POST", "OPTIONS"],
        headers: super::tus::REQUEST_HEADERS,
        credentials: Credentials::Token,
    },
    Route {
        pattern: "/tus/**",
        methods: &["POST", "HEAD", "GET", "PATCH", "DELETE", "OPTIONS"],
        headers: super::tus::REQUEST_HEADERS,
        credentials: Credentials::Token,
    },
    Route {
        pattern: "/health",
        methods: &["GET"],
        headers: &[],
        credentials: Credentials::None,
    },
];

/// Any route not in [`ROUTES`].
pub const DEFAULT: Route = token("/**", &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]);

/// Whether `path` matches `pattern` (see [`Route::pattern`]).
fn matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/**") {
        return path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.is_empty() && prefix.is_empty());
    }
    let mut p = pattern.split('/');
    let mut q = path.split('/');
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The route entry for `path`.
pub fn route(path: &str) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| matches(r.pattern, path))
        .unwrap_or(&DEFAULT)
}

/// The configured origins, ready for requests.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
    max_age: HeaderValue,
    expose: HeaderValue,
}

/// What an origin gets on a route.
enum Grant {
    Origin(HeaderValue),
    Any,
}

impl Cors {
    /// `None` when no origin is configured: depot then sends no CORS headers at all.
    pub fn from_config(cfg: &CorsConfig) -> Result<Option<Arc<Self>>, StartError> {
        if cfg.allowed_origins.is_empty() {
            return Ok(None);
        }
        let mut origins = Vec::new();
        let mut any = false;
        for o in &cfg.allowed_origins {
            match normalize_origin(o)?.as_str() {
                "*" => any = true,
                o => origins.push(o.to_string()),
            }
        }
        Ok(Some(Arc::new(Self {
            origins,
            any,
            max_age: HeaderValue::from(cfg.max_age_secs),
            expose: HeaderValue::from_str(&[EXPOSE, super::tus::EXPOSED].concat().join(", "))
                .map_err(|_| StartError::Config("invalid CORS expose list".into()))?,
        })))
    }

    fn grant(&self, origin: &HeaderValue, route: &Route) -> Option<Grant> {
        let o = origin.to_str().ok()?;
        if self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            return Some(Grant::Origin(origin.clone()));
        }
        (self.any && route.credentials == Credentials::None).then_some(Grant::Any)
    }

    /// The middleware: answers preflights, decorates every other answer.
    pub fn handle<S, B>(
        self: &Arc<Self>,
        req: ServiceRequest,
        srv: &S,
    ) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
        S::Future: 'static,
        B: MessageBody + 'static,
    {
        let route = route(req.path());
        let origin = req.headers().get(header::ORIGIN).cloned();
        let preflight = req.method() == Method::OPTIONS
            && origin.is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let res = self.preflight(req.headers(), origin.as_ref(), route);
            let res = req.into_response(res);
            return Box::pin(std::future::ready(Ok(res)));
        }
        let grant = origin.as_ref().and_then(|o| self.grant(o, route));
        let this = self.clone();
        let fut = srv.call(req);
        Box::pin(async move {
            // Handlers' and the body guard's errors arrive here as responses; an `Err` (none
            // of depot's services make one) goes to actix unchanged.
            let mut res = fut.await?.map_into_boxed_body();
            let h = res.headers_mut();
            h.append(header::VARY, HeaderValue::from_static("Origin"));
            if let Some(grant) = grant {
                this.allow(h, grant);
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, this.expose.clone());
            }
            Ok(res)
        })
    }

    fn allow(&self, h: &mut HeaderMap, grant: Grant) {
        let value = match grant {
            Grant::Origin(o) => o,
            Grant::Any => HeaderValue::from_static("*"),
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }

    fn preflight(
        &self,
        headers: &HeaderMap,
        origin: Option<&HeaderValue>,
        route: &Route,
    ) -> HttpResponse {
        let refuse = |msg: String| Error::Forbidden(msg).error_response();
        let shown =
            |v: Option<&HeaderValue>| v.and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
        let Some(grant) = origin.and_then(|o| self.grant(o, route)) else {
            return refuse(format!(
                "origin {} may not call this route (cors.allowed_origins)",
                shown(origin)
            ));
        };
        let method = shown(headers.get(header::ACCESS_CONTROL_REQUEST_METHOD));
        if !route.methods.contains(&method.as_str()) {
            return refuse(format!(
                "method {method} is not allowed here; allowed: {}",
                route.methods.join(", ")
            ));
        }
        let requested = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        for h in requested {
            if !route.headers.contains(&h.as_str()) {
                return refuse(format!("request header {h} is not allowed here"));
            }
        }
        let mut res = HttpResponse::NoContent().finish();
        let h = res.headers_mut();
        self.allow(h, grant);
        let join = |v: &[&str]| HeaderValue::from_str(&v.join(", ")).ok();
        if let Some(m) = join(route.methods) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        if let Some(v) = join(route.headers).filter(|_| !route.headers.is_empty()) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("/file/**", "/file/a-b.png"));
        assert!(matches("/file/**", "/file/x/y"));
        assert!(!matches("/file/**", "/file"));
        assert!(!matches("/file/**", "/filex/y"));
        assert!(matches("/files/*", "/files/01ABC"));
        assert!(!matches("/files/*", "/files/"));
        assert!(!matches("/files/*", "/files/a/b"));
        assert!(matches("/upload", "/upload"));
        assert!(!matches("/upload", "/upload/x"));
        assert!(matches("/upload/**", "/upload/x/y"));
        assert!(matches("/**", "/anything/new"));
        assert_eq!(route("/files").methods, &["GET"]);
        assert_eq!(route("/new/route").pattern, "/**");
        assert_eq!(route("/uploads/put/i/u").credentials, Credentials::None);
        assert_eq!(route("/uploads/u/confirm").credentials, Credentials::Token);
        assert_eq!(route("/temp-files/i/t/upload").methods, &["PUT"]);
        assert_eq!(route("/temp-files/i/t").methods, &["GET", "HEAD"]);
        assert_eq!(
            route("/temp-files/multipart").credentials,
            Credentials::Token
        );
        assert_eq!(route("/temp-files/i/t/parts/3").methods, &["PUT"]);
        assert_eq!(
            route("/temp-files/i/t/parts/3").credentials,
            Credentials::None
        );
        assert_eq!(route("/temp-files/i/t/complete").methods, &["POST"]);
        assert_eq!(route("/files/f/links").methods, &["POST"]);
        assert_eq!(route("/assets/upload").credentials, Credentials::None);
        assert_eq!(route("/assets/a").credentials, Credentials::Token);
    }
}
