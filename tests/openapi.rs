//! `GET /openapi.json` over real HTTP: the document is served without a token, is OpenAPI 3.1,
//! has an operation for every route the router serves (`depot::http::ROUTES`, which a unit test
//! in http/mod.rs keeps equal to `configure`) and none for a route it does not, gives every
//! error response the error schema, and describes real answers. scripts/openapi-check goes
//! further: a validator and schemathesis against a live server.

mod common;
use common::*;
use serde_json::json;
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
        assert_eq!(doc["paths"][p][m]["security"], json!([{}]), "{m} {p}");
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

/// Whether `v` is of the JSON type(s) a schema names (`"integer"`, `["string", "null"]`).
fn of_type(schema: &Value, v: &Value) -> bool {
    let names: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    names.iter().any(|t| match *t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    })
}

/// `v` against a schema of the document: types, required properties, and the same for each
/// property and item, following `$ref`; a `oneOf` needs one branch to fit.
fn fits(doc: &Value, schema: &Value, v: &Value) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return fits(doc, &doc["components"]["schemas"][name], v);
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let errors: Vec<String> = branches
            .iter()
            .filter_map(|b| fits(doc, b, v).err())
            .collect();
        return if errors.len() < branches.len() {
            Ok(())
        } else {
            Err(format!("no branch of oneOf fits {v}: {errors:?}"))
        };
    }
    if !of_type(schema, v) {
        return Err(format!("{v} is not of type {}", schema["type"]));
    }
    for k in required(doc, schema) {
        if v.get(&k).is_none() {
            return Err(format!("{v} lacks {k}"));
        }
    }
    for (k, sub) in schema["properties"].as_object().into_iter().flatten() {
        if let Some(x) = v.get(k) {
            fits(doc, sub, x).map_err(|e| format!("{k}: {e}"))?;
        }
    }
    if let (Some(items), Some(xs)) = (schema.get("items"), v.as_array()) {
        for x in xs {
            fits(doc, items, x)?;
        }
    }
    Ok(())
}

/// A request with a token and an optional JSON body, checked against the document: its status
/// is one `method path` lists, and its JSON body fits that response's schema. Answers the
/// status, headers and body.
fn documented(
    s: &Server,
    doc: &Value,
    (method, path, url): (&str, &str, &str),
    token: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = s
        .client
        .request(m, s.url(url))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {url}: {status} is not documented"
    );
    let v: Value = if status == 204 {
        Value::Null
    } else {
        res.json().unwrap()
    };
    if let Some(schema) = response["content"]["application/json"].get("schema") {
        if let Err(e) = fits(doc, schema, &v) {
            panic!("{method} {url} {status}: {e}");
        }
    }
    (status, headers, v)
}

/// The webhooks and quotas routes (issue 15) answer what the document says, successes and
/// refusals alike, and an upload under a quota carries the documented RateLimit headers.
#[test]
fn webhooks_and_quotas_answer_as_documented() {
    let s = Server::start_with(&[("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", "127.0.0.1")]);
    let doc = document(&s);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let quotas = "/instances/{domain}/quotas";
    let quotas_url = format!("/instances/{INSTANCE}/quotas");
    let account = "/instances/{domain}/accounts/{account}/quota";
    let alice_url = format!("/instances/{INSTANCE}/accounts/alice/quota");
    let usage = "/instances/{domain}/usage";
    let usage_url = format!("/instances/{INSTANCE}/usage");

    // Quotas: set, read, refused.
    let body = json!({"accountDefault": {"maxBytes": 1000}, "instance": {"maxFiles": null}});
    let (st, _, v) = documented(&s, &doc, ("put", quotas, &quotas_url), &admin, Some(body));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["accountDefault"]["maxBytes"], 1000);
    let (st, _, _) = documented(&s, &doc, ("get", quotas, &quotas_url), &admin, None);
    assert_eq!(st, 200);
    for bad in [
        json!({"instance": {"maxBytes": -1}}),
        json!({"other": {}}),
        json!({"instance": null}),
        json!([]),
    ] {
        let (st, _, v) = documented(&s, &doc, ("put", quotas, &quotas_url), &admin, Some(bad));
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("BAD_REQUEST"))
        );
    }
    let (st, _, _) = documented(&s, &doc, ("get", quotas, &quotas_url), &alice, None);
    assert_eq!(st, 403);
    let other = "/instances/other.test/quotas";
    let (st, _, _) = documented(&s, &doc, ("get", quotas, other), &admin, None);
    assert_eq!(st, 404);

    // An account's quota: set by an admin, read by the account itself.
    // A whole number written as a float is one (JSON Schema's `integer`; found by
    // schemathesis's positive_data_acceptance); a fraction is not.
    let limits = json!({"maxFiles": 5.0});
    let (st, _, v) = documented(&s, &doc, ("put", account, &alice_url), &admin, Some(limits));
    assert_eq!((st, &v["limits"]["maxFiles"]), (200, &json!(5)));
    let (st, _, v) = documented(&s, &doc, ("get", account, &alice_url), &alice, None);
    assert_eq!((st, &v["effective"]["maxBytes"]), (200, &json!(1000)));
    let (st, _, _) = documented(
        &s,
        &doc,
        ("put", account, &alice_url),
        &alice,
        Some(json!({})),
    );
    assert_eq!(st, 403);
    for bad in [
        json!({"maxFiles": "five"}),
        json!({"maxFiles": 1.5}),
        json!(null),
    ] {
        let (st, _, _) = documented(&s, &doc, ("put", account, &alice_url), &admin, Some(bad));
        assert_eq!(st, 400);
    }

    // Webhooks: created, listed, read.
    let hooks = "/instances/{domain}/webhooks";
    let hooks_url = format!("/instances/{INSTANCE}/webhooks");
    let hook_body = json!({"url": "http://127.0.0.1:9/hook", "events": ["file.created"]});
    let (st, _, made) = documented(
        &s,
        &doc,
        ("post", hooks, &hooks_url),
        &admin,
        Some(hook_body),
    );
    assert_eq!(st, 201, "{made}");
    assert!(made["secret"].is_string());
    let id = made["id"].as_str().unwrap().to_string();
    let (st, _, list) = documented(&s, &doc, ("get", hooks, &hooks_url), &admin, None);
    assert_eq!((st, list.as_array().map(Vec::len)), (200, Some(1)));
    let hook = "/instances/{domain}/webhooks/{id}";
    let hook_url = format!("{hooks_url}/{id}");
    let (st, _, one) = documented(&s, &doc, ("get", hook, &hook_url), &admin, None);
    assert_eq!((st, one.get("secret")), (200, None));

    // An upload under the quota: the documented headers, and one event to deliver.
    let res = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &alice)
        .header("hypi-domain", INSTANCE)
        .multipart(upload_form(&[("a.txt", b"hello")]))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let ok = &doc["paths"]["/upload"]["post"]["responses"]["200"]["headers"];
    for name in ["RateLimit-Policy", "RateLimit"] {
        assert!(ok[name].is_object(), "{name} is not documented");
        let got = res
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string());
        assert!(
            got.as_deref()
                .is_some_and(|v| v.contains("\"account-bytes\"")),
            "{name}: {got:?}"
        );
    }
    let over = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &alice)
        .header("hypi-domain", INSTANCE)
        .multipart(upload_form(&[("big.bin", &[7u8; 2000])]))
        .send()
        .unwrap();
    let status = over.status().as_u16().to_string();
    let refused = &doc["paths"]["/upload"]["post"]["responses"][&status];
    assert!(refused["headers"]["RateLimit"].is_object(), "{status}");
    assert!(over.headers().get("RateLimit").is_some(), "{status}");

    // Usage: the instance's page (admin), one's own (alice), a bad page size.
    let (st, _, v) = documented(&s, &doc, ("get", usage, &usage_url), &admin, None);
    assert_eq!((st, &v["instance"]["usage"]["files"]), (200, &json!(1)));
    let (st, _, v) = documented(&s, &doc, ("get", usage, &usage_url), &alice, None);
    assert_eq!((st, &v["usage"]["bytes"]), (200, &json!(5)));
    let bad = format!("{usage_url}?limit=0");
    let (st, _, _) = documented(&s, &doc, ("get", usage, &bad), &admin, None);
    assert_eq!(st, 400);
    let other = format!("{usage_url}?account=root");
    let (st, _, _) = documented(&s, &doc, ("get", usage, &other), &alice, None);
    assert_eq!(st, 403);

    // Deliveries (the receiver is down: pending or failed, either is documented), redelivery.
    let log = "/instances/{domain}/webhooks/{id}/deliveries";
    let log_url = format!("{hook_url}/deliveries");
    s.eventually("a delivery of file.created", || {
        let (st, _, v) = documented(&s, &doc, ("get", log, &log_url), &admin, None);
        st == 200 && v.as_array().is_some_and(|d| !d.is_empty())
    });
    let (_, _, v) = documented(&s, &doc, ("get", log, &log_url), &admin, None);
    let delivery = v[0]["id"].as_str().unwrap().to_string();
    let again = "/instances/{domain}/webhooks/{id}/deliveries/{delivery}/redeliver";
    let again_url = format!("{log_url}/{delivery}/redeliver");
    let (st, _, v) = documented(&s, &doc, ("post", again, &again_url), &admin, None);
    assert_eq!((st, v["status"].as_str()), (202, Some("pending")));
    let bad = format!("{log_url}/nope/redeliver");
    let (st, _, _) = documented(&s, &doc, ("post", again, &bad), &admin, None);
    assert_eq!(st, 404);
    let bad = format!("{log_url}?first=x");
    let (st, _, _) = documented(&s, &doc, ("get", log, &bad), &admin, None);
    assert_eq!(st, 400);

    // Refusals, then the delete.
    let bad = json!({"url": "ftp://example.com/", "events": ["file.created"]});
    let (st, _, v) = documented(&s, &doc, ("post", hooks, &hooks_url), &admin, Some(bad));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("INVALID_WEBHOOK"))
    );
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["file.created"]});
    let (st, _, _) = documented(&s, &doc, ("post", hooks, &hooks_url), &alice, Some(body));
    assert_eq!(st, 403);
    let (st, _, _) = documented(&s, &doc, ("delete", hook, &hook_url), &admin, None);
    assert_eq!(st, 204);
    let (st, _, _) = documented(&s, &doc, ("get", hook, &hook_url), &admin, None);
    assert_eq!(st, 404);
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
