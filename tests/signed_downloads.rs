//! Downloads through signed URLs (a temp file's `downloadUrl`, a signed link) over real HTTP:
//! the same ranges and conditional requests as `GET /file/...`, a link that ends with its
//! maker's access, and a temp file's sweep that never pulls bytes from under a download.

mod common;
use common::*;
use serde_json::json;
use std::io::Read;

fn temp_urls(s: &Server, t: &str) -> (String, String) {
    let r = s
        .client
        .post(s.url("/temp-files"))
        .header("Authorization", t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    (
        v["uploadUrl"].as_str().unwrap().to_string(),
        v["downloadUrl"].as_str().unwrap().to_string(),
    )
}

fn temp_file(s: &Server, t: &str, data: &[u8]) -> String {
    let (up, down) = temp_urls(s, t);
    let r = s.put_bytes(&up, "application/octet-stream", data);
    assert_eq!(r.status(), 200);
    down
}

fn link(s: &Server, t: &str, id: &str) -> reqwest::blocking::Response {
    s.client
        .post(s.url(&format!("/files/{id}/links")))
        .header("Authorization", t)
        .json(&json!({"expiresIn": "1h"}))
        .send()
        .unwrap()
}

/// Ranges, validators, HEAD and preconditions on one signed URL serving `data`.
fn ranges_and_conditions(s: &Server, url: &str, data: &[u8]) {
    let get = |headers: &[(&str, &str)]| {
        let mut r = s.client.get(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().unwrap()
    };
    let full = get(&[]);
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(data)));
    let modified = full.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(full.bytes().unwrap().as_ref(), data);

    let r = get(&[("Range", "bytes=10-19")]);
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{}", data.len()).as_str()
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &data[10..20]);
    let r = get(&[("Range", "bytes=-5")]);
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[data.len() - 5..]);
    // Past the end: 416 with the JSON error and the length.
    let r = get(&[("Range", &format!("bytes={}-", data.len()))]);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
    let (st, code, _) = json_error(r);
    assert_eq!((st, code.as_str()), (416, "RANGE_NOT_SATISFIABLE"));

    // Conditional requests.
    assert_eq!(get(&[("If-None-Match", &etag)]).status(), 304);
    assert_eq!(get(&[("If-None-Match", "\"other\"")]).status(), 200);
    assert_eq!(get(&[("If-Modified-Since", &modified)]).status(), 304);
    assert_eq!(get(&[("If-Match", "\"other\"")]).status(), 412);
    // If-Range: the range only while the validator matches, else the whole body.
    let r = get(&[("Range", "bytes=0-3"), ("If-Range", &etag)]);
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[..4]);
    let r = get(&[("Range", "bytes=0-3"), ("If-Range", "\"stale\"")]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().len(), data.len());

    // HEAD: the headers of the GET, no body.
    let r = s
        .client
        .head(url)
        .header("Range", "bytes=0-9")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().unwrap().is_empty());

    // A tampered URL gets nothing, ranges or not.
    let bad = url.replace("sig=", "sig=00");
    let r = s
        .client
        .get(&bad)
        .header("Range", "bytes=0-3")
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 403);
}

#[test]
fn temp_files_and_links_answer_ranges_and_conditional_requests() {
    let s = Server::start();
    let t = s.token("ann", INSTANCE, false);
    // Over 64 KiB and under: both of the download path's bodies.
    for len in [1000, 200_000] {
        let data = bytes(len, len as u64);
        let down = temp_file(&s, &t, &data);
        ranges_and_conditions(&s, &down, &data);

        let f = s.upload_one(&t, "data.bin", &data);
        let r = link(&s, &t, f["hypi"]["id"].as_str().unwrap());
        assert_eq!(r.status(), 201);
        let l: Value = r.json().unwrap();
        ranges_and_conditions(&s, l["url"].as_str().unwrap(), &data);
    }
}

#[test]
fn a_link_ends_when_its_maker_can_no_longer_read_the_file() {
    let s = Server::start();
    let ann = s.token("ann", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let data = b"shared plan".to_vec();
    let f = s.upload_one(&ann, "plan.txt", &data);
    let id = f["hypi"]["id"].as_str().unwrap();
    let grant = json!({"resource": id, "resourceType": "File", "operationType": "Query",
        "operation": "*", "permissionType": "RBP", "approved": true,
        "members": [{"hypi": {"id": "bob"}}]});
    let r = s.post_rights(&ann, &grant);
    assert_eq!(r.status(), 201);
    let made: Value = r.json().unwrap();
    let right = if made.is_array() { &made[0] } else { &made };
    let rid = right["hypi"]["id"].as_str().unwrap().to_string();

    let r = link(&s, &bob, id);
    assert_eq!(r.status(), 201);
    let bobs: Value = r.json().unwrap();
    let bobs = bobs["url"].as_str().unwrap().to_string();
    let r = link(&s, &admin, id);
    assert_eq!(r.status(), 201);
    let admins: Value = r.json().unwrap();
    let admins = admins["url"].as_str().unwrap().to_string();
    // Twice: the second answer comes from the remembered decision.
    for _ in 0..2 {
        let r = s.client.get(&bobs).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
    }

    // Ann revokes Bob's grant: his link ends with it, at once.
    let r = s
        .client
        .delete(s.url(&format!("/access-rights/{rid}")))
        .header("Authorization", &ann)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, code, _) = json_error(s.client.get(&bobs).send().unwrap());
    assert_eq!((st, code.as_str()), (404, "NOT_FOUND"));
    // An admin's link to someone else's file does not depend on a grant.
    assert_eq!(s.client.get(&admins).send().unwrap().status(), 200);
    // Nor does the owner's.
    let r = link(&s, &ann, id);
    let anns: Value = r.json().unwrap();
    assert_eq!(
        s.client
            .get(anns["url"].as_str().unwrap())
            .send()
            .unwrap()
            .status(),
        200
    );
    // A new grant brings Bob's link back (it was never revoked itself).
    assert_eq!(s.post_rights(&ann, &grant).status(), 201);
    assert_eq!(s.client.get(&bobs).send().unwrap().status(), 200);
}

#[test]
fn the_sweep_never_removes_a_temp_file_being_downloaded() {
    let s = Server::start_with(&[
        ("DEPOT_TEMP_FILE_TTL_SECS", "5"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let t = s.token("ann", INSTANCE, false);
    // Large enough that most of it is still on the server while the client pauses.
    let big = bytes(16 << 20, 7);
    let small = bytes(1000, 8);
    let big_url = temp_file(&s, &t, &big);
    let small_url = temp_file(&s, &t, &small);
    let (big_sha, small_sha) = (sha256_hex(&big), sha256_hex(&small));
    let names = || blob_names(&s.data);
    assert!(names().contains(&big_sha) && names().contains(&small_sha));

    let mut r = s.client.get(&big_url).send().unwrap();
    assert_eq!(r.status(), 200);
    let mut got = vec![0; 64 * 1024];
    r.read_exact(&mut got).unwrap();
    // Both expire; the sweep removes the one nobody is reading...
    s.eventually("the idle temp file is swept", || {
        !names().contains(&small_sha)
    });
    assert_eq!(
        s.client.get(&small_url).send().unwrap().status(),
        410,
        "an expired temp file's URL says so"
    );
    // ...and leaves the one being read, which arrives whole.
    assert!(names().contains(&big_sha));
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the download is the uploaded bytes");
    drop(r);
    // Once the download is done, a later sweep takes it too.
    s.eventually("the downloaded temp file is swept", || {
        !names().contains(&big_sha)
    });
}
