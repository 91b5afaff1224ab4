//! Request ids: every request gets one (`X-Request-Id` from the client when it is safe, a fresh
//! ULID otherwise). It is echoed in the response, recorded on the request's tracing span (so
//! every log line of the request carries it, the blocking pool's too: see
//! `service::blocking`) and put in every JSON error body (`error.requestId`) and GraphQL error
//! (`extensions.requestId`) through [`current`].

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use std::future::Future;
use tracing::Instrument;

/// The header read from the client and written on every response.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent id kept; longer ones are replaced.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled on this task, if it runs under [`middleware`].
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// A client's id, when it is 1..=[`MAX_LEN`] characters of `A-Z a-z 0-9 - _ . : + / = @`:
/// enough for ULIDs, UUIDs, W3C trace ids and base64, and nothing that could break a log line,
/// a header or a JSON string.
pub fn accept(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let safe = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b);
    if bytes.is_empty() || bytes.len() > MAX_LEN || !bytes.iter().all(safe) {
        return None;
    }
    // All ASCII by the check above.
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// Wraps every request: picks its id, runs it inside the id's scope and span, logs one access
/// line at DEBUG (target `depot::access`) and echoes the id in `X-Request-Id`.
pub fn middleware<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(accept)
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    let path = req.path().to_string();
    // The inner services may answer synchronously (the body guard's refusals): their error
    // bodies need the id too.
    let fut = REQUEST_ID.sync_scope(id.clone(), || span.in_scope(|| srv.call(req)));
    let header = HeaderValue::from_str(&id).ok();
    REQUEST_ID.scope(
        id,
        async move {
            let mut res = fut.await?;
            tracing::debug!(
                target: "depot::access",
                %method,
                %path,
                status = res.status().as_u16(),
                "request"
            );
            if let Some(v) = header {
                res.headers_mut().insert(HEADER, v);
            }
            Ok(res)
        }
        .instrument(span),
    )
}

/// Adds `extensions.requestId` to every error of a GraphQL answer.
pub fn tag_graphql_errors(response: &mut async_graphql::Response) {
    let Some(id) = current() else { return };
    for e in &mut response.errors {
        e.extensions
            .get_or_insert_with(Default::default)
            .set("requestId", id.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_ids_are_kept() {
        let ok = |s: &str| accept(&HeaderValue::from_str(s).unwrap());
        assert_eq!(
            ok("01J0ABC-def_1.2:3").as_deref(),
            Some("01J0ABC-def_1.2:3")
        );
        assert_eq!(ok(&"a".repeat(MAX_LEN)).map(|s| s.len()), Some(MAX_LEN));
        assert_eq!(ok(&"a".repeat(MAX_LEN + 1)), None);
        assert_eq!(ok(""), None);
        assert_eq!(ok("a b"), None);
        assert_eq!(ok("a\"b"), None);
        assert_eq!(ok("x{}y"), None);
        assert_eq!(
            accept(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()),
            None
        );
    }
}
