//! `GET /console`: the web console, a single page of plain HTML, CSS and ES modules (no
//! framework, no build step) embedded in the binary and served under
//! `/console/assets/<version>/<name>`. It talks only to depot's own REST and GraphQL routes,
//! with the token the user pastes (kept in the tab's `sessionStorage`), so it needs no server
//! state of its own. The sources are `assets/console/`; see the README's "Web console".

use super::embedded::{self, Asset, CSS, JS};
use super::AppState;
use crate::error::{Error, Result};
use actix_web::{web, HttpResponse};
use std::sync::LazyLock;

/// Every file the page loads. The modules import each other by relative path, so they resolve
/// under the same version.
static ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: CSS,
        body: include_bytes!("assets/console/console.css"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_bytes!("assets/console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_bytes!("assets/console/api.js"),
    },
    Asset {
        name: "upload.js",
        content_type: JS,
        body: include_bytes!("assets/console/upload.js"),
    },
    Asset {
        name: "blurhash.js",
        content_type: JS,
        body: include_bytes!("assets/console/blurhash.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_bytes!("assets/console/dom.js"),
    },
];

/// The page's template; `__V__` becomes the asset version.
const TEMPLATE: &str = include_str!("assets/console/index.html");

/// Scripts and styles from this origin only (no inline script or style attribute); images from
/// here and the `blob:` URLs thumbnails are made of; requests to this origin only; never framed;
/// no form posts anywhere (the page's forms are handled by script).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The asset version and the page naming it, computed once.
struct Bundle {
    version: String,
    page: String,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let version = embedded::version(ASSETS);
    let page = TEMPLATE.replace("__V__", &version);
    Bundle { version, page }
});

fn enabled(state: &AppState) -> Result<()> {
    if state.service.config.console {
        Ok(())
    } else {
        Err(Error::NotFound(
            "the web console is off (console = false)".into(),
        ))
    }
}

/// `GET /console`: the page. Without a token in the tab it shows the sign-in form.
#[utoipa::path(
    get, path = "/console", tag = "console",
    security(()),
    responses(
        (status = 200, description = "The web console", content_type = "text/html", body = String),
        (status = 404, description = "The console is off"),
    ),
)]
pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse> {
    enabled(&state)?;
    Ok(embedded::page(CSP, BUNDLE.page.as_str()))
}

/// `GET /console/assets/{version}/{name}`: one embedded file.
#[utoipa::path(
    get, path = "/console/assets/{version}/{name}", tag = "console",
    params(("version" = String, Path), ("name" = String, Path)),
    security(()),
    responses(
        (status = 200, description = "An embedded file of the console", content_type = "*/*", body = super::openapi::Bytes),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such asset, or the console is off"),
    ),
)]
pub async fn asset(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    enabled(&state)?;
    let (version, name) = path.into_inner();
    embedded::serve(ASSETS, &BUNDLE.version, &version, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_files_and_has_no_inline_script() {
        let page = &BUNDLE.page;
        assert!(!page.contains("__V__"));
        assert!(!page.contains("http:") && !page.contains("https:"));
        for r in ["console.css", "app.js"] {
            let href = format!("\"/console/assets/{}/{r}\"", BUNDLE.version);
            assert_eq!(page.matches(&href).count(), 1, "{href} in {page}");
        }
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script type=\"module\" src=").count()
        );
        assert!(!page.contains("style="), "the CSP forbids style attributes");
        // Every module imported by another is embedded (app.js imports four, upload.js one).
        let mut imports = 0;
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            for from in text.split(" from './").skip(1) {
                let name = from.split('\'').next().unwrap();
                assert!(
                    ASSETS.iter().any(|x| x.name == name),
                    "{name} imported by {}",
                    a.name
                );
                imports += 1;
            }
        }
        assert_eq!(imports, 5);
    }
}
