//! Benchmark (ignored by `cargo test`): `children` of a directory of 10,000 entries, first 25,
//! against a `get` by id measured in the same run (target: at most 3x), and the time to move
//! that directory. Run with `cargo test --release --test bench_children -- --ignored --nocapture`
//! (`BENCH_CHILDREN_FILES` changes the size).

mod common;
use common::*;
use depot::config::Config;
use depot::meta::{FileRecord, DIRECTORY_MIME};
use depot::service::dirs::{EMPTY_SHA, ROOT_OWNER};
use depot::types::{now_millis, AccountId, FileId, Sha256};
use std::time::Instant;

fn record(instance: depot::types::InstanceId, owner: &str, dir: &str, name: &str) -> FileRecord {
    let now = now_millis();
    FileRecord {
        id: FileId::new(),
        instance,
        created_by: AccountId(owner.into()),
        created: now,
        updated: now,
        trashed: None,
        name: name.into(),
        directory: dir.into(),
        extension: None,
        mime: DIRECTORY_MIME.into(),
        size: 0,
        sha256: EMPTY_SHA,
        width: None,
        height: None,
        is_stared: None,
        is_sharable: None,
    }
}

/// The root, `/big` and `files` files in it; returns (the directory's id, a file's id).
fn seed(data: &std::path::Path, files: usize) -> (String, String) {
    let svc = depot::open_service(Config {
        data_dir: data.to_path_buf(),
        ..Config::default()
    })
    .unwrap();
    let instance = svc.meta.ensure_instance(INSTANCE).unwrap().id;
    let root = record(instance, ROOT_OWNER, "/", "");
    let big = record(instance, "owner", "/", "big");
    let dst = record(instance, "owner", "/", "dst");
    let big_id = big.id.to_string();
    svc.meta
        .insert_files(&[(root, None), (big, None), (dst, None)])
        .unwrap();
    let mut sample = None;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..files {
        let mut f = record(instance, "owner", "/big", &format!("file{i}.txt"));
        f.mime = "text/plain".into();
        f.extension = Some("txt".into());
        f.size = 3;
        f.sha256 = Sha256([7; 32]);
        sample.get_or_insert(f.id.to_string());
        batch.push((f, None));
        if batch.len() == 1000 {
            svc.meta.insert_files(&batch).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        svc.meta.insert_files(&batch).unwrap();
    }
    (big_id, sample.unwrap())
}

fn median_ms(s: &Server, token: &str, query: &str, runs: usize) -> f64 {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let res = s.graphql(Some(token), query);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(res["errors"].is_null(), "{query}: {res}");
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[runs / 2]
}

#[test]
#[ignore = "benchmark"]
fn children_of_a_large_directory() {
    let files: usize = std::env::var("BENCH_CHILDREN_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let (big, sample) = seed(dir.path(), files);
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let owner = s.token("owner", INSTANCE, false);
    let get = format!("{{ get(type: File, id: {sample:?}) {{ ... on File {{ name size }} }} }}");
    let children = format!(
        "{{ get(type: File, id: {big:?}) {{ ... on File {{ children(first: 25) {{ name size }} }} }} }}"
    );
    let runs = 15;
    median_ms(&s, &owner, &get, runs);
    let reference = median_ms(&s, &owner, &get, runs);
    let ms = median_ms(&s, &owner, &children, runs);
    println!("| case ({files} entries) | median ms | ratio to get |");
    println!("| --- | --- | --- |");
    println!("| get by id (reference) | {reference:.2} | 1.0x |");
    println!("| children first 25 | {ms:.2} | {:.1}x |", ms / reference);
    let t = Instant::now();
    let r = s
        .client
        .post(s.url(&format!("/files/{big}/move")))
        .header("Authorization", &owner)
        .json(&serde_json::json!({"directory": "/dst"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    println!(
        "| move a directory of {files} files | {:.0} | - |",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
