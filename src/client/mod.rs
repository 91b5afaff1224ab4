//! The command-line client: `depot upload` sends files over depot's tus 1.0 endpoint (resumable:
//! a rerun continues where an interrupted one stopped) and `depot download` fetches a File with
//! Range resume. Both talk to a server over HTTP like any other client; nothing here touches a
//! data dir.
//!
//! - [`Target`]: the server's URL, the token and instance, and the HTTP client.
//! - [`StateDir`]: small JSON files in the user's cache dir that make reruns resume.
//! - [`Bars`] / [`Progress`]: indicatif progress bars (hidden off a terminal or with `--quiet`).
//! - [`Pacer`]: `--limit-rate`, so a big transfer need not take the whole link.

pub mod download;
pub mod upload;

use crate::error::ClientError;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Results of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The tus protocol version depot speaks.
const TUS_VERSION: &str = "1.0.0";

/// Most bytes of an error answer read (depot's JSON errors are far smaller).
const ERROR_BODY_MAX: usize = 64 * 1024;

/// Where and as whom the client talks.
#[derive(Clone)]
pub struct Target {
    /// The server's base URL, without a trailing slash.
    pub base: String,
    token: Option<String>,
    /// The instance sent as `hypi-domain` (from `--instance`, else the token's claim).
    pub instance: Option<String>,
    http: reqwest::Client,
}

impl Target {
    /// A target from the command line (`--url`, `--token`, `--instance` or their env vars).
    pub fn new(base: &str, token: Option<String>, instance: Option<String>) -> Result<Self> {
        let base = base.trim().trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base)
            .map_err(|e| ClientError::Usage(format!("--url {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Usage(format!(
                "--url {base:?} is not an http or https URL"
            )));
        }
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let instance = instance
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty())
            .or_else(|| token.as_deref().and_then(instance_from_token));
        // No total timeout: a large file takes as long as it takes. A stalled connection does
        // not: every read must make progress within the read timeout.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            base,
            token,
            instance,
            http,
        })
    }

    /// A request carrying the caller's `Authorization` and `hypi-domain`.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url);
        if let Some(t) = &self.token {
            r = r.header(reqwest::header::AUTHORIZATION, t);
        }
        if let Some(i) = &self.instance {
            r = r.header("hypi-domain", i);
        }
        r
    }

    /// A full URL for a path on the server (`/file/...`) or a full URL as given.
    pub fn resolve(&self, path_or_url: &str) -> Result<String> {
        let s = path_or_url.trim();
        if s.starts_with("http://") || s.starts_with("https://") {
            url::Url::parse(s)
                .map_err(|e| ClientError::Usage(format!("{s:?} is not a URL: {e}")))?;
            return Ok(s.to_string());
        }
        if s.is_empty() {
            return Err(ClientError::Usage("no path given".into()));
        }
        let sep = if s.starts_with('/') { "" } else { "/" };
        Ok(format!("{}{sep}{s}", self.base))
    }

    /// Sends a request; a connection failure becomes [`ClientError::Network`].
    pub async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        req.send().await.map_err(|e| network(url, &e))
    }
}

/// The `instance` claim of a JWT, read without verifying it (the server verifies; this only
/// picks the `hypi-domain` to send).
fn instance_from_token(token: &str) -> Option<String> {
    use base64::Engine;
    let token = match token.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => token,
    };
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["instance"]
        .as_str()
        .filter(|i| !i.is_empty())
        .map(str::to_string)
}

/// A transport failure with its causes (reqwest's own text alone says little, e.g. "error
/// sending request").
pub(crate) fn network(url: &str, e: &reqwest::Error) -> ClientError {
    use std::error::Error as _;
    // reqwest's own line repeats the URL ("error sending request for url (...)"), which the
    // message names already: its causes say what happened.
    let mut causes = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !causes.iter().any(|c: &String| c.contains(&text)) {
            causes.push(text);
        }
        next = cause.source();
    }
    let message = if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    ClientError::Network {
        url: url.to_string(),
        message,
    }
}

/// Most bytes of a JSON answer read (a File record is a few KiB).
const JSON_BODY_MAX: usize = 1 << 20;

/// A small answer's body, at most about `cap` bytes (the rest is not read).
async fn read_capped(
    mut res: reqwest::Response,
    cap: usize,
) -> std::result::Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < cap {
        match res.chunk().await? {
            Some(c) => body.extend_from_slice(&c),
            None => break,
        }
    }
    Ok(body)
}

/// The error a non-success answer stands for: the server's JSON `error.code` and
/// `error.message`, or its status and the start of its body.
pub async fn server_error(res: reqwest::Response) -> ClientError {
    let status = res.status();
    // A body cut short still tells the status; what arrived is shown.
    let body = read_capped(res, ERROR_BODY_MAX).await.unwrap_or_default();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_string)
    };
    let reason = status.canonical_reason().unwrap_or("error");
    let code = field("code").unwrap_or_else(|| reason.to_ascii_uppercase().replace(' ', "_"));
    let message = field("message").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body);
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            reason.to_string()
        } else {
            line.chars().take(200).collect()
        }
    });
    ClientError::Server {
        status: status.as_u16(),
        code,
        message,
    }
}

/// A header as text, if present and ASCII.
fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A byte count from the command line: `8388608`, `512KiB`, `8MiB`, `1G` (K, M, G are
/// binary: 1024-based, with or without `iB`/`B`).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 8MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use KiB, MiB or GiB)"
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("{s:?}: must be more than 0 bytes")),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

/// How long a transfer's resume state is kept (depot keeps an unfinished tus upload a day by
/// default, `tus.expiry_secs`).
pub const STATE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The client's resume state: small JSON files under `$XDG_CACHE_HOME/depot/` (else
/// `~/.cache/depot/`), one per transfer, named by a hash of what identifies the transfer.
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The cache dir from the environment.
    pub fn from_env() -> Result<Self> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|h| h.join(".cache"))
            })
            .ok_or_else(|| {
                ClientError::Usage(
                    "no cache dir for resume state: set XDG_CACHE_HOME or HOME".into(),
                )
            })?;
        Ok(Self {
            root: cache.join("depot"),
        })
    }

    /// The name of a transfer's state: SHA-256 of its identifying parts.
    pub fn key(parts: &[&str]) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            // A separator no part contains keeps ("ab","c") and ("a","bc") apart.
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    /// Where `kind`'s state `key` lives (`uploads/<key>.json`).
    pub fn path(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(format!("{key}.json"))
    }

    /// The saved state; a missing or unreadable file is no state (the transfer starts over).
    pub fn load<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Option<T> {
        let bytes = std::fs::read(self.path(kind, key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Saves state atomically (a temp file renamed over the old one).
    pub fn save<T: Serialize>(&self, kind: &str, key: &str, value: &T) -> Result<()> {
        let path = self.path(kind, key);
        let io = |source| ClientError::Io {
            what: "cannot write resume state",
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec(value).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes `kind`'s states older than [`STATE_MAX_AGE`]: transfers abandoned, or of files
    /// that changed since (their key changed with them). No server keeps an unfinished upload
    /// that long by default, so nothing resumable is lost.
    pub fn sweep(&self, kind: &str) {
        let Ok(entries) = std::fs::read_dir(self.root.join(kind)) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STATE_MAX_AGE);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Forgets a transfer's state (done, or no longer valid).
    pub fn remove(&self, kind: &str, key: &str) {
        let _ = std::fs::remove_file(self.path(kind, key));
    }
}

/// The progress bars of one command: one per file, and a total when there are several.
pub struct Bars {
    multi: MultiProgress,
    total: Option<ProgressBar>,
    visible: bool,
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:20!} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Bars {
    /// Bars drawn on stderr when `visible` (the caller decides: a terminal and no `--quiet`);
    /// a total bar of `total_bytes` when `files` > 1.
    pub fn new(visible: bool, files: usize, total_bytes: u64) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = (files > 1).then(|| {
            let b = multi.add(ProgressBar::new(total_bytes));
            b.set_style(bar_style());
            b.set_prefix(format!("total ({files} files)"));
            b
        });
        Self {
            multi,
            total,
            visible,
        }
    }

    /// A bar for one transfer of `len` bytes.
    pub fn file(&self, name: &str, len: u64) -> Progress {
        let bar = match &self.total {
            Some(t) => self.multi.insert_before(t, ProgressBar::new(len)),
            None => self.multi.add(ProgressBar::new(len)),
        };
        bar.set_style(bar_style());
        bar.set_prefix(name.to_string());
        Progress {
            bar,
            total: self.total.clone(),
        }
    }

    /// A line for the user on stderr, above the bars when they are drawn.
    pub fn note(&self, line: &str) {
        if !self.visible || self.multi.println(line).is_err() {
            eprintln!("{line}");
        }
    }

    /// Finishes the total bar.
    pub fn finish(&self) {
        if let Some(t) = &self.total {
            t.finish();
        }
    }
}

/// One transfer's bar (and the total it feeds).
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    total: Option<ProgressBar>,
}

impl Progress {
    /// `n` more bytes went.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some(t) = &self.total {
            t.inc(n);
        }
    }

    /// The transfer is at `pos` (a resume, or a retry that lost bytes the server did not keep).
    pub fn set(&self, pos: u64) {
        let cur = self.bar.position();
        self.bar.set_position(pos);
        if let Some(t) = &self.total {
            if pos >= cur {
                t.inc(pos - cur);
            } else {
                t.set_position(t.position().saturating_sub(cur - pos));
            }
        }
    }

    /// The transfer's size, once known (a download learns it from the answer).
    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }

    /// The transfer is done.
    pub fn finish(&self) {
        self.bar.finish();
    }

    /// The transfer failed: the bar stays where it stopped.
    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

/// `--limit-rate`: the bytes of one transfer go no faster than `rate` per second, on average
/// since it started.
pub struct Pacer {
    rate: Option<u64>,
    start: tokio::time::Instant,
    sent: AtomicU64,
}

impl Pacer {
    /// A pacer for one transfer (`None`: unlimited).
    pub fn new(rate: Option<u64>) -> Self {
        Self {
            rate,
            start: tokio::time::Instant::now(),
            sent: AtomicU64::new(0),
        }
    }

    /// Whether a rate is set.
    pub fn limited(&self) -> bool {
        self.rate.is_some_and(|r| r > 0)
    }

    /// Counts `n` bytes and waits until sending them keeps within the rate.
    pub async fn take(&self, n: u64) {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        let sent = self.sent.fetch_add(n, Ordering::Relaxed) + n;
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("1234"), Ok(1234));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("8 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    #[test]
    fn instance_claim() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","instance":"acme.test","exp":1}"#);
        let token = format!("e30.{payload}.sig");
        assert_eq!(instance_from_token(&token).as_deref(), Some("acme.test"));
        assert_eq!(
            instance_from_token(&format!("Bearer {token}")).as_deref(),
            Some("acme.test")
        );
        assert_eq!(instance_from_token("not-a-jwt"), None);
    }

    #[test]
    fn state_keys_keep_parts_apart() {
        assert_ne!(StateDir::key(&["ab", "c"]), StateDir::key(&["a", "bc"]));
        assert_eq!(StateDir::key(&["a"]), StateDir::key(&["a"]));
    }
}
