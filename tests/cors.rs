//! CORS over real HTTP: preflights and actual requests, allowed and refused origins, `*` only on
//! routes without credentials, and file names as browsers encode them in multipart uploads.
//! (Real Chromium runs the same flows in tests/browser.rs.)

mod common;
use common::*;
use reqwest::blocking::Response;

const APP: &str = "http://app.test:3000";
const EVIL: &str = "http://evil.test";

fn cors_server(origins: &str) -> Server {
    Server::start_with(&[("DEPOT_CORS_ALLOWED_ORIGINS", origins)])
}

fn preflight(s: &Server, path: &str, origin: &str, method: &str, headers: &str) -> Response {
    let mut req = s
        .client
        .request(reqwest::Method::OPTIONS, s.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method);
    if !headers.is_empty() {
        req = req.header("Access-Control-Request-Headers", headers);
    }
    req.send().expect("preflight")
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn list(r: &Response, name: &str) -> Vec<String> {
    header(r, name)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn assert_refused_preflight(r: Response, what: &str) {
    assert!(
        header(&r, "access-control-allow-origin").is_none(),
        "{what}"
    );
    assert!(
        header(&r, "access-control-allow-methods").is_none(),
        "{what}"
    );
    let (status, code, message) = json_error(r);
    assert_eq!(
        (status, code.as_str()),
        (403, "FORBIDDEN"),
        "{what}: {message}"
    );
}

#[test]
fn preflights_answer_each_route_with_its_methods_and_headers() {
    let s = cors_server(APP);
    let r = preflight(
        &s,
        "/upload/avatars",
        APP,
        "POST",
        "authorization,hypi-domain",
    );
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(list(&r, "access-control-allow-methods"), ["post"]);
    let allowed = list(&r, "access-control-allow-headers");
    for h in ["authorization", "hypi-domain", "content-type"] {
        assert!(allowed.contains(&h.to_string()), "{h} in {allowed:?}");
    }
    assert_eq!(header(&r, "access-control-max-age").as_deref(), Some("600"));
    assert!(list(&r, "vary").contains(&"origin".to_string()));
    assert!(header(&r, "access-control-allow-credentials").is_none());

    // Downloads take Range and the conditional headers.
    let r = preflight(
        &s,
        "/file/x-y.png",
        APP,
        "GET",
        "authorization, range, if-none-match",
    );
    assert_eq!(r.status(), 204);
    assert_eq!(list(&r, "access-control-allow-methods"), ["get", "head"]);
    assert!(list(&r, "access-control-allow-headers").contains(&"range".to_string()));

    for (path, method) in [
        ("/upload", "POST"),
        ("/graphql", "POST"),
        ("/files", "GET"),
        ("/files/01ABC", "DELETE"),
        ("/access-rights", "POST"),
        ("/access-rights/01ABC", "DELETE"),
        ("/instances/acme.test", "PUT"),
    ] {
        let r = preflight(
            &s,
            path,
            APP,
            method,
            "authorization,content-type,hypi-domain",
        );
        assert_eq!(r.status(), 204, "{method} {path}");
        assert!(list(&r, "access-control-allow-methods").contains(&method.to_ascii_lowercase()));
    }

    // A method or header the route does not take is refused, with a JSON error.
    assert_refused_preflight(preflight(&s, "/upload/x", APP, "PUT", ""), "PUT /upload");
    assert_refused_preflight(preflight(&s, "/files", APP, "DELETE", ""), "DELETE /files");
    assert_refused_preflight(
        preflight(&s, "/upload/x", APP, "POST", "authorization,x-custom"),
        "x-custom header",
    );
    // A plain OPTIONS (not a preflight) is not answered as one.
    let r = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/upload/x"))
        .header("Origin", APP)
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 405);
}

#[test]
fn origins_not_listed_are_refused() {
    let s = cors_server(APP);
    for origin in [EVIL, "http://app.test", "https://app.test:3000", "null"] {
        assert_refused_preflight(
            preflight(&s, "/upload/x", origin, "POST", "authorization"),
            origin,
        );
    }
    // The actual request is served as if it had no Origin: no CORS headers, so a browser keeps
    // the answer from the page.
    let token = s.token("alice", INSTANCE, false);
    let res = s
        .client
        .get(s.url("/files"))
        .header("Origin", EVIL)
        .header("Authorization", &token)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(header(&res, "access-control-allow-origin").is_none());
    assert!(header(&res, "access-control-expose-headers").is_none());
    assert!(list(&res, "vary").contains(&"origin".to_string()));
}

#[test]
fn actual_requests_from_allowed_origins_carry_cors_headers_errors_included() {
    let s = cors_server(&format!("{EVIL}x, {APP}"));
    let token = s.token("alice", INSTANCE, false);
    let form = upload_form(&[("a.txt", b"hello")]);
    let res = s
        .client
        .post(s.url("/upload/docs"))
        .header("Origin", APP)
        .header("Authorization", format!("Bearer {token}"))
        .header("hypi-domain", INSTANCE)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    let exposed = list(&res, "access-control-expose-headers");
    for h in ["etag", "location", "content-disposition"] {
        assert!(exposed.contains(&h.to_string()), "{h} in {exposed:?}");
    }
    let body: Value = res.json().unwrap();
    let path = body["a.txt"]["url"]["path"].as_str().unwrap().to_string();

    // A download: the page can read the bytes and the exposed ETag.
    let res = s
        .client
        .get(s.url(&path))
        .header("Origin", APP)
        .header("Authorization", &token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(header(&res, "etag").is_some());
    assert_eq!(res.text().unwrap(), "hello");

    // Errors carry the headers too, so the page can read depot's JSON error.
    let res = s
        .client
        .post(s.url("/upload/docs"))
        .header("Origin", APP)
        .multipart(upload_form(&[("b.txt", b"x")]))
        .send()
        .unwrap();
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(json_error(res).1, "UNAUTHENTICATED");
    let res = s
        .client
        .post(s.url("/graphql"))
        .header("Origin", APP)
        .header("Authorization", &token)
        .header("hypi-domain", INSTANCE)
        .header("Content-Type", "application/json")
        .body("{")
        .send()
        .unwrap();
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(json_error(res).0, 400);
}

#[test]
fn wildcard_admits_any_origin_only_where_no_credentials_are_taken() {
    let s = cors_server(&format!("*,{APP}"));
    let res = s
        .client
        .get(s.url("/health"))
        .header("Origin", EVIL)
        .send()
        .unwrap();
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    let r = preflight(&s, "/health", EVIL, "GET", "");
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    // Token routes still need the origin listed.
    assert_refused_preflight(
        preflight(&s, "/upload/x", EVIL, "POST", "authorization"),
        "* on /upload",
    );
    let r = preflight(&s, "/upload/x", APP, "POST", "authorization");
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
}

#[test]
fn without_configured_origins_no_cors_headers_are_sent() {
    let s = Server::start();
    let res = s
        .client
        .get(s.url("/health"))
        .header("Origin", APP)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(header(&res, "access-control-allow-origin").is_none());
    assert!(header(&res, "vary").is_none());
    let r = preflight(&s, "/upload/x", APP, "POST", "authorization");
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert_ne!(r.status(), 204);
}

#[test]
fn invalid_origins_stop_the_server_at_start() {
    for bad in ["http://app.test/path", "ftp://app.test", "app.test", "null"] {
        let dir = tempfile::tempdir().unwrap();
        let log = Server::spawn(dir.path(), &[("DEPOT_CORS_ALLOWED_ORIGINS", bad)], &[])
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(log.contains("cors.allowed_origins"), "{bad}: {log}");
    }
}

/// File names exactly as Chromium encodes them in `FormData` (the HTML standard's form-data
/// encoding): `"` as `%22`, CR/LF as `%0D%0A`, backslashes and UTF-8 as they are.
#[test]
fn browser_encoded_file_names_are_stored_decoded() {
    let s = Server::start();
    let token = s.token("alice", INSTANCE, false);
    let cases = [
        ("résumé %22final%22.pdf", "résumé \"final\".pdf"),
        ("a\\b.txt", "b.txt"),
        ("C:\\Users\\x\\report.txt", "report.txt"),
        ("two%0D%0Alines.txt", "twolines.txt"),
        ("100%25.txt", "100%25.txt"),
    ];
    for (sent, stored) in cases {
        let b = "bnd7";
        let mut body = file_part(b, "fileUpload", sent, b"data");
        body.extend_from_slice(&closing(b));
        let r = raw_upload(&s, &token, &form_data(b), &body);
        assert_eq!(r.status, 200, "{sent}: {}", r.body);
        let v = r.json();
        let rec = first_record(&v);
        assert_eq!(rec["name"], stored, "{sent}");
        assert!(
            v.get(stored).is_some(),
            "{sent}: keyed by the stored name: {v}"
        );
    }
}
