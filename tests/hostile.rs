//! Hostile and broken input against the real server: each case is input -> expected answer,
//! nothing stored, server still up.

mod common;
use common::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

// Raw HTTP helpers (`send`, `raw_upload`, `file_part`, `RawResponse`, ...) and `listing` are in
// the harness (tests/common/).

/// Nothing of a failed request may remain: no temp file, no blob, no record; the server answers.
fn assert_nothing_stored(s: &Server, token: &str, case: &str, records: usize, blobs: usize) {
    s.eventually(&format!("{case}: temp files removed"), || {
        s.temp_files() == 0
    });
    assert_eq!(listing(s, token).len(), records, "{case}: records");
    assert_eq!(s.blob_count(), blobs, "{case}: blobs");
    assert!(s.alive(), "{case}: server still up");
    let log = s.log.lock().unwrap();
    assert!(
        !log.contains("panicked"),
        "{case}: a panic in the server:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Multipart

/// Expected outcome of a hostile multipart body.
enum Want {
    /// This status and error code, nothing stored.
    Error(u16, &'static str),
    /// 200 with this many records stored.
    Stored(usize),
    /// Either 200 with this many records or a 4xx with nothing stored; never 5xx, never a hang.
    StoredOrRejected(usize),
}

#[test]
fn hostile_multipart_bodies() {
    let s = Server::start_with(&[
        ("DEPOT_MAX_PARTS", "100"),
        ("DEPOT_MAX_FILE_SIZE", "100000"),
    ]);
    let t = s.token("alice", INSTANCE, false);
    let b = "XyZb0und";
    let ct = form_data(b);

    let mut cases: Vec<(&str, String, Vec<u8>, Want)> = Vec::new();

    // Data that does not end in CR: see `bodies_ending_inside_a_delimiter_get_400_promptly`
    // for the ones that do.
    let mut body = file_part(b, "0", "open.bin", &b"x".repeat(5000));
    body.truncate(body.len() - 2);
    cases.push((
        "no closing boundary",
        ct.clone(),
        body.clone(),
        Want::Error(400, "BAD_REQUEST"),
    ));
    body.extend_from_slice(format!("\r\n--{b}").as_bytes());
    cases.push((
        "closing boundary without its --",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));

    // 100 KiB of one part's header: accepted as a long (then truncated) name, or refused by a
    // part-header limit; either way never a 5xx.
    let huge_name = format!("{}.txt", "h".repeat(100 * 1024));
    let mut body = file_part(b, "0", &huge_name, b"huge header");
    body.extend(closing(b));
    cases.push((
        "100 KiB Content-Disposition",
        ct.clone(),
        body,
        Want::StoredOrRejected(1),
    ));
    let mut body = part(
        b,
        &format!(
            "Content-Disposition: form-data; name=\"0\"; filename=\"pad.txt\"\r\nX-Pad: {}",
            "p".repeat(100 * 1024)
        ),
        b"padded",
    );
    body.extend(closing(b));
    cases.push((
        "100 KiB extra part header",
        ct.clone(),
        body,
        Want::StoredOrRejected(1),
    ));
    let mut body = Vec::new();
    for i in 0..40 {
        body.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    let many_headers = String::from_utf8(body).unwrap();
    let mut body = part(
        b,
        &format!("{many_headers}Content-Disposition: form-data; name=\"0\"; filename=\"h.txt\""),
        b"x",
    );
    body.extend(closing(b));
    cases.push((
        "41 header lines in one part",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));

    // A real file first, so "nothing stored" shows the staged part was dropped too.
    let mut body = file_part(b, "0", "first.bin", &bytes(1000, 2));
    for _ in 0..5000 {
        body.extend(part(b, "Content-Disposition: form-data; name=\"e\"", b""));
    }
    body.extend(closing(b));
    cases.push((
        "5000 empty fields",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = Vec::new();
    for i in 0..3000 {
        body.extend(file_part(b, "f", &format!("e{i}.txt"), b""));
    }
    body.extend(closing(b));
    cases.push((
        "3000 empty file parts",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = Vec::new();
    for i in 0..100 {
        body.extend(file_part(b, "f", &format!("ok{i}.txt"), b""));
    }
    body.extend(closing(b));
    cases.push((
        "exactly max_parts parts",
        ct.clone(),
        body,
        Want::Stored(100),
    ));

    // RFC 2046: 1 to 70 bchars, the last not a space; the quoted form allows the specials.
    let b70 = format!("'()+_,-./:=?{}", "7".repeat(58));
    assert_eq!(b70.len(), 70);
    let mut body = file_part(&b70, "0", "b70.txt", b"seventy");
    body.extend(closing(&b70));
    cases.push((
        "70-char boundary with every special bchar",
        format!("multipart/form-data; boundary=\"{b70}\""),
        body,
        Want::Stored(1),
    ));
    for len in [71, 300, 5000] {
        let bl = "L".repeat(len);
        let mut body = file_part(&bl, "0", "long-boundary.txt", b"long");
        body.extend(closing(&bl));
        cases.push((
            match len {
                71 => "71-char boundary",
                300 => "300-char boundary",
                _ => "5000-char boundary",
            },
            form_data(&bl),
            body,
            // actix-multipart 0.8 takes boundaries of any length its 64 KiB buffer holds (RFC
            // 2046 says at most 70, but refusing a longer one protects nothing).
            Want::Stored(1),
        ));
    }
    cases.push((
        "Content-Type without a boundary",
        "multipart/form-data".into(),
        file_part(b, "0", "x.txt", b"x"),
        Want::Error(400, "BAD_REQUEST"),
    ));
    cases.push((
        "empty boundary",
        "multipart/form-data; boundary=\"\"".into(),
        file_part("", "0", "x.txt", b"x"),
        Want::Error(400, "BAD_REQUEST"),
    ));
    cases.push((
        "empty body",
        ct.clone(),
        Vec::new(),
        Want::Error(400, "BAD_REQUEST"),
    ));
    cases.push((
        "only the closing boundary",
        ct.clone(),
        closing(b),
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = part(b, "Content-Type: text/plain", b"no disposition");
    body.extend(closing(b));
    cases.push((
        "part without Content-Disposition",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = part(
        b,
        "Content-Disposition: form-data; name=\"0\"; filename=\"n.txt\"\r\nContent-Type: multipart/mixed; boundary=inner",
        b"--inner\r\n\r\nx\r\n--inner--\r\n",
    );
    body.extend(closing(b));
    cases.push((
        "nested multipart part",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = part(
        b,
        "Content-Disposition: form-data; name=\"0\"; filename=\"bad.txt\"\r\nBroken header line",
        b"x",
    );
    body.extend(closing(b));
    cases.push((
        "part header line without a colon",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = b"preamble text a client may send\r\n".to_vec();
    body.extend(file_part(b, "0", "after-preamble.txt", b"x"));
    body.extend(closing(b));
    cases.push((
        "preamble before the first boundary",
        ct.clone(),
        body,
        Want::StoredOrRejected(1),
    ));
    let mut body = file_part(b, "0", "fake.txt", format!("\r\n--{b}x\r\n").as_bytes());
    body.extend(closing(b));
    // RFC 2046 forbids the delimiter inside a part: refusing it is as right as taking it whole.
    cases.push((
        "data containing a near-boundary",
        ct.clone(),
        body,
        Want::StoredOrRejected(1),
    ));
    let mut body = file_part(b, "0", "big-field.txt", b"x");
    body.extend(part(
        b,
        "Content-Disposition: form-data; name=\"comment\"",
        &vec![b'c'; 70 * 1024],
    ));
    body.extend(closing(b));
    cases.push((
        "non-file field over 64 KiB",
        ct.clone(),
        body,
        Want::Error(400, "BAD_REQUEST"),
    ));
    let mut body = file_part(b, "file", "a.txt", b"first");
    body.extend(file_part(b, "file", "b.txt", b"second"));
    body.extend(file_part(b, "file", "a.txt", b"third, same name"));
    body.extend(closing(b));
    cases.push((
        "the same field name three times",
        ct.clone(),
        body,
        Want::Stored(3),
    ));
    let mut body = file_part(b, "0", "limit.bin", &bytes(100_000, 3));
    body.extend(closing(b));
    cases.push(("exactly max_file_size", ct.clone(), body, Want::Stored(1)));
    let mut body = file_part(b, "0", "over.bin", &bytes(100_001, 4));
    body.extend(closing(b));
    cases.push((
        "one byte over max_file_size (Content-Length)",
        ct.clone(),
        body,
        Want::Error(413, "FILE_TOO_LARGE"),
    ));
    cases.push((
        "not multipart at all",
        "application/json".into(),
        b"{\"a\":1}".to_vec(),
        Want::Error(400, "BAD_REQUEST"),
    ));

    let mut records = 0;
    let mut contents = std::collections::HashSet::new();
    let mut report = Vec::new();
    for (case, content_type, body, want) in &cases {
        let r = raw_upload(&s, &t, content_type, body);
        // Answered by the parser, not by the body timeout (that would be 408).
        assert_ne!(r.status, 408, "{case}: {}", r.body);
        assert!(
            (200..500).contains(&r.status),
            "{case}: {} {}",
            r.status,
            r.body
        );
        let stored = match want {
            Want::Error(status, code) => {
                assert_eq!(r.status, *status, "{case}: {}", r.body);
                assert_eq!(r.json()["error"]["code"], *code, "{case}: {}", r.body);
                0
            }
            Want::Stored(n) => {
                assert_eq!(r.status, 200, "{case}: {}", r.body);
                *n
            }
            Want::StoredOrRejected(n) => {
                if r.status == 200 {
                    *n
                } else {
                    assert!(r.json()["error"]["code"].is_string(), "{case}: {}", r.body);
                    0
                }
            }
        };
        if r.status == 200 {
            let v = r.json();
            let files = v.as_object().expect("a JSON object of files");
            assert_eq!(files.len(), stored, "{case}: {}", r.body);
            for f in files.values() {
                let name = f["name"].as_str().unwrap();
                assert!(name.chars().count() <= 255, "{case}: {name}");
                contents.insert(f["sha256"].as_str().unwrap().to_string());
            }
        }
        records += stored;
        report.push(format!("{case}: {}", r.status));
        assert_nothing_stored(&s, &t, case, records, contents.len());
    }
    println!("{}", report.join("\n"));
    let dup: Vec<String> = listing(&s, &t)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .filter(|n| n == "a.txt" || n == "b.txt")
        .collect();
    assert_eq!(dup.len(), 3, "all three parts of one field name are stored");
}

/// A complete body (Content-Length satisfied, the client waiting for the answer) whose last
/// part ends inside a delimiter: the data is followed by `\r`, `\r\n`, `\r\n-` or part of
/// `\r\n--boundary`. The body is over, so the answer is a prompt 400.
#[test]
fn bodies_ending_inside_a_delimiter_get_400_promptly() {
    let s = Server::start_with(&[("DEPOT_BODY_TIMEOUT_SECS", "3")]);
    let t = s.token("alice", INSTANCE, false);
    let b = "XyZb0und";
    let head = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"cut.txt\"\r\n\r\nsome data"
    );
    let mut outcomes = Vec::new();
    for tail in ["\r", "\r\n", "\r\n-", "\r\n--XyZ", "\r\n--XyZb0un"] {
        let body = format!("{head}{tail}");
        let start = Instant::now();
        let r = raw_upload(&s, &t, &form_data(b), body.as_bytes());
        let took = start.elapsed();
        outcomes.push((tail, r.status, took));
        assert_nothing_stored(&s, &t, tail, 0, 0);
    }
    println!("{outcomes:?}");
    // 400, not the body timeout's 408: the cut body is refused by the parser when it ends.
    for (tail, status, took) in outcomes {
        assert_eq!(
            status, 400,
            "body ending in {tail:?}: {status} after {took:?}"
        );
    }
}

/// The server's pid, found by its data dir (unique per test).
fn server_pid(s: &Server) -> Option<u32> {
    let needle = s.data.to_string_lossy().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("serve") && cmd.contains(needle.as_str())).then_some(pid)
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A part header that never ends (32 MiB without the blank line) must be refused once it is
/// larger than any sane header, not buffered whole and rescanned on every read while the
/// worker thread serves nobody else.
#[test]
fn a_part_header_that_never_ends_is_refused_early() {
    let s = Server::start_with(&[("DEPOT_WORKERS", "1"), ("DEPOT_BODY_TIMEOUT_SECS", "20")]);
    let t = s.token("alice", INSTANCE, false);
    let pid = server_pid(&s).expect("server pid");
    let rss_before = rss_kib(pid);
    let b = "HdrB";
    let pre =
        format!("--{b}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"x\"\r\nX-Pad: ");
    let pad = 32usize << 20;
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(&upload_head(&t, &form_data(b), Some(pre.len() + pad)))
        .unwrap();
    c.write_all(pre.as_bytes()).unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 << 10];
        let mut sent = 0;
        while sent < pad && c.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        (
            sent,
            RawResponse::parse(&String::from_utf8_lossy(&out)).status,
        )
    });
    let mut worst = Duration::ZERO;
    let mut peak = rss_before;
    while !sender.is_finished() {
        let start = Instant::now();
        assert!(s.alive());
        worst = worst.max(start.elapsed());
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sent, status) = sender.join().unwrap();
    let grew = peak.saturating_sub(rss_before) / 1024;
    println!("sent {sent} header bytes: {status}; slowest /health {worst:?}; RSS grew {grew} MiB");
    assert!((400..500).contains(&status), "{status}");
    assert!(grew < 8, "RSS grew by {grew} MiB for one part header");
    assert_nothing_stored(&s, &t, "endless part header", 0, 0);
}

/// RFC 2046 allows a boundary of 1 to 70 characters and a preamble before the first one. A
/// short boundary with a short preamble line (found by `fuzz/fuzz_targets/multipart.rs`) panics
/// actix-multipart 0.7; the request must get an answer, never a dropped connection.
#[test]
fn short_boundaries_after_a_preamble_line_are_answered() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let mut outcomes = Vec::new();
    for (b, preamble) in [
        ("b", "\n"),
        ("ab", "--\n"),
        ("abc", "--\n"),
        ("abc", "x\r\n"),
    ] {
        let mut body = preamble.as_bytes().to_vec();
        body.extend(file_part(b, "0", "short.txt", b"short boundary"));
        body.extend(closing(b));
        let r = raw_upload(&s, &t, &form_data(b), &body);
        outcomes.push((b, preamble, r.status));
    }
    println!("{outcomes:?}");
    for (b, preamble, status) in &outcomes {
        assert!(
            *status == 200 || *status == 400,
            "boundary {b:?} after {preamble:?}: {status} (0: no answer)"
        );
    }
    let log = s.log.lock().unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn one_byte_over_the_limit_chunked() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "100000")]);
    let t = s.token("alice", INSTANCE, false);
    let b = "chunkyB";
    for (size, chunk, want) in [
        (100_000, 7_000, 200),
        (100_001, 7_000, 413),
        (100_001, 100_200, 413),
        (100_001, 1, 413),
    ] {
        let mut body = file_part(b, "0", "c.bin", &bytes(size, size as u64));
        body.extend(closing(b));
        let r = raw_upload_chunked(&s, &t, &form_data(b), &body, chunk);
        assert_eq!(r.status, want, "{size} in {chunk}-byte chunks: {}", r.body);
        if want == 413 {
            assert_eq!(r.json()["error"]["code"], "FILE_TOO_LARGE");
        }
        s.eventually("temp files removed", || s.temp_files() == 0);
    }
    assert_eq!(listing(&s, &t).len(), 1);
    assert_eq!(s.blob_count(), 1);
    assert!(s.alive());
}

/// A client that stops at various points of a body and half-closes (so it could still read an
/// answer) or goes away entirely.
#[test]
fn bodies_that_stop_mid_part_then_close() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let b = "StopB";
    let mut body = file_part(b, "0", "whole.bin", &bytes(400_000, 5));
    body.extend(closing(b));
    let header_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let cuts = [
        ("inside the first boundary", 4),
        ("inside the part headers", header_end - 20),
        ("right after the part headers", header_end),
        ("inside the data", header_end + 150_000),
        (
            "before the closing boundary",
            body.len() - closing(b).len() - 2,
        ),
        ("inside the closing boundary", body.len() - 4),
    ];
    for (case, cut) in cuts {
        for half_close in [true, false] {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            c.write_all(&upload_head(&t, &form_data(b), Some(body.len())))
                .unwrap();
            c.write_all(&body[..cut]).unwrap();
            if half_close {
                c.shutdown(Shutdown::Write).unwrap();
                let start = Instant::now();
                let mut out = Vec::new();
                let _ = c.read_to_end(&mut out);
                assert!(start.elapsed() < Duration::from_secs(10), "{case}: hung");
                let r = RawResponse::parse(&String::from_utf8_lossy(&out));
                // The client is gone as far as the body goes; an answer, when there is one,
                // says the body was broken.
                assert!(
                    r.status == 0 || r.status == 400,
                    "{case}: {} {}",
                    r.status,
                    r.body
                );
            } else {
                std::thread::sleep(Duration::from_millis(100));
                drop(c);
            }
            assert_nothing_stored(&s, &t, case, 0, 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slow clients

#[test]
fn request_head_at_one_byte_per_second_gets_408() {
    let s = Server::start_with(&[("DEPOT_HEADER_TIMEOUT_SECS", "2")]);
    let head = b"GET /health HTTP/1.1\r\nHost: depot\r\nUser-Agent: slowloris\r\n\r\n";
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut sent = 0;
    let mut next_byte = start;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "no answer to a slow head after {sent} bytes"
        );
        if sent < head.len() && Instant::now() >= next_byte {
            if c.write_all(&head[sent..sent + 1]).is_err() {
                break; // closed on us: the answer (if any) is already read or lost
            }
            sent += 1;
            next_byte += Duration::from_secs(1);
        }
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let took = start.elapsed();
    let r = RawResponse::parse(&String::from_utf8_lossy(&out));
    println!("slow head: {} after {took:?} and {sent} bytes", r.status);
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&out));
    assert!(sent < head.len(), "the head was never completed");
    assert!(
        took < Duration::from_secs(5),
        "408 within the 2 s header timeout (plus slack), took {took:?}"
    );
    assert!(s.alive());
}

/// Each case sends a body prefix, then stalls with the connection open.
#[test]
fn stalled_upload_bodies_are_aborted_and_their_temp_files_removed() {
    let s = Server::start_with(&[("DEPOT_BODY_TIMEOUT_SECS", "2")]);
    let t = s.token("alice", INSTANCE, false);
    let b = "StallB";
    let first = file_part(b, "0", "staged.bin", &bytes(200_000, 6));
    let mut second = file_part(b, "1", "stalled.bin", &bytes(300_000, 7));
    second.truncate(100_000);
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("nothing of the body", Vec::new(), 0),
        ("inside a file part", second.clone(), 1),
        ("between two parts", first.clone(), 1),
        (
            "inside the second of two parts",
            [first, second].concat(),
            2,
        ),
    ];
    for (case, prefix, temp_while_stalled) in cases {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(&upload_head(&t, &form_data(b), Some(10_000_000)))
            .unwrap();
        c.write_all(&prefix).unwrap();
        let start = Instant::now();
        if temp_while_stalled > 0 {
            s.eventually(&format!("{case}: parts in flight"), || {
                s.temp_files() == temp_while_stalled
            });
        }
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let took = start.elapsed();
        let r = RawResponse::parse(&String::from_utf8_lossy(&out));
        println!("stall {case}: {} after {took:?}", r.status);
        assert_eq!(r.status, 408, "{case}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "REQUEST_TIMEOUT", "{case}");
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "{case}: answered after {took:?}"
        );
        assert_nothing_stored(&s, &t, case, 0, 0);
    }
}

#[test]
fn idle_connections_do_not_starve_real_clients() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    // The idle uploads come from another account: beyond its upload cap they get 429, and
    // they never count against alice's.
    let idler = s.token("mallory", INSTANCE, false);
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        // A third send nothing, a third half a head, a third a head and half a body.
        match i % 3 {
            0 => {}
            1 => c
                .write_all(b"POST /upload/ HTTP/1.1\r\nHost: x\r\n")
                .unwrap(),
            _ => {
                c.write_all(&upload_head(&idler, &form_data("I"), Some(1_000_000)))
                    .unwrap();
                c.write_all(&file_part("I", "0", "idle.bin", b"half"))
                    .unwrap();
            }
        }
        idle.push(c);
    }
    let data = bytes(2 << 20, 8);
    let f = s.upload_one(&t, "real.bin", &data);
    let dl = s.get(f["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(dl.status(), 200);
    assert_eq!(sha256_hex(&dl.bytes().unwrap()), sha256_hex(&data));
    // Not starved: alice was served while idle uploads still held their slots, not after the
    // server's stall timeout had cut them (no wall-clock bound: the connections' own state).
    let waiting = idle
        .iter()
        .skip(2)
        .step_by(3)
        .filter(|c| still_waiting(c))
        .count();
    assert!(
        waiting > 0,
        "alice was served only after the idle uploads were cut"
    );
    drop(idle);
    s.eventually("idle uploads cleaned up", || s.temp_files() == 0);
    assert_eq!(listing(&s, &t).len(), 1);
}

/// True while the server has neither answered nor closed `c`.
fn still_waiting(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let waiting = matches!(c.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    c.set_nonblocking(false).unwrap();
    waiting
}

// ---------------------------------------------------------------------------------------------
// Names

/// Every path in the data dir is one the store made: the client's names never reach the disk.
fn assert_only_store_paths(data: &Path) {
    for p in data_paths(data) {
        let parts: Vec<&str> = p.iter().map(|c| c.to_str().unwrap()).collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        let ok = match parts.as_slice() {
            ["url.key"] => true,
            ["jwt.secret"] | ["depot.lock"] | ["tmp"] | ["meta"] | ["meta", ..] => true,
            ["blobs"] | ["blobs", "sha256"] => true,
            ["blobs", "sha256", a] => hex(a, 2),
            ["blobs", "sha256", a, b] => hex(a, 2) && hex(b, 2),
            ["blobs", "sha256", a, b, h] => hex(h, 64) && h.starts_with(a) && h[2..].starts_with(b),
            _ => false,
        };
        assert!(ok, "unexpected path in the data dir: {}", p.display());
    }
}

/// RFC 6266: `disposition; filename="ascii"; filename*=UTF-8''pct-encoded`, nothing raw.
fn check_content_disposition(cd: &[u8], name: &str) -> bool {
    let cd = std::str::from_utf8(cd).expect("ASCII header");
    assert!(
        cd.bytes().all(|c| (b' '..=b'~').contains(&c)),
        "raw control or non-ASCII byte in {cd:?}"
    );
    let (kind, rest) = cd.split_once("; filename=\"").expect(cd);
    assert!(kind == "inline" || kind == "attachment", "{cd}");
    let (fallback, rest) = rest.split_once("\"; filename*=UTF-8''").expect(cd);
    assert!(
        !fallback.contains(['"', '\\']),
        "quote or backslash in the fallback: {cd}"
    );
    let attr_char = |c: u8| c.is_ascii_alphanumeric() || b"!#$&+-.^_`|~%".contains(&c);
    assert!(rest.bytes().all(attr_char), "not RFC 8187 encoded: {cd}");
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .expect("UTF-8 after decoding");
    assert_eq!(decoded, name, "filename* decodes to the stored name");
    kind == "inline"
}

#[test]
fn hostile_names_are_stored_under_generated_paths_and_echoed_safely() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let b = "NameB";
    let long = format!("{}.txt", "n".repeat(300));
    let long_utf8 = format!("{}.txt", "é".repeat(300));
    // (case, raw filename bytes inside the quotes, expected stored name; None: a 400 is fine)
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("traversal", b"../../etc/x".to_vec(), Some("x".into())),
        (
            "windows traversal",
            b"..\\\\..\\\\boot.ini".to_vec(),
            Some("boot.ini".into()),
        ),
        (
            "double extension",
            b"a.jpg.php".to_vec(),
            Some("a.jpg.php".into()),
        ),
        (
            "encoded NUL",
            b"x.php%00.jpg".to_vec(),
            Some("x.php%00.jpg".into()),
        ),
        (
            "300 chars",
            long.clone().into_bytes(),
            Some(format!("{}.txt", "n".repeat(251))),
        ),
        (
            "300 two-byte chars",
            long_utf8.into_bytes(),
            Some(format!("{}.txt", "é".repeat(251))),
        ),
        (
            "escaped quote",
            b"say \\\"hi\\\".txt".to_vec(),
            Some("say \"hi\".txt".into()),
        ),
        (
            // Browsers send `"` as %22 (the HTML standard's form-data encoding).
            "encoded quote",
            b"a%22b.txt".to_vec(),
            Some("a\"b.txt".into()),
        ),
        (
            "markup",
            b"<img src=x onerror=alert(1)>.txt".to_vec(),
            Some("<img src=x onerror=alert(1)>.txt".into()),
        ),
        (
            "markup with a slash",
            b"<script>alert(1)</script>.txt".to_vec(),
            Some("script>.txt".into()),
        ),
        (
            "RLO",
            "evil\u{202E}gpj.exe".as_bytes().to_vec(),
            Some("evilgpj.exe".into()),
        ),
        (
            "zero-width and BOM",
            "a\u{200B}b\u{FEFF}c.txt".as_bytes().to_vec(),
            Some("abc.txt".into()),
        ),
        ("tab", b"tab\there.txt".to_vec(), Some("tabhere.txt".into())),
        ("only a slash", b"/".to_vec(), Some("file".into())),
        ("dot dot", b"..".to_vec(), Some("file".into())),
        ("dotfile", b".htaccess".to_vec(), Some(".htaccess".into())),
        ("CR LF", b"a\r\nb.txt".to_vec(), None),
        ("bare LF", b"lf\nb.txt".to_vec(), None),
        ("bare CR", b"cr\rb.txt".to_vec(), None),
        (
            "header injection",
            b"x.txt\"\r\nContent-Type: text/html\r\nX-A: \"".to_vec(),
            None,
        ),
        ("raw NUL", b"x.php\0.jpg".to_vec(), None),
        ("ESC", b"esc\x1b[31m.txt".to_vec(), None),
        ("Latin-1 byte", b"caf\xe9.txt".to_vec(), None),
    ];
    let mut stored = 0;
    let mut report = Vec::new();
    for (case, raw_name, want) in &cases {
        let mut body = format!("--{b}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"")
            .into_bytes();
        body.extend_from_slice(raw_name);
        body.extend_from_slice(b"\"\r\nContent-Type: text/html\r\n\r\n");
        body.extend_from_slice(format!("content of {case}").as_bytes());
        body.extend_from_slice(b"\r\n");
        body.extend(closing(b));
        let r = raw_upload(&s, &t, &form_data(b), &body);
        assert!(
            r.status == 200 || (want.is_none() && r.status == 400),
            "{case}: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{case}: the echo is JSON, never markup"
        );
        assert!(
            r.body.bytes().all(|c| c >= b' '),
            "{case}: raw control bytes in the JSON echo"
        );
        let v = r.json();
        if r.status != 200 {
            assert_eq!(v["error"]["code"], "BAD_REQUEST", "{case}");
            assert_nothing_stored(&s, &t, case, stored, stored);
            report.push(format!("{case}: 400"));
            continue;
        }
        stored += 1;
        let files = v.as_object().unwrap();
        assert_eq!(files.len(), 1, "{case}");
        let f = files.values().next().unwrap();
        let name = f["name"].as_str().unwrap();
        let shown: String = name.chars().take(40).collect();
        report.push(format!(
            "{case}: 200 as {shown:?} ({} chars)",
            name.chars().count()
        ));
        if let Some(want) = want {
            assert_eq!(name, want, "{case}");
        }
        assert!(name.chars().count() <= 255, "{case}");
        assert!(
            !name
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\'),
            "{case}: {name:?}"
        );
        assert_eq!(f["path"], format!("/{name}"), "{case}");
        let id = f["hypi"]["id"].as_str().unwrap();
        let inst = f["hypi"]["instanceId"].as_str().unwrap();
        let url = f["url"]["path"].as_str().unwrap();
        let generated = match f["extension"].as_str() {
            Some(ext) => format!("/file/{inst}-{id}.{ext}"),
            None => format!("/file/{inst}-{id}"),
        };
        assert_eq!(url, generated, "{case}: the URL holds generated parts only");
        assert_ne!(
            f["type"], "text/html",
            "{case}: the client's type is ignored"
        );
        let dl = s.get(url, Some(&t));
        assert_eq!(dl.status(), 200, "{case}");
        check_content_disposition(dl.headers()["content-disposition"].as_bytes(), name);
        assert_eq!(
            dl.text().unwrap(),
            format!("content of {case}"),
            "{case}: the bytes as sent"
        );
    }
    println!(
        "{stored} of {} hostile names stored:\n{}",
        cases.len(),
        report.join("\n")
    );
    assert_eq!(listing(&s, &t).len(), stored);
    assert_only_store_paths(&s.data);
    assert!(!Path::new("/etc/x").exists());
}

/// A directory may hold a literal `%`: listing by it must find what was stored in it.
#[test]
fn directory_with_a_literal_percent_lists_its_files() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let (status, res) = s.upload(&t, "/upload/a%2541", &[("p.txt", b"p")]);
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["p.txt"]["directory"], "/a%41");
    let v: Value = s
        .get("/files?directory=%2Fa%2541", Some(&t))
        .json()
        .unwrap();
    assert_eq!(
        v["edges"].as_array().unwrap().len(),
        1,
        "the file stored in /a%41 is listed under /a%41: {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Content

#[test]
fn active_content_is_never_inline_whatever_its_disguise() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let script = b"<script>alert(document.cookie)</script>";
    let html = [b"<!DOCTYPE html><html><body>".as_slice(), script].concat();
    let svg = [
        b"<svg xmlns=\"http://www.w3.org/2000/svg\">".as_slice(),
        script,
        b"</svg>",
    ]
    .concat();
    let gif_html = [b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".as_slice(), script].concat();
    let png_html = [png_3x2().as_slice(), script].concat();
    let bom_html = [b"\xEF\xBB\xBF<html>".as_slice(), script].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("page.html", html.clone()),
        ("page.HTM", html.clone()),
        ("page.xhtml", html.clone()),
        ("page.shtml", html.clone()),
        ("pic.svg", svg.clone()),
        ("pic.svgz", svg.clone()),
        ("svg-as.png", svg.clone()),
        ("html-as.jpg", html.clone()),
        ("polyglot.gif", gif_html.clone()),
        ("polyglot.html", gif_html),
        ("png-magic.html", png_html),
        ("bom.html", bom_html),
        ("no-extension", html.clone()),
        ("page.txt", html),
        ("app.js", script.to_vec()),
        ("mod.mjs", script.to_vec()),
        ("data.xml", b"<?xml version=\"1.0\"?><x/>".to_vec()),
        (
            "style.xsl",
            b"<?xml version=\"1.0\"?><xsl:stylesheet/>".to_vec(),
        ),
        ("feed.rss", b"<?xml version=\"1.0\"?><rss/>".to_vec()),
        ("atom.atom", b"<?xml version=\"1.0\"?><feed/>".to_vec()),
    ];
    let files: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let (status, res) = s.upload(&t, "/upload/", &files);
    assert_eq!(status, 200, "{res}");
    let active = |ct: &str| {
        let e = ct.split(';').next().unwrap().trim().to_ascii_lowercase();
        e.contains("html")
            || e.contains("xml")
            || e.contains("javascript")
            || e.contains("ecmascript")
            || e == "image/svg+xml"
    };
    let mut inline = Vec::new();
    for (name, _) in &cases {
        let f = &res[*name];
        let dl = s.get(f["url"]["path"].as_str().unwrap(), Some(&t));
        assert_eq!(dl.status(), 200, "{name}");
        let h = dl.headers();
        let ct = h["content-type"].to_str().unwrap();
        assert_eq!(ct, f["type"].as_str().unwrap(), "{name}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{name}");
        assert_eq!(h["content-security-policy"], "sandbox", "{name}");
        let is_inline = check_content_disposition(
            h["content-disposition"].as_bytes(),
            f["name"].as_str().unwrap(),
        );
        assert!(!(is_inline && active(ct)), "{name}: served inline as {ct}");
        if is_inline {
            inline.push(format!("{name} ({ct})"));
        }
    }
    println!("served inline (inactive types only): {}", inline.join(", "));
}

// ---------------------------------------------------------------------------------------------
// Access

#[test]
fn other_accounts_and_anonymous_callers_get_nothing_more_than_granted() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let fb = s.upload_one(&bob, "bob.txt", b"bob's secret");
    let fb2 = s.upload_one(&bob, "other.txt", b"bob's other secret");
    let fa = s.upload_one(&alice, "alice.txt", b"alice's");
    let id = |f: &Value| f["hypi"]["id"].as_str().unwrap().to_string();
    let url = |f: &Value| f["url"]["path"].as_str().unwrap().to_string();
    let (bid, burl, bid2, burl2) = (id(&fb), url(&fb), id(&fb2), url(&fb2));

    let req = |method: &str, path: &str, token: Option<&str>, body: Option<Value>| -> u16 {
        let mut r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .header("hypi-domain", INSTANCE);
        if let Some(t) = token {
            r = r.header("Authorization", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().unwrap().status().as_u16()
    };
    let anon_grant = |resource: &str| {
        json!({"resource": resource, "resourceType": "File", "operationType": "Query",
               "operation": "*", "permissionType": "RBP", "approved": true,
               "members": [{"hypi": {"id": "anonymous"}}]})
    };
    let listed = |token: &str, query: &str| -> Vec<String> {
        let v: Value = s
            .get(&format!("/files?first=1000{query}"), Some(token))
            .json()
            .unwrap();
        v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["hypi"]["id"].as_str().unwrap().to_string())
            .collect()
    };

    // Alice, before any grant: bob's file does not exist for her, however she asks.
    let no_ext = burl.rsplit_once('.').unwrap().0.to_string();
    let table: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("GET", format!("/files/{bid}"), None, 404),
        ("GET", burl.clone(), None, 404),
        ("HEAD", burl.clone(), None, 404),
        ("GET", format!("/file/{bid}.txt"), None, 404),
        ("GET", no_ext, None, 404),
        ("GET", format!("{burl}?download=1"), None, 404),
        ("DELETE", format!("/files/{bid}"), None, 404),
        ("GET", format!("/access-rights?resource={bid}"), None, 404),
        ("POST", "/access-rights".into(), Some(anon_grant(&bid)), 404),
        ("GET", "/file/..%2Fjwt.secret".into(), None, 404),
        (
            "GET",
            "/file/%2e%2e%2f%2e%2e%2fjwt.secret".into(),
            None,
            404,
        ),
    ];
    for (method, path, body, want) in &table {
        assert_eq!(
            req(method, path, Some(&alice), body.clone()),
            *want,
            "alice {method} {path}"
        );
    }
    for raw in [
        "/file/../jwt.secret",
        "/../jwt.secret",
        "/file/%2e%2e/jwt.secret",
    ] {
        let secret = std::fs::read_to_string(s.data.join("jwt.secret")).unwrap_or_default();
        let r = send(
            &s,
            format!("GET {raw} HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 404, "{raw}");
        assert!(
            secret.is_empty() || !r.body.contains(secret.trim()),
            "{raw}"
        );
    }
    assert!(!listed(&alice, "").contains(&bid));
    assert!(!listed(&alice, "&directory=/").contains(&bid));
    assert_eq!(listed(&bob, "").len(), 2);

    // Bob grants anonymous reads of one file; the admin switches anonymous requests on.
    let r = s
        .client
        .post(s.url("/access-rights"))
        .header("Authorization", &bob)
        .json(&anon_grant(&bid))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let right: Value = r.json().unwrap();
    let rid = right["hypi"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        req(
            "PUT",
            &format!("/instances/{INSTANCE}"),
            Some(&admin),
            Some(json!({"anonymousRequests": true}))
        ),
        200
    );

    let table: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("GET", burl.clone(), None, 200),
        ("HEAD", burl.clone(), None, 200),
        ("GET", format!("/files/{bid}"), None, 200),
        ("GET", burl2.clone(), None, 401),
        ("GET", format!("/files/{bid2}"), None, 401),
        ("GET", url(&fa), None, 401),
        ("GET", "/files".into(), None, 401),
        ("GET", "/files?directory=/".into(), None, 401),
        ("DELETE", format!("/files/{bid}"), None, 401),
        (
            "POST",
            "/access-rights".into(),
            Some(anon_grant(&bid2)),
            401,
        ),
        ("POST", "/access-rights".into(), Some(anon_grant("*")), 401),
        ("GET", format!("/access-rights?resource={bid}"), None, 401),
        ("DELETE", format!("/access-rights/{rid}"), None, 401),
        (
            "PUT",
            format!("/instances/{INSTANCE}"),
            Some(json!({"anonymousRequests": false})),
            401,
        ),
    ];
    for (method, path, body, want) in &table {
        assert_eq!(
            req(method, path, None, body.clone()),
            *want,
            "anonymous {method} {path}"
        );
    }
    // A public file is public to alice too, but still not hers to list, delete or re-grant.
    assert_eq!(req("GET", &burl, Some(&alice), None), 200);
    assert_eq!(req("GET", &burl2, Some(&alice), None), 404);
    assert!(!listed(&alice, "").contains(&bid));
    assert_eq!(
        req("DELETE", &format!("/files/{bid}"), Some(&alice), None),
        403
    );
    assert_eq!(
        req(
            "POST",
            "/access-rights",
            Some(&alice),
            Some(anon_grant(&bid))
        ),
        403
    );
    assert_eq!(
        req(
            "DELETE",
            &format!("/access-rights/{rid}"),
            Some(&alice),
            None
        ),
        404
    );
    // Alice's wildcard grant covers her own files only, never bob's other file.
    assert_eq!(
        req(
            "POST",
            "/access-rights",
            Some(&alice),
            Some(anon_grant("*"))
        ),
        201
    );
    assert_eq!(req("GET", &url(&fa), None, None), 200);
    assert_eq!(req("GET", &burl2, None, None), 401);
    // Everything bob had is intact after all of that.
    assert_eq!(req("GET", &burl, Some(&bob), None), 200);
    assert_eq!(listed(&bob, "").len(), 2);
    assert!(s.alive());
}

// ---------------------------------------------------------------------------------------------
// Disk full

/// A tmpfs mounted for one test, unmounted on drop (after the server using it has stopped).
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self { dir })
    }

    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Needs root to mount a small tmpfs (CI and the dev machines run as root). Without root, or
/// where mounting is refused, it fails and says why: a disk-full test that passes without
/// filling a disk would claim what nobody checked. Elsewhere run the suite with
/// `-- --skip disk_full`, which shows in the test summary.
#[test]
fn disk_full_is_507_leaves_nothing_and_the_server_keeps_serving() {
    assert!(
        is_root(),
        "this test mounts an 8 MiB tmpfs and needs root; run as root or pass `-- --skip disk_full`"
    );
    let mount = Mount::tmpfs("8m").unwrap_or_else(|e| {
        panic!("cannot mount an 8 MiB tmpfs (needs root and CAP_SYS_ADMIN): {e}")
    });
    let data = mount.dir.path().join("data");
    let s = Server::spawn(&data, &[], &[]).expect("server on the tmpfs");
    let t = s.token("alice", INSTANCE, false);
    let keep = bytes(100_000, 9);
    let f = s.upload_one(&t, "keep.bin", &keep);
    let free = mount.free_bytes();
    println!("free on the 8 MiB tmpfs after one upload: {free} bytes");

    let too_big = bytes(free as usize + (2 << 20), 10);
    let half = bytes(free as usize / 2 + (512 << 10), 11);
    let half2 = bytes(free as usize / 2 + (512 << 10), 12);
    type Parts<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: Vec<(&str, Parts)> = vec![
        (
            "one part larger than the free space",
            vec![("big.bin", &too_big)],
        ),
        (
            "two parts that fit alone, not together",
            vec![("h1.bin", &half), ("h2.bin", &half2)],
        ),
    ];
    for (case, files) in &cases {
        let (status, res) = s.upload(&t, "/upload/", files);
        assert_eq!(status, 507, "{case}: {res}");
        assert_eq!(res["error"]["code"], "INSUFFICIENT_STORAGE", "{case}");
        s.eventually(&format!("{case}: temp files removed"), || {
            s.temp_files() == 0
        });
        assert_eq!(s.blob_count(), 1, "{case}: no blob left behind");
        assert_eq!(listing(&s, &t).len(), 1, "{case}: no record");
        let dl = s.get(f["url"]["path"].as_str().unwrap(), Some(&t));
        assert_eq!(dl.status(), 200, "{case}");
        assert_eq!(
            sha256_hex(&dl.bytes().unwrap()),
            sha256_hex(&keep),
            "{case}"
        );
    }
    // The space is back: a file that fits is accepted.
    let g = s.upload_one(&t, "after.bin", &bytes(200_000, 13));
    assert_eq!(g["size"], 200_000);
    assert_eq!(listing(&s, &t).len(), 2);
    s.stop();
    drop(mount);
}

// ---------------------------------------------------------------------------------------------
// Body bounds on every route (size, stall, rate) and upload caps

/// Peak resident memory of a process, from /proc/PID/status.
fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A POST head; `length` None means chunked.
fn post_head(path: &str, token: Option<&str>, content_type: &str, length: Option<u64>) -> String {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    let auth = token
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: depot\r\n{auth}hypi-domain: {INSTANCE}\r\nConnection: close\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n"
    )
}

/// Sends `total` bytes of a JSON-ish body after `head` as fast as the server takes them, stopping
/// when it stops reading, then returns the answer.
fn flood(addr: &str, head: &str, total: u64, chunked: bool) -> RawResponse {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let block = vec![b' '; 64 << 10];
    let mut sent = 0u64;
    let mut first = true;
    while sent < total {
        let mut piece = Vec::with_capacity(block.len() + 16);
        if chunked {
            piece.extend_from_slice(format!("{:x}\r\n", block.len()).as_bytes());
        }
        // A JSON body that would parse if it ever ended: `[` then spaces.
        piece.extend_from_slice(if first { b"[" } else { b" " });
        piece.extend_from_slice(&block[1..]);
        if chunked {
            piece.extend_from_slice(b"\r\n");
        }
        first = false;
        if c.write_all(&piece).is_err() {
            break; // the server answered and closed: what we want
        }
        sent += block.len() as u64;
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    RawResponse::parse(&String::from_utf8_lossy(&out))
}

/// Issue 10 (1): a large body to /graphql or /access-rights, with no token or a bad one, is
/// answered 413 (or 401) without being held in memory; the error is the JSON shape.
#[test]
fn large_bodies_to_json_routes_get_413_without_being_buffered() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let pid = server_pid(&s).expect("server pid");
    let json = "application/json";
    let big = 128u64 << 20;

    // Declared too large: refused before a byte is read.
    let r = flood(
        &s.addr,
        &post_head("/graphql", None, json, Some(big)),
        big,
        false,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    let r = flood(
        &s.addr,
        &post_head("/access-rights", Some(&t), json, Some(50_000_000)),
        50_000_000,
        false,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    // Chunked, so only counting while streaming can tell.
    for (path, token) in [("/graphql", None), ("/access-rights", Some(t.as_str()))] {
        let r = flood(&s.addr, &post_head(path, token, json, None), 8 << 20, true);
        assert_eq!(r.status, 413, "{path} chunked: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE", "{path}");
    }
    // A bad token is refused before the body is read, whatever its size.
    let r = flood(
        &s.addr,
        &post_head("/graphql", Some("x.y.z"), json, None),
        8 << 20,
        true,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "UNAUTHENTICATED");
    // No token on a route that needs one: 401 before the body.
    let r = flood(
        &s.addr,
        &post_head("/access-rights", None, json, None),
        8 << 20,
        true,
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // Several 128 MiB bodies at once, tokenless and with an invalid token, framed both ways.
    let before = hwm_kib(pid);
    let floods: Vec<_> = (0..6)
        .map(|i| {
            let s_addr = s.addr.clone();
            let head = post_head(
                "/graphql",
                (i % 2 == 1).then_some("not-a-token"),
                json,
                (i % 3 == 0).then_some(big),
            );
            std::thread::spawn(move || flood(&s_addr, &head, big, i % 3 != 0).status)
        })
        .collect();
    let statuses: Vec<u16> = floods.into_iter().map(|f| f.join().unwrap()).collect();
    let after = hwm_kib(pid);
    println!("6 x 128 MiB to /graphql: {statuses:?}; VmHWM {before} -> {after} KiB");
    for st in &statuses {
        assert!(*st == 413 || *st == 401, "{statuses:?}");
    }
    assert!(
        after < before + 48 * 1024,
        "peak RSS grew from {before} to {after} KiB"
    );

    // Plain mistakes are JSON errors too, not text.
    let (status, text) =
        s.raw(format!("{}{}", post_head("/graphql", None, json, Some(5)), "{nope").as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"code\":\"BAD_REQUEST\""), "{text}");
    // GraphQL multipart (file uploads held in memory) is refused: uploads go through /upload.
    let mp = "--B\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--B--\r\n";
    let (status, text) = s.raw(
        format!(
            "{}{mp}",
            post_head(
                "/graphql",
                None,
                "multipart/form-data; boundary=B",
                Some(mp.len() as u64)
            )
        )
        .as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("POST /upload"), "{text}");
    // And a small request still works.
    let v = s.graphql(None, "{ __typename }");
    assert!(v["data"].is_object(), "{v}");
    assert!(s.alive());
}

/// Sends `head`, then one byte of body every `every`, until the server answers; returns the
/// answer and how long it took.
fn drip(s: &Server, head: &[u8], prefix: &[u8], every: Duration) -> (RawResponse, Duration) {
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(every)).unwrap();
    c.write_all(head).unwrap();
    c.write_all(prefix).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(20) {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if out.is_empty() && c.write_all(b" ").is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (
        RawResponse::parse(&String::from_utf8_lossy(&out)),
        start.elapsed(),
    )
}

/// Issue 10 (2, 5): a body that never stalls but arrives far below the minimum rate is cut with
/// 408 once the first window (the grace period) is over, on /graphql, /access-rights and uploads
/// alike; an upload's temp file goes with it.
#[test]
fn slow_drip_bodies_get_408_on_every_route() {
    // Stall timeout far away (30 s): only the rate (1000 B/s over 2 s) can end these.
    let s = Server::start_with(&[
        ("DEPOT_BODY_TIMEOUT_SECS", "30"),
        ("DEPOT_BODY_MIN_RATE", "1000"),
        ("DEPOT_BODY_RATE_WINDOW_SECS", "2"),
    ]);
    let t = s.token("alice", INSTANCE, false);
    let every = Duration::from_millis(300);
    let json = "application/json";
    let b = "DripB";
    let part = file_part(b, "0", "drip.bin", &bytes(50_000, 9));
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "tokenless /graphql",
            post_head("/graphql", None, json, Some(100_000)).into_bytes(),
            b"{\"query\":\"".to_vec(),
        ),
        (
            "/access-rights",
            post_head("/access-rights", Some(&t), json, Some(100_000)).into_bytes(),
            b"[".to_vec(),
        ),
        (
            "upload inside a file part",
            upload_head(&t, &form_data(b), Some(10_000_000)),
            part,
        ),
    ];
    for (case, head, prefix) in cases {
        let (r, took) = drip(&s, &head, &prefix, every);
        println!("{case}: {} after {took:?}", r.status);
        assert_eq!(r.status, 408, "{case}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "REQUEST_TIMEOUT", "{case}");
        assert!(r.body.contains("too slow"), "{case}: {}", r.body);
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "{case}: answered after {took:?}"
        );
    }
    assert_nothing_stored(&s, &t, "slow drips", 0, 0);
    // A body at a fine rate is untouched by the same bounds.
    let f = s.upload_one(&t, "fast.bin", &bytes(3 << 20, 10));
    assert_eq!(f["size"], 3 << 20);
}

/// Issue 10 (2): uploads in flight are capped per account and overall (429 beyond), the caps
/// free up when uploads end, and another account's reads stay fast while many slow uploads are
/// held open.
#[test]
fn uploads_in_flight_are_capped_per_account_and_overall() {
    let s = Server::start_with(&[
        ("DEPOT_MAX_UPLOADS_PER_ACCOUNT", "20"),
        ("DEPOT_MAX_UPLOADS", "100"),
        ("DEPOT_BODY_TIMEOUT_SECS", "30"),
    ]);
    let victim = s.token("victim", INSTANCE, false);
    let f = s.upload_one(&victim, "mine.txt", b"the victim's file");
    let id = f["hypi"]["id"].as_str().unwrap().to_string();
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let b = "CapB";
    let mut held = Vec::new();
    let mut refused = Vec::new();
    // 8 accounts x 20 uploads = 160 tried: 100 admitted overall, the rest 429.
    for a in 0..8 {
        let t = s.token(&format!("slow{a}"), INSTANCE, false);
        for _ in 0..20 {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.write_all(&upload_head(&t, &form_data(b), Some(10_000_000)))
                .unwrap();
            c.write_all(&file_part(b, "0", "slow.bin", b"a few bytes"))
                .unwrap();
            held.push(c);
        }
    }
    // The 21st upload of one account is refused even while the server has room.
    let t0 = s.token("slow0", INSTANCE, false);
    // The admitted uploads wait for more bytes; the rest are answered 429 and closed. (A part
    // takes a temp file only once it has a batch to write, so temp files do not count them.)
    let mut answered = vec![false; held.len()];
    let end = Instant::now() + Duration::from_secs(10);
    while refused.len() < 60 && Instant::now() < end {
        for (c, done) in held.iter_mut().zip(answered.iter_mut()) {
            if *done {
                continue;
            }
            c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            if !out.is_empty() {
                *done = true;
                refused.push(RawResponse::parse(&String::from_utf8_lossy(&out)));
            }
        }
    }
    // No more than the 60 over the caps are answered, even given time.
    std::thread::sleep(Duration::from_millis(300));
    for (c, done) in held.iter_mut().zip(answered.iter_mut()) {
        if !*done {
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            assert!(out.is_empty(), "an admitted upload was answered early");
        }
    }
    assert_eq!(refused.len(), 60, "160 tried, 100 admitted");
    for r in &refused {
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "TOO_MANY_REQUESTS");
    }
    let (status, body) = s.upload(&t0, "/upload/", &[("more.txt", b"more")]);
    assert_eq!(status, 429, "{body}");
    // Another account reads its file and downloads it promptly meanwhile.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(s.get(&format!("/files/{id}"), Some(&victim)).status(), 200);
        assert_eq!(s.get(&path, Some(&victim)).status(), 200);
        worst = worst.max(start.elapsed());
    }
    println!("100 slow uploads held: slowest victim read+download {worst:?}");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
    // The victim is below its own cap, but the server is full.
    let (status, body) = s.upload(&victim, "/upload/", &[("more.txt", b"more")]);
    assert_eq!(status, 429, "{body}");
    drop(held);
    s.eventually("slow uploads cleaned up", || s.temp_files() == 0);
    // The slots are free again.
    let (status, body) = s.upload(&t0, "/upload/", &[("more.txt", b"more")]);
    assert_eq!(status, 200, "{body}");
}

/// Issue 9 §4: RFC 2046 allows transport padding (spaces, tabs) between a boundary and its CRLF;
/// some clients send it. Those bodies are stored like any other, whatever their framing.
#[test]
fn transport_padding_after_boundaries_is_accepted() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let b = "PadB0und";
    let one = bytes(70_000, 11);
    let two = b"second file\r\n--PadB0un not a boundary \r\n".to_vec();
    let mut body = format!(
        "--{b} \t \r\nContent-Disposition: form-data; name=\"0\"; filename=\"one.bin\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&one);
    body.extend(format!("\r\n--{b}\t\r\nContent-Disposition: form-data; name=\"1\"; filename=\"two.txt\"\r\n\r\n").into_bytes());
    body.extend_from_slice(&two);
    body.extend(format!("\r\n--{b}--  \r\n").into_bytes());
    for chunk in [None, Some(1000), Some(7)] {
        let r = match chunk {
            None => raw_upload(&s, &t, &form_data(b), &body),
            Some(n) => raw_upload_chunked(&s, &t, &form_data(b), &body, n),
        };
        assert_eq!(r.status, 200, "{chunk:?}: {}", r.body);
        let v = r.json();
        assert_eq!(v["one.bin"]["sha256"], sha256_hex(&one), "{chunk:?}");
        assert_eq!(v["two.txt"]["sha256"], sha256_hex(&two), "{chunk:?}");
    }
    assert!(s.alive());
}

/// Issue 10 (8): a part's header block is held to `max_part_header_bytes` (16 KiB), and the
/// parser buffers at most 64 KiB while looking for its end; about 2 MiB of headers used to pass.
#[test]
fn part_headers_over_the_limit_are_refused() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let b = "HdrLim";
    for (pad, want) in [
        (15 * 1024, 200),
        (17 * 1024, 400),
        (60 * 1024, 400),
        (2 << 20, 400),
    ] {
        let mut body = part(
            b,
            &format!(
                "Content-Disposition: form-data; name=\"0\"; filename=\"h.txt\"\r\nX-Pad: {}",
                "p".repeat(pad)
            ),
            b"headers",
        );
        body.extend(closing(b));
        let r = raw_upload(&s, &t, &form_data(b), &body);
        assert_eq!(r.status, want, "{pad} bytes of header: {}", r.body);
        if want == 400 {
            assert!(r.body.contains("headers are larger than"), "{}", r.body);
        }
    }
    assert_nothing_stored(&s, &t, "part headers", 1, 1);
}

/// A chunked body that declares a chunk of 2^64-1 bytes: actix-http's decoder takes the size
/// as it is (it does not expose it), so the bound is the one every body has: the route's size
/// cap, counted while streaming (413), and the stall and minimum-rate limits.
#[test]
fn a_huge_declared_chunk_size_is_bounded_like_any_body() {
    let s = Server::start();
    let token = s.token("alice", INSTANCE, false);
    for path in ["/graphql", "/access-rights"] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
             hypi-domain: {INSTANCE}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        // Up to 4 MiB, past the 1 MiB cap; the server stops reading once it has answered.
        for _ in 0..64 {
            if c.write_all(&[b'x'; 65536]).is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let r = RawResponse::parse(&String::from_utf8_lossy(&out));
        assert_eq!(r.status, 413, "{path}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE", "{path}");
    }
    assert!(s.alive());
}
