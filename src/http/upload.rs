//! `POST /upload/**`: Hypi-style multipart upload. Every file part is stored, whatever its field
//! name; the path after `/upload` is the directory.

use super::multipart::{PartLimits, Parts};
use super::{caller, AppState};
use crate::error::{Error, Result};
use crate::service::names;
use crate::service::quota::Room;
use crate::service::upload::StagedPart;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::timeout;

/// Largest non-file form field accepted (its value is ignored).
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Handles an upload. The caller is authenticated and given an upload slot before any of the
/// body is read; the body's size, stall and rate bounds come from the guard in limits.rs.
#[utoipa::path(
    post, path = "/upload", tag = "files",
    request_body(content = super::openapi::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored files, keyed by stored name", body = super::openapi::Uploaded),
        (status = 400, description = "Not a multipart form, no file, or a bad directory"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "The token may not write to this instance"),
        (status = 413, description = "A file larger than an account or instance quota allows (`FILE_TOO_LARGE`), or the body over the cap"),
        (status = 429, description = "A quota has no room left (`QUOTA_EXCEEDED`), or too many requests"),
    ),
)]
pub async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let config = &state.service.config;
    let stall = Duration::from_secs(config.body_timeout_secs);
    // Refusals before the body: the connection is closed rather than drained, so an
    // unauthenticated or over-quota client cannot make us read its body.
    let principal = caller(&req, &state)?.require()?.clone();
    let _slot = state
        .uploads
        .acquire(&principal.instance, &principal.account)?;
    // A full quota refuses before the body (the size is known only as the parts arrive; the
    // authoritative check is at commit). What the quotas leave bounds the parts as they
    // arrive: a part that crosses it stops at once instead of being written in full.
    let room = state.service.upload_room(&principal).await?;
    let limits = PartLimits {
        header_bytes: config.max_part_header_bytes,
        parts: config.max_parts,
    };
    let mut mp = Parts::new(req.headers(), payload, limits);
    let outcome = async {
        let raw = req.path().strip_prefix("/upload").unwrap_or("");
        let directory = names::normalize_directory(raw)?;
        let parts = receive(&state, room, &mut mp).await?;
        state
            .service
            .commit_upload(&principal, directory, parts)
            .await
    }
    .await;
    match outcome {
        Ok((files, allowance)) => {
            // Keyed by the stored (sanitized) name, as Hypi keys by the file's name: the raw
            // client name may carry control or bidi characters and is never echoed.
            let mut body = Map::new();
            for (_, file) in files {
                let mut key = file.name.clone();
                let mut n = 2;
                while body.contains_key(&key) {
                    key = format!("{} ({n})", file.name);
                    n += 1;
                }
                body.insert(key, super::views::file(&file));
            }
            let mut ok = HttpResponse::Ok();
            if let Some(a) = allowance {
                super::quota::allowance_headers(&mut ok, &a);
            }
            Ok(ok.json(Value::Object(body)))
        }
        // A stalled, too slow or too large body gets its answer at once: reading more of it
        // is pointless.
        Err(e @ (Error::Timeout(_) | Error::PayloadTooLarge(_))) => Err(e),
        Err(e) => {
            // Read what the client is still sending so it sees our answer rather than a reset
            // connection; bounded in time (and by the body guard's rate) so a slow client
            // cannot hold us.
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
/// removes their temp files: a failed request leaves nothing behind. Stalls and slow bodies are
/// cut by the body guard (limits.rs), which ends the read with an error.
async fn receive(
    state: &AppState,
    mut room: Option<Room>,
    mp: &mut Parts,
) -> Result<Vec<StagedPart>> {
    let mut staged = Vec::new();
    while let Some(field) = mp.next().await {
        let mut field = field?;
        let Some(filename) = Parts::filename(&field) else {
            // A plain form field: read and ignore, within a small bound.
            let mut n = 0;
            while let Some(chunk) = mp.chunk(&mut field).await {
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
        if let Some(r) = &room {
            writer.within(r.clone());
        }
        while let Some(chunk) = mp.chunk(&mut field).await {
            // A stream error is a truncated body, never the end of the file.
            writer.write(chunk?).await?;
        }
        let part = writer.finish().await?;
        room = room.map(|r| r.after(part.size()));
        staged.push(part);
    }
    if staged.is_empty() {
        return Err(Error::BadRequest("the request has no file part".into()));
    }
    Ok(staged)
}
