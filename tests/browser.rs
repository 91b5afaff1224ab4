//! Real Chromium (Debian's `chromium`, headless, driven by `playwright-core` from
//! tests/browser/) on a page from another origin: Hygraph's legacy upload (`fetch` + `FormData`
//! with a `fileUpload` field and a Bearer token) against depot with that origin in
//! `cors.allowed_origins`, file names as browsers encode them, a download reading the exposed
//! headers, and the same page from an origin not in the list refused.
//!
//! Needs `/usr/bin/chromium`, node and `npm ci --prefix tests/browser`. When one is missing the
//! test fails if `DEPOT_REQUIRE_SERVICES=1` (CI sets it), else prints `SKIPPED: ...` and passes.
//!
//! Also Foir's presigned flow from a page on another origin: `createFileUpload`, a `fetch` PUT
//! to the `uploadUrl`, confirm, and a byte-for-byte download; a PUT from an origin not allowed
//! is refused. Each case is a scenario function in tests/browser/upload.mjs plus its name in
//! `run` and its assertions here.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is not installed (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some(
            "tests/browser/node_modules is missing (npm ci --prefix tests/browser)".into(),
        );
    }
    None
}

/// Skips (or fails under `DEPOT_REQUIRE_SERVICES=1`) when the browser cannot run.
fn browser_available() -> bool {
    let Some(why) = missing() else { return true };
    if std::env::var("DEPOT_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("DEPOT_REQUIRE_SERVICES=1 but the browser test cannot run: {why}");
    }
    eprintln!("SKIPPED: browser test: {why}");
    false
}

/// A static server for one page on its own port (its own origin), bound at once; the page is
/// set later (it names depot's address, known only once depot runs). Every path gets it.
fn page_server() -> (String, Arc<OnceLock<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let page = Arc::new(OnceLock::<String>::new());
    let html = page.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { break };
            let html = html.get().cloned().unwrap_or_default();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
            });
        }
    });
    (origin, page)
}

#[test]
fn hygraph_legacy_upload_from_another_origin_in_chromium() {
    if !browser_available() {
        return;
    }
    let template = std::fs::read_to_string(browser_dir().join("hygraph-legacy.html")).unwrap();
    // Two page origins; depot lists only the first. The seed sends no hypi-domain header, so
    // depot's default instance is the test instance.
    let page = |depot: &str, token: &str| {
        template
            .replace("__DEPOT_URL__", depot)
            .replace("__TOKEN__", token)
    };
    let (allowed, allowed_page) = page_server();
    let (refused, refused_page) = page_server();
    let s = Server::start_with(&[
        ("DEPOT_CORS_ALLOWED_ORIGINS", &allowed),
        ("DEPOT_DEFAULT_INSTANCE", INSTANCE),
    ]);
    let token = s.token("alice", INSTANCE, false);
    allowed_page.set(page(&s.base, &token)).unwrap();
    refused_page.set(page(&s.base, &token)).unwrap();

    let names = [
        ("résumé \"final\".pdf", "résumé \"final\".pdf"),
        ("a\\b.txt", "b.txt"),
        ("C:\\Users\\x\\report.txt", "report.txt"),
        ("plain.txt", "plain.txt"),
    ];
    let cfg = serde_json::json!({
        "chromium": CHROMIUM,
        "depot": s.base,
        "token": token,
        "allowedPage": format!("{allowed}/"),
        "refusedPage": format!("{refused}/"),
        "names": names.iter().map(|(sent, _)| *sent).collect::<Vec<_>>(),
        "run": ["legacyUpload", "refusedOrigin"],
    });
    let out = Command::new("node")
        .arg(browser_dir().join("upload.mjs"))
        .arg(cfg.to_string())
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed:\n{stdout}\n{stderr}");
    let results: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("node printed no JSON ({e}):\n{stdout}\n{stderr}"));

    let uploads = results["legacyUpload"]
        .as_array()
        .expect("legacyUpload results");
    assert_eq!(uploads.len(), names.len());
    for ((sent, stored), r) in names.iter().zip(uploads) {
        assert!(r.get("error").is_none(), "{sent}: {r}");
        assert_eq!(r["name"], *stored, "{sent}: {r}");
        assert_eq!(r["keys"], serde_json::json!([stored]), "{sent}: {r}");
        let d = &r["download"];
        assert_eq!(d["status"], 200, "{sent}: {r}");
        assert_eq!(d["body"], format!("content of {sent}"), "{sent}: {r}");
        assert!(
            d["etag"].as_str().is_some_and(|e| e.len() > 60),
            "{sent}: {r}"
        );
        let disposition = d["disposition"].as_str().unwrap_or_default();
        assert!(disposition.contains("filename"), "{sent}: {r}");
    }

    // The page on the other origin could not upload: the browser stopped at the preflight.
    let refused_result = &results["refusedOrigin"];
    assert!(
        refused_result["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{refused_result}"
    );
    let listed: Value = s.get("/files", Some(&token)).json().unwrap();
    let mut stored: Vec<String> = listed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    let mut want: Vec<String> = names.iter().map(|(_, n)| n.to_string()).collect();
    want.sort();
    assert_eq!(stored, want, "only the allowed page's uploads are stored");
    assert!(
        s.log
            .lock()
            .unwrap()
            .lines()
            .all(|l| !l.contains("refused.txt")),
        "the refused upload never reached depot"
    );
}

#[test]
fn foir_presigned_put_from_another_origin_in_chromium() {
    if !browser_available() {
        return;
    }
    let template = std::fs::read_to_string(browser_dir().join("hygraph-legacy.html")).unwrap();
    let (allowed, allowed_page) = page_server();
    let (refused, refused_page) = page_server();
    let s = Server::start_with(&[
        ("DEPOT_CORS_ALLOWED_ORIGINS", &allowed),
        ("DEPOT_DEFAULT_INSTANCE", INSTANCE),
    ]);
    let token = s.token("alice", INSTANCE, false);
    let html = template
        .replace("__DEPOT_URL__", &s.base)
        .replace("__TOKEN__", &token);
    allowed_page.set(html.clone()).unwrap();
    refused_page.set(html).unwrap();
    // An upload the refused page will try to PUT to.
    let (refused_id, refused_url) = s
        .create_file_upload(&token, "no.jpg", "image/jpeg", 2, "")
        .unwrap();

    let cfg = serde_json::json!({
        "chromium": CHROMIUM,
        "depot": s.base,
        "token": token,
        "allowedPage": format!("{allowed}/"),
        "refusedPage": format!("{refused}/"),
        "refusedPutUrl": refused_url,
        "names": [],
        "run": ["presignedPut", "refusedPut"],
    });
    let out = Command::new("node")
        .arg(browser_dir().join("upload.mjs"))
        .arg(cfg.to_string())
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed:\n{stdout}\n{stderr}");
    let results: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("node printed no JSON ({e}):\n{stdout}\n{stderr}"));

    let r = &results["presignedPut"];
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(r["putStatus"], 200, "{r}");
    assert!(
        r["putEtag"].as_str().is_some_and(|e| e.len() > 60),
        "the ETag is exposed: {r}"
    );
    assert_eq!(r["confirmStatus"], 200, "{r}");
    let f = &r["file"];
    assert_eq!(f["filename"], "canvas.jpg", "{r}");
    assert_eq!(f["mimeType"], "image/jpeg", "{r}");
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(64), Some(48)),
        "{r}"
    );
    assert!(f["blurhash"].as_str().is_some_and(|h| h.len() == 28), "{r}");
    assert_eq!(f["size"], r["sentBytes"], "{r}");
    assert_eq!(r["downloadStatus"], 200, "{r}");
    assert_eq!(
        r["same"], true,
        "the download is the bytes the browser sent: {r}"
    );

    // The other origin's PUT stopped at the preflight: nothing arrived.
    let refused_result = &results["refusedPut"];
    assert!(
        refused_result["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{refused_result}"
    );
    let v = s.confirm_file_upload(&token, &refused_id);
    assert_eq!(Server::gql_code(&v), "UPLOAD_INCOMPLETE", "{v}");
}
