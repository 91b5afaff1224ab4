//! Upload sessions under review's hard cases, over real HTTP: a confirmed upload outlives its
//! session record's sweep; the creation rate survives a restart; the blurhash decode gives up
//! within its time without holding up the File; and `GET /files/{id}` shows Foir's fields.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

fn presigned(s: &Server, t: &str, name: &str, body: &[u8], mime: &str) -> (String, Value) {
    let (id, url) = s.create_file_upload(t, name, mime, body.len(), "").unwrap();
    let r = s.put_bytes(&url, mime, body);
    assert_eq!(r.status(), 200);
    let v = s.confirm_file_upload(t, &id);
    let f = v["data"]["confirmFileUpload"].clone();
    assert!(f.is_object(), "{v}");
    (id, f)
}

#[test]
fn a_confirmed_file_outlives_the_sweep_of_its_session() {
    let s = Server::start_with(&[
        ("DEPOT_UPLOAD_URL_TTL_SECS", "4"),
        ("DEPOT_SESSION_SWEEP_INTERVAL_SECS", "1"),
    ]);
    let t = s.token("ann", INSTANCE, false);
    let img = jpeg(32, 24);
    let (upload, f) = presigned(&s, &t, "kept.jpg", &img, "image/jpeg");
    let fid = f["id"].as_str().unwrap().to_string();
    // Until the sweep, confirming again answers the same File.
    let again = s.confirm_file_upload(&t, &upload);
    assert_eq!(again["data"]["confirmFileUpload"]["id"], fid.as_str());
    // The sweep removes the session record (a confirm no longer finds it)...
    s.eventually("the confirmed session is swept", || {
        Server::gql_code(&s.confirm_file_upload(&t, &upload)) == "NOT_FOUND"
    });
    // ...and leaves the File, its bytes and its fields alone.
    let r = s.get(&format!("/files/{fid}"), Some(&t));
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["blurhash"], f["blurhash"]);
    let r = s.get(v["url"]["path"].as_str().unwrap(), Some(&t));
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), img.as_slice());
    assert!(blob_names(&s.data).contains(&sha256_hex(&img)));
}

#[test]
fn the_session_creation_rate_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DEPOT_MAX_SESSIONS_PER_MINUTE", "2")];
    // The budget is per minute: start early enough in one that a restart fits in it.
    let in_minute = depot::types::now_millis() / 1000 % 60;
    if in_minute > 40 {
        std::thread::sleep(Duration::from_secs(61 - in_minute));
    }
    let s = Server::spawn(dir.path(), &env, &[]).unwrap();
    let t = s.token("ann", INSTANCE, false);
    let temp = |s: &Server| {
        s.client
            .post(s.url("/temp-files"))
            .header("Authorization", &t)
            .send()
            .unwrap()
    };
    assert_eq!(temp(&s).status(), 200);
    assert_eq!(temp(&s).status(), 200);
    let (st, code, _) = json_error(temp(&s));
    assert_eq!((st, code.as_str()), (429, "TOO_MANY_REQUESTS"));
    s.stop();
    let s = Server::spawn(dir.path(), &env, &[]).unwrap();
    let (st, code, _) = json_error(temp(&s));
    assert_eq!(
        (st, code.as_str()),
        (429, "TOO_MANY_REQUESTS"),
        "a restart is no fresh minute"
    );
    // Another account has its own budget.
    let bob = s.token("bob", INSTANCE, false);
    let r = s
        .client
        .post(s.url("/temp-files"))
        .header("Authorization", &bob)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_decode_out_of_time_makes_the_file_without_a_blurhash() {
    let s = Server::start_with(&[("DEPOT_DECODE_TIMEOUT_SECS", "0")]);
    let t = s.token("ann", INSTANCE, false);
    let img = jpeg(640, 480);
    let (_, f) = presigned(&s, &t, "slow.jpg", &img, "image/jpeg");
    assert_eq!(f["blurhash"], Value::Null, "{f}");
    // The dimensions come from the header all the same.
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(640), Some(480))
    );
    let r = s.get(
        f["url"].as_str().unwrap().trim_start_matches(&s.base),
        Some(&t),
    );
    assert_eq!(r.bytes().unwrap().as_ref(), img.as_slice());
}

#[test]
fn get_file_shows_foirs_fields_beside_hypis() {
    let s = Server::start();
    let t = s.token("ann", INSTANCE, false);
    let img = jpeg(48, 32);
    let (id, url) = s
        .create_file_upload(
            &t,
            "hero.jpg",
            "image/jpeg",
            img.len(),
            r#"metadata: { alt: "A hero", tag: "x" }"#,
        )
        .unwrap();
    assert_eq!(s.put_bytes(&url, "image/jpeg", &img).status(), 200);
    let f = s.confirm_file_upload(&t, &id)["data"]["confirmFileUpload"].clone();
    let fid = f["id"].as_str().unwrap();

    let v: Value = s.get(&format!("/files/{fid}"), Some(&t)).json().unwrap();
    // Hypi's shape is unchanged...
    assert_eq!(v["hypi"]["id"], fid);
    assert_eq!(v["name"], "hero.jpg");
    assert_eq!(v["type"], "image/jpeg");
    let path = v["url"]["path"].as_str().unwrap();
    assert_eq!(v["image"]["width"], 48);
    // ...and Foir's fields sit beside it, the same values as the GraphQL File.
    for k in [
        "id",
        "filename",
        "mimeType",
        "size",
        "width",
        "height",
        "blurhash",
        "alt",
        "createdAt",
        "metadata",
    ] {
        assert_eq!(v[k], f[k], "{k}: {v}");
    }
    assert_eq!(v["url"]["href"], f["url"]);
    assert_eq!(v["metadata"], json!({"alt": "A hero", "tag": "x"}));

    // Foir's own shape: `url` is the absolute URL, Hypi's path is `urlPath`.
    let v: Value = s
        .get(&format!("/files/{fid}?shape=foir"), Some(&t))
        .json()
        .unwrap();
    for k in [
        "id",
        "filename",
        "mimeType",
        "size",
        "url",
        "width",
        "height",
        "blurhash",
        "alt",
        "createdAt",
        "metadata",
    ] {
        assert_eq!(v[k], f[k], "{k}: {v}");
    }
    assert_eq!(v["urlPath"], path);
    // The REST confirm answers the same shape.
    let r = s
        .client
        .post(s.url(&format!("/uploads/{id}/confirm")))
        .header("Authorization", &t)
        .send()
        .unwrap();
    let c: Value = r.json().unwrap();
    assert_eq!(c, v);

    // A Hypi upload has Foir's fields too, empty where it has no value.
    let h = s.upload_one(&t, "notes.txt", b"notes");
    let hid = h["hypi"]["id"].as_str().unwrap();
    let v: Value = s.get(&format!("/files/{hid}"), Some(&t)).json().unwrap();
    assert_eq!(v["filename"], "notes.txt");
    assert_eq!(v["blurhash"], Value::Null);
    assert_eq!(v["metadata"], Value::Null);
    // Failures: an unknown shape, someone who may not read the file, no such file.
    let (st, code, _) = json_error(s.get(&format!("/files/{fid}?shape=xml"), Some(&t)));
    assert_eq!((st, code.as_str()), (400, "BAD_REQUEST"));
    let eve = s.token("eve", INSTANCE, false);
    assert_eq!(
        json_error(s.get(&format!("/files/{fid}"), Some(&eve))).0,
        404
    );
    assert_eq!(json_error(s.get("/files/nope", Some(&t))).0, 404);
}
