//! `depot migrate-store --from sled:DIR --to postgres:URL`: a node's sled metadata copied to
//! PostgreSQL (the database from `scripts/services start`, each test in its own schema), then a
//! server on PostgreSQL over the same data dir serves everything the sled one did. Also: a
//! second run copies nothing, a run killed midway resumes, a running server's data dir and bad
//! arguments are refused. Without `DEPOT_TEST_PG_URL` each test prints `SKIPPED: ...` (or fails
//! under `DEPOT_REQUIRE_SERVICES=1`).

mod common;
use common::*;
use depot::meta::{FileStore, InstanceStore};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// A fresh migrated schema: the URL a server or the CLI uses, and the store to look inside.
fn target(pg: &str, tag: &str) -> (String, depot::meta::PgMeta) {
    let schema = new_schema(tag);
    let store = pg_store(pg, &schema, 2);
    let sep = if pg.contains('?') { '&' } else { '?' };
    (format!("{pg}{sep}options=-csearch_path%3D{schema}"), store)
}

/// Runs `depot migrate-store --from sled:<data> --to <to>`: (success, stdout + stderr).
fn migrate(data: &Path, to: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["migrate-store", "--from"])
        .arg(format!("sled:{}", data.display()))
        .args(["--to", to])
        .output()
        .expect("run depot");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn on_postgres(data: &Path, url: &str) -> Server {
    Server::spawn(
        data,
        &[("DEPOT_META_KIND", "postgres"), ("DEPOT_META_URL", url)],
        &[],
    )
    .unwrap_or_else(|log| panic!("start on postgres: {log}"))
}

fn right(resource: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"hypi": {"id": m}})).collect();
    json!({
        "resource": resource, "resourceType": "File", "operationType": "Query", "operation": "*",
        "permissionType": "RBP", "approved": true, "members": members
    })
}

fn body(s: &Server, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let r = s.get(path, token);
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

fn find(s: &Server, token: &str, arcql: &str) -> Vec<String> {
    let q = format!("{{ find(type: File, arcql: {arcql:?}, first: 25) {{ edges {{ cursor }} }} }}");
    let v = s.graphql(Some(token), &q);
    v["data"]["find"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|e| e["cursor"].as_str().unwrap().to_string())
        .collect()
}

fn send(s: &Server, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let r = s
        .client
        .request(method, s.url(path))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn a_sled_node_moves_to_postgres_and_serves_the_same() {
    let Some(pg) = pg_or_skip("a_sled_node_moves_to_postgres_and_serves_the_same") else {
        return;
    };
    let (url, store) = target(&pg, "migsled");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap_or_else(|l| panic!("{l}"));
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);

    // Files (one an image), a directory, a grant, an anonymous grant, a star.
    let big = bytes(200_000, 7);
    let (st, up) = s.upload(
        &alice,
        "/upload/docs",
        &[
            ("a.txt", b"hello sled"),
            ("big.bin", &big),
            ("p.png", &png_3x2()),
        ],
    );
    assert_eq!(st, 200, "{up}");
    let path_of = |n: &str| up[n]["url"]["path"].as_str().unwrap().to_string();
    let id_of = |n: &str| up[n]["hypi"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        send(&s, reqwest::Method::POST, "/dirs/projects/x", &alice).0,
        201
    );
    assert_eq!(
        s.post_rights(&alice, &right(&id_of("a.txt"), &["bob"]))
            .status(),
        201
    );
    assert_eq!(s.set_anonymous(&admin, true), 200);
    let anon = right(&id_of("p.png"), &["anonymous"]);
    assert_eq!(s.post_rights(&alice, &anon).status(), 201);
    let star = format!("/files/{}/star", id_of("big.bin"));
    assert_eq!(send(&s, reqwest::Method::PUT, &star, &alice).0, 200);

    // Sessions in each state: confirmed (with a blurhash), uploaded, open.
    let jpg = jpeg(32, 24);
    let (done, put) = s
        .create_file_upload(&alice, "c.jpg", "image/jpeg", jpg.len(), "")
        .unwrap();
    assert_eq!(s.put_bytes(&put, "image/jpeg", &jpg).status(), 200);
    let confirmed = s.confirm_file_upload(&alice, &done);
    let hash = confirmed["data"]["confirmFileUpload"]["blurhash"].clone();
    assert!(hash.is_string(), "{confirmed}");
    let (waiting, put) = s
        .create_file_upload(&alice, "u.txt", "text/plain", 8, "")
        .unwrap();
    assert_eq!(s.put_bytes(&put, "text/plain", b"uploaded").status(), 200);
    let (open, open_put) = s
        .create_file_upload(&alice, "o.txt", "text/plain", 4, "")
        .unwrap();

    // The upload URL names this server's address; the next one listens elsewhere.
    let open_put = open_put.replacen(&s.base, "", 1);
    // Refused while the server holds the data dir; nothing written.
    let (ok, out) = migrate(dir.path(), &format!("postgres:{url}"));
    assert!(!ok && out.contains("stop the server first"), "{out}");
    assert_eq!(store.record_counts().unwrap().files, 0);
    s.stop();

    let (ok, out) = migrate(dir.path(), &format!("postgres:{url}"));
    assert!(ok, "{out}");
    assert!(out.contains("verified"), "{out}");
    assert!(out.contains("files: "), "progress is printed: {out}");
    // Again: everything is there already, nothing is copied, still verified.
    let (ok, again) = migrate(dir.path(), &format!("postgres:{url}"));
    assert!(ok && again.contains("verified"), "{again}");
    for line in again.lines().filter(|l| l.contains("in the source")) {
        assert!(line.contains(" 0 copied"), "a second run copied: {line}");
    }

    let s = on_postgres(dir.path(), &url);
    assert_eq!(
        body(&s, &path_of("a.txt"), Some(&alice)),
        (200, b"hello sled".to_vec())
    );
    assert_eq!(
        body(&s, &path_of("big.bin"), Some(&alice)),
        (200, big.clone())
    );
    assert_eq!(
        body(&s, &path_of("a.txt"), Some(&bob)).0,
        200,
        "bob's grant"
    );
    assert_eq!(body(&s, &path_of("big.bin"), Some(&bob)).0, 404, "no grant");
    assert_eq!(
        body(&s, &path_of("p.png"), None).0,
        200,
        "anonymous grant and switch"
    );
    assert_eq!(
        find(&s, &alice, "path = '/docs/a.txt'"),
        vec![id_of("a.txt")]
    );
    assert_eq!(find(&s, &alice, "directory = '/docs'").len(), 3);
    let (st, v) = send(&s, reqwest::Method::GET, "/dirs/projects/x", &alice);
    assert_eq!(
        (st, &v["directory"]["path"]),
        (200, &json!("/projects/x")),
        "{v}"
    );
    let v = s.graphql(
        Some(&alice),
        &format!(
            r#"{{ get(type: File, id: "{}") {{ ... on File {{ isStared }} }} }}"#,
            id_of("big.bin")
        ),
    );
    assert_eq!(
        v["data"]["get"]["isStared"], true,
        "the star came along: {v}"
    );
    let (st, v) = send(
        &s,
        reqwest::Method::GET,
        &format!("/files/{}", id_of("p.png")),
        &alice,
    );
    assert_eq!((st, &v["image"]["width"]), (200, &json!(3)), "{v}");
    // The confirmed session answers as before (its File's extras came along); the uploaded
    // one confirms now; the open one takes its bytes now.
    let again = s.confirm_file_upload(&alice, &done);
    assert_eq!(
        again["data"]["confirmFileUpload"]["blurhash"], hash,
        "{again}"
    );
    let late = s.confirm_file_upload(&alice, &waiting);
    let url_path = late["data"]["confirmFileUpload"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{late}"));
    let url_path = url_path.trim_start_matches(&s.base).to_string();
    assert_eq!(
        body(&s, &url_path, Some(&alice)),
        (200, b"uploaded".to_vec())
    );
    let open_put = s.url(&open_put);
    assert_eq!(s.put_bytes(&open_put, "text/plain", b"open").status(), 200);
    let v = s.confirm_file_upload(&alice, &open);
    assert_eq!(v["data"]["confirmFileUpload"]["size"], 4, "{v}");
    s.stop();

    // The reference counts came along: fsck on PostgreSQL finds the store consistent.
    let out = Command::new(BIN)
        .args(["fsck", "--data-dir"])
        .arg(dir.path())
        .env("DEPOT_META_KIND", "postgres")
        .env("DEPOT_META_URL", &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("clean"), "{text}");
}

#[test]
fn a_migration_killed_midway_resumes_and_verifies() {
    let Some(pg) = pg_or_skip("a_migration_killed_midway_resumes_and_verifies") else {
        return;
    };
    let (url, store) = target(&pg, "migkill");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap_or_else(|l| panic!("{l}"));
    let alice = s.token("alice", INSTANCE, false);
    const FILES: usize = 500;
    let mut last = String::new();
    for batch in 0..FILES / 50 {
        let files: Vec<(String, Vec<u8>)> = (0..50)
            .map(|i| {
                (
                    format!("f{batch}-{i}.txt"),
                    format!("file {batch} {i}").into_bytes(),
                )
            })
            .collect();
        let parts: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let (st, up) = s.upload(&alice, "/upload/many", &parts);
        assert_eq!(st, 200, "{up}");
        last = up["f9-49.txt"]["url"]["path"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    s.stop();

    // Killed once the first batch of files is in.
    let mut child = Command::new(BIN)
        .args(["migrate-store", "--from"])
        .arg(format!("sled:{}", dir.path().display()))
        .args(["--to", &format!("postgres:{url}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        let first_batch = line.contains("files:") && line.contains("read");
        seen.push(line);
        if first_batch {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = store.record_counts().unwrap().files;
    assert!(
        partial > 0 && (partial as usize) < FILES,
        "killed after a first batch, {partial} files copied: {seen:?}"
    );

    let (ok, out) = migrate(dir.path(), &format!("postgres:{url}"));
    assert!(ok && out.contains("verified"), "{out}");
    assert!(
        out.contains(&format!("{partial} already present")),
        "resumed: {out}"
    );
    // Every file and the instance, and the references on the blobs.
    assert!(store.record_counts().unwrap().files as usize > FILES);
    let inst = store.instance_by_domain(INSTANCE).unwrap().unwrap();
    let any = store
        .scan_files(inst.id, depot::meta::FileScope::Directory("/many"), None)
        .count();
    assert_eq!(any, FILES);

    let s = on_postgres(dir.path(), &url);
    assert_eq!(body(&s, &last, Some(&alice)), (200, b"file 9 49".to_vec()));
}

#[test]
fn bad_sources_and_targets_are_refused() {
    let Some(pg) = pg_or_skip("bad_sources_and_targets_are_refused") else {
        return;
    };
    let (url, store) = target(&pg, "migbad");
    let empty = tempfile::tempdir().unwrap();
    let (ok, out) = migrate(empty.path(), &format!("postgres:{url}"));
    assert!(!ok && out.contains("no meta/"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap_or_else(|l| panic!("{l}"));
    let alice = s.token("alice", INSTANCE, false);
    let kept = s.upload_one(&alice, "a.txt", b"a")["url"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    s.stop();
    for to in ["postgres:", "mysql://x", "s3"] {
        let (ok, out) = migrate(dir.path(), to);
        assert!(!ok, "{to}: {out}");
        assert!(
            out.contains("depot: "),
            "{to}: a message, not a panic: {out}"
        );
        assert!(!out.contains("panicked"), "{out}");
    }
    // `postgres` alone needs [meta] url.
    let (ok, out) = migrate(dir.path(), "postgres");
    assert!(!ok && out.contains("DEPOT_META_URL"), "{out}");
    // A database that is not there: a clean failure, and the source is untouched.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, out) = migrate(
        dir.path(),
        &format!("postgres:postgres://postgres@127.0.0.1:{port}/x"),
    );
    assert!(!ok && out.contains("metadata"), "{out}");
    // A target that holds another node's instance under the same domain is refused.
    store
        .put_instance(&depot::meta::Instance {
            id: depot::types::InstanceId::new(),
            domain: INSTANCE.into(),
            anonymous_requests: false,
            created: 1,
            updated: 1,
        })
        .unwrap();
    let (ok, out) = migrate(dir.path(), &format!("postgres:{url}"));
    assert!(!ok && out.contains("another id"), "{out}");
    assert_eq!(store.record_counts().unwrap().files, 0);
    // The sled store still serves.
    let s = Server::spawn(dir.path(), &[], &[]).unwrap_or_else(|l| panic!("{l}"));
    assert_eq!(body(&s, &kept, Some(&alice)), (200, b"a".to_vec()));
}
