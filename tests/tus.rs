//! tus 1.0 at `/tus/`: tusd's protocol cases as a table (request -> expected status and
//! headers) against the real server, then the flows around it: completion into a File (Hypi
//! shape, download, dedup), termination, expiry, concatenation, serialised PATCHes, a dropped
//! connection and a restart keeping the offset, CORS for browsers, and the real client
//! (tus-js-client in node, tests/tus/upload.mjs: 32 MiB in 5 MiB chunks, aborted mid-upload,
//! resumed from the stored URL).

mod common;
use base64::Engine;
use common::*;
use reqwest::blocking::Response;
use reqwest::Method;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const V: (&str, &str) = ("Tus-Resumable", "1.0.0");
const STREAM: (&str, &str) = ("Content-Type", "application/offset+octet-stream");
/// `Tus-Max-Size` of the table's server.
const MAX: u64 = 1_000_000;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A tus request of `who` (a token, or none).
fn tus(
    s: &Server,
    method: &str,
    path: &str,
    who: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = s
        .client
        .request(Method::from_bytes(method.as_bytes()).unwrap(), s.url(path));
    if let Some(t) = who {
        req = req
            .header("Authorization", t)
            .header("hypi-domain", INSTANCE);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.body(body.to_vec());
    }
    req.send().expect("tus request")
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Creates an upload of `length` bytes (deferred when `None`); its path `/tus/<id>`.
fn create(s: &Server, token: &str, length: Option<u64>, extra: &[(&str, &str)]) -> String {
    let len = length.map(|l| l.to_string());
    let mut h = vec![V];
    match &len {
        Some(l) => h.push(("Upload-Length", l.as_str())),
        None => h.push(("Upload-Defer-Length", "1")),
    }
    h.extend_from_slice(extra);
    let r = tus(s, "POST", "/tus/", Some(token), &h, b"");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let loc = header(&r, "Location").expect("Location");
    let path = loc
        .strip_prefix(&s.base)
        .expect("Location is on this server")
        .to_string();
    assert!(path.starts_with("/tus/"), "{path}");
    path
}

fn patch(s: &Server, token: &str, path: &str, offset: u64, body: &[u8]) -> Response {
    let off = offset.to_string();
    tus(
        s,
        "PATCH",
        path,
        Some(token),
        &[V, STREAM, ("Upload-Offset", &off)],
        body,
    )
}

fn offset(s: &Server, token: &str, path: &str) -> u64 {
    let r = tus(s, "HEAD", path, Some(token), &[V], b"");
    assert_eq!(r.status(), 200, "HEAD {path}");
    header(&r, "Upload-Offset").unwrap().parse().unwrap()
}

/// What an upload looks like before a case's request.
#[derive(Clone, Copy)]
enum Given {
    /// No upload (the request goes to `/tus/`, or to an id that does not exist).
    Nothing,
    /// An upload of 11 bytes with `hello` (5) stored.
    Hello,
    /// An upload with a deferred length and nothing stored.
    Deferred,
}

/// Who sends a case's request.
#[derive(Clone, Copy)]
enum Who {
    Alice,
    Bob,
    Nobody,
}

/// One tusd-style case: request -> expected status and headers (`None`: present, any value).
struct Case {
    name: &'static str,
    given: Given,
    method: &'static str,
    /// `{id}` is the given upload's id.
    path: &'static str,
    who: Who,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    status: u16,
    expect: &'static [(&'static str, Option<&'static str>)],
    /// The given upload's offset afterwards.
    offset_after: Option<u64>,
}

const HELLO_SHA1: &str = "sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=";
const HELLO_SHA256: &str = "sha256 LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

fn cases() -> Vec<Case> {
    let c = |name, given, method, path, who, headers, body, status, expect, offset_after| Case {
        name,
        given,
        method,
        path,
        who,
        headers,
        body,
        status,
        expect,
        offset_after,
    };
    use Given::*;
    use Who::*;
    vec![
        c("options advertises the protocol", Nothing, "OPTIONS", "/tus/", Nobody, &[], b"", 204,
          &[("Tus-Version", Some("1.0.0")),
            ("Tus-Extension", Some("creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation")),
            ("Tus-Max-Size", Some("1000000")),
            ("Tus-Checksum-Algorithm", Some("sha1,sha256")),
            ("Tus-Resumable", Some("1.0.0"))], None),
        c("creation without Tus-Resumable is 412", Nothing, "POST", "/tus/", Alice,
          &[("Upload-Length", "5")], b"", 412, &[("Tus-Version", Some("1.0.0"))], None),
        c("creation with another version is 412", Nothing, "POST", "/tus/", Alice,
          &[("Tus-Resumable", "0.2.2"), ("Upload-Length", "5")], b"", 412,
          &[("Tus-Version", Some("1.0.0"))], None),
        c("creation without a token is 401", Nothing, "POST", "/tus/", Nobody,
          &[V, ("Upload-Length", "5")], b"", 401, &[("Tus-Resumable", Some("1.0.0"))], None),
        c("creation", Nothing, "POST", "/tus/", Alice, &[V, ("Upload-Length", "11")], b"", 201,
          &[("Location", None), ("Upload-Expires", None), ("Tus-Resumable", Some("1.0.0"))], None),
        c("creation past Tus-Max-Size is 413", Nothing, "POST", "/tus/", Alice,
          &[V, ("Upload-Length", "1000001")], b"", 413, &[], None),
        c("creation without a length is 400", Nothing, "POST", "/tus/", Alice, &[V], b"", 400,
          &[], None),
        c("creation with a length and a deferred one is 400", Nothing, "POST", "/tus/", Alice,
          &[V, ("Upload-Length", "5"), ("Upload-Defer-Length", "1")], b"", 400, &[], None),
        c("creation with a bad length is 400", Nothing, "POST", "/tus/", Alice,
          &[V, ("Upload-Length", "-5")], b"", 400, &[], None),
        c("creation with bad metadata is 400", Nothing, "POST", "/tus/", Alice,
          &[V, ("Upload-Length", "5"), ("Upload-Metadata", "filename !!!")], b"", 400, &[], None),
        c("creation-defer-length", Nothing, "POST", "/tus/", Alice,
          &[V, ("Upload-Defer-Length", "1")], b"", 201, &[("Location", None)], None),
        c("creation-with-upload", Nothing, "POST", "/tus/", Alice,
          &[V, STREAM, ("Upload-Length", "11")], b"hello", 201,
          &[("Location", None), ("Upload-Offset", Some("5"))], None),
        c("creation with a body of another type is 415", Nothing, "POST", "/tus/", Alice,
          &[V, ("Content-Type", "text/plain"), ("Upload-Length", "11")], b"hello", 415, &[],
          None),
        c("head", Hello, "HEAD", "{id}", Alice, &[V], b"", 200,
          &[("Upload-Offset", Some("5")), ("Upload-Length", Some("11")),
            ("Cache-Control", Some("no-store")), ("Upload-Expires", None)], Some(5)),
        c("head of a deferred upload", Deferred, "HEAD", "{id}", Alice, &[V], b"", 200,
          &[("Upload-Offset", Some("0")), ("Upload-Defer-Length", Some("1"))], Some(0)),
        c("head of an unknown upload is 404", Nothing, "HEAD", "/tus/01ARZ3NDEKTSV4RRFFQ69G5FAV",
          Alice, &[V], b"", 404, &[], None),
        c("head without Tus-Resumable is 412", Hello, "HEAD", "{id}", Alice, &[], b"", 412,
          &[], Some(5)),
        c("head by another account is 404", Hello, "HEAD", "{id}", Bob, &[V], b"", 404, &[],
          Some(5)),
        c("patch", Hello, "PATCH", "{id}", Alice, &[V, STREAM, ("Upload-Offset", "5")],
          b" worl", 204, &[("Upload-Offset", Some("10"))], Some(10)),
        c("patch at another offset is 409", Hello, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "3")], b"lo", 409, &[], Some(5)),
        c("patch of another type is 415", Hello, "PATCH", "{id}", Alice,
          &[V, ("Content-Type", "application/octet-stream"), ("Upload-Offset", "5")], b"x",
          415, &[], Some(5)),
        c("patch without Upload-Offset is 400", Hello, "PATCH", "{id}", Alice, &[V, STREAM],
          b"x", 400, &[], Some(5)),
        c("patch without Tus-Resumable is 412", Hello, "PATCH", "{id}", Alice,
          &[STREAM, ("Upload-Offset", "5")], b"x", 412, &[("Tus-Version", Some("1.0.0"))],
          Some(5)),
        c("patch past the length is 413", Hello, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "5")], b"0123456789", 413, &[], Some(5)),
        c("patch by another account is 404", Hello, "PATCH", "{id}", Bob,
          &[V, STREAM, ("Upload-Offset", "5")], b"x", 404, &[], Some(5)),
        c("patch with a sha1 checksum", Hello, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "5"), ("Upload-Checksum", HELLO_SHA1)], b"hello", 204,
          &[("Upload-Offset", Some("10"))], Some(10)),
        c("patch with a sha256 checksum", Hello, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "5"), ("Upload-Checksum", HELLO_SHA256)], b"hello",
          204, &[("Upload-Offset", Some("10"))], Some(10)),
        c("patch with a wrong checksum is 460 and keeps nothing", Hello, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "5"), ("Upload-Checksum", HELLO_SHA1)], b"hellO", 460,
          &[], Some(5)),
        c("patch with an unsupported checksum is 400", Hello, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "5"), ("Upload-Checksum", "md5 XUFAKrxLKna5cZ2REBfFkg==")],
          b"hello", 400, &[], Some(5)),
        c("patch setting a deferred length", Deferred, "PATCH", "{id}", Alice,
          &[V, STREAM, ("Upload-Offset", "0"), ("Upload-Length", "20")], b"hello", 204,
          &[("Upload-Offset", Some("5")), ("Upload-Length", Some("20"))], Some(5)),
        c("patch setting a deferred length past Tus-Max-Size is 413", Deferred, "PATCH", "{id}",
          Alice, &[V, STREAM, ("Upload-Offset", "0"), ("Upload-Length", "1000001")], b"hello",
          413, &[], Some(0)),
        c("patch of an unknown upload is 404", Nothing, "PATCH", "/tus/01ARZ3NDEKTSV4RRFFQ69G5FAV",
          Alice, &[V, STREAM, ("Upload-Offset", "0")], b"x", 404, &[], None),
        c("termination", Hello, "DELETE", "{id}", Alice, &[V], b"", 204, &[], None),
        c("termination by another account is 404", Hello, "DELETE", "{id}", Bob, &[V], b"", 404,
          &[], Some(5)),
        c("get before completion is 409", Hello, "GET", "{id}", Alice, &[V], b"", 409, &[],
          Some(5)),
        c("an unknown method is 405", Hello, "PUT", "{id}", Alice, &[V], b"", 405, &[], Some(5)),
    ]
}

#[test]
fn tusd_protocol_cases() {
    let s = Server::start_with(&[("DEPOT_TUS_MAX_SIZE", &MAX.to_string())]);
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let mut failures = Vec::new();
    for case in cases() {
        let path = match case.given {
            Given::Nothing => None,
            Given::Hello => {
                let p = create(&s, &alice, Some(11), &[]);
                assert_eq!(patch(&s, &alice, &p, 0, b"hello").status(), 204);
                Some(p)
            }
            Given::Deferred => Some(create(&s, &alice, None, &[])),
        };
        let target = match &path {
            Some(p) => case.path.replace("{id}", p),
            None => case.path.to_string(),
        };
        let who = match case.who {
            Who::Alice => Some(alice.as_str()),
            Who::Bob => Some(bob.as_str()),
            Who::Nobody => None,
        };
        let r = tus(&s, case.method, &target, who, case.headers, case.body);
        let status = r.status().as_u16();
        let mut wrong = Vec::new();
        if status != case.status {
            wrong.push(format!("status {status}, want {}", case.status));
        }
        for (name, want) in case.expect {
            match (header(&r, name), want) {
                (None, _) => wrong.push(format!("no {name}")),
                (Some(got), Some(want)) if got != *want => {
                    wrong.push(format!("{name}: {got:?}, want {want:?}"))
                }
                _ => {}
            }
        }
        if case.method != "HEAD" && status >= 400 {
            // Errors keep depot's JSON shape, with the tus header on them.
            let tus_header = header(&r, "Tus-Resumable");
            let body: Value = r.json().unwrap_or(Value::Null);
            if body["error"]["code"].as_str().is_none() || body["error"]["message"].is_null() {
                wrong.push(format!("error body {body}"));
            }
            if tus_header.as_deref() != Some("1.0.0") {
                wrong.push("no Tus-Resumable on the error".into());
            }
        }
        if let (Some(p), Some(want)) = (&path, case.offset_after) {
            let got = offset(&s, &alice, p);
            if got != want {
                wrong.push(format!("offset afterwards {got}, want {want}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}", case.name, wrong.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn completion_makes_the_file_post_upload_would() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let data = bytes(300_000, 7);
    let meta = format!(
        "filename {},filetype {},directory {},camera {}",
        b64("holiday.bin"),
        b64("application/x-holiday"),
        b64("/trips/2026"),
        b64("x100")
    );
    let len = data.len() as u64;
    let path = create(&s, &alice, Some(len), &[("Upload-Metadata", &meta)]);
    // HEAD echoes the metadata; nothing is a File yet.
    let r = tus(&s, "HEAD", &path, Some(&alice), &[V], b"");
    assert_eq!(
        header(&r, "Upload-Metadata").as_deref(),
        Some(meta.as_str())
    );
    let (status, listing) = {
        let r = s.get("/files?directory=/trips/2026", Some(&alice));
        (r.status(), r.text().unwrap())
    };
    assert!(
        status != 200 || !listing.contains("holiday.bin"),
        "{listing}"
    );

    let r = patch(&s, &alice, &path, 0, &data[..100_000]);
    assert_eq!(r.status(), 204);
    assert!(header(&r, "Depot-File-Id").is_none());
    let r = patch(&s, &alice, &path, 100_000, &data[100_000..]);
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "Upload-Offset"), Some(len.to_string()));
    let fid = header(&r, "Depot-File-Id").expect("the last PATCH names the File");
    let url = header(&r, "Depot-File-Url").expect("and its path");

    // GET on the upload URL: the File, in Hypi's shape.
    let r = tus(&s, "GET", &path, Some(&alice), &[V], b"");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "Depot-File-Id").as_deref(), Some(fid.as_str()));
    let file: Value = r.json().unwrap();
    assert_eq!(file["hypi"]["id"], fid.as_str(), "{file}");
    assert_eq!(file["url"]["path"], url.as_str(), "{file}");
    assert_eq!(file["name"], "holiday.bin");
    assert_eq!(file["directory"], "/trips/2026");
    assert_eq!(file["size"], len);
    assert_eq!(file["type"], "application/x-holiday", "{file}");

    // The same keys as the File POST /upload/** makes.
    let posted = s.upload_one(&alice, "other.bin", &data);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&file), keys(&posted));
    // Same bytes, one blob.
    assert_eq!(s.blob_count(), 1);

    let got = s.get(&url, Some(&alice));
    assert_eq!(got.status(), 200);
    assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(&data));
    // The parts are gone once the File is made.
    assert!(walk(&s.data.join("parts")).is_empty());
    // Bob sees no File through the upload URL.
    let bob = s.token("bob", INSTANCE, false);
    assert_eq!(tus(&s, "GET", &path, Some(&bob), &[V], b"").status(), 404);
}

/// `Upload-Expires` is the creation deadline: PATCHes do not move it (as tusd).
#[test]
fn patches_do_not_extend_upload_expires() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let path = create(&s, &alice, Some(10), &[]);
    let expires = |r: &Response| header(r, "Upload-Expires").expect("Upload-Expires");
    let before = expires(&tus(&s, "HEAD", &path, Some(&alice), &[V], b""));
    // Past a second boundary, so an extension would show in the HTTP date.
    std::thread::sleep(Duration::from_millis(1100));
    let r = patch(&s, &alice, &path, 0, b"abcd");
    assert_eq!(r.status(), 204);
    assert_eq!(expires(&r), before, "the PATCH answer keeps the deadline");
    let after = expires(&tus(&s, "HEAD", &path, Some(&alice), &[V], b""));
    assert_eq!(after, before);
}

#[test]
fn an_empty_upload_is_a_file_at_once() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let r = tus(
        &s,
        "POST",
        "/tus/",
        Some(&alice),
        &[
            V,
            ("Upload-Length", "0"),
            ("Upload-Metadata", &format!("filename {}", b64("e.txt"))),
        ],
        b"",
    );
    assert_eq!(r.status(), 201);
    let url = header(&r, "Depot-File-Url").expect("an empty upload is complete");
    assert_eq!(s.get(&url, Some(&alice)).bytes().unwrap().len(), 0);
}

#[test]
fn termination_removes_the_upload_and_its_parts() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let path = create(&s, &alice, Some(10), &[]);
    assert_eq!(patch(&s, &alice, &path, 0, b"abcd").status(), 204);
    assert!(!walk(&s.data.join("parts")).is_empty());
    assert_eq!(
        tus(&s, "DELETE", &path, Some(&alice), &[V], b"").status(),
        204
    );
    assert_eq!(
        tus(&s, "HEAD", &path, Some(&alice), &[V], b"").status(),
        404
    );
    assert_eq!(patch(&s, &alice, &path, 4, b"efgh").status(), 404);
    assert_eq!(
        tus(&s, "DELETE", &path, Some(&alice), &[V], b"").status(),
        404
    );
    assert!(walk(&s.data.join("parts")).is_empty());
    assert_eq!(s.temp_files(), 0);
}

#[test]
fn an_expired_upload_answers_410_and_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(
        dir.path(),
        &[
            ("DEPOT_TUS_EXPIRY_SECS", "1"),
            ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "3600"),
        ],
        &[],
    )
    .unwrap();
    let alice = s.token("alice", INSTANCE, false);
    let path = create(&s, &alice, Some(10), &[]);
    assert_eq!(patch(&s, &alice, &path, 0, b"abcd").status(), 204);
    std::thread::sleep(Duration::from_millis(1200));
    let r = patch(&s, &alice, &path, 4, b"efgh");
    assert_eq!(r.status(), 410);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "EXPIRED");
    assert_eq!(
        tus(&s, "HEAD", &path, Some(&alice), &[V], b"").status(),
        410
    );
    // `depot gc` sweeps expired sessions: the upload and its parts go.
    s.stop();
    let (ok, out) = depot(&["gc"], dir.path());
    assert!(ok, "{out}");
    assert!(walk(&dir.path().join("parts")).is_empty(), "{out}");
}

#[test]
fn concatenation_of_partial_uploads() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let partial = [("Upload-Concat", "partial")];
    let a = create(&s, &alice, Some(3), &partial);
    let b = create(&s, &alice, Some(4), &partial);
    assert_eq!(patch(&s, &alice, &b, 0, b"defg").status(), 204);
    // A partial is never a File.
    assert_eq!(tus(&s, "GET", &b, Some(&alice), &[V], b"").status(), 409);
    let r = tus(&s, "HEAD", &b, Some(&alice), &[V], b"");
    assert_eq!(header(&r, "Upload-Concat").as_deref(), Some("partial"));
    let fin = format!("final;{a} {b}");
    let meta = format!("filename {}", b64("joined.txt"));
    let final_headers = [
        V,
        ("Upload-Concat", fin.as_str()),
        ("Upload-Metadata", &meta),
    ];
    // `a` is not complete yet.
    let r = tus(&s, "POST", "/tus/", Some(&alice), &final_headers, b"");
    assert_eq!(r.status(), 400);
    assert_eq!(patch(&s, &alice, &a, 0, b"abc").status(), 204);
    // Bob may not join Alice's partials.
    let r = tus(&s, "POST", "/tus/", Some(&bob), &final_headers, b"");
    assert_eq!(r.status(), 400);
    // Absolute URLs work as well as paths.
    let fin_abs = format!("final;{} {}", s.url(&a), s.url(&b));
    let r = tus(
        &s,
        "POST",
        "/tus/",
        Some(&alice),
        &[V, ("Upload-Concat", &fin_abs), ("Upload-Metadata", &meta)],
        b"",
    );
    assert_eq!(r.status(), 201);
    let url = header(&r, "Depot-File-Url").expect("a final upload is complete at once");
    assert_eq!(header(&r, "Upload-Offset").as_deref(), Some("7"));
    let loc = header(&r, "Location").unwrap();
    let fpath = loc.strip_prefix(&s.base).unwrap().to_string();
    assert_eq!(s.get(&url, Some(&alice)).text().unwrap(), "abcdefg");
    let r = tus(&s, "HEAD", &fpath, Some(&alice), &[V], b"");
    assert_eq!(header(&r, "Upload-Concat"), Some(format!("final;{a} {b}")));
    // A final upload takes no PATCH.
    assert_eq!(patch(&s, &alice, &fpath, 7, b"x").status(), 403);
    // The final upload with a length is refused.
    let r = tus(
        &s,
        "POST",
        "/tus/",
        Some(&alice),
        &[V, ("Upload-Concat", fin.as_str()), ("Upload-Length", "7")],
        b"",
    );
    assert_eq!(r.status(), 400);
}

/// Writes a PATCH's head and the first `sent` bytes of a `total`-byte body, and keeps the
/// connection open (the body unfinished).
fn open_patch(
    s: &Server,
    token: &str,
    path: &str,
    offset: u64,
    total: usize,
    sent: &[u8],
) -> TcpStream {
    let mut c = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {token}\r\nhypi-domain: {INSTANCE}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: {offset}\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        s.addr
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(sent).unwrap();
    c.flush().unwrap();
    c
}

#[test]
fn concurrent_patches_are_refused_not_interleaved() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let path = create(&s, &alice, Some(20), &[]);
    // A PATCH whose body is half sent, and meanwhile another one at the same offset. Whichever
    // holds the upload first wins; the other is 409 (busy, or its offset is gone). Usually the
    // first holds it (the pause only makes that the likely order; the checks hold either way).
    let mut first = open_patch(&s, &alice, &path, 0, 10, b"01234");
    std::thread::sleep(Duration::from_millis(200));
    let second = patch(&s, &alice, &path, 0, b"ABCDEFGHIJ");
    let second_status = second.status().as_u16();
    let second_text = second.text().unwrap();
    first.write_all(b"56789").unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).ok();
    let first_status: u16 = answer[9..12].parse().unwrap();
    let mut statuses = [first_status, second_status];
    statuses.sort();
    assert_eq!(statuses, [204, 409], "{answer}\n{second_text}");
    let winner = if first_status == 204 {
        "0123456789"
    } else {
        "ABCDEFGHIJ"
    };
    if second_status == 409 {
        assert!(
            second_text.contains("in progress") || second_text.contains("OFFSET_MISMATCH"),
            "{second_text}"
        );
    }
    assert_eq!(offset(&s, &alice, &path), 10);
    assert_eq!(patch(&s, &alice, &path, 10, b"abcdefghij").status(), 204);
    let r = tus(&s, "GET", &path, Some(&alice), &[V], b"");
    let file: Value = r.json().unwrap();
    let url = file["url"]["path"].as_str().unwrap();
    assert_eq!(
        s.get(url, Some(&alice)).text().unwrap(),
        format!("{winner}abcdefghij")
    );
}

#[test]
fn a_dropped_connection_keeps_what_arrived_and_a_restart_keeps_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let alice = s.token("alice", INSTANCE, false);
    let data = bytes(64 * 1024, 3);
    let path = create(&s, &alice, Some(data.len() as u64), &[]);
    assert_eq!(patch(&s, &alice, &path, 0, &data[..1000]).status(), 204);
    // 40,000 of the declared 63,536 bytes, then the client goes away.
    let c = open_patch(
        &s,
        &alice,
        &path,
        1000,
        data.len() - 1000,
        &data[1000..41_000],
    );
    drop(c);
    s.eventually("the cut PATCH's bytes are kept", || {
        offset(&s, &alice, &path) == 41_000
    });

    // A restart (kill, not a clean stop) keeps the offset: the bytes were fsynced.
    s.stop();
    let s2 = Server::spawn(dir.path(), &[], &[]).expect("restart");
    assert_eq!(offset(&s2, &alice, &path), 41_000);
    let r = patch(&s2, &alice, &path, 41_000, &data[41_000..]);
    assert_eq!(r.status(), 204);
    let url = header(&r, "Depot-File-Url").unwrap();
    assert_eq!(
        sha256_hex(&s2.get(&url, Some(&alice)).bytes().unwrap()),
        sha256_hex(&data)
    );
}

#[test]
fn chunks_of_one_size_are_placed_and_a_cut_chunk_and_a_restart_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let alice = s.token("alice", INSTANCE, false);
    let mib = 1024 * 1024;
    // Uploads in 2 MiB PATCHes (the first fixes where each goes in one staging file).
    let data = bytes(8 * mib + 1234, 11);
    let whole = create(&s, &alice, Some(data.len() as u64), &[]);
    let mut at = 0;
    let mut last = None;
    for chunk in data.chunks(2 * mib) {
        let r = patch(&s, &alice, &whole, at as u64, chunk);
        assert_eq!(r.status(), 204);
        at += chunk.len();
        last = Some(r);
    }
    let first_url = header(last.as_ref().unwrap(), "Depot-File-Url").unwrap();
    let first = data;
    assert_eq!(
        sha256_hex(&s.get(&first_url, Some(&alice)).bytes().unwrap()),
        sha256_hex(&first)
    );

    // The same with the second PATCH cut part way and the server killed after it: the cut
    // chunk's bytes stay where they were written, the chunks after it are shifted (stored as
    // parts of their own where they no longer fit), and the File has exactly the bytes sent.
    let data = bytes(8 * mib + 1234, 12);
    let path = create(&s, &alice, Some(data.len() as u64), &[]);
    assert_eq!(patch(&s, &alice, &path, 0, &data[..2 * mib]).status(), 204);
    let cut = 3 * mib + 7;
    let c = open_patch(
        &s,
        &alice,
        &path,
        2 * mib as u64,
        2 * mib,
        &data[2 * mib..cut],
    );
    drop(c);
    s.eventually("the cut PATCH's bytes are kept", || {
        offset(&s, &alice, &path) == cut as u64
    });
    s.stop();
    let s2 = Server::spawn(dir.path(), &[], &[]).expect("restart");
    assert_eq!(offset(&s2, &alice, &path), cut as u64);
    let next = cut + 2 * mib;
    assert_eq!(
        patch(&s2, &alice, &path, cut as u64, &data[cut..next]).status(),
        204
    );
    let r = patch(&s2, &alice, &path, next as u64, &data[next..]);
    assert_eq!(r.status(), 204);
    let url = header(&r, "Depot-File-Url").unwrap();
    assert_eq!(
        sha256_hex(&s2.get(&url, Some(&alice)).bytes().unwrap()),
        sha256_hex(&data)
    );
    // And the first File is still whole after the restart.
    assert_eq!(
        sha256_hex(&s2.get(&first_url, Some(&alice)).bytes().unwrap()),
        sha256_hex(&first)
    );
}

#[test]
fn cors_preflight_and_exposed_headers() {
    let origin = "http://app.example";
    let s = Server::start_with(&[("DEPOT_CORS_ALLOWED_ORIGINS", origin)]);
    let alice = s.token("alice", INSTANCE, false);
    let path = create(&s, &alice, Some(10), &[]);
    let r = tus(
        &s,
        "OPTIONS",
        &path,
        None,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "PATCH"),
            (
                "Access-Control-Request-Headers",
                "authorization,hypi-domain,tus-resumable,upload-offset,content-type,upload-checksum",
            ),
        ],
        b"",
    );
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "Access-Control-Allow-Origin").as_deref(),
        Some(origin)
    );
    let methods = header(&r, "Access-Control-Allow-Methods").unwrap();
    assert!(
        methods.contains("PATCH") && methods.contains("HEAD"),
        "{methods}"
    );
    let r = tus(
        &s,
        "HEAD",
        &path,
        Some(&alice),
        &[V, ("Origin", origin)],
        b"",
    );
    assert_eq!(r.status(), 200);
    let exposed = header(&r, "Access-Control-Expose-Headers").unwrap();
    for h in [
        "Upload-Offset",
        "Upload-Length",
        "Location",
        "Tus-Resumable",
        "Upload-Expires",
        "Depot-File-Id",
    ] {
        assert!(exposed.contains(h), "{h} not in {exposed}");
    }
    // Another origin is refused its preflight.
    let r = tus(
        &s,
        "OPTIONS",
        &path,
        None,
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "PATCH"),
        ],
        b"",
    );
    assert_eq!(r.status(), 403);
}

fn tus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus")
}

/// Whether node and tus-js-client are here; without them the test fails under
/// `DEPOT_REQUIRE_SERVICES=1` (CI), else it says SKIPPED and passes.
fn client_available() -> bool {
    let why = if Command::new("node").arg("--version").output().is_err() {
        Some("node is not installed".to_string())
    } else if !tus_dir().join("node_modules/tus-js-client").exists() {
        Some("tests/tus/node_modules is missing (npm ci --prefix tests/tus)".to_string())
    } else {
        None
    };
    let Some(why) = why else { return true };
    if std::env::var("DEPOT_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("DEPOT_REQUIRE_SERVICES=1 but the tus client test cannot run: {why}");
    }
    eprintln!("SKIPPED: tus-js-client test: {why}");
    false
}

#[test]
fn tus_js_client_resumes_an_aborted_32_mib_upload() {
    if !client_available() {
        return;
    }
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("big.bin");
    let data = bytes(32 * 1024 * 1024, 11);
    std::fs::write(&file, &data).unwrap();
    let chunk = 5 * 1024 * 1024u64;
    let cfg = serde_json::json!({
        "endpoint": s.url("/tus/"),
        "token": alice,
        "domain": INSTANCE,
        "file": file,
        "name": "big.bin",
        "directory": "/node",
        "chunkSize": chunk,
        // A proxy cuts the connection mid-way through the third chunk.
        "abortAfter": 2 * chunk + chunk / 2,
        "state": work.path().join("tus-urls.json"),
    });
    let out = Command::new("node")
        .arg(tus_dir().join("upload.mjs"))
        .arg(cfg.to_string())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log.lock().unwrap()
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let acked = report["acked"].as_u64().unwrap();
    let head = report["headOffset"].as_u64().unwrap();
    // Two chunks were acknowledged; the server kept bytes of the cut third one beyond them.
    assert_eq!(acked, 2 * chunk, "{report}");
    assert!(head > acked && head < 3 * chunk, "{report}");
    assert_eq!(report["previous"], 1, "{report}");
    // The resumed upload started at the server's offset, not at a chunk boundary.
    assert_eq!(report["firstAcceptedAfterResume"], head + chunk, "{report}");
    assert_eq!(report["resumedUrl"], report["url"], "{report}");
    let url = report["fileUrl"].as_str().expect("Depot-File-Url");
    let got = s.get(url, Some(&alice));
    assert_eq!(got.status(), 200);
    let got = got.bytes().unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    // The upload URL answers the File.
    // The URL is the proxy's; its path is the upload's.
    let full = report["url"].as_str().unwrap();
    let upath = full[full.find("/tus/").unwrap()..].to_string();
    let file: Value = tus(&s, "GET", &upath, Some(&alice), &[V], b"")
        .json()
        .unwrap();
    assert_eq!(file["hypi"]["id"], report["fileId"]);
    assert_eq!(file["directory"], "/node");
}
