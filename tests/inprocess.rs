//! The in-process tier: the routes `depot serve` mounts (`depot::http::configure`) over a
//! service opened on a temp dir (`depot::open_service`), driven by `actix_web::test` without a
//! process or a socket. Each test is a case table, request -> expected answer, for answers that
//! depend only on routing, headers and the service: status codes, error shapes, download
//! headers, conditional requests. What depends on the transport (slow or broken clients,
//! disconnects, body limits on the wire, the process's memory) stays in the real-binary tests.
//!
//! To add a case, add a row; every assertion names its case.

mod common;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::App;
use common::{b64, closing, file_part, fixture, form_data, hs256, now, png_3x2, sha256_hex};
use common::{Value, INSTANCE};
use depot::config::Config;
use depot::http::AppState;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The HS256 secret of every in-process service, so tests can sign tokens with any claims.
const SECRET: &str = "in-process tier: not a secret";

/// An id no file has.
const NO_SUCH_ID: &str = "01F322XSV13R9VAGJXW351PVBT";

/// A service on a fresh temp dir with the state `depot serve` builds.
struct Depot {
    state: web::Data<AppState>,
    _dir: tempfile::TempDir,
}

/// Status, headers and body of one answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    /// The length the server would send as Content-Length: over a socket actix writes that
    /// header from the body's declared size, in process there is only the size.
    length: Option<u64>,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The status, and the JSON error shape `{"error":{"code","message"}}` with this code.
    fn assert_error(&self, case: &str, status: u16, code: &str) {
        let v = self.json();
        assert_eq!(self.status, status, "{case}: {v}");
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{case}: content type {content_type:?}"
        );
        let err = v["error"]
            .as_object()
            .unwrap_or_else(|| panic!("{case}: no error object in {v}"));
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{case}: {v}");
        assert_eq!(err.get("code"), Some(&json!(code)), "{case}: {v}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{case}: a message: {v}");
    }
}

impl Depot {
    fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.auth.hs256_secret = Some(SECRET.into());
        let service = depot::open_service(config).expect("service opens on a temp dir");
        Self {
            state: web::Data::new(AppState::new(Arc::new(service))),
            _dir: dir,
        }
    }

    /// A valid token (an hour) for `sub` on `instance`.
    fn token_on(&self, sub: &str, instance: &str, admin: bool) -> String {
        self.state
            .service
            .keys
            .issue(sub, instance, admin, Duration::from_secs(3600))
            .expect("token")
    }

    /// A valid token for `sub` on the test instance.
    fn token(&self, sub: &str, admin: bool) -> String {
        self.token_on(sub, INSTANCE, admin)
    }

    /// Runs one request through the app and reads the whole answer.
    async fn call(&self, req: TestRequest) -> Answer {
        // Building the app is cheap next to the request: the service and schema are shared.
        let app = test::init_service(
            App::new()
                .app_data(self.state.clone())
                .configure(depot::http::configure),
        )
        .await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let length = match res.response().body().size() {
            BodySize::Sized(n) => Some(n),
            BodySize::None | BodySize::Stream => None,
        };
        let body = test::read_body(res).await;
        Answer {
            status,
            headers,
            length,
            body,
        }
    }

    /// Uploads `(name, bytes)` files in one request; the answer's File records by name.
    async fn upload(&self, token: &str, files: &[(&str, &[u8])]) -> Value {
        let boundary = "InProcessBoundary";
        let mut body = Vec::new();
        for (i, (name, bytes)) in files.iter().enumerate() {
            body.extend(file_part(boundary, &i.to_string(), name, bytes));
        }
        body.extend(closing(boundary));
        let res = self
            .call(
                TestRequest::post()
                    .uri("/upload/")
                    .insert_header(("Authorization", token))
                    .insert_header(("hypi-domain", INSTANCE))
                    .insert_header(("Content-Type", form_data(boundary)))
                    .set_payload(body),
            )
            .await;
        assert_eq!(res.status, 200, "upload: {}", res.json());
        res.json()
    }
}

/// A request with this method and path, and `Authorization` when a token is given.
fn request(method: &str, path: &str, token: Option<&str>) -> TestRequest {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = TestRequest::default().method(method).uri(path);
    if let Some(t) = token {
        req = req
            .insert_header(("Authorization", t))
            .insert_header(("hypi-domain", INSTANCE));
    }
    req
}

/// Unknown routes, wrong methods and requests that do not parse: the status and the JSON
/// error shape, never an empty or plain-text body.
#[actix_web::test]
async fn unknown_routes_wrong_methods_and_bad_requests_answer_json_errors() {
    let d = Depot::open();
    let alice = d.token("alice", false);
    let file = format!("/files/{NO_SUCH_ID}");
    let right = format!("/access-rights/{NO_SUCH_ID}");
    let instance = format!("/instances/{INSTANCE}");
    let download = format!("/file/{NO_SUCH_ID}.txt");
    // Without `resource` this is a 400: the query is parsed before the caller is known.
    let rights_of_x = "/access-rights?resource=x";
    // (method, path, with a token, status, code)
    let cases: &[(&str, &str, bool, u16, &str)] = &[
        ("GET", "/nope", false, 404, "NOT_FOUND"),
        ("POST", "/nope", true, 404, "NOT_FOUND"),
        ("GET", "/graphql/x", false, 404, "NOT_FOUND"),
        ("GET", "/healthz", false, 404, "NOT_FOUND"),
        ("GET", "/upload", false, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/upload/x", false, 405, "METHOD_NOT_ALLOWED"),
        ("PUT", "/upload/x", true, 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/graphql", false, 405, "METHOD_NOT_ALLOWED"),
        ("PUT", "/files", true, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/files", true, 405, "METHOD_NOT_ALLOWED"),
        ("PATCH", &file, true, 405, "METHOD_NOT_ALLOWED"),
        ("PUT", "/access-rights", true, 405, "METHOD_NOT_ALLOWED"),
        ("GET", &right, true, 405, "METHOD_NOT_ALLOWED"),
        ("POST", &instance, true, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/files", false, 401, "UNAUTHENTICATED"),
        ("GET", rights_of_x, false, 401, "UNAUTHENTICATED"),
        ("GET", "/files?bogus=1", true, 400, "BAD_REQUEST"),
        ("GET", "/files/garbage", true, 404, "NOT_FOUND"),
        ("GET", &file, true, 404, "NOT_FOUND"),
        ("DELETE", &file, true, 404, "NOT_FOUND"),
        ("DELETE", &right, true, 404, "NOT_FOUND"),
        ("GET", "/file/nope", true, 404, "NOT_FOUND"),
        ("GET", "/file/", true, 404, "NOT_FOUND"),
        ("GET", "/file/not-a-file.pdf", true, 404, "NOT_FOUND"),
        ("GET", &download, true, 404, "NOT_FOUND"),
        ("GET", &download, false, 401, "UNAUTHENTICATED"),
    ];
    for (method, path, with_token, status, code) in cases {
        let token = with_token.then_some(alice.as_str());
        let case = format!("{method} {path} (token: {with_token})");
        d.call(request(method, path, token))
            .await
            .assert_error(&case, *status, code);
    }
    // Bodies that do not parse are the caller's mistake.
    let bad_json = d
        .call(
            request("POST", "/access-rights", Some(&alice))
                .insert_header(("Content-Type", "application/json"))
                .set_payload("{not json"),
        )
        .await;
    bad_json.assert_error("POST /access-rights {not json", 400, "BAD_REQUEST");
    let health = d.call(request("GET", "/health", None)).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
}

/// Every kind of bad token is a 401 with the JSON error shape on every route that reads one
/// (never treated as anonymous), and the answer never echoes the token.
#[actix_web::test]
async fn bad_tokens_are_401_json_errors_that_do_not_echo_the_token() {
    let d = Depot::open();
    let good = d.token("alice", false);
    let f = &d.upload(&good, &[("mine.txt", b"mine")]).await["mine.txt"];
    let download = f["url"]["path"].as_str().unwrap().to_string();
    let claims = |extra: Value| {
        let mut c = json!({"sub": "alice", "instance": INSTANCE, "exp": now() + 3600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let signed = |extra: Value| hs256(SECRET.as_bytes(), &claims(extra));
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(json!({})).to_string().as_bytes())
    );
    let rs_key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(fixture("rs256-private.pem")).unwrap(),
    )
    .unwrap();
    let rs256 = common::sign(jsonwebtoken::Algorithm::RS256, &rs_key, &claims(json!({})));
    // (case, Authorization header value)
    let cases: Vec<(&str, String)> = vec![
        ("not a JWT", "Bearer not.a.token".into()),
        ("bare garbage", "garbage-that-is-no-token".into()),
        ("unsupported scheme", "Basic YWxpY2U6c2VjcmV0".into()),
        (
            "signed with another secret",
            format!("Bearer {}", hs256(b"another secret", &claims(json!({})))),
        ),
        ("expired", signed(json!({"exp": now() - 3600}))),
        ("not yet valid", signed(json!({"nbf": now() + 3600}))),
        (
            "expiry of the wrong type",
            signed(json!({"exp": "9999999999"})),
        ),
        (
            "no subject",
            hs256(
                SECRET.as_bytes(),
                &json!({"instance": INSTANCE, "exp": now() + 3600}),
            ),
        ),
        ("alg none", unsigned),
        ("RS256 without a configured key", rs256),
        (
            "valid, for another instance",
            d.token_on("alice", "evil.test", true),
        ),
    ];
    let routes: Vec<(&str, String)> = vec![
        ("GET", "/files".into()),
        ("GET", download.clone()),
        ("POST", "/graphql".into()),
        ("POST", "/access-rights".into()),
    ];
    for (case, auth) in &cases {
        for (method, path) in &routes {
            let mut req = request(method, path, None)
                .insert_header(("Authorization", auth.as_str()))
                .insert_header(("hypi-domain", INSTANCE));
            if *method == "POST" {
                req = req.set_json(json!({"query": "{ __typename }"}));
            }
            let res = d.call(req).await;
            let what = format!("{case}: {method} {path}");
            res.assert_error(&what, 401, "UNAUTHENTICATED");
            let token = auth.rsplit(' ').next().unwrap_or_default();
            let body = String::from_utf8_lossy(&res.body);
            assert!(!body.contains(token), "{what}: echoes the token: {body}");
        }
    }
    // The same requests with the good token get through.
    let res = d.call(request("GET", &download, Some(&good))).await;
    assert_eq!(res.status, 200, "good token");
    assert_eq!(res.body.as_ref(), b"mine");
}

/// Download headers for every kind of content: type from the bytes, nosniff, a sandboxing CSP,
/// strong ETag (the SHA-256), Last-Modified, Accept-Ranges, and RFC 6266 Content-Disposition
/// that is never `inline` for active content (HTML, SVG, XML, JS). HEAD answers the same
/// headers without a body.
#[actix_web::test]
async fn download_headers_for_every_kind_of_content() {
    let d = Depot::open();
    let t = d.token("alice", false);
    let png = png_3x2();
    let html: &[u8] = b"<!DOCTYPE html><html><script>alert(1)</script></html>";
    let svg: &[u8] = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    // (name, bytes, content type, Content-Disposition: Some(exact) or None (attachment))
    let cases: &[(&str, &[u8], &str, Option<&str>)] = &[
        (
            "Résumé final.pdf",
            b"%PDF-1.4 fake",
            "application/pdf",
            Some("inline; filename=\"R_sum_ final.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20final.pdf"),
        ),
        (
            "looks.html",
            &png,
            "image/png",
            Some("inline; filename=\"looks.html\"; filename*=UTF-8''looks.html"),
        ),
        ("page.html", html, "text/html", None),
        ("page.txt", html, "text/html", None),
        ("pic.svg", svg, "image/svg+xml", None),
        // Not recognised from its bytes, so typed by its name; with nosniff a browser treats it
        // as a (broken) PNG and never runs its script.
        (
            "svg-as.png",
            svg,
            "image/png",
            Some("inline; filename=\"svg-as.png\"; filename*=UTF-8''svg-as.png"),
        ),
        ("app.js", b"alert(1)", "text/javascript", None),
        ("data.xml", b"<?xml version=\"1.0\"?><a/>", "text/xml", None),
        ("empty.bin", b"", "application/octet-stream", Some("inline; filename=\"empty.bin\"; filename*=UTF-8''empty.bin")),
    ];
    let files: Vec<(&str, &[u8])> = cases.iter().map(|(n, b, _, _)| (*n, *b)).collect();
    let res = d.upload(&t, &files).await;
    for (name, bytes, mime, disposition) in cases {
        let path = res[*name]["url"]["path"].as_str().unwrap();
        for method in ["GET", "HEAD"] {
            let case = format!("{method} {name}");
            let dl = d.call(request(method, path, Some(&t))).await;
            assert_eq!(dl.status, 200, "{case}");
            let h = |n: &str| dl.header(n).unwrap_or_default().to_string();
            assert_eq!(h("content-type"), *mime, "{case}");
            assert_eq!(dl.length, Some(bytes.len() as u64), "{case}: length");
            assert_eq!(h("etag"), format!("\"{}\"", sha256_hex(bytes)), "{case}");
            assert!(
                httpdate::parse_http_date(&h("last-modified")).is_ok(),
                "{case}: Last-Modified {:?}",
                h("last-modified")
            );
            assert_eq!(h("accept-ranges"), "bytes", "{case}");
            assert_eq!(h("x-content-type-options"), "nosniff", "{case}");
            assert_eq!(h("content-security-policy"), "sandbox", "{case}");
            let cd = h("content-disposition");
            match disposition {
                Some(want) => assert_eq!(cd, *want, "{case}"),
                None => assert!(cd.starts_with("attachment; filename="), "{case}: {cd}"),
            }
            let body: &[u8] = if method == "HEAD" { b"" } else { bytes };
            assert_eq!(dl.body.as_ref(), body, "{case}: body");
        }
    }
}

/// Conditional requests (RFC 9110 §13): which precondition wins, and what 304 and 412 carry.
#[actix_web::test]
async fn conditional_requests() {
    let d = Depot::open();
    let t = d.token("alice", false);
    let f = &d.upload(&t, &[("c.txt", b"cache me")]).await["c.txt"];
    let path = f["url"]["path"].as_str().unwrap();
    let etag = format!("\"{}\"", f["sha256"].as_str().unwrap());
    let weak = format!("W/{etag}");
    let listed = format!("\"x\", {etag}");
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let epoch = "Thu, 01 Jan 1970 00:00:00 GMT";
    // (case, request headers, status)
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Headers, u16)] = &[
        ("no precondition", &[], 200),
        ("If-None-Match: the ETag", &[("If-None-Match", &etag)], 304),
        ("If-None-Match: weak form", &[("If-None-Match", &weak)], 304),
        (
            "If-None-Match: in a list",
            &[("If-None-Match", &listed)],
            304,
        ),
        ("If-None-Match: *", &[("If-None-Match", "*")], 304),
        (
            "If-None-Match: other",
            &[("If-None-Match", "\"other\"")],
            200,
        ),
        (
            "If-Modified-Since: future",
            &[("If-Modified-Since", future)],
            304,
        ),
        (
            "If-Modified-Since: epoch",
            &[("If-Modified-Since", epoch)],
            200,
        ),
        (
            "If-Modified-Since: garbage",
            &[("If-Modified-Since", "garbage")],
            200,
        ),
        (
            "If-None-Match decides over If-Modified-Since",
            &[
                ("If-None-Match", "\"other\""),
                ("If-Modified-Since", future),
            ],
            200,
        ),
        ("If-Match: other", &[("If-Match", "\"other\"")], 412),
        ("If-Match: the ETag", &[("If-Match", &etag)], 200),
        ("If-Match: *", &[("If-Match", "*")], 200),
        (
            "If-Unmodified-Since: epoch",
            &[("If-Unmodified-Since", epoch)],
            412,
        ),
        (
            "If-Unmodified-Since: future",
            &[("If-Unmodified-Since", future)],
            200,
        ),
        (
            "If-Match decides over If-Unmodified-Since",
            &[("If-Match", &etag), ("If-Unmodified-Since", epoch)],
            200,
        ),
        (
            "If-Match is checked before If-None-Match",
            &[("If-Match", "\"other\""), ("If-None-Match", &etag)],
            412,
        ),
    ];
    for (case, headers, status) in cases {
        let mut req = request("GET", path, Some(&t));
        for h in *headers {
            req = req.insert_header(*h);
        }
        let res = d.call(req).await;
        assert_eq!(res.status, *status, "{case}");
        assert_eq!(res.header("etag"), Some(etag.as_str()), "{case}: ETag");
        let body: &[u8] = if *status == 200 { b"cache me" } else { b"" };
        assert_eq!(res.body.as_ref(), body, "{case}: body");
    }
}

/// Who gets a file: its owner and the instance's admins; other accounts and other instances
/// get the answer a missing file gets; anonymous callers need a token while the instance's
/// `anonymousRequests` switch is off, for a missing file alike.
#[actix_web::test]
async fn who_may_download_a_private_file() {
    let d = Depot::open();
    let alice = d.token("alice", false);
    let f = &d.upload(&alice, &[("secret.txt", b"top secret")]).await["secret.txt"];
    let path = f["url"]["path"].as_str().unwrap();
    let missing = path.replace(f["hypi"]["id"].as_str().unwrap(), NO_SUCH_ID);
    // (case, token, status, error code)
    let cases: &[(&str, Option<String>, u16, &str)] = &[
        ("owner", Some(alice.clone()), 200, ""),
        ("admin", Some(d.token("root", true)), 200, ""),
        (
            "another account",
            Some(d.token("bob", false)),
            404,
            "NOT_FOUND",
        ),
        (
            "admin of another instance",
            Some(d.token_on("root", "evil.test", true)),
            404,
            "NOT_FOUND",
        ),
        ("anonymous", None, 401, "UNAUTHENTICATED"),
    ];
    for (case, token, status, code) in cases {
        let mut req = TestRequest::get().uri(path);
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let res = d.call(req).await;
        if *status == 200 {
            assert_eq!(res.status, 200, "{case}");
            assert_eq!(res.body.as_ref(), b"top secret", "{case}");
            continue;
        }
        res.assert_error(case, *status, code);
        // Exactly the answer for a file that does not exist: nothing tells the two apart.
        let mut req = TestRequest::get().uri(&missing);
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let gone = d.call(req).await;
        assert_eq!(gone.status, res.status, "{case}: same status as missing");
        assert_eq!(gone.json(), res.json(), "{case}: same body as missing");
    }
}
