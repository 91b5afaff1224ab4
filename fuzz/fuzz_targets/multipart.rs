//! The multipart ingest as depot drives it: a `Multipart` over the request's headers and a body
//! arriving in fuzzed pieces, drained field by field and never polled again after it ended or
//! failed (actix-multipart panics on that, and depot guards against it). No panic is the property.
//! `DEPOT_FUZZ_STRICT=1` also fails on a parser left pending after the whole body arrived (depot
//! answers that with 400, but it is a parser stall worth knowing about).
#![no_main]

use actix_multipart::Multipart;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::{FutureExt, StreamExt};
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
        _ => "multipart/form-data; boundary=bnd0".to_string(),
    };
    Some((content_type, usize::from(chunk) + 1, body))
}

/// depot's guard around the stream: never polled again once it ended or failed.
struct Parts<S> {
    mp: S,
    done: bool,
}

/// What one step of the ingest came to.
enum Step<T> {
    Ready(T),
    /// The parser waits for bytes although the whole body is in: depot ends the request with
    /// 400 (a body that ends inside a part), so the drive stops the same way.
    Stuck,
}

/// Polls once: every byte of the body is available up front, so a parser that is still pending
/// will never make progress.
async fn step<F: std::future::Future>(f: F) -> Step<F::Output> {
    match f.now_or_never() {
        Some(v) => Step::Ready(v),
        None => {
            if std::env::var_os("DEPOT_FUZZ_STRICT").is_some() {
                panic!("multipart parser pending at the end of the body");
            }
            Step::Stuck
        }
    }
}

impl<S> Parts<S>
where
    S: futures_util::Stream<Item = Result<actix_multipart::Field, actix_multipart::MultipartError>>
        + Unpin,
{
    async fn next(&mut self) -> Step<Option<S::Item>> {
        if self.done {
            return Step::Ready(None);
        }
        let item = step(self.mp.next()).await;
        // depot's error path polls again (its drain), so `Stuck` does not end the stream.
        self.done = matches!(item, Step::Ready(None) | Step::Ready(Some(Err(_))));
        item
    }
}

/// depot's `max_parts` default.
const MAX_PARTS: usize = 100;

fuzz_target!(|data: &[u8]| {
    let Some((content_type, chunk, body)) = split(data) else {
        return;
    };
    // A header value the HTTP layer itself would refuse never reaches depot.
    if actix_web::http::header::HeaderValue::from_str(&content_type).is_err() {
        return;
    }
    let req = actix_web::test::TestRequest::post()
        .uri("/upload/")
        .insert_header(("content-type", content_type.as_str()))
        .to_http_request();
    // depot's `check_boundary`: boundaries outside 4..=70 characters never reach the parser
    // (actix-multipart 0.7 panics on some bodies with a shorter one).
    if let Ok(Some(mime)) = req.mime_type() {
        if let Some(b) = mime.get_param("boundary") {
            if !(4..=70).contains(&b.as_str().len()) {
                return;
            }
        }
    }
    let pieces: Vec<Result<Bytes, PayloadError>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut parts = Parts {
            mp: Multipart::new(req.headers(), futures_util::stream::iter(pieces)),
            done: false,
        };
        // As depot's `receive`: every part read to its end; a failure ends the request.
        let failed = async {
            let mut seen = 0usize;
            loop {
                let mut field = match parts.next().await {
                    Step::Ready(Some(Ok(field))) => field,
                    Step::Ready(None) => return false,
                    Step::Ready(Some(Err(_))) | Step::Stuck => return true,
                };
                seen += 1;
                if seen > MAX_PARTS {
                    return true;
                }
                if let Some(f) = field.content_disposition().and_then(|cd| cd.get_filename()) {
                    let name = depot::service::names::sanitize_filename(f);
                    let _ = depot::service::names::extension(&name);
                }
                let _ = field.name();
                loop {
                    match step(field.next()).await {
                        Step::Ready(Some(Ok(_))) => {}
                        Step::Ready(None) => break,
                        Step::Ready(Some(Err(_))) | Step::Stuck => return true,
                    }
                }
            }
        }
        .await;
        if failed {
            // As depot's error path: read what the client still sends (bounded by a timeout
            // there, by `Stuck` here).
            while let Step::Ready(Some(Ok(_))) = parts.next().await {}
        }
    });
});
