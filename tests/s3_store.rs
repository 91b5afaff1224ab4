//! The S3 blob store against a real S3-wire server (moto_server from `scripts/services start`):
//! the store contract suite unchanged, the real server configured with `[store] kind = "s3"`
//! driven by curl, gc/fsck on the bucket, and the object store going away mid-upload.
//! Without `DEPOT_TEST_S3_ENDPOINT` each test prints `SKIPPED: ...` (or fails under
//! `DEPOT_REQUIRE_SERVICES=1`, as in CI).

mod common;
use common::*;
use depot::store::BlobStore;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn the_store_contract_holds_on_s3() {
    let Some(env) = s3_or_skip("the_store_contract_holds_on_s3") else {
        return;
    };
    // With part staging: the part cases run too (parts staged locally, sent to the bucket).
    let staging = tempfile::tempdir().unwrap();
    let store = env.store().with_part_staging(staging.path()).unwrap();
    // The suite wants a multi-threaded runtime; the blocking HTTP client here must stay outside.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let cases = rt.block_on(depot::store::contract::run_all(&store));
    assert_eq!(cases, 15);
    // Nothing staged is left behind once the drops' cleanups have run.
    let temp_left = || {
        let out = client()
            .get(format!(
                "{}/{}?list-type=2&prefix=tmp/",
                env.endpoint, env.bucket
            ))
            .send()
            .unwrap()
            .text()
            .unwrap();
        out.matches("<Key>").count()
    };
    for _ in 0..200 {
        if temp_left() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(temp_left(), 0, "temp objects left in the bucket");
}

fn curl_upload(s: &Server, token: &str, file: &Path) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "-H"])
        .arg(format!("Authorization: {token}"))
        .args(["-H", &format!("hypi-domain: {INSTANCE}"), "-F"])
        .arg(format!("0=@{}", file.display()))
        .arg(s.url("/upload/"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {out:?}");
    let body: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("upload answer: {}", String::from_utf8_lossy(&out.stdout)));
    first_record(&body)
}

#[test]
fn a_server_on_s3_uploads_downloads_ranges_dedups_deletes_and_collects() {
    let Some(env) =
        s3_or_skip("a_server_on_s3_uploads_downloads_ranges_dedups_deletes_and_collects")
    else {
        return;
    };
    let vars = env.server_env();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let s = Server::spawn(&data_dir, &env_refs(&vars), &[]).expect("server starts");
    let (alice, bob) = (
        s.token("alice", INSTANCE, false),
        s.token("bob", INSTANCE, false),
    );
    // Past one multipart part (5 MiB), so the multipart path and the server-side copy run.
    let big = bytes((7 << 20) + 123, 1);
    let small = bytes(1000, 2);
    let (big_file, small_file) = (dir.path().join("big.bin"), dir.path().join("small.txt"));
    std::fs::write(&big_file, &big).unwrap();
    std::fs::write(&small_file, &small).unwrap();

    let a = curl_upload(&s, &alice, &big_file);
    let b = curl_upload(&s, &bob, &big_file);
    let c = curl_upload(&s, &alice, &small_file);
    assert_eq!(a["sha256"], sha256_hex(&big));
    assert_eq!(a["sha256"], b["sha256"], "same bytes, same blob");
    assert_eq!(a["size"], big.len() as u64);
    let store = env.store();
    let mut want = vec![sha256_hex(&big), sha256_hex(&small)];
    want.sort();
    assert_eq!(blobs_in(&store), want, "one object per distinct content");
    assert!(!s.log.lock().unwrap().contains(S3_SECRET), "secret in log");

    // Downloads, whole and ranged, stream from the bucket.
    let path = |f: &Value| f["url"]["path"].as_str().unwrap().to_string();
    let got = s.get(&path(&a), Some(&alice));
    assert_eq!(got.status(), 200);
    assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(&big));
    let r = s
        .client
        .get(s.url(&path(&b)))
        .header("Authorization", &bob)
        .header("Range", "bytes=5242870-5242900")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &big[5_242_870..=5_242_900]);
    let r = s
        .client
        .get(s.url(&path(&c)))
        .header("Authorization", &alice)
        .header("Range", "bytes=990-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &small[990..]);
    let r = s
        .client
        .get(s.url(&path(&c)))
        .header("Authorization", &alice)
        .header("Range", "bytes=5000-6000")
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 416);

    // The object goes with its last reference.
    let del = |tok: &str, f: &Value| {
        s.client
            .delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
            .header("Authorization", tok)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(del(&alice, &a), 204);
    assert_eq!(blobs_in(&store), want, "bob still references the bytes");
    assert_eq!(s.get(&path(&b), Some(&bob)).status(), 200);
    assert_eq!(del(&bob, &b), 204);
    assert_eq!(blobs_in(&store), vec![sha256_hex(&small)]);
    assert_eq!(s.get(&path(&b), Some(&bob)).status(), 404);
    s.stop();

    // An orphan (bytes committed, no record: a node killed between the two) is reported by
    // fsck and removed by gc; the referenced blob stays.
    let orphan = bytes(4321, 3);
    let mut w = store.writer().unwrap();
    depot::store::write_bytes(w.as_mut(), orphan.clone().into()).unwrap();
    w.finish().unwrap().commit().unwrap();
    let (ok, out) = depot_with(&vars, &["fsck"], &data_dir);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("unreferenced blob {}", sha256_hex(&orphan))),
        "{out}"
    );
    assert!(
        out.contains("2 blobs, 1 records") && out.contains("clean"),
        "{out}"
    );
    let (ok, out) = depot_with(&vars, &["gc", "--grace", "0s"], &data_dir);
    assert!(ok && out.contains("removed 1 blobs (4321 bytes)"), "{out}");
    assert_eq!(blobs_in(&store), vec![sha256_hex(&small)]);
    // A blob removed behind depot's back is reported as missing, and fsck fails.
    store.remove(&sha256_hex(&small).parse().unwrap()).unwrap();
    let (ok, out) = depot_with(&vars, &["fsck"], &data_dir);
    assert!(
        !ok && out.contains("1 missing") && out.contains("DAMAGED"),
        "{out}"
    );
    assert!(!out.contains(S3_SECRET));
}

#[test]
fn a_server_refuses_to_start_on_a_bucket_it_cannot_reach_or_an_s3_config_without_bucket() {
    let Some(env) = s3_or_skip("a_server_refuses_to_start_on_a_bucket_it_cannot_reach") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let vars = env.server_env_via(&dead);
    let log = Server::spawn(dir.path(), &env_refs(&vars), &[])
        .err()
        .expect("no server without its object store");
    assert!(log.contains("object storage is unavailable"), "{log}");
    assert!(!log.contains(S3_SECRET), "secret in log: {log}");
    let mut vars = env.server_env();
    vars.retain(|(k, _)| k != "DEPOT_STORE_BUCKET");
    let log = Server::spawn(dir.path(), &env_refs(&vars), &[])
        .err()
        .expect("no server without a bucket");
    assert!(log.contains("store.bucket"), "{log}");
}

#[test]
fn an_upload_fails_cleanly_when_the_object_store_goes_away_and_works_once_it_is_back() {
    let Some(env) = s3_or_skip("an_upload_fails_cleanly_when_the_object_store_goes_away") else {
        return;
    };
    let proxy = Proxy::start(&env.endpoint);
    let vars = env.server_env_via(&proxy.addr);
    let s = Server::start_with(&env_refs(&vars));
    let t = s.token("alice", INSTANCE, false);
    let first = s.upload_one(&t, "first.bin", &bytes(10_000, 1));

    // The store goes away part-way through the first part of a multi-part upload.
    proxy.budget.store(2 << 20, Ordering::SeqCst);
    let big = bytes(12 << 20, 2);
    let (status, body) = s.upload(&t, "/upload/", &[("big.bin", &big)]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORAGE_UNAVAILABLE", "{body}");
    // A small upload while it is down: the final put fails the same way.
    let (status, body) = s.upload(&t, "/upload/", &[("small.bin", b"tiny bytes")]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORAGE_UNAVAILABLE", "{body}");
    // No record was written for either; the one stored earlier still reads... once the store is
    // back, without restarting depot.
    let names: Vec<String> = listing(&s, &t)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["first.bin"]);
    assert_eq!(
        s.get(first["url"]["path"].as_str().unwrap(), Some(&t))
            .status(),
        503
    );
    proxy.budget.store(i64::MAX, Ordering::SeqCst);
    proxy.down.store(false, Ordering::SeqCst);
    let again = s.upload_one(&t, "big.bin", &big);
    assert_eq!(again["sha256"], sha256_hex(&big));
    let got = s.get(again["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(&big));
    // Every record's blob is in the bucket.
    let store = env.store();
    let stored = blobs_in(&store);
    for f in listing(&s, &t) {
        assert!(
            stored.contains(&f["sha256"].as_str().unwrap().to_string()),
            "record {f} without its object"
        );
    }
    assert!(!s.log.lock().unwrap().contains(S3_SECRET));
}

#[test]
fn migrate_store_copies_a_data_dir_to_s3_verified_and_resumable_and_the_server_runs_on_it() {
    let Some(env) = s3_or_skip("migrate_store_copies_a_data_dir_to_s3") else {
        return;
    };
    let vars = env.server_env();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::spawn(&data, &[], &[]).expect("local server");
    let t = s.token("alice", INSTANCE, false);
    let contents = [bytes((6 << 20) + 5, 11), bytes(100, 12), bytes(3000, 13)];
    let records: Vec<Value> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| s.upload_one(&t, &format!("f{i}.bin"), c))
        .collect();
    let from = format!("local:{}", data.display());
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["migrate-store", "--from", &from, "--to", "s3"]);
    assert!(!ok && out.contains("stop the server first"), "{out}");
    s.stop();

    // A damaged source blob is found by its hash and not copied; the rest is.
    let hex = sha256_hex(&contents[2]);
    let blob = data.join(format!("blobs/sha256/{}/{}/{hex}", &hex[0..2], &hex[2..4]));
    let mut damaged = contents[2].clone();
    damaged[7] ^= 1;
    std::fs::write(&blob, &damaged).unwrap();
    let (ok, out) = run(&["migrate-store", "--from", &from, "--to", "s3"]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("{hex} CORRUPT")), "{out}");
    assert!(
        out.contains("3 blobs: 2 copied") && out.contains("1 corrupt"),
        "{out}"
    );
    // Repaired, a second run copies only what is missing.
    std::fs::write(&blob, &contents[2]).unwrap();
    let (ok, out) = run(&["migrate-store", "--from", &from, "--to", "s3"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("3 blobs: 1 copied (3000 bytes), 2 already present, 0 corrupt"),
        "{out}"
    );
    assert!(!out.contains(S3_SECRET));
    let mut want: Vec<String> = contents.iter().map(|c| sha256_hex(c)).collect();
    want.sort();
    assert_eq!(blobs_in(&env.store()), want);

    // The same data dir served from the bucket: every file reads back.
    std::fs::remove_dir_all(data.join("blobs")).unwrap();
    let s = Server::spawn(&data, &env_refs(&vars), &[]).expect("server on s3");
    for (r, c) in records.iter().zip(&contents) {
        let got = s.get(r["url"]["path"].as_str().unwrap(), Some(&t));
        assert_eq!(got.status(), 200);
        assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(c));
    }
    let (ok, out) = run(&["migrate-store", "--from", "ftp:x", "--to", "s3"]);
    assert!(!ok && out.contains("local:DIR"), "{out}");
}
