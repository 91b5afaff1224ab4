//! Upload and download over real HTTP against the real binary.

mod common;
use common::*;

#[test]
fn upload_returns_the_hypi_file_shape() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let body = b"hello world\n";
    let (status, res) = s.upload(&t, "/upload/", &[("notes.txt", body)]);
    assert_eq!(status, 200, "{res}");
    let f = &res["notes.txt"];
    assert_eq!(f["__typename"], "File");
    assert_eq!(f["name"], "notes.txt");
    assert_eq!(f["directory"], "/");
    assert_eq!(f["path"], "/notes.txt");
    assert_eq!(f["isDirectory"], false);
    assert_eq!(f["status"], "UPLOADED");
    assert_eq!(f["type"], "text/plain");
    assert_eq!(f["size"], 12);
    assert_eq!(f["extension"], "txt");
    assert_eq!(f["content"], Value::Null);
    assert!(f["isStared"].is_null() && f["isSharable"].is_null());
    assert_eq!(f["sha256"], sha256_hex(body));
    let id = f["hypi"]["id"].as_str().unwrap();
    let inst = f["hypi"]["instanceId"].as_str().unwrap();
    assert_eq!(id.len(), 26);
    assert_eq!(inst.len(), 26);
    assert_eq!(f["hypi"]["createdBy"], "alice");
    assert!(f["hypi"]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(f["url"]["path"], format!("/file/{inst}-{id}.txt"));
    let dl = s.get(f["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(dl.status(), 200);
    assert_eq!(dl.bytes().unwrap().as_ref(), body);
}

#[test]
fn directory_comes_from_the_path() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    for (url, dir, path) in [
        ("/upload", "/", "/a.txt"),
        ("/upload/", "/", "/a.txt"),
        ("/upload/my/path", "/my/path", "/my/path/a.txt"),
        ("/upload/my/path/", "/my/path", "/my/path/a.txt"),
        ("/upload/caf%C3%A9", "/café", "/café/a.txt"),
    ] {
        let (status, res) = s.upload(&t, url, &[("a.txt", b"x")]);
        assert_eq!(status, 200, "{url}: {res}");
        assert_eq!(res["a.txt"]["directory"], dir, "{url}");
        assert_eq!(res["a.txt"]["path"], path, "{url}");
    }
}

#[test]
fn every_file_part_is_stored_whatever_its_field_name() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "0",
            reqwest::blocking::multipart::Part::bytes(b"zero".to_vec()).file_name("a.txt"),
        )
        .part(
            "1",
            reqwest::blocking::multipart::Part::bytes(b"one".to_vec()).file_name("b.txt"),
        )
        .text("comment", "not a file")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(b"two".to_vec()).file_name("c.bin"),
        )
        .part(
            "fileUpload",
            reqwest::blocking::multipart::Part::bytes(b"3".to_vec()).file_name("d.dat"),
        );
    let res: Value = s
        .client
        .post(s.url("/upload/many"))
        .header("Authorization", format!("Bearer {t}"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let keys: Vec<&String> = res.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["a.txt", "b.txt", "c.bin", "d.dat"]);
    let list: Value = s.get("/files?directory=/many", Some(&t)).json().unwrap();
    assert_eq!(list["edges"].as_array().unwrap().len(), 4);
}

#[test]
fn invalid_upload_paths_are_rejected_and_nothing_is_stored() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let long = format!("/upload/{}", "a".repeat(300));
    let deep = format!("/upload{}", "/abc".repeat(400));
    for path in [
        "/upload/a/../b",
        "/upload/..",
        "/upload/a//b",
        "/upload/%2e%2e/x",
        "/upload/a%2Fb",
        "/upload/a%0Ab",
        "/upload/a%00b",
        "/upload/%FF",
        long.as_str(),
        deep.as_str(),
    ] {
        let body = multipart_body("XyZ-b0und", "0", "a.txt", b"data", true);
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=XyZ-b0und\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let (status, text) = s.raw(&req);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("INVALID_PATH"), "{path}: {text}");
    }
    let list: Value = s.get("/files", Some(&t)).json().unwrap();
    assert_eq!(list["edges"].as_array().unwrap().len(), 0);
    assert_eq!(s.blob_count(), 0);
    assert_eq!(s.temp_files(), 0);
}

#[test]
fn media_type_comes_from_the_bytes_then_the_name_and_images_get_dimensions() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let png = png_3x2();
    let (status, res) = s.upload(
        &t,
        "/upload/",
        &[
            ("looks.html", &png),
            ("readme.md", b"# hi"),
            ("blob", &[0u8, 1, 2, 3]),
        ],
    );
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["looks.html"]["type"], "image/png");
    assert_eq!(res["looks.html"]["width"], 3);
    assert_eq!(res["looks.html"]["height"], 2);
    assert_eq!(res["readme.md"]["type"], "text/markdown");
    assert_eq!(res["blob"]["type"], "application/octet-stream");
    assert_eq!(res["blob"]["extension"], Value::Null);
    let id = res["looks.html"]["hypi"]["id"].as_str().unwrap();
    let rec: Value = s.get(&format!("/files/{id}"), Some(&t)).json().unwrap();
    assert_eq!(rec["image"]["__typename"], "Image");
    assert_eq!(rec["image"]["width"], 3);
    assert_eq!(rec["image"]["height"], 2);
    assert_eq!(rec["image"]["file"]["hypi"]["id"], id);
    // An image served inline despite its .html name: the bytes decide, and the type is nosniff.
    let dl = s.get(res["looks.html"]["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(dl.headers()["content-type"], "image/png");
    assert!(dl.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("inline"));
    let no_ext = s.get(res["blob"]["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(no_ext.status(), 200);
}

#[test]
fn active_content_is_never_served_inline() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let (_, res) = s.upload(
        &t,
        "/upload/",
        &[
            ("page.html", b"<html><script>alert(1)</script></html>"),
            (
                "pic.svg",
                b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
            ),
            ("app.js", b"alert(1)"),
            ("data.xml", b"<?xml version=\"1.0\"?><a/>"),
        ],
    );
    for name in ["page.html", "pic.svg", "app.js", "data.xml"] {
        let dl = s.get(res[name]["url"]["path"].as_str().unwrap(), Some(&t));
        assert_eq!(dl.status(), 200);
        let cd = dl.headers()["content-disposition"].to_str().unwrap();
        assert!(cd.starts_with("attachment"), "{name}: {cd}");
        assert_eq!(dl.headers()["x-content-type-options"], "nosniff");
        assert_eq!(dl.headers()["content-security-policy"], "sandbox");
    }
}

#[test]
fn zero_byte_file() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "empty.txt", b"");
    assert_eq!(f["size"], 0);
    assert_eq!(f["sha256"], sha256_hex(b""));
    let path = f["url"]["path"].as_str().unwrap();
    let dl = s.get(path, Some(&t));
    assert_eq!(dl.status(), 200);
    assert_eq!(dl.headers()["content-length"], "0");
    assert!(dl.bytes().unwrap().is_empty());
    let r = s
        .client
        .get(s.url(path))
        .header("Authorization", &t)
        .header("Range", "bytes=0-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */0");
}

#[test]
fn oversize_part_gets_413_and_leaves_nothing() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "100000")]);
    let t = s.token("alice", INSTANCE, false);
    let (status, res) = s.upload(&t, "/upload/", &[("big.bin", &bytes(100_001, 1))]);
    assert_eq!(status, 413);
    assert_eq!(res["error"]["code"], "FILE_TOO_LARGE");
    // Several MiB over the limit: the client still receives the JSON answer.
    let (status, res) = s.upload(
        &t,
        "/upload/",
        &[("ok.bin", b"fine"), ("huge.bin", &bytes(8 << 20, 2))],
    );
    assert_eq!(status, 413, "{res}");
    assert_eq!(res["error"]["code"], "FILE_TOO_LARGE");
    s.eventually("temp files removed", || s.temp_files() == 0);
    let list: Value = s.get("/files", Some(&t)).json().unwrap();
    assert_eq!(
        list["edges"].as_array().unwrap().len(),
        0,
        "a failed request records nothing"
    );
    assert_eq!(s.blob_count(), 0);
    // Exactly at the limit is fine.
    let f = s.upload_one(&t, "edge.bin", &bytes(100_000, 3));
    assert_eq!(f["size"], 100_000);
}

#[test]
fn oversize_without_content_length_is_rejected_too() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "1000")]);
    let t = s.token("alice", INSTANCE, false);
    let body = multipart_body("b0und", "0", "x.bin", &bytes(5000, 4), true);
    let mut req = format!(
        "POST /upload/ HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b0und\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, text) = s.raw(&req);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("FILE_TOO_LARGE"));
    s.eventually("temp files removed", || s.temp_files() == 0);
}

#[test]
fn request_without_a_file_part_is_400() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let form = reqwest::blocking::multipart::Form::new().text("name", "value");
    let r = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &t)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "BAD_REQUEST");
    let r = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &t)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400, "not multipart");
}

#[test]
fn truncated_multipart_and_disconnects_leave_no_temp_file_and_no_record() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    // A body with no closing boundary, complete as far as Content-Length goes.
    let body = multipart_body("Bnd-0123", "0", "cut.bin", &bytes(300_000, 5), false);
    let mut req = format!(
        "POST /upload/ HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=Bnd-0123\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let (status, text) = s.raw(&req);
    assert_eq!(status, 400, "{text}");
    // A client that promises 10 MB, sends 2 MB (or 6 MB: past the point where hashing moves
    // to a thread of its own) and goes away.
    for sent in [2 << 20, 6 << 20] {
        use std::io::Write;
        let body = multipart_body("Bnd-0123", "0", "gone.bin", &bytes(sent, 6), false);
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        write!(
            c,
            "POST /upload/ HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nContent-Type: multipart/form-data; boundary=Bnd-0123\r\nContent-Length: 10000000\r\n\r\n"
        )
        .unwrap();
        c.write_all(&body).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    s.eventually("temp files removed", || s.temp_files() == 0);
    let list: Value = s.get("/files", Some(&t)).json().unwrap();
    assert_eq!(list["edges"].as_array().unwrap().len(), 0);
    assert_eq!(s.blob_count(), 0);
    assert!(s.alive());
}

#[test]
fn large_file_round_trips_with_the_right_hash() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let data = bytes(24 << 20, 7);
    let f = s.upload_one(&t, "big.bin", &data);
    assert_eq!(f["sha256"], sha256_hex(&data));
    let dl = s.get(f["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(dl.headers()["content-length"], (24u64 << 20).to_string());
    let got = dl.bytes().unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
}

#[test]
fn download_headers_head_and_paths() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "Résumé \"final\".pdf", b"%PDF-1.4 fake");
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let r = s.get(&path, Some(&t));
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/pdf");
    assert_eq!(h["content-length"], "13");
    assert_eq!(h["etag"], format!("\"{}\"", f["sha256"].as_str().unwrap()));
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "sandbox");
    assert_eq!(
        h["content-disposition"],
        "inline; filename=\"R_sum_ _final_.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22.pdf"
    );
    let head = s
        .client
        .head(s.url(&path))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "13");
    assert_eq!(head.headers()["etag"], h["etag"]);
    // The same connection still works after HEAD.
    assert_eq!(
        s.get(&path, Some(&t)).bytes().unwrap().as_ref(),
        b"%PDF-1.4 fake"
    );

    let id = f["hypi"]["id"].as_str().unwrap();
    assert_eq!(
        s.get(&format!("/file/{id}.pdf"), Some(&t)).status(),
        200,
        "without the instance prefix"
    );
    assert_eq!(s.get(&format!("/file/{id}.PDF"), Some(&t)).status(), 200);
    assert_eq!(
        s.get(&format!("/file/{id}.png"), Some(&t)).status(),
        404,
        "wrong extension"
    );
    assert_eq!(
        s.get(&format!("/file/{id}"), Some(&t)).status(),
        404,
        "missing extension"
    );
    let other = "01F322XSV13R9VAGJXW351PVBT";
    assert_eq!(
        s.get(&format!("/file/{other}-{id}.pdf"), Some(&t)).status(),
        404,
        "wrong instance"
    );
    assert_eq!(s.get("/file/not-a-file.pdf", Some(&t)).status(), 404);
    assert_eq!(s.get(&format!("/file/{other}.pdf"), Some(&t)).status(), 404);
    let v: Value = s.get("/file/nope", Some(&t)).json().unwrap();
    assert_eq!(v["error"]["code"], "NOT_FOUND");
}

#[test]
fn ranges() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let data: Vec<u8> = (0..100u8).collect();
    let f = s.upload_one(&t, "r.bin", &data);
    let path = f["url"]["path"].as_str().unwrap();
    let etag = format!("\"{}\"", f["sha256"].as_str().unwrap());
    let get = |range: &str, extra: Option<(&str, &str)>| {
        let mut req = s
            .client
            .get(s.url(path))
            .header("Authorization", &t)
            .header("Range", range);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.send().unwrap()
    };
    for (range, start, end) in [
        ("bytes=0-0", 0usize, 0usize),
        ("bytes=0-9", 0, 9),
        ("bytes=90-", 90, 99),
        ("bytes=99-99", 99, 99),
        ("bytes=95-1000", 95, 99),
        ("bytes=-10", 90, 99),
        ("bytes=-1000", 0, 99),
    ] {
        let r = get(range, None);
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/100"),
            "{range}"
        );
        assert_eq!(r.headers()["content-length"], (end - start + 1).to_string());
        assert_eq!(r.bytes().unwrap().as_ref(), &data[start..=end], "{range}");
    }
    for range in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
        let r = get(range, None);
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */100");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "RANGE_NOT_SATISFIABLE");
    }
    // Ignored: several ranges, bad syntax, other units, a stale If-Range.
    for (range, extra) in [
        ("bytes=0-1,5-6", None),
        ("bytes=5-2", None),
        ("lines=1-2", None),
        ("bytes=0-1", Some(("If-Range", "\"stale\""))),
    ] {
        let r = get(range, extra);
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.bytes().unwrap().len(), 100);
    }
    let r = get("bytes=0-1", Some(("If-Range", etag.as_str())));
    assert_eq!(r.status(), 206);
}

#[test]
fn conditional_requests() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "c.txt", b"cache me");
    let path = f["url"]["path"].as_str().unwrap();
    let etag = format!("\"{}\"", f["sha256"].as_str().unwrap());
    let get = |k: &str, v: &str| {
        s.client
            .get(s.url(path))
            .header("Authorization", &t)
            .header(k, v)
            .send()
            .unwrap()
    };
    assert_eq!(get("If-None-Match", &etag).status(), 304);
    assert_eq!(get("If-None-Match", &format!("W/{etag}")).status(), 304);
    assert_eq!(
        get("If-None-Match", &format!("\"x\", {etag}")).status(),
        304
    );
    assert_eq!(get("If-None-Match", "*").status(), 304);
    assert_eq!(get("If-None-Match", "\"other\"").status(), 200);
    assert_eq!(
        get("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT").status(),
        304
    );
    assert_eq!(
        get("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT").status(),
        200
    );
    assert_eq!(get("If-Modified-Since", "garbage").status(), 200);
    assert_eq!(get("If-Match", "\"other\"").status(), 412);
    assert_eq!(get("If-Match", &etag).status(), 200);
    assert_eq!(
        get("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT").status(),
        412
    );
}

#[test]
fn same_bytes_are_stored_once_and_the_blob_goes_with_the_last_reference() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let data = bytes(50_000, 9);
    let a = s.upload_one(&alice, "a.bin", &data);
    let b = s.upload_one(&bob, "b.bin", &data);
    assert_eq!(a["sha256"], b["sha256"]);
    assert_ne!(a["hypi"]["id"], b["hypi"]["id"]);
    assert_eq!(s.blob_count(), 1);
    let del = |tok: &str, f: &Value| {
        s.client
            .delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
            .header("Authorization", tok)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(del(&bob, &a), 404, "bob cannot see alice's file");
    assert_eq!(del(&alice, &a), 204);
    assert_eq!(s.blob_count(), 1, "bob still references the bytes");
    assert_eq!(
        s.get(a["url"]["path"].as_str().unwrap(), Some(&alice))
            .status(),
        404
    );
    let dl = s.get(b["url"]["path"].as_str().unwrap(), Some(&bob));
    assert_eq!(dl.status(), 200);
    assert_eq!(sha256_hex(&dl.bytes().unwrap()), sha256_hex(&data));
    assert_eq!(del(&alice, &a), 404, "already gone");
    assert_eq!(del(&bob, &b), 204);
    assert_eq!(s.blob_count(), 0);
}

#[test]
fn hostile_file_names_are_stored_safely() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let long = format!("{}.txt", "n".repeat(300));
    let (status, res) = s.upload(
        &t,
        "/upload/",
        &[
            ("../../etc/x", b"1"),
            ("a.jpg.php", b"2"),
            ("evil\u{202E}gpj.exe", b"3"),
            (long.as_str(), b"4"),
        ],
    );
    assert_eq!(status, 200, "{res}");
    // Keyed by the stored name: the raw client name (bidi controls and all) is never echoed.
    let keys: Vec<&str> = res
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{res}");
    assert!(!res.to_string().contains('\u{202E}'), "{res}");
    assert_eq!(res["x"]["name"], "x");
    assert_eq!(res["a.jpg.php"]["extension"], "php");
    assert_eq!(res["evilgpj.exe"]["name"], "evilgpj.exe");
    let long_key = keys.iter().find(|k| k.starts_with("nnn")).unwrap();
    let n = res[*long_key]["name"].as_str().unwrap();
    assert_eq!(*long_key, n);
    assert_eq!(n.chars().count(), 255);
    assert!(n.ends_with(".txt"));
}

#[test]
fn a_huge_part_header_is_rejected_without_buffering_it_all() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let send = |header_len: usize| {
        let mut body = format!(
            "--B0undary\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.txt\"\r\nX-Pad: {}\r\n\r\nhello\r\n--B0undary--\r\n",
            "p".repeat(header_len)
        )
        .into_bytes();
        let mut req = format!(
            "POST /upload/ HTTP/1.1\r\nHost: x\r\nAuthorization: {t}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=B0undary\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.append(&mut body);
        s.raw(&req)
    };
    let (status, text) = send(4 * 1024 * 1024);
    assert_eq!(status, 400, "{}", &text[..text.len().min(300)]);
    assert!(text.contains("headers are larger than"), "{text}");
    let (status, text) = send(4 * 1024);
    assert_eq!(status, 200, "{text}");
    assert!(s.alive());
    s.eventually("temp files removed", || s.temp_files() == 0);
}
