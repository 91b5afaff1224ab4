//! Upload-session parts on the S3 blob store (moto_server from `scripts/services start`):
//! Amplience multipart (parts out of order, a re-sent part, a stale ETag refused, download equal
//! to the bytes sent) and tus (5 MiB PATCHes completed as one S3 multipart upload, small
//! PATCHes streamed, dedup) on a server with `[store] kind = "s3"`, and abandoned uploads whose
//! S3 multipart uploads the sweep aborts. Without `DEPOT_TEST_S3_ENDPOINT` each test prints
//! `SKIPPED: ...` (or fails under `DEPOT_REQUIRE_SERVICES=1`).

mod common;
use common::*;
use reqwest::blocking::Response;
use std::path::Path;

const MIB: usize = 1024 * 1024;
const MIN_PART: usize = 5 * MIB;

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// `createTempFileMultipartUploadUrl`: (part URLs, complete URL, download URL).
fn create_multipart(s: &Server, token: &str, filesize: usize) -> (Vec<String>, String, String) {
    let v = s.graphql(
        Some(token),
        &format!(
            "mutation {{ createTempFileMultipartUploadUrl(input: {{ filesize: {filesize} }}) \
             {{ uploadPartUrls completeUrl downloadUrl }} }}"
        ),
    );
    let o = &v["data"]["createTempFileMultipartUploadUrl"];
    let parts = o["uploadPartUrls"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    let url = |k: &str| o[k].as_str().unwrap().to_string();
    (parts, url("completeUrl"), url("downloadUrl"))
}

/// PUT a part: (status, ETag, body).
fn put_part(s: &Server, url: &str, data: &[u8]) -> (u16, String, String) {
    let r = s.client.put(url).body(data.to_vec()).send().expect("PUT");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, etag, r.text().unwrap_or_default())
}

fn complete(s: &Server, url: &str, parts: &[(u32, String)]) -> (u16, String) {
    let mut x = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        x.push_str(&format!(
            "<Part><ETag>{etag}</ETag><PartNumber>{n}</PartNumber></Part>"
        ));
    }
    x.push_str("</CompleteMultipartUpload>");
    let r = s.client.post(url).body(x).send().expect("POST complete");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

/// Incomplete multipart uploads in the bucket (S3's ListMultipartUploads).
fn uploads_in_progress(env: &S3Env) -> usize {
    let out = client()
        .get(format!("{}/{}?uploads", env.endpoint, env.bucket))
        .send()
        .unwrap()
        .text()
        .unwrap();
    out.matches("<UploadId>").count()
}

/// Objects under `tmp/` in the bucket.
fn temp_objects(env: &S3Env) -> usize {
    let out = client()
        .get(format!(
            "{}/{}?list-type=2&prefix=tmp/",
            env.endpoint, env.bucket
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    out.matches("<Key>").count()
}

/// Staged part files on the node (`<data>/s3-parts/parts/<session>/...`).
fn staged_files(data: &Path) -> usize {
    walk(&data.join("s3-parts").join("parts"))
        .iter()
        .filter(|p| p.is_file())
        .count()
}

fn server_on(env: &S3Env, data: &Path, extra: &[(&str, &str)]) -> Server {
    let vars = env.server_env();
    let mut all = env_refs(&vars);
    all.extend_from_slice(extra);
    Server::spawn(data, &all, &[]).expect("server on s3 starts")
}

#[test]
fn multipart_on_s3_takes_parts_out_of_order_and_resent_and_serves_the_bytes() {
    let Some(env) = s3_or_skip("multipart_on_s3_takes_parts_out_of_order_and_resent") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let s = server_on(&env, &data_dir, &[]);
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(3 * MIN_PART + 777, 21);
    let (parts, complete_url, download_url) = create_multipart(&s, &t, data.len());
    assert_eq!(parts.len(), 4);
    // Part 2 first with other bytes: sent to S3, then replaced there by the re-send below.
    let (st, wrong, body) = put_part(&s, &parts[1], &bytes(MIN_PART, 99));
    assert_eq!(st, 200, "{body}");
    assert_eq!(uploads_in_progress(&env), 1, "parts go to one S3 upload");
    let chunks: Vec<&[u8]> = data.chunks(MIN_PART).collect();
    let mut etags = Vec::new();
    for i in (0..chunks.len()).rev() {
        let (st, etag, body) = put_part(&s, &parts[i], chunks[i]);
        assert_eq!(st, 200, "{body}");
        assert_eq!(etag, format!("\"{}\"", md5_hex(chunks[i])));
        etags.push((i as u32 + 1, etag));
    }
    etags.reverse();
    assert_eq!(uploads_in_progress(&env), 1, "one S3 upload per session");
    // The replaced part's ETag no longer completes.
    let mut stale = etags.clone();
    stale[1].1 = wrong;
    let (st, body) = complete(&s, &complete_url, &stale);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("<Code>InvalidPart</Code>"), "{body}");
    let (st, body) = complete(&s, &complete_url, &etags);
    assert_eq!(st, 200, "{body}");
    let got = s.client.get(&download_url).send().unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().unwrap().to_vec() == data, "download differs");
    // The blob is at its content key, the upload is complete, nothing staged stays.
    assert_eq!(blobs_in(&env.store()), vec![sha256_hex(&data)]);
    assert_eq!(uploads_in_progress(&env), 0);
    assert!(
        !s.log.lock().unwrap().contains("S3 refused"),
        "completed on S3, not streamed"
    );
    s.eventually("the temp object and the staged parts go", || {
        temp_objects(&env) == 0 && staged_files(&data_dir) == 0
    });
    // The same bytes again: deduplicated against the stored blob (no second completion).
    let (parts, complete_url, download_url) = create_multipart(&s, &t, data.len());
    let mut etags = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let (st, etag, body) = put_part(&s, &parts[i], chunk);
        assert_eq!(st, 200, "{body}");
        etags.push((i as u32 + 1, etag));
    }
    let (st, body) = complete(&s, &complete_url, &etags);
    assert_eq!(st, 200, "{body}");
    assert_eq!(blobs_in(&env.store()), vec![sha256_hex(&data)]);
    let got = s.client.get(&download_url).send().unwrap();
    assert!(got.bytes().unwrap().to_vec() == data, "download differs");
    s.eventually("the aborted upload leaves nothing", || {
        uploads_in_progress(&env) == 0 && temp_objects(&env) == 0
    });
}

fn tus_req(s: &Server, method: &str, path: &str, token: &str, h: &[(&str, &str)]) -> Response {
    let mut req = s
        .client
        .request(method.parse().unwrap(), s.url(path))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .header("Tus-Resumable", "1.0.0");
    for (k, v) in h {
        req = req.header(*k, *v);
    }
    req.send().expect("tus request")
}

/// A tus upload of `data` in PATCHes of `chunk` bytes; the File's download path.
fn tus_upload(s: &Server, token: &str, data: &[u8], chunk: usize) -> String {
    let len = data.len().to_string();
    let r = tus_req(s, "POST", "/tus/", token, &[("Upload-Length", &len)]);
    assert_eq!(r.status(), 201);
    let loc = r.headers()["Location"].to_str().unwrap().to_string();
    let path = loc.strip_prefix(&s.base).unwrap().to_string();
    let mut last = None;
    for (i, piece) in data.chunks(chunk).enumerate() {
        let r = s
            .client
            .patch(s.url(&path))
            .header("Authorization", token)
            .header("hypi-domain", INSTANCE)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", (i * chunk).to_string())
            .body(piece.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().unwrap());
        last = Some(r);
    }
    let r = last.expect("at least one PATCH");
    r.headers()["Depot-File-Url"]
        .to_str()
        .unwrap()
        .trim_start_matches(&s.base)
        .to_string()
}

#[test]
fn tus_on_s3_completes_large_patches_as_one_s3_upload_and_streams_small_ones() {
    let Some(env) = s3_or_skip("tus_on_s3_completes_large_patches") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let s = server_on(&env, &data_dir, &[]);
    let t = s.token("ann", INSTANCE, false);
    // 5 MiB PATCHes: S3 parts as they come, completed at the end.
    let big = bytes(2 * MIN_PART + 12_345, 31);
    let url = tus_upload(&s, &t, &big, MIN_PART);
    let got = s.get(&url, Some(&t));
    assert_eq!(got.status(), 200);
    assert!(got.bytes().unwrap().to_vec() == big, "download differs");
    // 1 MiB PATCHes cannot be S3 parts: streamed through the blob writer at completion.
    let other = bytes(6 * MIB + 1, 32);
    let url = tus_upload(&s, &t, &other, MIB);
    let got = s.get(&url, Some(&t));
    assert!(got.bytes().unwrap().to_vec() == other, "download differs");
    // Again the first bytes: the same blob.
    tus_upload(&s, &t, &big, MIN_PART);
    let mut want = vec![sha256_hex(&big), sha256_hex(&other)];
    want.sort();
    assert_eq!(blobs_in(&env.store()), want);
    s.eventually("no S3 upload, temp object or staged part stays", || {
        uploads_in_progress(&env) == 0 && temp_objects(&env) == 0 && staged_files(&data_dir) == 0
    });
}

#[test]
fn the_sweep_aborts_the_s3_uploads_of_abandoned_sessions() {
    let Some(env) = s3_or_skip("the_sweep_aborts_the_s3_uploads_of_abandoned_sessions") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let s = server_on(
        &env,
        &data_dir,
        &[
            // Long enough that both sessions hold their S3 uploads before either expires on a
            // loaded machine (4 s was not: the first session was swept before the second began).
            ("DEPOT_TEMP_FILE_TTL_SECS", "20"),
            ("DEPOT_TUS_EXPIRY_SECS", "20"),
            ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
        ],
    );
    let t = s.token("jon", INSTANCE, false);
    let (parts, _, _) = create_multipart(&s, &t, MIN_PART + 10);
    let (st, _, body) = put_part(&s, &parts[0], &bytes(MIN_PART, 41));
    assert_eq!(st, 200, "{body}");
    let len = (2 * MIN_PART).to_string();
    let r = tus_req(&s, "POST", "/tus/", &t, &[("Upload-Length", &len)]);
    assert_eq!(r.status(), 201);
    let loc = r.headers()["Location"].to_str().unwrap().to_string();
    let r = s
        .client
        .patch(&loc)
        .header("Authorization", &t)
        .header("hypi-domain", INSTANCE)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(bytes(MIN_PART, 42))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(uploads_in_progress(&env), 2, "one S3 upload per session");
    assert_eq!(
        staged_files(&data_dir),
        6,
        "part, ETag file, upload id: twice"
    );
    // The sessions expire 20 s after creation; the sweep runs every second after that.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !(uploads_in_progress(&env) == 0 && staged_files(&data_dir) == 0) {
        assert!(
            std::time::Instant::now() < end,
            "expired sessions' S3 uploads were not aborted:\n{}",
            s.log.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(blobs_in(&env.store()).is_empty(), "nothing became a blob");
    // A part for the swept session is refused.
    let (st, _, body) = put_part(&s, &parts[1], b"late");
    assert_eq!(st, 404, "{body}");
}
