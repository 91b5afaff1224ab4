//! The error catalogue at the HTTP edge: JSON errors from the one table, GraphiQL served from
//! the binary (and switched off), introspection defaults, and malformed HTTP kept out of the ERROR log.

mod common;
use common::*;

#[test]
fn wrong_methods_answer_405_from_the_catalogue() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "m.txt", b"m");
    let path = f["url"]["path"].as_str().unwrap();
    for (method, url) in [
        (reqwest::Method::PUT, "/files"),
        (reqwest::Method::PATCH, "/access-rights"),
        (reqwest::Method::DELETE, "/graphql"),
        (reqwest::Method::POST, path),
    ] {
        let r = s
            .client
            .request(method.clone(), s.url(url))
            .header("Authorization", &t)
            .send()
            .unwrap();
        let (status, code, message) = json_error(r);
        assert_eq!(
            (status, code.as_str()),
            (405, "METHOD_NOT_ALLOWED"),
            "{method} {url}"
        );
        assert!(!message.is_empty());
    }
}

/// The `src` and `href` attribute values of a page, in document order.
fn references(page: &str) -> Vec<String> {
    page.split_whitespace()
        .filter_map(|w| {
            w.strip_prefix("src=\"")
                .or_else(|| w.strip_prefix("href=\""))
        })
        .map(|v| v.split('"').next().unwrap_or_default().to_string())
        .collect()
}

/// GraphiQL's page from a server with it on: (headers, body).
fn graphiql_page(s: &Server) -> (reqwest::header::HeaderMap, String) {
    let r = s.get("/graphql", None);
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    (h, r.text().unwrap())
}

#[test]
fn graphiql_is_on_by_default_with_a_strict_csp_and_no_third_party() {
    let s = Server::start();
    let (h, page) = graphiql_page(&s);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(directives.contains(&directive), "{directive} in {csp}");
    }
    assert_eq!(directives.len(), 9, "{csp}");
    // No absolute or protocol-relative URL anywhere, and no inline script.
    for needle in ["http://", "https://", "=\"//"] {
        assert!(!page.contains(needle), "{needle} in {page}");
    }
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script src=\"/graphql/assets/").count(),
        "{page}"
    );
}

#[test]
fn graphiql_assets_are_served_from_the_binary_cacheable_and_typed() {
    let s = Server::start();
    let (_, page) = graphiql_page(&s);
    let refs = references(&page);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/assets/graphiql");
    let mut names = Vec::new();
    for url in refs.iter().filter(|u| *u != "data:,") {
        // /graphql/assets/<version>/<name>: a version in the path, so caching forever is safe.
        let parts: Vec<&str> = url.split('/').collect();
        assert_eq!(parts[..3], ["", "graphql", "assets"], "{url}");
        assert_eq!(parts.len(), 5, "{url}");
        assert!(parts[3].len() >= 8, "no version in {url}");
        let name = parts[4];
        let r = s.get(url, None);
        assert_eq!(r.status(), 200, "{url}");
        let h = r.headers().clone();
        let want = if name.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            assert!(name.ends_with(".js"), "{url}");
            "text/javascript; charset=utf-8"
        };
        assert_eq!(h["content-type"], want, "{url}");
        assert_eq!(
            h["cache-control"], "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
        // Byte for byte the committed file.
        let body = r.bytes().unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(dir.join(name)).unwrap(),
            "{url}"
        );
        names.push(name.to_string());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "graphiql.min.css",
            "graphiql.min.js",
            "init.js",
            "react-dom.production.min.js",
            "react.production.min.js"
        ]
    );
    // The icon is inline (no favicon request), the stylesheet comes first and the init script
    // last, after the libraries it uses.
    assert_eq!(refs[0], "data:,", "{refs:?}");
    assert!(refs[1].ends_with("/graphiql.min.css"), "{refs:?}");
    assert!(refs.last().unwrap().ends_with("/init.js"), "{refs:?}");

    // Anything else under the assets path is a JSON 404: another version (a stale or forged
    // URL must not be cached as immutable), a file that is not served, a path escape.
    let version = refs[2].split('/').nth(3).unwrap().to_string();
    for url in [
        "/graphql/assets/0123456789abcdef/graphiql.min.js".to_string(),
        format!("/graphql/assets/{version}/LICENSE.graphiql"),
        format!("/graphql/assets/{version}/README.md"),
        format!("/graphql/assets/{version}/..%2F..%2Fgraphiql.rs"),
        format!("/graphql/assets/{version}"),
    ] {
        let (status, code, _) = json_error(s.get(&url, None));
        assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "{url}");
    }
    let r = s.client.post(s.url(&refs[2])).body("x").send().unwrap();
    let (status, code, _) = json_error(r);
    assert_eq!((status, code.as_str()), (405, "METHOD_NOT_ALLOWED"));
}

#[test]
fn graphiql_switched_off_answers_json_and_serves_no_assets() {
    let on = Server::start();
    let (_, page) = graphiql_page(&on);
    let off = Server::start_with(&[("DEPOT_GRAPHIQL", "false")]);
    let r = off.get("/graphql", None);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let text = r.text().unwrap();
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "METHOD_NOT_ALLOWED");
    assert!(v["error"]["message"].as_str().unwrap().contains("graphiql"));
    // The same binary, so the same asset URLs: not served when off.
    for url in references(&page).iter().filter(|u| *u != "data:,") {
        let (status, code, message) = json_error(off.get(url, None));
        assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "{url}");
        assert!(message.contains("graphiql"), "{message}");
    }
    // POST /graphql still works.
    let v = off.graphql(None, "{ __typename }");
    assert_eq!(v["data"]["__typename"], "QueryRoot", "{v}");
}

#[test]
fn introspection_needs_a_token_unless_configured() {
    let q = "{ __schema { queryType { name } } }";
    let s = Server::start();
    let anon = s.graphql(None, q);
    // Disabled introspection answers null, as for an unknown type.
    assert!(anon["data"]["__schema"].is_null(), "{anon}");
    let anon = s.graphql(None, r#"{ __type(name: "QueryRoot") { name } }"#);
    assert!(anon["data"]["__type"].is_null(), "{anon}");
    let t = s.token("alice", INSTANCE, false);
    let user = s.graphql(Some(&t), q);
    assert_eq!(
        user["data"]["__schema"]["queryType"]["name"], "QueryRoot",
        "{user}"
    );
    // Ordinary anonymous queries still run.
    let anon_find = s.graphql(
        None,
        r#"{ find(type: File, arcql: "*") { edges { cursor } } }"#,
    );
    assert!(anon_find.get("data").is_some(), "{anon_find}");
    drop(s);

    let s = Server::start_with(&[("DEPOT_GRAPHQL_ANONYMOUS_INTROSPECTION", "true")]);
    let anon = s.graphql(None, q);
    assert_eq!(
        anon["data"]["__schema"]["queryType"]["name"], "QueryRoot",
        "{anon}"
    );
}

#[test]
fn malformed_http_is_the_clients_fault_and_not_logged_at_error() {
    let s = Server::start();
    for request in [
        &b"GARBAGE \x01\x02 HTTP/9\r\n\r\n"[..],
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ] {
        for _ in 0..5 {
            let (status, _) = s.raw(request);
            assert_eq!(status, 400);
        }
    }
    s.eventually("a WARN summary of the client errors", || {
        s.log.lock().unwrap().contains("for the client's fault")
    });
    let log = s.log.lock().unwrap().clone();
    assert!(!log.contains("ERROR"), "{log}");
    // One summary line for the burst, not one per request.
    assert_eq!(log.matches("for the client's fault").count(), 1, "{log}");
    // (A burst can straddle the reporter's tick; the rest waits for the next minute.)
    assert!(log.contains(" count="), "{log}");
    assert!(s.alive());
}

#[test]
fn internal_failures_answer_a_fixed_message_and_log_their_causes_once() {
    let s = Server::start_with(&[("DEPOT_DOWNLOAD_CACHE_BYTES", "0")]);
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "broken.txt", b"bytes that will not read back");
    let sha = f["sha256"].as_str().unwrap();
    // Swap the blob for a directory: it opens, and reading it fails with EISDIR, an I/O error
    // that is ours, not the caller's.
    let blob = s
        .data
        .join(format!("blobs/sha256/{}/{}/{sha}", &sha[..2], &sha[2..4]));
    std::fs::remove_file(&blob).unwrap();
    std::fs::create_dir(&blob).unwrap();
    let r = s.get(f["url"]["path"].as_str().unwrap(), Some(&t));
    let (status, code, message) = json_error(r);
    assert_eq!((status, code.as_str()), (500, "INTERNAL"));
    assert_eq!(message, "internal error");
    s.eventually("the cause in the log", || {
        s.log.lock().unwrap().contains("Is a directory")
    });
    let log = s.log.lock().unwrap().clone();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Is a directory"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {log}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("code=\"INTERNAL\""),
        "{log}"
    );
}
