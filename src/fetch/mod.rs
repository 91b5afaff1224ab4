//! Outbound HTTP that a caller can point at a URL (remote URL ingest, webhooks) without reaching
//! what only the server can reach (server-side request forgery).
//!
//! Every hop (the first request and each redirect) is vetted the same way: http or https only;
//! the host is resolved once here and every address must be public unicast ([`addr`]); the
//! connection goes to exactly those vetted addresses (reqwest's resolver hook answers only for
//! the vetted host, so there is no second DNS lookup an attacker could answer differently).
//! `remote_fetch.allow_hosts` lets an operator name internal hosts (`host` or `host:port`) that
//! may be fetched anyway. Redirects are followed here, at most `max_redirects`; the body is read
//! chunk by chunk with a size cap, a total deadline and a stall timeout. No proxy from the
//! environment, no decompression (the cap counts the bytes that arrive).

pub mod addr;

use crate::config::RemoteFetchConfig;
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a fetch failed. [`FetchError::code`] is a stable reason for records that keep it (an
/// asset's `upload.error`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not a URL, or not an http/https one.
    #[error("{0}")]
    BadUrl(String),
    /// The target (or a redirect's) is not allowed: a non-public address not in `allow_hosts`.
    #[error("{0}")]
    Refused(String),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    /// The final answer was not a success.
    #[error("the remote server answered {0}")]
    Status(u16),
    #[error("the remote body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Timeout(String),
    /// DNS, connection or transfer failures.
    #[error("{0}")]
    Network(String),
}

impl FetchError {
    /// A stable code for the failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "REMOTE_URL_INVALID",
            Self::Refused(_) => "REMOTE_URL_REFUSED",
            Self::TooManyRedirects(_) => "REMOTE_TOO_MANY_REDIRECTS",
            Self::Status(_) => "REMOTE_STATUS",
            Self::TooLarge(_) => "FILE_TOO_LARGE",
            Self::Timeout(_) => "REMOTE_TIMEOUT",
            Self::Network(_) => "REMOTE_UNREACHABLE",
        }
    }
}

impl From<FetchError> for crate::error::Error {
    fn from(e: FetchError) -> Self {
        use crate::error::Error;
        match e {
            FetchError::TooLarge(_) => Error::FileTooLarge(e.to_string()),
            FetchError::Timeout(_) => Error::Timeout(e.to_string()),
            e => Error::BadRequest(format!("remote fetch failed: {e}")),
        }
    }
}

/// One `remote_fetch.allow_hosts` entry: a host name or IP, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// Lower case, without a trailing dot; an IPv6 address without brackets.
    host: String,
    port: Option<u16>,
}

impl HostRule {
    /// Parses `host`, `host:port`, `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:8080`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let bad = || format!("{raw:?} is not a host or host:port");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (h, port)
        } else if s.parse::<std::net::Ipv6Addr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad()))
            .transpose()?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let valid_name = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !valid_name && host.parse::<IpAddr>().is_err() {
            return Err(bad());
        }
        // One spelling per address, as the URL parser gives it.
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host,
        };
        Ok(Self { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port)
    }
}

/// Bounds of one fetch.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body, in bytes.
    pub max_bytes: u64,
    /// The whole fetch: every hop and the body.
    pub total: Duration,
    /// Longest wait for a connection, an answer or the next bytes.
    pub stall: Duration,
    pub max_redirects: usize,
}

/// Fetches URLs under the rules above.
#[derive(Debug, Clone)]
pub struct Fetcher {
    allow: Arc<Vec<HostRule>>,
    limits: Limits,
    /// DNS lookups run on the blocking pool (the system resolver blocks): at most this many
    /// at once, each abandoned after `dns_timeout`, so hostile names cannot fill the pool.
    dns: Arc<tokio::sync::Semaphore>,
    dns_timeout: Duration,
}

/// DNS lookups in flight at once unless configured.
const DNS_LOOKUPS: usize = 8;
/// Longest DNS lookup unless configured.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to a [`Fetcher::post`]: any status, and the first bytes of its body.
#[derive(Debug)]
pub struct Posted {
    pub status: u16,
    pub body: Bytes,
}

/// A successful answer whose body is still to be read.
#[derive(Debug)]
pub struct Fetched {
    /// The URL that answered (after redirects).
    pub url: Url,
    pub content_type: Option<String>,
    /// The length the server announced, already checked against the cap.
    pub content_length: Option<u64>,
    response: reqwest::Response,
    received: u64,
    deadline: Instant,
    limits: Limits,
}

impl Fetched {
    /// The next piece of the body; `None` at its end. Fails once more than `max_bytes` arrived,
    /// when no byte comes for the stall timeout, or past the fetch's deadline.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let wait = wait_for(self.deadline, self.limits.stall)?;
        let chunk = tokio::time::timeout(wait, self.response.chunk())
            .await
            .map_err(|_| timed_out(self.deadline, self.limits.stall, "the body"))?
            .map_err(|e| FetchError::Network(format!("reading the body failed: {e}")))?;
        if let Some(c) = &chunk {
            self.received += c.len() as u64;
            if self.received > self.limits.max_bytes {
                return Err(FetchError::TooLarge(self.limits.max_bytes));
            }
        }
        Ok(chunk)
    }

    /// Bytes of the body read so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// How long the next wait may last: the stall timeout, cut at the deadline.
fn wait_for(deadline: Instant, stall: Duration) -> Result<Duration, FetchError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(FetchError::Timeout("the fetch took too long".into()));
    }
    Ok(left.min(stall))
}

fn timed_out(deadline: Instant, stall: Duration, what: &str) -> FetchError {
    if Instant::now() >= deadline {
        FetchError::Timeout("the fetch took too long".into())
    } else {
        FetchError::Timeout(format!(
            "{what} stalled for more than {} s",
            stall.as_secs_f64()
        ))
    }
}

/// Resolves only the host that was vetted, to the vetted addresses.
struct Pinned {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl Resolve for Pinned {
    fn resolve(&self, name: Name) -> Resolving {
        let answer = if name.as_str().eq_ignore_ascii_case(&self.host) {
            let addrs: Addrs = Box::new(self.addrs.clone().into_iter());
            Ok(addrs)
        } else {
            Err(format!("{} was not vetted", name.as_str()).into())
        };
        Box::pin(std::future::ready(answer))
    }
}

impl Fetcher {
    /// A fetcher with the configured exceptions and bounds.
    pub fn from_config(cfg: &RemoteFetchConfig) -> Result<Self, String> {
        let allow = cfg
            .allow_hosts
            .iter()
            .map(|h| HostRule::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(
            allow,
            Limits {
                max_bytes: cfg.max_bytes,
                total: Duration::from_secs(cfg.timeout_secs),
                stall: Duration::from_secs(cfg.stall_secs),
                max_redirects: cfg.max_redirects,
            },
        )
        .with_dns(
            cfg.max_concurrent.max(1),
            Duration::from_secs(cfg.dns_timeout_secs.max(1)),
        ))
    }

    pub fn new(allow: Vec<HostRule>, limits: Limits) -> Self {
        Self {
            allow: Arc::new(allow),
            limits,
            dns: Arc::new(tokio::sync::Semaphore::new(DNS_LOOKUPS)),
            dns_timeout: DNS_TIMEOUT,
        }
    }

    /// At most `lookups` DNS lookups at once, each abandoned after `timeout`.
    pub fn with_dns(mut self, lookups: usize, timeout: Duration) -> Self {
        self.dns = Arc::new(tokio::sync::Semaphore::new(lookups));
        self.dns_timeout = timeout;
        self
    }

    /// Resolves `name` on the blocking pool within the DNS bounds. A lookup that times out
    /// keeps its permit until the resolver thread returns, so stuck lookups cannot pile up.
    async fn resolve(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
        let permit = tokio::time::timeout(self.dns_timeout, self.dns.clone().acquire_owned())
            .await
            .map_err(|_| FetchError::Timeout(format!("too many DNS lookups; {name} not resolved")))?
            .map_err(|e| FetchError::Network(format!("DNS lane: {e}")))?;
        let host = name.to_string();
        let lookup = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map(|a| a.collect::<Vec<_>>())
        });
        tokio::time::timeout(self.dns_timeout, lookup)
            .await
            .map_err(|_| {
                FetchError::Timeout(format!(
                    "resolving {name} took more than {} s",
                    self.dns_timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| FetchError::Network(format!("DNS task: {e}")))?
            .map_err(|e| FetchError::Network(format!("cannot resolve {name}: {e}")))
    }

    /// `GET url`, following redirects; answers once a success status and headers arrived.
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let deadline = Instant::now() + self.limits.total;
        let mut url =
            Url::parse(url).map_err(|e| FetchError::BadUrl(format!("invalid URL {url:?}: {e}")))?;
        let mut redirects = 0;
        loop {
            let wait = wait_for(deadline, self.limits.stall)?;
            let addrs = tokio::time::timeout(wait, self.vet(&url))
                .await
                .map_err(|_| timed_out(deadline, self.limits.stall, "resolving the host"))??;
            let client = self.client(&url, addrs)?;
            let wait = wait_for(deadline, self.limits.stall)?;
            let request = client
                .get(url.clone())
                .header(reqwest::header::ACCEPT_ENCODING, "identity")
                .send();
            let response = tokio::time::timeout(wait, request)
                .await
                .map_err(|_| timed_out(deadline, self.limits.stall, "the answer"))?
                .map_err(|e| {
                    FetchError::Network(format!("fetching {} failed: {e}", redact(&url)))
                })?;
            let status = response.status();
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::Status(status.as_u16()))?;
                let next = url
                    .join(location)
                    .map_err(|e| FetchError::BadUrl(format!("invalid redirect: {e}")))?;
                redirects += 1;
                if redirects > self.limits.max_redirects {
                    return Err(FetchError::TooManyRedirects(self.limits.max_redirects));
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            let content_length = response.content_length();
            if content_length.is_some_and(|n| n > self.limits.max_bytes) {
                return Err(FetchError::TooLarge(self.limits.max_bytes));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Fetched {
                url,
                content_type,
                content_length,
                response,
                received: 0,
                deadline,
                limits: self.limits.clone(),
            });
        }
    }

    /// The same fetcher with other bounds (webhooks: short timeouts, a few KiB of answer).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks that `url` is one this fetcher may reach (scheme, host, addresses after DNS),
    /// without connecting.
    pub async fn check(&self, url: &str) -> Result<(), FetchError> {
        let url =
            Url::parse(url).map_err(|e| FetchError::BadUrl(format!("invalid URL {url:?}: {e}")))?;
        tokio::time::timeout(self.limits.total, self.vet(&url))
            .await
            .map_err(|_| FetchError::Timeout("resolving the host took too long".into()))??;
        Ok(())
    }

    /// `POST url` with `body` and `headers` (webhook deliveries). Redirects are not followed (a
    /// receiver answers where it was configured); the answer's status comes back with at most
    /// `max_bytes` of its body, the rest unread, all within the total deadline.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Posted, FetchError> {
        let deadline = Instant::now() + self.limits.total;
        let url =
            Url::parse(url).map_err(|e| FetchError::BadUrl(format!("invalid URL {url:?}: {e}")))?;
        let wait = wait_for(deadline, self.limits.stall)?;
        let addrs = tokio::time::timeout(wait, self.vet(&url))
            .await
            .map_err(|_| timed_out(deadline, self.limits.stall, "resolving the host"))??;
        let client = self.client(&url, addrs)?;
        let mut request = client
            .post(url.clone())
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let wait = wait_for(deadline, self.limits.stall)?;
        let response = tokio::time::timeout(wait, request.body(body).send())
            .await
            .map_err(|_| timed_out(deadline, self.limits.stall, "the answer"))?
            .map_err(|e| FetchError::Network(format!("posting to {} failed: {e}", redact(&url))))?;
        let status = response.status().as_u16();
        let mut fetched = Fetched {
            url,
            content_type: None,
            content_length: response.content_length(),
            response,
            received: 0,
            deadline,
            limits: self.limits.clone(),
        };
        let mut head = Vec::new();
        // The answer's first bytes are kept for the log; a longer one is cut, not an error.
        while let Ok(Some(c)) = fetched.chunk().await {
            let room = (self.limits.max_bytes as usize).saturating_sub(head.len());
            head.extend_from_slice(&c[..c.len().min(room)]);
            if head.len() >= self.limits.max_bytes as usize {
                break;
            }
        }
        Ok(Posted {
            status,
            body: Bytes::from(head),
        })
    }

    /// The addresses `url` may be fetched from, or why not.
    async fn vet(&self, url: &Url) -> Result<Vec<SocketAddr>, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(format!(
                "only http and https URLs can be fetched, not {}:",
                url.scheme()
            )));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::BadUrl("the URL has no port".into()))?;
        let (name, literal) = match url.host() {
            Some(url::Host::Domain(d)) => (d.trim_end_matches('.').to_ascii_lowercase(), None),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err(FetchError::BadUrl("the URL has no host".into())),
        };
        let allowed = self.allow.iter().any(|r| r.matches(&name, port));
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => self.resolve(&name, port).await?,
        };
        if addrs.is_empty() {
            return Err(FetchError::Network(format!("{name} has no address")));
        }
        if !allowed {
            // One non-public address refuses the host: no falling back to it on a retry.
            for a in &addrs {
                if let Some(why) = addr::non_public(a.ip()) {
                    let via = if literal.is_some() {
                        String::new()
                    } else {
                        format!("{name} resolves to ")
                    };
                    return Err(FetchError::Refused(format!(
                        "{via}{} is {why}; not fetched (remote_fetch.allow_hosts can allow it)",
                        a.ip()
                    )));
                }
            }
        }
        Ok(addrs)
    }

    /// A client for one hop: no pooling across hops, no proxy, no automatic redirects, and a
    /// resolver that only knows the vetted host.
    fn client(&self, url: &Url, addrs: Vec<SocketAddr>) -> Result<reqwest::Client, FetchError> {
        let host = url.host_str().unwrap_or_default().to_string();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Pinned { host, addrs }))
            .connect_timeout(self.limits.stall)
            .user_agent(concat!("depot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Network(format!("HTTP client: {e}")))
    }
}

/// The URL without user info or query, for messages.
fn redact(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules() {
        let r = |s: &str| HostRule::parse(s).unwrap();
        assert_eq!(r("Files.Internal.").host, "files.internal");
        assert!(r("files.internal").matches("files.internal", 443));
        assert!(r("127.0.0.1:8080").matches("127.0.0.1", 8080));
        assert!(!r("127.0.0.1:8080").matches("127.0.0.1", 8081));
        assert!(r("[::1]:9000").matches("::1", 9000));
        assert!(r("::1").matches("::1", 1));
        assert!(r("[0:0::1]").matches("::1", 1));
        for bad in [
            "",
            "a b",
            "host:port",
            "[::1",
            "[::1]x",
            "http://x",
            "a/b",
            "h:99999",
        ] {
            assert!(HostRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// DNS lookups wait for one of `max_concurrent` lanes at most `dns_timeout`: a resolver
    /// that is slow for everyone cannot pile up blocked threads.
    #[tokio::test]
    async fn dns_lookups_are_bounded_and_timed() {
        let limits = Limits {
            max_bytes: 10,
            total: Duration::from_secs(60),
            stall: Duration::from_secs(60),
            max_redirects: 0,
        };
        let f = Fetcher::new(Vec::new(), limits).with_dns(1, Duration::from_millis(200));
        let held = f.dns.clone().acquire_owned().await.unwrap();
        let err = f.get("http://depot-test.invalid/x").await.unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
        assert!(err.to_string().contains("too many DNS lookups"), "{err}");
        drop(held);
        // With the lane free the lookup runs (and fails: the name does not exist).
        let err = f.get("http://depot-test.invalid/x").await.unwrap_err();
        assert!(!err.to_string().contains("too many DNS lookups"), "{err}");
    }
}
