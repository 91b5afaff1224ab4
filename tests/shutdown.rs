//! Graceful shutdown (issue 15): on SIGTERM or SIGINT the server stops accepting, lets uploads
//! in flight finish within `shutdown_grace_secs`, and aborts the rest leaving no temp file and
//! no record; the data dir then opens clean.

mod common;
use common::*;
use std::time::Duration;

/// 1 MiB, sent as 300 KiB (past the first write to storage: a temp file exists) and the rest
/// later.
const SIZE: usize = 1 << 20;
const FIRST: usize = 300 * 1024;

#[test]
fn an_upload_in_flight_finishes_within_the_grace_period() {
    for signal in ["TERM", "INT"] {
        let s = Server::start_with(&[("DEPOT_SHUTDOWN_GRACE_SECS", "60")]);
        let token = s.token("alice", INSTANCE, false);
        let data = bytes(SIZE, 21);
        let upload = Trickle::open(&s, &token, "late.bin", &data, FIRST);
        s.eventually(&format!("SIG{signal}: the upload has a temp file"), || {
            s.temp_files() >= 1
        });
        // An idle keep-alive connection (the harness client's, pooled after this request) is
        // closed at the signal: the exit below waits for the upload only, not for the 60 s
        // grace period.
        assert_eq!(s.get("/health", None).status(), 200);
        let pid = pid_on(&s.data);
        send_signal(pid, signal);
        s.eventually(&format!("SIG{signal}: shutdown begins"), || {
            s.logged("shutting down")
        });
        // The rest of the body trickles in after the signal.
        let answer = upload
            .finish(8, Duration::from_millis(100))
            .expect("the answer");
        let res = RawResponse::parse(&answer);
        assert_eq!(res.status, 200, "SIG{signal}: {answer}");
        let v: Value = serde_json::from_str(&res.body).unwrap();
        assert_eq!(first_record(&v)["size"], SIZE as u64, "SIG{signal}: {v}");
        wait_exit(pid, Duration::from_secs(30), &format!("SIG{signal}"));
        assert!(
            s.logged("stopped"),
            "SIG{signal}: {}",
            s.log.lock().unwrap()
        );
        assert_eq!(s.temp_files(), 0, "SIG{signal}");

        // The file is there after a restart, whole.
        let again = Server::spawn(&s.data, &[], &[]).expect("restart");
        let files = listing(&again, &token);
        assert_eq!(files.len(), 1, "SIG{signal}");
        let path = files[0]["url"]["path"].as_str().unwrap().to_string();
        let got = again.get(&path, Some(&token)).bytes().unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&data), "SIG{signal}");
    }
}

#[test]
fn an_upload_past_the_grace_period_is_aborted_and_leaves_nothing() {
    let s = Server::start_with(&[("DEPOT_SHUTDOWN_GRACE_SECS", "1")]);
    let token = s.token("alice", INSTANCE, false);
    let done = s.upload_one(&token, "kept.txt", b"uploaded before the signal");
    let data = bytes(SIZE, 22);
    let upload = Trickle::open(&s, &token, "cut.bin", &data, FIRST);
    s.eventually("the upload has a temp file", || s.temp_files() >= 1);
    let pid = pid_on(&s.data);
    send_signal(pid, "TERM");
    // The client goes quiet: the grace period runs out and the server exits anyway.
    wait_exit(pid, Duration::from_secs(30), "grace exceeded");
    // The upload got no success answer.
    let answer = upload.finish(1, Duration::ZERO).unwrap_or_default();
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "an aborted upload was answered 200: {answer}"
    );
    // No temp file, no blob of the cut upload.
    assert_eq!(s.temp_files(), 0, "{}", s.log.lock().unwrap());
    assert_eq!(s.blob_count(), 1);

    // The data dir is consistent offline and opens clean: only the first file is there.
    let (clean, out) = depot(&["fsck"], &s.data);
    assert!(clean, "{out}");
    assert!(out.contains("clean"), "{out}");
    let again = Server::spawn(&s.data, &[], &[]).expect("restart");
    assert!(
        !again.logged("removed temp files"),
        "nothing was left to sweep"
    );
    let files = listing(&again, &token);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["hypi"]["id"], done["hypi"]["id"]);
}
