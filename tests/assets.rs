//! Hygraph's assets over real HTTP: `createAsset(data: {fileName})`, the seed's curl POST form
//! run with the values of our answer, `asset(where: {id})`, the policy checks (size, expiry,
//! key, tampered signature or policy, replay), the REST twins, and a temp file made permanent
//! from our own store.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const SELECTION: &str = "id fileName url mimeType size width height handle createdAt updatedAt \
    upload { status expiresAt error requestPostData { url date key signature algorithm policy \
    credential securityToken } }";

fn create_asset(s: &Server, t: &str, file_name: &str) -> Value {
    let v = s.graphql(
        Some(t),
        &format!(
            r#"mutation {{ createAsset(data: {{ fileName: {file_name:?} }}) {{ {SELECTION} }} }}"#
        ),
    );
    let a = v["data"]["createAsset"].clone();
    assert!(a.is_object(), "{v}");
    a
}

fn asset(s: &Server, t: &str, id: &str) -> Value {
    let v = s.graphql(
        Some(t),
        &format!(r#"{{ asset(where: {{ id: {id:?} }}) {{ {SELECTION} }} }}"#),
    );
    v["data"]["asset"].clone()
}

/// The seed's upload: the requestPostData subkeys in shell variables, then its curl (with the
/// line continuations the page's rendering lost); `-sS -o/-w` added to read the status.
fn seed_curl(dir: &Path, post: &Value, file: &str) -> (u16, String) {
    let var = |k: &str| post[k].as_str().unwrap().to_string();
    let script = format!(
        r#"URL="{url}"
DATE="{date}"
KEY="{key}"
SIGNATURE="{sig}"
ALGORITHM="{alg}"
POLICY="{policy}"
CREDENTIAL="{cred}"
SECURITY_TOKEN="{token}"
curl --request POST \
--url $URL \
--form X-Amz-Date=$DATE \
--form key=$KEY \
--form X-Amz-Signature=$SIGNATURE \
--form X-Amz-Algorithm=$ALGORITHM \
--form policy=$POLICY \
--form X-Amz-Credential=$CREDENTIAL \
--form X-Amz-Security-Token=$SECURITY_TOKEN \
--form file=@./{file} \
-sS -o body.out -w '%{{http_code}}'
"#,
        url = var("url"),
        date = var("date"),
        key = var("key"),
        sig = var("signature"),
        alg = var("algorithm"),
        policy = var("policy"),
        cred = var("credential"),
        token = var("securityToken"),
    );
    let out = Command::new("bash")
        .current_dir(dir)
        .args(["-c", &script])
        .output()
        .expect("bash and curl are installed");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = std::fs::read_to_string(dir.join("body.out")).unwrap_or_default();
    (status, body)
}

/// The form posted by reqwest with some fields replaced.
fn post_form(s: &Server, post: &Value, replace: &[(&str, &str)], file: Vec<u8>) -> (u16, String) {
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
        let v = replace
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| post[k].as_str().unwrap().to_string());
        form = form.text(field, v);
    }
    form = form.part(
        "file",
        reqwest::blocking::multipart::Part::bytes(file).file_name("f.bin"),
    );
    let r = s
        .client
        .post(post["url"].as_str().unwrap())
        .multipart(form)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).map_or(String::new(), |v| {
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    })
}

#[test]
fn upload_by_file_with_the_seeds_curl() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let a = create_asset(&s, &t, "test.jpg");
    assert_eq!(a["upload"]["status"], "ASSET_CREATE_PENDING");
    assert_eq!(a["fileName"], "test.jpg");
    assert!(a["upload"]["expiresAt"].is_string());
    let post = a["upload"]["requestPostData"].clone();
    assert!(post["url"].as_str().unwrap().ends_with("/assets/upload"));
    for k in [
        "date",
        "key",
        "signature",
        "algorithm",
        "policy",
        "credential",
        "securityToken",
    ] {
        assert!(!post[k].as_str().unwrap().is_empty(), "{k}");
    }
    let id = a["id"].as_str().unwrap().to_string();
    // The same asset, still pending, when read back.
    assert_eq!(
        asset(&s, &t, &id)["upload"]["status"],
        "ASSET_CREATE_PENDING"
    );

    let dir = tempfile::tempdir().unwrap();
    let img = jpeg(40, 30);
    std::fs::write(dir.path().join("test.jpg"), &img).unwrap();
    let (status, body) = seed_curl(dir.path(), &post, "test.jpg");
    assert_eq!(status, 204, "{body}");

    let done = asset(&s, &t, &id);
    assert_eq!(done["upload"]["status"], "ASSET_UPLOAD_COMPLETE", "{done}");
    assert_eq!(done["id"], a["id"]);
    assert_eq!(
        done["url"], a["url"],
        "the url handed out at creation serves the bytes"
    );
    assert_eq!(done["mimeType"], "image/jpeg");
    assert_eq!(done["size"], img.len());
    assert_eq!(done["width"], 40);
    assert_eq!(done["handle"], sha256_hex(&img));
    assert!(done["upload"]["requestPostData"].is_null());
    let got = s
        .client
        .get(done["url"].as_str().unwrap())
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().unwrap().as_ref(), img.as_slice());
    // Foir's/Hypi's file(id:) sees the same File.
    let v = s.graphql(
        Some(&t),
        &format!(r#"{{ file(id: {id:?}) {{ id filename size }} }}"#),
    );
    assert_eq!(v["data"]["file"]["filename"], "test.jpg", "{v}");

    // Replay of the same form: refused, the stored file untouched.
    let (status, body) = seed_curl(dir.path(), &post, "test.jpg");
    assert_eq!(
        (status, code_of(&body).as_str()),
        (409, "CONFLICT"),
        "{body}"
    );
    // Another account does not see it.
    let other = s.token("ann", INSTANCE, false);
    let v = s.graphql(
        Some(&other),
        &format!(r#"{{ asset(where: {{ id: {id:?} }}) {{ id }} }}"#),
    );
    assert_eq!(Server::gql_code(&v), "NOT_FOUND", "{v}");
}

#[test]
fn policy_checks_refuse_with_clear_errors() {
    let s = Server::start_with(&[("DEPOT_MAX_FILE_SIZE", "1000")]);
    let t = s.token("jon", INSTANCE, false);

    // Too big: 413 and the asset says why.
    let a = create_asset(&s, &t, "big.bin");
    let post = a["upload"]["requestPostData"].clone();
    let (status, body) = post_form(&s, &post, &[], bytes(5000, 1));
    assert_eq!(
        (status, code_of(&body).as_str()),
        (413, "FILE_TOO_LARGE"),
        "{body}"
    );
    let failed = asset(&s, &t, a["id"].as_str().unwrap());
    assert_eq!(failed["upload"]["status"], "ASSET_ERROR_UPLOAD", "{failed}");
    assert!(failed["upload"]["error"].as_str().unwrap().contains("1000"));
    // A later upload within the limit still completes the asset.
    let (status, body) = post_form(&s, &post, &[], bytes(900, 2));
    assert_eq!(status, 204, "{body}");
    let ok = asset(&s, &t, a["id"].as_str().unwrap());
    assert_eq!(ok["upload"]["status"], "ASSET_UPLOAD_COMPLETE");
    assert!(ok["upload"]["error"].is_null());

    // Tampered signature: 403, nothing recorded on the asset (the form is not ours).
    let a = create_asset(&s, &t, "t.bin");
    let post = a["upload"]["requestPostData"].clone();
    let mut sig = post["signature"].as_str().unwrap().to_string();
    let flipped = if sig.ends_with('0') { '1' } else { '0' };
    sig.pop();
    sig.push(flipped);
    let (status, body) = post_form(&s, &post, &[("X-Amz-Signature", &sig)], bytes(10, 3));
    assert_eq!(
        (status, code_of(&body).as_str()),
        (403, "INVALID_SIGNATURE"),
        "{body}"
    );
    // Tampered policy (a larger size range): the signature no longer matches.
    let policy = String::from_utf8(b64_decode(post["policy"].as_str().unwrap())).unwrap();
    let bigger = policy.replace(",1000]", ",1000000]");
    assert_ne!(bigger, policy);
    let (status, body) = post_form(
        &s,
        &post,
        &[("policy", &b64_std(bigger.as_bytes()))],
        bytes(10, 3),
    );
    assert_eq!(
        (status, code_of(&body).as_str()),
        (403, "INVALID_SIGNATURE"),
        "{body}"
    );
    let still = asset(&s, &t, a["id"].as_str().unwrap());
    assert_eq!(still["upload"]["status"], "ASSET_CREATE_PENDING");

    // Wrong key (another asset's): 403 POLICY_MISMATCH, recorded on the policy's asset.
    let b = create_asset(&s, &t, "b.bin");
    let other_key = b["upload"]["requestPostData"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = post_form(&s, &post, &[("key", &other_key)], bytes(10, 3));
    assert_eq!(
        (status, code_of(&body).as_str()),
        (403, "POLICY_MISMATCH"),
        "{body}"
    );
    let failed = asset(&s, &t, a["id"].as_str().unwrap());
    assert_eq!(failed["upload"]["status"], "ASSET_ERROR_UPLOAD");
    assert!(failed["upload"]["error"].as_str().unwrap().contains("key"));
    assert_eq!(
        asset(&s, &t, b["id"].as_str().unwrap())["upload"]["status"],
        "ASSET_CREATE_PENDING"
    );

    // No file field, no policy: 400.
    let r = s
        .client
        .post(s.url("/assets/upload"))
        .multipart(reqwest::blocking::multipart::Form::new().text("key", "x"))
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 400);
    let (status, _) = post_form(&s, &post, &[("policy", "bm90IGpzb24=")], bytes(10, 3));
    assert_eq!(status, 403);
}

#[test]
fn an_expired_policy_is_refused_and_recorded() {
    let s = Server::start_with(&[("DEPOT_UPLOAD_URL_TTL_SECS", "1")]);
    let t = s.token("jon", INSTANCE, false);
    let a = create_asset(&s, &t, "late.txt");
    let post = a["upload"]["requestPostData"].clone();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (status, body) = post_form(&s, &post, &[], b"late".to_vec());
    assert_eq!(
        (status, code_of(&body).as_str()),
        (410, "EXPIRED"),
        "{body}"
    );
    let failed = asset(&s, &t, a["id"].as_str().unwrap());
    assert_eq!(failed["upload"]["status"], "ASSET_ERROR_UPLOAD", "{failed}");
    assert!(failed["upload"]["error"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[test]
fn rest_twins_and_argument_errors() {
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let r = s
        .client
        .post(s.url("/assets"))
        .header("Authorization", &t)
        .header("hypi-domain", INSTANCE)
        .json(&serde_json::json!({"fileName": "notes.txt"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().unwrap();
    assert_eq!(a["upload"]["status"], "ASSET_CREATE_PENDING");
    let post = a["upload"]["requestPostData"].clone();
    let (status, body) = post_form(&s, &post, &[], b"hello notes".to_vec());
    assert_eq!(status, 204, "{body}");
    let r = s
        .client
        .get(s.url(&format!("/assets/{}", a["id"].as_str().unwrap())))
        .header("Authorization", &t)
        .header("hypi-domain", INSTANCE)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().unwrap();
    assert_eq!(done["upload"]["status"], "ASSET_UPLOAD_COMPLETE");
    assert_eq!(done["size"], 11);

    // Both or neither of fileName and uploadUrl; no token; unknown ids.
    for body in [
        serde_json::json!({}),
        serde_json::json!({"fileName": "a", "uploadUrl": "http://x/"}),
    ] {
        let r = s
            .client
            .post(s.url("/assets"))
            .header("Authorization", &t)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(json_error(r).0, 400);
    }
    let r = s
        .client
        .post(s.url("/assets"))
        .json(&serde_json::json!({"fileName": "a"}))
        .send()
        .unwrap();
    assert_eq!(json_error(r).0, 401);
    assert_eq!(json_error(s.get("/assets/nope", Some(&t))).0, 404);
    let v = s.graphql(
        Some(&t),
        r#"mutation { createAsset(data: { uploadUrl: "file:///etc/passwd" }) { id } }"#,
    );
    assert_eq!(Server::gql_code(&v), "BAD_REQUEST", "{v}");
}

#[test]
fn a_temp_file_becomes_a_permanent_asset_from_our_own_store() {
    // No allow_hosts: a network fetch of 127.0.0.1 would be refused, so success proves the
    // bytes came from our own store.
    let s = Server::start();
    let t = s.token("jon", INSTANCE, false);
    let v = s.graphql(
        Some(&t),
        "mutation { createTempFileUploadUrl { uploadUrl downloadUrl } }",
    );
    let upload = v["data"]["createTempFileUploadUrl"]["uploadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let download = v["data"]["createTempFileUploadUrl"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let img = jpeg(16, 12);
    let r = s.put_bytes(&upload, "image/jpeg", &img);
    assert_eq!(r.status(), 200);
    let blobs = s.blob_count();

    let q = format!(
        r#"mutation {{ createAsset(data: {{ uploadUrl: {download:?} }}) {{ {SELECTION} }} }}"#
    );
    let v = s.graphql(Some(&t), &q);
    let a = &v["data"]["createAsset"];
    assert_eq!(a["upload"]["status"], "ASSET_UPLOAD_COMPLETE", "{v}");
    assert_eq!(a["mimeType"], "image/jpeg");
    assert_eq!(s.blob_count(), blobs, "the blob is shared, not copied");
    let got = s
        .client
        .get(a["url"].as_str().unwrap())
        .header("Authorization", &t)
        .send()
        .unwrap();
    assert_eq!(got.bytes().unwrap().as_ref(), img.as_slice());

    // A tampered temp URL of ours is refused, not fetched.
    let tampered = download.replace("sig=", "sig=00");
    let q = format!(r#"mutation {{ createAsset(data: {{ uploadUrl: {tampered:?} }}) {{ id }} }}"#);
    assert_eq!(
        Server::gql_code(&s.graphql(Some(&t), &q)),
        "INVALID_SIGNATURE"
    );
}

fn b64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn b64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn browsers_on_an_allowed_origin_may_post_the_form() {
    let s = Server::start_with(&[("DEPOT_CORS_ALLOWED_ORIGINS", "http://app.test")]);
    let preflight = |origin: &str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/assets/upload"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .unwrap()
    };
    let ok = preflight("http://app.test");
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    assert!(ok.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let other = preflight("http://evil.test");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
