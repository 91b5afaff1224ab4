//! Image transforms on download (issue 16): `GET /file/<id>.<ext>?w=&h=&fit=&format=&q=`.
//! Outputs are decoded with the `image` crate; variants are checked on disk, in the metrics
//! and with `depot fsck`.

mod common;
use common::*;
use image::{ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::json;
use std::io::Cursor;

const METRICS_TOKEN: &str = "metrics-token-for-transform-tests-01";

/// A JPEG of `w`x`h` in one colour.
fn jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = RgbImage::from_pixel(w, h, Rgb(rgb));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// An 80x40 JPEG, left half red and right half blue, whose EXIF says "rotate 90 degrees
/// clockwise to view" (orientation 6): upright it is 40x80, red on top.
fn exif_rotated_jpeg() -> Vec<u8> {
    let img = RgbImage::from_fn(80, 40, |x, _| {
        if x < 40 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let mut plain = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 95)
        .write_image(img.as_raw(), 80, 40, image::ExtendedColorType::Rgb8)
        .unwrap();
    // APP1: "Exif\0\0", a big-endian TIFF header, one IFD with Orientation (0x0112) = 6.
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend_from_slice(&[0, 1]);
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    exif.extend_from_slice(&[0, 0, 0, 0]);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&plain[2..]);
    out
}

/// A two-frame animated GIF, 20x20: red, then blue.
fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        for c in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let frame = image::Frame::new(RgbaImage::from_pixel(20, 20, Rgba(c)));
            enc.encode_frame(frame).unwrap();
        }
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A well-formed PNG start claiming `side` x `side` RGBA pixels, with a few bytes of pixel
/// data: a decode bomb's header (a decoder that trusted it would allocate side^2 * 4 bytes).
fn png_bomb(side: u32) -> Vec<u8> {
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend(chunk(b"IHDR", &ihdr));
    b.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00]));
    b.extend(chunk(b"IEND", &[]));
    b
}

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .decode()
        .unwrap()
}

fn path_of(f: &Value) -> String {
    f["url"]["path"].as_str().unwrap().to_string()
}

/// GET `path?query` with an optional token: (status, headers, body).
fn get(
    s: &Server,
    path: &str,
    query: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = s.get(&format!("{path}?{query}"), token);
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().unwrap().to_vec())
}

fn code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[test]
fn fit_modes_sizes_and_formats() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    // 400x200, one dark colour (so `contain`'s white padding shows).
    let f = s.upload_one(&t, "wide.jpg", &jpeg(400, 200, [10, 120, 200]));
    let p = path_of(&f);
    for (q, want) in [
        ("w=160&h=160&fit=cover&format=png", (160, 160)),
        ("w=160&h=160&fit=contain&format=png", (160, 160)),
        ("w=160&h=160&fit=fill&format=png", (160, 160)),
        ("w=160&h=160&fit=inside&format=png", (160, 80)),
        // Default fit with a whole box: cover.
        ("w=160&h=160&format=png", (160, 160)),
        ("w=320&format=png", (320, 160)),
        ("h=64&format=png", (128, 64)),
        // Format only: the size stays.
        ("format=png", (400, 200)),
    ] {
        let (status, h, body) = get(&s, &p, q, Some(&t));
        assert_eq!(status, 200, "{q}: {}", String::from_utf8_lossy(&body));
        assert_eq!(header(&h, "content-type"), "image/png", "{q}");
        let img = decode(&body);
        assert_eq!((img.width(), img.height()), want, "{q}");
    }
    // contain: the 160x80 image centred, transparent above and below (white in a JPEG);
    // cover fills everything.
    let (_, _, body) = get(&s, &p, "w=160&h=160&fit=contain&format=png", Some(&t));
    let img = decode(&body).to_rgba8();
    assert_eq!(img.get_pixel(80, 2).0[3], 0, "transparent padding");
    let mid = img.get_pixel(80, 80).0;
    assert!(
        mid[2] > 150 && mid[0] < 60 && mid[3] == 255,
        "image in the middle: {mid:?}"
    );
    let (_, _, body) = get(&s, &p, "w=160&h=160&fit=contain&format=jpeg", Some(&t));
    let img = decode(&body).to_rgb8();
    let pad = img.get_pixel(80, 2).0;
    assert!(
        pad.iter().all(|c| *c > 240),
        "white padding in a JPEG: {pad:?}"
    );
    let (_, _, body) = get(&s, &p, "w=160&h=160&fit=cover&format=png", Some(&t));
    let top = decode(&body).to_rgb8().get_pixel(80, 2).0;
    assert!(top[2] > 150 && top[0] < 60, "cover fills: {top:?}");

    // Each format's magic bytes and type; no format: the source's (JPEG).
    for (q, mime, magic) in [
        ("w=64&format=jpeg", "image/jpeg", &b"\xFF\xD8\xFF"[..]),
        ("w=64&format=jpeg&q=50", "image/jpeg", &b"\xFF\xD8\xFF"[..]),
        ("w=64&format=png", "image/png", &b"\x89PNG"[..]),
        ("w=64&format=webp", "image/webp", &b"RIFF"[..]),
        ("w=64", "image/jpeg", &b"\xFF\xD8\xFF"[..]),
    ] {
        let (status, h, body) = get(&s, &p, q, Some(&t));
        assert_eq!(status, 200, "{q}");
        assert_eq!(header(&h, "content-type"), mime, "{q}");
        assert!(body.starts_with(magic), "{q}");
        if mime == "image/webp" {
            assert_eq!(&body[8..12], b"WEBP");
        }
        assert_eq!(decode(&body).width(), 64, "{q}");
    }
    // Quality makes another JPEG variant (no larger at q=50).
    let (_, h80, b80) = get(&s, &p, "w=64&format=jpeg", Some(&t));
    let (_, h50, b50) = get(&s, &p, "w=64&format=jpeg&q=50", Some(&t));
    assert_ne!(header(&h80, "etag"), header(&h50, "etag"));
    assert!(b50.len() <= b80.len());
}

#[test]
fn exif_orientation_is_applied_and_animations_give_their_first_frame() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "rotated.jpg", &exif_rotated_jpeg());
    let (status, _, body) = get(&s, &path_of(&f), "h=64&format=png", Some(&t));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let img = decode(&body).to_rgb8();
    assert_eq!((img.width(), img.height()), (32, 64), "upright: portrait");
    let top = img.get_pixel(16, 6).0;
    let bottom = img.get_pixel(16, 58).0;
    assert!(top[0] > 200 && top[2] < 60, "red on top: {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "blue below: {bottom:?}");

    // An animated GIF: the first frame, as a still PNG (GIF's default output).
    let g = s.upload_one(&t, "anim.gif", &animated_gif());
    let (status, h, body) = get(&s, &path_of(&g), "w=64", Some(&t));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "content-type"), "image/png");
    let img = decode(&body).to_rgba8();
    assert_eq!((img.width(), img.height()), (64, 64));
    let px = img.get_pixel(32, 32).0;
    assert!(px[0] > 200 && px[2] < 60, "first frame (red): {px:?}");
}

#[test]
fn bad_parameters_and_sources_answer_400_with_a_code() {
    let s = Server::start();
    let t = s.token("alice", INSTANCE, false);
    let img = path_of(&s.upload_one(&t, "a.jpg", &jpeg(100, 50, [1, 2, 3])));
    let txt = path_of(&s.upload_one(&t, "notes.txt", b"just text"));
    let svg = path_of(&s.upload_one(
        &t,
        "x.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
    ));
    let bomb = path_of(&s.upload_one(&t, "bomb.png", &png_bomb(30_000)));
    let broken = path_of(&s.upload_one(&t, "broken.png", b"\x89PNG\r\n\x1a\nnot really a png"));
    for (path, q, status, want) in [
        (&img, "w=0", 400, "INVALID_TRANSFORM"),
        (&img, "w=-5", 400, "INVALID_TRANSFORM"),
        (&img, "w=abc", 400, "INVALID_TRANSFORM"),
        (&img, "w=64&w=128", 400, "INVALID_TRANSFORM"),
        (&img, "w=64&h=64&fit=squash", 400, "INVALID_TRANSFORM"),
        (&img, "w=64&q=101", 400, "INVALID_TRANSFORM"),
        (&img, "w=64&format=jpeg&q=55", 400, "SIZE_NOT_ALLOWED"),
        (&img, "format=bmp", 400, "INVALID_TRANSFORM"),
        (&img, "w=321", 400, "SIZE_NOT_ALLOWED"),
        (&img, "w=64&h=9999", 400, "SIZE_NOT_ALLOWED"),
        (&img, "w=64&format=avif", 400, "FORMAT_NOT_ALLOWED"),
        (&txt, "w=64", 400, "NOT_AN_IMAGE"),
        (&svg, "w=64", 400, "NOT_AN_IMAGE"),
        // Decode bomb: a 30000 x 30000 canvas declared in a few bytes.
        (&bomb, "w=64", 422, "IMAGE_TOO_LARGE"),
        (&broken, "w=64", 422, "UNDECODABLE_IMAGE"),
    ] {
        let (got, h, body) = get(&s, path, q, Some(&t));
        assert_eq!((got, code(&body).as_str()), (status, want), "{path}?{q}");
        assert!(header(&h, "content-type").starts_with("application/json"));
    }
    // Other query parameters are not transforms: the original is served.
    let (status, h, _) = get(&s, &img, "download=1", Some(&t));
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cache-control"), "private, no-cache");
    // Nothing was stored for any refusal: five uploads, five blobs.
    assert_eq!(s.blob_count(), 5);
}

#[test]
fn same_access_checks_as_the_original_and_cache_headers() {
    let s = Server::start();
    let alice = s.token("alice", INSTANCE, false);
    let bob = s.token("bob", INSTANCE, false);
    let admin = s.token("root", INSTANCE, true);
    let f = s.upload_one(&alice, "p.jpg", &jpeg(200, 100, [200, 10, 10]));
    let p = path_of(&f);
    let id = f["hypi"]["id"].as_str().unwrap();
    let q = "w=64&format=webp";
    // Without a grant: the same answers as the original's.
    for token in [None, Some(bob.as_str())] {
        let original = s.get(&p, token).status().as_u16();
        let (status, _, body) = get(&s, &p, q, token);
        assert_eq!(status, original, "{token:?}");
        assert!(status == 401 || status == 404, "{status}");
        if token.is_some() {
            assert_eq!(code(&body), "NOT_FOUND");
        }
    }
    // A wrong extension is not this file either.
    let wrong = p.replace(".jpg", ".png");
    assert_eq!(get(&s, &wrong, q, Some(&alice)).0, 404);

    // The owner: private and immutable, its own ETag (not the source's).
    let (status, h, body) = get(&s, &p, q, Some(&alice));
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "cache-control"),
        "private, max-age=31536000, immutable"
    );
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "content-security-policy"), "sandbox");
    let etag = header(&h, "etag").to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&body)));
    assert_ne!(etag.trim_matches('"'), f["sha256"].as_str().unwrap_or(""));
    assert!(header(&h, "content-disposition").contains("p-64x32.webp"));

    // A grantee reads it too.
    let mut to_bob = json!({
        "resource": id, "resourceType": "File", "operationType": "Query", "operation": "*",
        "permissionType": "RBP", "approved": true, "members": [{"hypi": {"id": "bob"}}]
    });
    assert_eq!(s.post_rights(&alice, &to_bob).status(), 201);
    let (status, h, _) = get(&s, &p, q, Some(&bob));
    assert_eq!(status, 200);
    assert_eq!(header(&h, "etag"), etag);
    // Anonymous, once granted and switched on: public.
    to_bob["members"] = json!([{"hypi": {"id": "anonymous"}}]);
    assert_eq!(s.post_rights(&alice, &to_bob).status(), 201);
    assert_eq!(s.set_anonymous(&admin, true), 200);
    let (status, h, _) = get(&s, &p, q, None);
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "cache-control"),
        "public, max-age=86400, immutable"
    );
    assert_eq!(header(&h, "etag"), etag);
}

#[test]
fn a_variant_is_computed_once_then_served_like_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[("DEPOT_METRICS_TOKEN", METRICS_TOKEN)], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    let p = path_of(&s.upload_one(&t, "big.jpg", &jpeg(1200, 800, [30, 160, 90])));
    let q = "w=320&h=240&fit=cover&format=webp";
    // Eight first requests at once: one computation, one stored variant.
    let answers: Vec<(u16, String)> = std::thread::scope(|sc| {
        let running: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    let (status, h, _) = get(&s, &p, q, Some(&t));
                    (status, header(&h, "etag").to_string())
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers
            .iter()
            .all(|(st, e)| *st == 200 && *e == answers[0].1),
        "{answers:?}"
    );
    let computed = metric_sum(
        &s.metrics(METRICS_TOKEN),
        "depot_transform_variants_total",
        &[],
    );
    assert_eq!(computed, 1.0, "computed once");
    assert_eq!(s.blob_count(), 2, "the source and one variant");

    // Cached: the same ETag, a conditional GET, a range, HEAD.
    let (status, h, body) = get(&s, &p, q, Some(&t));
    assert_eq!((status, header(&h, "etag")), (200, answers[0].1.as_str()));
    let r = s
        .client
        .get(s.url(&format!("{p}?{q}")))
        .header("Authorization", &t)
        .header("If-None-Match", &answers[0].1)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = s
        .client
        .get(s.url(&format!("{p}?{q}")))
        .header("Authorization", &t)
        .header("Range", "bytes=0-11")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &body[..12]);
    let r = s
        .client
        .head(s.url(&format!("{p}?{q}")))
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "content-length"),
        body.len().to_string()
    );
    // Equal parameters written differently name the same variant (WebP ignores q).
    let (_, h, _) = get(&s, &p, "format=webp&fit=cover&h=240&w=320&q=50", Some(&t));
    assert_eq!(header(&h, "etag"), answers[0].1);
    let m = s.metrics(METRICS_TOKEN);
    assert_eq!(metric_sum(&m, "depot_transform_variants_total", &[]), 1.0);
    s.stop();
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(ok && text.contains("clean"), "{text}");
}

#[test]
fn deleting_the_source_removes_its_variants() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    let t = s.token("alice", INSTANCE, false);
    let bytes = jpeg(300, 200, [90, 90, 200]);
    // Two files with the same bytes share one blob, so they share its variants.
    let a = s.upload_one(&t, "a.jpg", &bytes);
    let b = s.upload_one(&t, "b.jpg", &bytes);
    for q in ["w=64&format=png", "w=128&format=webp"] {
        assert_eq!(get(&s, &path_of(&a), q, Some(&t)).0, 200);
    }
    let (_, h, _) = get(&s, &path_of(&b), "w=64&format=png", Some(&t));
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(s.blob_count(), 3, "one source, two variants");
    let delete = |f: &Value| {
        s.client
            .delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
            .header("Authorization", &t)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(delete(&a), 204);
    assert_eq!(
        s.blob_count(),
        3,
        "b still uses the source and its variants"
    );
    assert_eq!(get(&s, &path_of(&b), "w=64&format=png", Some(&t)).0, 200);
    assert_eq!(delete(&b), 204);
    assert_eq!(s.blob_count(), 0, "the source went, its variants with it");
    assert_eq!(get(&s, &path_of(&b), "w=64&format=png", Some(&t)).0, 404);
    s.stop();
    let (ok, text) = depot(&["fsck"], dir.path());
    assert!(ok && text.contains("clean"), "{text}");
    assert!(text.contains("0 blobs"), "{text}");
}

#[test]
fn variants_on_postgres_metadata() {
    let Some(url) = pg_or_skip("variants_on_postgres_metadata") else {
        return;
    };
    let meta_url = url_in_new_schema(&url, "transforms");
    let s = Server::start_with(&[
        ("DEPOT_META_KIND", "postgres"),
        ("DEPOT_META_URL", meta_url.as_str()),
        ("DEPOT_META_POOL_SIZE", "4"),
    ]);
    let t = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&t, "pg.jpg", &jpeg(640, 480, [40, 40, 220]));
    let p = path_of(&f);
    let q = "w=320&h=240&fit=cover&format=webp";
    let etags: Vec<String> = std::thread::scope(|sc| {
        let running: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    let (status, h, body) = get(&s, &p, q, Some(&t));
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    assert_eq!((decode(&body).width(), decode(&body).height()), (320, 240));
                    header(&h, "etag").to_string()
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(etags.iter().all(|e| *e == etags[0]), "{etags:?}");
    assert_eq!(s.blob_count(), 2, "the source and one variant");
    let status = s
        .client
        .delete(s.url(&format!("/files/{}", f["hypi"]["id"].as_str().unwrap())))
        .header("Authorization", &t)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert_eq!(s.blob_count(), 0, "the variant went with its source");
}
