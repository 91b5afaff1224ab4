//! Benchmark (ignored by `cargo test`; run by `scripts/bench`): GraphQL `find` over 100,000
//! files, against a `get` by id measured in the same run.

mod common;
use common::*;
use std::time::Instant;

fn seed(data: &std::path::Path, files: usize) -> (String, String) {
    let mut s = Seeder::open(data);
    let mut sample = None;
    for i in 0..files {
        // 1% of the files belong to "owner", the rest to 100 other accounts.
        let owner = if i % 100 == 0 {
            "owner".to_string()
        } else {
            format!("user{}", i % 97)
        };
        let mut f = s.record(
            &owner,
            &format!("/d{}", i % 1000),
            &format!("file{i}.txt"),
            false,
        );
        f.size = (i % 5000) as u64;
        if i == files / 2 {
            sample = Some((f.id.to_string(), f.path()));
        }
        s.add(f);
    }
    sample.unwrap()
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn find_over_100k_files() {
    let files = env_count("BENCH_FIND_FILES", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (id, path) = seed(dir.path(), files);
    eprintln!(
        "seeded {files} records in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let admin = s.token("root", INSTANCE, true);
    let owner = s.token("owner", INSTANCE, false);
    let q = |arcql: &str, extra: &str| {
        format!("{{ find(type: File, arcql: {arcql:?}{extra}) {{ edges {{ cursor node {{ ... on File {{ name size }} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")
    };
    let get = format!("{{ get(type: File, id: {id:?}) {{ ... on File {{ name size }} }} }}");
    let runs = 15;
    median_ms(&s, &admin, &get, runs); // warm up connections and caches
    let reference = median_ms(&s, &admin, &get, runs);
    let cases: Vec<(&str, &str, String)> = vec![
        ("get by id (reference)", "admin", get.clone()),
        (
            "find hypi.id = (index)",
            "admin",
            q(&format!("hypi.id = '{id}'"), ""),
        ),
        (
            "find path = (index)",
            "admin",
            q(&format!("path = '{path}'"), ""),
        ),
        (
            "find directory = , first 25 (index)",
            "admin",
            q("directory = '/d500'", ", first: 25"),
        ),
        (
            "find * first 25 (instance index, admin)",
            "admin",
            q("*", ", first: 25"),
        ),
        (
            "find own files, first 25 (owner index)",
            "owner",
            q("*", ", first: 25"),
        ),
        (
            "find own files, name ~ (owner index + filter)",
            "owner",
            q("name ~ 'file50000'", ""),
        ),
        (
            "find size > 4990 (scan 100k)",
            "admin",
            q("size > 4990", ", first: 25"),
        ),
        (
            "find path * wildcard (scan 100k, compiled matcher)",
            "admin",
            q("path * '*/d5*/file*5?.txt'", ", first: 25"),
        ),
        (
            "find * SORT size DESC (scan + sort 100k)",
            "admin",
            q("* SORT size DESC", ", first: 25"),
        ),
    ];
    println!("| find case ({files} files) | median ms | ratio to get |");
    println!("| --- | --- | --- |");
    for (name, who, query) in cases {
        let tok = if who == "admin" { &admin } else { &owner };
        let ms = median_ms(&s, tok, &query, runs);
        println!("| {name} | {ms:.2} | {:.1}x |", ms / reference);
    }
}
