//! `GET /openapi.json` over real HTTP: the document is served without a token, is OpenAPI 3.1,
//! has an operation for every route the router serves (`depot::http::ROUTES`, which a unit test
//! in http/mod.rs keeps equal to `configure`) and none for a route it does not, gives every
//! error response the error schema, and describes real answers. scripts/openapi-check goes
//! further: a validator and schemathesis against a live server.

mod common;
use common::*;
use std::collections::BTreeSet;

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

fn document(s: &Server) -> Value {
    let res = s.client.get(s.url("/openapi.json")).send().unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    res.json().unwrap()
}

/// Every (METHOD, path) the document has an operation for.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(*m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_is_openapi_3_1_and_lists_exactly_the_routes() {
    let s = Server::start();
    let doc = document(&s);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let documented = operations(&doc);
    let routes: BTreeSet<(String, String)> = depot::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without an operation: {undocumented:?}"
    );
    let phantom: Vec<_> = documented.difference(&routes).collect();
    assert!(phantom.is_empty(), "operations of no route: {phantom:?}");
    // Operation ids are unique (the validator refuses duplicates).
    let mut ids = BTreeSet::new();
    for (m, p) in &documented {
        let id = doc["paths"][p][m.to_lowercase()]["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{m} {p} has no operationId"))
            .to_string();
        assert!(ids.insert(id.clone()), "operationId {id} twice");
    }
}

#[test]
fn every_error_response_has_a_body_schema_and_security_is_declared() {
    let s = Server::start();
    let doc = document(&s);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["hypiDomain"]["in"], "header");
    assert_eq!(schemes["hypiDomain"]["name"], "hypi-domain");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    for (m, p) in operations(&doc) {
        let op = &doc["paths"][&p][m.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.contains_key("500"),
            "{m} {p}: the common errors are missing"
        );
        for (status, r) in responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let content = r["content"].as_object().unwrap_or_else(|| {
                panic!("{m} {p} {status}: no content");
            });
            let json = content
                .get("application/json")
                .map(|c| c["schema"]["$ref"].as_str().unwrap_or(""));
            let xml = content.contains_key("application/xml");
            assert!(
                json == Some("#/components/schemas/ErrorBody") || xml,
                "{m} {p} {status}: {content:?}"
            );
        }
    }
    // Signed URLs and probes need no token; token routes inherit the default.
    for (m, p) in [
        ("get", "/health"),
        ("get", "/links/{instance}/{id}"),
        ("put", "/uploads/put/{instance}/{id}"),
        ("get", "/openapi.json"),
    ] {
        assert_eq!(
            doc["paths"][p][m]["security"],
            serde_json::json!([{}]),
            "{m} {p}"
        );
    }
    assert!(doc["paths"]["/files"]["get"].get("security").is_none());
    assert!(!doc["security"].as_array().unwrap().is_empty());
}

/// A required property of a schema (following `$ref` and `allOf`).
fn required(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return required(doc, &doc["components"]["schemas"][name]);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(required(doc, part));
    }
    for k in schema["required"].as_array().into_iter().flatten() {
        out.insert(k.as_str().unwrap().to_string());
    }
    out
}

#[test]
fn documented_shapes_match_real_answers() {
    let s = Server::start();
    let doc = document(&s);
    let token = s.token("alice", INSTANCE, false);
    let record = s.upload_one(&token, "a.txt", b"hello");
    let id = record["hypi"]["id"].as_str().unwrap().to_string();

    // The upload's answer: a map of stored name -> File.
    let file_schema = &doc["components"]["schemas"]["File"];
    for k in required(&doc, file_schema) {
        assert!(
            record.get(&k).is_some(),
            "upload answer lacks {k}: {record}"
        );
    }
    // GET /files/{id}: Hypi's fields and Foir's.
    let got: Value = s.get(&format!("/files/{id}"), Some(&token)).json().unwrap();
    for k in required(&doc, &doc["components"]["schemas"]["FileDetail"]) {
        assert!(got.get(&k).is_some(), "GET /files/{{id}} lacks {k}: {got}");
    }
    assert!(got["url"]["href"].is_string());
    // A missing file: the documented 404 with the error body.
    assert!(doc["paths"]["/files/{id}"]["get"]["responses"]["404"].is_object());
    let res = s.get("/files/01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(&token));
    assert_eq!(res.status(), 404);
    let body: Value = res.json().unwrap();
    for k in required(&doc, &doc["components"]["schemas"]["ErrorDetail"]) {
        assert!(body["error"].get(&k).is_some(), "error lacks {k}: {body}");
    }
}

#[test]
fn the_document_is_public_fixed_and_read_only() {
    let s = Server::start();
    // A bad token does not stand in the way of the document.
    let res = s
        .client
        .get(s.url("/openapi.json"))
        .header("Authorization", "Bearer not-a-token")
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.bytes().unwrap();
    let again = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(first, again, "the document is built once");
    // Other methods are refused with the JSON error shape, not a 500.
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let res = s
            .client
            .request(method.clone(), s.url("/openapi.json"))
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(res.status(), 405, "{method}");
        let body: Value = res.json().unwrap();
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED", "{method}");
    }
    let res = s.client.get(s.url("/openapi.json/x")).send().unwrap();
    assert_eq!(res.status(), 404);
}

/// Found by schemathesis (`unsupported_method`): a 405 named no allowed methods, and `/health`,
/// `/ready` and `/metrics` answered other methods with 404. A 405 now carries `Allow` (RFC 9110)
/// with the methods `ROUTES` (and so the document) lists for the path.
#[test]
fn a_method_a_path_does_not_serve_is_405_with_allow() {
    let s = Server::start();
    let token = s.token("alice", INSTANCE, false);
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    for (method, path, allow) in [
        (trace.clone(), "/health", "GET"),
        (reqwest::Method::POST, "/ready", "GET"),
        (reqwest::Method::DELETE, "/metrics", "GET"),
        (trace.clone(), "/openapi.json", "GET"),
        (
            reqwest::Method::PUT,
            "/files/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "GET, DELETE",
        ),
        (
            reqwest::Method::DELETE,
            "/file/01ARZ3NDEKTSV4RRFFQ69G5FAV.txt",
            "GET, HEAD",
        ),
        (trace.clone(), "/upload/some/dir", "POST"),
        (reqwest::Method::PUT, "/tus/", "POST, OPTIONS"),
        (
            trace.clone(),
            "/tus/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "HEAD, GET, PATCH, DELETE, POST, OPTIONS",
        ),
    ] {
        let res = s
            .client
            .request(method.clone(), s.url(path))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            res.headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_string()),
            Some(allow.to_string()),
            "{method} {path}"
        );
        if path.starts_with("/tus") {
            assert_eq!(res.headers()["tus-resumable"], "1.0.0");
        }
        let body: Value = res.json().unwrap();
        assert_eq!(
            body["error"]["code"], "METHOD_NOT_ALLOWED",
            "{method} {path}"
        );
    }
    // Every method a path serves is in its Allow: the document and the router agree.
    let doc = document(&s);
    let res = s
        .client
        .request(trace, s.url("/access-rights"))
        .send()
        .unwrap();
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    for m in METHODS {
        let documented = doc["paths"]["/access-rights"].get(*m).is_some();
        assert_eq!(
            allow.split(", ").any(|a| a.eq_ignore_ascii_case(m)),
            documented,
            "{m} in {allow}"
        );
    }
}

/// The document against the live server: scripts/openapi-check validates it with
/// openapi-spec-validator and runs schemathesis over every operation (no 500s; statuses, content
/// types and JSON bodies as documented; 405 with `Allow` for other methods). It installs its pip
/// packages into target/openapi-venv on first use; about 90 s on 2 cores.
#[test]
fn schemathesis_finds_nothing_against_a_live_server() {
    let script = format!("{}/scripts/openapi-check", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(script)
        .env("DEPOT_BIN", BIN)
        .output()
        .expect("run scripts/openapi-check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/openapi-check failed:\n{text}"
    );
    // Every operation was exercised, not a filtered subset.
    let ops = depot::http::ROUTES.len();
    assert!(
        text.contains(&format!("{ops} selected / {ops} total")),
        "{text}"
    );
    assert!(text.contains("No issues found"), "{text}");
}
