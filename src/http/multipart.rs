//! The request side of a multipart upload: actix-multipart driven the way depot needs it, with
//! the failure modes of a hostile body turned into clear errors. Public so that the fuzz crate
//! drives this very code (`fuzz/fuzz_targets/multipart.rs`), not a copy of it.

use super::limits;
use crate::error::{Error, Result};
use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::HeaderMap;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// What actix-multipart buffers at most while it looks for the end of a boundary line or of a
/// part's headers (its default `buffer_limit`); a longer preamble line or header block fails.
pub const PARSER_BUFFER_BYTES: u64 = 64 * 1024;

/// Bounds on the parts of one request.
#[derive(Debug, Clone, Copy)]
pub struct PartLimits {
    /// Largest header block of one part, in bytes.
    pub header_bytes: u64,
    /// Most parts (file or not) in one request.
    pub parts: usize,
}

/// The request body with its end noted, for [`stuck`].
struct Ends<S> {
    inner: S,
    ended: Rc<Cell<bool>>,
}

impl<S> Stream for Ends<S>
where
    S: Stream<Item = std::result::Result<Bytes, PayloadError>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = item {
            self.ended.set(true);
        }
        item
    }
}

/// Longest transport padding removed after a boundary; longer runs are left to the parser (which
/// refuses them).
const MAX_PADDING: usize = 1024;

/// What a line of the body is, read from its start.
enum Line {
    /// Not a delimiter line, or one without padding.
    Other,
    /// Too short to tell: wait for more bytes.
    NeedMore,
    /// A delimiter line with transport padding at these offsets (from the line start).
    Padded(usize, usize),
}

/// The body with RFC 2046 transport padding (spaces and tabs between a boundary delimiter and
/// its CRLF) removed: actix-multipart requires the CRLF right after the boundary and answers
/// "boundary is not found" otherwise. Only lines that start with `--boundary` right after a
/// CRLF (or at the start of the body) are touched; file data cannot contain such a line, since
/// RFC 2046 makes it the end of the part. Chunks without padding pass through unchanged (no
/// copy); only `\r\n` positions are examined, found with memchr.
struct Unpadded<S> {
    inner: S,
    /// `--` and the boundary.
    delimiter: Vec<u8>,
    /// The start of a line that may be a padded delimiter, held until it can be told.
    carry: BytesMut,
    /// The next byte starts a line (the body's start, or just after a CRLF).
    line_start: bool,
    /// The last byte passed on was a CR.
    last_cr: bool,
    ended: bool,
}

impl<S> Unpadded<S> {
    fn new(inner: S, boundary: Option<&str>) -> Self {
        Self {
            inner,
            delimiter: boundary.map_or_else(Vec::new, |b| format!("--{b}").into_bytes()),
            carry: BytesMut::new(),
            line_start: true,
            last_cr: false,
            ended: false,
        }
    }

    fn classify(&self, line: &[u8]) -> Line {
        let d = &self.delimiter;
        if line.len() < d.len() {
            return if d.starts_with(line) {
                Line::NeedMore
            } else {
                Line::Other
            };
        }
        if !line.starts_with(d) {
            return Line::Other;
        }
        let mut i = d.len();
        match &line[i..] {
            [] | [b'-'] => return Line::NeedMore,
            [b'-', b'-', ..] => i += 2,
            _ => {}
        }
        let pad = line[i..]
            .iter()
            .take(MAX_PADDING + 1)
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        match line.get(i + pad) {
            _ if pad > MAX_PADDING => Line::Other,
            None => Line::NeedMore,
            Some(b'\r') if pad > 0 => Line::Padded(i, i + pad),
            _ => Line::Other,
        }
    }

    /// Strips padding from `data`; returns what can be passed on (the rest is carried).
    fn process(&mut self, data: Bytes, eof: bool) -> Bytes {
        if self.delimiter.is_empty() {
            return data;
        }
        let mut starts: Vec<usize> = Vec::new();
        if self.line_start {
            starts.push(0);
        }
        if self.last_cr && data.first() == Some(&b'\n') {
            starts.push(1);
        }
        starts.extend(memchr::memmem::find_iter(&data, b"\r\n").map(|p| p + 2));
        let mut out: Option<BytesMut> = None;
        let mut copied = 0;
        let mut end = data.len();
        for s in starts {
            if s >= data.len() {
                continue;
            }
            match self.classify(&data[s..]) {
                Line::Other => {}
                Line::NeedMore if eof => {}
                Line::NeedMore => {
                    self.carry.extend_from_slice(&data[s..]);
                    end = s;
                    break;
                }
                Line::Padded(a, b) => {
                    let o = out.get_or_insert_with(|| BytesMut::with_capacity(data.len()));
                    o.extend_from_slice(&data[copied..s + a]);
                    copied = s + b;
                }
            }
        }
        let passed = match out {
            None => data.slice(..end),
            Some(mut o) => {
                o.extend_from_slice(&data[copied..end]);
                o.freeze()
            }
        };
        if end < data.len() {
            // The carried line starts at a line start.
            self.line_start = true;
            self.last_cr = false;
        } else {
            self.line_start = match passed.as_ref() {
                [] => self.line_start,
                [b'\n'] => self.last_cr,
                p => p.ends_with(b"\r\n"),
            };
            self.last_cr = passed.last() == Some(&b'\r');
        }
        passed
    }
}

impl<S> Stream for Unpadded<S>
where
    S: Stream<Item = std::result::Result<Bytes, PayloadError>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let data = if this.carry.is_empty() {
                        chunk
                    } else {
                        this.carry.extend_from_slice(&chunk);
                        this.carry.split().freeze()
                    };
                    let out = this.process(data, false);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.carry.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.carry.split().freeze();
                    let out = this.process(rest, true);
                    return Poll::Ready(Some(Ok(out)));
                }
                other => return other,
            }
        }
    }
}

/// The boundary parameter of a multipart Content-Type, if there is one.
fn boundary(headers: &HeaderMap) -> Option<String> {
    let ct = headers
        .get(actix_web::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    let mime: actix_web::mime::Mime = ct.parse().ok()?;
    mime.get_param("boundary").map(|b| b.as_str().to_string())
}

/// The parts of a multipart body, never polled again once the stream ended or failed.
pub struct Parts {
    mp: Multipart,
    done: bool,
    ended: Rc<Cell<bool>>,
    limits: PartLimits,
    seen: usize,
}

/// A parser that is pending although the body has ended will never be woken: report that as
/// the truncated body it is (actix-multipart 0.8.2 reports most such cases itself; this stays
/// as a guard against a hang).
fn stuck<T>(ended: &Cell<bool>, poll: Poll<Option<T>>) -> Poll<Option<Result<T>>> {
    match poll {
        Poll::Pending if ended.get() => Poll::Ready(Some(Err(Error::BadRequest(
            "malformed multipart body: it ends inside a part".into(),
        )))),
        Poll::Pending => Poll::Pending,
        Poll::Ready(item) => Poll::Ready(item.map(Ok)),
    }
}

/// A parser error as the client should see it: a tripped body bound keeps its own status
/// (408/413); the parser's buffer overflowing means a preamble line or header block too long.
pub fn parse_error(e: MultipartError) -> Error {
    match e {
        MultipartError::Payload(p) if limits::Tripped::of(&p).is_some() => limits::from_payload(&p),
        MultipartError::Payload(PayloadError::Overflow) => Error::BadRequest(format!(
            "a part's headers are larger than {PARSER_BUFFER_BYTES} bytes (or a line before \
             the first boundary is)"
        )),
        e => Error::BadRequest(format!("malformed multipart body: {e}")),
    }
}

/// The size of a part's header block as sent (`Name: value\r\n` per header).
fn header_bytes(field: &Field) -> u64 {
    field
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum()
}

impl Parts {
    /// The parts of `body`, framed by the request's Content-Type.
    pub fn new<S>(headers: &HeaderMap, body: S, limits: PartLimits) -> Self
    where
        S: Stream<Item = std::result::Result<Bytes, PayloadError>> + Unpin + 'static,
    {
        let ended = Rc::new(Cell::new(false));
        let body = Ends {
            inner: Unpadded::new(body, boundary(headers).as_deref()),
            ended: ended.clone(),
        };
        Self {
            mp: Multipart::new(headers, body),
            done: false,
            ended,
            limits,
            seen: 0,
        }
    }

    /// The next part, within the count and header limits.
    pub async fn next(&mut self) -> Option<Result<Field>> {
        if self.done {
            return None;
        }
        let ended = self.ended.clone();
        let mp = &mut self.mp;
        let item = futures_util::future::poll_fn(|cx| stuck(&ended, mp.poll_next_unpin(cx))).await;
        let item = match item {
            Some(Ok(Ok(field))) => {
                self.seen += 1;
                if self.seen > self.limits.parts {
                    Some(Err(Error::BadRequest(format!(
                        "more than {} parts in one request",
                        self.limits.parts
                    ))))
                } else if header_bytes(&field) > self.limits.header_bytes {
                    Some(Err(Error::BadRequest(format!(
                        "a part's headers are larger than {} bytes",
                        self.limits.header_bytes
                    ))))
                } else {
                    Some(Ok(field))
                }
            }
            Some(Ok(Err(e))) => Some(Err(parse_error(e))),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        self.done = !matches!(item, Some(Ok(_)));
        item
    }

    /// The next chunk of a part's data.
    pub async fn chunk(&self, field: &mut Field) -> Option<Result<Bytes>> {
        let ended = &self.ended;
        let item =
            futures_util::future::poll_fn(|cx| stuck(ended, field.poll_next_unpin(cx))).await;
        match item? {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => Some(Err(parse_error(e))),
            Err(e) => Some(Err(e)),
        }
    }

    /// The part's file name when it is a file part (a non-empty `filename` parameter), decoded
    /// as browsers and curl encode it (see [`form_data_filename`]).
    pub fn filename(field: &Field) -> Option<String> {
        let raw = field
            .headers()
            .get(actix_web::http::header::CONTENT_DISPOSITION)?;
        form_data_filename(raw.as_bytes()).filter(|f| !f.is_empty())
    }
}

/// The `filename` parameter of a form-data part's Content-Disposition, decoded the way clients
/// encode it, then reduced to its last path component.
///
/// - The HTML standard's form-data encoding (browsers, and curl since 7.81): `"`, CR and LF are
///   sent as `%22`, `%0D`, `%0A`, and nothing else is escaped: a backslash is a literal
///   character (`a\b.txt`, `C:\Users\x\a.txt`), not a quoted-pair. Only those three
///   sequences are decoded; other `%` sequences are the name's own characters.
/// - RFC 2616 quoted-pairs from older clients: `\"` and `\\` are decoded; any other backslash
///   stays a character.
/// - Raw UTF-8 (what browsers send) is kept; invalid bytes become U+FFFD.
///
/// The result is the last component of a `/` or `\` path (`C:\Users\x\a.txt` -> `a.txt`);
/// decoded CR/LF and other control characters are left for the name rules
/// (`service::names::sanitize_filename`) to drop. `None` when there is no `filename` parameter.
pub fn form_data_filename(header: &[u8]) -> Option<String> {
    let raw = disposition_param(header, b"filename")?;
    let decoded = decode_form_data_escapes(&String::from_utf8_lossy(&raw));
    match decoded.rsplit(['/', '\\']).next() {
        // A name that is all path (`dir\`) stays whole: the name rules make it `file`.
        Some("") | None => Some(decoded),
        Some(last) => Some(last.to_string()),
    }
}

/// `%22`, `%0D`, `%0A` (either case) decoded; everything else as sent.
fn decode_form_data_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let decoded = match tail.get(1..3).map(str::to_ascii_uppercase).as_deref() {
            Some("22") => Some('"'),
            Some("0D") => Some('\r'),
            Some("0A") => Some('\n'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[3..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The raw value of parameter `name` (exact name, ASCII case-insensitive; `filename*` is a
/// different parameter) in a `disposition; a=b; c="d"` header, with quotes and the two
/// quoted-pairs `\"` and `\\` removed. Parameters are walked in order, skipping quoted values,
/// so a `filename=` inside another parameter's quoted value is not taken.
fn disposition_param(header: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut i = header.iter().position(|&c| c == b';')? + 1;
    let n = header.len();
    while i < n {
        while i < n && matches!(header[i], b' ' | b'\t' | b';') {
            i += 1;
        }
        let key_start = i;
        while i < n && !matches!(header[i], b'=' | b';') {
            i += 1;
        }
        let key = header[key_start..i].trim_ascii();
        let mut value = Vec::new();
        if i < n && header[i] == b'=' {
            i += 1;
            while i < n && matches!(header[i], b' ' | b'\t') {
                i += 1;
            }
            if i < n && header[i] == b'"' {
                i += 1;
                let start = i;
                // A browser never sends a raw `"` inside the value, so the first `"` not
                // escaped by a backslash ends it. An unterminated value (a browser's name ending
                // in a backslash, `"a\"`) is retried with backslashes taken literally.
                let mut closed = false;
                while i < n {
                    match header[i] {
                        b'\\' if matches!(header.get(i + 1), Some(b'"' | b'\\')) => {
                            value.push(header[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        c => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    let end = header[start..]
                        .iter()
                        .position(|&c| c == b'"')
                        .map_or(n, |p| start + p);
                    value = header[start..end].to_vec();
                    i = end + 1;
                }
            } else {
                let start = i;
                while i < n && header[i] != b';' {
                    i += 1;
                }
                value = header[start..i].trim_ascii().to_vec();
            }
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
        while i < n && header[i] != b';' {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` through the filter in pieces of `size` bytes.
    fn unpad(body: &[u8], size: usize) -> Vec<u8> {
        let pieces: Vec<std::result::Result<Bytes, PayloadError>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut s = Unpadded::new(futures_util::stream::iter(pieces), Some("bnd"));
        let mut out = Vec::new();
        while let Some(Some(Ok(c))) = s.next().now_or_never() {
            out.extend_from_slice(&c);
        }
        out
    }

    use futures_util::FutureExt;

    fn name(header: &str) -> Option<String> {
        form_data_filename(header.as_bytes())
    }

    proptest::proptest! {
        /// Whatever name a browser encodes (any characters but `%`, whose encoding the HTML
        /// standard leaves ambiguous), depot stores what the name rules make of the original.
        #[test]
        fn browser_encoding_round_trips(raw in "[^%]{1,40}") {
            let sent = raw.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A");
            let header = format!("form-data; name=\"fileUpload\"; filename=\"{sent}\"");
            let got = form_data_filename(header.as_bytes()).unwrap();
            proptest::prop_assert_eq!(
                crate::service::names::sanitize_filename(&got),
                crate::service::names::sanitize_filename(&raw)
            );
        }
    }

    #[test]
    fn browser_encoded_file_names_are_decoded() {
        // What Chromium and Firefox send (the HTML standard's form-data encoding).
        let cases = [
            (
                r#"form-data; name="f"; filename="résumé %22final%22.pdf""#,
                "résumé \"final\".pdf",
            ),
            (r#"form-data; name="f"; filename="a\b.txt""#, "b.txt"),
            (
                r#"form-data; name="f"; filename="C:\Users\x\a.txt""#,
                "a.txt",
            ),
            (
                r#"form-data; name="f"; filename="line%0D%0Abreak.txt""#,
                "line\r\nbreak.txt",
            ),
            (
                r#"form-data; name="f"; filename="100%25 %zz %2.txt""#,
                "100%25 %zz %2.txt",
            ),
            (r#"form-data; name="f"; filename="odd%22""#, "odd\""),
            // Older clients' quoted-pairs.
            (
                r#"form-data; name="f"; filename="say \"hi\".txt""#,
                "say \"hi\".txt",
            ),
            (
                r#"form-data; name="f"; filename="back\\slash.txt""#,
                "slash.txt",
            ),
            // Unquoted, other parameters first or with look-alikes inside them.
            (r#"form-data; filename=plain.txt; name=f"#, "plain.txt"),
            (
                r#"form-data; name="x; filename=evil.exe"; filename="good.txt""#,
                "good.txt",
            ),
            (r#"form-data; name="f"; FILENAME="Up.TXT""#, "Up.TXT"),
            (
                r#"form-data; name="f"; filename="../../etc/passwd""#,
                "passwd",
            ),
            // A browser's name ending in a backslash: the quote ends it after all.
            (r#"form-data; name="f"; filename="dir\"; x=1"#, "dir\\"),
            (
                r#"form-data; name="f"; filename="unterminated"#,
                "unterminated",
            ),
        ];
        for (header, want) in cases {
            assert_eq!(name(header).as_deref(), Some(want), "{header}");
        }
        assert_eq!(name(r#"form-data; name="f""#), None);
        assert_eq!(name(r#"form-data; name="f"; filename*=UTF-8''a.txt"#), None);
        assert_eq!(name("form-data"), None);
        assert_eq!(name(""), None);
        // Invalid UTF-8 does not fail the part.
        assert_eq!(
            form_data_filename(b"form-data; filename=\"a\xff.txt\"").as_deref(),
            Some("a\u{FFFD}.txt")
        );
    }

    #[test]
    fn padding_after_delimiters_is_removed_however_the_body_is_split() {
        let padded = b"--bnd \t \r\nA: b\r\n\r\ndata --bnd x\r\n-\r\n--bnd--\t\r\n";
        let clean = b"--bnd\r\nA: b\r\n\r\ndata --bnd x\r\n-\r\n--bnd--\r\n";
        for size in 1..=padded.len() {
            assert_eq!(unpad(padded, size), clean.to_vec(), "pieces of {size}");
        }
        // Lines that only look like delimiters are data and stay as they are.
        let data = b"--bndx \r\n--bn \r\nz\n--bnd \r\n--bnd";
        for size in 1..=data.len() {
            assert_eq!(unpad(data, size), data.to_vec(), "pieces of {size}");
        }
    }
}
