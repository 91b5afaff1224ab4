//! Amplience's single-part temp files over real HTTP: `createTempFileUploadUrl`, the upload
//! with `curl --upload-file` exactly as Amplience's docs write it, the tokenless download URL,
//! the size cap and removal at expiry.

mod common;
use common::*;

fn temp_urls(s: &Server, t: &str) -> (String, String) {
    let v = s.graphql(
        Some(t),
        "mutation { createTempFileUploadUrl { uploadUrl downloadUrl } }",
    );
    let o = &v["data"]["createTempFileUploadUrl"];
    (
        o["uploadUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string(),
        o["downloadUrl"].as_str().unwrap().to_string(),
    )
}

#[test]
fn upload_with_curl_then_download_without_a_token() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let (upload, download) = temp_urls(&s, &t);
    let img = jpeg(40, 30);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("woman-black-beret.jpg"), &img).unwrap();
    // Before the upload there is nothing to download.
    assert_eq!(s.client.get(&download).send().unwrap().status(), 404);

    // Amplience's command, as written (image/jpg is their spelling).
    let (status, body) = curl(
        &[
            "--upload-file",
            "woman-black-beret.jpg",
            "-H",
            "Content-Type: image/jpg",
            &upload,
        ],
        dir.path(),
    );
    assert_eq!(status, 200, "{body}");

    let r = s.client.get(&download).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.bytes().unwrap().as_ref(), img.as_slice());

    // Single use, and each URL does only its own job.
    let (status, _) = curl(
        &[
            "--upload-file",
            "woman-black-beret.jpg",
            "-H",
            "Content-Type: image/jpg",
            &upload,
        ],
        dir.path(),
    );
    assert_eq!(status, 409);
    assert_eq!(s.client.get(&upload).send().unwrap().status(), 405);
    let r = s.put_bytes(&download, "image/jpeg", &img);
    assert_eq!(r.status(), 405);
    // A tampered download URL is refused.
    let bad = download.replace("sig=", "sig=00");
    assert_eq!(
        json_error(s.client.get(&bad).send().unwrap()).1,
        "INVALID_SIGNATURE"
    );
}

#[test]
fn rest_route_type_checks_and_size_cap() {
    let s = Server::start_with(&[("DEPOT_TEMP_FILE_MAX_SIZE", "1000")]);
    let t = s.token("jon", INSTANCE, false);
    let r = s
        .client
        .post(s.url("/temp-files"))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let upload = v["uploadUrl"].as_str().unwrap();
    // Larger than the cap: 413 before the body.
    let (st, code, _) =
        json_error(s.put_bytes(upload, "application/octet-stream", &bytes(1001, 1)));
    assert_eq!((st, code.as_str()), (413, "FILE_TOO_LARGE"));
    // No Content-Type: refused with the type code.
    let r = s.client.put(upload).body(b"abc".to_vec()).send().unwrap();
    assert_eq!(json_error(r).1, "CONTENT_TYPE_MISMATCH");
    // A header that the bytes contradict.
    let (st, code, _) = json_error(s.put_bytes(upload, "image/png", &jpeg(4, 4)));
    assert_eq!((st, code.as_str()), (400, "CONTENT_MISMATCH"));
    s.eventually("temp files removed", || s.temp_files() == 0);
    assert_eq!(s.blob_count(), 0);
    assert_eq!(s.put_bytes(upload, "image/png", &png_3x2()).status(), 200);
    let r = s
        .client
        .get(v["downloadUrl"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), png_3x2().as_slice());
}

#[test]
fn gone_from_disk_after_expiry() {
    let s = Server::start_with(&[
        // Long enough that the PUT lands before expiry on a loaded machine.
        ("DEPOT_TEMP_FILE_TTL_SECS", "4"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let t = s.token("jon", INSTANCE, false);
    let (upload, download) = temp_urls(&s, &t);
    let data = bytes(4000, 3);
    assert_eq!(
        s.put_bytes(&upload, "application/octet-stream", &data)
            .status(),
        200
    );
    assert_eq!(s.blob_count(), 1);
    s.eventually("the expired temp file leaves the disk", || {
        s.blob_count() == 0
    });
    let (st, code, _) = json_error(s.client.get(&download).send().unwrap());
    assert_eq!((st, code.as_str()), (410, "EXPIRED"));
}
