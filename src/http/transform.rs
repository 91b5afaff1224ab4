//! Image transforms on `GET`/`HEAD /file/<instanceId>-<fileId>.<ext>?w=320&h=240&fit=cover&format=webp`:
//! the parameters are parsed here, the variant is found or computed by the service, and the
//! answer goes through [`download::respond`] like any download (its own ETag, ranges,
//! conditional requests, nosniff, CSP), cached as immutable.

use super::download::{respond, Representation};
use super::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::media::transform::Request;
use crate::types::{FileId, InstanceId};
use actix_web::{HttpRequest, HttpResponse};

/// A variant's bytes never change (its name is its content), so it is immutable. Readable
/// without a token: shared caches may keep it, for a day (a revoked anonymous grant reaches
/// them within that). Otherwise only the caller's own cache keeps it.
const PUBLIC: &str = "public, max-age=86400, immutable";
const PRIVATE: &str = "private, max-age=31536000, immutable";

/// The transform the query string asks for, if any (400 with its code when malformed).
pub fn requested(req: &HttpRequest, state: &AppState) -> Result<Option<Request>> {
    let q = req.query_string();
    if q.is_empty() {
        return Ok(None);
    }
    Request::from_query(q, &state.service.transforms.rules)
}

/// Serves the variant `t` of a file, computing it first if new.
pub async fn serve(
    req: &HttpRequest,
    state: &AppState,
    caller: Caller,
    name: (Option<InstanceId>, FileId, Option<String>),
    t: Request,
) -> Result<HttpResponse> {
    let (instance, id, ext) = name;
    let v = state
        .service
        .open_variant(caller, instance, id, ext, t)
        .await?;
    let name = v.name();
    respond(
        req,
        Representation {
            sha: v.variant.sha,
            modified_secs: v.variant.created / 1000,
            mime: v.variant.mime,
            name,
            len: v.len,
            cache_control: if v.public { PUBLIC } else { PRIVATE },
            body: v.body,
            keep: None,
        },
    )
}
