//! Real browsers (Debian's `chromium` and `firefox-esr`, headless, driven by `puppeteer-core`
//! from tests/browser/: Chromium over CDP, Firefox over WebDriver BiDi) on a page from another origin: Hygraph's legacy upload (`fetch` + `FormData`
//! with a `fileUpload` field and a Bearer token) against depot with that origin in
//! `cors.allowed_origins`, file names as browsers encode them, a download reading the exposed
//! headers, and the same page from an origin not in the list refused.
//!
//! Needs `/usr/bin/chromium`, `/usr/bin/firefox-esr`, node and `npm ci --prefix tests/browser`. When one is missing the
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

/// A browser the tests drive: its name for tests/browser/driver.mjs and its Debian package.
#[derive(Clone, Copy)]
enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }

    fn executable(self) -> &'static str {
        match self {
            Browser::Chromium => "/usr/bin/chromium",
            Browser::Firefox => "/usr/bin/firefox-esr",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox-esr",
        }
    }
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing(browser: Browser) -> Option<String> {
    if !Path::new(browser.executable()).exists() {
        return Some(format!(
            "{} is not installed (apt-get install {})",
            browser.executable(),
            browser.package()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !browser_dir().join("node_modules/puppeteer-core").exists() {
        return Some(
            "tests/browser/node_modules is missing (npm ci --prefix tests/browser)".into(),
        );
    }
    None
}

/// Skips (or fails under `DEPOT_REQUIRE_SERVICES=1`) when the browser cannot run.
fn browser_available(browser: Browser) -> bool {
    let Some(why) = missing(browser) else {
        return true;
    };
    if std::env::var("DEPOT_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("DEPOT_REQUIRE_SERVICES=1 but the browser test cannot run: {why}");
    }
    eprintln!("SKIPPED: browser test: {why}");
    false
}

/// Runs one of tests/browser/'s scripts with its JSON argument (`browser` added) and returns
/// the JSON object it prints.
fn run_node(script: &str, browser: Browser, mut cfg: Value) -> Value {
    cfg["browser"] = browser.name().into();
    let out = Command::new("node")
        .arg(browser_dir().join(script))
        .arg(cfg.to_string())
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("node printed no JSON ({e}):\n{stdout}\n{stderr}"))
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
    hygraph_legacy_upload_from_another_origin(Browser::Chromium);
}

#[test]
fn hygraph_legacy_upload_from_another_origin_in_firefox() {
    hygraph_legacy_upload_from_another_origin(Browser::Firefox);
}

fn hygraph_legacy_upload_from_another_origin(browser: Browser) {
    if !browser_available(browser) {
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
        "depot": s.base,
        "token": token,
        "allowedPage": format!("{allowed}/"),
        "refusedPage": format!("{refused}/"),
        "names": names.iter().map(|(sent, _)| *sent).collect::<Vec<_>>(),
        "run": ["legacyUpload", "refusedOrigin"],
    });
    let results = run_node("upload.mjs", browser, cfg);

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
            // Chromium says "Failed to fetch", Firefox "NetworkError when attempting to fetch resource."
            .is_some_and(|e| e.starts_with("TypeError")),
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
    foir_presigned_put_from_another_origin(Browser::Chromium);
}

#[test]
fn foir_presigned_put_from_another_origin_in_firefox() {
    foir_presigned_put_from_another_origin(Browser::Firefox);
}

fn foir_presigned_put_from_another_origin(browser: Browser) {
    if !browser_available(browser) {
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
        "depot": s.base,
        "token": token,
        "allowedPage": format!("{allowed}/"),
        "refusedPage": format!("{refused}/"),
        "refusedPutUrl": refused_url,
        "names": [],
        "run": ["presignedPut", "refusedPut"],
    });
    let results = run_node("upload.mjs", browser, cfg);

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
            // Chromium says "Failed to fetch", Firefox "NetworkError when attempting to fetch resource."
            .is_some_and(|e| e.starts_with("TypeError")),
        "{refused_result}"
    );
    let v = s.confirm_file_upload(&token, &refused_id);
    assert_eq!(Server::gql_code(&v), "UPLOAD_INCOMPLETE", "{v}");
}

/// A PNG of `w` x `h` pixels: a gradient, or one colour when `solid` is given.
fn png(w: u32, h: u32, solid: Option<[u8; 3]>) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb(solid.unwrap_or([(x * 255 / w) as u8, (y * 255 / h) as u8, 160]))
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The web console at /console, driven in Chromium and in Firefox as a user would (tests/browser/console.mjs):
/// a bad token's readable error, sign-in, Tab order and labels, three uploads (one 20 MiB) with
/// progress seen per file and overall, cancel and retry, the listing with a BlurHash placeholder
/// and thumbnails, sort and search, an image's details, public access (grant, then the instance
/// switch an admin turns on) checked with curl without a token, a grant to an account revoked, a
/// signed link, trash and untrash, delete, folders and breadcrumbs, sign-out. Screenshots of
/// each step go to target/console-screens/<browser>/.
#[test]
fn console_end_to_end_in_chromium() {
    console_end_to_end(Browser::Chromium);
}

#[test]
fn console_end_to_end_in_firefox() {
    console_end_to_end(Browser::Firefox);
}

fn console_end_to_end(browser: Browser) {
    if !browser_available(browser) {
        return;
    }
    let s = Server::start_with(&[("DEPOT_DEFAULT_INSTANCE", INSTANCE)]);
    let admin = s.token("root", INSTANCE, true);

    // A File with a BlurHash (Foir's presigned flow computes one): one colour, so the decoded
    // placeholder must be that colour.
    let swatch = png(64, 64, Some([200, 60, 30]));
    let (id, url) = s
        .create_file_upload(&admin, "swatch.png", "image/png", swatch.len(), "")
        .unwrap();
    assert_eq!(s.put_bytes(&url, "image/png", &swatch).status(), 200);
    let confirmed = s.confirm_file_upload(&admin, &id);
    assert!(
        confirmed["data"]["confirmFileUpload"]["blurhash"].is_string(),
        "{confirmed}"
    );
    // A file in a nested directory: the console shows its directories as folders.
    let (status, body) = s.upload(
        &admin,
        "/upload/albums/2026",
        &[("cover.txt", b"cover" as &[u8])],
    );
    assert_eq!(status, 200, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let photo = png(320, 200, None);
    let big = bytes(20 << 20, 7);
    let files = [
        ("photo.png", photo.clone()),
        ("notes.txt", b"plain notes\n".to_vec()),
        ("big.bin", big.clone()),
        ("retry.bin", bytes(6 << 20, 8)),
    ];
    for (name, data) in &files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let screens = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-screens")
        .join(browser.name());
    let cfg = serde_json::json!({
        "base": s.base,
        "instance": INSTANCE,
        "token": admin,
        "files": [path("photo.png"), path("notes.txt"), path("big.bin")],
        "retryFile": path("retry.bin"),
        "blurhashName": "swatch.png",
        "screens": screens,
    });
    let r = run_node("console.mjs", browser, cfg);
    assert!(r.get("error").is_none(), "{:#}", r);
    eprintln!("console observations: {r}");

    // The page, its policy, nothing from elsewhere, no script errors (CSP violations included).
    assert_eq!(r["pageStatus"], 200);
    let csp = r["csp"].as_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(r["foreignRequests"], serde_json::json!([]), "{r:#}");
    let errors: Vec<&str> = r["consoleErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        // Chromium logs each refused request (the bad token's 401, the anonymous 401s are
        // curl's, not the page's); those are expected answers, not script errors.
        .filter(|m| !m.starts_with("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // Sign-in: keyboard order, a readable error for a bad token, who you are.
    assert_eq!(
        r["signinTabOrder"].as_array().unwrap()[..4],
        [
            Value::from("a#"),
            Value::from("textarea#token"),
            Value::from("input#instance"),
            Value::from("button#")
        ],
        "{r:#}"
    );
    let bad = r["badTokenMessage"].as_str().unwrap();
    assert!(bad.contains("UNAUTHENTICATED (401)"), "{bad}");
    assert!(bad.contains("Check the token"), "{bad}");
    assert_eq!(r["signinStillShown"], true);
    assert_eq!(
        r["filesShownSignedOut"], false,
        "only the sign-in form shows"
    );
    assert_eq!(r["filesShownAfterBadToken"], false);
    let who = r["who"].as_str().unwrap();
    assert!(
        who.contains("root") && who.contains("(admin)") && who.contains(INSTANCE),
        "{who}"
    );
    assert_eq!(r["stored"], serde_json::json!(["depot.console.session"]));
    assert_eq!(r["unlabelled"], serde_json::json!([]), "{r:#}");
    assert_ne!(r["focusOutline"], "none");

    // The BlurHash placeholder decodes to the swatch's colour.
    let px: Vec<i64> = r["blurhashPixel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    for (got, want) in px.iter().zip([200, 60, 30, 255]) {
        assert!((got - want).abs() <= 3, "decoded {px:?}");
    }
    assert_eq!(r["thumbnailLoaded"], true);
    assert_eq!(r["thumbnailSize"], serde_json::json!([160, 160]), "{r:#}");

    // Progress was seen part-way for the large file and overall, and reached the end.
    let seen = |v: &Value| -> (bool, bool) {
        let pts = v.as_array().cloned().unwrap_or_default();
        let mid = pts.iter().any(|p| {
            let (x, max) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            x > 0.0 && x < max
        });
        let end = pts.last().is_some_and(|p| p[0] == p[1]);
        (mid, end)
    };
    assert_eq!(
        seen(&r["progress"]["big.bin"]),
        (true, true),
        "{}",
        r["progress"]
    );
    assert_eq!(seen(&r["overall"]), (true, true));
    assert!(r["overallText"].as_str().unwrap().contains("finished"));
    assert_eq!(r["cancelled"], true);
    // The 20 MiB file went over tus (resumable), the small ones over POST /upload/**.
    assert_eq!(r["via"]["big.bin"], "tus", "{}", r["via"]);
    assert_eq!(r["via"]["photo.png"], "multipart", "{}", r["via"]);

    // Listed, sorted, searched.
    let listed = r["listed"].to_string();
    for name in [
        "photo.png",
        "notes.txt",
        "big.bin",
        "retry.bin",
        "swatch.png",
        "albums/",
    ] {
        assert!(listed.contains(name), "{name} in {listed}");
    }
    assert_eq!(r["firstBySize"], "big.bin");
    assert_eq!(r["searched"], serde_json::json!(["photo.png"]));

    // The image's details.
    let details = r["details"].as_str().unwrap();
    assert!(details.contains("320 × 200 px"), "{details}");
    assert!(details.contains(&sha256_hex(&photo)), "{details}");

    // Public access: nothing before; the grant alone does nothing while the switch is off (and
    // the page says so); with the switch on, curl downloads without a token; revoked, it stops.
    assert_eq!(r["anonBefore"], 401);
    assert!(
        r["switchOffNote"]
            .as_str()
            .unwrap()
            .contains("switched off"),
        "{r:#}"
    );
    assert_eq!(r["anonGrantSwitchOff"], 401);
    assert_eq!(r["anonPublic"], 200);
    assert_eq!(r["anonRevoked"], 401);
    assert_eq!(r["publicChecked"], false);
    assert!(r["grantsWithBob"].as_str().unwrap().contains("bob"));
    assert_eq!(r["bobRevoked"], true);
    assert_eq!(r["signedLinkStatus"], 200);

    // Trash, untrash, delete.
    assert!(r["trashListed"].to_string().contains("photo.png"));
    assert_eq!(r["untrashed"], true);
    assert!(!r["afterDelete"].to_string().contains("photo.png"));
    assert_eq!(r["deletedStatus"], 404);

    // Folders and breadcrumbs; sign-out forgets the token.
    let crumbs = r["crumbs"].as_str().unwrap();
    assert!(
        crumbs.contains("albums") && crumbs.contains("2026"),
        "{crumbs}"
    );
    assert_eq!(r["nestedListed"], serde_json::json!(["cover.txt"]));
    assert!(r["droppedInto"].as_str().unwrap().contains("/albums/2026"));
    assert_eq!(r["detailsFocused"], "details");
    assert_eq!(r["focusAfterEscape"], "photo.png");
    assert_eq!(r["signedOut"], 0);
    assert_eq!(r["steps"].as_array().unwrap().len(), 12, "{}", r["steps"]);

    // What the server holds: the large file intact, the cancelled upload stored once (by its
    // retry), nothing from the cancel left over.
    let all = listing(&s, &admin);
    let named = |n: &str| all.iter().filter(|f| f["name"] == n).collect::<Vec<_>>();
    assert_eq!(named("big.bin").len(), 1);
    assert_eq!(named("big.bin")[0]["sha256"], sha256_hex(&big));
    assert_eq!(named("retry.bin").len(), 1);
    assert_eq!(named("photo.png").len(), 0);
    assert_eq!(named("dropped.txt").len(), 1);
    assert_eq!(named("dropped.txt")[0]["directory"], "/albums/2026");
    s.eventually("no temp file left", || s.temp_files() == 0);
}
