//! The real `depot` binary on an ephemeral port with a fresh temp data dir, and its command line.

use super::{blobs, tokens, Value};
use reqwest::blocking::Client;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_depot");
pub const INSTANCE: &str = "acme.test";

/// A blocking HTTP client with the harness's 60 s timeout.
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// Small blobs are files in the harness's servers and commands unless a test sets this itself:
/// the suite's checks of what is on disk (blob files counted, damaged, removed) read files.
/// `tests/inline_blobs.rs` runs with inline blobs, the default of a real deployment.
pub const INLINE_ENV: &str = "DEPOT_STORE_INLINE_MAX";

/// Runs `depot <args> --data-dir <data>`: (exit success, stdout + stderr).
pub fn depot(args: &[&str], data: &Path) -> (bool, String) {
    depot_with(&[], args, data)
}

/// [`depot`] with extra environment (a backend's `DEPOT_*` settings).
pub fn depot_with(env: &[(String, String)], args: &[&str], data: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env(INLINE_ENV, "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run depot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

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
            .env(INLINE_ENV, "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn depot");
        let stderr = child.stderr.take().expect("piped stderr");
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
            client: client(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A token from `depot token` for this data dir.
    pub fn token(&self, sub: &str, instance: &str, admin: bool) -> String {
        tokens::token_for(&self.data, sub, instance, admin, &[])
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

    /// `POST /access-rights` with a JSON body (one AccessRight or an array).
    pub fn post_rights(&self, token: &str, body: &Value) -> reqwest::blocking::Response {
        self.client
            .post(self.url("/access-rights"))
            .header("Authorization", token)
            .header("hypi-domain", INSTANCE)
            .json(body)
            .send()
            .unwrap()
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
        blobs::temp_files(&self.data)
    }

    /// Blob files in the content-addressed store.
    pub fn blob_count(&self) -> usize {
        blobs::blob_files(&self.data).len()
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

/// The caller's File records (the first 1000) from `GET /files`.
pub fn listing(s: &Server, token: &str) -> Vec<Value> {
    let v: Value = s.get("/files?first=1000", Some(token)).json().unwrap();
    v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// A JSON error answer: status, `error.code`, `error.message`.
pub fn json_error(r: reqwest::blocking::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().expect("a JSON error body");
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
