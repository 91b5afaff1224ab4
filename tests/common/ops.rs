//! Operating the server from outside: its pid and signals, its Prometheus exposition, a
//! trickling upload on a raw connection, and a start with JSON logs.

use super::server::{Server, BIN, INSTANCE};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pid of the `depot serve` process on `data` (each test has its own data dir).
pub fn pid_on(data: &Path) -> u32 {
    let needle = data.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.contains("serve") && cmd.contains(needle.as_str())).then_some(pid)
        })
        .expect("server process")
}

/// Sends `signal` (e.g. "TERM") to `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Whether `pid` has exited (gone, or a zombie its parent has not reaped yet).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(st) => st
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

/// Waits (up to `limit`) for `pid` to exit; panics with `what` otherwise.
pub fn wait_exit(pid: u32, limit: Duration, what: &str) {
    let end = Instant::now() + limit;
    while !exited(pid) {
        assert!(Instant::now() < end, "{what}: the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prometheus text exposition as `series -> value`, where a series is the metric name with its
/// labels as written (`depot_http_requests_total{method="GET",route="/health",status="200"}`).
/// Panics on a line that is not a comment, a blank or `series value`.
pub fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not an exposition line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {line:?}"));
        out.insert(series.to_string(), value);
    }
    out
}

/// The sum of every series of `name` whose labels include all of `labels` (`k="v"` each).
pub fn metric_sum(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

impl Server {
    /// `GET /metrics` with `Bearer token`, parsed; panics unless it answers 200 text.
    pub fn metrics(&self, token: &str) -> HashMap<String, f64> {
        let r = self
            .client
            .get(self.url("/metrics"))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET /metrics");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{ct}");
        parse_exposition(&r.text().unwrap())
    }

    /// Whether the log has a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().contains(needle)
    }
}

/// An upload on a raw connection whose body is sent in pieces: `head` and the first bytes now,
/// the rest when the test says.
pub struct Trickle {
    pub conn: TcpStream,
    rest: Vec<u8>,
}

impl Trickle {
    /// Opens `POST /upload/` of `data` as file `name`, sending the head and the first
    /// `first` bytes of the file.
    pub fn open(s: &Server, token: &str, name: &str, data: &[u8], first: usize) -> Self {
        let boundary = "trickletrickleboundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let head = format!(
            "POST /upload/ HTTP/1.1\r\nHost: depot\r\nAuthorization: {token}\r\nhypi-domain: {INSTANCE}\r\nAccept: application/json\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let split = (body.len() - data.len() - boundary.len() - 8 + first).min(body.len());
        let mut conn = TcpStream::connect(&s.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body[..split]).unwrap();
        Self {
            conn,
            rest: body[split..].to_vec(),
        }
    }

    /// Sends the rest in `pieces` writes `pause` apart, then reads the whole answer.
    pub fn finish(mut self, pieces: usize, pause: Duration) -> std::io::Result<String> {
        let size = self.rest.len().div_ceil(pieces.max(1)).max(1);
        for chunk in self.rest.chunks(size) {
            std::thread::sleep(pause);
            self.conn.write_all(chunk)?;
        }
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut self.conn, &mut out)?;
        Ok(String::from_utf8_lossy(&out).to_string())
    }
}

/// `depot serve` with JSON logs on `data`: the child, its address and its stderr lines so far
/// (the harness's `Server` reads the address from a text log line).
pub fn spawn_json_logs(
    data: &Path,
    env: &[(&str, &str)],
) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("DEPOT_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn depot");
    let stderr = child.stderr.take().expect("piped stderr");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let msg = v["fields"]["message"].as_str().unwrap_or_default();
                if let Some(addr) = msg.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.to_string());
                }
            }
            lines2.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no JSON 'listening on' line: {:?}", lines.lock().unwrap()));
    (child, addr, lines)
}
