//! Hygraph's `createAsset(data: {uploadUrl})` over real HTTP against real servers on
//! 127.0.0.1: pending at once, completed by the background fetch when `remote_fetch.allow_hosts`
//! names the server, refused targets (127.0.0.1 without the allowance, 10.x, 169.254.169.254,
//! `[::ffff:127.0.0.1]`, a redirect to loopback), a stalling server, a body over the cap, the
//! per-account bound, and a restart with an ingest in flight.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A tiny HTTP/1.1 server; `stalls` counts requests to `/stall`.
fn serve(png: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stalls = Arc::new(AtomicUsize::new(0));
    let counter = stalls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let (png, counter) = (png.clone(), counter.clone());
            std::thread::spawn(move || answer(conn, port, &png, &counter));
        }
    });
    (port, stalls)
}

fn answer(mut c: TcpStream, port: u16, png: &[u8], stalls: &AtomicUsize) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let mut reply = |status: &str, headers: &str, body: &[u8]| {
        let _ = c.write_all(
            format!("HTTP/1.1 {status}\r\nConnection: close\r\n{headers}\r\n").as_bytes(),
        );
        let _ = c.write_all(body);
    };
    match path.as_str() {
        "/photo.png" => reply(
            "200 OK",
            &format!(
                "Content-Type: image/png\r\nContent-Length: {}\r\n",
                png.len()
            ),
            png,
        ),
        "/to-loopback" => reply(
            "302 Found",
            &format!("Location: http://127.0.0.2:{port}/photo.png\r\nContent-Length: 0\r\n"),
            b"",
        ),
        "/big" => {
            // No Content-Length: the cap must cut the body as it arrives.
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            for _ in 0..50 {
                if c.write_all(&[7u8; 1000]).is_err() {
                    return;
                }
            }
        }
        "/stall" => {
            stalls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(120));
        }
        _ => reply("404 Not Found", "Content-Length: 0\r\n", b""),
    }
}

fn create(s: &Server, t: &str, url: &str) -> Value {
    let v = s.graphql(
        Some(t),
        &format!(r#"mutation {{ createAsset(data: {{ uploadUrl: {url:?} }}) {{ id fileName url mimeType size upload {{ status error }} }} }}"#),
    );
    assert!(v["data"]["createAsset"].is_object(), "{v}");
    v["data"]["createAsset"].clone()
}

fn asset(s: &Server, t: &str, id: &str) -> Value {
    let v = s.graphql(
        Some(t),
        &format!(r#"{{ asset(where: {{ id: {id:?} }}) {{ id fileName url mimeType size upload {{ status error }} }} }}"#),
    );
    v["data"]["asset"].clone()
}

/// Waits until the asset leaves ASSET_CREATE_PENDING; returns it.
fn settled(s: &Server, t: &str, id: &str) -> Value {
    s.eventually("the ingest settles", || {
        asset(s, t, id)["upload"]["status"] != "ASSET_CREATE_PENDING"
    });
    asset(s, t, id)
}

#[test]
fn an_allowed_local_server_is_ingested() {
    let png = png_3x2();
    let (port, _) = serve(png.clone());
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow)]);
    let t = s.token("jon", INSTANCE, false);
    let a = create(&s, &t, &format!("http://127.0.0.1:{port}/photo.png"));
    assert_eq!(a["fileName"], "photo.png");
    let id = a["id"].as_str().unwrap();
    let done = settled(&s, &t, id);
    assert_eq!(done["upload"]["status"], "ASSET_UPLOAD_COMPLETE", "{done}");
    assert_eq!(done["url"], a["url"]);
    assert_eq!(done["mimeType"], "image/png");
    assert_eq!(done["size"], png.len());
    let got = s
        .client
        .get(done["url"].as_str().unwrap())
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(got.bytes().unwrap().as_ref(), png.as_slice());

    // REST twin, same flow.
    let r = s
        .client
        .post(s.url("/assets"))
        .header("Authorization", &t)
        .header("hypi-domain", INSTANCE)
        .json(&serde_json::json!({"uploadUrl": format!("http://127.0.0.1:{port}/photo.png")}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().unwrap();
    let done = settled(&s, &t, b["id"].as_str().unwrap());
    assert_eq!(done["upload"]["status"], "ASSET_UPLOAD_COMPLETE", "{done}");
}

#[test]
fn non_public_targets_are_refused() {
    let (port, _) = serve(png_3x2());
    // Only 127.0.0.1 on the server's port is allowed; the redirect goes to 127.0.0.2.
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow)]);
    let plain = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let pt = plain.token("jon", INSTANCE, false);

    // Without the allowance, 127.0.0.1 is refused.
    let a = create(&plain, &pt, &format!("http://127.0.0.1:{port}/photo.png"));
    let done = settled(&plain, &pt, a["id"].as_str().unwrap());
    assert_eq!(done["upload"]["status"], "ASSET_ERROR_UPLOAD");
    assert!(
        done["upload"]["error"]
            .as_str()
            .unwrap()
            .contains("REMOTE_URL_REFUSED"),
        "{done}"
    );

    for url in [
        "http://10.0.0.1/x.png".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/photo.png"),
        format!("http://127.0.0.1:{port}/to-loopback"),
    ] {
        let a = create(&s, &t, &url);
        let done = settled(&s, &t, a["id"].as_str().unwrap());
        assert_eq!(done["upload"]["status"], "ASSET_ERROR_UPLOAD", "{url}");
        assert!(
            done["upload"]["error"]
                .as_str()
                .unwrap()
                .contains("REMOTE_URL_REFUSED"),
            "{url}: {done}"
        );
    }
}

#[test]
fn stalls_and_oversized_bodies_fail_the_asset() {
    let (port, _) = serve(png_3x2());
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[
        ("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow),
        ("DEPOT_REMOTE_FETCH_STALL_SECS", "1"),
        ("DEPOT_MAX_FILE_SIZE", "10000"),
    ]);
    let t = s.token("jon", INSTANCE, false);
    let a = create(&s, &t, &format!("http://127.0.0.1:{port}/stall"));
    let b = create(&s, &t, &format!("http://127.0.0.1:{port}/big"));
    let stalled = settled(&s, &t, a["id"].as_str().unwrap());
    assert_eq!(stalled["upload"]["status"], "ASSET_ERROR_UPLOAD");
    assert!(
        stalled["upload"]["error"]
            .as_str()
            .unwrap()
            .contains("REMOTE_TIMEOUT"),
        "{stalled}"
    );
    let big = settled(&s, &t, b["id"].as_str().unwrap());
    assert_eq!(big["upload"]["status"], "ASSET_ERROR_UPLOAD");
    assert!(
        big["upload"]["error"]
            .as_str()
            .unwrap()
            .contains("FILE_TOO_LARGE"),
        "{big}"
    );
    // Nothing half-written is left behind.
    s.eventually("temp files removed", || s.temp_files() == 0);
    assert_eq!(s.blob_count(), 0);
}

#[test]
fn pending_ingests_are_bounded_per_account() {
    let (port, _) = serve(png_3x2());
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[
        ("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow),
        ("DEPOT_REMOTE_FETCH_MAX_CONCURRENT_PER_ACCOUNT", "1"),
    ]);
    let t = s.token("jon", INSTANCE, false);
    let a = create(&s, &t, &format!("http://127.0.0.1:{port}/stall"));
    assert_eq!(a["upload"]["status"], "ASSET_CREATE_PENDING");
    let v = s.graphql(
        Some(&t),
        &format!(r#"mutation {{ createAsset(data: {{ uploadUrl: "http://127.0.0.1:{port}/photo.png" }}) {{ id }} }}"#),
    );
    assert_eq!(Server::gql_code(&v), "TOO_MANY_REQUESTS", "{v}");
    // Another account is not held up.
    let other = s.token("ann", INSTANCE, false);
    let b = create(&s, &other, &format!("http://127.0.0.1:{port}/photo.png"));
    let done = settled(&s, &other, b["id"].as_str().unwrap());
    assert_eq!(done["upload"]["status"], "ASSET_UPLOAD_COMPLETE");
}

#[test]
fn a_restart_resumes_an_ingest_in_flight() {
    let (port, stalls) = serve(png_3x2());
    let allow = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(
        dir.path(),
        &[
            ("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow),
            ("DEPOT_REMOTE_FETCH_STALL_SECS", "600"),
        ],
        &[],
    )
    .unwrap();
    let t = s.token("jon", INSTANCE, false);
    let a = create(&s, &t, &format!("http://127.0.0.1:{port}/stall"));
    let id = a["id"].as_str().unwrap().to_string();
    s.eventually("the fetch reaches the server", || {
        stalls.load(Ordering::SeqCst) == 1
    });
    assert_eq!(
        asset(&s, &t, &id)["upload"]["status"],
        "ASSET_CREATE_PENDING"
    );
    s.stop();

    // The restarted server picks the ingest up again (a second request reaches the stalling
    // server) and, the server still stalling, fails it: never pending forever.
    let s = Server::spawn(
        dir.path(),
        &[
            ("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow),
            ("DEPOT_REMOTE_FETCH_STALL_SECS", "1"),
        ],
        &[],
    )
    .unwrap();
    s.eventually("the ingest is resumed", || {
        stalls.load(Ordering::SeqCst) == 2
    });
    let done = settled(&s, &t, &id);
    assert_eq!(done["upload"]["status"], "ASSET_ERROR_UPLOAD", "{done}");
    assert!(done["upload"]["error"]
        .as_str()
        .unwrap()
        .contains("REMOTE_TIMEOUT"));
}

#[test]
fn fetches_beyond_the_overall_bound_wait_their_turn() {
    let (port, stalls) = serve(png_3x2());
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[
        ("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow),
        ("DEPOT_REMOTE_FETCH_MAX_CONCURRENT", "1"),
        ("DEPOT_REMOTE_FETCH_STALL_SECS", "5"),
    ]);
    let jon = s.token("jon", INSTANCE, false);
    let ann = s.token("ann", INSTANCE, false);
    let a = create(&s, &jon, &format!("http://127.0.0.1:{port}/stall"));
    s.eventually("the first fetch holds the only lane", || {
        stalls.load(Ordering::SeqCst) == 1
    });
    // The second (another account) waits for the lane: still pending while the first stalls.
    let b = create(&s, &ann, &format!("http://127.0.0.1:{port}/photo.png"));
    let b_id = b["id"].as_str().unwrap();
    let second = asset(&s, &ann, b_id)["upload"]["status"].clone();
    // While the first is still stalled (seen after reading the second), the second waited.
    let first = asset(&s, &jon, a["id"].as_str().unwrap());
    if first["upload"]["status"] == "ASSET_CREATE_PENDING" {
        assert_eq!(second, "ASSET_CREATE_PENDING");
    }
    // Once the stalled fetch gives up, the waiting one runs.
    let done = settled(&s, &ann, b_id);
    assert_eq!(done["upload"]["status"], "ASSET_UPLOAD_COMPLETE", "{done}");
    let failed = settled(&s, &jon, a["id"].as_str().unwrap());
    assert_eq!(failed["upload"]["status"], "ASSET_ERROR_UPLOAD");
}
