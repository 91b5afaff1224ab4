//! Raw HTTP/1.1: a client library would fix up exactly the bytes these tests need to break
//! (`..` in paths, broken multipart bodies, odd framing).

use super::server::{Server, INSTANCE};
use super::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Writes `request` on a new connection and reads until the server closes it or `timeout`
/// passes without bytes. A server that answers and closes before it read everything (413) is
/// not an error here.
pub fn exchange(addr: &str, request: &[u8], timeout: Duration) -> String {
    let mut c = TcpStream::connect(addr).expect("connect to the server");
    c.set_read_timeout(Some(timeout)).expect("read timeout");
    let _ = c.write_all(request);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

impl Server {
    /// Sends raw bytes and returns the raw response (status, text).
    pub fn raw(&self, request: &[u8]) -> (u16, String) {
        let text = exchange(&self.addr, request, Duration::from_secs(30));
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

/// Status, headers (lower-case names) and body of a raw HTTP/1.1 response.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn parse(text: &str) -> Self {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_string(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends a complete request and parses the answer; status 0 when none came within 12 s (the
/// callers' time bounds then fail with the case named).
pub fn send(s: &Server, request: &[u8]) -> RawResponse {
    RawResponse::parse(&exchange(&s.addr, request, Duration::from_secs(12)))
}

/// One multipart part with the given header lines (without the trailing blank line).
pub fn part(boundary: &str, headers: &str, data: &[u8]) -> Vec<u8> {
    let mut b = format!("--{boundary}\r\n{headers}\r\n\r\n").into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n");
    b
}

/// The header lines of a file part.
fn file_part_headers(field: &str, filename: &str) -> String {
    format!(
        "Content-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
    )
}

/// A file part with the usual headers.
pub fn file_part(boundary: &str, field: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    part(boundary, &file_part_headers(field, filename), data)
}

/// The closing delimiter of a multipart body.
pub fn closing(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--\r\n").into_bytes()
}

/// A multipart body with one file part; without `close` it stops right after the file's
/// bytes (a body cut off mid-part).
pub fn multipart_body(
    boundary: &str,
    field: &str,
    filename: &str,
    bytes: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\n{}\r\n\r\n",
        file_part_headers(field, filename)
    )
    .into_bytes();
    b.extend_from_slice(bytes);
    if close {
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    }
    b
}

/// The `Content-Type` of a multipart form with this boundary.
pub fn form_data(boundary: &str) -> String {
    format!("multipart/form-data; boundary={boundary}")
}

/// The head of an upload request to `/upload/`. `length` None means chunked.
pub fn upload_head(token: &str, content_type: &str, length: Option<usize>) -> Vec<u8> {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    format!(
        "POST /upload/ HTTP/1.1\r\nHost: depot\r\nAuthorization: {token}\r\nhypi-domain: {INSTANCE}\r\nAccept: application/json\r\nConnection: close\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n"
    )
    .into_bytes()
}

/// A Content-Length framed multipart upload.
pub fn raw_upload(s: &Server, token: &str, content_type: &str, body: &[u8]) -> RawResponse {
    let mut req = upload_head(token, content_type, Some(body.len()));
    req.extend_from_slice(body);
    send(s, &req)
}

/// A chunked multipart upload, in chunks of `chunk` bytes.
pub fn raw_upload_chunked(
    s: &Server,
    token: &str,
    content_type: &str,
    body: &[u8],
    chunk: usize,
) -> RawResponse {
    let mut req = upload_head(token, content_type, None);
    for c in body.chunks(chunk) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    send(s, &req)
}
