//! Foir's two-step upload over real HTTP: `createFileUpload` -> `PUT uploadUrl` (with curl,
//! exactly as Foir's docs write it) -> `confirmFileUpload`; and every way the URL or the body
//! can be wrong.

mod common;
use common::*;
use serde_json::json;

fn put_path(url: &str) -> String {
    // The path and query of an absolute URL.
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_string()
}

#[test]
fn foir_flow_with_curl_confirm_and_file_query() {
    let s = Server::start();
    let t = s.token("drew", INSTANCE, false);
    let hero = jpeg(64, 48);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hero.jpg"), &hero).unwrap();
    let (id, upload_url) = s
        .create_file_upload(
            &t,
            "hero.jpg",
            "image/jpeg",
            hero.len(),
            r#"folder: "campaigns/spring-26" metadata: { alt: "Field of barley at sunrise", source: "drew@bobscountrybunker.com" }"#,
        )
        .unwrap();
    assert!(upload_url.starts_with(&s.base), "{upload_url}");

    // Foir's command, as written.
    let (status, body) = curl(
        &[
            "-X",
            "PUT",
            &upload_url,
            "-H",
            "Content-Type: image/jpeg",
            "--data-binary",
            "@hero.jpg",
        ],
        dir.path(),
    );
    assert_eq!(status, 200, "{body}");
    // Not a File before confirmation.
    assert!(listing(&s, &t).is_empty());

    let v = s.confirm_file_upload(&t, &id);
    let f = &v["data"]["confirmFileUpload"];
    assert_eq!(f["filename"], "hero.jpg", "{v}");
    assert_eq!(f["mimeType"], "image/jpeg");
    assert_eq!(f["size"], hero.len());
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(64), Some(48))
    );
    let hash = f["blurhash"].as_str().expect("a blurhash");
    assert_eq!(hash.len(), 28, "4x3 components: {hash}");
    assert_eq!(f["alt"], "Field of barley at sunrise");
    assert_eq!(f["metadata"]["source"], "drew@bobscountrybunker.com");
    assert_eq!(f["directory"], "/campaigns/spring-26");
    assert!(f["createdAt"].as_str().unwrap().ends_with('Z'));
    let url = f["url"].as_str().unwrap();
    let got = s
        .client
        .get(url)
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().unwrap().as_ref(), hero.as_slice());

    // Idempotent: the same File again, and still one File.
    let again = s.confirm_file_upload(&t, &id);
    assert_eq!(again["data"]["confirmFileUpload"]["id"], f["id"], "{again}");
    assert_eq!(listing(&s, &t).len(), 1);

    // file(id:) in the same shape.
    let q = s.graphql(
        Some(&t),
        &format!(
            r#"{{ file(id: {:?}) {{ id filename mimeType size url width height blurhash alt createdAt metadata }} }}"#,
            f["id"].as_str().unwrap()
        ),
    );
    assert_eq!(q["data"]["file"]["blurhash"], f["blurhash"], "{q}");
    assert_eq!(q["data"]["file"]["url"], f["url"]);

    // Replay: a second PUT to the used URL is refused and the stored bytes stay.
    let other = jpeg(8, 8);
    std::fs::write(dir.path().join("other.jpg"), &other).unwrap();
    let (status, body) = curl(
        &[
            "-X",
            "PUT",
            &upload_url,
            "-H",
            "Content-Type: image/jpeg",
            "--data-binary",
            "@hero.jpg",
        ],
        dir.path(),
    );
    assert!(status == 409 || status == 410, "{status} {body}");
    let got = s
        .client
        .get(url)
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(got.bytes().unwrap().as_ref(), hero.as_slice());
}

#[test]
fn rest_routes_for_callers_without_graphql() {
    let s = Server::start();
    let t = s.token("drew", INSTANCE, false);
    let data = b"plain notes\n".to_vec();
    let r = s
        .client
        .post(s.url("/uploads/presigned"))
        .header("Authorization", &t)
        .json(&json!({"filename": "notes.txt", "mimeType": "text/plain", "size": data.len()}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let id = v["uploadId"].as_str().unwrap();
    let early = s
        .client
        .post(s.url(&format!("/uploads/{id}/confirm")))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(json_error(early).1, "UPLOAD_INCOMPLETE");
    let put = s.put_bytes(v["uploadUrl"].as_str().unwrap(), "text/plain", &data);
    assert_eq!(put.status(), 200);
    let r = s
        .client
        .post(s.url(&format!("/uploads/{id}/confirm")))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let f: Value = r.json().unwrap();
    assert_eq!(f["filename"], "notes.txt");
    assert_eq!(f["blurhash"], Value::Null);
    assert_eq!(f["width"], Value::Null);
    // Unauthenticated creation is refused.
    let anon = s
        .client
        .post(s.url("/uploads/presigned"))
        .json(&json!({"filename": "a", "mimeType": "text/plain", "size": 1}))
        .send()
        .unwrap();
    assert_eq!(anon.status(), 401);
}

#[test]
fn too_large_before_any_byte_and_names_sanitised() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "1000")]);
    let t = s.token("drew", INSTANCE, false);
    let err = s
        .create_file_upload(&t, "big.bin", "application/octet-stream", 1001, "")
        .unwrap_err();
    assert_eq!(Server::gql_code(&err), "FILE_TOO_LARGE", "{err}");
    let data = b"x".repeat(10);
    let (id, url) = s
        .create_file_upload(&t, "../my hero?<1>.txt", "text/plain", data.len(), "")
        .unwrap();
    assert_eq!(s.put_bytes(&url, "text/plain", &data).status(), 200);
    let f = s.confirm_file_upload(&t, &id);
    assert_eq!(
        f["data"]["confirmFileUpload"]["filename"], "my-hero--1-.txt",
        "{f}"
    );
}

#[test]
fn signature_instance_expiry_and_confirm_rules() {
    let s = Server::start_with(&[("DEPOT_UPLOAD_URL_TTL_SECS", "1")]);
    let t = s.token("drew", INSTANCE, false);
    let data = b"hello".to_vec();
    let (id, url) = s
        .create_file_upload(&t, "a.txt", "text/plain", data.len(), "")
        .unwrap();

    // Tampered signature, expiry or session: 403 before anything is read.
    let last = url.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let (st, code, _) = json_error(s.put_bytes(&flipped, "text/plain", &data));
    assert_eq!((st, code.as_str()), (403, "INVALID_SIGNATURE"));
    let longer = url.replace("expires=", "expires=9");
    assert_eq!(
        json_error(s.put_bytes(&longer, "text/plain", &data)).1,
        "INVALID_SIGNATURE"
    );
    let unsigned = url.split('?').next().unwrap().to_string();
    assert_eq!(
        json_error(s.put_bytes(&unsigned, "text/plain", &data)).0,
        403
    );

    // Wrong instance: the instance in the URL is signed too.
    let path = put_path(&url);
    let inst = path.split('/').nth(3).unwrap();
    let other = url.replace(inst, "01F322XSV13R9VAGJXW351PVBT");
    assert_eq!(
        json_error(s.put_bytes(&other, "text/plain", &data)).1,
        "INVALID_SIGNATURE"
    );

    // Confirm from another account or another instance: no such session.
    let mallory = s.token("mallory", INSTANCE, false);
    let v = s.confirm_file_upload(&mallory, &id);
    assert_eq!(Server::gql_code(&v), "NOT_FOUND", "{v}");
    let elsewhere = s.token("drew", "other.test", false);
    let r = s
        .client
        .post(s.url(&format!("/uploads/{id}/confirm")))
        .header("Authorization", &elsewhere)
        .send()
        .unwrap();
    assert_eq!(json_error(r).1, "NOT_FOUND");
    // Confirm before the PUT: a clear error, not a File.
    let v = s.confirm_file_upload(&t, &id);
    assert_eq!(Server::gql_code(&v), "UPLOAD_INCOMPLETE", "{v}");

    // Expired (a 1 s TTL): 410 with its own code.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (st, code, _) = json_error(s.put_bytes(&url, "text/plain", &data));
    assert_eq!((st, code.as_str()), (410, "EXPIRED"));
    assert_eq!(s.blob_count(), 0);
}

#[test]
fn length_and_type_are_checked() {
    let s = Server::start();
    let t = s.token("drew", INSTANCE, false);
    let img = jpeg(16, 16);
    let (id, url) = s
        .create_file_upload(&t, "p.jpg", "image/jpeg", img.len(), "")
        .unwrap();

    // Header type differs from the declared one.
    let (st, code, _) = json_error(s.put_bytes(&url, "image/png", &img));
    assert_eq!((st, code.as_str()), (400, "CONTENT_TYPE_MISMATCH"));
    // The bytes are not what was declared (a PNG sent as image/jpeg).
    let mut png = png_3x2();
    png.resize(img.len(), 0);
    let (st, code, _) = json_error(s.put_bytes(&url, "image/jpeg", &png));
    assert_eq!((st, code.as_str()), (400, "CONTENT_MISMATCH"));
    // Shorter than declared.
    let (st, code, _) = json_error(s.put_bytes(&url, "image/jpeg", &img[..img.len() - 1]));
    assert_eq!((st, code.as_str()), (400, "LENGTH_MISMATCH"));
    // Longer than declared, chunked (no Content-Length to refuse up front): cut off as it
    // streams. The body is never ended, so an answer proves the server did not wait for it.
    let path = put_path(&url);
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let long = [img.clone(), b"trailing".to_vec()].concat();
    req.extend_from_slice(format!("{:x}\r\n", long.len()).as_bytes());
    req.extend_from_slice(&long);
    req.extend_from_slice(b"\r\n");
    let (st, text) = s.raw(&req);
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("LENGTH_MISMATCH"), "{text}");

    // Nothing was kept from the refused tries; the URL still takes the right body once.
    s.eventually("temp files removed", || s.temp_files() == 0);
    assert_eq!(s.blob_count(), 0);
    assert_eq!(
        s.put_bytes(&url, "image/jpeg; charset=binary", &img)
            .status(),
        200
    );
    let v = s.confirm_file_upload(&t, &id);
    assert_eq!(v["data"]["confirmFileUpload"]["width"], 16, "{v}");
}

#[test]
fn concurrent_confirms_make_one_file() {
    let s = Server::start();
    let t = s.token("drew", INSTANCE, false);
    let img = jpeg(32, 32);
    let (id, url) = s
        .create_file_upload(&t, "c.jpg", "image/jpeg", img.len(), "")
        .unwrap();
    assert_eq!(s.put_bytes(&url, "image/jpeg", &img).status(), 200);
    let ids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    let v = s.confirm_file_upload(&t, &id);
                    v["data"]["confirmFileUpload"]["id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{v}"))
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(listing(&s, &t).len(), 1);
    assert_eq!(s.blob_count(), 1);
}

#[test]
fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("drew", INSTANCE, false);
    let a = b"first file".to_vec();
    let b = b"second file".to_vec();
    let (id_a, url_a) = s
        .create_file_upload(&t, "a.txt", "text/plain", a.len(), "")
        .unwrap();
    let (id_b, url_b) = s
        .create_file_upload(&t, "b.txt", "text/plain", b.len(), "")
        .unwrap();
    assert_eq!(s.put_bytes(&url_b, "text/plain", &b).status(), 200);
    let old_base = s.base.clone();
    s.stop();
    // fsck counts the uploaded session's blob reference: consistent while it waits.
    let (ok, out) = depot(&["fsck"], dir.path());
    assert!(ok && out.contains("clean"), "{out}");

    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    // The new process listens on another ephemeral port; the signed path is what counts.
    let (url_a, url_b) = (
        url_a.replace(&old_base, &s.base),
        url_b.replace(&old_base, &s.base),
    );
    assert_eq!(s.put_bytes(&url_a, "text/plain", &a).status(), 200);
    assert_eq!(s.put_bytes(&url_b, "text/plain", &b).status(), 409);
    for (id, want) in [(&id_a, "a.txt"), (&id_b, "b.txt")] {
        let v = s.confirm_file_upload(&t, id);
        assert_eq!(v["data"]["confirmFileUpload"]["filename"], want, "{v}");
    }
    assert_eq!(listing(&s, &t).len(), 2);
}

#[test]
fn expired_sessions_are_swept_with_their_bytes() {
    let s = Server::start_with(&[
        // Long enough that the PUT lands before expiry on a loaded machine.
        ("DEPOT_UPLOAD_URL_TTL_SECS", "4"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let t = s.token("drew", INSTANCE, false);
    let data = bytes(5000, 7);
    let (id, url) = s
        .create_file_upload(&t, "x.bin", "application/octet-stream", data.len(), "")
        .unwrap();
    assert_eq!(
        s.put_bytes(&url, "application/octet-stream", &data)
            .status(),
        200
    );
    assert_eq!(s.blob_count(), 1);
    s.eventually("the sweep removes the unconfirmed bytes", || {
        s.blob_count() == 0
    });
    let v = s.confirm_file_upload(&t, &id);
    assert_eq!(Server::gql_code(&v), "NOT_FOUND", "{v}");
}

#[test]
fn gc_sweeps_expired_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        // Long enough that the PUT lands before expiry on a loaded machine.
        ("DEPOT_UPLOAD_URL_TTL_SECS", "4"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "3600"),
    ];
    let s = Server::spawn(dir.path(), &env, &[]).unwrap();
    let t = s.token("drew", INSTANCE, false);
    let data = bytes(3000, 9);
    let (_, url) = s
        .create_file_upload(&t, "x.bin", "application/octet-stream", data.len(), "")
        .unwrap();
    assert_eq!(
        s.put_bytes(&url, "application/octet-stream", &data)
            .status(),
        200
    );
    s.stop();
    std::thread::sleep(std::time::Duration::from_millis(4100));
    let (ok, out) = depot(&["gc"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("swept 1 expired upload sessions"), "{out}");
    assert_eq!(blob_files(dir.path()).len(), 0, "{out}");
}

#[test]
fn open_sessions_and_creation_rate_are_capped() {
    let s = Server::start_with(&[("DEPOT_MAX_OPEN_SESSIONS_PER_ACCOUNT", "2")]);
    let t = s.token("drew", INSTANCE, false);
    for _ in 0..2 {
        s.create_file_upload(&t, "a.txt", "text/plain", 1, "")
            .unwrap();
    }
    let err = s
        .create_file_upload(&t, "a.txt", "text/plain", 1, "")
        .unwrap_err();
    assert_eq!(Server::gql_code(&err), "TOO_MANY_REQUESTS", "{err}");
    // Another account has its own budget.
    let u = s.token("other", INSTANCE, false);
    assert!(s
        .create_file_upload(&u, "a.txt", "text/plain", 1, "")
        .is_ok());

    let s = Server::start_with(&[("DEPOT_MAX_SESSIONS_PER_MINUTE", "3")]);
    let t = s.token("drew", INSTANCE, false);
    for _ in 0..3 {
        s.create_file_upload(&t, "a.txt", "text/plain", 1, "")
            .unwrap();
    }
    let r = s
        .client
        .post(s.url("/temp-files"))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 429);
}

#[test]
fn url_key_is_its_own_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("drew", INSTANCE, false);
    let data = b"rotate me".to_vec();
    let (id, url) = s
        .create_file_upload(&t, "r.txt", "text/plain", data.len(), "")
        .unwrap();
    let old_base = s.base.clone();
    s.stop();
    // The URL key is generated into its own file, apart from the JWT secret.
    let key = std::fs::read_to_string(dir.path().join("url.key")).unwrap();
    let jwt = std::fs::read_to_string(dir.path().join("jwt.secret")).unwrap();
    assert!(key.trim().len() >= 32 && key.trim() != jwt.trim());

    // A new key: URLs signed with the old one verify only while it is listed as previous.
    let cfg = dir.path().join("depot.toml");
    let new_key = "n".repeat(40);
    std::fs::write(
        &cfg,
        format!("[auth]\nurl_signing_key = {new_key:?}\nprevious_url_signing_keys = []\n"),
    )
    .unwrap();
    let s = Server::spawn(dir.path(), &[], &["--config", cfg.to_str().unwrap()]).unwrap();
    let url = url.replace(&old_base, &s.base);
    assert_eq!(
        json_error(s.put_bytes(&url, "text/plain", &data)).1,
        "INVALID_SIGNATURE"
    );
    s.stop();
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nurl_signing_key = {new_key:?}\nprevious_url_signing_keys = [{:?}]\n",
            key.trim()
        ),
    )
    .unwrap();
    let s = Server::spawn(dir.path(), &[], &["--config", cfg.to_str().unwrap()]).unwrap();
    let base_before = url.split("/uploads/").next().unwrap().to_string();
    let url = url.replace(&base_before, &s.base);
    assert_eq!(s.put_bytes(&url, "text/plain", &data).status(), 200);
    let v = s.confirm_file_upload(&t, &id);
    assert_eq!(v["data"]["confirmFileUpload"]["filename"], "r.txt", "{v}");
    // New URLs are signed with the new key.
    let (_, fresh) = s
        .create_file_upload(&t, "n.txt", "text/plain", 1, "")
        .unwrap();
    assert_eq!(s.put_bytes(&fresh, "text/plain", b"n").status(), 200);
}

#[test]
fn oversized_metadata_is_refused() {
    let s = Server::start();
    let t = s.token("drew", INSTANCE, false);
    let r = s
        .client
        .post(s.url("/uploads/presigned"))
        .header("Authorization", &t)
        .json(
            &json!({"filename": "a.txt", "mimeType": "text/plain", "size": 1,
                      "metadata": {"note": "x".repeat(20_000)}}),
        )
        .send()
        .unwrap();
    assert_eq!(json_error(r).1, "BAD_REQUEST");
    let r = s
        .client
        .post(s.url("/uploads/presigned"))
        .header("Authorization", &t)
        .json(&json!({"filename": "a.txt", "mimeType": "text/plain", "size": -1}))
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 400);
}

#[test]
fn a_confirmed_upload_lands_in_real_directories_and_odd_media_types_are_refused() {
    let s = Server::start();
    let t = s.token("drew", INSTANCE, false);
    let data = bytes(1000, 3);
    let (id, url) = s
        .create_file_upload(
            &t,
            "x.bin",
            "application/octet-stream",
            data.len(),
            r#"folder: "photos/2024""#,
        )
        .unwrap();
    assert_eq!(
        s.put_bytes(&url, "application/octet-stream", &data)
            .status(),
        200
    );
    let v = s.confirm_file_upload(&t, &id);
    assert!(v["errors"].is_null(), "{v}");
    // Every ancestor is a directory record, and the File is listed in its folder.
    for path in ["/dirs/photos", "/dirs/photos/2024"] {
        let r = s
            .client
            .get(s.url(path))
            .header("Authorization", &t)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().unwrap();
        let want = if path.ends_with("2024") {
            "x.bin"
        } else {
            "2024"
        };
        assert!(body.to_string().contains(want), "{path}: {body}");
    }
    // A media type is `type/subtype` tokens, nothing more.
    for odd in ["text/html x", "text/h\"tml", "/html", "text/"] {
        let err = s.create_file_upload(&t, "y", odd, 10, "").unwrap_err();
        assert_eq!(Server::gql_code(&err), "BAD_REQUEST", "{odd}: {err}");
    }
}
