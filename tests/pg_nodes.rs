//! Two depot nodes on one PostgreSQL database and one S3 bucket (issue 13), under races and
//! faults: uploads of shared contents racing deletes across the nodes while `depot fsck` and
//! `depot gc --grace 0s` run against the same backends; the database restarted under running
//! nodes; the object store cut mid-upload; a node killed mid-upload. Afterwards the store must
//! be exact: counts equal references, one object per referenced content, fsck clean.
//! Needs `scripts/services start` (else `SKIPPED: ...`, or a failure under
//! `DEPOT_REQUIRE_SERVICES=1`).

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, RwLock};

/// The restart test stops PostgreSQL for every test of this binary: it runs alone, the others
/// side by side.
static DATABASE: RwLock<()> = RwLock::new(());

fn shared_db() -> std::sync::RwLockReadGuard<'static, ()> {
    DATABASE.read().unwrap_or_else(|p| p.into_inner())
}

/// One test's backends: a fresh schema, a fresh bucket, and the data dirs of two nodes plus one
/// for the maintenance commands (each process locks its own).
struct Nodes {
    url: String,
    s3: S3Env,
    dirs: [tempfile::TempDir; 3],
}

impl Nodes {
    fn setup(test: &str) -> Option<Nodes> {
        let pg = pg_or_skip(test)?;
        let s3 = s3_or_skip(test)?;
        let url = url_in_new_schema(&pg, "nodes");
        let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
        // One JWT secret for every process.
        token_for(dirs[0].path(), "bootstrap", INSTANCE, false, &[]);
        for d in &dirs[1..] {
            std::fs::copy(
                dirs[0].path().join("jwt.secret"),
                d.path().join("jwt.secret"),
            )
            .unwrap();
        }
        Some(Nodes { url, s3, dirs })
    }

    /// The environment of a process on these backends, reaching S3 at `endpoint`.
    fn env_via(&self, endpoint: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("DEPOT_META_KIND".to_string(), "postgres".to_string()),
            ("DEPOT_META_URL".to_string(), self.url.clone()),
            ("DEPOT_META_POOL_SIZE".to_string(), "8".to_string()),
        ];
        env.extend(self.s3.server_env_via(endpoint));
        env
    }

    fn env(&self) -> Vec<(String, String)> {
        self.env_via(&self.s3.endpoint)
    }

    /// Node `i` (0 or 1), with extra settings.
    fn node(&self, i: usize, endpoint: &str, extra: &[(&str, &str)]) -> Server {
        let mut env = self.env_via(endpoint);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Server::spawn(self.dirs[i].path(), &env_refs(&env), &[])
            .unwrap_or_else(|log| panic!("node {i} starts: {log}"))
    }

    fn start(&self, i: usize) -> Server {
        self.node(i, &self.s3.endpoint, &[])
    }

    /// `depot <args>` against the same backends, from a data dir of its own (so it runs while
    /// the nodes serve).
    fn cli(&self, args: &[&str]) -> (bool, String) {
        depot_with(&self.env(), args, self.dirs[2].path())
    }

    /// `depot fsck`, which must find the store clean; its output.
    fn fsck_clean(&self) -> String {
        let (ok, out) = self.cli(&["fsck"]);
        assert!(ok && out.contains(": clean"), "fsck:\n{out}");
        out
    }

    /// Rows of a query in the test's schema.
    fn sql(&self, query: &str) -> Vec<tokio_postgres::Row> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.query(query, &[]).await.unwrap()
        })
    }

    /// Recorded reference counts and the file records per content, by hex SHA-256.
    fn counts(&self) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
        let pairs = |q: &str| -> BTreeMap<String, i64> {
            self.sql(q)
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect()
        };
        (
            pairs("SELECT encode(sha256, 'hex'), refs FROM blob_refs"),
            pairs("SELECT encode(sha256, 'hex'), count(*) FROM files GROUP BY 1"),
        )
    }

    fn bucket(&self) -> BTreeSet<String> {
        blobs_in(&self.s3.store()).into_iter().collect()
    }
}

fn path_of(f: &Value) -> String {
    f["url"]["path"].as_str().unwrap().to_string()
}

fn delete(c: &Client, s: &Server, token: &str, f: &Value) -> u16 {
    c.delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
        .header("Authorization", token)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn download(c: &Client, s: &Server, token: &str, f: &Value) -> Result<Vec<u8>, String> {
    let r = c
        .get(s.url(&path_of(f)))
        .header("Authorization", token)
        .send()
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.bytes().map_err(|e| e.to_string())?.to_vec();
    if status != 200 {
        return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
    }
    Ok(body)
}

/// 200 uploads spread over both nodes, of 50 contents (each sent four times, twice to each
/// node), each read back on the other node and deleted there (all but the last round of half
/// the uploaders), while the first copy of every content is deleted too: contents keep losing
/// their last reference on one node while the other node is adding one. Meanwhile fsck and gc
/// (grace 0: every unreferenced blob goes at once) run against the same backends, again and
/// again. Nothing may fail, nothing read back may differ, and at the end every count equals
/// its references, the bucket holds exactly one object per content still referenced, and
/// fsck is clean.
#[test]
fn two_nodes_racing_uploads_and_deletes_of_shared_contents_leave_exact_references() {
    const UPLOADS: usize = 200;
    const CONTENTS: usize = 50;
    const ROUNDS: usize = 2;
    // Contents 0..KEPT keep the last copies of uploaders in the second half; the others end
    // with no reference at all (their objects must be gone).
    const KEPT: usize = 40;
    let _db = shared_db();
    let Some(n) = Nodes::setup("two_nodes_racing_uploads_and_deletes") else {
        return;
    };
    let (a, b) = (n.start(0), n.start(1));
    let nodes = [&a, &b];
    let content = |c: usize| bytes(6_000 + c * 101, 500 + c as u64);
    let accounts: Vec<String> = (0..UPLOADS).map(|i| format!("n{i}")).collect();
    let tok = tokens(&a, &accounts, false);
    let early: Vec<Value> = (0..CONTENTS)
        .map(|c| nodes[c % 2].upload_one(&tok[c], "early.bin", &content(c)))
        .collect();

    let barrier = Barrier::new(UPLOADS + 2);
    let racing = AtomicBool::new(true);
    let survivors: Mutex<Vec<(usize, Value)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let maintenance: Mutex<(usize, Vec<String>)> = Mutex::new((0, Vec::new()));
    std::thread::scope(|sc| {
        let mut racers = Vec::new();
        for i in 0..UPLOADS {
            let (tok, barrier, survivors, failures) = (&tok, &barrier, &survivors, &failures);
            racers.push(sc.spawn(move || {
                let c = client();
                // i and i + 50 on one node, i + 100 and i + 150 on the other.
                let (on, other) = (nodes[(i / CONTENTS) % 2], nodes[(i / CONTENTS + 1) % 2]);
                let data = content(i % CONTENTS);
                let fail = |e: String| failures.lock().unwrap().push(e);
                barrier.wait();
                for round in 0..ROUNDS {
                    let name = format!("f{i}-{round}.bin");
                    let f = match on.try_upload(&c, &tok[i], "/upload/race", &name, &data) {
                        Ok(f) => f,
                        Err(e) => return fail(e),
                    };
                    match download(&c, other, &tok[i], &f) {
                        Ok(got) if got == data => {}
                        Ok(_) => return fail(format!("{name}: other bytes on the other node")),
                        Err(e) => return fail(format!("{name} read on the other node: {e}")),
                    }
                    if round == ROUNDS - 1 && i >= UPLOADS / 2 && i % CONTENTS < KEPT {
                        survivors.lock().unwrap().push((i, f));
                    } else {
                        let st = delete(&c, other, &tok[i], &f);
                        if !matches!(st, 200 | 204) {
                            return fail(format!("{name}: delete on the other node: {st}"));
                        }
                    }
                }
            }));
        }
        let (tok, early, barrier, failures) = (&tok, &early, &barrier, &failures);
        racers.push(sc.spawn(move || {
            let c = client();
            barrier.wait();
            for (i, f) in early.iter().enumerate() {
                let st = delete(&c, nodes[(i + 1) % 2], &tok[i], f);
                if !matches!(st, 200 | 204) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("early {i}: delete {st}"));
                }
            }
        }));
        let (n, racing, maintenance) = (&n, &racing, &maintenance);
        let checker = sc.spawn(move || {
            barrier.wait();
            while racing.load(Ordering::SeqCst) {
                for args in [&["fsck"][..], &["gc", "--grace", "0s"]] {
                    let (ok, out) = n.cli(args);
                    let mut m = maintenance.lock().unwrap();
                    m.0 += 1;
                    if !ok || (args[0] == "fsck" && !out.contains(": clean")) {
                        m.1.push(format!("{args:?}:\n{out}"));
                    }
                }
            }
        });
        for r in racers {
            r.join().unwrap();
        }
        racing.store(false, Ordering::SeqCst);
        checker.join().unwrap();
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    let (runs, bad) = maintenance.into_inner().unwrap();
    assert!(runs >= 2, "fsck and gc ran during the race");
    assert!(bad.is_empty(), "maintenance during the race: {bad:#?}");

    // Every survivor reads back from both nodes.
    let survivors = survivors.into_inner().unwrap();
    assert_eq!(survivors.len(), (UPLOADS / 2) / CONTENTS * KEPT);
    let c = client();
    for (i, f) in &survivors {
        for s in nodes {
            assert_eq!(
                download(&c, s, &tok[*i], f).as_deref(),
                Ok(content(i % CONTENTS).as_slice()),
                "survivor of uploader {i}"
            );
        }
    }
    // Counts equal references; two per kept content, none for the others.
    let (refs, records) = n.counts();
    assert_eq!(refs, records, "recorded counts against file records");
    for c in 0..CONTENTS {
        let want = if c < KEPT { Some(&2) } else { None };
        assert_eq!(refs.get(&sha256_hex(&content(c))), want, "content {c}");
    }
    // One object per referenced content (directories need no bytes), nothing else.
    let want: BTreeSet<String> = (0..KEPT).map(|c| sha256_hex(&content(c))).collect();
    assert_eq!(n.bucket(), want);
    let out = n.fsck_clean();
    assert!(out.contains(" 0 unreferenced"), "{out}");
}

/// PostgreSQL stops under two running nodes: uploads, downloads, listings and deletes answer
/// 503 with the JSON error shape (never a hang or a 500); once it is back (same address) both
/// nodes serve again without a restart, locks included, and the store is exact.
#[test]
fn a_database_restart_fails_requests_with_503_and_the_nodes_recover_without_a_restart() {
    let _alone = DATABASE.write().unwrap_or_else(|p| p.into_inner());
    let Some(n) = Nodes::setup("a_database_restart_fails_requests_with_503") else {
        return;
    };
    let (a, b) = (n.start(0), n.start(1));
    let t = tokens(&a, &["alice".to_string()], false).remove(0);
    let before = a.upload_one(&t, "before.txt", b"stored before the restart");
    let c = client();
    assert_eq!(
        download(&c, &b, &t, &before).as_deref(),
        Ok(&b"stored before the restart"[..])
    );

    services("pg-stop");
    for s in [&a, &b] {
        let (st, body) = s.upload(&t, "/upload/docs", &[("during.txt", b"while down")]);
        assert_eq!(st, 503, "{body}");
        assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
        let (st, code, _) = json_error(s.get(&path_of(&before), Some(&t)));
        assert_eq!((st, code.as_str()), (503, "UNAVAILABLE"), "download");
        let (st, code, _) = json_error(s.get("/files?first=10", Some(&t)));
        assert_eq!((st, code.as_str()), (503, "UNAVAILABLE"), "listing");
        let r = c
            .delete(s.url(&format!(
                "/files/{}",
                before["hypi"]["id"].as_str().unwrap()
            )))
            .header("Authorization", &t)
            .send()
            .unwrap();
        let (st, code, _) = json_error(r);
        assert_eq!((st, code.as_str()), (503, "UNAVAILABLE"), "delete");
    }
    services("pg-start");

    // The pools reconnect on their next calls.
    let mut after = Vec::new();
    for (i, s) in [&a, &b].into_iter().enumerate() {
        s.eventually("the node answers from the database again", || {
            s.get(&path_of(&before), Some(&t)).status() == 200
        });
        // An upload takes the tree and blob locks on fresh lock connections.
        after.push(s.upload_one(&t, &format!("after-{i}.txt"), b"after the restart"));
    }
    for (f, s) in after.iter().zip([&b, &a]) {
        assert_eq!(
            download(&c, s, &t, f).as_deref(),
            Ok(&b"after the restart"[..])
        );
    }
    assert!(matches!(delete(&c, &b, &t, &after[0]), 200 | 204));
    assert!(matches!(delete(&c, &a, &t, &after[1]), 200 | 204));
    assert_eq!(
        n.bucket(),
        BTreeSet::from([sha256_hex(b"stored before the restart")])
    );
    let names: Vec<String> = listing(&a, &t)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["before.txt"], "nothing written while down");
    n.fsck_clean();
}

/// Runs `scripts/services <cmd>` (the PostgreSQL this test binary uses).
fn services(cmd: &str) {
    let out = std::process::Command::new("scripts/services")
        .arg(cmd)
        .output()
        .expect("run scripts/services");
    assert!(
        out.status.success(),
        "scripts/services {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node A reaches S3 through a proxy that is cut mid-upload: A's uploads fail with 503, no
/// record is written (B, which reaches S3, lists none), fsck finds every record's object, and
/// A uploads again once S3 is back, without a restart.
#[test]
fn an_object_store_outage_mid_upload_leaves_no_record_without_its_object() {
    let _db = shared_db();
    let Some(n) = Nodes::setup("an_object_store_outage_mid_upload") else {
        return;
    };
    let proxy = Proxy::start(&n.s3.endpoint);
    let a = n.node(0, &proxy.addr, &[]);
    let b = n.start(1);
    let t = tokens(&a, &["alice".to_string()], false).remove(0);
    let first = a.upload_one(&t, "first.bin", &bytes(10_000, 1));

    // Cut part-way through the first part of a multipart upload; then a small one while down.
    proxy.budget.store(2 << 20, Ordering::SeqCst);
    let big = bytes(12 << 20, 2);
    let (st, body) = a.upload(&t, "/upload/", &[("big.bin", &big)]);
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORAGE_UNAVAILABLE", "{body}");
    let (st, body) = a.upload(&t, "/upload/", &[("small.bin", b"tiny bytes")]);
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORAGE_UNAVAILABLE", "{body}");
    let names = |s: &Server| -> Vec<String> {
        listing(s, &t)
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&b), vec!["first.bin"]);
    let records: BTreeSet<String> = n.counts().1.into_keys().collect();
    let bucket = n.bucket();
    assert!(
        !records.contains(&sha256_hex(&big)) && !records.contains(&sha256_hex(b"tiny bytes")),
        "a record of a failed upload"
    );
    assert!(bucket.contains(&sha256_hex(&bytes(10_000, 1))));
    n.fsck_clean();

    proxy.budget.store(i64::MAX, Ordering::SeqCst);
    proxy.down.store(false, Ordering::SeqCst);
    let again = a.upload_one(&t, "big.bin", &big);
    let got = download(&client(), &b, &t, &again).unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&big));
    assert_eq!(
        download(&client(), &b, &t, &first).unwrap(),
        bytes(10_000, 1)
    );
    n.fsck_clean();
}

/// A request body that sends `before` bytes, says so, then stalls until `release` is set and
/// fails (the client gives up on a node that is gone).
struct Stalling {
    left: usize,
    said: Option<std::sync::mpsc::Sender<()>>,
    release: Arc<AtomicBool>,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left > 0 {
            let n = buf.len().min(self.left).min(64 * 1024);
            buf[..n].fill(b'k');
            self.left -= n;
            return Ok(n);
        }
        if let Some(tx) = self.said.take() {
            let _ = tx.send(());
        }
        while !self.release.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(std::io::Error::other("the node is gone"))
    }
}

/// Node A dies twice while B serves: once aborted right after storing an upload's bytes and
/// before writing its record (`DEPOT_FAILPOINT=after-blob-commit`, a kill at the worst point),
/// once killed with SIGKILL while a body is still arriving. No record is left; the one orphan
/// object is reported by fsck and collected by `depot gc` while B keeps serving.
#[test]
fn a_node_killed_mid_upload_leaves_no_record_and_gc_collects_its_object_while_the_other_serves() {
    let _db = shared_db();
    let Some(n) = Nodes::setup("a_node_killed_mid_upload") else {
        return;
    };
    let b = n.start(1);
    let t = tokens(&b, &["alice".to_string()], false).remove(0);
    let kept = bytes(30_000, 7);
    let kept_rec = b.upload_one(&t, "kept.bin", &kept);

    let a = n.node(
        0,
        &n.s3.endpoint,
        &[("DEPOT_FAILPOINT", "after-blob-commit")],
    );
    let lost = bytes(40_000, 8);
    let r = a
        .client
        .post(a.url("/upload/"))
        .header("Authorization", &t)
        .header("hypi-domain", INSTANCE)
        .multipart(upload_form(&[("lost.bin", &lost)]))
        .send();
    assert!(
        r.as_ref().map_or(true, |r| !r.status().is_success()),
        "{r:?}"
    );
    a.eventually("node A is gone", || {
        a.client.get(a.url("/health")).send().is_err()
    });
    drop(a);

    let a = n.start(0);
    let release = Arc::new(AtomicBool::new(false));
    let (said, heard) = std::sync::mpsc::channel();
    let body = Stalling {
        left: 3 << 20,
        said: Some(said),
        release: release.clone(),
    };
    let form = reqwest::blocking::multipart::Form::new().part(
        "0",
        reqwest::blocking::multipart::Part::reader(body).file_name("slow.bin"),
    );
    let (url, c, tt) = (a.url("/upload/"), client(), t.clone());
    let sender = std::thread::spawn(move || {
        c.post(url)
            .header("Authorization", &tt)
            .header("hypi-domain", INSTANCE)
            .multipart(form)
            .send()
            .map(|r| r.status().as_u16())
    });
    heard.recv().unwrap();
    a.stop(); // SIGKILL
    release.store(true, Ordering::SeqCst);
    let sent = sender.join().unwrap();
    assert!(sent.as_ref().map_or(true, |s| *s != 200), "{sent:?}");

    // No record of either upload; the aborted one's object is in the bucket, unreferenced.
    let names: Vec<String> = listing(&b, &t)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["kept.bin"]);
    let (refs, records) = n.counts();
    assert_eq!(refs, records);
    let orphan = sha256_hex(&lost);
    assert!(!records.contains_key(&orphan));
    assert_eq!(
        n.bucket(),
        BTreeSet::from([sha256_hex(&kept), orphan.clone()])
    );
    // fsck (B serving) reports it; gc with the default grace keeps it (it may be an upload
    // about to count it), gc with none collects it.
    let out = n.fsck_clean();
    assert!(
        out.contains(&format!("unreferenced blob {orphan}")),
        "{out}"
    );
    let (ok, out) = n.cli(&["gc"]);
    assert!(
        ok && out.contains("removed 0 blobs") && out.contains("kept 1"),
        "{out}"
    );
    let (ok, out) = n.cli(&["gc", "--grace", "0s"]);
    assert!(ok && out.contains("removed 1 blobs"), "{out}");
    assert_eq!(n.bucket(), BTreeSet::from([sha256_hex(&kept)]));

    // B never noticed.
    assert_eq!(download(&client(), &b, &t, &kept_rec).unwrap(), kept);
    let more = b.upload_one(&t, "more.bin", b"after the kills");
    assert_eq!(
        download(&client(), &b, &t, &more).unwrap(),
        b"after the kills"
    );
    let out = n.fsck_clean();
    assert!(out.contains(" 0 unreferenced"), "{out}");
}

/// Directory paths held by more than one record, and records whose directory has no record
/// (an upload that landed in a directory another node was moving away).
fn tree_faults(n: &Nodes) -> (Vec<String>, Vec<String>) {
    let col = |q: &str| -> Vec<String> { n.sql(q).iter().map(|r| r.get::<_, String>(0)).collect() };
    (
        col("SELECT path FROM files GROUP BY instance, path HAVING count(*) > 1"),
        col(
            "SELECT f.path FROM files f WHERE f.path <> '/' AND NOT EXISTS \
             (SELECT 1 FROM files d WHERE d.instance = f.instance AND d.path = f.directory)",
        ),
    )
}

/// Both nodes upload into directories that do not exist yet (each must be created once), then
/// node A moves directories while node B uploads into them: every upload lands before the move
/// (and moves with the tree) or after it (in a directory made anew), never in a directory that
/// is no longer there.
#[test]
fn two_nodes_building_and_moving_one_tree_keep_every_directory_once() {
    const DIRS: usize = 8;
    let _db = shared_db();
    let Some(n) = Nodes::setup("two_nodes_building_and_moving_one_tree") else {
        return;
    };
    let (a, b) = (n.start(0), n.start(1));
    let nodes = [&a, &b];
    let t = tokens(&a, &["alice".to_string()], false).remove(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());

    // 1. Creation: 48 uploads over both nodes into 12 missing directories (2 levels).
    let barrier = Barrier::new(48);
    std::thread::scope(|sc| {
        for k in 0..48 {
            let (t, barrier, failures) = (&t, &barrier, &failures);
            sc.spawn(move || {
                let c = client();
                let dir = format!("/upload/p{}/q{}", k % 4, k % 3);
                barrier.wait();
                if let Err(e) =
                    nodes[k % 2].try_upload(&c, t, &dir, &format!("f{k}.txt"), b"in a new dir")
                {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    assert_eq!(tree_faults(&n), (vec![], vec![]), "after creating");

    // 2. Moves on A racing uploads on B into the moving directories.
    let ids: Vec<String> = (0..DIRS)
        .map(|k| {
            let (st, _) = a.upload(&t, &format!("/upload/m{k}/inner"), &[("seed.txt", b"x")]);
            assert_eq!(st, 200);
            let v: Value = a.get(&format!("/dirs/m{k}"), Some(&t)).json().unwrap();
            v["directory"]["hypi"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string()
        })
        .collect();
    let barrier = Barrier::new(DIRS + 1);
    std::thread::scope(|sc| {
        let (t, ids, barrier, failures, a, b) = (&t, &ids, &barrier, &failures, &a, &b);
        sc.spawn(move || {
            let c = client();
            barrier.wait();
            for (k, id) in ids.iter().enumerate() {
                let r = c
                    .post(a.url(&format!("/files/{id}/move")))
                    .header("Authorization", t)
                    .json(&serde_json::json!({"name": format!("n{k}")}))
                    .send()
                    .unwrap();
                if r.status() != 200 {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("move m{k}: {}", r.status()));
                }
            }
        });
        for k in 0..DIRS {
            sc.spawn(move || {
                let c = client();
                barrier.wait();
                // Large enough that storing it takes a while: the window between "the
                // directory is there" and "the record is written" a move could fall into.
                let body = bytes(512 << 10, k as u64);
                for j in 0..6 {
                    let dir = format!("/upload/m{k}/inner");
                    if let Err(e) = b.try_upload(&c, t, &dir, &format!("u{j}.txt"), &body) {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(tree_faults(&n), (vec![], vec![]), "after moving");
    // Every racing upload is somewhere: 6 per directory, under the old name or the new.
    let placed: i64 = n.sql(
        "SELECT count(*) FROM files WHERE path LIKE '/m_/inner/u_.txt' \
         OR path LIKE '/n_/inner/u_.txt'",
    )[0]
    .get(0);
    assert_eq!(placed, (DIRS * 6) as i64);
    n.fsck_clean();
}

/// Advisory locks in this database: (granted, waiting).
fn advisory_locks(url: &str) -> (i64, i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) \
                 FROM pg_locks WHERE locktype = 'advisory'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    })
}

/// The cross-node locks themselves, on two stores (two nodes) in one schema: a blob lock held
/// by one makes the other wait until it is dropped; shared tree locks coexist and an exclusive
/// one waits for them; a lock whose database session was cut says so when checked (the
/// service then keeps the bytes it was about to remove); a quota lock has one holder per
/// instance.
#[test]
fn node_locks_exclude_across_stores_and_a_lost_session_is_noticed() {
    use depot::meta::NodeLocks;
    use depot::types::{InstanceId, Sha256};
    // Cuts sessions and counts every advisory lock of the database: alone.
    let _alone = DATABASE.write().unwrap_or_else(|p| p.into_inner());
    let Some(url) = pg_or_skip("node_locks_exclude_across_stores") else {
        return;
    };
    let schema = new_schema("locks");
    let (one, two) = (pg_store(&url, &schema, 2), pg_store(&url, &schema, 2));
    let wait_for = |waiting: i64| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while advisory_locks(&url).1 != waiting {
            assert!(std::time::Instant::now() < end, "no lock request waits");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let sha = Sha256([7; 32]);

    // Exclusive across stores: the second gets the blob only after the first lets go.
    let held = one
        .lock_blobs(&[sha])
        .unwrap()
        .expect("a shared store locks");
    held.check().unwrap();
    let released = AtomicBool::new(false);
    let second = std::thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let got = two.lock_blobs(&[sha, sha]).unwrap().expect("locked");
            assert!(
                released.load(Ordering::SeqCst),
                "taken while the other held it"
            );
            got
        });
        wait_for(1);
        released.store(true, Ordering::SeqCst);
        drop(held);
        waiter.join().unwrap()
    });
    second.check().unwrap();

    // Trees: two readers at once; a writer waits for both.
    let inst = InstanceId::new();
    let r1 = one.lock_tree(inst, false).unwrap().expect("locked");
    let r2 = two
        .lock_tree(inst, false)
        .unwrap()
        .expect("shared, not waiting");
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let w = one.lock_tree(inst, true).unwrap().expect("locked");
            assert!(done.load(Ordering::SeqCst), "exclusive while read");
            drop(w);
        });
        wait_for(1);
        drop(r1);
        wait_for(1); // still waiting for the second reader
        done.store(true, Ordering::SeqCst);
        drop(r2);
        writer.join().unwrap();
    });

    // The session holding `second` is cut (a database restart, a network fault).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cut: i64 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted",
                &[],
            )
            .await
            .unwrap()
            .len() as i64
    });
    assert_eq!(cut, 1);
    let e = second.check().expect_err("the lock went with its session");
    assert!(e.to_string().contains("lost"), "{e}");
    drop(second);
    // The pool replaces the cut connection: locking works again.
    two.lock_blobs(&[sha])
        .unwrap()
        .expect("locked")
        .check()
        .unwrap();

    // Quotas: one holder per instance across stores; another instance's does not wait.
    let q = one.lock_quota(inst).unwrap().expect("locked");
    let elsewhere = two
        .lock_quota(InstanceId::new())
        .unwrap()
        .expect("another instance's, not waiting");
    drop(elsewhere);
    let freed = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let got = two.lock_quota(inst).unwrap().expect("locked");
            assert!(
                freed.load(Ordering::SeqCst),
                "taken while the other held it"
            );
            drop(got);
        });
        wait_for(1);
        freed.store(true, Ordering::SeqCst);
        drop(q);
        waiter.join().unwrap();
    });
    // Released (asynchronously) before the next test counts the database's locks.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while advisory_locks(&url) != (0, 0) {
        assert!(std::time::Instant::now() < end, "locks still held");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
