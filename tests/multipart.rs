//! Amplience's multipart temp files over real HTTP, with S3's semantics: the seed's
//! `split -b 5M` / `curl --upload-file` / `<CompleteMultipartUpload>` walkthrough run by bash
//! exactly as written, parts in any order and in parallel, re-sent parts, every S3 error,
//! tampered and expired URLs, the `ChecksumSHA256` variant, a restart between parts and
//! complete, and the sweep of abandoned parts (on the timer and by `depot gc`).

mod common;
use common::*;
use std::path::Path;

const MIB: usize = 1024 * 1024;
const MIN_PART: usize = 5 * MIB;

/// What `createTempFileMultipartUploadUrl` answers.
struct Urls {
    parts: Vec<String>,
    complete: String,
    download: String,
    min: u64,
    max: u64,
}

fn create(s: &Server, token: &str, filesize: usize) -> Urls {
    let v = s.graphql(
        Some(token),
        &format!(
            "mutation {{ createTempFileMultipartUploadUrl(input: {{ filesize: {filesize} }}) \
             {{ uploadPartUrls completeUrl downloadUrl minPartSize maxPartSize }} }}"
        ),
    );
    let o = &v["data"]["createTempFileMultipartUploadUrl"];
    let parts = o["uploadPartUrls"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    Urls {
        parts,
        complete: o["completeUrl"].as_str().unwrap().to_string(),
        download: o["downloadUrl"].as_str().unwrap().to_string(),
        min: o["minPartSize"].as_u64().unwrap(),
        max: o["maxPartSize"].as_u64().unwrap(),
    }
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// PUT a part as curl --upload-file does (no Content-Type): (status, ETag header, body).
fn put_part(s: &Server, url: &str, data: &[u8]) -> (u16, String, String) {
    let r = s.client.put(url).body(data.to_vec()).send().expect("PUT");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, etag, r.text().unwrap_or_default())
}

/// The seed's complete body: one `<Part>` per (number, ETag) in the order given.
fn complete_xml(parts: &[(u32, String)]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"\">\n",
    );
    for (n, etag) in parts {
        x.push_str(&format!(
            "   <Part>\n      <ETag>{etag}</ETag>\n      <PartNumber>{n}</PartNumber>\n   </Part>\n"
        ));
    }
    x.push_str("</CompleteMultipartUpload>");
    x
}

fn post_complete(s: &Server, url: &str, body: &str) -> (u16, String) {
    let r = s
        .client
        .post(url)
        .header("Content-Type", "application/xml")
        .body(body.to_string())
        .send()
        .expect("POST complete");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

/// The `<Code>` of an S3 error body.
fn code(body: &str) -> String {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(c, _)| c.to_string())
        .unwrap_or_else(|| panic!("not an S3 error: {body}"))
}

fn download(s: &Server, url: &str) -> Vec<u8> {
    let r = s.client.get(url).send().unwrap();
    assert_eq!(r.status(), 200, "download");
    r.bytes().unwrap().to_vec()
}

/// The parts all sessions hold on disk (under `<data>/parts/<session>/`): part files and the
/// records of parts placed in a session's staging file (which is not counted).
fn part_files(data: &Path) -> usize {
    walk(&data.join("parts"))
        .iter()
        .filter(|p| p.is_file() && !p.ends_with("staging") && !p.ends_with("part-size"))
        .count()
}

/// The staging files (placed parts' bytes) all sessions hold on disk.
fn staging_files(data: &Path) -> usize {
    walk(&data.join("parts"))
        .iter()
        .filter(|p| p.is_file() && p.ends_with("staging"))
        .count()
}

/// Completes `etags` and checks the download: the bytes and their SHA-256 (the ETag).
fn complete_and_check(s: &Server, urls: &Urls, etags: &[(u32, String)], data: &[u8]) {
    let (st, body) = post_complete(s, &urls.complete, &complete_xml(etags));
    assert_eq!(st, 200, "{body}");
    let r = s.client.get(&urls.download).send().unwrap();
    assert_eq!(r.status(), 200, "download");
    let etag = r.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got.as_ref() == data, "downloaded bytes differ");
    assert_eq!(etag, sha256_hex(data));
    assert_eq!(sha256_hex(&got), sha256_hex(data));
}

/// Uploads `data` cut into `MIN_PART` parts and returns (number, ETag) per part.
fn upload_all(s: &Server, urls: &Urls, data: &[u8]) -> Vec<(u32, String)> {
    data.chunks(MIN_PART)
        .enumerate()
        .map(|(i, chunk)| {
            let (st, etag, body) = put_part(s, &urls.parts[i], chunk);
            assert_eq!(st, 200, "{body}");
            (i as u32 + 1, etag)
        })
        .collect()
}

#[test]
fn the_seed_walkthrough_runs_as_written_in_bash() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(16 * MIB + 12_345, 1);
    let urls = create(&s, &t, data.len());
    assert_eq!(urls.parts.len(), 4, "16 MiB in 5 MiB parts");
    assert_eq!((urls.min, urls.max), (5_242_880, 2_147_483_648));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("new-blog-post.mp4"), &data).unwrap();
    std::fs::write(dir.path().join("urls"), urls.parts.join("\n") + "\n").unwrap();
    // The seed's commands: split, one `curl --upload-file xa? -v` per part URL (the ETag read
    // from the verbose output, as the seed shows it), the XML, a POST to completeUrl.
    let script = r#"
set -euo pipefail
split -b 5M new-blog-post.mp4
i=0
{
  echo '<?xml version="1.0" encoding="UTF-8"?>'
  echo '<CompleteMultipartUpload xmlns="">'
} > complete.xml
for part in xa?; do
  i=$((i + 1))
  url=$(sed -n "${i}p" urls)
  curl -sS --upload-file "$part" -v "$url" 2> "$part.log" > /dev/null
  etag=$(grep -i '^< etag:' "$part.log" | sed 's/^< [eE][tT][aA][gG]: *//' | tr -d '\r')
  printf '   <Part>\n      <ETag>%s</ETag>\n      <PartNumber>%s</PartNumber>\n   </Part>\n' "$etag" "$i" >> complete.xml
done
echo '</CompleteMultipartUpload>' >> complete.xml
code=$(curl -sS -o result.xml -w '%{http_code}' -X POST --data-binary @complete.xml "$COMPLETE_URL")
test "$code" = 200
curl -sS -o downloaded "$DOWNLOAD_URL"
cmp downloaded new-blog-post.mp4
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env("COMPLETE_URL", &urls.complete)
        .env("DOWNLOAD_URL", &urls.download)
        .output()
        .expect("bash");
    let result = std::fs::read_to_string(dir.path().join("result.xml")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n{}\n{result}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The ETags the parts were answered with are their MD5s, as S3's are.
    let xml = std::fs::read_to_string(dir.path().join("complete.xml")).unwrap();
    for chunk in data.chunks(MIN_PART) {
        assert!(xml.contains(&format!("\"{}\"", md5_hex(chunk))), "{xml}");
    }
    assert!(
        result.contains("<CompleteMultipartUploadResult") && result.contains("-4&quot;</ETag>"),
        "{result}"
    );
    assert_eq!(download(&s, &urls.download), data);
    // The parts went into the one assembled blob.
    assert_eq!(part_files(&s.data), 0);
    assert_eq!(s.blob_count(), 1);
}

#[test]
fn parts_in_reverse_and_in_parallel_and_a_resent_part_replaces() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(3 * MIN_PART + 777, 2);
    let urls = create(&s, &t, data.len());
    assert_eq!(urls.parts.len(), 4);
    // Part 2 first with wrong bytes; it is sent again below.
    let (st, wrong, _) = put_part(&s, &urls.parts[1], &bytes(MIN_PART, 99));
    assert_eq!(st, 200);
    let chunks: Vec<&[u8]> = data.chunks(MIN_PART).collect();
    let etags: Vec<(u32, String)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..chunks.len())
            .rev()
            .map(|i| {
                let (s, urls, chunk) = (&s, &urls, chunks[i]);
                sc.spawn(move || {
                    let (st, etag, body) = put_part(s, &urls.parts[i], chunk);
                    assert_eq!(st, 200, "{body}");
                    assert_eq!(etag, format!("\"{}\"", md5_hex(chunk)));
                    (i as u32 + 1, etag)
                })
            })
            .collect();
        let mut v: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        v.sort();
        v
    });
    assert_ne!(wrong, etags[1].1);
    assert_eq!(
        part_files(&s.data),
        4,
        "the re-sent part replaced the first"
    );
    // The replaced part's ETag no longer completes.
    let mut stale = etags.clone();
    stale[1].1 = wrong;
    let (st, body) = post_complete(&s, &urls.complete, &complete_xml(&stale));
    assert_eq!((st, code(&body).as_str()), (400, "InvalidPart"), "{body}");
    let (st, body) = post_complete(&s, &urls.complete, &complete_xml(&etags));
    assert_eq!(st, 200, "{body}");
    assert_eq!(download(&s, &urls.download), data);
}

#[test]
fn s3_errors_by_name_and_status() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(2 * MIN_PART + 10, 3);
    let urls = create(&s, &t, data.len());
    let etags = upload_all(&s, &urls, &data);

    let cases: Vec<(String, u16, &str)> = vec![
        // Wrong ETag.
        (
            complete_xml(&[
                (1, etags[0].1.clone()),
                (2, format!("\"{}\"", md5_hex(b"other"))),
                (3, etags[2].1.clone()),
            ]),
            400,
            "InvalidPart",
        ),
        // Not ascending.
        (
            complete_xml(&[
                (2, etags[1].1.clone()),
                (1, etags[0].1.clone()),
                (3, etags[2].1.clone()),
            ]),
            400,
            "InvalidPartOrder",
        ),
        // A part number beyond the upload's.
        (
            complete_xml(&[(1, etags[0].1.clone()), (9, etags[1].1.clone())]),
            400,
            "InvalidPart",
        ),
        // Missing the last part: fewer bytes than declared.
        (
            complete_xml(&[(1, etags[0].1.clone()), (2, etags[1].1.clone())]),
            400,
            "IncompleteBody",
        ),
        (
            "<CompleteMultipartUpload><Part>".into(),
            400,
            "MalformedXML",
        ),
        ("not xml at all".into(), 400, "MalformedXML"),
        (
            "<!DOCTYPE d [<!ENTITY x \"y\">]><CompleteMultipartUpload/>".into(),
            400,
            "MalformedXML",
        ),
        // Larger than a complete request of this upload's parts can be.
        (
            format!(
                "<CompleteMultipartUpload><!-- {} --></CompleteMultipartUpload>",
                "x".repeat(64 * 1024)
            ),
            400,
            "MalformedXML",
        ),
    ];
    for (xml, status, want) in cases {
        let (st, body) = post_complete(&s, &urls.complete, &xml);
        assert_eq!((st, code(&body).as_str()), (status, want), "{xml:.200}");
        assert!(body.contains("<Message>") && !body.contains("<Message></Message>"));
    }
    // Nothing partial became visible.
    assert_eq!(s.client.get(&urls.download).send().unwrap().status(), 404);
    assert_eq!(s.blob_count(), 0);

    // A part smaller than minPartSize before the last one.
    let small = create(&s, &t, MIN_PART + 20);
    let (_, e1, _) = put_part(&s, &small.parts[0], &bytes(20, 4));
    let (_, e2, _) = put_part(&s, &small.parts[1], &bytes(MIN_PART, 5));
    let (st, body) = post_complete(&s, &small.complete, &complete_xml(&[(1, e1), (2, e2)]));
    assert_eq!(
        (st, code(&body).as_str()),
        (400, "EntityTooSmall"),
        "{body}"
    );

    // Completing, then again with the same parts (same answer), then with others (refused).
    let (st, first) = post_complete(&s, &urls.complete, &complete_xml(&etags));
    assert_eq!(st, 200, "{first}");
    let (st, again) = post_complete(&s, &urls.complete, &complete_xml(&etags));
    assert_eq!((st, &again), (200, &first));
    let mut other = etags.clone();
    other[0].1 = format!("\"{}\"", md5_hex(b"x"));
    let (st, body) = post_complete(&s, &urls.complete, &complete_xml(&other));
    assert_eq!((st, code(&body).as_str()), (404, "NoSuchUpload"), "{body}");
    // No part can be sent to a completed upload.
    let (st, _, body) = put_part(&s, &urls.parts[0], &data[..MIN_PART]);
    assert_eq!((st, code(&body).as_str()), (404, "NoSuchUpload"), "{body}");
    assert_eq!(download(&s, &urls.download), data);
}

#[test]
fn part_bounds_are_enforced_while_streaming() {
    let s = Server::start_with(&[("DEPOT_MULTIPART_MAX_PART_SIZE", &MIN_PART.to_string())]);
    let t = s.token("jon", INSTANCE, false);
    let urls = create(&s, &t, 4 * MIN_PART);
    assert_eq!(urls.max, MIN_PART as u64);
    // Declared too large: refused before the body.
    let (st, _, body) = put_part(&s, &urls.parts[0], &bytes(MIN_PART + 1, 6));
    assert_eq!(
        (st, code(&body).as_str()),
        (400, "EntityTooLarge"),
        "{body}"
    );
    // Undeclared (chunked), cut off once it passes maxPartSize.
    let big = bytes(MIN_PART + 64 * 1024, 7);
    let stream = futures_free_body(big);
    let r = s.client.put(&urls.parts[0]).body(stream).send().unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(code(&r.text().unwrap()), "EntityTooLarge");
    s.eventually("no part and no temp file left", || {
        part_files(&s.data) == 0 && s.temp_files() == 0
    });
    // More than the declared filesize in all: the last part has only what is left.
    let small = create(&s, &t, MIN_PART + 100);
    let (st, _, _) = put_part(&s, &small.parts[0], &bytes(MIN_PART, 8));
    assert_eq!(st, 200);
    let (st, _, body) = put_part(&s, &small.parts[1], &bytes(101, 8));
    assert_eq!(
        (st, code(&body).as_str()),
        (400, "EntityTooLarge"),
        "{body}"
    );

    // Creation: sizes out of range are the JSON errors of the token route.
    for (filesize, status) in [(0i64, 400u16), (-5, 400), (3 << 30, 413)] {
        let r = s
            .client
            .post(s.url("/temp-files/multipart"))
            .header("Authorization", &t)
            .json(&serde_json::json!({ "filesize": filesize }))
            .send()
            .unwrap();
        assert_eq!(json_error(r).0, status, "filesize {filesize}");
    }
    let r = s
        .client
        .post(s.url("/temp-files/multipart"))
        .json(&serde_json::json!({ "filesize": 10 }))
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 401);
    let r = s
        .client
        .post(s.url("/temp-files/multipart"))
        .header("Authorization", &t)
        .json(&serde_json::json!({ "filesize": 12_000_000 }))
        .send()
        .unwrap();
    let v: Value = r.json().unwrap();
    assert_eq!(v["uploadPartUrls"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["minPartSize"], 5_242_880);
}

/// A body reqwest sends chunked (no Content-Length).
fn futures_free_body(data: Vec<u8>) -> reqwest::blocking::Body {
    reqwest::blocking::Body::new(std::io::Cursor::new(data))
}

#[test]
fn tampered_and_foreign_signatures_are_refused() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let urls = create(&s, &t, MIN_PART + 10);
    let part = bytes(MIN_PART, 9);
    // Another part number under part 1's signature.
    let moved = urls.parts[0].replace("/parts/1?", "/parts/2?");
    let (st, _, body) = put_part(&s, &moved, &part);
    assert_eq!((st, code(&body).as_str()), (403, "SignatureDoesNotMatch"));
    let tampered = urls.parts[0].replace("sig=", "sig=00");
    let (st, _, body) = put_part(&s, &tampered, &part);
    assert_eq!((st, code(&body).as_str()), (403, "SignatureDoesNotMatch"));
    let no_sig = urls.parts[0].split('?').next().unwrap().to_string();
    let (st, _, body) = put_part(&s, &no_sig, &part);
    assert_eq!((st, code(&body).as_str()), (403, "SignatureDoesNotMatch"));
    // The complete URL cannot upload a part, nor a part URL complete.
    let (st, body) = post_complete(&s, &urls.parts[0].replace("/parts/1?", "/complete?"), "");
    assert_eq!((st, code(&body).as_str()), (403, "SignatureDoesNotMatch"));
    assert_eq!(s.client.get(&urls.complete).send().unwrap().status(), 405);

    // Validly signed (with the data dir's URL key), but for a session that does not exist, or
    // a part number the upload does not have.
    let key = std::fs::read_to_string(s.data.join("url.key")).unwrap();
    let signer = depot::auth::sign::UrlSigner::with_key(key.trim().as_bytes());
    let (base, _) = urls.complete.split_once("/temp-files/").unwrap();
    let rest = urls.complete.split("/temp-files/").nth(1).unwrap();
    let instance = rest.split('/').next().unwrap();
    let session = rest.split('/').nth(1).unwrap();
    let expires = urls
        .complete
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let unknown = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    let q = signer
        .query(
            depot::auth::sign::Purpose::MultipartComplete,
            instance,
            unknown,
            expires,
        )
        .unwrap();
    let (st, body) = post_complete(
        &s,
        &format!("{base}/temp-files/{instance}/{unknown}/complete?{q}"),
        &complete_xml(&[(1, "\"x\"".into())]),
    );
    assert_eq!((st, code(&body).as_str()), (404, "NoSuchUpload"), "{body}");
    let q = signer
        .query(
            depot::auth::sign::Purpose::MultipartPart,
            instance,
            &format!("{session}.7"),
            expires,
        )
        .unwrap();
    let (st, _, body) = put_part(
        &s,
        &format!("{base}/temp-files/{instance}/{session}/parts/7?{q}"),
        b"x",
    );
    assert_eq!(
        (st, code(&body).as_str()),
        (400, "InvalidArgument"),
        "{body}"
    );
}

#[test]
fn checksum_sha256_instead_of_etags() {
    use base64::Engine;
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(MIN_PART + 4321, 10);
    let urls = create(&s, &t, data.len());
    upload_all(&s, &urls, &data);
    let sum = |c: &[u8]| {
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(c))
    };
    let chunks: Vec<&[u8]> = data.chunks(MIN_PART).collect();
    let xml = |second: String| {
        format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ChecksumSHA256>{}</ChecksumSHA256></Part>\
             <Part><PartNumber>2</PartNumber><ChecksumSHA256>{second}</ChecksumSHA256></Part></CompleteMultipartUpload>",
            sum(chunks[0])
        )
    };
    let (st, body) = post_complete(&s, &urls.complete, &xml(sum(b"not it")));
    assert_eq!((st, code(&body).as_str()), (400, "InvalidPart"), "{body}");
    let (st, body) = post_complete(&s, &urls.complete, &xml(sum(chunks[1])));
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("<ChecksumSHA256>"), "{body}");
    assert_eq!(download(&s, &urls.download), data);
}

#[test]
fn a_restart_between_parts_and_complete_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(2 * MIN_PART + 99, 11);
    let urls = create(&s, &t, data.len());
    let mut etags = upload_all(&s, &urls, &data[..2 * MIN_PART]);
    let old = s.base.clone();
    s.stop();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let moved = |u: &str| u.replace(&old, &s.base);
    let (st, etag, _) = put_part(&s, &moved(&urls.parts[2]), &data[2 * MIN_PART..]);
    assert_eq!(st, 200);
    etags.push((3, etag));
    let (st, body) = post_complete(&s, &moved(&urls.complete), &complete_xml(&etags));
    assert_eq!(st, 200, "{body}");
    assert_eq!(download(&s, &moved(&urls.download)), data);
    s.stop();
    let (ok, out) = depot(&["fsck"], dir.path());
    assert!(ok && out.contains("clean"), "{out}");
}

#[test]
fn expired_uploads_are_refused_and_swept_with_their_parts() {
    let s = Server::start_with(&[
        // Long enough that the parts land before expiry on a loaded machine.
        ("DEPOT_TEMP_FILE_TTL_SECS", "4"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let t = s.token("jon", INSTANCE, false);
    // One abandoned upload with a part, one completed.
    let abandoned = create(&s, &t, MIN_PART + 10);
    let (st, e1, _) = put_part(&s, &abandoned.parts[0], &bytes(MIN_PART, 12));
    assert_eq!(st, 200);
    let done = create(&s, &t, 100);
    let (st, e, _) = put_part(&s, &done.parts[0], &bytes(100, 13));
    assert_eq!(st, 200);
    let (st, _) = post_complete(&s, &done.complete, &complete_xml(&[(1, e)]));
    assert_eq!(st, 200);
    assert_eq!((part_files(&s.data), s.blob_count()), (1, 1));
    s.eventually("expired parts and bytes leave the disk", || {
        part_files(&s.data) == 0 && s.blob_count() == 0
    });
    let (st, _, body) = put_part(&s, &abandoned.parts[1], b"late");
    assert_eq!((st, code(&body).as_str()), (404, "NoSuchUpload"), "{body}");
    let (st, body) = post_complete(&s, &abandoned.complete, &complete_xml(&[(1, e1)]));
    assert_eq!((st, code(&body).as_str()), (404, "NoSuchUpload"), "{body}");
    let (st, code_, _) = json_error(s.client.get(&done.download).send().unwrap());
    assert_eq!((st, code_.as_str()), (410, "EXPIRED"));
}

#[test]
fn depot_gc_sweeps_abandoned_parts() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DEPOT_TEMP_FILE_TTL_SECS", "3"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "3600"),
    ];
    let s = Server::spawn(dir.path(), &env, &[]).unwrap();
    let t = s.token("jon", INSTANCE, false);
    let urls = create(&s, &t, MIN_PART + 10);
    assert_eq!(put_part(&s, &urls.parts[0], &bytes(MIN_PART, 14)).0, 200);
    s.stop();
    assert_eq!(part_files(dir.path()), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (ok, out) = depot(&["gc"], dir.path());
        assert!(ok, "{out}");
        if out.contains("swept 1 expired") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never swept: {out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(part_files(dir.path()), 0);
}

#[test]
fn same_part_racing_leaves_one_whole_part_and_sessions_are_capped() {
    let s = Server::start_with(&[("DEPOT_MAX_OPEN_SESSIONS_PER_ACCOUNT", "2")]);
    let t = s.token("jon", INSTANCE, false);
    let urls = create(&s, &t, MIN_PART + 1);
    let tries: Vec<Vec<u8>> = (0..4).map(|i| bytes(MIN_PART, 20 + i)).collect();
    let etags: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = tries
            .iter()
            .map(|b| {
                let (s, u) = (&s, &urls.parts[0]);
                sc.spawn(move || put_part(s, u, b))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                let (st, etag, body) = h.join().unwrap();
                assert_eq!(st, 200, "{body}");
                etag
            })
            .collect()
    });
    assert_eq!(part_files(&s.data), 1);
    let (_, last, _) = put_part(&s, &urls.parts[1], b"z");
    // Exactly one of the tries completes: the one stored.
    let winners: Vec<usize> = (0..tries.len())
        .filter(|&i| {
            let xml = complete_xml(&[(1, etags[i].clone()), (2, last.clone())]);
            post_complete(&s, &urls.complete, &xml).0 == 200
        })
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let mut want = tries[winners[0]].clone();
    want.push(b'z');
    assert_eq!(download(&s, &urls.download), want);
    // The open-session cap counts multipart uploads like the other kinds.
    create(&s, &t, 10);
    let v = s.graphql(
        Some(&t),
        "mutation { createTempFileMultipartUploadUrl(input: { filesize: 10 }) { completeUrl } }",
    );
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS",
        "{v}"
    );
}

/// Parts sent at their layout sizes land at their offsets in one staging file, in any order:
/// the complete links it (no second copy) and the bytes and SHA-256 come back whole.
#[test]
fn placed_parts_out_of_order_complete_whole() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(3 * MIN_PART + 4321, 30);
    let urls = create(&s, &t, data.len());
    let chunks: Vec<&[u8]> = data.chunks(MIN_PART).collect();
    let mut etags = Vec::new();
    for i in [2usize, 0, 3, 1] {
        let (st, etag, body) = put_part(&s, &urls.parts[i], chunks[i]);
        assert_eq!(st, 200, "{body}");
        assert_eq!(etag, format!("\"{}\"", md5_hex(chunks[i])));
        etags.push((i as u32 + 1, etag));
    }
    etags.sort();
    assert_eq!((part_files(&s.data), staging_files(&s.data)), (4, 1));
    complete_and_check(&s, &urls, &etags, &data);
    // The session's parts and staging file are gone; the blob stays.
    assert_eq!((part_files(&s.data), staging_files(&s.data)), (0, 0));
    assert_eq!(s.blob_count(), 1);
}

/// A part sent again after every part was placed (and the whole hashed by a first complete
/// that failed on a stale ETag) replaces it: the complete falls back to concatenating and
/// the new bytes are the file's.
#[test]
fn a_part_resent_after_the_whole_was_placed_replaces_it() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let mut data = bytes(2 * MIN_PART + 10, 31);
    let urls = create(&s, &t, data.len());
    let first = upload_all(&s, &urls, &data);
    // A complete naming part 2 with a wrong ETag is refused and changes nothing.
    let mut wrong = first.clone();
    wrong[1].1 = format!("\"{}\"", md5_hex(b"other"));
    let (st, body) = post_complete(&s, &urls.complete, &complete_xml(&wrong));
    assert_eq!((st, code(&body).as_str()), (400, "InvalidPart"), "{body}");
    // Part 1 again, other bytes of the same size.
    let new_first = bytes(MIN_PART, 32);
    data[..MIN_PART].copy_from_slice(&new_first);
    let (st, etag, body) = put_part(&s, &urls.parts[0], &new_first);
    assert_eq!(st, 200, "{body}");
    assert_ne!(etag, first[0].1);
    assert_eq!(
        part_files(&s.data),
        3,
        "the re-sent part replaced the placed one"
    );
    // The old part 1's ETag no longer completes; the new one does.
    let (st, body) = post_complete(&s, &urls.complete, &complete_xml(&first));
    assert_eq!((st, code(&body).as_str()), (400, "InvalidPart"), "{body}");
    let mut etags = first.clone();
    etags[0].1 = etag;
    complete_and_check(&s, &urls, &etags, &data);
}

/// The server killed (SIGKILL) between placed parts: the acknowledged parts survive, the rest
/// is sent to the new process, and the complete gives the whole file; fsck finds it clean.
#[test]
fn a_kill_between_placed_parts_then_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("jon", INSTANCE, false);
    let data = bytes(3 * MIN_PART + 5, 33);
    let urls = create(&s, &t, data.len());
    let chunks: Vec<&[u8]> = data.chunks(MIN_PART).collect();
    let mut etags = Vec::new();
    for i in [3usize, 0] {
        let (st, etag, _) = put_part(&s, &urls.parts[i], chunks[i]);
        assert_eq!(st, 200);
        etags.push((i as u32 + 1, etag));
    }
    let old = s.base.clone();
    s.stop(); // SIGKILL
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let moved = |u: &str| u.replace(&old, &s.base);
    for i in [1usize, 2] {
        let (st, etag, body) = put_part(&s, &moved(&urls.parts[i]), chunks[i]);
        assert_eq!(st, 200, "{body}");
        etags.push((i as u32 + 1, etag));
    }
    etags.sort();
    let urls = Urls {
        parts: urls.parts.iter().map(|u| moved(u)).collect(),
        complete: moved(&urls.complete),
        download: moved(&urls.download),
        ..urls
    };
    complete_and_check(&s, &urls, &etags, &data);
    s.stop();
    let (ok, out) = depot(&["fsck"], dir.path());
    assert!(ok && out.contains("clean"), "{out}");
}

/// Parts not laid out end to end in one size fall back to concatenation, in the order the
/// complete lists: a larger first part sent after a placed second one, part numbers with a
/// gap, and a chunked body (no declared length) beside a placed part.
#[test]
fn parts_not_laid_out_by_offset_fall_back_to_concatenation() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    // Part 2 (5 MiB) first fixes the part size and sits at 5 MiB; part 1 then has 5 MiB + 10
    // bytes, which is not that size: a part of its own.
    let data = bytes(2 * MIN_PART + 10, 34);
    let urls = create(&s, &t, data.len());
    let (a, b) = data.split_at(MIN_PART + 10);
    let (st, e2, body) = put_part(&s, &urls.parts[1], b);
    assert_eq!(st, 200, "{body}");
    let (st, e1, body) = put_part(&s, &urls.parts[0], a);
    assert_eq!(st, 200, "{body}");
    assert_eq!(staging_files(&s.data), 1);
    complete_and_check(&s, &urls, &[(1, e1), (2, e2)], &data);

    // Parts 1 and 3 (S3 allows gaps): part 3 is not where part size 5 MiB puts it.
    let data = bytes(2 * MIN_PART + 99, 35);
    let urls = create(&s, &t, data.len());
    assert_eq!(urls.parts.len(), 3);
    let (st, e1, _) = put_part(&s, &urls.parts[0], &data[..MIN_PART]);
    assert_eq!(st, 200);
    let (st, e3, _) = put_part(&s, &urls.parts[2], &data[MIN_PART..]);
    assert_eq!(st, 200);
    complete_and_check(&s, &urls, &[(1, e1), (3, e3)], &data);

    // A chunked first part beside a placed last part.
    let data = bytes(MIN_PART + 77, 36);
    let urls = create(&s, &t, data.len());
    let r = s
        .client
        .put(&urls.parts[0])
        .body(futures_free_body(data[..MIN_PART].to_vec()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let e1 = r.headers()["etag"].to_str().unwrap().to_string();
    let (st, e2, body) = put_part(&s, &urls.parts[1], &data[MIN_PART..]);
    assert_eq!(st, 200, "{body}");
    complete_and_check(&s, &urls, &[(1, e1), (2, e2)], &data);
}
