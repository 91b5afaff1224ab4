//! `depot fsck` and `depot gc` on real data dirs.

mod common;
use common::*;

// `depot` (the command line) and `blob_files` are in the harness (tests/common/).

#[test]
fn fsck_finds_a_flipped_byte_and_repair_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    let damaged = s.upload_one(&t, "a.bin", &bytes(3 << 20, 1));
    let intact = s.upload_one(&t, "b.bin", &bytes(1000, 2));
    s.upload_one(&t, "b2.bin", &bytes(1000, 2));
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(
        !ok && text.contains("stop the server first"),
        "refuses while the server runs: {text}"
    );
    s.stop();

    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(ok, "{text}");
    assert!(
        text.contains("2 blobs, 3 records, 0 corrupt, 0 missing") && text.contains("clean"),
        "{text}"
    );

    // Flip one byte in the middle of the large blob.
    let victim = blob_files(dir.path())
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes_on_disk = std::fs::read(&victim).unwrap();
    bytes_on_disk[1 << 20] ^= 0x01;
    std::fs::write(&victim, &bytes_on_disk).unwrap();
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("corrupt blob") && text.contains("DAMAGED"),
        "{text}"
    );

    let (ok, text) = depot(&["fsck", "--repair"], dir.path());
    assert!(!ok, "the record still misses its bytes: {text}");
    assert!(text.contains("quarantined corrupt blob"), "{text}");
    assert!(dir.path().join("quarantine").read_dir().unwrap().count() == 1);
    let (ok, text) = depot(&["fsck"], dir.path());
    let damaged_id = damaged["hypi"]["id"].as_str().unwrap();
    assert!(
        !ok && text.contains("missing blob") && text.contains(damaged_id),
        "fsck lists the file whose content is gone: {text}"
    );
    // The server does not serve the damaged bytes: the file answers CONTENT_MISSING (logged
    // with its id), not the wrong bytes and not a bare 500; other files are served as before.
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    for _ in 0..2 {
        let r = s.get(damaged["url"]["path"].as_str().unwrap(), Some(&t));
        assert_eq!(r.status(), 500);
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "CONTENT_MISSING", "{body}");
    }
    let r = s.get(intact["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), &bytes(1000, 2)[..]);
    let log = s.log.lock().unwrap().clone();
    assert!(
        log.contains("file content is missing") && log.contains(damaged_id),
        "the file id is logged: {log}"
    );
}

#[test]
fn a_crash_between_blob_and_metadata_leaves_an_orphan_that_gc_collects() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[("DEPOT_FAILPOINT", "after-blob-commit")], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    let form = upload_form(&[("x.bin", &bytes(5000, 3))]);
    let r = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &t)
        .multipart(form)
        .send();
    assert!(
        r.is_err() || !r.unwrap().status().is_success(),
        "the upload must not be acknowledged"
    );
    s.stop();
    assert_eq!(blob_files(dir.path()).len(), 1, "the blob made it to disk");

    // Restarting works and nothing references the orphan; fsck calls the store clean.
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    let list: Value = s.get("/files", Some(&t)).json().unwrap();
    assert_eq!(list["edges"].as_array().unwrap().len(), 0);
    s.stop();
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(ok && text.contains("1 unreferenced"), "{text}");
    let (ok, text) = depot(&["gc"], dir.path());
    assert!(
        ok && text.contains("removed 0 blobs") && text.contains("kept 1"),
        "young orphans are kept: {text}"
    );
    let (ok, text) = depot(&["gc", "--grace", "0s"], dir.path());
    assert!(ok && text.contains("removed 1 blobs"), "{text}");
    assert_eq!(blob_files(dir.path()).len(), 0);
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(ok && text.contains("0 unreferenced"), "{text}");
}
