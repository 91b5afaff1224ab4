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
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired beyond leeway",
            hs256(&key, &claims(json!({"exp": now() - 3600}))),
            "expired",
        ),
        (
            "nbf in the future",
            hs256(&key, &claims(json!({"nbf": now() + 3600}))),
            "not valid yet",
        ),
        (
            "wrong signature",
            hs256(b"another secret", &claims(json!({}))),
            "bad signature",
        ),
        (
            "exp as a string",
            hs256(&key, &claims(json!({"exp": "9999999999"}))),
            "bad claims",
        ),
        (
            "sub as a number",
            hs256(&key, &claims(json!({"sub": 42}))),
            "bad claims",
        ),
        (
            "no exp",
            hs256(&key, &json!({"sub": "alice", "instance": INSTANCE})),
            "bad claims: missing claim exp",
        ),
        (
            "no instance",
            hs256(&key, &json!({"sub": "alice", "exp": now() + 60})),
            "bad claims: missing claim instance",
        ),
        (
            "other instance",
            hs256(&key, &claims(json!({"instance": "other.test"}))),
            "token is for instance",
        ),
        (
            "HS256 signed with the RS public key",
            hs256(&rs_public, &claims(json!({}))),
            "bad signature",
        ),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]),
            "bad header",
        ),
        (
            "empty signature",
            format!("{}.{}.", parts[0], parts[1]),
            "bad signature",
        ),
        ("truncated", parts[..2].join("."), "malformed"),
        ("garbage", "garbage".to_string(), "malformed"),
    ];
    for (what, token, class) in &cases {
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
        // The message names the class of failure, and never repeats the token.
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(class), "{what}: {message}");
        for piece in token.split('.').filter(|p| p.len() > 4) {
            assert!(
                !message.contains(piece),
                "{what} echoes the token: {message}"
            );
        }
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
    for (what, token, class) in [
        (
            "wrong audience",
            rs(claims(json!({"aud": "someone-else"}))),
            "wrong audience",
        ),
        (
            "audience of the wrong type",
            rs(claims(json!({"aud": 7}))),
            "bad claims",
        ),
        (
            "wrong issuer",
            es(claims(json!({"iss": "https://evil.example"}))),
            "wrong issuer",
        ),
        (
            "issuer of the wrong type",
            es(claims(json!({"iss": ["https://idp.example"]}))),
            "bad claims",
        ),
        (
            "no audience",
            rs(
                json!({"sub": "ext-user", "instance": INSTANCE, "exp": now() + 60, "iss": "https://idp.example"}),
            ),
            "bad claims: missing claim aud",
        ),
    ] {
        let r = s.get(path, Some(&token));
        assert_eq!(r.status(), 401, "{what}");
        let v: Value = r.json().unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(class), "{what}: {message}");
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

/// `depot token` with extra arguments: (exit success, stdout, stderr).
fn token_cmd(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["token", "--instance", INSTANCE, "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn anonymous_and_star_are_not_accounts() {
    let s = Server::start();
    let admin = s.token("admin", INSTANCE, true);
    let owner = s.token("alice", INSTANCE, false);
    let f = s.upload_one(&owner, "shared.txt", b"for anonymous readers");
    let path = f["url"]["path"].as_str().unwrap().to_string();
    let id = f["hypi"]["id"].as_str().unwrap();
    let r = s
        .client
        .post(s.url("/access-rights"))
        .header("Authorization", &owner)
        .header("hypi-domain", INSTANCE)
        .json(
            &json!([{"resource": id, "resourceType": "File", "operationType": "Query",
                        "operation": "*", "permissionType": "RBP", "approved": true,
                        "members": [{"hypi": {"id": "anonymous"}}]}]),
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // The switch is off: a tokenless caller may not read it, and neither may a token that
    // claims to be "anonymous".
    assert_eq!(s.set_anonymous(&admin, false), 200);
    assert_eq!(s.get(&path, None).status(), 401);
    let key = secret(&s);
    for sub in ["anonymous", "*"] {
        let forged = hs256(
            &key,
            &json!({"sub": sub, "instance": INSTANCE, "exp": now() + 3600}),
        );
        let r = s
            .client
            .get(s.url(&path))
            .header("Authorization", &forged)
            .header("Range", "bytes=0-2")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "sub {sub}");
        let v: Value = r.json().unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("reserved"), "{message}");
        // `depot token` refuses to issue it at all.
        let (ok, stdout, stderr) = token_cmd(&s.data, &["--sub", sub]);
        assert!(!ok, "depot token --sub {sub} succeeded");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("reserved"), "{stderr}");
    }
    // Names that only resemble them are ordinary accounts.
    let (ok, stdout, _) = token_cmd(&s.data, &["--sub", "anonymous-bob"]);
    assert!(ok);
    assert_eq!(s.get(&path, Some(stdout.trim())).status(), 404);
}

/// `depot serve` with a data dir and extra arguments/env: it must exit (not serve) and say why.
fn serve_fails(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"]).arg(data).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("depot serve {args:?} kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn start_up_failures_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A busy port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, err) = serve_fails(&data, &["--listen", &addr], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("depot: cannot listen on {addr}: ")),
        "{err}"
    );
    // Not dressed up as an HTTP error (the address is left out: a random port may hold "400").
    let rest = err.replace(&addr, "");
    assert!(
        !rest.contains("BAD_REQUEST") && !rest.contains("400"),
        "{err}"
    );
    // A config file that does not parse, one that cannot be read, a bad env value.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_parts = \"many\"\n").unwrap();
    let missing = dir.path().join("missing.toml");
    for (args, env, want) in [
        (
            vec!["--config", bad.to_str().unwrap()],
            vec![],
            format!("depot: invalid config {}: ", bad.display()),
        ),
        (
            vec!["--config", missing.to_str().unwrap()],
            vec![],
            format!("depot: cannot read config {}: ", missing.display()),
        ),
        (
            vec![],
            vec![("DEPOT_MAX_PARTS", "many")],
            "depot: invalid configuration: DEPOT_MAX_PARTS must be a number".to_string(),
        ),
        (
            vec![],
            vec![("DEPOT_MAX_PARTS", "0")],
            "depot: invalid configuration: max_parts must be at least 1".to_string(),
        ),
        (
            vec![],
            vec![("DEPOT_GRAPHIQL", "perhaps")],
            "depot: invalid configuration: DEPOT_GRAPHIQL must be true or false".to_string(),
        ),
        (
            vec![],
            vec![("DEPOT_JWT_RS256_PUBLIC_KEY", "/nonexistent/key.pem")],
            "depot: cannot read public key /nonexistent/key.pem: ".to_string(),
        ),
        (
            vec![],
            vec![("DEPOT_JWT_ES256_PUBLIC_KEY", bad.to_str().unwrap())],
            format!("depot: invalid ES256 public key {}: ", bad.display()),
        ),
    ] {
        let mut args = args;
        args.extend(["--listen", "127.0.0.1:0"]);
        let (code, err) = serve_fails(&data, &args, &env);
        assert_ne!(code, 0, "{want}");
        assert!(err.contains(&want), "want {want:?} in {err}");
    }
    // A data dir held by a running server.
    let s = Server::spawn(&data, &[], &[]).unwrap();
    let (code, err) = serve_fails(&data, &["--listen", "127.0.0.1:0"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "depot: data dir {} is in use by another depot process",
            data.display()
        )),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["fsck", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop the server first"));
    s.stop();
}
