//! Operating depot (issue 15): request ids, JSON logs, `/health` and `/ready`, `/metrics`, and
//! graceful shutdown on SIGTERM/SIGINT, each against the real binary over real HTTP.

mod common;
use common::*;
use std::time::Duration;

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

fn request_id(r: &reqwest::blocking::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

fn is_ulid(s: &str) -> bool {
    s.len() == 26 && s.parse::<ulid::Ulid>().is_ok()
}

#[test]
fn request_ids_are_kept_generated_or_replaced_and_name_errors_and_log_lines() {
    let s = Server::start_with(&[("DEPOT_LOG", "info,depot::access=debug")]);
    // (case, sent id, whether it is kept)
    let long = "a".repeat(129);
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("none sent: generated", None, false),
        ("a ULID", Some("01J9Z3K8Q6V2A0B1C2D3E4F5G6"), true),
        ("a UUID", Some("3f2b8c4e-1d2a-4b7c-9e8f-0a1b2c3d4e5f"), true),
        ("128 characters", Some(&long[..128]), true),
        ("129 characters: replaced", Some(&long), false),
        ("a space: replaced", Some("two words"), false),
        ("a quote and braces: replaced", Some("x\"}{\"y"), false),
        ("empty: replaced", Some(""), false),
    ];
    for (case, sent, kept) in cases {
        let mut req = s.client.get(s.url("/files"));
        if let Some(id) = sent {
            req = req.header("X-Request-Id", *id);
        }
        let r = req.send().unwrap();
        let id = request_id(&r);
        if *kept {
            assert_eq!(Some(id.as_str()), *sent, "{case}");
        } else {
            assert!(is_ulid(&id), "{case}: {id}");
        }
        // Every JSON error body names the request.
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "UNAUTHENTICATED", "{case}");
        assert_eq!(v["error"]["requestId"], id.as_str(), "{case}");
        // And every log line of the request does (here: its access line).
        s.eventually(&format!("{case}: a log line with the id"), || {
            s.logged(&format!("request_id={id}"))
        });
    }

    // Successful answers carry the header too; two requests never share a generated id.
    let a = request_id(&s.get("/health", None));
    let b = request_id(&s.get("/health", None));
    assert!(is_ulid(&a) && is_ulid(&b) && a != b, "{a} {b}");

    // Errors answered before routing (the body guard's 413) carry it as well.
    let r = s
        .client
        .post(s.url("/graphql"))
        .header("X-Request-Id", "guard-413")
        .header("Content-Type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(request_id(&r), "guard-413");
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["requestId"],
        "guard-413"
    );

    // GraphQL errors name it in their extensions.
    let token = s.token("alice", INSTANCE, false);
    let r = s
        .client
        .post(s.url("/graphql"))
        .header("Authorization", &token)
        .header("hypi-domain", INSTANCE)
        .header("X-Request-Id", "gql-1")
        .json(&serde_json::json!({"query": "{ noSuchField }"}))
        .send()
        .unwrap();
    assert_eq!(request_id(&r), "gql-1");
    let v: Value = r.json().unwrap();
    let errors = v["errors"].as_array().expect("GraphQL errors");
    assert!(!errors.is_empty());
    for e in errors {
        assert_eq!(e["extensions"]["requestId"], "gql-1", "{v}");
    }
}

#[test]
fn a_server_error_is_logged_under_its_request_id() {
    // A record whose blob is gone: 500 CONTENT_MISSING, logged at ERROR by the service.
    let s = Server::start();
    let token = s.token("alice", INSTANCE, false);
    let rec = s.upload_one(&token, "gone.bin", &bytes(100_000, 3));
    for blob in blob_files(&s.data) {
        std::fs::remove_file(blob).unwrap();
    }
    let path = rec["url"]["path"].as_str().unwrap();
    let r = s
        .client
        .get(s.url(path))
        .header("Authorization", &token)
        .header("X-Request-Id", "lost-blob-7")
        .send()
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["requestId"],
        "lost-blob-7"
    );
    s.eventually("the error line names the request", || {
        s.log
            .lock()
            .unwrap()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("request_id=lost-blob-7"))
    });
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, lines) =
        spawn_json_logs(dir.path(), &[("DEPOT_LOG", "info,depot::access=debug")]);
    let r = client()
        .get(format!("http://{addr}/nope"))
        .header("X-Request-Id", "json-log-1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let found = (0..200).find_map(|_| {
        let hit = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("json-log-1"))
            .cloned();
        if hit.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        hit
    });
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("an access line for the request");
    let v: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["span"]["request_id"], "json-log-1", "{line}");
    assert_eq!(v["fields"]["status"], 404, "{line}");
    assert_eq!(v["level"], "DEBUG", "{line}");
    for l in lines.lock().unwrap().iter() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    // A wrong format is refused at start.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("DEPOT_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format"));
}

#[test]
fn health_is_live_and_ready_fails_while_the_blob_store_cannot_be_written() {
    let s = Server::start();
    let r = s.get("/health", None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["status"], "ok");
    let r = s.get("/ready", None);
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["blobStore"], "ok");
    assert_eq!(v["checks"]["metadataStore"], "ok");
    // The probe leaves nothing behind.
    assert_eq!(s.blob_count(), 0);
    assert_eq!(s.temp_files(), 0);

    // The temp dir replaced by a file: no blob can be written (root ignores permissions, so
    // a read-only mode would not do).
    let tmp = s.data.join("tmp");
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    s.eventually("/ready answers 503", || {
        s.get("/ready", None).status() == 503
    });
    let r = s.get("/ready", None);
    assert!(r.headers().contains_key("x-request-id"));
    let (status, code, message) = json_error(r);
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"));
    assert!(message.contains("blob store"), "{message}");
    // Liveness is not readiness.
    assert_eq!(s.get("/health", None).status(), 200);
    s.eventually("the readiness failure is logged", || {
        s.logged("readiness: the blob store cannot be written")
    });

    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    s.eventually("/ready answers 200 again", || {
        s.get("/ready", None).status() == 200
    });
}

#[test]
fn metrics_need_the_token_and_count_requests_bytes_uploads_dedup_and_cache() {
    // No token configured: the route does not exist.
    let s = Server::start();
    let (status, code, _) = json_error(s.get("/metrics", None));
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    let r = s
        .client
        .get(s.url("/metrics"))
        .header("Authorization", "Bearer anything-at-all-here")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    drop(s);

    let s = Server::start_with(&[
        ("DEPOT_METRICS_TOKEN", METRICS_TOKEN),
        ("DEPOT_METRICS_LISTEN", "127.0.0.1:0"),
    ]);
    for (case, auth) in [
        ("no token", None),
        (
            "wrong token",
            Some("Bearer metrics-token-for-tests-0123456788"),
        ),
        ("a prefix of it", Some("Bearer metrics-token")),
        ("not Bearer", Some(METRICS_TOKEN)),
    ] {
        let mut req = s.client.get(s.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let (status, code, _) = json_error(req.send().unwrap());
        assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"), "{case}");
    }

    let before = s.metrics(METRICS_TOKEN);
    let token = s.token("alice", INSTANCE, false);
    let data = bytes(200_000, 5);
    let rec = s.upload_one(&token, "a.bin", &data);
    // The same bytes again: stored once, counted as dedup savings.
    s.upload_one(&token, "b.bin", &data);
    let small = s.upload_one(&token, "small.txt", b"small and hot");
    for _ in 0..3 {
        let r = s.get(small["url"]["path"].as_str().unwrap(), Some(&token));
        assert_eq!(r.status(), 200);
        r.bytes().unwrap();
    }
    let r = s.get(rec["url"]["path"].as_str().unwrap(), Some(&token));
    assert_eq!(r.bytes().unwrap().len(), data.len());
    assert_eq!(s.get("/no/such/route/12345", None).status(), 404);
    let after = s.metrics(METRICS_TOKEN);

    let delta = |name: &str, labels: &[&str]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    let upload = ["route=\"/upload\"", "status=\"200\"", "method=\"POST\""];
    assert_eq!(delta("depot_http_requests_total", &upload), 3.0);
    // Unmatched paths share one label: no series per raw path.
    assert!(
        delta(
            "depot_http_requests_total",
            &["route=\"unmatched\"", "status=\"404\""]
        ) >= 1.0
    );
    assert!(!after.keys().any(|k| k.contains("12345")));
    assert_eq!(
        delta(
            "depot_http_request_duration_seconds_count",
            &["route=\"/upload\""]
        ),
        3.0
    );
    assert!(delta("depot_http_request_bytes_total", &[]) >= 2.0 * data.len() as f64);
    assert!(delta("depot_http_response_bytes_total", &[]) >= data.len() as f64);
    assert_eq!(delta("depot_blob_store_objects", &[]), 2.0);
    assert_eq!(
        delta("depot_blob_store_bytes", &[]),
        (data.len() + b"small and hot".len()) as f64
    );
    assert_eq!(
        delta("depot_dedup_bytes_saved_total", &[]),
        data.len() as f64
    );
    assert_eq!(delta("depot_dedup_uploads_total", &[]), 1.0);
    assert!(delta("depot_download_cache_hits_total", &[]) >= 1.0);
    assert!(delta("depot_download_cache_misses_total", &[]) >= 1.0);
    assert_eq!(metric_sum(&after, "depot_uploads_in_flight", &[]), 0.0);

    // The separate address answers without a token, and serves nothing else.
    let log = s.log.lock().unwrap().clone();
    let open = log
        .lines()
        .find_map(|l| l.split("serving /metrics without a token at ").nth(1))
        .expect("the metrics address in the log")
        .trim()
        .to_string();
    let r = s.client.get(format!("{open}/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    let m = parse_exposition(&r.text().unwrap());
    assert!(metric_sum(&m, "depot_http_requests_total", &upload) >= 3.0);
    let r = s.client.get(format!("{open}/files")).send().unwrap();
    assert_eq!(json_error(r).0, 404);
}

#[test]
fn a_short_metrics_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("DEPOT_METRICS_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics_token"));
}
