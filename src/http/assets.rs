//! Hygraph's assets over REST:
//! - `POST /assets` `{"fileName": ..}` or `{"uploadUrl": ..}`: `createAsset`.
//! - `GET /assets/{id}`: the asset (`asset(where: {id})`).
//! - `POST /assets/{id}/reupload` `{"reUpload": true}` or `{"uploadUrl": ..}`: `updateAsset`.
//! - `PUT /files/{id}/content`: new bytes for one file, streamed (same id and URL).
//! - `POST /assets/upload`: the presigned POST form of `upload.requestPostData` (S3's shape:
//!   fields first, `file` last; no token, the signed policy is the capability). 204 when
//!   stored, as S3 answers.

use super::direct::public_base;
use super::multipart::{PartLimits, Parts};
use super::{caller, AppState};
use crate::error::{Error, Result};
use crate::graphql::assets::{create, reupload, view, AssetCreateInput, AssetUpdateInput};
use crate::types::FileId;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::timeout;

/// Largest form field before `file` (a policy is a few hundred bytes).
const MAX_FIELD_BYTES: usize = 16 * 1024;

/// `POST /assets`: creates an asset.
#[utoipa::path(
    post, path = "/assets", tag = "assets",
    request_body = super::openapi::AssetCreateInput,
    responses(
        (status = 201, description = "The asset (pending with its upload form, or fetched)", body = super::openapi::Asset),
        (status = 400, description = "Bad body or URL"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 409, description = "Too many open sessions"),
    ),
)]
pub async fn create_asset(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<AssetCreateInput>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let base = public_base(&req, &state);
    let a = create(&state.service, &p, &body, &base).await?;
    Ok(HttpResponse::Created().json(a))
}

/// `GET /assets/{id}`: an asset the caller may see.
#[utoipa::path(
    get, path = "/assets/{id}", tag = "assets",
    params(("id" = String, Path, description = "The asset's id")),
    security((), ("bearer" = [], "hypiDomain" = [])),
    responses(
        (status = 200, description = "The asset", body = super::openapi::Asset),
        (status = 401, description = "Bad token"),
        (status = 404, description = "No such asset, or not visible to the caller"),
    ),
)]
pub async fn get_asset(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let c = caller(&req, &state)?;
    let a = state.service.asset(c, &id).await?;
    let base = public_base(&req, &state);
    Ok(HttpResponse::Ok().json(view(&state.service, &a, &base)?))
}

/// `POST /assets/{id}/reupload`: new content for an asset (`updateAsset`).
#[utoipa::path(
    post, path = "/assets/{id}/reupload", tag = "assets",
    params(("id" = String, Path, description = "The asset's id")),
    request_body = super::openapi::AssetUpdateInput,
    responses(
        (status = 200, description = "The asset (pending with a new upload form, or fetched)", body = super::openapi::Asset),
        (status = 400, description = "Bad body or URL"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such asset"),
        (status = 409, description = "Too many open sessions"),
    ),
)]
pub async fn reupload_asset(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<AssetUpdateInput>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let base = public_base(&req, &state);
    let a = reupload(&state.service, &p, &id, &body, &base).await?;
    Ok(HttpResponse::Ok().json(a))
}

/// `PUT /files/{id}/content`: the body (streamed, at most `max_file_size`) becomes the file's
/// content; the answer is the file's record. Only its owner or an admin may.
#[utoipa::path(
    put, path = "/files/{id}/content", tag = "files",
    params(("id" = String, Path, description = "The file's id")),
    request_body(content = super::openapi::Bytes, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "The file with its new content", body = super::openapi::File),
        (status = 400, description = "Bad body"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not the owner or an admin"),
        (status = 404, description = "No such file"),
        (status = 409, description = "A directory has no content"),
    ),
)]
pub async fn put_content(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    mut payload: web::Payload,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let fid: FileId = id.parse().map_err(|_| Error::not_found())?;
    let file = state.service.check_replace(&p, fid).await?;
    let max = state.service.config.max_file_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared.filter(|&n| n > max) {
        return Err(Error::FileTooLarge(format!(
            "{len} bytes is larger than the limit of {max} bytes"
        )));
    }
    let _slot = state.uploads.acquire(&p.instance, &p.account)?;
    let mut part = state.service.begin_part(&file.name);
    while let Some(chunk) = payload.next().await {
        // A stream error is a truncated body, never the end of the file.
        let chunk = chunk.map_err(|e| super::limits::from_payload(&e))?;
        part.write(chunk).await?;
    }
    let staged = part.finish().await?;
    let new = state
        .service
        .replace_with_staged(&p.account, fid, staged)
        .await?;
    Ok(HttpResponse::Ok().json(super::views::file(&new)))
}

/// `POST /assets/upload`: the form's fields are read (bounded) until `file`; the policy is
/// checked before a byte of the file is read; the file streams into the ingest.
#[utoipa::path(
    post, path = "/assets/upload", tag = "assets",
    request_body(content = super::openapi::AssetForm, content_type = "multipart/form-data", description = "The fields of `upload.requestPostData`, then `file`"),
    security(()),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "Bad form, no file, or a mismatch with the policy"),
        (status = 403, description = "Bad signature or policy"),
        (status = 404, description = "No such asset upload"),
        (status = 409, description = "Already uploaded"),
        (status = 410, description = "The form has expired"),
    ),
)]
pub async fn upload_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let config = &state.service.config;
    let stall = Duration::from_secs(config.body_timeout_secs);
    let limits = PartLimits {
        header_bytes: config.max_part_header_bytes,
        parts: config.max_parts,
    };
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut mp = Parts::new(req.headers(), payload, limits);
    let outcome = async {
        let mut fields: HashMap<String, String> = HashMap::new();
        loop {
            let Some(field) = mp.next().await else {
                return Err(Error::BadRequest(
                    "the form has no file field (it must be the last field)".into(),
                ));
            };
            let mut field = field?;
            let name = field.name().unwrap_or_default().to_ascii_lowercase();
            if name == "file" {
                let (mut post, domain) = state
                    .service
                    .begin_asset_post(&fields, content_length)
                    .await?;
                let _slot = state.uploads.acquire(&domain, post.account())?;
                loop {
                    match mp.chunk(&mut field).await {
                        Some(Ok(chunk)) => post.write(chunk).await?,
                        Some(Err(e)) => {
                            post.fail(&e).await;
                            return Err(e);
                        }
                        None => break,
                    }
                }
                return post.finish().await;
            }
            let mut value = Vec::new();
            while let Some(chunk) = mp.chunk(&mut field).await {
                let chunk = chunk?;
                if value.len() + chunk.len() > MAX_FIELD_BYTES {
                    return Err(Error::BadRequest(format!(
                        "form field {name:?} is longer than {MAX_FIELD_BYTES} bytes"
                    )));
                }
                value.extend_from_slice(&chunk);
            }
            let value = String::from_utf8(value)
                .map_err(|_| Error::BadRequest(format!("form field {name:?} is not UTF-8")))?;
            fields.insert(name, value);
        }
    }
    .await;
    match outcome {
        Ok(file) => Ok(HttpResponse::NoContent()
            .insert_header((header::ETAG, format!("\"{}\"", file.sha256.to_hex())))
            .finish()),
        Err(e @ (Error::Timeout(_) | Error::PayloadTooLarge(_))) => Err(e),
        Err(e) => {
            // Read what the client is still sending (bounded in time) so it sees the answer
            // rather than a reset connection.
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
