//! `GET`/`HEAD /file/<instanceId>-<fileId>.<ext>`: streamed downloads with ranges and
//! conditional requests.

use super::{caller, disposition::content_disposition, range, AppState};
use crate::error::{Error, Result};
use crate::media;
use crate::service::files::Body;
use crate::types::{FileId, InstanceId};
use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::{Duration, UNIX_EPOCH};

/// Splits `<instanceId>-<fileId>.<ext>` (instance prefix and extension optional).
fn parse_name(name: &str) -> Option<(Option<InstanceId>, FileId, Option<String>)> {
    let (stem, ext) = match name.split_once('.') {
        Some((s, e)) => (s, Some(e.to_string())),
        None => (name, None),
    };
    let (instance, id) = match stem.split_once('-') {
        Some((i, f)) => (Some(i.parse().ok()?), f.parse().ok()?),
        None => (None, stem.parse().ok()?),
    };
    Some((instance, id, ext))
}

/// Weak comparison of an If-None-Match list against our strong ETag.
fn etag_listed(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(h: Option<&str>) -> Option<u64> {
    let t = httpdate::parse_http_date(h?).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Serves a file.
///
/// Mounted as the default service of the `/file` scope and reading the name from the path
/// itself: a `{name}` route would run a regex on every download.
#[utoipa::path(
    get, path = "/file/{name}", tag = "files",
    params(
        ("name" = String, Path, description = "`<instanceId>-<fileId>.<ext>` (the upload's `url.path`)"),
        ("w" = Option<u32>, Query, description = "Transform: width"),
        ("h" = Option<u32>, Query, description = "Transform: height"),
        ("fit" = Option<String>, Query, description = "Transform: cover, contain, fill or inside"),
        ("format" = Option<String>, Query, description = "Transform: jpeg, png, webp or avif"),
        ("q" = Option<u32>, Query, description = "Transform: quality 1-100"),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=a-b`"),
        ("If-None-Match" = Option<String>, Header),
        ("If-Modified-Since" = Option<String>, Header),
        ("If-Match" = Option<String>, Header),
        ("If-Unmodified-Since" = Option<String>, Header),
        ("If-Range" = Option<String>, Header),
    ),
    security((), ("bearer" = [], "hypiDomain" = [])),
    responses(
        (status = 200, description = "The bytes (Content-Type is the file's)", content_type = "*/*", body = super::openapi::Bytes),
        (status = 206, description = "The range asked for", content_type = "*/*", body = super::openapi::Bytes),
        (status = 303, description = "Redirect to the object store (large files, when configured)"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "A bad transform"),
        (status = 401, description = "Bad token"),
        (status = 404, description = "No such file, or not visible to the caller"),
        (status = 412, description = "A precondition failed"),
        (status = 416, description = "Range not satisfiable"),
        (status = 422, description = "The image is too large or does not decode"),
    ),
)]
pub async fn download(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(super::method_not_allowed(req).await);
    }
    let name = req.path().strip_prefix("/file/").unwrap_or("");
    if name.is_empty() || name.contains('/') {
        return Err(Error::NotFound("no such route".into()));
    }
    let caller = caller(&req, &state)?;
    let (instance, id, ext) = parse_name(name).ok_or_else(Error::not_found)?;
    if let Some(t) = super::transform::requested(&req, &state)? {
        return super::transform::serve(&req, &state, caller, (instance, id, ext), t).await;
    }
    let dl = state
        .service
        .open_download(caller, instance, id, ext)
        .await?;
    let f = dl.file;
    // Large files stream from the store: those may go straight from the bucket instead. Small
    // ones are in memory already (read while access was checked), and a Range or HEAD is
    // served here so that If-Range and our validators keep their meaning.
    if req.method() == Method::GET
        && matches!(dl.body, Body::Open(_))
        && !req.headers().contains_key(header::RANGE)
        && state.service.redirects_downloads()
    {
        let (res, decided) = validate(&req, &f.sha256, f.updated / 1000, "private, no-cache");
        if let Some(decided) = decided {
            return Ok(decided);
        }
        let headers = crate::store::ResponseHeaders {
            content_type: f.mime.clone(),
            content_disposition: content_disposition(&f.name, !media::is_active_content(&f.mime)),
            cache_control: "private, no-cache".into(),
        };
        if let Some(url) = state.service.download_redirect(&f, headers).await? {
            return Ok(redirect(res, &url));
        }
    }
    respond(
        &req,
        Representation {
            sha: f.sha256,
            modified_secs: f.updated / 1000,
            mime: f.mime,
            name: f.name,
            len: dl.len,
            cache_control: "private, no-cache",
            body: dl.body,
            keep: None,
        },
    )
}

/// What a download serves: `GET /file/...`, a temp file's `downloadUrl` and a signed link all
/// answer through [`respond`], so they share validators, ranges and conditional requests.
pub struct Representation {
    pub sha: crate::types::Sha256,
    /// Last-Modified, in seconds since the epoch.
    pub modified_secs: u64,
    pub mime: String,
    pub name: String,
    pub len: u64,
    pub cache_control: &'static str,
    pub body: Body,
    /// Held until the body is sent (or dropped): e.g. a lease that keeps the sweep off bytes
    /// being streamed.
    pub keep: Option<Box<dyn std::any::Any + Send>>,
}

/// The validator headers (strong ETag, Last-Modified) and the common ones, and, when a
/// precondition decides the answer (412, 304; RFC 9110 section 13.2.2 order), that answer.
fn validate(
    req: &HttpRequest,
    sha: &crate::types::Sha256,
    modified_secs: u64,
    cache_control: &'static str,
) -> (actix_web::HttpResponseBuilder, Option<HttpResponse>) {
    let etag = format!("\"{}\"", sha.to_hex());
    let last_modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(modified_secs));
    let headers = req.headers();
    let mut res = HttpResponse::build(StatusCode::OK);
    res.insert_header((header::ETAG, etag.clone()))
        .insert_header((header::LAST_MODIFIED, last_modified))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Content-Security-Policy", "sandbox"));
    let decided = if let Some(im) = header_str(headers, header::IF_MATCH) {
        (!im.split(',').map(str::trim).any(|t| t == "*" || t == etag))
            .then_some(StatusCode::PRECONDITION_FAILED)
    } else {
        http_date(header_str(headers, header::IF_UNMODIFIED_SINCE))
            .filter(|since| modified_secs > *since)
            .map(|_| StatusCode::PRECONDITION_FAILED)
    };
    let decided = decided.or_else(|| {
        if let Some(inm) = header_str(headers, header::IF_NONE_MATCH) {
            etag_listed(inm, &etag).then_some(StatusCode::NOT_MODIFIED)
        } else {
            http_date(header_str(headers, header::IF_MODIFIED_SINCE))
                .filter(|since| modified_secs <= *since)
                .map(|_| StatusCode::NOT_MODIFIED)
        }
    });
    let decided = decided.map(|status| res.status(status).finish());
    (res, decided)
}

/// `303 See Other` to `url` (a presigned GET, valid for minutes: never cached), keeping the
/// validators so a client can still revalidate against the node.
fn redirect(mut res: actix_web::HttpResponseBuilder, url: &str) -> HttpResponse {
    res.status(StatusCode::SEE_OTHER)
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .finish()
}

/// Answers a GET or HEAD for `rep`: strong ETag, Last-Modified, preconditions (RFC 9110
/// section 13.2.2 order), If-Range, a single byte range (206/416), nosniff and a sandbox CSP;
/// active content is never inline.
pub fn respond(req: &HttpRequest, rep: Representation) -> Result<HttpResponse> {
    let etag = format!("\"{}\"", rep.sha.to_hex());
    let modified_secs = rep.modified_secs;
    let headers = req.headers();
    let (mut res, decided) = validate(req, &rep.sha, modified_secs, rep.cache_control);
    if let Some(decided) = decided {
        return Ok(decided);
    }

    let inline = !media::is_active_content(&rep.mime);
    res.insert_header((header::CONTENT_TYPE, rep.mime.clone()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(&rep.name, inline),
        ));

    let len = rep.len;
    let if_range_ok = match header_str(headers, header::IF_RANGE) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        // A date validates only if strong (RFC 9110 sections 8.8.2.2 and 13.1.5): at least a
        // second must separate Last-Modified from now, else the file may have changed again
        // within the second the date names.
        Some(v) => {
            http_date(Some(v)) == Some(modified_secs)
                && crate::types::now_millis() / 1000 > modified_secs
        }
    };
    let (start, count) = match header_str(headers, header::RANGE).filter(|_| if_range_ok) {
        None => (0, len),
        Some(h) => match range::parse(h, len) {
            range::RangeRequest::Full => (0, len),
            range::RangeRequest::Unsatisfiable => {
                return Err(Error::RangeNotSatisfiable(
                    "range not satisfiable".into(),
                    len,
                ))
            }
            range::RangeRequest::Partial { start, end } => {
                res.status(StatusCode::PARTIAL_CONTENT)
                    .insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
                (start, end - start + 1)
            }
        },
    };

    if req.method() == Method::HEAD {
        // Sized but empty: the header says `count`, and nothing is read from disk.
        let nothing = futures_util::stream::empty::<std::result::Result<Bytes, Error>>();
        return Ok(res.body(SizedStream::new(count, nothing)));
    }
    match (rep.body, rep.keep) {
        (Body::Read(bytes), _) => {
            Ok(res.body(bytes.slice(start as usize..(start + count) as usize)))
        }
        (Body::Open(blob), None) => {
            Ok(res.body(SizedStream::new(count, blob.into_stream(start, count))))
        }
        (Body::Open(blob), Some(keep)) => {
            let stream = blob.into_stream(start, count).map(move |chunk| {
                let _held = &keep;
                chunk
            });
            Ok(res.body(SizedStream::new(count, stream)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let i = "01F322XSV13R9VAGJXW351PVBT";
        let f = "01F35ZCSYBHTQ4JBWZ1KFXTDZR";
        let (inst, id, ext) = parse_name(&format!("{i}-{f}.png")).unwrap();
        assert_eq!(inst.unwrap().to_string(), i);
        assert_eq!(id.to_string(), f);
        assert_eq!(ext.as_deref(), Some("png"));
        assert!(parse_name(&format!("{f}.png")).unwrap().0.is_none());
        assert!(parse_name(f).unwrap().2.is_none());
        assert!(parse_name("nope.png").is_none());
        assert!(parse_name(&format!("x-{f}.png")).is_none());
    }
}
