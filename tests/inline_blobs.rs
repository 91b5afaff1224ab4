//! Small blobs kept inline in the local store's sled database (`store.inline_max`, issue 14):
//! uploads, dedup, ranged downloads, deletes, kill -9 and restart, fsck and gc, on a real server.

mod common;
use common::*;

/// The default of a real deployment (the harness turns inline blobs off for other tests).
const INLINE_ON: (&str, &str) = (INLINE_ENV, "65536");

fn inline_env() -> Vec<(String, String)> {
    vec![(INLINE_ON.0.to_string(), INLINE_ON.1.to_string())]
}

fn get_range(s: &Server, path: &str, token: &str, range: &str) -> reqwest::blocking::Response {
    s.client
        .get(s.url(path))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
        .header("Range", range)
        .send()
        .expect("GET")
}

#[test]
fn small_uploads_live_inline_and_survive_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[INLINE_ON], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    let small = bytes(5000, 7);
    let a = s.upload_one(&t, "a.bin", &small);
    let b = s.upload_one(&t, "b.bin", &small);
    assert_eq!(a["size"], 5000);
    assert_eq!(a["sha256"], b["sha256"], "{a}");
    // Nothing of them is a file: no blob file, no temp file left.
    assert_eq!(s.blob_count(), 0, "{:?}", blob_names(&s.data));
    assert_eq!(s.temp_files(), 0);
    // The boundary: inline_max bytes are inline, one more is a file.
    let at = s.upload_one(&t, "at.bin", &bytes(65536, 8));
    assert_eq!(s.blob_count(), 0);
    let over = s.upload_one(&t, "over.bin", &bytes(65537, 9));
    assert_eq!(s.blob_count(), 1);

    let path = |f: &Value| f["url"]["path"].as_str().unwrap().to_string();
    let r = s.get(&path(&a), Some(&t));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", sha256_hex(&small))
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &small[..]);
    let r = get_range(&s, &path(&b), &t, "bytes=100-199");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &small[100..200]);
    let r = get_range(&s, &path(&b), &t, "bytes=-10");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &small[4990..]);
    let r = get_range(&s, &path(&b), &t, "bytes=5000-");
    assert_eq!(r.status(), 416);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "RANGE_NOT_SATISFIABLE", "{body}");
    assert_eq!(
        s.get(&path(&at), Some(&t)).bytes().unwrap().as_ref(),
        &bytes(65536, 8)[..]
    );

    // Acknowledged uploads survive kill -9 (Server::stop kills) and a restart.
    s.stop();
    let s = Server::spawn(dir.path(), &[INLINE_ON], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    assert_eq!(
        s.get(&path(&a), Some(&t)).bytes().unwrap().as_ref(),
        &small[..]
    );

    // One of two references deleted: the bytes stay for the other; the last one takes them.
    let del = |f: &Value| {
        s.client
            .delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
            .header("Authorization", &t)
            .header("hypi-domain", INSTANCE)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert!(matches!(del(&a), 200 | 204));
    assert_eq!(
        s.get(&path(&b), Some(&t)).bytes().unwrap().as_ref(),
        &small[..]
    );
    assert!(matches!(del(&b), 200 | 204));
    assert_eq!(s.get(&path(&b), Some(&t)).status(), 404);
    // Uploaded again after its blob went: stored again, served again.
    let c = s.upload_one(&t, "c.bin", &small);
    assert_eq!(
        s.get(&path(&c), Some(&t)).bytes().unwrap().as_ref(),
        &small[..]
    );
    s.stop();

    // fsck reads the inline blobs like files: every record finds its bytes, intact.
    let (ok, text) = depot_with(&inline_env(), &["fsck"], dir.path());
    assert!(ok, "{text}");
    assert!(
        text.contains("3 blobs, 3 records, 0 corrupt, 0 missing") && text.contains("clean"),
        "{text}"
    );
    // A server started with inline blobs off still reads the ones stored before.
    let s = Server::spawn(dir.path(), &[(INLINE_ENV, "0")], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    assert_eq!(
        s.get(&path(&c), Some(&t)).bytes().unwrap().as_ref(),
        &small[..]
    );
    assert_eq!(
        s.get(&path(&over), Some(&t)).bytes().unwrap().as_ref(),
        &bytes(65537, 9)[..]
    );
}

#[test]
fn an_inline_blob_orphaned_by_a_crash_is_collected_by_gc() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(
        dir.path(),
        &[INLINE_ON, ("DEPOT_FAILPOINT", "after-blob-commit")],
        &[],
    )
    .unwrap();
    let t = s.token("alice", INSTANCE, false);
    let r = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &t)
        .multipart(upload_form(&[("x.bin", &bytes(5000, 3))]))
        .send();
    assert!(
        r.is_err() || !r.unwrap().status().is_success(),
        "the upload must not be acknowledged"
    );
    s.stop();
    assert_eq!(blob_files(dir.path()).len(), 0, "inline, not a file");

    let env = inline_env();
    let (ok, text) = depot_with(&env, &["fsck"], dir.path());
    assert!(ok && text.contains("1 unreferenced"), "{text}");
    let (ok, text) = depot_with(&env, &["gc"], dir.path());
    assert!(
        ok && text.contains("removed 0 blobs") && text.contains("kept 1"),
        "young orphans are kept: {text}"
    );
    let (ok, text) = depot_with(&env, &["gc", "--grace", "0s"], dir.path());
    assert!(ok && text.contains("removed 1 blobs"), "{text}");
    let (ok, text) = depot_with(&env, &["fsck"], dir.path());
    assert!(ok && text.contains("0 unreferenced"), "{text}");
}
