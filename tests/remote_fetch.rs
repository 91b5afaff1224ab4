//! The SSRF-safe fetcher (src/fetch) against real servers on 127.0.0.1: allowed only when
//! `allow_hosts` names them, non-public targets refused (literal, mapped, by DNS, behind a
//! redirect), schemes other than http/https refused, stalls and oversized bodies cut.
//! It has no HTTP route yet (remote URL ingest will use it), so the module is called directly.

use depot::fetch::{FetchError, Fetched, Fetcher, HostRule, Limits};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const CAP: u64 = 1000;

/// A tiny HTTP/1.1 server whose answer depends on the request path.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            std::thread::spawn(move || answer(conn, port));
        }
    });
    port
}

fn answer(mut c: TcpStream, port: u16) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let reply = |c: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
        let _ = c.write_all(
            format!("HTTP/1.1 {status}\r\nConnection: close\r\n{headers}\r\n").as_bytes(),
        );
        let _ = c.write_all(body);
    };
    match path.as_str() {
        "/ok" => reply(
            &mut c,
            "200 OK",
            "Content-Type: text/plain\r\nContent-Length: 11\r\n",
            b"hello world",
        ),
        "/host" => {
            let body = head.to_ascii_lowercase();
            let host = body
                .lines()
                .find(|l| l.starts_with("host:"))
                .unwrap_or("")
                .to_string();
            reply(
                &mut c,
                "200 OK",
                &format!("Content-Length: {}\r\n", host.len()),
                host.as_bytes(),
            )
        }
        "/hop" => reply(
            &mut c,
            "302 Found",
            "Location: /ok\r\nContent-Length: 0\r\n",
            b"",
        ),
        "/loop" => reply(
            &mut c,
            "302 Found",
            "Location: /loop\r\nContent-Length: 0\r\n",
            b"",
        ),
        "/missing" => reply(&mut c, "404 Not Found", "Content-Length: 0\r\n", b""),
        "/big-declared" => reply(
            &mut c,
            "200 OK",
            &format!("Content-Length: {}\r\n", CAP + 1),
            &vec![b'x'; CAP as usize + 1],
        ),
        "/big-undeclared" => reply(&mut c, "200 OK", "", &vec![b'x'; 64 * 1024]),
        "/big-chunked" => {
            let mut body = Vec::new();
            for _ in 0..20 {
                body.extend_from_slice(b"100\r\n");
                body.extend_from_slice(&[b'y'; 256]);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            reply(&mut c, "200 OK", "Transfer-Encoding: chunked\r\n", &body)
        }
        "/stall-head" => std::thread::sleep(Duration::from_secs(8)),
        "/stall-body" => {
            reply(&mut c, "200 OK", "Content-Length: 100\r\n", b"0123456789");
            let _ = c.flush();
            std::thread::sleep(Duration::from_secs(8));
        }
        p if p.starts_with("/to/") => {
            // /to/<port>/<path>: a redirect to another port on loopback.
            let rest = &p[4..];
            let (to_port, to_path) = rest.split_once('/').unwrap_or((rest, ""));
            reply(
                &mut c,
                "307 Temporary Redirect",
                &format!("Location: http://127.0.0.1:{to_port}/{to_path}\r\nContent-Length: 0\r\n"),
                b"",
            )
        }
        p if p.starts_with("/scheme/") => reply(
            &mut c,
            "302 Found",
            &format!(
                "Location: {}\r\nContent-Length: 0\r\n",
                &p[8..].replacen("__", "://", 1)
            ),
            b"",
        ),
        _ => {
            let _ = port;
            reply(&mut c, "404 Not Found", "Content-Length: 0\r\n", b"")
        }
    }
}

fn fetcher(allow: &[String]) -> Fetcher {
    Fetcher::new(
        allow.iter().map(|h| HostRule::parse(h).unwrap()).collect(),
        Limits {
            max_bytes: CAP,
            total: Duration::from_secs(20),
            stall: Duration::from_secs(1),
            max_redirects: 3,
        },
    )
}

async fn body(f: &mut Fetched) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    while let Some(c) = f.chunk().await? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

async fn fetch_all(f: &Fetcher, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut res = f.get(url).await?;
    body(&mut res).await
}

fn refused(r: Result<impl std::fmt::Debug, FetchError>, what: &str) -> String {
    match r {
        Err(e @ FetchError::Refused(_)) => e.to_string(),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn loopback_is_fetched_only_when_allowed() {
    let port = serve();
    let url = format!("http://127.0.0.1:{port}/ok");
    let allowed = fetcher(&[format!("127.0.0.1:{port}")]);
    let mut res = allowed.get(&url).await.unwrap();
    assert_eq!(res.content_type.as_deref(), Some("text/plain"));
    assert_eq!(res.content_length, Some(11));
    assert_eq!(body(&mut res).await.unwrap(), b"hello world");
    // A host-only rule allows every port; redirects within the allowed host are followed.
    let host_only = fetcher(&["127.0.0.1".into()]);
    assert_eq!(
        fetch_all(&host_only, &format!("http://127.0.0.1:{port}/hop"))
            .await
            .unwrap(),
        b"hello world"
    );
    // The Host header is the URL's, the connection goes to the vetted address.
    let by_name = fetcher(&[format!("localhost:{port}")]);
    let host = fetch_all(&by_name, &format!("http://localhost:{port}/host"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(host).unwrap(),
        format!("host: localhost:{port}")
    );

    // Without the rule: refused, by literal and by name, before any connection.
    let msg = refused(
        fetcher(&[]).get(&url).await,
        "127.0.0.1 without allow_hosts",
    );
    assert!(msg.contains("loopback"), "{msg}");
    let msg = refused(
        fetcher(&[])
            .get(&format!("http://localhost:{port}/ok"))
            .await,
        "localhost",
    );
    assert!(msg.contains("localhost resolves to"), "{msg}");
    // A rule for another port does not cover this one.
    refused(
        fetcher(&[format!("127.0.0.1:{}", port.wrapping_add(1))])
            .get(&url)
            .await,
        "other port",
    );
}

#[tokio::test]
async fn non_public_targets_are_refused() {
    let f = fetcher(&[]);
    for url in [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
        "http://192.168.0.1:8080/",
        "http://172.16.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://2130706433/",
        "http://0x7f.1/",
        "https://127.0.0.1/",
    ] {
        refused(f.get(url).await, url);
    }
}

#[tokio::test]
async fn only_http_and_https_are_fetched() {
    let f = fetcher(&["127.0.0.1".into()]);
    for url in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:70/",
        "data:text/plain,hello",
        "javascript:alert(1)",
        "not a url",
        "http://",
    ] {
        match f.get(url).await {
            Err(FetchError::BadUrl(_)) => {}
            other => panic!("{url}: {other:?}"),
        }
    }
    // Nor after a redirect.
    let port = serve();
    match f
        .get(&format!("http://127.0.0.1:{port}/scheme/file__/etc/passwd"))
        .await
    {
        Err(FetchError::BadUrl(m)) => assert!(m.contains("file"), "{m}"),
        other => panic!("redirect to file: {other:?}"),
    }
}

#[tokio::test]
async fn every_redirect_hop_is_vetted() {
    let allowed = serve();
    let internal = serve();
    let f = fetcher(&[format!("127.0.0.1:{allowed}")]);
    // The allowed host redirects to a loopback port that is not allowed: refused.
    let msg = refused(
        f.get(&format!("http://127.0.0.1:{allowed}/to/{internal}/ok"))
            .await,
        "redirect to loopback",
    );
    assert!(msg.contains("loopback"), "{msg}");
    // Allowing the second port lets the same redirect through.
    let both = fetcher(&[
        format!("127.0.0.1:{allowed}"),
        format!("127.0.0.1:{internal}"),
    ]);
    assert_eq!(
        fetch_all(
            &both,
            &format!("http://127.0.0.1:{allowed}/to/{internal}/ok")
        )
        .await
        .unwrap(),
        b"hello world"
    );
    // A redirect to the cloud metadata address.
    let port = serve();
    let f = fetcher(&[format!("127.0.0.1:{port}")]);
    refused(
        f.get(&format!(
            "http://127.0.0.1:{port}/scheme/http__169.254.169.254/latest"
        ))
        .await,
        "redirect to 169.254.169.254",
    );
    // Redirect loops end at the limit.
    match f.get(&format!("http://127.0.0.1:{port}/loop")).await {
        Err(FetchError::TooManyRedirects(3)) => {}
        other => panic!("loop: {other:?}"),
    }
    match f.get(&format!("http://127.0.0.1:{port}/missing")).await {
        Err(FetchError::Status(404)) => {}
        other => panic!("404: {other:?}"),
    }
}

#[tokio::test]
async fn stalls_are_cut() {
    let port = serve();
    let f = fetcher(&[format!("127.0.0.1:{port}")]);
    match f.get(&format!("http://127.0.0.1:{port}/stall-head")).await {
        Err(e @ FetchError::Timeout(_)) => assert_eq!(e.code(), "REMOTE_TIMEOUT"),
        other => panic!("no answer: {other:?}"),
    }
    let mut res = f
        .get(&format!("http://127.0.0.1:{port}/stall-body"))
        .await
        .unwrap();
    assert_eq!(
        res.chunk().await.unwrap().as_deref(),
        Some(&b"0123456789"[..])
    );
    match body(&mut res).await {
        Err(FetchError::Timeout(m)) => assert!(m.contains("stalled"), "{m}"),
        other => panic!("stalled body: {other:?}"),
    }
    // The total deadline holds too.
    let short = Fetcher::new(
        vec![HostRule::parse(&format!("127.0.0.1:{port}")).unwrap()],
        Limits {
            max_bytes: CAP,
            total: Duration::from_secs(1),
            stall: Duration::from_secs(30),
            max_redirects: 3,
        },
    );
    match short
        .get(&format!("http://127.0.0.1:{port}/stall-head"))
        .await
    {
        Err(FetchError::Timeout(m)) => assert!(m.contains("too long"), "{m}"),
        other => panic!("deadline: {other:?}"),
    }
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let port = serve();
    let f = fetcher(&[format!("127.0.0.1:{port}")]);
    // Announced: refused before the body is read.
    match f
        .get(&format!("http://127.0.0.1:{port}/big-declared"))
        .await
    {
        Err(e @ FetchError::TooLarge(CAP)) => assert_eq!(e.code(), "FILE_TOO_LARGE"),
        other => panic!("declared: {other:?}"),
    }
    // Not announced (read to close, or chunked): cut as it streams.
    for path in ["/big-undeclared", "/big-chunked"] {
        let mut res = f
            .get(&format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        match body(&mut res).await {
            Err(FetchError::TooLarge(CAP)) => assert!(res.received() <= CAP + 64 * 1024),
            other => panic!("{path}: {other:?}"),
        }
    }
}
