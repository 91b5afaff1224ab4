//! The metadata contract suite (src/meta/contract.rs) on every backend: sled, each case on a
//! fresh store in its own temp dir; PostgreSQL (`scripts/services start`), each case in its own
//! schema, all cases at once.

mod common;
use common::*;
use depot::meta::{contract, SledMeta};

#[test]
fn sled_meets_the_metadata_contract() {
    let mut dirs = Vec::new();
    let ran = contract::run_all(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledMeta::open(dir.path()).expect("open sled");
        dirs.push(dir);
        store
    });
    assert_eq!(ran, contract::cases().len());
    assert!(ran >= 16, "every case ran ({ran})");
}

#[test]
fn postgres_meets_the_metadata_contract() {
    let Some(url) = pg_or_skip("postgres_meets_the_metadata_contract") else {
        return;
    };
    let cases = contract::cases();
    assert!(cases.len() >= 16);
    let failed: Vec<&str> = std::thread::scope(|s| {
        let running: Vec<_> = cases
            .iter()
            .map(|(name, case)| {
                let url = &url;
                let h = s.spawn(move || {
                    // Two connections a case: 23 cases stay well inside PostgreSQL's default 100.
                    let store = pg_store(url, &new_schema(name), 2);
                    case(&store);
                });
                (*name, h)
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(name, h)| h.join().is_err().then_some(name))
            .collect()
    });
    assert!(failed.is_empty(), "cases failed on PostgreSQL: {failed:?}");
}

/// `depot migrate` brings a new schema to the current version once; a second run finds it
/// current; a URL that does not parse is refused without echoing it.
#[test]
fn depot_migrate_applies_once() {
    let Some(url) = pg_or_skip("depot_migrate_applies_once") else {
        return;
    };
    let url = url_in_new_schema(&url, "migrate");
    let run = |url: &str| {
        std::process::Command::new(BIN)
            .arg("migrate")
            .env("DEPOT_META_KIND", "postgres")
            .env("DEPOT_META_URL", url)
            .output()
            .expect("depot migrate")
    };
    let first = run(&url);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("applied version 1"), "{out}");
    let again = run(&url);
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert!(out.contains("schema is current"), "{out}");
    let bad = run("postgres://depot:hunter2-secret@[bad");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(!err.contains("hunter2-secret"), "password echoed: {err}");
    let sled = std::process::Command::new(BIN)
        .arg("migrate")
        .env("DEPOT_META_KIND", "sled")
        .output()
        .unwrap();
    assert!(!sled.status.success());
    assert!(String::from_utf8_lossy(&sled.stderr).contains("meta.kind"));
}
