//! The web console's HTTP surface (no browser; tests/browser.rs drives the page itself): the
//! page and its embedded files with their types, policies and caching, every file the page and
//! its modules name served, wrong versions and methods refused with JSON errors, and the
//! `console = false` switch.

mod common;
use common::*;

/// The `/console/assets/<version>/<name>` URLs in a text (the page, or a module's imports).
fn asset_urls(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|s| s.starts_with("/console/assets/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_page_and_every_file_it_loads_are_served_with_strict_headers() {
    let s = Server::start();
    for path in ["/console", "/console/"] {
        let res = s.get(path, None);
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        let csp = h["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{rule} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        // Without a token the page is the same: it shows the sign-in form itself.
        let page = res.text().unwrap();
        assert!(page.contains("id=\"signin-form\""));
        let urls = asset_urls(&page);
        assert_eq!(urls.len(), 2, "{urls:?}");
        let version = urls[0].split('/').nth(3).unwrap().to_string();

        // The modules app.js imports, by their relative names, under the same version.
        let app = s.get(&format!("/console/assets/{version}/app.js"), None);
        let app = app.text().unwrap();
        let imports: Vec<String> = app
            .split('\'')
            .filter(|p| p.starts_with("./") && p.ends_with(".js"))
            .map(|p| format!("/console/assets/{version}/{}", &p[2..]))
            .collect();
        assert!(imports.len() >= 4, "{imports:?}");
        for url in urls.iter().chain(&imports) {
            let res = s.get(url, None);
            assert_eq!(res.status(), 200, "{url}");
            let ct = res.headers()["content-type"].to_str().unwrap().to_string();
            let want = if url.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            assert_eq!(ct, want, "{url}");
            assert_eq!(
                res.headers()["cache-control"],
                "public, max-age=31536000, immutable"
            );
            assert_eq!(res.headers()["x-content-type-options"], "nosniff");
            let body = res.text().unwrap();
            // Nothing from another origin.
            assert!(
                !body.contains("https://") || url.ends_with("blurhash.js"),
                "{url}"
            );
            assert!(!body.contains("http://"), "{url}");
        }
    }
}

#[test]
fn other_versions_names_and_methods_are_json_errors() {
    let s = Server::start();
    let page = s.get("/console", None).text().unwrap();
    let version = asset_urls(&page)[0].split('/').nth(3).unwrap().to_string();
    for path in [
        "/console/assets/0000000000000000/app.js".to_string(),
        format!("/console/assets/{version}/nope.js"),
        format!("/console/assets/{version}/..%2fapp.js"),
        "/console/app.js".to_string(),
    ] {
        let (status, code, _) = json_error(s.get(&path, None));
        assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "{path}");
    }
    let res = client().post(s.url("/console")).body("x").send().unwrap();
    let (status, code, _) = json_error(res);
    assert_eq!((status, code.as_str()), (405, "METHOD_NOT_ALLOWED"));
}

#[test]
fn the_console_can_be_switched_off() {
    let s = Server::start_with(&[("DEPOT_CONSOLE", "false")]);
    let (status, code, message) = json_error(s.get("/console", None));
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    assert!(message.contains("console = false"), "{message}");
    // The rest of depot is unaffected.
    assert_eq!(s.get("/health", None).status(), 200);
    let (status, _, _) = json_error(s.get("/console/assets/x/app.js", None));
    assert_eq!(status, 404);
    let (status, _, _) = json_error(s.get("/nope", None));
    assert_eq!(status, 404);
    let bad = s.get("/console", Some("not-a-token"));
    assert_eq!(bad.status(), 404, "a token changes nothing");
}
