//! The request side of a multipart upload: actix-multipart driven the way depot needs it, with
//! the failure modes of a hostile body turned into clear errors. Public so that the fuzz crate
//! drives this very code (`fuzz/fuzz_targets/multipart.rs`), not a copy of it.

use super::limits;
use crate::error::{Error, Result};
use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::error::PayloadError;
use actix_web::http::header::HeaderMap;
use bytes::Bytes;
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
        MultipartError::Payload(p) if limits::Tripped::of(&p).is_some() => {
            limits::from_payload(&p)
        }
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
            inner: body,
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
        let item = futures_util::future::poll_fn(|cx| stuck(ended, field.poll_next_unpin(cx))).await;
        match item? {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => Some(Err(parse_error(e))),
            Err(e) => Some(Err(e)),
        }
    }

    /// The part's file name when it is a file part (a non-empty `filename` parameter).
    pub fn filename(field: &Field) -> Option<String> {
        field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
    }
}
