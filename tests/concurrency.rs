//! Concurrency against the real server: uploads of shared bytes racing deletes of those bytes,
//! and grants racing revocations. Afterwards the store must be exact, not merely plausible.

mod common;
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

// `tokens` (signed here: hundreds of `depot token` runs would dominate the test's time),
// `client` and `blob_names` are in the harness (tests/common/).

/// One upload of one file to the race's directory; the File record or the failure as text.
fn upload(c: &Client, s: &Server, token: &str, name: &str, data: &[u8]) -> Result<Value, String> {
    s.try_upload(c, token, "/upload/race", name, data)
}

fn delete(c: &Client, s: &Server, token: &str, f: &Value) -> u16 {
    c.delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
        .header("Authorization", token)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["hypi"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn uploads_of_shared_bytes_racing_deletes_leave_exact_references() {
    const UPLOADERS: usize = 200;
    const SHARED: usize = 50; // uploaders 0..SHARED send the same bytes
    const ROUNDS: usize = 3; // each shared uploader uploads and deletes, keeping the last if even
    const EARLY: usize = 20; // accounts holding the shared bytes before the race, deleted in it
    const CHURN: usize = 4; // accounts that upload, read back and delete other shared bytes
    const CHURN_ROUNDS: usize = 25;

    let s = Server::start();
    let accounts: Vec<String> = (0..UPLOADERS).map(|i| format!("u{i}")).collect();
    let early_accounts: Vec<String> = (0..EARLY).map(|i| format!("early{i}")).collect();
    let churn_accounts: Vec<String> = (0..CHURN).map(|i| format!("churn{i}")).collect();
    let tok = tokens(&s, &accounts, false);
    let early_tok = tokens(&s, &early_accounts, false);
    let churn_tok = tokens(&s, &churn_accounts, false);
    let shared = bytes(150_000, 4242);
    // Its reference count keeps dropping to zero while other uploads of it are in flight: the
    // window where a delete could remove a blob an upload has just counted on.
    let churned = bytes(70_000, 777);
    let unique = |i: usize| bytes(5_000 + i * 131, 1000 + i as u64);
    let expected = |i: usize| {
        if i < SHARED {
            shared.clone()
        } else {
            unique(i)
        }
    };

    let early: Vec<Value> = early_tok
        .iter()
        .map(|t| s.upload_one(t, "early.bin", &shared))
        .collect();
    assert_eq!(s.blob_count(), 1);

    let barrier = Barrier::new(UPLOADERS + EARLY + CHURN);
    let survivors: Mutex<Vec<(usize, Value)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let (acked, deleted) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    std::thread::scope(|sc| {
        for i in 0..UPLOADERS {
            let (s, tok, barrier, survivors, failures) =
                (&s, &tok, &barrier, &survivors, &failures);
            let (acked, deleted, expected) = (&acked, &deleted, &expected);
            sc.spawn(move || {
                let c = client();
                let data = expected(i);
                barrier.wait();
                let rounds = if i < SHARED { ROUNDS } else { 1 };
                for round in 0..rounds {
                    let f = match upload(&c, s, &tok[i], &format!("f{i}-{round}.bin"), &data) {
                        Ok(f) => f,
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            return;
                        }
                    };
                    acked.fetch_add(1, Ordering::Relaxed);
                    if f["sha256"] != sha256_hex(&data) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("u{i}: wrong hash {f}"));
                    }
                    let keep = round + 1 == rounds && (i >= SHARED || i % 2 == 0);
                    if keep {
                        survivors.lock().unwrap().push((i, f));
                    } else {
                        match delete(&c, s, &tok[i], &f) {
                            204 => {
                                deleted.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures
                                .lock()
                                .unwrap()
                                .push(format!("u{i}: delete {other}")),
                        }
                    }
                }
            });
        }
        for (k, f) in early.iter().enumerate() {
            let (s, early_tok, barrier, failures, deleted) =
                (&s, &early_tok, &barrier, &failures, &deleted);
            sc.spawn(move || {
                let c = client();
                barrier.wait();
                // Spread over the upload window rather than all at its start.
                std::thread::sleep(Duration::from_millis(15 * k as u64));
                match delete(&c, s, &early_tok[k], f) {
                    204 => {
                        deleted.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("early{k}: delete {other}")),
                }
            });
        }
        for k in 0..CHURN {
            let (s, churn_tok, barrier, failures) = (&s, &churn_tok, &barrier, &failures);
            let (acked, deleted, churned) = (&acked, &deleted, &churned);
            sc.spawn(move || {
                let c = client();
                barrier.wait();
                for round in 0..CHURN_ROUNDS {
                    let t = &churn_tok[k];
                    let f = match upload(&c, s, t, &format!("churn{k}-{round}.bin"), churned) {
                        Ok(f) => f,
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            return;
                        }
                    };
                    acked.fetch_add(1, Ordering::Relaxed);
                    let dl = c
                        .get(s.url(f["url"]["path"].as_str().unwrap()))
                        .header("Authorization", t)
                        .send()
                        .and_then(|r| r.error_for_status())
                        .and_then(|r| r.bytes());
                    match dl {
                        Ok(b) if sha256_hex(&b) == sha256_hex(churned) => {}
                        Ok(_) => failures
                            .lock()
                            .unwrap()
                            .push(format!("churn{k}: wrong bytes")),
                        Err(e) => failures
                            .lock()
                            .unwrap()
                            .push(format!("churn{k}: read back: {e}")),
                    }
                    match delete(&c, s, t, &f) {
                        204 => {
                            deleted.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("churn{k}: delete {other}")),
                    }
                }
            });
        }
    });
    let race = start.elapsed();
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    let survivors = survivors.into_inner().unwrap();
    let acked = acked.into_inner();
    let deleted = deleted.into_inner();
    assert_eq!(
        acked,
        SHARED * ROUNDS + (UPLOADERS - SHARED) + CHURN * CHURN_ROUNDS
    );
    assert_eq!(survivors.len(), SHARED / 2 + (UPLOADERS - SHARED));
    s.eventually("no temp file left", || s.temp_files() == 0);

    // Every survivor is listed by its owner, downloads, and has the right bytes; nothing else
    // is listed by anyone.
    let c = client();
    let mut by_account: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, f) in &survivors {
        by_account
            .entry(*i)
            .or_default()
            .insert(f["hypi"]["id"].as_str().unwrap().to_string());
    }
    for (i, t) in tok.iter().enumerate() {
        let v: Value = c
            .get(s.url("/files?first=1000"))
            .header("Authorization", t)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let listed: BTreeSet<String> = v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["hypi"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, by_account.remove(&i).unwrap_or_default(), "u{i}");
    }
    for t in early_tok.iter().chain(&churn_tok) {
        let v: Value = s.get("/files", Some(t)).json().unwrap();
        assert!(v["edges"].as_array().unwrap().is_empty());
    }
    let mut verified = 0;
    for (i, f) in &survivors {
        let dl = s.get(f["url"]["path"].as_str().unwrap(), Some(&tok[*i]));
        assert_eq!(dl.status(), 200, "u{i}");
        let body = dl.bytes().unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(&expected(*i)), "u{i}");
        assert_eq!(f["sha256"], sha256_hex(&body), "u{i}");
        verified += 1;
    }

    // One blob per distinct content still referenced: none missing, none orphaned.
    let referenced: BTreeSet<String> = survivors
        .iter()
        .map(|(_, f)| f["sha256"].as_str().unwrap().to_string())
        .collect();
    let on_disk = blob_names(&s.data);
    println!(
        "race of {UPLOADERS} uploaders + {EARLY} deleters + {CHURN} churners in {race:?}: \
         {acked} uploads acknowledged, \
         {deleted} deletes, {} survivors, {verified} verified, {} distinct contents, {} blobs",
        survivors.len(),
        referenced.len(),
        on_disk.len()
    );
    assert_eq!(referenced.len(), UPLOADERS - SHARED + 1);
    assert_eq!(on_disk, referenced);

    // The counts are exact: the shared blob outlives every reference but the last, and goes
    // with it; then every other blob goes with its one reference.
    let shared_hex = sha256_hex(&shared);
    let shared_left: Vec<&(usize, Value)> = survivors.iter().filter(|(i, _)| *i < SHARED).collect();
    for (n, (i, f)) in shared_left.iter().enumerate() {
        assert!(
            blob_names(&s.data).contains(&shared_hex),
            "shared blob gone early"
        );
        assert_eq!(delete(&c, &s, &tok[*i], f), 204);
        if let Some((j, g)) = shared_left.get(n + 1) {
            let dl = s.get(g["url"]["path"].as_str().unwrap(), Some(&tok[*j]));
            assert_eq!(dl.status(), 200, "u{j} after u{i} deleted");
            assert_eq!(sha256_hex(&dl.bytes().unwrap()), shared_hex);
        }
    }
    assert!(
        !blob_names(&s.data).contains(&shared_hex),
        "shared blob orphaned"
    );
    let unique_left: Vec<&(usize, Value)> =
        survivors.iter().filter(|(i, _)| *i >= SHARED).collect();
    std::thread::scope(|sc| {
        for chunk in unique_left.chunks(20) {
            let (s, tok) = (&s, &tok);
            sc.spawn(move || {
                let c = client();
                for (i, f) in chunk {
                    assert_eq!(delete(&c, s, &tok[*i], f), 204, "u{i}");
                }
            });
        }
    });
    assert_eq!(s.blob_count(), 0, "{:?}", blob_names(&s.data));
    assert_eq!(s.temp_files(), 0);
}

#[test]
fn grants_racing_revocations_leave_the_decision_of_the_final_grants() {
    const GRANTERS: usize = 8;
    const OPS: usize = 6;
    const ROUNDS: usize = 6;
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let f = s.upload_one(&alice, "shared.txt", b"public now and then");
    let fid = f["hypi"]["id"].as_str().unwrap().to_string();
    let url = f["url"]["path"].as_str().unwrap().to_string();
    assert_eq!(s.set_anonymous(&admin, true), 200);

    let right = |resource: &str| {
        json!({"resource": resource, "resourceType": "File", "operationType": "Query",
               "operation": "read", "permissionType": "RBP",
               "members": [{"hypi": {"id": "anonymous"}}]})
    };
    let listed = |resource: &str| -> BTreeSet<String> {
        let v: Value = s
            .get(&format!("/access-rights?resource={resource}"), Some(&alice))
            .json()
            .unwrap();
        ids(&v)
    };
    let (mut reads_200, mut reads_401) = (0, 0);
    for round in 0..ROUNDS {
        // Odd rounds end with one grant alive (alice on the file, alice on "*", the admin on the
        // file), even rounds with none.
        let keeper = (round % 2 == 1).then_some((round / 2) % GRANTERS);
        let kept: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let done = AtomicBool::new(false);
        let (ok_reads, denied_reads) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let barrier = Barrier::new(GRANTERS + 2);
        std::thread::scope(|sc| {
            let mut granters = Vec::new();
            for t in 0..GRANTERS {
                let (s, barrier, kept, failures) = (&s, &barrier, &kept, &failures);
                // Half grant on the file, half on all of alice's files; some through the admin.
                let resource = if t % 2 == 0 {
                    fid.clone()
                } else {
                    "*".to_string()
                };
                let token = if t % 4 == 2 { &admin } else { &alice };
                let body = right(&resource);
                granters.push(sc.spawn(move || {
                    let c = client();
                    barrier.wait();
                    for k in 0..OPS {
                        let r = c
                            .post(s.url("/access-rights"))
                            .header("Authorization", token)
                            .json(&body)
                            .send()
                            .unwrap();
                        if r.status() != 201 {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("grant: {}", r.status()));
                            return;
                        }
                        let v: Value = r.json().unwrap();
                        let id = v["hypi"]["id"].as_str().unwrap().to_string();
                        if k + 1 == OPS && keeper == Some(t) {
                            kept.lock()
                                .unwrap()
                                .push((id, resource.clone(), token.clone()));
                            continue;
                        }
                        let st = c
                            .delete(s.url(&format!("/access-rights/{id}")))
                            .header("Authorization", token)
                            .send()
                            .unwrap()
                            .status();
                        if st != 204 {
                            failures.lock().unwrap().push(format!("revoke: {st}"));
                        }
                    }
                }));
            }
            for _ in 0..2 {
                let (s, barrier, done, failures, url) = (&s, &barrier, &done, &failures, &url);
                let (ok_reads, denied_reads) = (&ok_reads, &denied_reads);
                sc.spawn(move || {
                    let c = client();
                    barrier.wait();
                    while !done.load(Ordering::Relaxed) {
                        match c.get(s.url(url)).send().unwrap().status().as_u16() {
                            200 => ok_reads.fetch_add(1, Ordering::Relaxed),
                            401 => denied_reads.fetch_add(1, Ordering::Relaxed),
                            other => {
                                failures.lock().unwrap().push(format!("read: {other}"));
                                0
                            }
                        };
                    }
                });
            }
            // The readers stop once every granter has finished.
            let results: Vec<_> = granters.into_iter().map(|g| g.join()).collect();
            done.store(true, Ordering::Relaxed);
            for r in results {
                if let Err(panic) = r {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        let failures = failures.into_inner().unwrap();
        assert!(failures.is_empty(), "round {round}: {failures:?}");
        reads_200 += ok_reads.into_inner();
        reads_401 += denied_reads.into_inner();
        let kept = kept.into_inner().unwrap();
        assert_eq!(kept.len(), usize::from(keeper.is_some()), "round {round}");

        // The stored grants are exactly the kept ones, and the decision follows them.
        let on_file: BTreeSet<String> = kept
            .iter()
            .filter(|(_, r, _)| *r == fid)
            .map(|(id, _, _)| id.clone())
            .collect();
        let on_all: BTreeSet<String> = kept
            .iter()
            .filter(|(_, r, _)| r == "*")
            .map(|(id, _, _)| id.clone())
            .collect();
        assert_eq!(listed(&fid), on_file, "round {round}");
        assert_eq!(listed("*"), on_all, "round {round}");
        let want = if kept.is_empty() { 401 } else { 200 };
        for _ in 0..3 {
            assert_eq!(s.get(&url, None).status(), want, "round {round}: {kept:?}");
        }
        for (id, _, token) in &kept {
            let st = s
                .client
                .delete(s.url(&format!("/access-rights/{id}")))
                .header("Authorization", token)
                .send()
                .unwrap()
                .status();
            assert_eq!(st, 204);
        }
        assert_eq!(s.get(&url, None).status(), 401, "round {round}: revoked");
    }
    println!(
        "{ROUNDS} rounds of {GRANTERS} granters x {OPS} grant/revoke: anonymous reads during the \
         race {reads_200} x 200, {reads_401} x 401"
    );
}

/// Large uploads side by side: the server's buffers fill while the writers catch up, which is
/// ordinary load, never a reason to refuse an upload.
#[test]
fn parallel_large_uploads_all_succeed() {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 4;
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let data = bytes(16 << 20, 31);
    let want = sha256_hex(&data);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    // One client for all threads: its single I/O thread sends the bodies in bursts, which
    // fills the server's buffers fastest.
    let shared = client();
    for _ in 0..ROUNDS {
        let round: Vec<String> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let (s, t, data, want, c) = (&s, &t, &data, &want, &shared);
                    sc.spawn(
                        move || match upload(c, s, t, &format!("big{i}.bin"), data) {
                            Ok(f) if f["sha256"] == *want => "200".to_string(),
                            Ok(f) => format!("wrong hash {}", f["sha256"]),
                            Err(e) => e,
                        },
                    )
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in round {
            *outcomes.entry(o).or_default() += 1;
        }
    }
    println!("{CLIENTS} x {ROUNDS} parallel 16 MiB uploads: {outcomes:?}");
    assert_eq!(
        outcomes.get("200"),
        Some(&(CLIENTS * ROUNDS)),
        "{outcomes:?}"
    );
    s.eventually("no temp file left", || s.temp_files() == 0);
    assert_eq!(s.blob_count(), 1);
}
