//! Quotas and the usage API (issue 15) over real HTTP: the admin API and its bad input, usage
//! (dedup, delete, variants), every limit (bytes, files, upload bytes per day; account and
//! instance) on several upload flows, the headers, and concurrent uploads racing for the last
//! bytes.

mod common;
use common::*;
use serde_json::json;
use std::sync::Arc;

fn alice(s: &Server) -> String {
    s.token("alice", INSTANCE, false)
}

fn bob(s: &Server) -> String {
    s.token("bob", INSTANCE, false)
}

fn admin(s: &Server) -> String {
    s.token("root", INSTANCE, true)
}

/// A request with a token (or none) and an optional JSON body: (status, headers, body).
fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.client.request(m, s.url(path));
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    req = req.header("hypi-domain", INSTANCE);
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().unwrap_or(Value::Null))
}

fn usage_of(s: &Server, token: &str, query: &str) -> Value {
    let (st, _, v) = call(
        s,
        "GET",
        &format!("/instances/{INSTANCE}/usage{query}"),
        Some(token),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v
}

fn set_account(s: &Server, account: &str, limits: Value) {
    let path = format!("/instances/{INSTANCE}/accounts/{account}/quota");
    let (st, _, v) = call(s, "PUT", &path, Some(&admin(s)), Some(&limits));
    assert_eq!(st, 200, "{v}");
}

fn set_instance(s: &Server, body: Value) {
    let path = format!("/instances/{INSTANCE}/quotas");
    let (st, _, v) = call(s, "PUT", &path, Some(&admin(s)), Some(&body));
    assert_eq!(st, 200, "{v}");
}

/// A Hypi upload of one file: (status, headers, body).
fn upload(
    s: &Server,
    token: &str,
    name: &str,
    data: &[u8],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .multipart(upload_form(&[(name, data)]))
        .send()
        .expect("upload");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().unwrap_or(Value::Null))
}

fn delete(s: &Server, token: &str, f: &Value) {
    let id = f["hypi"]["id"].as_str().unwrap();
    let r = s
        .client
        .delete(s.url(&format!("/files/{id}")))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

/// Usage counts each file's size (dedup shared bytes count per file), files, and goes down on
/// delete; admins see the instance and a page of accounts, others only their own.
#[test]
fn usage_counts_files_dedup_and_deletes() {
    let s = Server::start();
    let (a, b, root) = (alice(&s), bob(&s), admin(&s));
    let data = bytes(1000, 1);
    let f1 = s.upload_one(&a, "one.bin", &data);
    let _f2 = s.upload_one(&a, "two.bin", &data);
    let _f3 = s.upload_one(&b, "three.bin", &bytes(300, 2));
    assert_eq!(s.blob_count(), 2, "alice's two files share one blob");

    let mine = usage_of(&s, &a, "");
    assert_eq!(mine["account"], "alice");
    assert_eq!(
        mine["usage"]["bytes"], 2000,
        "what she sees, not what the disk holds"
    );
    assert_eq!(mine["usage"]["files"], 2);
    assert_eq!(mine["usage"]["uploadBytesToday"], 2000);
    assert_eq!(mine["usage"]["variantBytes"], 0);
    assert_eq!(
        mine["limits"]["maxBytes"],
        Value::Null,
        "unlimited by default"
    );

    let all = usage_of(&s, &root, "");
    assert_eq!(all["instance"]["domain"], INSTANCE);
    assert_eq!(all["instance"]["usage"]["bytes"], 2300);
    assert_eq!(all["instance"]["usage"]["files"], 3);
    let accounts: Vec<_> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["account"].as_str().unwrap().to_string(),
                r["usage"]["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(accounts, vec![("alice".into(), 2000), ("bob".into(), 300)]);
    assert_eq!(all["hasMore"], false);

    // Paged: one account a page, the cursor is the last account.
    let p1 = usage_of(&s, &root, "?limit=1");
    assert_eq!(p1["accounts"][0]["account"], "alice");
    assert_eq!(p1["hasMore"], true);
    assert_eq!(p1["next"], "alice");
    let p2 = usage_of(&s, &root, "?limit=1&after=alice");
    assert_eq!(p2["accounts"][0]["account"], "bob");
    assert_eq!(p2["hasMore"], false);
    // One account, for an admin.
    let one = usage_of(&s, &root, "?account=bob");
    assert_eq!(one["usage"]["bytes"], 300);

    delete(&s, &a, &f1);
    let mine = usage_of(&s, &a, "");
    assert_eq!(mine["usage"]["bytes"], 1000);
    assert_eq!(mine["usage"]["files"], 1);
    assert_eq!(
        mine["usage"]["uploadBytesToday"], 2000,
        "a delete does not give back the day's uploads"
    );

    // Failures: another account's usage (403), no token (401), other instance (404), bad
    // paging (400), unknown parameter (400).
    let path = format!("/instances/{INSTANCE}/usage");
    let (st, _, v) = call(&s, "GET", &format!("{path}?account=bob"), Some(&a), None);
    assert_eq!((st, code(&v)), (403, "FORBIDDEN"));
    let (st, _, v) = call(&s, "GET", &path, None, None);
    assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"));
    let (st, _, _) = call(&s, "GET", "/instances/other.test/usage", Some(&root), None);
    assert_eq!(st, 404);
    for q in [
        "?limit=0",
        "?limit=100000",
        "?limit=abc",
        "?limit=-1",
        "?colour=red",
    ] {
        let (st, _, v) = call(&s, "GET", &format!("{path}{q}"), Some(&root), None);
        assert_eq!((st, code(&v)), (400, "BAD_REQUEST"), "{q}: {v}");
    }
    let (st, _, _) = call(&s, "POST", &path, Some(&root), None);
    assert_eq!(st, 405);
}

/// The admin API: instance limits and account defaults, one account's limits; who may; what
/// bad input gets.
#[test]
fn quota_settings_api_and_bad_input() {
    let s = Server::start();
    let (a, root) = (alice(&s), admin(&s));
    let path = format!("/instances/{INSTANCE}/quotas");
    let (st, _, v) = call(&s, "GET", &path, Some(&root), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["instance"]["maxBytes"], Value::Null);
    assert_eq!(v["effective"]["accountDefault"]["maxFiles"], Value::Null);

    let body = json!({"instance": {"maxBytes": 5000}, "accountDefault": {"maxFiles": 3, "maxUploadBytesPerDay": null}});
    let (st, _, v) = call(&s, "PUT", &path, Some(&root), Some(&body));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["instance"]["maxBytes"], 5000);
    assert_eq!(v["accountDefault"]["maxFiles"], 3);
    let (_, _, v) = call(&s, "GET", &path, Some(&root), None);
    assert_eq!(v["effective"]["instance"]["maxBytes"], 5000);

    // Alice's own limit wins over the default; the default fills in the rest.
    let apath = format!("/instances/{INSTANCE}/accounts/alice/quota");
    let (st, _, v) = call(
        &s,
        "PUT",
        &apath,
        Some(&root),
        Some(&json!({"maxBytes": 100})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["limits"]["maxBytes"], 100);
    assert_eq!(v["effective"]["maxFiles"], 3);
    let (st, _, v) = call(&s, "GET", &apath, Some(&a), None);
    assert_eq!(st, 200, "an account reads its own quota: {v}");
    assert_eq!(v["effective"]["maxBytes"], 100);

    // Who may: non-admins may not set (403) nor read the instance's (403); no token: 401;
    // another instance: 404.
    for (m, p, b) in [
        (
            "PUT",
            path.as_str(),
            Some(json!({"instance": {"maxBytes": 1}})),
        ),
        ("GET", path.as_str(), None),
        ("PUT", apath.as_str(), Some(json!({"maxBytes": 1}))),
        (
            "GET",
            &format!("/instances/{INSTANCE}/accounts/bob/quota"),
            None,
        ),
    ] {
        let (st, _, v) = call(&s, m, p, Some(&a), b.as_ref());
        assert_eq!((st, code(&v)), (403, "FORBIDDEN"), "{m} {p}");
        let (st, _, v) = call(&s, m, p, None, b.as_ref());
        assert_eq!((st, code(&v)), (401, "UNAUTHENTICATED"), "{m} {p}");
    }
    let (st, _, _) = call(&s, "GET", "/instances/other.test/quotas", Some(&root), None);
    assert_eq!(st, 404);

    // Bad input: 400 BAD_REQUEST, nothing changed.
    for bad in [
        json!({"instance": {"maxBytes": -1}}),
        json!({"instance": {"maxBytes": "lots"}}),
        json!({"instance": {"maxBytes": 1.5}}),
        json!({"instance": {"maxBytez": 1}}),
        json!({"instance": 5}),
        json!({"everyone": {}}),
        json!([1, 2]),
    ] {
        let (st, _, v) = call(&s, "PUT", &path, Some(&root), Some(&bad));
        assert_eq!((st, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
    }
    for bad in [
        json!({"maxFiles": -3}),
        json!({"maxFiles": "3"}),
        json!("x"),
    ] {
        let (st, _, v) = call(&s, "PUT", &apath, Some(&root), Some(&bad));
        assert_eq!((st, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
    }
    let r = s
        .client
        .put(s.url(&path))
        .header("Authorization", &root)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, _, v) = call(&s, "GET", &path, Some(&root), None);
    assert_eq!(v["instance"]["maxBytes"], 5000, "bad input changed nothing");

    // Null clears a limit.
    let (st, _, v) = call(
        &s,
        "PUT",
        &apath,
        Some(&root),
        Some(&json!({"maxBytes": null})),
    );
    assert_eq!(st, 200);
    assert_eq!(v["limits"]["maxBytes"], Value::Null);
}

/// An account's stored-bytes limit on Hypi uploads: headers on success, 429 when what is left
/// is too little, 413 when the file is larger than the limit itself; nothing is stored by a
/// refused upload; a delete makes room; other accounts are not limited.
#[test]
fn account_bytes_limit_on_uploads() {
    let s = Server::start();
    let (a, b) = (alice(&s), bob(&s));
    set_account(&s, "alice", json!({"maxBytes": 1000}));
    let (st, h, first) = upload(&s, &a, "a.bin", &bytes(600, 1));
    assert_eq!(st, 200, "{first}");
    assert_eq!(header(&h, "RateLimit-Policy"), "\"account-bytes\";q=1000");
    assert_eq!(header(&h, "RateLimit"), "\"account-bytes\";r=400");
    let blobs = s.blob_count();

    let (st, h, v) = upload(&s, &a, "b.bin", &bytes(500, 2));
    assert_eq!((st, code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
    assert_eq!(header(&h, "RateLimit"), "\"account-bytes\";r=400");
    let (st, h, v) = upload(&s, &a, "c.bin", &bytes(1500, 3));
    assert_eq!((st, code(&v)), (413, "FILE_TOO_LARGE"), "{v}");
    assert_eq!(header(&h, "RateLimit-Policy"), "\"account-bytes\";q=1000");
    assert_eq!(s.blob_count(), blobs, "refused uploads leave no blob");
    s.eventually("no temp files", || s.temp_files() == 0);
    assert_eq!(usage_of(&s, &a, "")["usage"]["bytes"], 600);

    // Two parts in one request: both or neither.
    let (st, _, v) = {
        let r = s
            .client
            .post(s.url("/upload/"))
            .header("Authorization", &a)
            .header("hypi-domain", INSTANCE)
            .multipart(upload_form(&[
                ("x.bin", &bytes(300, 4)),
                ("y.bin", &bytes(300, 5)),
            ]))
            .send()
            .unwrap();
        (r.status().as_u16(), (), r.json::<Value>().unwrap())
    };
    assert_eq!((st, code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
    assert_eq!(usage_of(&s, &a, "")["usage"]["files"], 1);

    // Exactly what is left fits.
    let (st, h, _) = upload(&s, &a, "d.bin", &bytes(400, 6));
    assert_eq!(st, 200);
    assert_eq!(header(&h, "RateLimit"), "\"account-bytes\";r=0");
    // Bob has no limit.
    let (st, h, _) = upload(&s, &b, "e.bin", &bytes(5000, 7));
    assert_eq!(st, 200);
    assert_eq!(
        header(&h, "RateLimit-Policy"),
        "",
        "no quota, no quota headers"
    );

    // A delete makes room again.
    delete(&s, &a, &first_record(&first));
    let (st, _, v) = upload(&s, &a, "f.bin", &bytes(500, 8));
    assert_eq!(st, 200, "{v}");
}

/// File counts and upload bytes per day: the third file is refused; the day's counter is not
/// given back by deletes and its header says when it resets.
#[test]
fn file_count_and_daily_limits() {
    let s = Server::start();
    let a = alice(&s);
    set_account(&s, "alice", json!({"maxFiles": 2}));
    s.upload_one(&a, "1.txt", b"one");
    s.upload_one(&a, "2.txt", b"two");
    let (st, h, v) = upload(&s, &a, "3.txt", b"three");
    assert_eq!((st, code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
    assert_eq!(header(&h, "RateLimit-Policy"), "\"account-files\";q=2");
    assert_eq!(header(&h, "RateLimit"), "\"account-files\";r=0");

    let b = bob(&s);
    set_account(&s, "bob", json!({"maxUploadBytesPerDay": 300}));
    let f = s.upload_one(&b, "a.bin", &bytes(200, 1));
    delete(&s, &b, &f);
    let (st, h, v) = upload(&s, &b, "b.bin", &bytes(200, 2));
    assert_eq!((st, code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
    let policy = header(&h, "RateLimit-Policy");
    assert_eq!(policy, "\"account-upload-day\";q=300;w=86400");
    let left = header(&h, "RateLimit");
    let reset: u64 = left
        .strip_prefix("\"account-upload-day\";r=100;t=")
        .unwrap_or_else(|| panic!("{left}"))
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&reset), "{reset}");
    // Larger than a whole day's allowance: can never fit.
    let (st, _, v) = upload(&s, &b, "c.bin", &bytes(301, 3));
    assert_eq!((st, code(&v)), (413, "FILE_TOO_LARGE"), "{v}");
    let (st, _, _) = upload(&s, &b, "d.bin", &bytes(100, 4));
    assert_eq!(st, 200, "exactly the rest of the day fits");
}

/// Instance limits count every account together; account defaults apply to accounts without
/// limits of their own.
#[test]
fn instance_limits_and_account_defaults() {
    let s = Server::start();
    let (a, b) = (alice(&s), bob(&s));
    set_instance(
        &s,
        json!({"instance": {"maxBytes": 1000}, "accountDefault": {"maxBytes": 700}}),
    );
    let (st, h, _) = upload(&s, &a, "a.bin", &bytes(600, 1));
    assert_eq!(st, 200);
    assert_eq!(
        header(&h, "RateLimit"),
        "\"account-bytes\";r=100, \"instance-bytes\";r=400"
    );
    let (st, _, v) = upload(&s, &a, "b.bin", &bytes(200, 2));
    assert_eq!(
        (st, code(&v)),
        (429, "QUOTA_EXCEEDED"),
        "alice's default: {v}"
    );
    let (st, h, v) = upload(&s, &b, "c.bin", &bytes(500, 3));
    assert_eq!(
        (st, code(&v)),
        (429, "QUOTA_EXCEEDED"),
        "the instance is full: {v}"
    );
    assert!(
        header(&h, "RateLimit").starts_with("\"instance-bytes\";r=400"),
        "{h:?}"
    );
    let (st, _, _) = upload(&s, &b, "d.bin", &bytes(400, 4));
    assert_eq!(st, 200);
    let all = usage_of(&s, &admin(&s), "");
    assert_eq!(all["instance"]["usage"]["bytes"], 1000);
    assert_eq!(all["instance"]["limits"]["maxBytes"], 1000);
}

/// Concurrent uploads racing for the last bytes: never over the limit, every refusal is a clean
/// 429, and a refused upload leaves no bytes behind (they are stored before the quotas are
/// asked, then taken back).
#[test]
fn concurrent_uploads_never_exceed_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::spawn(dir.path(), &[], &[]).unwrap());
    set_account(&s, "alice", json!({"maxBytes": 1000, "maxFiles": 100}));
    let a = alice(&s);
    let results: Vec<Result<Value, String>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (s, a) = (s.clone(), a.clone());
                scope.spawn(move || {
                    let c = client();
                    let dir = format!("/upload/d{i}/");
                    s.try_upload(&c, &a, &dir, &format!("{i}.bin"), &bytes(300, i))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.contains("429") && r.contains("QUOTA_EXCEEDED"), "{r}");
    }
    let u = usage_of(&s, &a, "");
    assert_eq!(u["usage"]["bytes"], 900);
    assert_eq!(u["usage"]["files"], 3);
    // Each upload went into a directory of its own, made for it; a refused one's went with it.
    let (st, _, root) = call(&s, "GET", "/dirs/", Some(&a), None);
    assert_eq!(st, 200, "{root}");
    let mut made: Vec<String> = root["children"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_string())
        .collect();
    made.sort();
    let mut kept: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|f| {
            f["directory"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    kept.sort();
    assert_eq!(
        made, kept,
        "directories under / against the admitted uploads'"
    );
    Arc::into_inner(s).unwrap().stop();
    assert_eq!(
        blob_files(dir.path()).len(),
        3,
        "only the admitted uploads' blobs"
    );
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(ok && text.contains(" 0 unreferenced"), "{text}");
}

/// The direct flows: a presigned upload (Foir) is refused at creation when its declared size
/// cannot fit, and at confirm when the quota filled meanwhile (its bytes stay for a later
/// confirm); tus is refused at creation on Upload-Length; a re-upload counts the new size.
#[test]
fn direct_flows_respect_the_quota() {
    let s = Server::start();
    let a = alice(&s);
    set_account(&s, "alice", json!({"maxBytes": 1000}));

    // Presigned PUT: declared larger than the limit -> FILE_TOO_LARGE before any byte.
    let err = s
        .create_file_upload(&a, "big.bin", "application/octet-stream", 2000, "")
        .unwrap_err();
    assert_eq!(Server::gql_code(&err), "FILE_TOO_LARGE", "{err}");
    // Within: created; the quota fills meanwhile; confirm is refused, then works after a delete.
    let (id, url) = s
        .create_file_upload(&a, "p.bin", "application/octet-stream", 500, "")
        .expect("created");
    assert_eq!(
        s.put_bytes(&url, "application/octet-stream", &bytes(500, 1))
            .status(),
        200
    );
    let filler = s.upload_one(&a, "filler.bin", &bytes(600, 2));
    let v = s.confirm_file_upload(&a, &id);
    assert_eq!(Server::gql_code(&v), "QUOTA_EXCEEDED", "{v}");
    let err = s
        .create_file_upload(&a, "q.bin", "application/octet-stream", 500, "")
        .unwrap_err();
    assert_eq!(Server::gql_code(&err), "QUOTA_EXCEEDED", "precheck: {err}");
    delete(&s, &a, &filler);
    let v = s.confirm_file_upload(&a, &id);
    assert_eq!(v["data"]["confirmFileUpload"]["size"], 500, "{v}");
    assert_eq!(usage_of(&s, &a, "")["usage"]["bytes"], 500);

    // tus: creation checks Upload-Length.
    let tus = |len: &str| {
        s.client
            .post(s.url("/tus/"))
            .header("Authorization", &a)
            .header("hypi-domain", INSTANCE)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", len)
            .send()
            .unwrap()
    };
    let r = tus("600");
    assert_eq!(r.status(), 429);
    assert!(header(r.headers(), "RateLimit").contains("r=500"));
    assert_eq!(tus("5000").status(), 413);
    let r = tus("400");
    assert_eq!(r.status(), 201);
    let loc = header(r.headers(), "Location");
    let r = s
        .client
        .patch(&loc)
        .header("Authorization", &a)
        .header("hypi-domain", INSTANCE)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes(400, 3))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let u = usage_of(&s, &a, "");
    assert_eq!(u["usage"]["bytes"], 900);
    assert_eq!(u["usage"]["files"], 2);

    // Re-upload: the new size replaces the old; growing past the limit is refused.
    let small = s.upload_one(&a, "small.bin", &bytes(100, 4));
    let id = small["hypi"]["id"].as_str().unwrap().to_string();
    let put = |len: usize| {
        s.client
            .put(s.url(&format!("/files/{id}/content")))
            .header("Authorization", &a)
            .header("hypi-domain", INSTANCE)
            .body(bytes(len, 5))
            .send()
            .unwrap()
    };
    let r = put(300);
    assert_eq!(r.status(), 429, "100 -> 300 needs 200 more, 0 left");
    let r = put(50);
    assert_eq!(r.status(), 200);
    assert_eq!(usage_of(&s, &a, "")["usage"]["bytes"], 950);
}

/// Image variants count in the source owner's usage (and in its stored bytes), and go with the
/// source.
#[test]
fn variants_count_in_the_owners_usage() {
    let s = Server::start();
    let a = alice(&s);
    let png = jpeg(200, 100);
    let f = s.upload_one(&a, "p.jpg", &png);
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let r = s.get(&format!("{path}?w=64&format=webp"), Some(&a));
    assert_eq!(r.status(), 200);
    let variant = r.bytes().unwrap().len() as u64;
    let u = usage_of(&s, &a, "");
    assert_eq!(u["usage"]["variantBytes"], variant);
    assert_eq!(u["usage"]["bytes"], png.len() as u64);
    assert_eq!(u["usage"]["storedBytes"], png.len() as u64 + variant);
    // The same variant again costs nothing more.
    assert_eq!(
        s.get(&format!("{path}?w=64&format=webp"), Some(&a))
            .status(),
        200
    );
    assert_eq!(usage_of(&s, &a, "")["usage"]["variantBytes"], variant);
    delete(&s, &a, &f);
    let u = usage_of(&s, &a, "");
    assert_eq!(u["usage"]["variantBytes"], 0);
    assert_eq!(u["usage"]["storedBytes"], 0);
}

/// Config defaults (`[quotas]`) apply until an admin sets limits; fsck finds the counters
/// exact after a mix of uploads and deletes.
#[test]
fn config_defaults_and_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("depot.toml");
    std::fs::write(
        &cfg,
        "[quotas]\naccount_max_files = 1\ninstance_max_bytes = 100000\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg_arg = cfg.to_str().unwrap().to_string();
    let s = Server::spawn(&data, &[], &["--config", &cfg_arg]).expect("server starts");
    let a = alice(&s);
    s.upload_one(&a, "1.txt", b"one");
    let (st, _, v) = upload(&s, &a, "2.txt", b"two");
    assert_eq!((st, code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
    let (_, _, q) = call(
        &s,
        "GET",
        &format!("/instances/{INSTANCE}/quotas"),
        Some(&admin(&s)),
        None,
    );
    assert_eq!(q["effective"]["accountDefault"]["maxFiles"], 1);
    assert_eq!(q["effective"]["instance"]["maxBytes"], 100000);
    assert_eq!(
        q["accountDefault"]["maxFiles"],
        Value::Null,
        "nothing stored"
    );
    set_account(&s, "alice", json!({"maxFiles": 5}));
    let f = s.upload_one(&a, "2.txt", b"two");
    s.upload_one(&bob(&s), "3.txt", b"three");
    delete(&s, &a, &f);
    drop(s);
    let (ok, out) = depot(&["fsck", "--config", &cfg_arg], &data);
    assert!(ok, "{out}");
    assert!(!out.contains("usage drift"), "{out}");
}

/// The same rules with PostgreSQL metadata: racing uploads stay within the limit, usage and
/// deletes are exact, and the counters survive a restart (they live in the database).
#[test]
fn quotas_on_postgres() {
    let Some(url) = pg_or_skip("quotas_on_postgres") else {
        return;
    };
    let url = url_in_new_schema(&url, "quotas");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DEPOT_META_KIND", "postgres"),
        ("DEPOT_META_URL", url.as_str()),
        ("DEPOT_META_POOL_SIZE", "8"),
    ];
    let s = Arc::new(Server::spawn(dir.path(), &env, &[]).expect("server on PostgreSQL"));
    set_account(&s, "alice", json!({"maxBytes": 1000}));
    let a = alice(&s);
    let results: Vec<Result<Value, String>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let (s, a) = (s.clone(), a.clone());
                scope.spawn(move || {
                    let c = client();
                    let dir = format!("/upload/d{i}/");
                    s.try_upload(&c, &a, &dir, &format!("{i}.bin"), &bytes(300, i))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let done: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(done.len(), 3, "{results:?}");
    let u = usage_of(&s, &a, "");
    assert_eq!(
        (u["usage"]["bytes"].as_u64(), u["usage"]["files"].as_u64()),
        (Some(900), Some(3))
    );
    delete(&s, &a, done[0]);
    drop(s);
    let s = Server::spawn(dir.path(), &env, &[]).expect("restarted");
    let u = usage_of(&s, &a, "");
    assert_eq!(u["usage"]["bytes"], 600);
    assert_eq!(
        u["limits"]["maxBytes"], 1000,
        "limits are stored in the database too"
    );
    let (st, _, v) = upload(&s, &a, "big.bin", &bytes(500, 9));
    assert_eq!((st, code(&v)), (429, "QUOTA_EXCEEDED"), "{v}");
    let (st, _, _) = upload(&s, &a, "fits.bin", &bytes(400, 10));
    assert_eq!(st, 200);
}

/// Two nodes on one database and one bucket, uploads racing on both for one account's last
/// bytes: together they never go over the limit (the quota check and the record's write are
/// ordered by a database lock, not by each process's own), and both nodes report the same usage.
#[test]
fn quotas_hold_across_two_nodes() {
    let Some(pg) = pg_or_skip("quotas_hold_across_two_nodes") else {
        return;
    };
    let Some(s3) = s3_or_skip("quotas_hold_across_two_nodes") else {
        return;
    };
    let url = url_in_new_schema(&pg, "quota_nodes");
    let mut env: Vec<(String, String)> = vec![
        ("DEPOT_META_KIND".into(), "postgres".into()),
        ("DEPOT_META_URL".into(), url),
        ("DEPOT_META_POOL_SIZE".into(), "8".into()),
    ];
    env.extend(s3.server_env());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One JWT secret for both nodes.
    let alice = token_for(da.path(), "alice", INSTANCE, false, &[]);
    std::fs::copy(da.path().join("jwt.secret"), db.path().join("jwt.secret")).unwrap();
    let nodes = [
        Arc::new(Server::spawn(da.path(), &env_refs(&env), &[]).expect("node A")),
        Arc::new(Server::spawn(db.path(), &env_refs(&env), &[]).expect("node B")),
    ];
    set_account(&nodes[0], "alice", json!({"maxBytes": 3000}));
    // 32 uploads of 300 bytes at once, half on each node: exactly 10 fit.
    let results: Vec<Result<Value, String>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..32)
            .map(|i| {
                let (s, a) = (nodes[i % 2].clone(), alice.clone());
                scope.spawn(move || {
                    let c = client();
                    s.try_upload(
                        &c,
                        &a,
                        "/upload/",
                        &format!("{i}.bin"),
                        &bytes(300, i as u64),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 10, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.contains("429") && r.contains("QUOTA_EXCEEDED"), "{r}");
    }
    for s in &nodes {
        let u = usage_of(s, &alice, "");
        assert_eq!(
            (u["usage"]["bytes"].as_u64(), u["usage"]["files"].as_u64()),
            (Some(3000), Some(10)),
            "{u}"
        );
    }
    // The refused uploads' objects were taken back: one per admitted upload.
    assert_eq!(blobs_in(&s3.store()).len(), 10);
}

/// fsck finds counters that disagree with the records (as a crash of an older version, or a
/// hand edit, could leave them), and `--repair` rewrites them from the records.
#[test]
fn fsck_repairs_usage_drift() {
    use depot::meta::usage::{Counters, UtcDay};
    use depot::meta::{InstanceStore, SledMeta, UsageStore};
    use depot::types::AccountId;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).expect("server starts");
    let a = alice(&s);
    s.upload_one(&a, "1.bin", &bytes(100, 1));
    s.upload_one(&a, "2.bin", &bytes(50, 2));
    drop(s);
    {
        let meta = SledMeta::open(&dir.path().join("meta")).unwrap();
        let id = meta.instance_by_domain(INSTANCE).unwrap().unwrap().id;
        let alice = AccountId("alice".into());
        let wrong = Counters {
            bytes: 7,
            files: 9,
            variant_bytes: 0,
        };
        meta.set_counters(id, Some(&alice), &wrong).unwrap();
        let u = meta.usage(id, Some(&alice), UtcDay(0)).unwrap();
        assert_eq!(u.counters, wrong);
    }
    let (ok, out) = depot(&["fsck"], dir.path());
    assert!(!ok, "drift is damage: {out}");
    assert!(out.contains("usage drift: usage of account alice"), "{out}");
    assert!(out.contains("counted 7 bytes, 9 files"), "{out}");
    let (ok, out) = depot(&["fsck", "--repair"], dir.path());
    assert!(
        out.contains("repaired: rewrote the usage of account alice"),
        "{out}"
    );
    let _ = ok;
    let (ok, out) = depot(&["fsck"], dir.path());
    assert!(ok, "clean after repair: {out}");
    let s = Server::spawn(dir.path(), &[], &[]).expect("restarts");
    let u = usage_of(&s, &alice(&s), "");
    assert_eq!(
        (u["usage"]["bytes"].as_u64(), u["usage"]["files"].as_u64()),
        (Some(150), Some(2))
    );
}

/// A Hypi upload is refused as soon as a part crosses what the quota allows: the client gets
/// its 413 (larger than the 1000-byte limit itself) without sending the rest of a 2 MiB body
/// (without the early stop the server would wait for the body and answer 408 when it stalls),
/// and nothing is kept.
#[test]
fn over_quota_part_is_stopped_before_the_rest_arrives() {
    let s = Server::start_with(&[
        ("DEPOT_BODY_TIMEOUT_SECS", "2"),
        ("DEPOT_BODY_MIN_RATE", "0"),
    ]);
    set_account(&s, "alice", json!({"maxBytes": 1000}));
    let a = alice(&s);
    let t = Trickle::open(&s, &a, "big.bin", &bytes(2 << 20, 1), 64 * 1024);
    let mut conn = t.conn;
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn, &mut out);
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("FILE_TOO_LARGE"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("ratelimit-policy: \"account-bytes\";q=1000"),
        "{answer}"
    );
    s.eventually("no temp files", || s.temp_files() == 0);
    assert_eq!(s.blob_count(), 0);
    assert_eq!(usage_of(&s, &a, "")["usage"]["bytes"], 0);
}

/// An upload's blob commit (an S3 copy from its temp object, long for a large file) happens
/// under the blob's own lock only, before any of the instance's: not under its quota permit,
/// nor its tree lock (taken exclusively when the upload makes a directory). While one upload's
/// copy into a new directory is held at the S3 server, the instance's other uploads still
/// complete: into another new directory, into the same one, and into existing ones. (Before,
/// they waited for the first's copy, up to the lock timeout, then got a 503.)
#[test]
fn a_slow_blob_commit_does_not_hold_the_instances_other_uploads() {
    let Some(s3) = s3_or_skip("a_slow_blob_commit_does_not_hold_the_instances_other_uploads")
    else {
        return;
    };
    let proxy = Proxy::start(&s3.endpoint);
    let env = s3.server_env_via(&proxy.addr);
    let s = Arc::new(Server::start_with(&env_refs(&env)));
    set_account(&s, "alice", json!({"maxBytes": 100_000_000}));
    let a = alice(&s);
    // Past one S3 part (5 MiB): staged as a temp object, committed by a copy.
    let big = bytes(6 * 1024 * 1024, 1);
    let stripe = |d: &[u8]| u8::from_str_radix(&sha256_hex(d)[..2], 16).unwrap() % 64;
    // Small ones whose blob lock stripes differ from the big one's (held across its commit).
    let small: Vec<Vec<u8>> = (2..)
        .map(|seed| bytes(1000, seed))
        .filter(|d| stripe(d) != stripe(&big))
        .take(4)
        .collect();
    // The instance's first upload makes its root directory.
    s.upload_one(&a, "first.bin", &bytes(10, 0));
    proxy
        .hold_copies
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let slow = {
        let (s, a) = (s.clone(), a.clone());
        std::thread::spawn(move || s.try_upload(&client(), &a, "/upload/new/", "big.bin", &big))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.held.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the big upload never reached its copy"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dirs: [&'static str; 4] = ["/upload/other/", "/upload/new/", "/upload/", "/upload/"];
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, (dir, data)) in dirs.into_iter().zip(small).enumerate() {
        let (s, a, tx) = (s.clone(), a.clone(), tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send((
                dir,
                s.try_upload(&client(), &a, dir, &format!("{i}.bin"), &data),
            ));
        });
    }
    // A hang detector, not a speed check: the copy stays held until these answers are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let quick: Vec<_> = (0..dirs.len())
        .map(|_| rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())))
        .collect();
    proxy
        .hold_copies
        .store(false, std::sync::atomic::Ordering::SeqCst);
    for q in quick {
        let (dir, answer) = q.expect("a small upload waited for the big upload's blob commit");
        let file = answer.unwrap_or_else(|e| panic!("small upload into {dir}: {e}"));
        assert_eq!(file["size"], 1000, "{file}");
    }
    let slow = slow.join().unwrap().expect("big upload");
    assert_eq!(slow["size"], 6 * 1024 * 1024);
    assert_eq!(slow["directory"], "/new", "{slow}");
    let u = usage_of(&s, &a, "");
    assert_eq!(u["usage"]["bytes"], 6 * 1024 * 1024 + 4 * 1000 + 10, "{u}");
    // The directory the big upload made (or found made by the small one meanwhile) holds both.
    let (st, _, new) = call(&s, "GET", "/dirs/new/", Some(&a), None);
    assert_eq!(st, 200, "{new}");
    let mut names: Vec<&str> = new["children"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["1.bin", "big.bin"], "{new}");
    assert_eq!(
        blobs_in(&s3.store()).len(),
        6,
        "the big, the first and four small blobs"
    );
}
