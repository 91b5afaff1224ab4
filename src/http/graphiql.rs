//! `GET /graphql`: the GraphiQL explorer (on unless `graphiql = false`), served entirely from
//! files embedded in the binary.
//!
//! depot's rule is that the binary serves only what is embedded in it and points no browser at a
//! third party, so GraphiQL 3.8.3 with React 18.3.1 (UMD builds from the npm registry, about
//! 4 MB; see `assets/graphiql/README.md`) is compiled in and served under
//! `/graphql/assets/<version>/<name>`. The version is a hash of every embedded file, so the files
//! can be cached for a year as immutable and a new build still never meets a stale copy. The page
//! has no inline script (its start-up code is `init.js`), so its CSP allows scripts from this
//! origin only.

use super::embedded::{self, Asset, CSS, JS};
use super::AppState;
use crate::error::{Error, Result};
use actix_web::{web, HttpResponse};
use std::sync::LazyLock;

/// Everything the page loads, in the order it loads it (scripts depend on the ones before).
/// A `static`, not a `const`: a const is copied into each place that uses it, and so were the
/// 4 MB of files (the release binary grew by twice their size).
static ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql.min.css",
        content_type: CSS,
        body: include_bytes!("assets/graphiql/graphiql.min.css"),
    },
    Asset {
        name: "react.production.min.js",
        content_type: JS,
        body: include_bytes!("assets/graphiql/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JS,
        body: include_bytes!("assets/graphiql/react-dom.production.min.js"),
    },
    Asset {
        name: "graphiql.min.js",
        content_type: JS,
        body: include_bytes!("assets/graphiql/graphiql.min.js"),
    },
    Asset {
        name: "init.js",
        content_type: JS,
        body: include_bytes!("assets/graphiql/init.js"),
    },
];

/// `'unsafe-inline'` for styles only: GraphiQL's dialogs insert style elements at run time
/// (react-style-singleton; without it Chromium blocks one as soon as the settings dialog opens)
/// and CodeMirror's dialogs carry style attributes. Fonts are `data:` URLs in the stylesheet, the
/// page's icon is `data:,` (so the browser asks for no favicon). Nothing else: no inline or
/// eval'd script, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The asset version and the page naming it, computed once.
struct Bundle {
    version: String,
    page: String,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let version = embedded::version(ASSETS);
    let mut head = String::new();
    let mut body = String::new();
    for a in ASSETS {
        let href = format!("/graphql/assets/{version}/{}", a.name);
        if a.content_type == CSS {
            head.push_str(&format!("<link rel=\"stylesheet\" href=\"{href}\">\n"));
        } else {
            body.push_str(&format!("<script src=\"{href}\"></script>\n"));
        }
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>depot GraphiQL</title>\n<link rel=\"icon\" href=\"data:,\">\n{head}</head>\n<body style=\"margin:0\">\n\
         <div id=\"graphiql\" style=\"height:100vh\"></div>\n{body}</body>\n</html>\n"
    );
    Bundle { version, page }
});

/// Serves the page when enabled; otherwise `GET /graphql` is a method this path does not serve.
#[utoipa::path(
    get, path = "/graphql", tag = "graphql",
    security(()),
    responses(
        (status = 200, description = "The GraphiQL page", content_type = "text/html", body = String),
        (status = 405, description = "GraphiQL is off"),
    ),
)]
pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse> {
    if !state.service.config.graphiql {
        return Err(Error::MethodNotAllowed(
            "GraphiQL is off (graphiql = false); send queries with POST /graphql".into(),
        ));
    }
    Ok(embedded::page(CSP, BUNDLE.page.as_str()))
}

/// `GET /graphql/assets/{version}/{name}`: one embedded file.
#[utoipa::path(
    get, path = "/graphql/assets/{version}/{name}", tag = "graphql",
    params(("version" = String, Path), ("name" = String, Path)),
    security(()),
    responses(
        (status = 200, description = "An embedded file of the GraphiQL page", content_type = "*/*", body = super::openapi::Bytes),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such asset, or GraphiQL is off"),
    ),
)]
pub async fn asset(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    if !state.service.config.graphiql {
        return Err(Error::NotFound("GraphiQL is off (graphiql = false)".into()));
    }
    let (version, name) = path.into_inner();
    embedded::serve(ASSETS, &BUNDLE.version, &version, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_every_asset_once_and_nothing_else() {
        let page = &BUNDLE.page;
        assert!(!page.contains("http:") && !page.contains("https:") && !page.contains("//"));
        for a in ASSETS {
            let href = format!("\"/graphql/assets/{}/{}\"", BUNDLE.version, a.name);
            assert_eq!(page.matches(&href).count(), 1, "{href} in {page}");
        }
        assert_eq!(page.matches("/graphql/assets/").count(), ASSETS.len());
        // No inline script: every script element has a src.
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script src=").count()
        );
    }
}
