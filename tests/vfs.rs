//! The virtual file system over real HTTP and GraphQL: directories as File records, children,
//! move and rename (atomic under concurrent readers), subtree trash and delete, stars, sharing,
//! text content, grants on directories.

mod common;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn req(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::blocking::RequestBuilder {
    s.client
        .request(method, s.url(path))
        .header("Authorization", token)
        .header("hypi-domain", INSTANCE)
}

/// `POST /dirs/**`: (status, body).
fn mkdir(s: &Server, token: &str, path: &str) -> (u16, Value) {
    let r = req(s, reqwest::Method::POST, &format!("/dirs{path}"), token)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// `GET /dirs/**` with a query string: (status, body).
fn dir(s: &Server, token: &str, path: &str) -> (u16, Value) {
    let r = req(s, reqwest::Method::GET, &format!("/dirs{path}"), token)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// Names of a `GET /dirs/**` answer's children.
fn child_names(v: &Value) -> Vec<String> {
    v["children"]["edges"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// `POST /files/{id}/move`.
fn mv(s: &Server, token: &str, id: &str, body: Value) -> reqwest::blocking::Response {
    req(
        s,
        reqwest::Method::POST,
        &format!("/files/{id}/move"),
        token,
    )
    .json(&body)
    .send()
    .unwrap()
}

fn upload_to(s: &Server, token: &str, dir: &str, name: &str, data: &[u8]) -> Value {
    let (status, body) = s.upload(token, &format!("/upload{dir}"), &[(name, data)]);
    assert_eq!(status, 200, "{body}");
    first_record(&body)
}

fn id_of(v: &Value) -> String {
    v["hypi"]["id"].as_str().unwrap().to_string()
}

/// `find(File)` ids for an ArcQL query.
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

#[test]
fn uploads_create_each_directory_once_and_listings_keep_files_only() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    // 8 clients upload 240 files into overlapping deep paths at once.
    let s = Arc::new(s);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (s, alice) = (s.clone(), alice.clone());
            std::thread::spawn(move || {
                let c = client();
                for i in 0..30 {
                    let d = format!("/upload/t/a{}/b{}/c{}", i % 3, (i + t) % 4, i % 2);
                    s.try_upload(
                        &c,
                        &alice,
                        &d,
                        &format!("f{t}-{i}.txt"),
                        format!("{t}-{i}").as_bytes(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every directory exists exactly once: /, /t, 3 a's, 12 b's, 24 c's.
    let dirs = |path: &str| {
        find(
            &s,
            &admin,
            &format!("isDirectory = 'true' AND path = '{path}'"),
        )
    };
    assert_eq!(dirs("/").len(), 1);
    assert_eq!(dirs("/t").len(), 1);
    for a in 0..3 {
        for b in 0..4 {
            assert_eq!(dirs(&format!("/t/a{a}/b{b}")).len(), 1, "/t/a{a}/b{b}");
            for c in 0..2 {
                assert_eq!(dirs(&format!("/t/a{a}/b{b}/c{c}")).len(), 1);
            }
        }
    }
    let (status, v) = dir(&s, &alice, "/t");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["directory"]["isDirectory"], true);
    assert_eq!(v["directory"]["path"], "/t");
    assert_eq!(v["stats"]["files"], 240);
    assert_eq!(v["stats"]["directories"], 3 + 12 + 24);
    assert_eq!(child_names(&v), ["a0", "a1", "a2"]);
    // Directories are File records, but the file listings keep showing files only: REST
    // /files, and find unless the query names isDirectory (or addresses one record).
    let files = listing(&s, &alice);
    assert_eq!(files.len(), 240);
    assert!(files.iter().all(|f| f["isDirectory"] == false));
    let t = dirs("/t")[0].clone();
    assert_eq!(find(&s, &alice, "path = '/t'"), vec![t.clone()]);
    assert!(!find(&s, &alice, "*").contains(&t));
    assert_eq!(
        find(&s, &alice, &format!("hypi.id = '{t}'")),
        vec![t.clone()]
    );
    // A directory has no bytes: its url.path is 404.
    let rec: Value = s.get(&format!("/files/{t}"), Some(&alice)).json().unwrap();
    assert_eq!(rec["isDirectory"], true);
    assert_eq!(rec["type"], "inode/directory");
    let (st, code, _) = json_error(s.get(rec["url"]["path"].as_str().unwrap(), Some(&alice)));
    assert_eq!((st, code.as_str()), (404, "NOT_FOUND"));
    // The store stays consistent (directories hold the empty blob, counted).
    Arc::try_unwrap(s).ok().unwrap().stop();
}

#[test]
fn explicit_directories_rest_and_graphql() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let (st, v) = mkdir(&s, &alice, "/docs/2024");
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["path"], "/docs/2024");
    assert_eq!(v["isDirectory"], true);
    let (st, again) = mkdir(&s, &alice, "/docs/2024/");
    assert_eq!(st, 200);
    assert_eq!(
        id_of(&again),
        id_of(&v),
        "an existing directory is returned, not made twice"
    );
    // The root exists and every account of the instance reads it (not what is in it).
    let (st, root) = dir(&s, &bob, "/");
    assert_eq!(st, 200, "{root}");
    assert_eq!(root["directory"]["path"], "/");
    assert!(
        child_names(&root).is_empty(),
        "bob sees none of alice's entries"
    );
    let (_, root) = dir(&s, &alice, "/");
    assert_eq!(child_names(&root), ["docs"]);
    // Another account's directory looks missing.
    let (st, _) = dir(&s, &bob, "/docs");
    assert_eq!(st, 404);
    // GraphQL upsert of a File with isDirectory: true.
    let r = s.graphql(
        Some(&alice),
        r#"mutation { upsert(values: {File: [{name: "photos", directory: "/docs", isDirectory: true}]}) { id } }"#,
    );
    let photos = r["data"]["upsert"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let (_, docs) = dir(&s, &alice, "/docs");
    assert_eq!(child_names(&docs), ["2024", "photos"]);
    // A file's path cannot become a directory; bad paths are refused.
    upload_to(&s, &alice, "/docs", "notes.txt", b"n");
    let (st, v) = mkdir(&s, &alice, "/docs/notes.txt");
    assert_eq!(st, 409, "{v}");
    let (st, v) = mkdir(&s, &alice, "/a%0Ab");
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("INVALID_PATH"))
    );
    let r = s.graphql(
        Some(&alice),
        r#"mutation { upsert(values: {File: [{name: "x"}]}) { id } }"#,
    );
    assert_eq!(r["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{r}");
    // No token: 401.
    let r = s.client.post(s.url("/dirs/x")).send().unwrap();
    assert_eq!(r.status(), 401);
    // children in GraphQL: a list with arcql, first and after; null on a file.
    let q = format!(
        r#"{{ get(type: File, id: "{photos}") {{ ... on File {{ isDirectory children {{ name }} }} }} }}"#
    );
    let v = s.graphql(Some(&alice), &q);
    assert_eq!(v["data"]["get"]["isDirectory"], true, "{v}");
    assert_eq!(v["data"]["get"]["children"], json!([]));
}

#[test]
fn children_page_filter_and_apply_access_per_entry() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    mkdir(&s, &alice, "/shared");
    for i in 0..30 {
        upload_to(
            &s,
            &alice,
            "/shared",
            &format!("a{i:02}.txt"),
            &[i as u8; 3],
        );
    }
    upload_to(&s, &alice, "/shared", "pic.png", &png_3x2());
    // bob's upload into alice's directory: his own entry there.
    let bobs = upload_to(&s, &bob, "/shared", "bob.txt", b"bob");
    let dir_id = find(&s, &alice, "isDirectory = 'true' AND path = '/shared'")[0].clone();
    let children = |token: &str, args: &str| -> Value {
        let q = format!(
            r#"{{ get(type: File, id: "{dir_id}") {{ ... on File {{ children{args} {{ name hypi {{ id }} }} }} }} }}"#
        );
        s.graphql(Some(token), &q)
    };
    let names = |v: &Value| -> Vec<String> {
        v["data"]["get"]["children"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Default page: 25, in id order; `after` continues.
    let page1 = children(&alice, "");
    let n1 = names(&page1);
    assert_eq!(n1.len(), 25);
    assert_eq!(n1[0], "a00.txt");
    let last = page1["data"]["get"]["children"][24]["hypi"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page2 = names(&children(
        &alice,
        &format!("(after: \"{last}\", first: 25)"),
    ));
    // Access per entry: bob's file in alice's directory is not alice's to see.
    assert_eq!(page2.len(), 6, "{page2:?}");
    assert!(!page2.contains(&"bob.txt".to_string()), "{page2:?}");
    // ArcQL exactly as find: filter and sort.
    let v = children(&alice, r#"(arcql: "type = 'image/png'")"#);
    assert_eq!(names(&v), ["pic.png"]);
    let v = children(
        &alice,
        r#"(arcql: "name * 'a0*' SORT name DESC", first: 3)"#,
    );
    assert_eq!(names(&v), ["a09.txt", "a08.txt", "a07.txt"]);
    let v = children(&alice, r#"(arcql: "nosuch = 1")"#);
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{v}");
    let v = children(&alice, r#"(first: 0)"#);
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{v}");
    // bob cannot read alice's directory at all.
    let v = children(&bob, "");
    assert_eq!(v["data"]["get"], Value::Null, "{v}");
    // REST: the same listing with arcql; an admin sees every entry.
    let admin = s.token("root", INSTANCE, true);
    let (_, v) = dir(&s, &admin, "/shared?arcql=name%20%3D%20%27bob.txt%27");
    assert_eq!(child_names(&v), ["bob.txt"]);
    assert_eq!(
        v["children"]["edges"][0]["node"]["hypi"]["id"],
        id_of(&bobs)
    );
    let (st, v) = dir(&s, &alice, "/shared?first=-1");
    assert_eq!(st, 400, "{v}");
}

#[test]
fn moves_are_atomic_under_concurrent_listing_and_downloads() {
    let s = Arc::new(Server::start());
    let alice = s.token("alice", INSTANCE, false);
    mkdir(&s, &alice, "/m/dst");
    // A tree of 200 files in 10 subdirectories, built by 4 clients at once.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (s, alice) = (s.clone(), alice.clone());
            std::thread::spawn(move || {
                let c = client();
                (0..50)
                    .map(|i| {
                        let n = t * 50 + i;
                        let data = bytes(100 + n, n as u64);
                        let f = s
                            .try_upload(
                                &c,
                                &alice,
                                &format!("/upload/m/src/d{}", n % 10),
                                &format!("f{n}.bin"),
                                &data,
                            )
                            .unwrap();
                        (f["url"]["path"].as_str().unwrap().to_string(), data)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let files: Vec<(String, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(files.len(), 200);
    let src = find(&s, &alice, "isDirectory = 'true' AND path = '/m/src'")[0].clone();
    let done = Arc::new(AtomicBool::new(false));
    // Listers: the tree is wholly at one place or the other in every answer.
    let listers: Vec<_> = (0..2)
        .map(|_| {
            let (s, alice, done) = (s.clone(), alice.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !done.load(Ordering::Relaxed) || seen == 0 {
                    for path in ["/m/src", "/m/dst/src", "/m/dst/renamed"] {
                        let (st, v) = dir(&s, &alice, path);
                        match st {
                            200 => {
                                assert_eq!(v["stats"]["files"], 200, "half a tree at {path}: {v}");
                                assert_eq!(v["stats"]["directories"], 10);
                                seen += 1;
                            }
                            404 => {}
                            other => panic!("{path}: {other} {v}"),
                        }
                    }
                    let q = "{ find(type: File, arcql: \"directory = '/m/src/d3'\", first: 25) { edges { cursor } } }";
                    let v = s.graphql(Some(&alice), q);
                    let n = v["data"]["find"]["edges"].as_array().map_or(usize::MAX, Vec::len);
                    assert!(n == 0 || n == 20, "half a directory: {n} {v}");
                }
                seen
            })
        })
        .collect();
    // Downloaders: every url.path keeps working throughout.
    let downloaders: Vec<_> = (0..2)
        .map(|k| {
            let (s, alice, done, files) = (s.clone(), alice.clone(), done.clone(), files.clone());
            std::thread::spawn(move || {
                let mut i = k;
                while !done.load(Ordering::Relaxed) || i < 20 {
                    let (path, data) = &files[i % files.len()];
                    let r = s.get(path, Some(&alice));
                    assert_eq!(r.status(), 200, "{path}");
                    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
                    i += 2;
                }
            })
        })
        .collect();
    // The mover: into /m/dst, renamed, and back, several times.
    for _ in 0..4 {
        let r = mv(&s, &alice, &src, json!({"directory": "/m/dst"}));
        assert_eq!(r.status(), 200);
        let r = mv(&s, &alice, &src, json!({"name": "renamed"}));
        let v: Value = r.json().unwrap();
        assert_eq!(v["path"], "/m/dst/renamed");
        let r = mv(&s, &alice, &src, json!({"directory": "/m", "name": "src"}));
        assert_eq!(r.status(), 200);
    }
    // Once more through GraphQL, to end elsewhere.
    let v = s.graphql(
        Some(&alice),
        &format!(
            r#"mutation {{ moveFile(id: "{src}", directory: "/m/dst") {{ path url {{ path }} }} }}"#
        ),
    );
    assert_eq!(v["data"]["moveFile"]["path"], "/m/dst/src", "{v}");
    done.store(true, Ordering::Relaxed);
    for l in listers {
        assert!(l.join().unwrap() > 0, "the listers saw the tree");
    }
    for d in downloaders {
        d.join().unwrap();
    }
    // Every descendant's directory, path and index followed; url.path did not change.
    let (_, v) = dir(&s, &alice, "/m/dst/src/d3");
    assert_eq!(v["stats"]["files"], 20);
    assert_eq!(
        v["children"]["edges"][0]["node"]["directory"],
        "/m/dst/src/d3"
    );
    assert!(find(&s, &alice, "directory = '/m/src/d3'").is_empty());
    assert_eq!(find(&s, &alice, "path * '/m/dst/src/d3/*'").len(), 20);
    let all = listing(&s, &alice);
    assert!(all
        .iter()
        .all(|f| f["directory"].as_str().unwrap().starts_with("/m/dst/src/d")));
    let urls: std::collections::BTreeSet<_> = all
        .iter()
        .map(|f| f["url"]["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(urls, files.iter().map(|(p, _)| p.clone()).collect());
}

#[test]
fn clashes_self_moves_and_bad_moves() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let a = upload_to(&s, &alice, "/c", "a.txt", b"a");
    let b = upload_to(&s, &alice, "/c", "b.txt", b"b");
    let (_, sub) = mkdir(&s, &alice, "/c/sub/deeper");
    let deeper = id_of(&sub);
    let c = find(&s, &alice, "isDirectory = 'true' AND path = '/c'")[0].clone();
    // Name clash: 409 by default, and nothing changed.
    let (st, code, _) = json_error(mv(&s, &alice, &id_of(&b), json!({"name": "a.txt"})));
    assert_eq!((st, code.as_str()), (409, "CONFLICT"));
    let (st, code, _) = json_error(mv(
        &s,
        &alice,
        &id_of(&b),
        json!({"name": "a.txt", "onConflict": "fail"}),
    ));
    assert_eq!((st, code.as_str()), (409, "CONFLICT"));
    // rename: the first free numbered name.
    let v: Value = mv(
        &s,
        &alice,
        &id_of(&b),
        json!({"name": "a.txt", "onConflict": "rename"}),
    )
    .json()
    .unwrap();
    assert_eq!(v["name"], "a (1).txt");
    assert_eq!(v["url"]["path"], b["url"]["path"], "url.path never changes");
    // replace: the file at the target goes (its bytes with it).
    let v: Value = mv(
        &s,
        &alice,
        &id_of(&b),
        json!({"name": "a.txt", "onConflict": "replace"}),
    )
    .json()
    .unwrap();
    assert_eq!(v["path"], "/c/a.txt");
    assert_eq!(
        s.get(a["url"]["path"].as_str().unwrap(), Some(&alice))
            .status(),
        404
    );
    assert_eq!(
        s.get(b["url"]["path"].as_str().unwrap(), Some(&alice))
            .status(),
        200
    );
    // GraphQL: the same policies.
    let x = upload_to(&s, &alice, "/c", "x.txt", b"x");
    let v = s.graphql(
        Some(&alice),
        &format!(
            r#"mutation {{ moveFile(id: "{}", name: "a.txt") {{ name }} }}"#,
            id_of(&x)
        ),
    );
    assert_eq!(v["errors"][0]["extensions"]["code"], "CONFLICT", "{v}");
    let v = s.graphql(
        Some(&alice),
        &format!(
            r#"mutation {{ moveFile(id: "{}", name: "a.txt", onConflict: RENAME) {{ name }} }}"#,
            id_of(&x)
        ),
    );
    assert_eq!(v["data"]["moveFile"]["name"], "a (1).txt", "{v}");
    // A directory into itself or its own subtree: 400, nothing moved.
    for target in ["/c", "/c/sub", "/c/sub/deeper"] {
        let (st, code, msg) = json_error(mv(&s, &alice, &c, json!({"directory": target})));
        assert_eq!((st, code.as_str()), (400, "BAD_REQUEST"), "{target}: {msg}");
    }
    let sub_id = find(&s, &alice, "isDirectory = 'true' AND path = '/c/sub'")[0].clone();
    let (st, _, _) = json_error(mv(
        &s,
        &alice,
        &sub_id,
        json!({"directory": "/c/sub/deeper"}),
    ));
    assert_eq!(st, 400);
    // Into a directory that does not exist: 404; bad names: 400.
    let (st, _, _) = json_error(mv(&s, &alice, &deeper, json!({"directory": "/nowhere"})));
    assert_eq!(st, 404);
    for bad in ["", "a/b", "..", "x\u{202e}y"] {
        let (st, code, _) = json_error(mv(&s, &alice, &id_of(&x), json!({"name": bad})));
        assert_eq!((st, code.as_str()), (400, "INVALID_PATH"), "{bad:?}");
    }
    let (st, _, _) = json_error(mv(&s, &alice, &id_of(&x), json!({})));
    assert_eq!(st, 400);
    // The root never moves; another account's file is not found; no token is 401.
    let root = find(&s, &alice, "isDirectory = 'true' AND path = '/'")[0].clone();
    let admin = s.token("root", INSTANCE, true);
    let (st, _, _) = json_error(mv(&s, &admin, &root, json!({"directory": "/c"})));
    assert_eq!(st, 400);
    let (st, _, _) = json_error(mv(&s, &bob, &id_of(&x), json!({"name": "y.txt"})));
    assert_eq!(st, 404);
    let r = s
        .client
        .post(s.url(&format!("/files/{}/move", id_of(&x))))
        .json(&json!({"name": "y"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Moving a directory onto a taken name: 409 (replace never removes a directory).
    mkdir(&s, &alice, "/c2/sub");
    let (st, _, _) = json_error(mv(
        &s,
        &alice,
        &sub_id,
        json!({"directory": "/c2", "onConflict": "replace"}),
    ));
    assert_eq!(st, 409);
    let v: Value = mv(
        &s,
        &alice,
        &sub_id,
        json!({"directory": "/c2", "onConflict": "rename"}),
    )
    .json()
    .unwrap();
    assert_eq!(v["path"], "/c2/sub (1)");
    let (_, v) = dir(&s, &alice, "/c2/sub (1)/deeper");
    assert_eq!(v["directory"]["hypi"]["id"], deeper.as_str());
}

#[test]
fn deep_paths_at_the_configured_limits() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    // 1024 bytes is the longest directory: 4 segments of 255 plus separators.
    let seg = |c: char| c.to_string().repeat(255);
    let longest = format!(
        "/{}/{}/{}/{}",
        seg('a'),
        seg('b'),
        seg('c'),
        "d".repeat(255)
    );
    assert_eq!(longest.len(), 1024);
    let (st, v) = mkdir(&s, &alice, &longest);
    assert_eq!(st, 201, "{v}");
    let f = upload_to(&s, &alice, &longest, "leaf.txt", b"leaf");
    assert_eq!(f["directory"].as_str().unwrap(), longest);
    let (st, v) = mkdir(&s, &alice, &format!("{longest}x"));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("INVALID_PATH"))
    );
    let (st, _) = mkdir(&s, &alice, &format!("/{}", "s".repeat(256)));
    assert_eq!(st, 400, "a segment over 255 bytes");
    // Moving the tree one level deeper would push its leaves past the limit: refused, and
    // nothing moved.
    mkdir(&s, &alice, "/z");
    let top = find(
        &s,
        &alice,
        &format!("isDirectory = 'true' AND path = '/{}'", seg('a')),
    )[0]
    .clone();
    let (st, code, _) = json_error(mv(&s, &alice, &top, json!({"directory": "/z"})));
    assert_eq!((st, code.as_str()), (400, "INVALID_PATH"));
    let (st, v) = dir(&s, &alice, &longest);
    assert_eq!(st, 200);
    assert_eq!(child_names(&v), ["leaf.txt"]);
    // A rename to a shorter name is fine, and the leaf follows.
    let v: Value = mv(&s, &alice, &top, json!({"name": "a"})).json().unwrap();
    assert_eq!(v["path"], "/a", "{v}");
    let moved = longest.replacen(&format!("/{}", seg('a')), "/a", 1);
    let (st, v) = dir(&s, &alice, &moved);
    assert_eq!(st, 200);
    assert_eq!(child_names(&v), ["leaf.txt"]);
}

#[test]
fn trash_and_delete_apply_to_the_subtree() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let keep = upload_to(&s, &alice, "/t/x", "keep.txt", b"keep");
    let early = upload_to(&s, &alice, "/t/x", "early.txt", b"early");
    let deep = upload_to(&s, &alice, "/t/x/y", "deep.txt", b"deep");
    let t = find(&s, &alice, "isDirectory = 'true' AND path = '/t'")[0].clone();
    // early.txt was trashed on its own before.
    let v = s.graphql(
        Some(&alice),
        &format!(
            r#"mutation {{ trash(type: File, arcql: "hypi.id = '{}'") }}"#,
            id_of(&early)
        ),
    );
    assert_eq!(v["data"]["trash"], 1, "{v}");
    let v = s.graphql(
        Some(&alice),
        &format!(r#"mutation {{ trash(type: File, arcql: "hypi.id = '{t}'") }}"#),
    );
    assert_eq!(v["data"]["trash"], 1, "{v}");
    for f in [&keep, &deep] {
        assert_eq!(
            s.get(f["url"]["path"].as_str().unwrap(), Some(&alice))
                .status(),
            404
        );
    }
    assert_eq!(dir(&s, &alice, "/t/x").0, 404);
    assert!(listing(&s, &alice).is_empty());
    // Untrash restores the tree as it was trashed: early.txt stays in the trash.
    let v = s.graphql(
        Some(&alice),
        &format!(r#"mutation {{ untrash(type: File, arcql: "hypi.id = '{t}'") }}"#),
    );
    assert_eq!(v["data"]["untrash"], 1, "{v}");
    let names: Vec<_> = listing(&s, &alice)
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"keep.txt".into()) && names.contains(&"deep.txt".into()));
    assert_eq!(
        s.get(deep["url"]["path"].as_str().unwrap(), Some(&alice))
            .status(),
        200
    );
    // A directory holding another account's file: only an admin deletes it.
    let bob = s.token("bob", INSTANCE, false);
    upload_to(&s, &bob, "/t/x", "bobs.txt", b"bobs");
    let (st, code, _) = json_error(
        req(&s, reqwest::Method::DELETE, &format!("/files/{t}"), &alice)
            .send()
            .unwrap(),
    );
    assert_eq!((st, code.as_str()), (403, "FORBIDDEN"));
    assert_eq!(
        s.get(deep["url"]["path"].as_str().unwrap(), Some(&alice))
            .status(),
        200,
        "nothing went"
    );
    let admin = s.token("root", INSTANCE, true);
    let blobs_before = s.blob_count();
    let r = req(&s, reqwest::Method::DELETE, &format!("/files/{t}"), &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(dir(&s, &admin, "/t").0, 404);
    assert!(listing(&s, &alice).is_empty());
    assert!(listing(&s, &bob).is_empty());
    // keep, early, deep and bobs had distinct bytes: their blobs are gone.
    assert_eq!(s.blob_count(), blobs_before - 4);
    assert_eq!(s.blob_count(), 0, "directories hold no blob");
    // The root cannot be deleted.
    let root = find(&s, &admin, "isDirectory = 'true' AND path = '/'")[0].clone();
    let r = req(
        &s,
        reqwest::Method::DELETE,
        &format!("/files/{root}"),
        &admin,
    )
    .send()
    .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn stars_are_each_accounts_own() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let f = upload_to(&s, &alice, "/", "s.txt", b"s");
    let id = id_of(&f);
    s.post_rights(&alice, &json!({"resource": id, "resourceType": "File", "operationType": "Query", "operation": "*", "permissionType": "RBP", "members": [{"hypi": {"id": "bob"}}]}));
    let starred = |token: &str| -> Value {
        let v = s.graphql(
            Some(token),
            &format!(r#"{{ get(type: File, id: "{id}") {{ ... on File {{ isStared }} }} }}"#),
        );
        v["data"]["get"]["isStared"].clone()
    };
    assert_eq!(starred(&alice), false);
    let r = req(&s, reqwest::Method::PUT, &format!("/files/{id}/star"), &bob)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(starred(&bob), true);
    assert_eq!(starred(&alice), false, "bob's star is not alice's");
    let v = s.graphql(Some(&alice), &format!(r#"mutation {{ upsert(values: {{File: [{{hypi: {{id: "{id}"}}, isStared: true}}]}}) {{ id }} }}"#));
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(starred(&alice), true);
    let r = req(
        &s,
        reqwest::Method::DELETE,
        &format!("/files/{id}/star"),
        &bob,
    )
    .send()
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(starred(&bob), false);
    assert_eq!(starred(&alice), true);
    let rec: Value = s.get(&format!("/files/{id}"), Some(&alice)).json().unwrap();
    assert_eq!(rec["isStared"], true);
    // Starring needs read access; an unreadable file is 404.
    let carol = s.token("carol", INSTANCE, false);
    let r = req(
        &s,
        reqwest::Method::PUT,
        &format!("/files/{id}/star"),
        &carol,
    )
    .send()
    .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn unsharable_files_take_grants_from_their_owner_only() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let f = upload_to(&s, &alice, "/", "p.txt", b"p");
    let id = id_of(&f);
    let grant = json!({"resource": id, "resourceType": "File", "operationType": "Query", "operation": "*", "permissionType": "RBP", "members": [{"hypi": {"id": "bob"}}]});
    // Only the owner switches it.
    let flip = |token: &str, on: bool| {
        s.graphql(Some(token), &format!(r#"mutation {{ upsert(values: {{File: [{{hypi: {{id: "{id}"}}, isSharable: {on}}}]}}) {{ id }} }}"#))
    };
    let v = flip(&admin, false);
    assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "{v}");
    assert!(flip(&alice, false)["errors"].is_null());
    let (st, code, _) = json_error(s.post_rights(&admin, &grant));
    assert_eq!((st, code.as_str()), (403, "FORBIDDEN"));
    assert!(s.post_rights(&alice, &grant).status().is_success());
    assert!(flip(&alice, true)["errors"].is_null());
    assert!(s.post_rights(&admin, &grant).status().is_success());
    let rec: Value = s.get(&format!("/files/{id}"), Some(&alice)).json().unwrap();
    assert_eq!(rec["isSharable"], true);
}

#[test]
fn text_content_round_trip() {
    let s = Server::start_with(&[("DEPOT_MAX_CONTENT_BYTES", "100")]);
    let alice = s.token("alice", INSTANCE, false);
    let create = |name: &str, content: &str| -> Value {
        let q = format!(
            r#"mutation {{ upsert(values: {{File: [{{name: {name:?}, directory: "/notes", content: {content:?}}}]}}) {{ id }} }}"#
        );
        s.graphql(Some(&alice), &q)
    };
    let v = create("hello.txt", "héllo, world\n");
    let id = v["data"]["upsert"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let v = s.graphql(Some(&alice), &format!(r#"{{ get(type: File, id: "{id}") {{ ... on File {{ content type size path url {{ path }} }} }} }}"#));
    let got = &v["data"]["get"];
    assert_eq!(got["content"], "héllo, world\n", "{v}");
    assert_eq!(got["path"], "/notes/hello.txt");
    assert!(got["type"].as_str().unwrap().starts_with("text/plain"));
    // A normal blob: downloadable, and deduplicated with the same bytes uploaded.
    let r = s.get(got["url"]["path"].as_str().unwrap(), Some(&alice));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "héllo, world\n");
    let blobs = s.blob_count();
    let up = upload_to(&s, &alice, "/", "same.txt", "héllo, world\n".as_bytes());
    assert_eq!(up["sha256"], sha256_hex("héllo, world\n".as_bytes()));
    assert_eq!(s.blob_count(), blobs);
    // Over max_content_bytes, or not text: null.
    let v = create("big.txt", &"x".repeat(101));
    let big = v["data"]["upsert"][0]["id"].as_str().unwrap().to_string();
    let v = s.graphql(
        Some(&alice),
        &format!(r#"{{ get(type: File, id: "{big}") {{ ... on File {{ content size }} }} }}"#),
    );
    assert_eq!(v["data"]["get"]["content"], Value::Null);
    assert_eq!(v["data"]["get"]["size"], 101);
    let png = upload_to(&s, &alice, "/", "p.png", &png_3x2());
    let v = s.graphql(
        Some(&alice),
        &format!(
            r#"{{ get(type: File, id: "{}") {{ ... on File {{ content }} }} }}"#,
            id_of(&png)
        ),
    );
    assert_eq!(v["data"]["get"]["content"], Value::Null);
    // REST shows the same content by the same rule: one file, a directory's entries, a list.
    let rest = |path: &str| -> Value {
        let r = req(&s, reqwest::Method::GET, path, &alice).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().unwrap()
    };
    assert_eq!(rest(&format!("/files/{id}"))["content"], "héllo, world\n");
    assert_eq!(rest(&format!("/files/{big}"))["content"], Value::Null);
    assert_eq!(
        rest(&format!("/files/{}", id_of(&png)))["content"],
        Value::Null
    );
    let (_, listing) = dir(&s, &alice, "/notes");
    let contents: Vec<_> = listing["children"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"]["name"].clone(), e["node"]["content"].clone()))
        .collect();
    assert_eq!(
        contents,
        [
            (json!("hello.txt"), json!("héllo, world\n")),
            (json!("big.txt"), Value::Null)
        ],
        "{listing}"
    );
    let all = rest("/files?directory=/notes");
    assert!(
        all["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["content"] == "héllo, world\n"),
        "{all}"
    );
    let (_, root) = dir(&s, &alice, "/");
    assert!(root["directory"]["content"].is_null());
    // Bad input.
    let v = create("../x.txt", "x");
    assert_eq!(v["errors"][0]["extensions"]["code"], "INVALID_PATH", "{v}");
    let v = s.graphql(Some(&alice), &format!(r#"mutation {{ upsert(values: {{File: [{{hypi: {{id: "{id}"}}, content: "new"}}]}}) {{ id }} }}"#));
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{v}");
    let v = s.graphql(
        None,
        r#"mutation { upsert(values: {File: [{name: "a.txt", content: "a"}]}) { id } }"#,
    );
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{v}"
    );
}

#[test]
fn grants_on_a_directory_reach_its_descendants_present_and_future() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let carol = s.token("carol", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let old = upload_to(&s, &alice, "/proj/sub", "old.txt", b"old");
    let bobs = upload_to(&s, &bob, "/proj", "bobs.txt", b"bobs");
    let outside = upload_to(&s, &alice, "/", "outside.txt", b"outside");
    let proj = find(&s, &alice, "isDirectory = 'true' AND path = '/proj'")[0].clone();
    let grant = |token: &str| -> String {
        let r = s.post_rights(token, &json!({"resource": proj, "resourceType": "File", "operationType": "Query", "operation": "*", "permissionType": "RBP", "members": [{"hypi": {"id": "carol"}}]}));
        assert!(r.status().is_success());
        let v: Value = r.json().unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["hypi"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string()
    };
    let download = |f: &Value, token: &str| {
        s.get(f["url"]["path"].as_str().unwrap(), Some(token))
            .status()
            .as_u16()
    };
    assert_eq!(download(&old, &carol), 404);
    let right = grant(&alice);
    // Present descendants of the grantor: readable, listed, found.
    assert_eq!(download(&old, &carol), 200);
    let (st, v) = dir(&s, &carol, "/proj");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        child_names(&v),
        ["sub"],
        "bob's file is not alice's to share"
    );
    let (_, v) = dir(&s, &carol, "/proj/sub");
    assert_eq!(child_names(&v), ["old.txt"]);
    assert!(find(&s, &carol, "*").contains(&id_of(&old)));
    assert_eq!(download(&bobs, &carol), 404);
    assert_eq!(download(&outside, &carol), 404);
    // Future ones too, and what moves in; what moves out leaves the grant behind.
    let new = upload_to(&s, &alice, "/proj/sub/deeper", "new.txt", b"new");
    assert_eq!(download(&new, &carol), 200);
    assert_eq!(
        mv(&s, &alice, &id_of(&outside), json!({"directory": "/proj"})).status(),
        200
    );
    assert_eq!(download(&outside, &carol), 200);
    assert_eq!(
        mv(&s, &alice, &id_of(&old), json!({"directory": "/"})).status(),
        200
    );
    assert_eq!(download(&old, &carol), 404);
    // The grant follows the directory when it moves. /proj holds bob's file too, so alice
    // may not carry it off; an admin may.
    mkdir(&s, &alice, "/archive");
    assert_eq!(
        mv(&s, &alice, &proj, json!({"directory": "/archive"})).status(),
        403
    );
    assert_eq!(
        mv(&s, &admin, &proj, json!({"directory": "/archive"})).status(),
        200
    );
    assert_eq!(download(&new, &carol), 200);
    assert_eq!(dir(&s, &carol, "/archive/proj/sub/deeper").0, 200);
    // Revoking ends it at once.
    let r = req(
        &s,
        reqwest::Method::DELETE,
        &format!("/access-rights/{right}"),
        &alice,
    )
    .send()
    .unwrap();
    assert!(r.status().is_success());
    assert_eq!(download(&new, &carol), 404);
    assert_eq!(dir(&s, &carol, "/archive/proj").0, 404);
    assert!(find(&s, &carol, "*").is_empty());
    // An admin's grant on a directory reaches every account's files below it.
    grant(&admin);
    assert_eq!(download(&bobs, &carol), 200);
    assert_eq!(download(&new, &carol), 200);
}

#[test]
fn fsck_is_clean_after_tree_work_and_empty_files_keep_their_bytes() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::spawn(data.path(), &[], &[]).unwrap();
    let alice = s.token("alice", INSTANCE, false);
    // An empty file shares the empty content's hash with every directory.
    let empty = upload_to(&s, &alice, "/e/f", "empty.txt", b"");
    upload_to(&s, &alice, "/e/g", "x.txt", b"x");
    mkdir(&s, &alice, "/e/h/i");
    let e = find(&s, &alice, "isDirectory = 'true' AND path = '/e'")[0].clone();
    let h = find(&s, &alice, "isDirectory = 'true' AND path = '/e/h'")[0].clone();
    mkdir(&s, &alice, "/z");
    assert_eq!(mv(&s, &alice, &e, json!({"directory": "/z"})).status(), 200);
    // Deleting directories drops references on the empty content; the empty file keeps its
    // bytes.
    let r = req(&s, reqwest::Method::DELETE, &format!("/files/{h}"), &alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s.get(empty["url"]["path"].as_str().unwrap(), Some(&alice));
    assert_eq!(r.status(), 200);
    assert!(r.bytes().unwrap().is_empty());
    let v = s.graphql(
        Some(&alice),
        &format!(r#"mutation {{ trash(type: File, arcql: "hypi.id = '{e}'") }}"#),
    );
    assert_eq!(v["data"]["trash"], 1, "{v}");
    s.stop();
    let (ok, text) = depot(&["fsck"], data.path());
    assert!(ok, "fsck is clean: {text}");
}

#[test]
fn only_an_admin_moves_other_accounts_files_and_unsharable_files_keep_admin_grants_off() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let carol = s.token("carol", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let b = upload_to(&s, &bob, "/team", "b.txt", b"b");
    let a = upload_to(&s, &alice, "/team", "a.txt", b"a");
    let team = find(&s, &bob, "isDirectory = 'true' AND path = '/team'")[0].clone();
    assert_eq!(mkdir(&s, &admin, "/public").0, 201);
    // Bob's directory holds alice's file: moving it would carry her file wherever he likes
    // (under other grants), so bob may not; nothing moves.
    assert_eq!(mkdir(&s, &bob, "/elsewhere").0, 201);
    let (st, code, _) = json_error(mv(&s, &bob, &team, json!({"directory": "/elsewhere"})));
    assert_eq!((st, code.as_str()), (403, "FORBIDDEN"));
    let (st, v) = dir(&s, &admin, "/team");
    assert_eq!(st, 200, "{v}");
    let mut names = child_names(&v);
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt"]);
    // An admin may.
    assert_eq!(
        mv(&s, &admin, &team, json!({"directory": "/public"})).status(),
        200
    );
    // Alice makes her file unsharable; an admin's grant on the directory above then reaches
    // bob's file but not hers.
    let id = id_of(&a);
    let v = s.graphql(
        Some(&alice),
        &format!(r#"mutation {{ upsert(values: {{File: [{{hypi: {{id: "{id}"}}, isSharable: false}}]}}) {{ id }} }}"#),
    );
    assert!(v["errors"].is_null(), "{v}");
    let public = find(&s, &admin, "isDirectory = 'true' AND path = '/public'")[0].clone();
    let r = s.post_rights(&admin, &json!({"resource": public, "resourceType": "File", "operationType": "Query", "operation": "*", "permissionType": "RBP", "members": [{"hypi": {"id": "carol"}}]}));
    assert!(r.status().is_success());
    let download = |f: &Value| {
        s.get(f["url"]["path"].as_str().unwrap(), Some(&carol))
            .status()
            .as_u16()
    };
    assert_eq!(download(&b), 200);
    assert_eq!(download(&a), 404);
    // A directory's totals count what the caller may see, nothing more.
    let (st, v) = dir(&s, &carol, "/public/team");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stats"]["files"], 1, "{v}");
    let (_, v) = dir(&s, &admin, "/public/team");
    assert_eq!(v["stats"]["files"], 2, "{v}");
    // Another account's directory is not handed out by asking to create it.
    let (st, _) = mkdir(&s, &carol, "/elsewhere");
    assert_eq!(st, 404);
}

#[test]
fn downloads_through_a_directory_grant_never_fail_while_the_tree_moves() {
    let s = Arc::new(Server::start());
    let alice = s.token("alice", INSTANCE, false);
    let carol = s.token("carol", INSTANCE, false);
    mkdir(&s, &alice, "/elsewhere");
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            let data = bytes(50 + i, i as u64);
            let f = upload_to(&s, &alice, "/shared/a/b/c", &format!("f{i}.bin"), &data);
            (f["url"]["path"].as_str().unwrap().to_string(), data)
        })
        .collect();
    let shared = find(&s, &alice, "isDirectory = 'true' AND path = '/shared'")[0].clone();
    let r = s.post_rights(&alice, &json!({"resource": shared, "resourceType": "File", "operationType": "Query", "operation": "*", "permissionType": "RBP", "members": [{"hypi": {"id": "carol"}}]}));
    assert!(r.status().is_success());
    assert_eq!(s.get(&files[0].0, Some(&carol)).status(), 200);
    // Without the grant carol gets nothing: the downloads below succeed by the grant alone.
    let dave = s.token("dave", INSTANCE, false);
    assert_eq!(s.get(&files[0].0, Some(&dave)).status(), 404);
    let done = Arc::new(AtomicBool::new(false));
    let downloaders: Vec<_> = (0..3)
        .map(|k| {
            let (s, carol, done, files) = (s.clone(), carol.clone(), done.clone(), files.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::Relaxed) || n < 20 {
                    let (path, data) = &files[(k + n) % files.len()];
                    let r = s.get(path, Some(&carol));
                    assert_eq!(r.status(), 200, "{path} after {n} downloads");
                    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Back and forth, renamed on the way, by REST and GraphQL.
    for i in 0..15 {
        let r = mv(
            &s,
            &alice,
            &shared,
            json!({"directory": "/elsewhere", "name": format!("s{i}")}),
        );
        assert_eq!(r.status(), 200);
        let v = s.graphql(
            Some(&alice),
            &format!(r#"mutation {{ moveFile(id: "{shared}", directory: "/", name: "shared") {{ path }} }}"#),
        );
        assert_eq!(v["data"]["moveFile"]["path"], "/shared", "{v}");
    }
    done.store(true, Ordering::Relaxed);
    for d in downloaders {
        assert!(d.join().unwrap() >= 20);
    }
}

#[test]
fn an_upload_whose_record_write_fails_leaves_no_directories_behind() {
    let s = Server::start_with(&[("DEPOT_FAILPOINT", "error:file-insert")]);
    let alice = s.token("alice", INSTANCE, false);
    let (st, _) = mkdir(&s, &alice, "/keep/old");
    assert_eq!(st, 201);
    // The metadata write fails: the upload answers 500 and the directories it made go.
    let (st, body) = s.upload(&alice, "/upload/keep/new/deeper", &[("f.txt", b"data")]);
    assert_eq!(st, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    assert_eq!(dir(&s, &alice, "/keep/new/deeper").0, 404);
    assert_eq!(dir(&s, &alice, "/keep/new").0, 404);
    // What existed before stays, empty or not.
    let (st, v) = dir(&s, &alice, "/keep");
    assert_eq!(st, 200, "{v}");
    assert_eq!(child_names(&v), ["old"]);
    let (st, _) = s.upload(&alice, "/upload/keep/old", &[("f.txt", b"data")]);
    assert_eq!(st, 500);
    let (st, v) = dir(&s, &alice, "/keep/old");
    assert_eq!(st, 200, "{v}");
    assert!(child_names(&v).is_empty());
    assert!(find(&s, &alice, "isDirectory = 'true' AND path * '/keep/new*'").is_empty());
}

#[test]
fn non_admins_change_trees_up_to_max_tree_entries() {
    let s = Server::start_with(&[("DEPOT_MAX_TREE_ENTRIES", "5")]);
    let alice = s.token("alice", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    mkdir(&s, &alice, "/dst");
    // Exactly the cap below /ok: 2 directories and 3 files.
    for i in 0..3 {
        upload_to(&s, &alice, "/ok/a/b", &format!("f{i}.txt"), b"x");
    }
    let ok = find(&s, &alice, "isDirectory = 'true' AND path = '/ok'")[0].clone();
    assert_eq!(
        mv(&s, &alice, &ok, json!({"directory": "/dst"})).status(),
        200
    );
    // One more: refused with a clear code, by move, trash and delete; nothing changes.
    upload_to(&s, &alice, "/dst/ok", "one-more.txt", b"x");
    let (st, code, msg) = json_error(mv(&s, &alice, &ok, json!({"directory": "/"})));
    assert_eq!((st, code.as_str()), (422, "TREE_TOO_LARGE"), "{msg}");
    assert!(msg.contains("more than 5 entries"), "{msg}");
    let v = s.graphql(
        Some(&alice),
        &format!(r#"mutation {{ trash(type: File, arcql: "hypi.id = '{ok}'") }}"#),
    );
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "TREE_TOO_LARGE",
        "{v}"
    );
    let r = req(&s, reqwest::Method::DELETE, &format!("/files/{ok}"), &alice)
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 422);
    let (st, v) = dir(&s, &alice, "/dst/ok");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stats"]["files"], 4);
    assert_eq!(v["directory"]["path"], "/dst/ok");
    // An admin is not limited.
    assert_eq!(mv(&s, &admin, &ok, json!({"directory": "/"})).status(), 200);
    let r = req(&s, reqwest::Method::DELETE, &format!("/files/{ok}"), &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(dir(&s, &alice, "/ok").0, 404);
}

#[test]
fn a_failed_replacing_move_leaves_both_files() {
    let s = Server::start_with(&[("DEPOT_FAILPOINT", "error:tree-move")]);
    let alice = s.token("alice", INSTANCE, false);
    let old = upload_to(&s, &alice, "/r", "a.txt", b"old");
    let new = upload_to(&s, &alice, "/s", "a.txt", b"new");
    let r = mv(
        &s,
        &alice,
        &id_of(&new),
        json!({"directory": "/r", "onConflict": "replace"}),
    );
    assert_eq!(json_error(r).0, 500);
    for (f, body, path) in [(&old, "old", "/r/a.txt"), (&new, "new", "/s/a.txt")] {
        let r = s.get(f["url"]["path"].as_str().unwrap(), Some(&alice));
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), body);
        assert_eq!(find(&s, &alice, &format!("path = '{path}'")), [id_of(f)]);
    }
}

#[test]
fn find_through_a_grant_on_a_large_directory_pages_every_entry_once() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let carol = s.token("carol", INSTANCE, false);
    // More entries than the merge holds at once (1,000), over several subdirectories, and
    // carol's own files in between.
    let mut want = std::collections::BTreeSet::new();
    for batch in 0..11 {
        let names: Vec<String> = (0..100).map(|i| format!("f{batch}-{i}.txt")).collect();
        let parts: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x" as &[u8])).collect();
        let (st, v) = s.upload(&alice, &format!("/upload/big/d{}", batch % 3), &parts);
        assert_eq!(st, 200, "{v}");
        for f in v.as_object().unwrap().values() {
            want.insert(id_of(f));
        }
        want.insert(id_of(&upload_to(
            &s,
            &carol,
            "/mine",
            &format!("c{batch}.txt"),
            b"c",
        )));
    }
    assert_eq!(want.len(), 1111);
    let big = find(&s, &alice, "isDirectory = 'true' AND path = '/big'")[0].clone();
    let r = s.post_rights(&alice, &json!({"resource": big, "resourceType": "File", "operationType": "Query", "operation": "*", "permissionType": "RBP", "members": [{"hypi": {"id": "carol"}}]}));
    assert!(r.status().is_success());
    let mut got = Vec::new();
    let mut after = String::new();
    loop {
        let arg = if after.is_empty() {
            String::new()
        } else {
            format!(", after: {after:?}")
        };
        let v = s.graphql(
            Some(&carol),
            &format!(r#"{{ find(type: File, arcql: "*", first: 25{arg}) {{ edges {{ cursor }} pageInfo {{ hasNextPage endCursor }} }} }}"#),
        );
        let page = &v["data"]["find"];
        for e in page["edges"].as_array().unwrap_or_else(|| panic!("{v}")) {
            got.push(e["cursor"].as_str().unwrap().to_string());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    }
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(got, sorted, "id order, each once");
    assert_eq!(
        got.into_iter().collect::<std::collections::BTreeSet<_>>(),
        want
    );
    // A filter that skips the first thousand candidates: found in a later round.
    let last = find(&s, &carol, "name = 'f10-99.txt'");
    assert_eq!(last.len(), 1);
    assert!(find(&s, &carol, "name = 'f99-99.txt'").is_empty());
}
