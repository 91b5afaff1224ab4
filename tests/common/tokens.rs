//! Tokens: from `depot token` (what operators run), or signed here with the data dir's secret
//! (for claims the command will not write, and where hundreds of `depot token` runs would
//! dominate a test's time).

use super::server::{Server, BIN, INSTANCE};
use super::Value;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::Path;
use std::process::Command;

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `depot token` against a data dir.
pub fn token_for(data: &Path, sub: &str, instance: &str, admin: bool, extra: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--sub", sub, "--instance", instance, "--data-dir"])
        .arg(data)
        .args(extra);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().expect("depot token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The server's HS256 secret (`<data>/jwt.secret`), created on first use.
pub fn secret(s: &Server) -> Vec<u8> {
    let path = s.data.join("jwt.secret");
    if !path.exists() {
        let _ = s.token("bootstrap", INSTANCE, false); // `depot token` writes the secret
    }
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .as_bytes()
        .to_vec()
}

/// An HS256 token over any claims (well-formed or not).
pub fn hs256(key: &[u8], claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(key), claims)
}

/// A token over any claims with any key.
pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// Valid tokens (an hour) for the test instance, signed with the server's secret.
pub fn tokens(s: &Server, accounts: &[String], admin: bool) -> Vec<String> {
    let key = secret(s);
    let exp = now() + 3600;
    accounts
        .iter()
        .map(|a| {
            let claims =
                serde_json::json!({"sub": a, "instance": INSTANCE, "admin": admin, "exp": exp});
            hs256(&key, &claims)
        })
        .collect()
}

/// URL-safe base64 without padding, as JWT segments are written.
pub fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}
