//! `POST /upload/**`: Hypi-style multipart upload. Every file part is stored, whatever its field
//! name; the path after `/upload` is the directory.

use super::{caller, AppState};
use crate::error::{Error, Result};
use crate::service::names;
use crate::service::upload::StagedPart;
use actix_multipart::{Field, Multipart};
use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest, HttpResponse};
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

/// Slack over `max_part_header_bytes`: the multipart parser pulls whatever the connection has
/// buffered (tens of KiB) before it can tell where a header ends.
const HEADER_SLACK: u64 = 256 * 1024;

/// The request body as the multipart parser sees it, counting bytes the parser has taken in
/// without handing anything out. actix-multipart buffers a part's headers (and the preamble)
/// until it finds their end, without a limit; this caps that buffer.
struct Watched {
    inner: web::Payload,
    unseen: Rc<Cell<u64>>,
    cap: u64,
}

impl futures_util::Stream for Watched {
    type Item = std::result::Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.unseen.get() > self.cap {
            return Poll::Ready(Some(Err(PayloadError::Overflow)));
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(b))) = &item {
            self.unseen.set(self.unseen.get() + b.len() as u64);
        }
        item
    }
}

/// The multipart stream, never polled again once it ended or failed (actix-multipart panics
/// when a stream that failed at construction is polled twice).
struct Parts {
    mp: Multipart,
    done: bool,
    /// Bytes read from the body since the parser last produced a field or a chunk.
    unseen: Rc<Cell<u64>>,
    header_limit: u64,
}

impl Parts {
    fn new(req: &HttpRequest, payload: web::Payload, header_limit: u64) -> Self {
        let unseen = Rc::new(Cell::new(0));
        let watched = Watched {
            inner: payload,
            unseen: unseen.clone(),
            cap: header_limit + HEADER_SLACK,
        };
        Self {
            mp: Multipart::new(req.headers(), watched),
            done: false,
            unseen,
            header_limit,
        }
    }

    /// Marks progress: the parser produced something, so what it buffered was not a header.
    fn progress(&self) {
        self.unseen.set(0);
    }

    /// A parser error, explained as a header overflow when that is what caused it.
    fn error(&self, e: actix_multipart::MultipartError) -> Error {
        if self.unseen.get() > self.header_limit + HEADER_SLACK {
            Error::BadRequest(format!(
                "a part's headers are larger than {} bytes",
                self.header_limit
            ))
        } else {
            malformed(e)
        }
    }

    async fn next(&mut self) -> Option<Result<Field, actix_multipart::MultipartError>> {
        if self.done {
            return None;
        }
        let item = self.mp.next().await;
        self.done = !matches!(item, Some(Ok(_)));
        if !self.done {
            self.progress();
        }
        item
    }
}

/// Handles an upload.
pub async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut mp = Parts::new(&req, payload, state.service.config.max_part_header_bytes);
    let stall = Duration::from_secs(state.service.config.body_timeout_secs);
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
        Err(e) => {
            // Read what the client is still sending so it sees our answer rather than a reset
            // connection; bounded in time so a stalled client cannot hold us.
            let _ = timeout(stall, async { while let Some(Ok(_)) = mp.next().await {} }).await;
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
        let mut field = field.map_err(|e| mp.error(e))?;
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
            while let Some(chunk) = timeout(stall, field.next()).await.map_err(too_slow)? {
                n += chunk.map_err(|e| mp.error(e))?.len();
                mp.progress();
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
        while let Some(chunk) = timeout(stall, field.next()).await.map_err(too_slow)? {
            // A stream error is a truncated body, never the end of the file.
            writer.write(chunk.map_err(|e| mp.error(e))?).await?;
            mp.progress();
        }
        staged.push(writer.finish().await?);
    }
    if staged.is_empty() {
        return Err(Error::BadRequest("the request has no file part".into()));
    }
    Ok(staged)
}
