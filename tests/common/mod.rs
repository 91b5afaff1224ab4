//! Test harness: the real `depot` binary on an ephemeral port with a fresh temp data dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use reqwest::blocking::Client;
pub use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_depot");
pub const INSTANCE: &str = "acme.test";

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    pub base: String,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<String>>,
    pub client: Client,
}

impl Server {
    /// A server with default settings.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `DEPOT_*` environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().to_path_buf();
        let mut s = Self::spawn(&data, env, &[]).expect("server starts");
        s._dir = Some(dir);
        s
    }

    /// Starts `depot serve` on `data`; Err(log) if it exits before listening.
    pub fn spawn(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<Self, String> {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .env("DEPOT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn depot");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let _ = tx.send(line[i + "listening on http://".len()..].trim().to_string());
                }
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(log.lock().unwrap().clone());
            }
        };
        Ok(Self {
            child,
            base: format!("http://{addr}"),
            addr,
            data: data.to_path_buf(),
            _dir: None,
            log,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A token from `depot token` for this data dir.
    pub fn token(&self, sub: &str, instance: &str, admin: bool) -> String {
        token_for(&self.data, sub, instance, admin, &[])
    }

    /// Uploads `(name, bytes)` parts to `dir` (e.g. `/upload/`), returns (status, body).
    pub fn upload(&self, token: &str, dir: &str, files: &[(&str, &[u8])]) -> (u16, Value) {
        let mut form = reqwest::blocking::multipart::Form::new();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let part = reqwest::blocking::multipart::Part::bytes(bytes.to_vec())
                .file_name(name.to_string());
            form = form.part(i.to_string(), part);
        }
        let res = self
            .client
            .post(self.url(dir))
            .header("Accept", "application/json")
            .header("Authorization", token)
            .header("hypi-domain", INSTANCE)
            .multipart(form)
            .send()
            .expect("upload request");
        let status = res.status().as_u16();
        (status, res.json().unwrap_or(Value::Null))
    }

    /// Uploads one file and returns its File record.
    pub fn upload_one(&self, token: &str, name: &str, bytes: &[u8]) -> Value {
        let (status, body) = self.upload(token, "/upload/", &[(name, bytes)]);
        assert_eq!(status, 200, "{body}");
        body.as_object().unwrap().values().next().unwrap().clone()
    }

    /// A GraphQL request (with the test instance's domain when a token is given); expects 200.
    pub fn graphql(&self, token: Option<&str>, query: &str) -> Value {
        let mut req = self
            .client
            .post(self.url("/graphql"))
            .json(&serde_json::json!({"query": query}));
        if let Some(t) = token {
            req = req
                .header("Authorization", t)
                .header("hypi-domain", INSTANCE);
        }
        let res = req.send().expect("POST /graphql");
        assert_eq!(res.status(), 200);
        res.json().expect("GraphQL answers JSON")
    }

    /// Turns the test instance's `anonymousRequests` switch; answers the status.
    pub fn set_anonymous(&self, token: &str, on: bool) -> u16 {
        self.client
            .put(self.url(&format!("/instances/{INSTANCE}")))
            .header("Authorization", token)
            .json(&serde_json::json!({"anonymousRequests": on}))
            .send()
            .expect("PUT /instances")
            .status()
            .as_u16()
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        req.send().expect("GET")
    }

    /// Temp files currently in the store's temp dir.
    pub fn temp_files(&self) -> usize {
        std::fs::read_dir(self.data.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Blob files in the content-addressed store.
    pub fn blob_count(&self) -> usize {
        fn walk(p: &Path) -> usize {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        }
        walk(&self.data.join("blobs"))
    }

    /// Waits (up to 10 s) until `cond` holds; cleanup after a disconnect is asynchronous.
    pub fn eventually(&self, what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                Instant::now() < end,
                "timed out waiting for: {what}\nlog:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends raw bytes and returns the raw response (status, text). Used where a client library
    /// would normalise the request (`..` in paths, broken bodies).
    pub fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    pub fn alive(&self) -> bool {
        self.get("/health", None).status() == 200
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A multipart body with one file part, for raw requests.
pub fn multipart_body(
    boundary: &str,
    field: &str,
    filename: &str,
    bytes: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(bytes);
    if close {
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    }
    b
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A 3x2 PNG.
pub fn png_3x2() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend_from_slice(&3u32.to_be_bytes());
    v.extend_from_slice(&2u32.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&[0u8; 64]);
    v
}
