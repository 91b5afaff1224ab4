//! `[store] redirect_downloads`: with blobs on S3 (moto_server from `scripts/services start`),
//! `GET /file/...` of a large file answers `303 See Other` to a presigned GET on the bucket once
//! every access check passed; curl -L follows it to the bytes, typed and named as the node
//! serves them. Conditional requests still answer here first, Range and HEAD are served here,
//! small files too, and a caller who may not read gets no URL. Without
//! `DEPOT_TEST_S3_ENDPOINT` each test prints `SKIPPED: ...` (or fails under
//! `DEPOT_REQUIRE_SERVICES=1`).

mod common;
use common::*;
use reqwest::blocking::Client;

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `curl -L` of `url` with a token: (status, headers as text, body bytes).
fn curl_follow(url: &str, token: &str, dir: &std::path::Path) -> (u16, String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .current_dir(dir)
        .args([
            "-sS",
            "-L",
            "-D",
            "headers.txt",
            "-o",
            "body.bin",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", &format!("Authorization: {token}"), url])
        .output()
        .expect("curl is installed");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(dir.join("headers.txt")).unwrap_or_default();
    (
        code,
        headers,
        std::fs::read(dir.join("body.bin")).unwrap_or_default(),
    )
}

#[test]
fn large_downloads_redirect_to_a_presigned_get_after_the_access_checks() {
    let Some(env) = s3_or_skip("large_downloads_redirect_to_a_presigned_get") else {
        return;
    };
    let mut vars = env.server_env();
    vars.push(("DEPOT_STORE_REDIRECT_DOWNLOADS".into(), "true".into()));
    vars.push(("DEPOT_METRICS_TOKEN".into(), METRICS_TOKEN.into()));
    vars.push(("DEPOT_STORE_REDIRECT_TTL_SECS".into(), "120".into()));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &env_refs(&vars), &[]).unwrap_or_else(|l| panic!("{l}"));
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let big = bytes(300_000, 3);
    let (st, up) = s.upload(
        &alice,
        "/upload/",
        &[("report 2026.pdf", &big), ("small.txt", b"small")],
    );
    assert_eq!(st, 200, "{up}");
    let path = up["report 2026.pdf"]["url"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let small = up["small.txt"]["url"]["path"].as_str().unwrap().to_string();
    let c = no_redirects();
    let get = |p: &str, token: &str| c.get(s.url(p)).header("Authorization", token);

    // The redirect: to the bucket, never cached, with the node's validators.
    let r = get(&path, &alice).send().unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/{}/", env.endpoint, env.bucket)),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(
        location.contains("X-Amz-Expires=120"),
        "the configured lifetime: {location}"
    );
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&big)));

    // curl -L gets the bytes from the bucket, typed and named as the node would (HEAD is
    // answered by the node: the reference).
    let head = c
        .head(s.url(&path))
        .header("Authorization", &alice)
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    let node_type = head.headers()["content-type"].to_str().unwrap().to_string();
    let node_disposition = head.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        node_disposition.contains("report 2026.pdf"),
        "{node_disposition}"
    );
    let work = tempfile::tempdir().unwrap();
    let (code, headers, got) = curl_follow(&s.url(&path), &alice, work.path());
    assert_eq!(code, 200, "{headers}");
    assert!(
        got == big,
        "the bytes differ ({} of {})",
        got.len(),
        big.len()
    );
    // The last response's headers (curl -D writes every hop's).
    let last = headers
        .rsplit("HTTP/")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        last.contains(&format!("content-type: {}", node_type.to_ascii_lowercase())),
        "{headers}"
    );
    assert!(
        last.contains(&format!(
            "content-disposition: {}",
            node_disposition.to_ascii_lowercase()
        )),
        "{node_disposition} in {headers}"
    );

    // A conditional that matches answers 304 here, before any redirect; one that fails, 412.
    let r = get(&path, &alice)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.headers().get("location").is_none());
    let r = get(&path, &alice)
        .header("If-Match", "\"other\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 412);
    // Range and HEAD are served by the node (If-Range and our ETag keep their meaning).
    let r = get(&path, &alice)
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &big[10..20]);
    assert_eq!(head.headers()["content-length"], "300000");
    // Small files are in memory already: served here.
    let r = get(&small, &alice).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"small");
    // No read right, no URL; no token, no URL.
    let (st, code, _) = json_error(get(&path, &bob).send().unwrap());
    assert_eq!((st, code.as_str()), (404, "NOT_FOUND"));
    let r = c.get(s.url(&path)).send().unwrap();
    assert!(r.headers().get("location").is_none(), "{}", r.status());
    assert!(r.status().is_client_error());
    // Counted for /metrics.
    let m = s.metrics(METRICS_TOKEN);
    assert_eq!(m.get("depot_download_redirects_total"), Some(&2.0), "{m:?}");
}

#[test]
fn redirects_need_an_s3_store_and_are_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let log = match Server::spawn(
        dir.path(),
        &[("DEPOT_STORE_REDIRECT_DOWNLOADS", "true")],
        &[],
    ) {
        Ok(_) => panic!("started with redirects on a local store"),
        Err(log) => log,
    };
    assert!(log.contains("redirect_downloads"), "{log}");
    let log = match Server::spawn(dir.path(), &[("DEPOT_STORE_REDIRECT_TTL_SECS", "0")], &[]) {
        Ok(_) => panic!("started with a zero redirect lifetime"),
        Err(log) => log,
    };
    assert!(log.contains("redirect_ttl_secs"), "{log}");

    let Some(env) = s3_or_skip("redirects_are_off_by_default") else {
        return;
    };
    let s = Server::spawn(dir.path(), &env_refs(&env.server_env()), &[])
        .unwrap_or_else(|l| panic!("{l}"));
    let alice = s.token("alice", INSTANCE, false);
    let big = bytes(100_000, 9);
    let rec = s.upload_one(&alice, "b.bin", &big);
    let r = no_redirects()
        .get(s.url(rec["url"]["path"].as_str().unwrap()))
        .header("Authorization", &alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), big.as_slice());
}
