//! `find` sorted by an indexed field over real HTTP. An admin's sorted `find` walks the sort
//! index; an owner's sorts its own files as before. With every file owned by one account the
//! two must give the same pages, and both the order a naive sort of the listing gives, after
//! every write path (upload, re-upload, move, rename, directories, trash, untrash, delete); a
//! cursor outside the result is refused the same way; fsck finds no index drift afterwards.

mod common;
use common::*;
use serde_json::json;

/// One page of `find(type: File)`: (id, name, size) per node, hasNextPage, hasPreviousPage.
type Page = (Vec<(String, String, u64)>, bool, bool);

fn page(s: &Server, token: &str, arcql: &str, first: usize, after: Option<&str>) -> Page {
    let after = after.map(|a| format!(", after: {a:?}")).unwrap_or_default();
    let q = format!(
        "{{ find(type: File, arcql: {arcql:?}, first: {first}{after}) {{ edges {{ cursor node {{ ... on File {{ name size }} }} }} pageInfo {{ hasNextPage hasPreviousPage }} }} }}"
    );
    let v = s.graphql(Some(token), &q);
    let f = &v["data"]["find"];
    let edges = f["edges"].as_array().unwrap_or_else(|| panic!("{q}: {v}"));
    let nodes = edges
        .iter()
        .map(|e| {
            (
                e["cursor"].as_str().unwrap().to_string(),
                e["node"]["name"].as_str().unwrap().to_string(),
                e["node"]["size"].as_u64().unwrap(),
            )
        })
        .collect();
    (
        nodes,
        f["pageInfo"]["hasNextPage"].as_bool().unwrap(),
        f["pageInfo"]["hasPreviousPage"].as_bool().unwrap(),
    )
}

/// Every record of `arcql`, page by page (pages of `size`), checking the page flags.
fn walk(s: &Server, token: &str, arcql: &str, size: usize) -> Vec<(String, String, u64)> {
    let mut out: Vec<(String, String, u64)> = Vec::new();
    loop {
        let after = out.last().map(|n| n.0.clone());
        let (nodes, next, previous) = page(s, token, arcql, size, after.as_deref());
        assert_eq!(previous, after.is_some(), "{arcql}");
        out.extend(nodes);
        if !next {
            return out;
        }
    }
}

/// What a naive sort of the id-ordered listing gives: `key` ascending or descending, ties in
/// id order.
fn naive(
    listing: &[(String, String, u64)],
    key: impl Fn(&(String, String, u64)) -> String,
    desc: bool,
) -> Vec<(String, String, u64)> {
    let mut v = listing.to_vec();
    v.sort_by(|a, b| {
        let ord = key(a).cmp(&key(b));
        (if desc { ord.reverse() } else { ord }).then_with(|| a.0.cmp(&b.0))
    });
    v
}

/// A listed file: id, name, size.
type Entry = (String, String, u64);

/// The admin's (indexed) and the owner's (sorted) answers agree with each other and with a
/// naive sort of the listing, for several sorts, page sizes and a filter.
fn check_orders(s: &Server, admin: &str, owner: &str, trashed: bool) {
    let listing = walk(s, owner, "*", 25);
    let by_size = |n: &(String, String, u64)| format!("{:020}", n.2);
    let by_name = |n: &(String, String, u64)| n.1.clone();
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        ("* SORT size DESC", naive(&listing, by_size, true)),
        ("* SORT size ASC", naive(&listing, by_size, false)),
        ("* SORT name ASC", naive(&listing, by_name, false)),
        ("* SORT name DESC", naive(&listing, by_name, true)),
        (
            "size > 2 SORT size DESC",
            naive(&listing, by_size, true)
                .into_iter()
                .filter(|n| n.2 > 2)
                .collect(),
        ),
    ];
    for (arcql, want) in cases {
        for size in [1, 2, 3, 25] {
            let indexed = walk(s, admin, arcql, size);
            assert_eq!(
                indexed, want,
                "{arcql}, pages of {size} (trashed: {trashed})"
            );
            assert_eq!(walk(s, owner, arcql, size), want, "{arcql} as the owner");
        }
    }
    for arcql in ["* SORT hypi.created DESC", "* SORT hypi.updated ASC"] {
        assert_eq!(
            walk(s, admin, arcql, 2),
            walk(s, owner, arcql, 2),
            "{arcql}"
        );
    }
}

fn put_content(s: &Server, t: &str, id: &str, body: &[u8]) {
    let r = s
        .client
        .put(s.url(&format!("/files/{id}/content")))
        .header("Authorization", t)
        .header("hypi-domain", INSTANCE)
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn mv(s: &Server, t: &str, id: &str, body: serde_json::Value) {
    let r = s
        .client
        .post(s.url(&format!("/files/{id}/move")))
        .header("Authorization", t)
        .header("hypi-domain", INSTANCE)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

fn mkdir(s: &Server, t: &str, path: &str) {
    let r = s
        .client
        .post(s.url(&format!("/dirs{path}")))
        .header("Authorization", t)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

fn mutate(s: &Server, t: &str, what: &str, arcql: &str) -> u64 {
    let v = s.graphql(
        Some(t),
        &format!("mutation {{ {what}(type: File, arcql: {arcql:?}) }}"),
    );
    v["data"][what]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {v}"))
}

#[test]
fn sorted_find_stays_right_under_every_write_path_and_fsck_finds_no_drift() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::spawn(data.path(), &[], &[]).unwrap();
    let admin = s.token("root", INSTANCE, true);
    let owner = s.token("olga", INSTANCE, false);
    // Sizes with ties, so id order inside a size is checked.
    let mut ids = Vec::new();
    for (i, len) in [5usize, 3, 5, 9, 1, 3, 5, 0].into_iter().enumerate() {
        let (status, body) = s.upload(
            &owner,
            &format!("/upload/d{}", i % 3),
            &[(
                &format!("f{}.txt", (b'a' + (7 - i) as u8) as char),
                &bytes(len, i as u64),
            )],
        );
        assert_eq!(status, 200, "{body}");
        ids.push(
            first_record(&body)["hypi"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    check_orders(&s, &admin, &owner, false);

    // Re-upload: the size moves in the index.
    put_content(&s, &owner, &ids[1], &bytes(12, 99));
    put_content(&s, &owner, &ids[3], b"");
    check_orders(&s, &admin, &owner, false);
    let top = page(&s, &admin, "* SORT size DESC", 1, None).0;
    assert_eq!(top[0].0, ids[1], "the re-uploaded file is now the largest");

    // Move and rename: the name index follows.
    mv(&s, &owner, &ids[0], json!({"directory": "/d1"}));
    mv(&s, &owner, &ids[2], json!({"name": "zz.txt"}));
    mkdir(&s, &owner, "/dA");
    mkdir(&s, &owner, "/dB/inner");
    check_orders(&s, &admin, &owner, false);
    let dirs = "isDirectory = 'true' AND name ^ 'd' SORT name DESC";
    assert_eq!(walk(&s, &admin, dirs, 1), walk(&s, &owner, dirs, 1));
    assert!(!walk(&s, &admin, dirs, 1).is_empty());

    // Trash: gone from the default result, back with includeTrashed through the same index.
    assert_eq!(mutate(&s, &owner, "trash", "name = 'zz.txt'"), 1);
    check_orders(&s, &admin, &owner, false);
    let sizes: Vec<u64> = walk(&s, &admin, "* SORT size DESC", 25)
        .iter()
        .map(|n| n.2)
        .collect();
    assert_eq!(sizes.len(), ids.len() - 1);
    // A cursor outside the result is refused, as for any sorted result.
    for t in [&admin, &owner] {
        let q = format!(
            "{{ find(type: File, arcql: \"* SORT size DESC\", first: 2, after: {:?}) {{ edges {{ cursor }} }} }}",
            ids[2]
        );
        let v = s.graphql(Some(t), &q);
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not in this result")),
            "{v}"
        );
    }
    assert_eq!(mutate(&s, &owner, "untrash", "name = 'zz.txt'"), 1);
    check_orders(&s, &admin, &owner, false);

    // Delete: gone from the index.
    assert_eq!(
        mutate(&s, &owner, "delete", &format!("hypi.id = '{}'", ids[1])),
        1
    );
    check_orders(&s, &admin, &owner, false);
    assert_ne!(page(&s, &admin, "* SORT size DESC", 1, None).0[0].0, ids[1]);

    s.stop();
    let (ok, text) = depot(&["fsck"], data.path());
    assert!(ok, "fsck is clean: {text}");
    assert!(text.contains(" 0 index drift"), "{text}");
}

#[test]
fn an_account_that_sees_part_of_the_instance_gets_only_its_files_sorted() {
    let s = Server::start();
    let admin = s.token("root", INSTANCE, true);
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    for (t, len) in [(&alice, 4), (&bob, 9), (&alice, 7), (&bob, 1)] {
        s.upload_one(t, "x.txt", &bytes(len, len as u64));
    }
    let sizes = |t: &str| -> Vec<u64> {
        walk(&s, t, "* SORT size DESC", 1)
            .iter()
            .map(|n| n.2)
            .collect()
    };
    assert_eq!(sizes(&admin), [9, 7, 4, 1]);
    assert_eq!(sizes(&alice), [7, 4]);
    assert_eq!(sizes(&bob), [9, 1]);
    // A cursor of a file the caller cannot see is not in its result.
    let bobs = walk(&s, &bob, "*", 25);
    let q = format!(
        "{{ find(type: File, arcql: \"* SORT size DESC\", first: 1, after: {:?}) {{ edges {{ cursor }} }} }}",
        bobs[0].0
    );
    let v = s.graphql(Some(&alice), &q);
    assert!(v["errors"][0]["message"].is_string(), "{v}");
}
