//! Request rate limits (issue 15): per client IP and per account on `POST /upload/**` and
//! `POST /graphql`, off by default; over a limit, 429 with `RateLimit-*` and `Retry-After`.

mod common;
use common::*;

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn post_graphql(s: &Server) -> reqwest::blocking::Response {
    s.client
        .post(s.url("/graphql"))
        .json(&serde_json::json!({"query": "{ __typename }"}))
        .send()
        .unwrap()
}

#[test]
fn limits_are_off_by_default() {
    let s = Server::start();
    let token = s.token("alice", INSTANCE, false);
    for i in 0..12 {
        let (status, body) = s.upload(&token, "/upload/", &[("f.txt", b"x")]);
        assert_eq!(status, 200, "upload {i}: {body}");
        let r = post_graphql(&s);
        assert_eq!(r.status(), 200, "graphql {i}");
        assert_eq!(header(&r, "ratelimit-limit"), None);
    }
}

#[test]
fn the_per_ip_limit_refuses_with_ratelimit_headers_and_spares_other_routes() {
    let s = Server::start_with(&[("DEPOT_RATE_LIMIT_PER_IP_PER_MINUTE", "3")]);
    for left in ["2", "1", "0"] {
        let r = post_graphql(&s);
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some(left));
    }
    let r = post_graphql(&s);
    assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&r, "ratelimit-reset"), Some(retry.to_string()));
    let id = header(&r, "x-request-id").unwrap();
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "TOO_MANY_REQUESTS", "{v}");
    assert_eq!(v["error"]["requestId"], id.as_str());
    // Uploads share the address's bucket.
    let token = s.token("alice", INSTANCE, false);
    let (status, body) = s.upload(&token, "/upload/", &[("f.txt", b"x")]);
    assert_eq!(status, 429, "{body}");
    assert_eq!(s.temp_files(), 0);
    // Reads are not limited.
    for _ in 0..5 {
        assert_eq!(s.get("/files", Some(&token)).status(), 200);
        assert_eq!(s.get("/health", None).status(), 200);
    }
}

#[test]
fn the_per_account_limit_is_per_account() {
    let s = Server::start_with(&[("DEPOT_RATE_LIMIT_PER_ACCOUNT_PER_MINUTE", "2")]);
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    for i in 0..2 {
        let (status, body) = s.upload(&alice, "/upload/", &[("a.txt", b"alice")]);
        assert_eq!(status, 200, "alice {i}: {body}");
    }
    let (status, body) = s.upload(&alice, "/upload/", &[("a.txt", b"alice again")]);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("account"));
    // Same address, another account: its own bucket.
    let (status, body) = s.upload(&bob, "/upload/", &[("b.txt", b"bob")]);
    assert_eq!(status, 200, "{body}");
    // The refused upload left nothing: alice has her two files.
    assert_eq!(listing(&s, &alice).len(), 2);
    assert_eq!(s.temp_files(), 0);
    // Without a token there is no account to limit (the per-IP limit is off): 401, not 429.
    for _ in 0..3 {
        let r = s
            .client
            .post(s.url("/upload/"))
            .multipart(upload_form(&[("n.txt", b"n")]))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
}
