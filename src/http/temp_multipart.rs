//! Amplience's multipart temp files over HTTP, speaking S3 on the signed URLs:
//! - `POST /temp-files/multipart` `{"filesize": N}` (token; `createTempFileMultipartUploadUrl`
//!   in GraphQL): `{uploadPartUrls, completeUrl, downloadUrl, minPartSize, maxPartSize}`.
//! - `PUT /temp-files/{instance}/{id}/parts/{n}` (a part URL, no token): the part's bytes;
//!   answered `200` with `ETag: "<md5 hex>"`, as S3 answers UploadPart.
//! - `POST /temp-files/{instance}/{id}/complete` (no token): S3's `<CompleteMultipartUpload>`
//!   XML; answered with `<CompleteMultipartUploadResult>`.
//! - The `downloadUrl` is a temp file's (`GET /temp-files/{instance}/{id}`, direct.rs).
//!
//! Errors on the signed URLs are S3's `<Error><Code>..</Code><Message>..</Message></Error>`
//! with S3's names (`InvalidPart`, `NoSuchUpload`, `MalformedXML`, ...); the token route answers
//! the service's JSON errors like every other route.

use super::direct::{capability, header_str, public_base};
use super::{caller, limits, AppState};
use crate::auth::sign::Purpose;
use crate::error::{Error, Result, S3Fault, SessionFault};
use crate::meta::SessionKind;
use crate::service::temp_multipart::{CompletedPart, MultipartUrls, PartLayout, MAX_PARTS};
use crate::service::Service;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use quick_xml::events::Event;
use serde::Deserialize;
use serde_json::{json, Value};

/// Bytes of a complete request per part it may list (S3's `<Part>` with an ETag and a
/// checksum is ~250 bytes; room for whitespace and namespaces).
const XML_PER_PART: usize = 512;
/// Bytes of a complete request beyond its parts (declaration, root element).
const XML_BASE: usize = 4096;
/// Deepest element nesting a complete request has (root, Part, field).
const XML_DEPTH: usize = 3;

/// `createTempFileMultipartUploadUrl`'s input as a JSON body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The file's size in bytes (Amplience's `filesize`; `fileSize` is accepted too).
    #[serde(alias = "fileSize")]
    filesize: i64,
}

/// `POST /temp-files/multipart`: the part URLs, complete URL and download URL.
#[utoipa::path(
    post, path = "/temp-files/multipart", tag = "temp files",
    request_body = CreateBody,
    responses(
        (status = 200, description = "Signed part URLs, complete URL, download URL", body = super::openapi::MultipartUrls),
        (status = 400, description = "Bad size"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 409, description = "Too many open sessions"),
    ),
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse> {
    let p = caller(&req, &state)?.require()?.clone();
    let s = state
        .service
        .create_multipart_temp_file(&p, body.filesize)
        .await?;
    let urls = state
        .service
        .multipart_urls(&s, &public_base(&req, &state))?;
    Ok(HttpResponse::Ok().json(urls_json(&urls)))
}

fn urls_json(u: &MultipartUrls) -> Value {
    json!({
        "uploadPartUrls": u.upload_part_urls,
        "completeUrl": u.complete_url,
        "downloadUrl": u.download_url,
        "minPartSize": u.min_part_size,
        "maxPartSize": u.max_part_size,
    })
}

/// `PUT /temp-files/{instance}/{id}/parts/{n}`: one part's bytes, answered as S3's UploadPart.
#[utoipa::path(
    put, path = "/temp-files/{instance}/{id}/parts/{number}", tag = "temp files",
    params(("instance" = String, Path), ("id" = String, Path), ("number" = u32, Path, description = "The part number, from 1"),
        super::openapi::Signature),
    request_body(content = super::openapi::Bytes, content_type = "application/octet-stream"),
    security(()),
    responses(
        (status = 200, description = "Stored: ETag (MD5) and x-amz-checksum-sha256 headers"),
        super::openapi::S3Errors,
    ),
)]
pub async fn put_part(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
) -> HttpResponse {
    s3_answer(receive_part(req, state, path.into_inner(), payload).await)
}

async fn receive_part(
    req: HttpRequest,
    state: web::Data<AppState>,
    (instance, id, number): (String, String, String),
    mut payload: web::Payload,
) -> Result<HttpResponse> {
    // A number that does not parse cannot have been signed: the signature check refuses it.
    let n: u32 = number.parse().unwrap_or(0);
    let signed = Service::part_signed_id(&id, n);
    let cap = capability(&req, instance, id)?;
    let (session, domain) = state
        .service
        .open_signed_session(
            Purpose::MultipartPart,
            &signed,
            &[SessionKind::MultipartTempFile],
            cap,
        )
        .await?;
    let _slot = state.uploads.acquire(&domain, &session.account)?;
    let content_length =
        header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    let mut put = state
        .service
        .begin_multipart_part(session, n, content_length)
        .await?;
    while let Some(chunk) = payload.next().await {
        // A stream error is a truncated body, never the end of the part.
        let chunk = chunk.map_err(|e| limits::from_payload(&e))?;
        put.write(chunk).await?;
    }
    let part = put.finish().await?;
    use base64::Engine;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::ETAG,
            format!("\"{}\"", part.md5.map(|m| m.to_hex()).unwrap_or_default()),
        ))
        .insert_header((
            "x-amz-checksum-sha256",
            base64::engine::general_purpose::STANDARD.encode(part.sha.0),
        ))
        .finish())
}

/// `POST /temp-files/{instance}/{id}/complete`: S3's CompleteMultipartUpload.
#[utoipa::path(
    post, path = "/temp-files/{instance}/{id}/complete", tag = "temp files",
    params(("instance" = String, Path, description = "The instance id"),
        ("id" = String, Path, description = "The session id"),
        super::openapi::Signature,),
    request_body(content = String, content_type = "application/xml", description = "S3's `<CompleteMultipartUpload>` with its `<Part>`s"),
    security(()),
    responses(
        (status = 200, description = "S3's `<CompleteMultipartUploadResult>`", content_type = "application/xml", body = String),
        super::openapi::S3Errors,
    ),
)]
pub async fn complete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> HttpResponse {
    s3_answer(receive_complete(req, state, path.into_inner(), payload).await)
}

async fn receive_complete(
    req: HttpRequest,
    state: web::Data<AppState>,
    (instance, id): (String, String),
    mut payload: web::Payload,
) -> Result<HttpResponse> {
    let cap = capability(&req, instance, id.clone())?;
    let (session, _) = state
        .service
        .open_signed_session(
            Purpose::MultipartComplete,
            &id,
            &[SessionKind::MultipartTempFile],
            cap,
        )
        .await?;
    let count = PartLayout::of(&session)?.count as usize;
    let limit = XML_BASE + count.min(MAX_PARTS as usize) * XML_PER_PART;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        // Past the server's body cap (`max_body_bytes`) it is as oversize as past ours.
        let chunk = chunk.map_err(|e| match limits::from_payload(&e) {
            Error::PayloadTooLarge(m) => Error::S3(S3Fault::MalformedXml, m),
            other => other,
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Error::S3(
                S3Fault::MalformedXml,
                format!(
                    "the complete request is larger than {limit} bytes, the most {count} part(s) take"
                ),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let listed = parse_complete(&body)?;
    let done = state.service.complete_multipart(session, listed).await?;
    let location = format!(
        "{}{}",
        public_base(&req, &state),
        state.service.signed_path(Purpose::TempGet, &done.session)?
    );
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Location>{}</Location><Bucket>temp-files</Bucket><Key>{}</Key>\
         <ETag>{}</ETag><ChecksumSHA256>{}</ChecksumSHA256>\
         </CompleteMultipartUploadResult>",
        quick_xml::escape::escape(location.as_str()),
        done.session.id,
        quick_xml::escape::escape(done.etag.as_str()),
        done.checksum_sha256,
    );
    Ok(HttpResponse::Ok()
        .content_type("application/xml")
        .insert_header((header::ETAG, done.etag))
        .body(xml))
}

fn malformed(why: impl Into<String>) -> Error {
    Error::S3(S3Fault::MalformedXml, why.into())
}

/// One entity or character reference (`&quot;`, `&#34;`, `&#x22;`) as its text.
fn resolve_ref(name: &str) -> Result<String> {
    let c = match name {
        "quot" => '"',
        "amp" => '&',
        "apos" => '\'',
        "lt" => '<',
        "gt" => '>',
        _ => {
            let code = if let Some(h) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                u32::from_str_radix(h, 16).ok()
            } else if let Some(d) = name.strip_prefix('#') {
                d.parse().ok()
            } else {
                None
            };
            code.and_then(char::from_u32)
                .ok_or_else(|| malformed(format!("unknown entity &{name};")))?
        }
    };
    Ok(c.to_string())
}

/// Parses S3's `<CompleteMultipartUpload>`: its `<Part>`s with `PartNumber` and `ETag` or
/// `ChecksumSHA256` (other checksums are ignored). No DTD, at most [`XML_DEPTH`] levels and
/// [`MAX_PARTS`] parts; the body's size is bounded by the caller.
pub fn parse_complete(body: &[u8]) -> Result<Vec<CompletedPart>> {
    let text = std::str::from_utf8(body)
        .map_err(|_| malformed("the complete request is not UTF-8 text"))?;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<String> = Vec::new();
    let mut parts = Vec::new();
    let mut current: PartFields = None;
    let mut field = String::new();
    let mut root_seen = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(format!("the complete request is not well-formed XML: {e}")))?;
        match event {
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err(malformed("a DTD is not accepted")),
            Event::Start(e) | Event::Empty(e) if stack.len() >= XML_DEPTH => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                return Err(malformed(format!("unexpected element <{name}>")));
            }
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                open(
                    &name,
                    stack.len(),
                    &mut root_seen,
                    &mut current,
                    parts.len(),
                )?;
                field.clear();
                stack.push(name);
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                open(
                    &name,
                    stack.len(),
                    &mut root_seen,
                    &mut current,
                    parts.len(),
                )?;
                field.clear();
                close(&name, &mut current, &mut parts, &field)?;
            }
            Event::Text(t) => {
                let t = t
                    .decode()
                    .map_err(|e| malformed(format!("bad text: {e}")))?;
                if stack.len() == XML_DEPTH {
                    field.push_str(&t);
                } else if !t.trim().is_empty() {
                    return Err(malformed(format!("unexpected text {:?}", t.trim())));
                }
            }
            Event::CData(t) if stack.len() == XML_DEPTH => {
                let t = t
                    .decode()
                    .map_err(|e| malformed(format!("bad text: {e}")))?;
                field.push_str(&t);
            }
            Event::GeneralRef(r) if stack.len() == XML_DEPTH => {
                let name = r
                    .decode()
                    .map_err(|e| malformed(format!("bad reference: {e}")))?;
                field.push_str(&resolve_ref(&name)?);
            }
            Event::CData(_) | Event::GeneralRef(_) => {
                return Err(malformed("unexpected text outside a part's fields"))
            }
            Event::End(_) => {
                let Some(name) = stack.pop() else {
                    return Err(malformed("an end tag without its start"));
                };
                close(&name, &mut current, &mut parts, &field)?;
                field.clear();
            }
            Event::Eof => break,
        }
    }
    if !root_seen || !stack.is_empty() {
        return Err(malformed(
            "the body must be one complete <CompleteMultipartUpload> element",
        ));
    }
    Ok(parts)
}

/// Type of the part being read: its `PartNumber`, `ETag` and `ChecksumSHA256` texts.
type PartFields = Option<(Option<String>, Option<String>, Option<String>)>;

/// Starts element `name` at nesting `depth`: the root, a part, or a part's field.
fn open(
    name: &str,
    depth: usize,
    root_seen: &mut bool,
    current: &mut PartFields,
    parts: usize,
) -> Result<()> {
    match depth {
        0 if name == "CompleteMultipartUpload" && !*root_seen => *root_seen = true,
        1 if name == "Part" => {
            if parts >= MAX_PARTS as usize {
                return Err(malformed(format!("more than {MAX_PARTS} parts")));
            }
            *current = Some((None, None, None));
        }
        2 => {}
        _ => return Err(malformed(format!("unexpected element <{name}>"))),
    }
    Ok(())
}

/// Ends element `name`: a field of the current part, a part, or the root.
fn close(
    name: &str,
    current: &mut PartFields,
    parts: &mut Vec<CompletedPart>,
    field: &str,
) -> Result<()> {
    match name {
        "CompleteMultipartUpload" => Ok(()),
        "Part" => {
            let Some((number, etag, sum)) = current.take() else {
                return Err(malformed("a <Part> end without its start"));
            };
            let number = number
                .ok_or_else(|| malformed("a <Part> without a <PartNumber>"))?
                .trim()
                .parse::<u32>()
                .map_err(|_| malformed("<PartNumber> must be a whole number from 1"))?;
            parts.push(CompletedPart {
                number,
                etag,
                checksum_sha256: sum,
            });
            Ok(())
        }
        _ => {
            let Some(part) = current.as_mut() else {
                return Err(malformed(format!("<{name}> outside a <Part>")));
            };
            let slot = match name {
                "PartNumber" => &mut part.0,
                "ETag" => &mut part.1,
                "ChecksumSHA256" => &mut part.2,
                // S3's other checksums: this service keeps SHA-256 (and the MD5 ETag) only.
                n if n.starts_with("Checksum") => return Ok(()),
                _ => {
                    return Err(malformed(format!(
                        "unexpected element <{name}> in a <Part>"
                    )))
                }
            };
            if slot.is_some() {
                return Err(malformed(format!("<{name}> twice in one <Part>")));
            }
            *slot = Some(field.to_string());
            Ok(())
        }
    }
}

/// S3's name and status for any failure on the signed multipart URLs.
fn s3_code(e: &Error) -> (u16, &'static str) {
    match e {
        Error::S3(f, _) => (e.status(), f.name()),
        Error::Session(SessionFault::BadSignature, _) => (403, "SignatureDoesNotMatch"),
        Error::Session(SessionFault::Expired, _) | Error::NotFound(_) => (404, "NoSuchUpload"),
        Error::FileTooLarge(_) | Error::PayloadTooLarge(_) => (400, "EntityTooLarge"),
        Error::Conflict(_) => (409, "OperationAborted"),
        Error::TooManyRequests(_) => (503, "SlowDown"),
        Error::Timeout(_) => (400, "RequestTimeout"),
        Error::BadRequest(_) | Error::Session(..) => (400, "InvalidRequest"),
        Error::InsufficientStorage(_) => (507, "InsufficientStorage"),
        Error::StorageUnavailable(_) | Error::Unavailable(_) => (503, "ServiceUnavailable"),
        _ if e.status() >= 500 => (500, "InternalError"),
        _ => (e.status(), "InvalidRequest"),
    }
}

/// The answer of a signed multipart URL: the success, or S3's XML error.
fn s3_answer(res: Result<HttpResponse>) -> HttpResponse {
    let e = match res {
        Ok(r) => return r,
        Err(e) => e,
    };
    let (status, code) = s3_code(&e);
    let message = match e {
        Error::Session(SessionFault::Expired, _) => {
            "the upload has expired (its URLs live one hour)".to_string()
        }
        _ => e.client_message(),
    };
    let request_id = super::request_id::current().unwrap_or_default();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{}</Message><RequestId>{}</RequestId></Error>",
        quick_xml::escape::escape(message.as_str()),
        quick_xml::escape::escape(request_id.as_str()),
    );
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/xml")
        .body(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_walkthrough_xml() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="">
   <Part>
      <ETag>"625c1805577b471034e03f28c5620eff"</ETag>
      <PartNumber>1</PartNumber>
   </Part>
   <Part>
      <ETag>&quot;f78130fcaf6bd8e1e215482f22b0bbdd&quot;</ETag>
      <PartNumber>2</PartNumber>
   </Part>
   <Part>
      <ChecksumSHA256>Ynl0ZXM=</ChecksumSHA256>
      <ChecksumCRC32>AAAAAA==</ChecksumCRC32>
      <PartNumber>3</PartNumber>
   </Part>
</CompleteMultipartUpload>"#;
        let parts = parse_complete(xml.as_bytes()).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[0].etag.as_deref(),
            Some("\"625c1805577b471034e03f28c5620eff\"")
        );
        assert_eq!(
            parts[1].etag.as_deref(),
            Some("\"f78130fcaf6bd8e1e215482f22b0bbdd\"")
        );
        assert_eq!(parts[2].number, 3);
        assert_eq!(parts[2].checksum_sha256.as_deref(), Some("Ynl0ZXM="));
    }

    #[test]
    fn refuses_what_is_not_a_complete_request() {
        for bad in [
            "",
            "not xml",
            "<Other/>",
            "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
            "<CompleteMultipartUpload><Part><PartNumber><X>1</X></PartNumber></Part></CompleteMultipartUpload>",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><CompleteMultipartUpload/>",
            "<CompleteMultipartUpload/><CompleteMultipartUpload/>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><ETag>&bogus;</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
        ] {
            match parse_complete(bad.as_bytes()) {
                Err(Error::S3(S3Fault::MalformedXml, _)) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(parse_complete(b"<CompleteMultipartUpload/>")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn s3_errors_keep_s3s_names() {
        let e = Error::S3(S3Fault::InvalidPart, "x".into());
        assert_eq!(s3_code(&e), (400, "InvalidPart"));
        let e = Error::S3(S3Fault::NoSuchUpload, "x".into());
        assert_eq!(s3_code(&e), (404, "NoSuchUpload"));
        let e = Error::Session(SessionFault::BadSignature, "x".into());
        assert_eq!(s3_code(&e), (403, "SignatureDoesNotMatch"));
        assert_eq!(
            s3_code(&Error::Internal("x".into())),
            (500, "InternalError")
        );
    }
}
