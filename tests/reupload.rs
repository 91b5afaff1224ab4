//! Re-upload over real HTTP: `PUT /files/{id}/content` and Hygraph's `updateAsset` (a new
//! presigned POST form, or a URL fetched in the background). Same id and URL, new bytes and
//! metadata; the old blob goes when nothing references it and stays while something does; the
//! download cache never answers old bytes after the call returned; only the owner or an admin
//! may replace.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;

fn put_content(s: &Server, t: &str, id: &str, body: &[u8]) -> reqwest::blocking::Response {
    s.client
        .put(s.url(&format!("/files/{id}/content")))
        .header("Authorization", t)
        .header("hypi-domain", INSTANCE)
        .body(body.to_vec())
        .send()
        .unwrap()
}

fn download(s: &Server, t: &str, path: &str) -> Vec<u8> {
    let r = s.get(path, Some(t));
    assert_eq!(r.status(), 200);
    r.bytes().unwrap().to_vec()
}

#[test]
fn put_content_replaces_the_bytes_in_place() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "100000")]);
    let t = s.token("jon", INSTANCE, false);
    let (status, body) = s.upload(&t, "/upload/docs", &[("notes.txt", b"old old old")]);
    assert_eq!(status, 200);
    let f = first_record(&body);
    let id = f["hypi"]["id"].as_str().unwrap().to_string();
    let path = f["url"]["path"].as_str().unwrap().to_string();
    // Read twice: the second answer may come from the download cache.
    assert_eq!(download(&s, &t, &path), b"old old old");
    assert_eq!(download(&s, &t, &path), b"old old old");
    assert_eq!(s.blob_count(), 1);

    let r = put_content(&s, &t, &id, b"brand new content");
    assert_eq!(r.status(), 200);
    let rec: Value = r.json().unwrap();
    assert_eq!(rec["hypi"]["id"], id.as_str());
    assert_eq!(rec["url"]["path"], path.as_str());
    assert_eq!(rec["size"], 17);
    assert_eq!(rec["directory"], f["directory"]);
    // The next read answers the new bytes (not the cached old ones); the old blob is gone.
    assert_eq!(download(&s, &t, &path), b"brand new content");
    assert_eq!(s.blob_count(), 1);
    let listed = listing(&s, &t);
    assert_eq!(listed.len(), 1, "{listed:?}");

    // Someone else: not found (cannot read it); too large: 413 before the body; no such id.
    let ann = s.token("ann", INSTANCE, false);
    assert_eq!(json_error(put_content(&s, &ann, &id, b"x")).0, 404);
    let (status, code, _) = json_error(put_content(&s, &t, &id, &vec![1u8; 100001]));
    assert_eq!((status, code.as_str()), (413, "FILE_TOO_LARGE"));
    assert_eq!(download(&s, &t, &path), b"brand new content");
    assert_eq!(
        json_error(put_content(&s, &t, "01ARZ3NDEKTSV4RRFFQ69G5FAV", b"x")).0,
        404
    );
    // An admin of the instance may.
    let admin = s.token("root", INSTANCE, true);
    assert_eq!(put_content(&s, &admin, &id, b"by admin").status(), 200);
    assert_eq!(download(&s, &t, &path), b"by admin");
}

#[test]
fn a_shared_blob_stays_while_another_file_references_it() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let (_, a) = s.upload(&t, "/upload/", &[("a.txt", b"same bytes")]);
    let (_, b) = s.upload(&t, "/upload/", &[("b.txt", b"same bytes")]);
    let (a, b) = (first_record(&a), first_record(&b));
    assert_eq!(s.blob_count(), 1);
    let r = put_content(&s, &t, a["hypi"]["id"].as_str().unwrap(), b"different");
    assert_eq!(r.status(), 200);
    assert_eq!(s.blob_count(), 2);
    assert_eq!(
        download(&s, &t, b["url"]["path"].as_str().unwrap()),
        b"same bytes"
    );
    assert_eq!(
        download(&s, &t, a["url"]["path"].as_str().unwrap()),
        b"different"
    );
    // Replacing the second with the first's new bytes releases the shared old blob.
    let r = put_content(&s, &t, b["hypi"]["id"].as_str().unwrap(), b"different");
    assert_eq!(r.status(), 200);
    assert_eq!(s.blob_count(), 1);
}

const SELECTION: &str = "id url size handle mimeType upload { status error requestPostData { \
    url date key signature algorithm policy credential securityToken } }";

fn post_form(s: &Server, post: &Value, file: Vec<u8>) -> u16 {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (field, k) in [
        ("X-Amz-Date", "date"),
        ("key", "key"),
        ("X-Amz-Signature", "signature"),
        ("X-Amz-Algorithm", "algorithm"),
        ("policy", "policy"),
        ("X-Amz-Credential", "credential"),
        ("X-Amz-Security-Token", "securityToken"),
    ] {
        form = form.text(field, post[k].as_str().unwrap().to_string());
    }
    form = form.part(
        "file",
        reqwest::blocking::multipart::Part::bytes(file).file_name("f"),
    );
    s.client
        .post(post["url"].as_str().unwrap())
        .multipart(form)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn update_asset_reuploads_by_form_and_by_url() {
    let png = png_3x2();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = png.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { break };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    served.len()
                )
                .as_bytes(),
            );
            let _ = c.write_all(&served);
        }
    });
    let allow = format!("127.0.0.1:{port}");
    let s = Server::start_with(&[("DEPOT_REMOTE_FETCH_ALLOW_HOSTS", &allow)]);
    let t = s.token("jon", INSTANCE, false);
    let v = s.graphql(
        Some(&t),
        &format!(
            r#"mutation {{ createAsset(data: {{ fileName: "pic.bin" }}) {{ {SELECTION} }} }}"#
        ),
    );
    let a = v["data"]["createAsset"].clone();
    let id = a["id"].as_str().unwrap().to_string();
    assert_eq!(
        post_form(&s, &a["upload"]["requestPostData"], b"first".to_vec()),
        204
    );

    // Re-upload by form: same id and url, new bytes.
    let v = s.graphql(
        Some(&t),
        &format!(r#"mutation {{ updateAsset(where: {{ id: {id:?} }}, data: {{ reUpload: true }}) {{ {SELECTION} }} }}"#),
    );
    let u = v["data"]["updateAsset"].clone();
    assert_eq!(u["id"], id.as_str(), "{v}");
    let post = u["upload"]["requestPostData"].clone();
    assert!(post.is_object(), "{v}");
    assert_eq!(post_form(&s, &post, b"second version".to_vec()), 204);
    let url = a["url"].as_str().unwrap();
    let got = s
        .client
        .get(url)
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(got.bytes().unwrap().as_ref(), b"second version");
    // The form is single use.
    assert_ne!(post_form(&s, &post, b"third".to_vec()), 204);

    // Another account may not re-upload.
    let ann = s.token("ann", INSTANCE, false);
    let v = s.graphql(
        Some(&ann),
        &format!(r#"mutation {{ updateAsset(where: {{ id: {id:?} }}, data: {{ reUpload: true }}) {{ id }} }}"#),
    );
    assert_eq!(Server::gql_code(&v), "NOT_FOUND", "{v}");
    // Neither or both: 400.
    let v = s.graphql(
        Some(&t),
        &format!(r#"mutation {{ updateAsset(where: {{ id: {id:?} }}, data: {{ }}) {{ id }} }}"#),
    );
    assert_eq!(Server::gql_code(&v), "BAD_REQUEST", "{v}");

    // Re-upload by URL (REST twin): the fetched PNG replaces the bytes in the background.
    let r = s
        .client
        .post(s.url(&format!("/assets/{id}/reupload")))
        .header("Authorization", &t)
        .header("hypi-domain", INSTANCE)
        .json(&serde_json::json!({"uploadUrl": format!("http://127.0.0.1:{port}/new.png")}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    s.eventually("the new content is fetched", || {
        let got = s
            .client
            .get(url)
            .header("Authorization", &t)
            .send()
            .unwrap();
        got.bytes().unwrap().as_ref() == png.as_slice()
    });
    let v = s.graphql(
        Some(&t),
        &format!(r#"{{ asset(where: {{ id: {id:?} }}) {{ {SELECTION} }} }}"#),
    );
    assert_eq!(v["data"]["asset"]["mimeType"], "image/png", "{v}");
    assert_eq!(v["data"]["asset"]["handle"], sha256_hex(&png));
    assert_eq!(s.blob_count(), 1, "old blobs released");
}

#[test]
fn readers_see_the_old_or_the_new_bytes_never_a_mix() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let a = vec![b'a'; 300_000];
    let b = vec![b'b'; 200_000];
    let (_, body) = s.upload(&t, "/upload/", &[("v.bin", a.as_slice())]);
    let f = first_record(&body);
    let id = f["hypi"]["id"].as_str().unwrap().to_string();
    let path = f["url"]["path"].as_str().unwrap().to_string();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut seen = (0, 0);
            for _ in 0..60 {
                let r = s.get(&path, Some(&t));
                assert_eq!(r.status(), 200);
                let got = r.bytes().unwrap();
                if got.as_ref() == a.as_slice() {
                    seen.0 += 1;
                } else {
                    assert_eq!(got.as_ref(), b.as_slice(), "a mix of versions");
                    seen.1 += 1;
                }
            }
            seen
        });
        for i in 0..20 {
            let next = if i % 2 == 0 { &b } else { &a };
            assert_eq!(put_content(&s, &t, &id, next).status(), 200);
        }
        let seen = reader.join().unwrap();
        assert_eq!(seen.0 + seen.1, 60);
    });
}
