//! tus 1.0 resumable uploads: `POST /tus/` creates an upload, `HEAD /tus/<id>` reports its
//! offset, `PATCH /tus/<id>` appends at that offset, `DELETE /tus/<id>` terminates it, and
//! `OPTIONS` advertises the extensions. The caller is the token's (`Authorization` and
//! `hypi-domain`, as for `POST /upload/**`). Every answer carries `Tus-Resumable`; errors keep
//! depot's JSON shape with tus's status codes (409 offset, 410 expired, 412 version, 415
//! content type, 460 checksum). `GET /tus/<id>` answers the File a complete upload became.
//! The rules live in `service/tus.rs`.

use super::{caller, direct, limits, views, AppState};
use crate::auth::Principal;
use crate::error::{Error, Result, SessionFault};
use crate::meta::SessionState;
use crate::service::tus::{
    Checksum, Concat, PatchHead, TusCreate, TusUpload, TUS_CHECKSUMS, TUS_EXTENSIONS, TUS_VERSION,
};
use crate::types::SessionId;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use futures_util::StreamExt;
use std::time::{Duration, UNIX_EPOCH};

/// The media type of a PATCH body.
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Every response header tus defines, plus depot's own: what a browser page must be allowed to
/// read (`Access-Control-Expose-Headers`).
pub const EXPOSED: &[&str] = &[
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Expires",
    "Depot-File-Id",
    "Depot-File-Url",
];

/// Request headers a tus client sends (lower case), for CORS preflights.
pub const REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "hypi-domain",
    "content-type",
    "tus-resumable",
    "upload-length",
    "upload-defer-length",
    "upload-offset",
    "upload-metadata",
    "upload-concat",
    "upload-checksum",
    "x-http-method-override",
    "x-requested-with",
];

/// Adds `Tus-Resumable` to an answer, error or not; a 412 also lists the versions spoken.
fn answer(result: Result<HttpResponse>) -> HttpResponse {
    let mut res = match result {
        Ok(r) => r,
        Err(e) => e.error_response(),
    };
    let h = res.headers_mut();
    h.insert(
        header::HeaderName::from_static("tus-resumable"),
        header::HeaderValue::from_static(TUS_VERSION),
    );
    if res.status().as_u16() == 412 {
        res.headers_mut().insert(
            header::HeaderName::from_static("tus-version"),
            header::HeaderValue::from_static(TUS_VERSION),
        );
    }
    res
}

fn text<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::BadRequest(format!("{name} is not ASCII")))
        })
        .transpose()
}

fn number(h: &HeaderMap, name: &str) -> Result<Option<u64>> {
    text(h, name)?
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::BadRequest(format!("{name} {v:?} is not a byte count")))
        })
        .transpose()
}

/// The token's caller, after the protocol version (412 without `Tus-Resumable: 1.0.0`).
fn principal(req: &HttpRequest, state: &AppState) -> Result<Principal> {
    let p = caller(req, state)?.require()?.clone();
    match text(req.headers(), "tus-resumable")? {
        Some(v) if v.trim() == TUS_VERSION => Ok(p),
        Some(v) => Err(Error::Session(
            SessionFault::ProtocolVersion,
            format!("Tus-Resumable {v:?} is not supported; this server speaks {TUS_VERSION}"),
        )),
        None => Err(Error::Session(
            SessionFault::ProtocolVersion,
            format!("the request has no Tus-Resumable header; this server speaks {TUS_VERSION}"),
        )),
    }
}

/// Whether the request's body is an upload stream; another declared type with a body is 415.
fn offset_stream(h: &HeaderMap, required: bool) -> Result<bool> {
    let ct = text(h, "content-type")?.map(|c| c.split(';').next().unwrap_or("").trim());
    match ct {
        Some(c) if c.eq_ignore_ascii_case(OFFSET_STREAM) => Ok(true),
        _ if !required && number(h, "content-length")?.unwrap_or(0) == 0 => Ok(false),
        other => Err(Error::Session(
            SessionFault::MediaType,
            format!(
                "the body must be Content-Type: {OFFSET_STREAM}, not {:?}",
                other.unwrap_or("")
            ),
        )),
    }
}

fn expires_header(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// The upload's state as tus headers (`with_meta`: also `Upload-Metadata`, for HEAD).
fn upload_headers(b: &mut HttpResponseBuilder, u: &TusUpload, with_meta: bool) {
    b.insert_header(("Upload-Offset", u.offset.to_string()));
    match u.length() {
        Some(len) => b.insert_header(("Upload-Length", len.to_string())),
        None => b.insert_header(("Upload-Defer-Length", "1")),
    };
    if u.session.state == SessionState::Open {
        b.insert_header(("Upload-Expires", expires_header(u.session.expires)));
    }
    match &u.concat {
        Concat::Single => {}
        Concat::Partial => {
            b.insert_header(("Upload-Concat", "partial"));
        }
        Concat::Final(ids) => {
            let urls: Vec<String> = ids.iter().map(|i| format!("/tus/{i}")).collect();
            b.insert_header(("Upload-Concat", format!("final;{}", urls.join(" "))));
        }
    }
    if with_meta {
        if let Some(m) = &u.metadata {
            b.insert_header(("Upload-Metadata", m.as_str()));
        }
    }
    if let Some(f) = &u.file {
        b.insert_header(("Depot-File-Id", f.id.to_string()));
        b.insert_header(("Depot-File-Url", f.url_path()));
    }
}

/// `OPTIONS /tus/...`: what this server speaks. No token needed (tus clients probe first).
#[utoipa::path(
    options, path = "/tus", tag = "tus",
    security(()),
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size headers")),
)]
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    answer(Ok(HttpResponse::NoContent()
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", TUS_EXTENSIONS))
        .insert_header((
            "Tus-Max-Size",
            state.service.config.tus_max_size().to_string(),
        ))
        .insert_header(("Tus-Checksum-Algorithm", TUS_CHECKSUMS))
        .finish()))
}

/// The id in an upload URL (`/tus/<id>`, absolute or not) of `Upload-Concat: final;...`.
fn partial_id(url: &str) -> Result<SessionId> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|_| path.contains("/tus/"))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "Upload-Concat names {url:?}, which is not an upload URL of this server"
            ))
        })
}

fn concat(h: &HeaderMap) -> Result<Concat> {
    match text(h, "upload-concat")?.map(str::trim) {
        None => Ok(Concat::Single),
        Some("partial") => Ok(Concat::Partial),
        Some(v) => match v.strip_prefix("final;") {
            Some(urls) => Ok(Concat::Final(
                urls.split(' ')
                    .filter(|u| !u.is_empty())
                    .map(partial_id)
                    .collect::<Result<_>>()?,
            )),
            None => Err(Error::BadRequest(format!(
                "Upload-Concat {v:?} is neither \"partial\" nor \"final;<urls>\""
            ))),
        },
    }
}

/// `POST /tus/`: creates an upload (with its first bytes when the body is an upload stream);
/// 201 with `Location`.
#[utoipa::path(
    post, path = "/tus", tag = "tus",
    params(("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Length" = Option<u64>, Header), ("Upload-Defer-Length" = Option<String>, Header),
        ("Upload-Metadata" = Option<String>, Header), ("Upload-Concat" = Option<String>, Header),
        ("Upload-Checksum" = Option<String>, Header)),
    request_body(content = super::openapi::Bytes, content_type = "application/offset+octet-stream", description = "Optional first bytes (creation-with-upload)"),
    responses(
        (status = 201, description = "Created; Location is the upload's URL, Upload-Offset what arrived"),
        (status = 400, description = "Bad tus headers"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0"),
        (status = 409, description = "Too many uploads in flight"),
        (status = 415, description = "A body that is not application/offset+octet-stream"),
        (status = 460, description = "Checksum mismatch"),
    ),
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    answer(create_upload(&req, &state, payload).await)
}

async fn create_upload(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let p = principal(req, state)?;
    let h = req.headers();
    let concat = concat(h)?;
    let length = number(h, "upload-length")?;
    let deferred = match text(h, "upload-defer-length")?.map(str::trim) {
        None => false,
        Some("1") => true,
        Some(v) => {
            return Err(Error::BadRequest(format!(
                "Upload-Defer-Length must be 1, not {v:?}"
            )))
        }
    };
    match (&concat, length, deferred) {
        (Concat::Final(_), None, false) => {}
        (Concat::Final(_), _, _) => {
            return Err(Error::BadRequest(
                "a final upload takes no Upload-Length: it is its partials' sum".into(),
            ))
        }
        (_, Some(_), true) => {
            return Err(Error::BadRequest(
                "send either Upload-Length or Upload-Defer-Length: 1, not both".into(),
            ))
        }
        (_, None, false) => {
            return Err(Error::BadRequest(
                "the request needs Upload-Length (or Upload-Defer-Length: 1)".into(),
            ))
        }
        _ => {}
    }
    let with_body = offset_stream(h, false)?;
    if with_body && matches!(concat, Concat::Final(_)) {
        return Err(Error::BadRequest(
            "a final upload takes no bytes of its own".into(),
        ));
    }
    let checksum = text(h, "upload-checksum")?
        .map(Checksum::parse)
        .transpose()?;
    let _slot = match with_body {
        true => Some(state.uploads.acquire(&p.instance, &p.account)?),
        false => None,
    };
    let metadata = text(h, "upload-metadata")?.map(str::to_string);
    let svc = &state.service;
    let mut upload = svc
        .tus_create(
            &p,
            TusCreate {
                length,
                metadata,
                concat,
            },
        )
        .await?;
    let id = upload.session.id.to_string();
    if with_body {
        let head = PatchHead {
            offset: 0,
            length: None,
            content_length: number(h, "content-length")?,
            checksum,
        };
        // The upload exists whatever happens to its first bytes: the answer is 201 with the
        // offset reached, and the client resumes from there (creation-with-upload).
        upload = match receive(svc.tus_patch(&p, &id, head).await, payload).await {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(upload = %id, error = %e, "creation-with-upload body not taken");
                svc.tus_status(&p, &id).await?
            }
        };
    }
    let mut b = HttpResponse::Created();
    b.insert_header((
        header::LOCATION,
        format!("{}/tus/{id}", direct::public_base(req, state)),
    ));
    upload_headers(&mut b, &upload, false);
    Ok(b.finish())
}

/// Streams a PATCH body into the upload; a body that breaks off keeps what arrived.
async fn receive(
    patch: Result<crate::service::tus::TusPatch>,
    mut payload: web::Payload,
) -> Result<TusUpload> {
    let mut patch = patch?;
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(c) => patch.write(c).await?,
            Err(e) => {
                patch.keep().await;
                return Err(limits::from_payload(&e));
            }
        }
    }
    patch.finish().await
}

/// `HEAD /tus/<id>`: the offset (and length, metadata, expiry); never cached.
#[utoipa::path(
    head, path = "/tus/{id}", tag = "tus",
    params(("id" = String, Path), ("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses(
        (status = 200, description = "Upload-Offset, Upload-Length, Upload-Metadata headers"),
        (status = 400, description = "Bad tus headers"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0"),
        (status = 404, description = "No such upload"),
        (status = 410, description = "The upload has expired"),
    ),
)]
pub async fn head(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> HttpResponse {
    answer(
        async {
            let p = principal(&req, &state)?;
            let u = state.service.tus_status(&p, &id).await?;
            let mut b = HttpResponse::Ok();
            b.insert_header((header::CACHE_CONTROL, "no-store"));
            upload_headers(&mut b, &u, true);
            Ok(b.finish())
        }
        .await,
    )
}

/// `GET /tus/<id>`: the File a complete upload became (Hypi's shape); 409 before.
#[utoipa::path(
    get, path = "/tus/{id}", tag = "tus",
    params(("id" = String, Path), ("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses(
        (status = 200, description = "The File the complete upload became", body = super::openapi::File),
        (status = 409, description = "Not complete yet"),
        (status = 400, description = "Bad tus headers"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0"),
        (status = 404, description = "No such upload"),
        (status = 410, description = "The upload has expired"),
    ),
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> HttpResponse {
    answer(
        async {
            let p = principal(&req, &state)?;
            let u = state.service.tus_status(&p, &id).await?;
            let Some(file) = &u.file else {
                let why = match (&u.concat, u.length()) {
                    (Concat::Partial, _) => {
                        "a partial upload becomes part of a final upload, not a File".to_string()
                    }
                    (_, Some(len)) => format!(
                        "the upload has {} of {len} bytes; it becomes a File once all arrived",
                        u.offset
                    ),
                    (_, None) => format!("the upload has {} bytes and no length yet", u.offset),
                };
                return Err(Error::Session(SessionFault::Incomplete, why));
            };
            let mut b = HttpResponse::Ok();
            b.insert_header((header::CACHE_CONTROL, "no-store"));
            upload_headers(&mut b, &u, true);
            Ok(b.json(views::file(file)))
        }
        .await,
    )
}

/// `PATCH /tus/<id>`: appends the body at `Upload-Offset`; 204 with the new offset (and, when
/// it was the last byte, the File's id and path).
#[utoipa::path(
    patch, path = "/tus/{id}", tag = "tus",
    params(("id" = String, Path), ("Tus-Resumable" = String, Header, description = "`1.0.0`"), ("Upload-Offset" = u64, Header), ("Upload-Length" = Option<u64>, Header), ("Upload-Checksum" = Option<String>, Header)),
    request_body(content = super::openapi::Bytes, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; Upload-Offset is the new offset"),
        (status = 400, description = "Bad tus headers"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0"),
        (status = 404, description = "No such upload"),
        (status = 409, description = "Upload-Offset is not the upload's offset"),
        (status = 410, description = "The upload has expired"),
        (status = 415, description = "Not application/offset+octet-stream"),
        (status = 460, description = "Checksum mismatch"),
    ),
)]
pub async fn patch(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    answer(patch_upload(&req, &state, &id, payload).await)
}

async fn patch_upload(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let p = principal(req, state)?;
    let h = req.headers();
    offset_stream(h, true)?;
    let offset = number(h, "upload-offset")?
        .ok_or_else(|| Error::BadRequest("a PATCH needs Upload-Offset".into()))?;
    let head = PatchHead {
        offset,
        length: number(h, "upload-length")?,
        content_length: number(h, "content-length")?,
        checksum: text(h, "upload-checksum")?
            .map(Checksum::parse)
            .transpose()?,
    };
    let _slot = state.uploads.acquire(&p.instance, &p.account)?;
    let u = receive(state.service.tus_patch(&p, id, head).await, payload).await?;
    let mut b = HttpResponse::NoContent();
    upload_headers(&mut b, &u, false);
    Ok(b.finish())
}

/// `DELETE /tus/<id>` (termination): 204; the upload is gone (404) from then on.
#[utoipa::path(
    delete, path = "/tus/{id}", tag = "tus",
    params(("id" = String, Path), ("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses(
        (status = 204, description = "Terminated"),
        (status = 400, description = "Bad tus headers"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0"),
        (status = 404, description = "No such upload"),
        (status = 410, description = "The upload has expired"),
    ),
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> HttpResponse {
    answer(
        async {
            let p = principal(&req, &state)?;
            state.service.tus_terminate(&p, &id).await?;
            Ok(HttpResponse::NoContent().finish())
        }
        .await,
    )
}

/// `POST /tus/<id>` with `X-HTTP-Method-Override: PATCH` or `DELETE`, for clients behind
/// proxies that drop those methods (tus-js-client's `overridePatchMethod`).
#[utoipa::path(
    post, path = "/tus/{id}", tag = "tus",
    params(("id" = String, Path), ("Tus-Resumable" = String, Header, description = "`1.0.0`"), ("X-HTTP-Method-Override" = String, Header, description = "`PATCH` or `DELETE`"), ("Upload-Offset" = Option<u64>, Header)),
    request_body(content = super::openapi::Bytes, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; Upload-Offset is the new offset"),
        (status = 400, description = "Bad tus headers"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 412, description = "Tus-Resumable missing or not 1.0.0"),
        (status = 404, description = "No such upload"),
        (status = 409, description = "Upload-Offset is not the upload's offset"),
        (status = 410, description = "The upload has expired"),
        (status = 415, description = "Not application/offset+octet-stream"),
        (status = 460, description = "Checksum mismatch"),
        (status = 405, description = "No or another override"),
    ),
)]
pub async fn overridden(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let method = req
        .headers()
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_uppercase());
    match method.as_deref() {
        Some("PATCH") => answer(patch_upload(&req, &state, &id, payload).await),
        Some("DELETE") => delete(req, state, id).await,
        _ => not_allowed(req).await,
    }
}

/// Any other method on a tus route: 405, with `Tus-Resumable`.
pub async fn not_allowed(req: HttpRequest) -> HttpResponse {
    super::with_allow(&req, answer(Err(Error::method_not_allowed())))
}
