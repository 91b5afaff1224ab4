//! Tokens (good and hostile), the `depot` command line, configuration precedence.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::process::Command;

// `now`, `secret`, `hs256`, `b64` and `fixture` are in the harness (tests/common/).

#[test]
fn hostile_tokens_are_401() {
    let s = Server::start();
    let good = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&good, "f.txt", b"f");
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let key = secret(&s);
    let claims = |extra: Value| {
        let mut c = json!({"sub": "alice", "instance": INSTANCE, "exp": now() + 3600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let rs_public = std::fs::read(fixture("rs256-public.pem")).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired beyond leeway",
            hs256(&key, &claims(json!({"exp": now() - 3600}))),
        ),
        (
            "nbf in the future",
            hs256(&key, &claims(json!({"nbf": now() + 3600}))),
        ),
        (
            "wrong signature",
            hs256(b"another secret", &claims(json!({}))),
        ),
        (
            "exp as a string",
            hs256(&key, &claims(json!({"exp": "9999999999"}))),
        ),
        ("sub as a number", hs256(&key, &claims(json!({"sub": 42})))),
        (
            "no exp",
            hs256(&key, &json!({"sub": "alice", "instance": INSTANCE})),
        ),
        (
            "no instance",
            hs256(&key, &json!({"sub": "alice", "exp": now() + 60})),
        ),
        (
            "other instance",
            hs256(&key, &claims(json!({"instance": "other.test"}))),
        ),
        (
            "HS256 signed with the RS public key",
            hs256(&rs_public, &claims(json!({}))),
        ),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]),
        ),
        ("empty signature", format!("{}.{}.", parts[0], parts[1])),
        ("truncated", parts[..2].join(".")),
        ("garbage", "garbage".to_string()),
    ];
    for (what, token) in &cases {
        let r = s
            .client
            .get(s.url(&path))
            .header("Authorization", token)
            .header("hypi-domain", INSTANCE)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "UNAUTHENTICATED", "{what}");
        let (status, _) = s.upload(token, "/upload/", &[("x.txt", b"x")]);
        assert_eq!(status, 401, "upload with {what}");
    }
    // Within the leeway, expired tokens still work; Bearer and bare are both accepted.
    let recent = hs256(&key, &claims(json!({"exp": now() - 5})));
    assert_eq!(s.get(&path, Some(&recent)).status(), 200);
    assert_eq!(s.get(&path, Some(&format!("Bearer {good}"))).status(), 200);
    assert_eq!(s.get(&path, Some(&format!("bearer {good}"))).status(), 200);
    assert_eq!(s.get(&path, Some(&format!("Basic {good}"))).status(), 401);
    assert_eq!(s.get("/files", None).status(), 401);
}

#[test]
fn external_rs256_and_es256_tokens_and_configured_audience_and_issuer() {
    let s = Server::start_with(&[
        ("DEPOT_JWT_RS256_PUBLIC_KEY", &fixture("rs256-public.pem")),
        ("DEPOT_JWT_ES256_PUBLIC_KEY", &fixture("es256-public.pem")),
        ("DEPOT_JWT_ISSUER", "https://idp.example"),
        ("DEPOT_JWT_AUDIENCE", "depot"),
    ]);
    let claims = |extra: Value| {
        let mut c = json!({"sub": "ext-user", "instance": INSTANCE, "exp": now() + 3600,
                           "iss": "https://idp.example", "aud": "depot"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let rs_key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap()).unwrap();
    let es_key =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap();
    let rs = |c: Value| jsonwebtoken::encode(&Header::new(Algorithm::RS256), &c, &rs_key).unwrap();
    let es = |c: Value| jsonwebtoken::encode(&Header::new(Algorithm::ES256), &c, &es_key).unwrap();

    let f = s.upload_one(&rs(claims(json!({}))), "ext.txt", b"from an IdP");
    assert_eq!(f["hypi"]["createdBy"], "ext-user");
    let path = f["url"]["path"].as_str().unwrap();
    assert_eq!(s.get(path, Some(&es(claims(json!({}))))).status(), 200);
    // `depot token` puts the configured iss/aud in its tokens.
    let cli = token_for(&s.data, "ext-user", INSTANCE, false, &[]);
    assert_eq!(
        s.get(path, Some(&cli)).status(),
        401,
        "token command ran without the env: no iss/aud"
    );
    for (what, token) in [
        ("wrong audience", rs(claims(json!({"aud": "someone-else"})))),
        ("audience of the wrong type", rs(claims(json!({"aud": 7})))),
        (
            "wrong issuer",
            es(claims(json!({"iss": "https://evil.example"}))),
        ),
        (
            "issuer of the wrong type",
            es(claims(json!({"iss": ["https://idp.example"]}))),
        ),
        (
            "no audience",
            rs(
                json!({"sub": "ext-user", "instance": INSTANCE, "exp": now() + 60, "iss": "https://idp.example"}),
            ),
        ),
    ] {
        assert_eq!(s.get(path, Some(&token)).status(), 401, "{what}");
    }
}

#[test]
fn token_command_prints_only_a_jwt_and_the_secret_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = token_for(dir.path(), "alice", INSTANCE, true, &["--ttl", "1h"]);
    assert_eq!(t1.split('.').count(), 3);
    assert!(!t1.contains(char::is_whitespace));
    let secret_path = dir.path().join("jwt.secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let secret = std::fs::read(&secret_path).unwrap();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    assert_eq!(
        std::fs::read(&secret_path).unwrap(),
        secret,
        "reused, not regenerated"
    );
    let f = s.upload_one(&t1, "a.txt", b"a");
    s.stop();
    let s = Server::spawn(dir.path(), &[], &[]).unwrap();
    assert_eq!(
        s.get(f["url"]["path"].as_str().unwrap(), Some(&t1))
            .status(),
        200,
        "survives a restart"
    );

    let out = Command::new(BIN)
        .args(["token", "--sub", "a", "--instance", "x", "--ttl", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn a_second_server_on_the_same_data_dir_fails_fast() {
    let s = Server::start();
    let err = match Server::spawn(&s.data, &[], &[]) {
        Ok(_) => panic!("second server started"),
        Err(log) => log,
    };
    assert!(err.contains("in use by another depot process"), "{err}");
    assert!(s.alive());
}

#[test]
fn flags_beat_env_and_env_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("depot.toml");
    let file_data = dir.path().join("from-file");
    let flag_data = dir.path().join("from-flag");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = {:?}\nmax_file_size = 10\n",
            file_data.display().to_string()
        ),
    )
    .unwrap();
    // Env raises the limit the file set; the flags pick listen address and data dir.
    let s = Server::spawn(
        &flag_data,
        &[("DEPOT_MAX_FILE_SIZE", "20")],
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    assert!(flag_data.join("jwt.secret").exists());
    assert!(!file_data.exists());
    let t = s.token("alice", INSTANCE, false);
    assert_eq!(s.upload(&t, "/upload/", &[("a", &[1u8; 15])]).0, 200);
    assert_eq!(s.upload(&t, "/upload/", &[("a", &[1u8; 21])]).0, 413);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no_such_key = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn default_instance_applies_without_hypi_domain() {
    let s = Server::start_with(&[("DEPOT_DEFAULT_INSTANCE", INSTANCE)]);
    let t = s.token("alice", INSTANCE, false);
    let other = s.token("alice", "other.test", false);
    let r = s
        .client
        .post(s.url("/upload/"))
        .header("Authorization", &t)
        .multipart(upload_form(&[("x.txt", b"x")]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.get("/files", Some(&other)).status(),
        401,
        "default instance does not match the token"
    );
}
