//! depot's multipart ingest (`depot::http::multipart::Parts`, the very code the upload route
//! runs) over a request's Content-Type and a body arriving in fuzzed pieces, drained part by part
//! as `receive` in src/http/upload.rs does. No panic is the property. `DEPOT_FUZZ_STRICT=1` also
//! fails on a parser left pending after the whole body arrived (depot's guard answers that with
//! 400, but it is a parser stall worth knowing about).
#![no_main]

use actix_web::error::PayloadError;
use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use actix_web::web::Bytes;
use depot::http::multipart::{PartLimits, Parts};
use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;

/// Input layout: one byte of Content-Type choice, one byte of chunk size, then the body. The
/// boundary is fixed (`bnd0`) for most inputs so the fuzzer spends its time inside parts.
fn split(data: &[u8]) -> Option<(String, usize, &[u8])> {
    let (&ct, rest) = data.split_first()?;
    let (&chunk, body) = rest.split_first()?;
    let content_type = match ct % 8 {
        0 => "multipart/form-data".to_string(),
        1 => "multipart/form-data; boundary=\"\"".to_string(),
        2 => "multipart/mixed; boundary=bnd0".to_string(),
        3 => format!("multipart/form-data; boundary={}", "L".repeat(70)),
        4 => {
            // The Content-Type comes from the body's first line.
            let end = body.iter().position(|&c| c == b'\n').unwrap_or(body.len());
            let ct = String::from_utf8_lossy(&body[..end]).into_owned();
            return Some((
                ct,
                usize::from(chunk) + 1,
                &body[(end + 1).min(body.len())..],
            ));
        }
        5 => "multipart/form-data; boundary=b".to_string(),
        _ => "multipart/form-data; boundary=bnd0".to_string(),
    };
    Some((content_type, usize::from(chunk) + 1, body))
}

/// Polls once: every byte of the body is available up front, so a future that is still pending
/// would never complete (in depot, the body guard's stall timeout would end it).
fn step<F: std::future::Future>(f: F) -> Option<F::Output> {
    let out = f.now_or_never();
    if out.is_none() && std::env::var_os("DEPOT_FUZZ_STRICT").is_some() {
        panic!("multipart parser pending at the end of the body");
    }
    out
}

/// depot's defaults.
const LIMITS: PartLimits = PartLimits {
    header_bytes: 16 * 1024,
    parts: 100,
};

fuzz_target!(|data: &[u8]| {
    let Some((content_type, chunk, body)) = split(data) else {
        return;
    };
    // A header value the HTTP layer itself would refuse never reaches depot.
    let Ok(value) = HeaderValue::from_str(&content_type) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, value);
    let pieces: Vec<Result<Bytes, PayloadError>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut parts = Parts::new(&headers, futures_util::stream::iter(pieces), LIMITS);
    // As depot's `receive`: every part read to its end; a failure ends the request.
    let failed = loop {
        let mut field = match step(parts.next()) {
            Some(Some(Ok(field))) => field,
            Some(None) => break false,
            Some(Some(Err(_))) | None => break true,
        };
        if let Some(f) = Parts::filename(&field) {
            let name = depot::service::names::sanitize_filename(&f);
            let _ = depot::service::names::extension(&name);
        }
        let _ = field.name();
        let ok = loop {
            match step(parts.chunk(&mut field)) {
                Some(Some(Ok(_))) => {}
                Some(None) => break true,
                Some(Some(Err(_))) | None => break false,
            }
        };
        if !ok {
            break true;
        }
    };
    if failed {
        // As depot's error path: read what the client still sends (bounded by the body guard
        // there, by `step` here).
        while let Some(Some(Ok(_))) = step(parts.next()) {}
    }
});
