//! Range details of RFC 9110 over HTTP: suffix ranges of empty files, the case of the range
//! unit, and If-Range dates that are only honoured when Last-Modified is a strong validator.

mod common;
use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn get(s: &Server, t: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut req = s.client.get(s.url(path)).header("Authorization", t);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_suffix_range_of_an_empty_file_is_the_empty_body_with_200() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "empty.bin", b"");
    let path = f["url"]["path"].as_str().unwrap();
    for range in ["bytes=-5", "bytes=-1"] {
        let r = get(&s, &t, path, &[("Range", range)]);
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.headers()["content-length"], "0", "{range}");
        assert!(r.headers().get("content-range").is_none(), "{range}");
        assert!(r.bytes().unwrap().is_empty());
    }
    // Nothing starts inside an empty file, and a zero-length suffix selects nothing.
    for range in ["bytes=0-", "bytes=0-0", "bytes=-0"] {
        let r = get(&s, &t, path, &[("Range", range)]);
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */0", "{range}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "RANGE_NOT_SATISFIABLE");
    }
}

#[test]
fn the_range_unit_is_case_insensitive() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let data: Vec<u8> = (0..10u8).collect();
    let f = s.upload_one(&t, "r.bin", &data);
    let path = f["url"]["path"].as_str().unwrap();
    for (range, start, end) in [
        ("Bytes=0-4", 0usize, 4usize),
        ("BYTES=-3", 7, 9),
        ("bYtEs=5-", 5, 9),
    ] {
        let r = get(&s, &t, path, &[("Range", range)]);
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/10")
        );
        assert_eq!(r.bytes().unwrap().as_ref(), &data[start..=end]);
    }
    let r = get(&s, &t, path, &[("Range", "Bytes=10-")]);
    assert_eq!(r.status(), 416);
    // Other units stay ignored.
    let r = get(&s, &t, path, &[("Range", "Items=0-4")]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().len(), 10);
}

#[test]
fn an_if_range_date_yields_206_only_once_last_modified_is_a_second_old() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    // A request entirely within the second the file was stored: the date is weak, so the
    // range is ignored and the whole file comes back. Upload and request take milliseconds,
    // but a second boundary can fall between them: then try again with a new file.
    let mut same_second = None;
    for i in 0..10u8 {
        let data = vec![i; 100];
        let f = s.upload_one(&t, "d.bin", &data);
        let path = f["url"]["path"].as_str().unwrap().to_string();
        let head = get(&s, &t, &path, &[]);
        let lm = head.headers()["last-modified"]
            .to_str()
            .unwrap()
            .to_string();
        let lm_secs = httpdate::parse_http_date(&lm)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let r = get(&s, &t, &path, &[("Range", "bytes=0-1"), ("If-Range", &lm)]);
        let after = now_secs();
        if after == lm_secs {
            assert_eq!(r.status(), 200, "If-Range with a weak date");
            assert_eq!(r.bytes().unwrap().len(), 100);
            same_second = Some((path, lm, lm_secs));
            break;
        }
    }
    let (path, lm, lm_secs) = same_second.expect("one upload and request within one second");
    // Once a second separates Last-Modified from now, the date is strong.
    while now_secs() <= lm_secs {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = get(&s, &t, &path, &[("Range", "bytes=0-1"), ("If-Range", &lm)]);
    assert_eq!(r.status(), 206, "If-Range with a strong date");
    assert_eq!(r.headers()["content-range"], "bytes 0-1/100");
    // A date that does not match is never honoured.
    let r = get(
        &s,
        &t,
        &path,
        &[
            ("Range", "bytes=0-1"),
            ("If-Range", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ],
    );
    assert_eq!(r.status(), 200);
}
