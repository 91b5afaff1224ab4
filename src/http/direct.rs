//! Direct upload flows over REST, and the signed URLs they hand out:
//! - Foir: `POST /uploads/presigned` (`createFileUpload`), `PUT /uploads/put/{instance}/{id}`
//!   (the `uploadUrl`), `POST /uploads/{id}/confirm` (`confirmFileUpload`).
//! - Amplience: `POST /temp-files` (`createTempFileUploadUrl`), `PUT
//!   /temp-files/{instance}/{id}/upload` (the `uploadUrl`), `GET /temp-files/{instance}/{id}`
//!   (the `downloadUrl`).
//! - Signed download links: `POST /files/{id}/links`, `DELETE /files/{id}/links/{link}`,
//!   `GET /links/{instance}/{id}`.
//!
//! The signed URLs need no token: the signature is the capability.

use super::{caller, download, limits, views, AppState};
use crate::auth::sign::Purpose;
use crate::error::{Error, Result, SessionFault};
use crate::meta::{SessionKind, UploadSession};
use crate::service::files::Body;
use crate::service::foir_view::foir_fields;
use crate::service::sessions::{parse_expires_in, Capability, FoirFile, NewUpload, SignedDownload};
use crate::types::{rfc3339, FileId};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

/// The base of URLs handed out: `sessions.public_url`, else the request's scheme and Host.
pub fn public_base(req: &HttpRequest, state: &AppState) -> String {
    match &state.service.config.sessions.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let ci = req.connection_info();
            format!("{}://{}", ci.scheme(), ci.host())
        }
    }
}

/// A File in Foir's shape (`id filename mimeType size url width height blurhash alt createdAt
/// metadata`, the one view of [`foir_fields`]) on top of Hypi's fields: `url` is Foir's, the
/// absolute download URL, and Hypi's path moves to `urlPath` (as in GraphQL).
pub fn foir_json(f: &FoirFile, base: &str) -> Value {
    let mut v = views::file(&f.file);
    if let (Value::Object(m), Ok(Value::Object(foir))) =
        (&mut v, serde_json::to_value(foir_fields(f, base)))
    {
        m.insert("urlPath".into(), json!(f.file.url_path()));
        m.extend(foir);
    }
    v
}

/// Hypi's File (with its Image) plus Foir's fields, for `GET /files/{id}`: Hypi's `url` object
/// stays (`url.path`) and gains `href`, the absolute URL Foir calls `url`.
pub fn hypi_and_foir_json(
    f: &FoirFile,
    image: Option<&crate::meta::ImageRecord>,
    base: &str,
) -> Value {
    let mut v = views::file_with_image(&f.file, image);
    if let (Value::Object(m), Ok(Value::Object(foir))) =
        (&mut v, serde_json::to_value(foir_fields(f, base)))
    {
        for (k, val) in foir {
            if k == "url" {
                m.insert(
                    "url".into(),
                    json!({"path": f.file.url_path(), "href": val}),
                );
            } else {
                m.insert(k, val);
            }
        }
    }
    v
}

/// `createFileUpload`'s arguments as a JSON body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUploadBody {
    filename: String,
    mime_type: String,
    size: i64,
    folder: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// `POST /uploads/presigned`: `{uploadId, uploadUrl}`.
#[utoipa::path(
    post, path = "/uploads/presigned", tag = "presigned uploads",
    request_body = CreateUploadBody,
    responses(
        (status = 200, description = "The upload id and the URL to PUT the bytes to", body = super::openapi::PresignedUpload),
        (status = 400, description = "Bad body"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 409, description = "Too many open sessions"),
    ),
)]
pub async fn create_upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CreateUploadBody>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let b = body.into_inner();
    let s = state
        .service
        .create_file_upload(
            &p,
            NewUpload {
                filename: b.filename,
                mime_type: b.mime_type,
                size: b.size,
                folder: b.folder,
                metadata: b.metadata,
            },
        )
        .await?;
    let url = state.service.signed_path(Purpose::Put, &s)?;
    Ok(HttpResponse::Ok().json(json!({
        "uploadId": s.id.to_string(),
        "uploadUrl": format!("{}{url}", public_base(&req, &state)),
    })))
}

/// `POST /uploads/{id}/confirm`: the File.
#[utoipa::path(
    post, path = "/uploads/{id}/confirm", tag = "presigned uploads",
    params(("id" = String, Path, description = "The upload id")),
    responses(
        (status = 200, description = "The File, in Foir's shape", body = super::openapi::FoirFile),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such upload"),
        (status = 409, description = "The bytes have not arrived yet"),
        (status = 410, description = "The upload has expired"),
    ),
)]
pub async fn confirm_upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let f = state.service.confirm_file_upload(&p, &id).await?;
    Ok(HttpResponse::Ok().json(foir_json(&f, &public_base(&req, &state))))
}

/// `POST /temp-files`: `{uploadUrl, downloadUrl}`.
#[utoipa::path(
    post, path = "/temp-files", tag = "temp files",
    responses(
        (status = 200, description = "The signed upload and download URLs", body = super::openapi::TempUrls),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 409, description = "Too many open sessions"),
    ),
)]
pub async fn create_temp(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let s = state.service.create_temp_file(&p).await?;
    Ok(HttpResponse::Ok().json(temp_urls(&req, &state, &s)?))
}

/// A temp file's two URLs.
pub fn temp_urls(req: &HttpRequest, state: &AppState, s: &UploadSession) -> Result<Value> {
    let base = public_base(req, state);
    Ok(json!({
        "uploadUrl": format!("{base}{}", state.service.signed_path(Purpose::TempPut, s)?),
        "downloadUrl": format!("{base}{}", state.service.signed_path(Purpose::TempGet, s)?),
    }))
}

/// The capability in a signed URL's path and query. A missing or malformed signature is an
/// invalid signature (403), never a parse error.
pub(crate) fn capability(
    req: &HttpRequest,
    instance: String,
    session: String,
) -> Result<Capability> {
    let bad = || {
        Error::Session(
            SessionFault::BadSignature,
            "the URL has no valid signature".into(),
        )
    };
    let mut expires = None;
    let mut sig = None;
    for pair in req.query_string().split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = v.parse::<u64>().ok(),
            Some(("sig", v)) => sig = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(Capability {
        instance,
        session,
        expires: expires.ok_or_else(bad)?,
        sig: sig.ok_or_else(bad)?,
    })
}

pub(crate) fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Streams a PUT body into a session; the session's rules (length, type, single use) apply.
async fn receive_put(
    req: HttpRequest,
    state: web::Data<AppState>,
    purpose: Purpose,
    kind: SessionKind,
    path: (String, String),
    mut payload: web::Payload,
) -> Result<UploadSession> {
    let cap = capability(&req, path.0, path.1)?;
    let (session, domain) = state.service.open_capability(purpose, kind, cap).await?;
    let _slot = state.uploads.acquire(&domain, &session.account)?;
    let content_length =
        header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    let mut put = state.service.begin_session_put(
        session,
        header_str(&req, header::CONTENT_TYPE),
        content_length,
    )?;
    while let Some(chunk) = payload.next().await {
        // A stream error is a truncated body, never the end of the file.
        let chunk = chunk.map_err(|e| limits::from_payload(&e))?;
        put.write(chunk).await?;
    }
    put.finish().await
}

/// `PUT /uploads/put/{instance}/{id}`: a presigned upload's bytes (Foir's `uploadUrl`).
#[utoipa::path(
    put, path = "/uploads/put/{instance}/{id}", tag = "presigned uploads",
    params(("instance" = String, Path, description = "The instance id"),
        ("id" = String, Path, description = "The session id"),
        super::openapi::Signature,),
    request_body(content = super::openapi::Bytes, content_type = "application/octet-stream", description = "The bytes; Content-Type and length as declared"),
    security(()),
    responses(
        (status = 200, description = "Stored (ETag: the SHA-256)", body = super::openapi::StoredPut),
        (status = 400, description = "Length, type or content do not match the declaration"),
        (status = 403, description = "Bad signature"),
        (status = 404, description = "No such upload"),
        (status = 409, description = "Already uploaded"),
        (status = 410, description = "The URL has expired"),
    ),
)]
pub async fn put_upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let s = receive_put(
        req,
        state,
        Purpose::Put,
        SessionKind::PresignedPut,
        path.into_inner(),
        payload,
    )
    .await?;
    Ok(stored(&s))
}

/// `PUT /temp-files/{instance}/{id}/upload`: a temp file's bytes (Amplience's `uploadUrl`).
#[utoipa::path(
    put, path = "/temp-files/{instance}/{id}/upload", tag = "temp files",
    params(("instance" = String, Path, description = "The instance id"),
        ("id" = String, Path, description = "The session id"),
        super::openapi::Signature,),
    request_body(content = super::openapi::Bytes, content_type = "application/octet-stream"),
    security(()),
    responses(
        (status = 200, description = "Stored (ETag: the SHA-256)", body = super::openapi::StoredPut),
        (status = 400, description = "Bad body"),
        (status = 403, description = "Bad signature"),
        (status = 404, description = "No such temp file"),
        (status = 409, description = "Already uploaded"),
        (status = 410, description = "The URL has expired"),
    ),
)]
pub async fn put_temp(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let s = receive_put(
        req,
        state,
        Purpose::TempPut,
        SessionKind::TempFile,
        path.into_inner(),
        payload,
    )
    .await?;
    Ok(stored(&s))
}

/// The answer to a stored PUT: the bytes' SHA-256 as the ETag (as S3 answers a PUT).
fn stored(s: &UploadSession) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    if let Some(b) = &s.bytes {
        res.insert_header((header::ETAG, format!("\"{}\"", b.sha.to_hex())));
    }
    res.json(json!({
        "uploadId": s.id.to_string(),
        "size": s.bytes.as_ref().map(|b| b.size),
        "mimeType": s.bytes.as_ref().map(|b| b.mime.clone()),
    }))
}

/// `GET /temp-files/{instance}/{id}`: a temp file's bytes (Amplience's `downloadUrl`).
#[utoipa::path(
    get, path = "/temp-files/{instance}/{id}", tag = "temp files",
    params(("instance" = String, Path, description = "The instance id"),
        ("id" = String, Path, description = "The session id"),
        super::openapi::Signature, ("Range" = Option<String>, Header)),
    security(()),
    responses(
        (status = 200, description = "The temp file's bytes", content_type = "*/*", body = super::openapi::Bytes),
        (status = 206, description = "The range asked for", content_type = "*/*", body = super::openapi::Bytes),
        (status = 304, description = "Not modified"),
        (status = 403, description = "Bad signature"),
        (status = 404, description = "No such temp file (or not uploaded yet)"),
        (status = 410, description = "The URL has expired"),
        (status = 412, description = "A precondition failed"),
        (status = 416, description = "Range not satisfiable"),
    ),
)]
pub async fn get_temp(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (instance, id) = path.into_inner();
    let cap = capability(&req, instance, id.clone())?;
    // A multipart temp file, once completed, is served like a single-part one.
    let (session, _) = state
        .service
        .open_signed_session(
            Purpose::TempGet,
            &id,
            &[SessionKind::TempFile, SessionKind::MultipartTempFile],
            cap,
        )
        .await?;
    let dl = state.service.open_temp_download(session).await?;
    serve(&req, dl)
}

/// `expiresIn` of a new link: a duration such as `1h`, `30m`, `90s`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkBody {
    expires_in: String,
}

/// A link's JSON: its id, URL and expiry.
pub fn link_json(req: &HttpRequest, state: &AppState, s: &UploadSession) -> Result<Value> {
    let url = state.service.signed_path(Purpose::Link, s)?;
    Ok(json!({
        "id": s.id.to_string(),
        "fileId": s.file.map(|f| f.to_string()),
        "url": format!("{}{url}", public_base(req, state)),
        "expiresAt": rfc3339(s.expires),
    }))
}

fn file_id(raw: &str) -> Result<FileId> {
    raw.parse().map_err(|_| Error::not_found())
}

/// `POST /files/{id}/links` `{"expiresIn":"1h"}`: a signed download link.
#[utoipa::path(
    post, path = "/files/{id}/links", tag = "links",
    params(("id" = String, Path, description = "The file's id")),
    request_body = LinkBody,
    responses(
        (status = 201, description = "The signed link", body = super::openapi::Link),
        (status = 400, description = "Bad expiresIn"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such file"),
        (status = 409, description = "Too many links"),
    ),
)]
pub async fn create_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<LinkBody>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let ttl = parse_expires_in(&body.expires_in)?;
    let s = state.service.create_link(&p, file_id(&id)?, ttl).await?;
    Ok(HttpResponse::Created().json(link_json(&req, &state, &s)?))
}

/// `DELETE /files/{id}/links/{link}`: revokes a link at once.
#[utoipa::path(
    delete, path = "/files/{id}/links/{link}", tag = "links",
    params(("id" = String, Path, description = "The file's id"), ("link" = String, Path, description = "The link's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such file or link"),
    ),
)]
pub async fn delete_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let (id, link) = path.into_inner();
    state.service.delete_link(&p, file_id(&id)?, &link).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /links/{instance}/{id}`: the linked file, without a token.
#[utoipa::path(
    get, path = "/links/{instance}/{id}", tag = "links",
    params(("instance" = String, Path, description = "The instance id"),
        ("id" = String, Path, description = "The session id"),
        super::openapi::Signature, ("Range" = Option<String>, Header)),
    security(()),
    responses(
        (status = 200, description = "The linked file's bytes", content_type = "*/*", body = super::openapi::Bytes),
        (status = 206, description = "The range asked for", content_type = "*/*", body = super::openapi::Bytes),
        (status = 304, description = "Not modified"),
        (status = 403, description = "Bad signature"),
        (status = 404, description = "No such link or file"),
        (status = 410, description = "The link has expired"),
        (status = 412, description = "A precondition failed"),
        (status = 416, description = "Range not satisfiable"),
    ),
)]
pub async fn get_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (instance, id) = path.into_inner();
    let cap = capability(&req, instance, id)?;
    let (session, domain) = state
        .service
        .open_capability(Purpose::Link, SessionKind::DownloadLink, cap)
        .await?;
    let dl = state.service.open_link_download(session, domain).await?;
    serve(&req, dl)
}

/// Serves bytes reached through a signed URL with the download rules of `GET /file/...` (the
/// same code: validators, ranges, conditional requests, HEAD); not cached by shared caches.
fn serve(req: &HttpRequest, dl: SignedDownload) -> Result<HttpResponse> {
    download::respond(
        req,
        download::Representation {
            sha: dl.sha,
            modified_secs: dl.modified / 1000,
            mime: dl.mime,
            name: dl.name,
            len: dl.len,
            cache_control: "private, no-store",
            body: Body::Open(dl.handle),
            keep: dl
                .lease
                .map(|l| Box::new(l) as Box<dyn std::any::Any + Send>),
        },
    )
}
