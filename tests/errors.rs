//! The error catalogue at the HTTP edge: JSON errors from the one table, GraphiQL and
//! introspection defaults, and malformed HTTP kept out of the ERROR log.

mod common;
use common::*;

fn json_error(r: reqwest::blocking::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().expect("a JSON error body");
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

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

#[test]
fn graphiql_is_off_by_default_and_names_no_third_party() {
    let s = Server::start();
    let r = s.get("/graphql", None);
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
}

#[test]
fn graphiql_when_turned_on_is_pinned_integrity_checked_and_unframeable() {
    let s = Server::start_with(&[("DEPOT_GRAPHIQL", "true")]);
    let r = s.get("/graphql", None);
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("'unsafe-eval'"));
    assert!(!csp.contains("script-src 'unsafe-inline'"));
    let page = r.text().unwrap();
    // Every external reference is an exact version with an integrity hash.
    let mut external = 0;
    for tag in page.split('<').filter(|t| t.contains("https://")) {
        external += 1;
        assert!(tag.contains("integrity=\"sha384-"), "no integrity: <{tag}");
        assert!(tag.contains("crossorigin=\"anonymous\""), "<{tag}");
        assert!(
            !tag.contains("@latest") && tag.contains('@'),
            "unpinned: <{tag}"
        );
    }
    assert_eq!(external, 4, "{page}");
    assert!(!page.contains("http://"));
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
