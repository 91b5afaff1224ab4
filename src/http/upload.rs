//! `POST /upload/**`: Hypi-style multipart upload. Every file part is stored, whatever its field
//! name; the path after `/upload` is the directory.

use super::{caller, AppState};
use crate::error::{Error, Result};
use crate::service::names;
use crate::service::upload::StagedPart;
use actix_multipart::{Field, Multipart};
use actix_web::error::PayloadError;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::timeout;

/// Largest non-file form field accepted (its value is ignored).
const MAX_FIELD_BYTES: usize = 64 * 1024;

fn malformed(e: actix_multipart::MultipartError) -> Error {
    Error::BadRequest(format!("malformed multipart body: {e}"))
}

/// Slack over `max_part_header_bytes`: the parser pulls whatever the connection has buffered
/// (up to about a MiB) before it can tell where a header ends.
const HEADER_SLACK: u64 = 2 * 1024 * 1024;

/// What the body wrapper and the handler share about the parser's input.
#[derive(Default)]
struct BodyState {
    /// Bytes the parser has taken in and not handed out as field data: its buffer, plus the
    /// boundaries and part headers it consumed.
    buffered: Cell<u64>,
    /// The request body has ended.
    ended: Cell<bool>,
}

/// The request body as the multipart parser sees it. actix-multipart buffers a part's headers
/// (and the preamble) until it finds their end, without a limit; this caps that buffer.
struct Watched {
    inner: web::Payload,
    state: Rc<BodyState>,
    cap: u64,
}

impl futures_util::Stream for Watched {
    type Item = std::result::Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.state.buffered.get() > self.cap {
            return Poll::Ready(Some(Err(PayloadError::Overflow)));
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(b))) => {
                let st = &self.state;
                st.buffered.set(st.buffered.get() + b.len() as u64);
            }
            Poll::Ready(None) => self.state.ended.set(true),
            _ => {}
        }
        item
    }
}

/// The multipart stream, never polled again once it ended or failed (actix-multipart panics
/// when a stream that failed at construction is polled twice).
struct Parts {
    mp: Multipart,
    done: bool,
    state: Rc<BodyState>,
    header_limit: u64,
}

/// actix-multipart 0.7 can return Pending after the body has ended (when the body stops inside a
/// delimiter), and nothing would ever wake it: report that as the truncated body it is.
fn stuck<T>(
    state: &BodyState,
    poll: Poll<Option<T>>,
) -> Poll<Option<std::result::Result<T, Error>>> {
    match poll {
        Poll::Pending if state.ended.get() => Poll::Ready(Some(Err(Error::BadRequest(
            "malformed multipart body: it ends inside a part".into(),
        )))),
        Poll::Pending => Poll::Pending,
        Poll::Ready(item) => Poll::Ready(item.map(Ok)),
    }
}

type Item<T> = std::result::Result<T, actix_multipart::MultipartError>;

impl Parts {
    fn new(req: &HttpRequest, payload: web::Payload, header_limit: u64) -> Self {
        let state = Rc::new(BodyState::default());
        let watched = Watched {
            inner: payload,
            state: state.clone(),
            cap: header_limit + HEADER_SLACK,
        };
        Self {
            mp: Multipart::new(req.headers(), watched),
            done: false,
            state,
            header_limit,
        }
    }

    /// A parser error, explained as a header overflow when that is what caused it.
    fn error(&self, e: actix_multipart::MultipartError) -> Error {
        if self.state.buffered.get() > self.header_limit + HEADER_SLACK {
            Error::BadRequest(format!(
                "a part's headers are larger than {} bytes",
                self.header_limit
            ))
        } else {
            malformed(e)
        }
    }

    /// The next part.
    async fn next(&mut self) -> Option<Result<Field>> {
        if self.done {
            return None;
        }
        let state = self.state.clone();
        let mp = &mut self.mp;
        let item = futures_util::future::poll_fn(|cx| stuck(&state, mp.poll_next_unpin(cx))).await;
        let item = match item {
            Some(Ok(Ok(field))) => Some(Ok(field)),
            Some(Ok(Err(e))) => Some(Err(self.error(e))),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        self.done = !matches!(item, Some(Ok(_)));
        item
    }

    /// The next chunk of a part's data.
    async fn chunk(&self, field: &mut Field) -> Option<Result<Bytes>> {
        let item: Option<std::result::Result<Item<Bytes>, Error>> =
            futures_util::future::poll_fn(|cx| stuck(&self.state, field.poll_next_unpin(cx))).await;
        match item? {
            Ok(Ok(b)) => {
                let st = &self.state;
                st.buffered
                    .set(st.buffered.get().saturating_sub(b.len() as u64));
                Some(Ok(b))
            }
            Ok(Err(e)) => Some(Err(self.error(e))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// RFC 2046 boundaries are 1 to 70 characters; actix-multipart 0.7 panics on some bodies with a
/// boundary shorter than 4, so those are refused up front. Real clients use long ones.
fn check_boundary(req: &HttpRequest) -> Result<()> {
    let Ok(Some(mime)) = req.mime_type() else {
        return Ok(()); // the parser reports a missing or bad Content-Type itself
    };
    if let Some(b) = mime.get_param("boundary") {
        let len = b.as_str().len();
        if !(4..=70).contains(&len) {
            return Err(Error::BadRequest(format!(
                "multipart boundary must be 4 to 70 characters, not {len}"
            )));
        }
    }
    Ok(())
}

/// Handles an upload.
pub async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    mut payload: web::Payload,
) -> Result<HttpResponse> {
    let stall = Duration::from_secs(state.service.config.body_timeout_secs);
    if let Err(e) = check_boundary(&req) {
        // Never hand such a body to the parser, not even to skip it.
        let _ = timeout(stall, async {
            while let Some(Ok(_)) = payload.next().await {}
        })
        .await;
        return Err(e);
    }
    let mut mp = Parts::new(&req, payload, state.service.config.max_part_header_bytes);
    let outcome = async {
        let principal = caller(&req, &state)?.require()?.clone();
        let raw = req.path().strip_prefix("/upload").unwrap_or("");
        let directory = names::normalize_directory(raw)?;
        let parts = receive(&state, &mut mp, stall).await?;
        state
            .service
            .commit_upload(&principal, directory, parts)
            .await
    }
    .await;
    match outcome {
        Ok(files) => {
            let mut body = Map::new();
            for (key, file) in files {
                let mut key = key;
                let mut n = 2;
                while body.contains_key(&key) {
                    key = format!("{} ({n})", file.name);
                    n += 1;
                }
                body.insert(key, super::views::file(&file));
            }
            Ok(HttpResponse::Ok().json(Value::Object(body)))
        }
        // A stalled client gets its answer at once: waiting for more of its body is pointless.
        Err(e @ Error::Timeout(_)) => Err(e),
        Err(e) => {
            // Read what the client is still sending so it sees our answer rather than a reset
            // connection; bounded in time so a stalled client cannot hold us.
            let _ = timeout(stall, async {
                while let Some(Ok(mut field)) = mp.next().await {
                    while let Some(Ok(_)) = mp.chunk(&mut field).await {}
                }
            })
            .await;
            Err(e)
        }
    }
}

/// Streams every file part to the store's temp area. Any failure drops the staged parts, which
/// removes their temp files: a failed request leaves nothing behind.
async fn receive(state: &AppState, mp: &mut Parts, stall: Duration) -> Result<Vec<StagedPart>> {
    let too_slow = |_| Error::Timeout("the upload stalled".into());
    let max_parts = state.service.config.max_parts;
    let mut staged = Vec::new();
    let mut seen = 0usize;
    while let Some(field) = timeout(stall, mp.next()).await.map_err(too_slow)? {
        let mut field = field?;
        seen += 1;
        if seen > max_parts {
            return Err(Error::BadRequest(format!(
                "more than {max_parts} parts in one request"
            )));
        }
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        let Some(filename) = filename else {
            // A plain form field: read and ignore, within a small bound.
            let mut n = 0;
            while let Some(chunk) = timeout(stall, mp.chunk(&mut field))
                .await
                .map_err(too_slow)?
            {
                n += chunk?.len();
                if n > MAX_FIELD_BYTES {
                    return Err(Error::BadRequest(format!(
                        "form field {:?} is larger than {MAX_FIELD_BYTES} bytes",
                        field.name().unwrap_or("")
                    )));
                }
            }
            continue;
        };
        let mut writer = state.service.begin_part(&filename);
        while let Some(chunk) = timeout(stall, mp.chunk(&mut field))
            .await
            .map_err(too_slow)?
        {
            // A stream error is a truncated body, never the end of the file.
            writer.write(chunk?).await?;
        }
        staged.push(writer.finish().await?);
    }
    if staged.is_empty() {
        return Err(Error::BadRequest("the request has no file part".into()));
    }
    Ok(staged)
}
