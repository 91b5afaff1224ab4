//! Files compiled into the binary and served to browsers (GraphiQL, the web console).
//!
//! depot points no browser at a third party, so every script and stylesheet a page of its own
//! loads is embedded with `include_bytes!` and served under `/<prefix>/<version>/<name>`. The
//! version is a hash of every file of the bundle, so the files are cached for a year as
//! immutable and a new build never meets a stale copy.

use crate::error::{Error, Result};
use actix_web::http::header;
use actix_web::HttpResponse;
use sha2::Digest;

/// One embedded file.
pub struct Asset {
    /// The file's name in its URL.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// `Content-Type` of JavaScript (classic scripts and ES modules alike).
pub const JS: &str = "text/javascript; charset=utf-8";
/// `Content-Type` of stylesheets.
pub const CSS: &str = "text/css; charset=utf-8";

/// A year, the longest lifetime caches honour; the version in the path changes with the content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The version of a bundle: the first 8 bytes of a SHA-256 over every file's name, length and
/// bytes, in hex.
pub fn version(assets: &[Asset]) -> String {
    let mut hash = sha2::Sha256::new();
    for a in assets {
        hash.update(a.name.as_bytes());
        hash.update((a.body.len() as u64).to_le_bytes());
        hash.update(a.body);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file `name` of the bundle at `current` version, answered as immutable. Another version is
/// 404, so no cache ever stores a file under a version it does not belong to.
pub fn serve(assets: &[Asset], current: &str, version: &str, name: &str) -> Result<HttpResponse> {
    let asset = assets
        .iter()
        .find(|a| a.name == name && version == current)
        .ok_or_else(|| Error::NotFound("no such file".into()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(("cross-origin-resource-policy", "same-origin"))
        .body(asset.body))
}

/// An HTML page naming the current asset version, under `csp`: never framed, never sniffed,
/// sends no referrer, and is always revalidated (it is small; the assets it names are cached).
pub fn page(csp: &'static str, html: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(html)
}
