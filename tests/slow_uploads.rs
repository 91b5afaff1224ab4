//! Slow-drip uploads (issue 10, item 2): hundreds of open uploads that send a few bytes now and
//! then must hold no server thread, and other accounts' reads must stay fast meanwhile.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open slow uploads during the test.
const SLOW: usize = 300;
/// Accounts they are spread over.
const ACCOUNTS: usize = 6;

/// The server's pid, found by its data dir (unique per test).
fn server_pid(s: &Server) -> u32 {
    let needle = s.data.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.contains("serve") && cmd.contains(needle.as_str())).then_some(pid)
        })
        .expect("server process")
}

/// `Threads:` of /proc/PID/status.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

/// Opens an upload whose body announces 64 MiB, sends its head, a part header and `first`
/// bytes of data, and leaves it open.
fn open_slow_upload(s: &Server, token: &str, first: usize) -> TcpStream {
    let boundary = "slowslowslowboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"slow.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend(bytes(first, 7));
    let head = format!(
        "POST /upload/ HTTP/1.1\r\nHost: depot\r\nAuthorization: {token}\r\nhypi-domain: {INSTANCE}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        64 << 20
    );
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body).unwrap();
    c
}

/// Hundreds of open uploads from several accounts, each past its first write to storage and
/// then dripping a few bytes a second: the server's thread count stays bounded (each used to
/// hold a blocking-pool thread while it waited for bytes) and another account's metadata read,
/// small download and streamed download each answer within a second on every try.
#[test]
fn slow_drip_uploads_hold_no_threads_and_other_reads_stay_fast() {
    // The attack here is threads, not counts or rates: lift the upload caps above the 300
    // connections and keep the minimum-rate check out of the test's time span (the rate and
    // caps have tests of their own in tests/hostile.rs).
    let s = Server::start_with(&[
        ("DEPOT_MAX_UPLOADS_PER_ACCOUNT", "64"),
        ("DEPOT_MAX_UPLOADS", "400"),
        ("DEPOT_BODY_RATE_WINDOW_SECS", "600"),
    ]);
    let victim = s.token("victim", INSTANCE, false);
    let small = s.upload_one(&victim, "small.txt", b"hello, slow world");
    let large_bytes = bytes(3 << 20, 11);
    let large = s.upload_one(&victim, "large.bin", &large_bytes);
    let small_id = small["hypi"]["id"].as_str().unwrap().to_string();
    let pid = server_pid(&s);
    let idle_threads = threads(pid);

    let tokens: Vec<String> = (0..ACCOUNTS)
        .map(|i| s.token(&format!("drip{i}"), INSTANCE, false))
        .collect();
    // 300 KiB each: more than one writer batch, so every upload has started writing to
    // storage (and has a temp file) before it starts to drip.
    let mut conns: Vec<TcpStream> = (0..SLOW)
        .map(|i| open_slow_upload(&s, &tokens[i % ACCOUNTS], 300 * 1024))
        .collect();
    s.eventually("every slow upload has a temp file", || {
        s.temp_files() >= SLOW
    });

    let stop = Arc::new(AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for c in &mut conns {
                    // A few bytes each; a failed write means the server gave up on it.
                    let _ = c.write_all(b"drip");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            conns
        })
    };

    let mut worst = Duration::ZERO;
    let mut most_threads = 0;
    for round in 0..10 {
        let t0 = Instant::now();
        let r = s.get(&format!("/files/{small_id}"), Some(&victim));
        assert_eq!(r.status(), 200, "round {round}: GET /files/{{id}}");
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "round {round}: GET /files took {took:?}"
        );
        worst = worst.max(took);

        let t0 = Instant::now();
        let r = s.get(small["url"]["path"].as_str().unwrap(), Some(&victim));
        assert_eq!(r.status(), 200, "round {round}: small download");
        assert_eq!(r.bytes().unwrap().as_ref(), b"hello, slow world");
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "round {round}: small download took {took:?}"
        );
        worst = worst.max(took);

        let t0 = Instant::now();
        let r = s.get(large["url"]["path"].as_str().unwrap(), Some(&victim));
        assert_eq!(r.status(), 200, "round {round}: large download");
        assert!(r.bytes().unwrap().as_ref() == &large_bytes[..]);
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "round {round}: large download took {took:?}"
        );
        worst = worst.max(took);

        let n = threads(pid);
        most_threads = most_threads.max(n);
        assert!(
            n < 100,
            "round {round}: {n} server threads with {SLOW} slow uploads open (idle: {idle_threads})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let conns = dripper.join().unwrap();
    assert_eq!(s.temp_files(), SLOW, "the slow uploads were still open");
    eprintln!(
        "{SLOW} slow uploads: worst victim request {worst:?}, at most {most_threads} server threads (idle {idle_threads})"
    );

    // Closing them aborts every upload and removes its temp file.
    drop(conns);
    s.eventually("aborted uploads leave no temp files", || {
        s.temp_files() == 0
    });
    assert!(s.alive());
}
