//! Webhooks (issue 15) over real HTTP: an admin configures them per instance; a receiver on
//! 127.0.0.1 (allowed through `remote_fetch.allow_hosts`) checks each delivery's signature and
//! every event; the receiver down for a while then up (everything arrives later, in order per
//! file); depot killed right after acknowledging an upload and restarted (the event still
//! arrives, once); redelivery; an event given up after `max_age_secs`; and the refusals
//! (tokenless, non-admin, other instance, bad URL, unknown event, refused target, the cap).

mod common;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A webhook receiver on 127.0.0.1: records every request, answers `status`; `down` closes
/// its port (connections refused) until `up` opens the same port again.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
    running: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver {
            port: listener.local_addr().unwrap().port(),
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            running: Arc::new(AtomicBool::new(false)),
        };
        r.listen(listener);
        r
    }

    fn listen(&self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.running.store(true, Ordering::SeqCst);
        let (got, status, running) = (self.got.clone(), self.status.clone(), self.running.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (got, status) = (got.clone(), status.clone());
                        std::thread::spawn(move || answer(c, &got, &status));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            // Dropping the listener closes the port.
        });
    }

    fn down(&self) {
        self.running.store(false, Ordering::SeqCst);
        // The accept loop notices within a few ms; once the port refuses, it is down.
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn up(&self) {
        self.listen(TcpListener::bind(("127.0.0.1", self.port)).expect("rebind the same port"));
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Requests of `event` (e.g. `file.created`).
    fn of(&self, event: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.header("depot-event") == event)
            .collect()
    }
}

fn answer(mut c: TcpStream, got: &Mutex<Vec<Got>>, status: &AtomicU16) {
    c.set_nonblocking(false).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut headers = HashMap::new();
    for line in text.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if c.read_exact(&mut body).is_err() {
        return;
    }
    let get = text.starts_with("GET ");
    let code = if get {
        404
    } else {
        status.load(Ordering::SeqCst)
    };
    if !get {
        got.lock().unwrap().push(Got { headers, body });
    }
    let _ = c.write_all(
        format!("HTTP/1.1 {code} X\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").as_bytes(),
    );
}

/// Checks `Depot-Signature` (`t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>`) as the README
/// tells receivers to.
fn signed_by(g: &Got, secret: &str) -> bool {
    let sig = g.header("depot-signature");
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&g.body);
    let Ok(v1) = hex::decode(v1) else {
        return false;
    };
    mac.verify_slice(&v1).is_ok()
}

const METRICS_TOKEN: &str = "metrics-token-for-webhook-tests-0123";

const FAST: [(&str, &str); 5] = [
    ("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", "127.0.0.1"),
    ("DEPOT_METRICS_TOKEN", METRICS_TOKEN),
    ("DEPOT_WEBHOOKS_BASE_DELAY_MS", "50"),
    ("DEPOT_WEBHOOKS_MAX_DELAY_SECS", "1"),
    ("DEPOT_WEBHOOKS_POLL_MS", "50"),
];

fn hooks_url(s: &Server, domain: &str) -> String {
    s.url(&format!("/instances/{domain}/webhooks"))
}

fn create_hook(s: &Server, token: &str, body: &Value) -> reqwest::blocking::Response {
    s.client
        .post(hooks_url(s, INSTANCE))
        .header("Authorization", token)
        .json(body)
        .send()
        .unwrap()
}

/// Creates a webhook for `events` at `url`; returns (id, secret).
fn hook(s: &Server, admin: &str, url: &str, events: &[&str]) -> (String, String) {
    let r = create_hook(s, admin, &json!({"url": url, "events": events}));
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

fn deliveries(s: &Server, admin: &str, id: &str) -> Vec<Value> {
    let r = s.get(
        &format!("/instances/{INSTANCE}/webhooks/{id}/deliveries"),
        Some(admin),
    );
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().unwrap()
}

fn file_id(f: &Value) -> String {
    f["hypi"]["id"].as_str().unwrap().to_string()
}

fn delete_file(s: &Server, t: &str, id: &str) -> u16 {
    s.client
        .delete(s.url(&format!("/files/{id}")))
        .header("Authorization", t)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn admins_manage_webhooks_and_bad_ones_are_refused() {
    let s = Server::start_with(&[("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", "127.0.0.1")]);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let other = s.token("eve", "other.test", true);
    let url = "http://127.0.0.1:9/hook";

    // Created: 201 with its id, the events and the secret (given, or made when left out).
    let r = create_hook(
        &s,
        &admin,
        &json!({"url": url, "secret": "0123456789abcdef-given", "events": ["file.created", "access.granted"]}),
    );
    assert_eq!(r.status(), 201);
    let made: Value = r.json().unwrap();
    assert_eq!(made["url"], url);
    assert_eq!(made["secret"], "0123456789abcdef-given");
    assert_eq!(made["events"], json!(["file.created", "access.granted"]));
    let id = made["id"].as_str().unwrap().to_string();
    let (id2, secret2) = hook(&s, &admin, url, &["file.deleted"]);
    assert!(secret2.starts_with("whsec_") && secret2.len() > 30);

    // Listed and read without the secret.
    let list: Vec<Value> = s
        .get(&format!("/instances/{INSTANCE}/webhooks"), Some(&admin))
        .json()
        .unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|w| w.get("secret").is_none()), "{list:?}");
    let one: Value = s
        .get(
            &format!("/instances/{INSTANCE}/webhooks/{id}"),
            Some(&admin),
        )
        .json()
        .unwrap();
    assert_eq!(one["id"], id.as_str());
    assert!(one.get("secret").is_none());

    // Tokenless 401, non-admin 403, another instance's admin 403 here and 404 through its own.
    let r = s
        .client
        .post(hooks_url(&s, INSTANCE))
        .json(&json!({"url": url, "events": ["file.created"]}))
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 401);
    assert_eq!(
        s.get(&format!("/instances/{INSTANCE}/webhooks"), None)
            .status(),
        401
    );
    let (status, code, _) = json_error(create_hook(
        &s,
        &alice,
        &json!({"url": url, "events": ["file.created"]}),
    ));
    assert_eq!((status, code.as_str()), (403, "FORBIDDEN"));
    assert_eq!(
        s.get(&format!("/instances/{INSTANCE}/webhooks"), Some(&alice))
            .status(),
        403
    );
    assert_eq!(
        s.get(&format!("/instances/{INSTANCE}/webhooks"), Some(&other))
            .status(),
        403
    );
    assert_eq!(
        s.get(
            &format!("/instances/other.test/webhooks/{id}"),
            Some(&other)
        )
        .status(),
        404
    );
    assert_eq!(
        s.get(
            &format!("/instances/other.test/webhooks/{id}/deliveries"),
            Some(&other)
        )
        .status(),
        404
    );
    let r = s
        .client
        .delete(s.url(&format!("/instances/other.test/webhooks/{id}")))
        .header("Authorization", &other)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Bad webhooks: 400 INVALID_WEBHOOK with a message.
    for (body, why) in [
        (
            json!({"url": "ftp://127.0.0.1/x", "events": ["file.created"]}),
            "ftp URL",
        ),
        (
            json!({"url": "not a url", "events": ["file.created"]}),
            "no URL",
        ),
        (
            json!({"url": url, "events": ["file.exploded"]}),
            "unknown event",
        ),
        (json!({"url": url, "events": []}), "no event"),
        (
            json!({"url": url, "events": ["file.created"], "secret": "short"}),
            "short secret",
        ),
        (json!({"url": url}), "events missing"),
        (
            json!({"url": url, "events": ["file.created"], "extra": 1}),
            "unknown field",
        ),
        // The same SSRF rules as remote URL ingest: 10.x is not in allow_hosts.
        (
            json!({"url": "http://10.0.0.1/hook", "events": ["file.created"]}),
            "private target",
        ),
        (
            json!({"url": "http://169.254.169.254/", "events": ["file.created"]}),
            "metadata target",
        ),
    ] {
        let (status, code, message) = json_error(create_hook(&s, &admin, &body));
        assert_eq!(
            (status, code.as_str()),
            (400, "INVALID_WEBHOOK"),
            "{why}: {message}"
        );
        assert!(!message.is_empty());
    }

    // At most 20 per instance: the 21st is 429, nothing stored.
    for _ in 2..20 {
        hook(&s, &admin, url, &["file.created"]);
    }
    let (status, code, _) = json_error(create_hook(
        &s,
        &admin,
        &json!({"url": url, "events": ["file.created"]}),
    ));
    assert_eq!((status, code.as_str()), (429, "TOO_MANY_REQUESTS"));
    let list: Vec<Value> = s
        .get(&format!("/instances/{INSTANCE}/webhooks"), Some(&admin))
        .json()
        .unwrap();
    assert_eq!(list.len(), 20);

    // Deleted: 204, then gone (404), and a malformed id is 404 too.
    let del = |id: &str| {
        s.client
            .delete(s.url(&format!("/instances/{INSTANCE}/webhooks/{id}")))
            .header("Authorization", &admin)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(del(&id2), 204);
    assert_eq!(del(&id2), 404);
    assert_eq!(del("nope"), 404);
    assert_eq!(
        s.get(
            &format!("/instances/{INSTANCE}/webhooks/{id2}"),
            Some(&admin)
        )
        .status(),
        404
    );
}

#[test]
fn a_receiver_gets_every_event_signed() {
    let rx = Receiver::start();
    let s = Server::start_with(&FAST);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let all = [
        "file.created",
        "file.updated",
        "file.deleted",
        "access.granted",
        "access.revoked",
        "upload.failed",
    ];
    let (hook_id, secret) = hook(&s, &admin, &rx.url(), &all);
    // A second webhook for one event only: it gets nothing else.
    let only_deleted = Receiver::start();
    let (_, secret2) = hook(&s, &admin, &only_deleted.url(), &["file.deleted"]);

    let f = s.upload_one(&alice, "notes.txt", b"first");
    let id = file_id(&f);
    let r = s
        .client
        .put(s.url(&format!("/files/{id}/content")))
        .header("Authorization", &alice)
        .header("hypi-domain", INSTANCE)
        .body(b"second".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = s.graphql(
        Some(&alice),
        "mutation { trash(type: File, arcql: \"name = 'notes.txt'\") }",
    );
    assert!(v.get("errors").is_none(), "{v}");
    let v = s.graphql(
        Some(&alice),
        "mutation { untrash(type: File, arcql: \"*\") }",
    );
    assert!(v.get("errors").is_none(), "{v}");
    let r = s.post_rights(
        &alice,
        &json!({"resource": id, "resourceType": "File", "operationType": "Query", "operation": "*",
                "permissionType": "RBP", "approved": true, "members": [{"hypi": {"id": "anonymous"}}]}),
    );
    assert_eq!(r.status(), 201);
    let right: Value = r.json().unwrap();
    let rid = right["hypi"]["id"].as_str().unwrap().to_string();
    let r = s
        .client
        .delete(s.url(&format!("/access-rights/{rid}")))
        .header("Authorization", &alice)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(delete_file(&s, &alice, &id), 204);
    // A remote URL ingest whose source answers 404: upload.failed.
    let v = s.graphql(
        Some(&alice),
        &format!(r#"mutation {{ createAsset(data: {{ uploadUrl: "http://127.0.0.1:{}/missing.png" }}) {{ id }} }}"#, rx.port),
    );
    let asset = v["data"]["createAsset"]["id"]
        .as_str()
        .expect("an asset")
        .to_string();

    s.eventually("all eight events arrive", || rx.got().len() >= 8);
    let got = rx.got();
    let names: Vec<&str> = got.iter().map(|g| g.header("depot-event")).collect();
    // In the order the changes were committed.
    assert_eq!(
        names,
        [
            "file.created",
            "file.updated",
            "file.updated",
            "file.updated",
            "access.granted",
            "access.revoked",
            "file.deleted",
            "upload.failed"
        ]
    );
    for g in &got {
        assert!(
            signed_by(g, &secret),
            "bad signature on {:?}",
            g.header("depot-event")
        );
        assert!(!signed_by(g, &secret2));
        assert_eq!(g.header("content-type"), "application/json");
        let b = g.json();
        assert_eq!(b["id"], g.header("depot-event-id"));
        assert_eq!(b["event"], g.header("depot-event"));
        assert_eq!(b["instance"]["domain"], INSTANCE);
        assert!(b["time"].as_str().is_some_and(|t| t.contains('T')), "{b}");
        assert!(!g.header("depot-delivery-id").is_empty());
    }
    // Every event id is distinct.
    let mut ids: Vec<&str> = got.iter().map(|g| g.header("depot-event-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len());

    // The bodies carry the records in their Hypi shapes, and who acted.
    let created = &rx.of("file.created")[0].json();
    assert_eq!(created["file"]["__typename"], "File");
    assert_eq!(created["file"]["hypi"]["id"], id.as_str());
    assert_eq!(created["file"]["name"], "notes.txt");
    assert_eq!(created["actor"]["hypi"]["id"], "alice");
    let updates = rx.of("file.updated");
    assert_eq!(updates.len(), 3, "re-upload, trash, untrash");
    assert_eq!(
        updates[0].json()["file"]["size"],
        6,
        "the re-upload's new record"
    );
    assert!(
        updates[1].json()["file"]["hypi"]["trashed"].is_string(),
        "{}",
        updates[1].json()
    );
    assert!(updates[2].json()["file"]["hypi"]["trashed"].is_null());
    let granted = rx.of("access.granted")[0].json();
    assert_eq!(granted["accessRight"]["__typename"], "AccessRight");
    assert_eq!(granted["accessRight"]["hypi"]["id"], rid.as_str());
    assert_eq!(granted["accessRight"]["resource"], id.as_str());
    assert_eq!(
        rx.of("access.revoked")[0].json()["accessRight"]["hypi"]["id"],
        rid.as_str()
    );
    assert_eq!(
        rx.of("file.deleted")[0].json()["file"]["hypi"]["id"],
        id.as_str()
    );
    let failed = rx.of("upload.failed")[0].json();
    assert_eq!(failed["upload"]["id"], asset.as_str());
    assert!(
        failed["upload"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{failed}"
    );

    // The other webhook got exactly the one event it asked for, signed with its own secret.
    s.eventually("the file.deleted-only webhook gets its event", || {
        !only_deleted.got().is_empty()
    });
    let other = only_deleted.got();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].header("depot-event"), "file.deleted");
    assert!(signed_by(&other[0], &secret2));

    // The delivery log: each delivered at the first attempt, with its status and latency.
    let log = deliveries(&s, &admin, &hook_id);
    assert_eq!(log.len(), got.len());
    for d in &log {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attemptCount"], 1);
        assert_eq!(d["attempts"][0]["status"], 200);
        assert!(d["attempts"][0]["latencyMs"].is_u64());
        assert!(d["nextAttempt"].is_null());
    }
    // Newest first.
    assert_eq!(log[0]["event"], "upload.failed");
    // Counted by outcome on /metrics.
    let m = s.metrics(METRICS_TOKEN);
    assert!(
        metric_sum(
            &m,
            "depot_webhook_deliveries_total",
            &["outcome=\"delivered\""]
        ) >= 8.0
    );
}

#[test]
fn a_receiver_down_for_a_while_gets_everything_later_in_order() {
    let rx = Receiver::start();
    let s = Server::start_with(&FAST);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let (hook_id, secret) = hook(
        &s,
        &admin,
        &rx.url(),
        &["file.created", "file.updated", "file.deleted"],
    );
    rx.down();

    let mut files = Vec::new();
    for i in 0..3 {
        let f = s.upload_one(
            &alice,
            &format!("f{i}.txt"),
            format!("bytes {i}").as_bytes(),
        );
        files.push(file_id(&f));
    }
    let v = s.graphql(
        Some(&alice),
        "mutation { trash(type: File, arcql: \"name = 'f1.txt'\") }",
    );
    assert!(v.get("errors").is_none(), "{v}");
    assert_eq!(delete_file(&s, &alice, &files[0]), 204);

    // Attempts fail (connection refused) and are retried: the log shows them.
    s.eventually("the first delivery is retried", || {
        deliveries(&s, &admin, &hook_id)
            .iter()
            .any(|d| d["attemptCount"].as_u64() >= Some(3))
    });
    let log = deliveries(&s, &admin, &hook_id);
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|d| d["status"] == "pending"), "{log:?}");
    let head = log.last().unwrap();
    assert!(head["attempts"][0]["status"].is_null());
    assert!(head["attempts"][0]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert!(head["nextAttempt"].is_string());
    assert!(rx.got().is_empty());

    rx.up();
    s.eventually("all five arrive once the receiver is back", || {
        rx.got().len() >= 5
    });
    let got = rx.got();
    assert_eq!(got.len(), 5, "each once");
    assert!(got.iter().all(|g| signed_by(g, &secret)));
    // In commit order: so in order per file.
    let seq: Vec<(String, String)> = got
        .iter()
        .map(|g| {
            let b = g.json();
            (
                b["event"].as_str().unwrap().to_string(),
                b["file"]["hypi"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("file.created", &files[0]),
        ("file.created", &files[1]),
        ("file.created", &files[2]),
        ("file.updated", &files[1]),
        ("file.deleted", &files[0]),
    ]
    .iter()
    .map(|(e, f)| (e.to_string(), f.to_string()))
    .collect();
    assert_eq!(seq, want);
    s.eventually("the log shows them delivered", || {
        deliveries(&s, &admin, &hook_id)
            .iter()
            .all(|d| d["status"] == "delivered")
    });
    let log = deliveries(&s, &admin, &hook_id);
    let head = log.last().unwrap();
    assert!(head["attemptCount"].as_u64() >= Some(3));
    assert_eq!(
        head["attempts"].as_array().unwrap().last().unwrap()["status"],
        200
    );
    let m = s.metrics(METRICS_TOKEN);
    assert!(metric_sum(&m, "depot_webhook_deliveries_total", &["outcome=\"retry\""]) >= 2.0);
}

#[test]
fn an_event_acknowledged_before_a_kill_arrives_once_after_the_restart() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &FAST, &[]).expect("start");
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let (hook_id, secret) = hook(&s, &admin, &rx.url(), &["file.created"]);
    // Nothing can be delivered before the kill.
    rx.down();
    let f = s.upload_one(&alice, "kept.txt", b"acknowledged");
    let id = file_id(&f);
    // SIGKILL right after the 200: no graceful shutdown, no chance to deliver.
    s.stop();

    rx.up();
    let s = Server::spawn(dir.path(), &FAST, &[]).expect("restart");
    s.eventually("the event arrives after the restart", || {
        !rx.got().is_empty()
    });
    s.eventually("the delivery is logged as delivered", || {
        deliveries(&s, &admin, &hook_id)
            .iter()
            .all(|d| d["status"] == "delivered")
    });
    let got = rx.got();
    assert_eq!(got.len(), 1, "exactly once");
    assert!(signed_by(&got[0], &secret));
    assert_eq!(got[0].json()["file"]["hypi"]["id"], id.as_str());
    let log = deliveries(&s, &admin, &hook_id);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["eventId"], got[0].header("depot-event-id"));
}

#[test]
fn redelivery_resends_the_same_event_and_old_events_are_given_up() {
    let rx = Receiver::start();
    let mut env = FAST.to_vec();
    env.push(("DEPOT_WEBHOOKS_MAX_AGE_SECS", "1"));
    let s = Server::start_with(&env);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let (hook_id, _) = hook(&s, &admin, &rx.url(), &["file.created"]);

    // The receiver answers 500: retried until the event is a second old, then failed.
    rx.status.store(500, Ordering::SeqCst);
    s.upload_one(&alice, "a.txt", b"a");
    s.eventually("the delivery is given up", || {
        deliveries(&s, &admin, &hook_id)[0]["status"] == "failed"
    });
    let failed = deliveries(&s, &admin, &hook_id)[0].clone();
    assert!(failed["attemptCount"].as_u64() >= Some(2), "{failed}");
    let last = failed["attempts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], 500);
    assert!(last["error"].as_str().unwrap().contains("500"));
    let m = s.metrics(METRICS_TOKEN);
    assert!(
        metric_sum(
            &m,
            "depot_webhook_deliveries_total",
            &["outcome=\"failed\""]
        ) >= 1.0
    );

    // Redelivered on demand once the receiver works: a new delivery, the same event id.
    rx.status.store(200, Ordering::SeqCst);
    let before = rx.got().len();
    let did = failed["id"].as_str().unwrap();
    let redeliver = |did: &str, token: &str| {
        s.client
            .post(s.url(&format!(
                "/instances/{INSTANCE}/webhooks/{hook_id}/deliveries/{did}/redeliver"
            )))
            .header("Authorization", token)
            .send()
            .unwrap()
    };
    let r = redeliver(did, &admin);
    assert_eq!(r.status(), 202);
    let again: Value = r.json().unwrap();
    assert_eq!(again["eventId"], failed["eventId"]);
    assert_ne!(again["id"], failed["id"]);
    assert_eq!(again["status"], "pending");
    s.eventually("the redelivery arrives", || rx.got().len() > before);
    let last = rx.got().last().unwrap().clone();
    assert_eq!(
        last.header("depot-event-id"),
        failed["eventId"].as_str().unwrap()
    );
    assert_eq!(
        last.header("depot-delivery-id"),
        again["id"].as_str().unwrap()
    );
    s.eventually("the redelivery is logged", || {
        deliveries(&s, &admin, &hook_id)[0]["status"] == "delivered"
    });

    // Unknown deliveries are 404; non-admins 403; tokenless 401.
    assert_eq!(
        redeliver("01ARZ3NDEKTSV4RRFFQ69G5FAV", &admin).status(),
        404
    );
    assert_eq!(redeliver("nope", &admin).status(), 404);
    assert_eq!(redeliver(did, &alice).status(), 403);
    let r = s
        .client
        .post(s.url(&format!(
            "/instances/{INSTANCE}/webhooks/{hook_id}/deliveries/{did}/redeliver"
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Two nodes on one PostgreSQL database (`scripts/services start`), each with its delivery
/// worker: every event, written on either node, arrives exactly once, signed, each file's in
/// order; the log lists them all delivered. An acknowledged upload on a node killed right after
/// is delivered by the other.
#[test]
fn two_nodes_on_postgres_deliver_each_event_once() {
    let Some(pg) = pg_or_skip("two_nodes_on_postgres_deliver_each_event_once") else {
        return;
    };
    let url = url_in_new_schema(&pg, "webhooks");
    let rx = Receiver::start();
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    // One JWT secret for both processes.
    token_for(dirs[0].path(), "bootstrap", INSTANCE, false, &[]);
    std::fs::copy(
        dirs[0].path().join("jwt.secret"),
        dirs[1].path().join("jwt.secret"),
    )
    .unwrap();
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend([
        ("DEPOT_META_KIND", "postgres"),
        ("DEPOT_META_URL", url.as_str()),
        // A claim lasts timeout_secs + 5 s: a killed node's runs out within the wait below.
        ("DEPOT_WEBHOOKS_TIMEOUT_SECS", "1"),
    ]);
    let a = Server::spawn(dirs[0].path(), &env, &[]).unwrap_or_else(|log| panic!("{log}"));
    let b = Server::spawn(dirs[1].path(), &env, &[]).unwrap_or_else(|log| panic!("{log}"));
    let admin = a.token("root", INSTANCE, true);
    let alice = a.token("alice", INSTANCE, false);
    let (hook_id, secret) = hook(&a, &admin, &rx.url(), &["file.created", "file.deleted"]);
    // Read on the other node: the webhook is in the shared store.
    assert_eq!(
        b.get(
            &format!("/instances/{INSTANCE}/webhooks/{hook_id}"),
            Some(&admin)
        )
        .status(),
        200
    );

    let mut ids = Vec::new();
    for n in 0..6 {
        let node = if n % 2 == 0 { &a } else { &b };
        let f = node.upload_one(
            &alice,
            &format!("f{n}.txt"),
            format!("bytes {n}").as_bytes(),
        );
        ids.push(file_id(&f));
    }
    assert_eq!(delete_file(&b, &alice, &ids[0]), 204);
    b.eventually("the first seven are delivered", || {
        let log = deliveries(&b, &admin, &hook_id);
        log.len() == 7 && log.iter().all(|d| d["status"] == "delivered")
    });
    // Killed right after acknowledging, with the receiver down (so no attempt of A's can have
    // reached it): the other node delivers the event once A's claim, if it made one, runs out.
    rx.down();
    let last = a.upload_one(&alice, "last.txt", b"last");
    a.stop();
    rx.up();

    b.eventually("all eight events arrive", || rx.got().len() >= 8);
    b.eventually("the log shows them delivered", || {
        let log = deliveries(&b, &admin, &hook_id);
        log.len() == 8 && log.iter().all(|d| d["status"] == "delivered")
    });
    let got = rx.got();
    let mut event_ids: Vec<&str> = got.iter().map(|g| g.header("depot-event-id")).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    assert_eq!(
        (got.len(), event_ids.len()),
        (8, 8),
        "each event exactly once"
    );
    assert!(got.iter().all(|g| signed_by(g, &secret)));
    let file0: Vec<String> = got
        .iter()
        .filter(|g| g.json()["file"]["hypi"]["id"] == ids[0].as_str())
        .map(|g| g.header("depot-event").to_string())
        .collect();
    assert_eq!(file0, ["file.created", "file.deleted"]);
    assert!(got
        .iter()
        .any(|g| g.json()["file"]["hypi"]["id"] == last["hypi"]["id"]));
}

/// The same in GraphQL, in the caller's instance: create (the secret once), list, the delivery
/// log, redeliver, delete; refusals carry the REST codes.
#[test]
fn webhooks_in_graphql() {
    let rx = Receiver::start();
    let s = Server::start_with(&FAST);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let url = rx.url();
    let v = s.graphql(
        Some(&admin),
        &format!(r#"mutation {{ createWebhook(data: {{ url: {url:?}, events: ["file.created"] }}) {{ id url events secret createdBy }} }}"#),
    );
    let w = &v["data"]["createWebhook"];
    assert_eq!(w["url"], url.as_str(), "{v}");
    assert_eq!(w["events"], json!(["file.created"]));
    assert_eq!(w["createdBy"], "root");
    let secret = w["secret"].as_str().unwrap().to_string();
    let id = w["id"].as_str().unwrap().to_string();

    let v = s.graphql(Some(&admin), "{ webhooks { id url secret } }");
    assert_eq!(
        v["data"]["webhooks"],
        json!([{"id": id, "url": url, "secret": null}])
    );

    s.upload_one(&alice, "g.txt", b"graphql");
    s.eventually("the event arrives", || !rx.got().is_empty());
    assert!(signed_by(&rx.got()[0], &secret));
    let log_query = format!(
        r#"{{ webhookDeliveries(webhook: {id:?}) {{ id eventId event status attemptCount attempts {{ status latencyMs error }} }} }}"#
    );
    s.eventually("the log shows it delivered", || {
        s.graphql(Some(&admin), &log_query)["data"]["webhookDeliveries"][0]["status"] == "delivered"
    });
    let d = s.graphql(Some(&admin), &log_query)["data"]["webhookDeliveries"][0].clone();
    assert_eq!(d["event"], "file.created");
    assert_eq!(d["attempts"][0]["status"], 200);
    let v = s.graphql(
        Some(&admin),
        &format!(r#"mutation {{ redeliverWebhook(webhook: {id:?}, delivery: {:?}) {{ eventId status }} }}"#, d["id"].as_str().unwrap()),
    );
    assert_eq!(
        v["data"]["redeliverWebhook"]["eventId"], d["eventId"],
        "{v}"
    );
    s.eventually("the redelivery arrives", || rx.got().len() == 2);

    // Refusals: non-admin FORBIDDEN, unknown event INVALID_WEBHOOK, tokenless UNAUTHENTICATED.
    let v = s.graphql(Some(&alice), "{ webhooks { id } }");
    assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "{v}");
    let v = s.graphql(
        Some(&admin),
        &format!(r#"mutation {{ createWebhook(data: {{ url: {url:?}, events: ["file.nope"] }}) {{ id }} }}"#),
    );
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "INVALID_WEBHOOK",
        "{v}"
    );
    let v = s.graphql(None, "{ webhooks { id } }");
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{v}"
    );

    let v = s.graphql(
        Some(&admin),
        &format!(r#"mutation {{ deleteWebhook(id: {id:?}) }}"#),
    );
    assert_eq!(v["data"]["deleteWebhook"], true, "{v}");
    let v = s.graphql(
        Some(&admin),
        &format!(r#"mutation {{ deleteWebhook(id: {id:?}) }}"#),
    );
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND", "{v}");
    assert_eq!(
        s.graphql(Some(&admin), "{ webhooks { id } }")["data"]["webhooks"],
        json!([])
    );
}

/// Uploads that expire before they become a File send `upload.failed` once (presigned PUT with
/// no bytes, a presigned PUT never confirmed, a tus upload stopped half-way); a confirmed upload
/// and a finished tus upload expire without one.
#[test]
fn expired_uploads_send_upload_failed_once() {
    let rx = Receiver::start();
    let mut vars = FAST.to_vec();
    vars.extend([
        ("DEPOT_UPLOAD_URL_TTL_SECS", "2"),
        ("DEPOT_TUS_EXPIRY_SECS", "2"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let s = Server::start_with(&vars);
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    hook(&s, &admin, &rx.url(), &["upload.failed"]);

    // Never sent.
    let (never, _) = s
        .create_file_upload(&alice, "never.bin", "application/octet-stream", 4, "")
        .unwrap();
    // Sent, never confirmed.
    let (unconfirmed, url) = s
        .create_file_upload(&alice, "late.bin", "application/octet-stream", 4, "")
        .unwrap();
    assert_eq!(
        s.put_bytes(&url, "application/octet-stream", b"abcd")
            .status(),
        200
    );
    // Sent and confirmed: a File, no failure.
    let (done, url) = s
        .create_file_upload(&alice, "done.bin", "application/octet-stream", 4, "")
        .unwrap();
    assert_eq!(
        s.put_bytes(&url, "application/octet-stream", b"wxyz")
            .status(),
        200
    );
    let confirmed = s.confirm_file_upload(&alice, &done);
    let file_id = confirmed["data"]["confirmFileUpload"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{confirmed}"))
        .to_string();
    // A tus upload of 10 bytes stopped after 4.
    let tus = |method: reqwest::Method, url: &str| {
        s.client
            .request(method, url)
            .header("Authorization", &alice)
            .header("hypi-domain", INSTANCE)
            .header("Tus-Resumable", "1.0.0")
    };
    let r = tus(reqwest::Method::POST, &s.url("/tus/"))
        .header("Upload-Length", "10")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let tus_url = if location.starts_with("http") {
        location.clone()
    } else {
        s.url(&location)
    };
    let r = tus(reqwest::Method::PATCH, &tus_url)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(b"0123".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let tus_id = tus_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();

    s.eventually("three upload.failed events", || {
        rx.of("upload.failed").len() >= 3
    });
    // Later sweeps send nothing more (each session went once).
    std::thread::sleep(Duration::from_secs(3));
    let failed: Vec<Value> = rx.of("upload.failed").iter().map(Got::json).collect();
    let mut ids: Vec<&str> = failed
        .iter()
        .map(|b| b["upload"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![never.as_str(), unconfirmed.as_str(), tus_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{failed:?}");
    for b in &failed {
        assert!(
            b["upload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("expired")),
            "{b}"
        );
        assert_eq!(b["actor"]["hypi"]["id"], "alice", "{b}");
    }
    // The confirmed upload's File is there, untouched.
    let r = s.get(&format!("/files/{file_id}"), Some(&alice));
    assert_eq!(r.status(), 200);
}
