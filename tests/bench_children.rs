//! Benchmark (ignored by `cargo test`; run by `scripts/bench`, case `children`): `children` of
//! a directory of 10,000 entries, first 25, against a `get` by id measured in the same run
//! (target: at most 3x), and the time to move that directory. By hand:
//! `cargo test --release --test bench_children -- --ignored --nocapture`
//! (`BENCH_CHILDREN_FILES` changes the size).

mod common;
use common::*;
use depot::service::dirs::ROOT_OWNER;
use std::time::Instant;

/// The root, `/big` with `files` files in it and an empty `/dst`; returns (`/big`'s id, a
/// file's id).
fn seed(data: &std::path::Path, files: usize) -> (String, String) {
    let mut s = Seeder::open(data);
    let root = s.record(ROOT_OWNER, "/", "", true);
    let big = s.record("owner", "/", "big", true);
    let dst = s.record("owner", "/", "dst", true);
    let big_id = big.id.to_string();
    for f in [root, big, dst] {
        s.add(f);
    }
    let mut sample = None;
    for i in 0..files {
        let f = s.record("owner", "/big", &format!("file{i}.txt"), false);
        sample.get_or_insert(f.id.to_string());
        s.add(f);
    }
    (big_id, sample.expect("at least one file"))
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn children_of_a_large_directory() {
    let files = env_count("BENCH_CHILDREN_FILES", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let (big, sample) = seed(dir.path(), files);
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let owner = s.token("owner", INSTANCE, false);
    let get = format!("{{ get(type: File, id: {sample:?}) {{ ... on File {{ name size }} }} }}");
    let children = format!(
        "{{ get(type: File, id: {big:?}) {{ ... on File {{ children(first: 25) {{ name size }} }} }} }}"
    );
    let runs = 15;
    median_ms(&s, &owner, &get, runs); // warm up connections and caches
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
        "| move a directory of {files} files (one request) | {:.0} | - |",
        t.elapsed().as_secs_f64() * 1000.0
    );
    // The move really moved the tree.
    let moved = s.graphql(Some(&owner), &children);
    assert_eq!(
        moved["data"]["get"]["children"].as_array().map(Vec::len),
        Some(25.min(files))
    );
    let path = s.graphql(
        Some(&owner),
        &format!("{{ get(type: File, id: {sample:?}) {{ ... on File {{ directory }} }} }}"),
    );
    assert_eq!(path["data"]["get"]["directory"], "/dst/big", "{path}");
}
