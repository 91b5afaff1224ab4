//! `/instances/{domain}/webhooks`: an instance's admins configure webhooks, read each one's
//! delivery log and redeliver an event (issue 15). The bodies sent are rendered here too
//! ([`event_body`]): the Hypi shapes live in this layer.

use super::{caller, limits, method_not_allowed, views, AppState};
use crate::error::{Error, Result};
use crate::graphql::webhooks::{delivery_view, webhook_view};
use crate::meta::webhooks::{Delivery, Subject, Webhook};
use crate::service::webhooks::{WebhookInput, MAX_LISTED};
use crate::types::{rfc3339, DeliveryId, WebhookId};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

/// Registers the webhook routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/instances/{domain}/webhooks")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/instances/{domain}/webhooks/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/instances/{domain}/webhooks/{id}/deliveries")
            .route(web::get().to(deliveries))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/instances/{domain}/webhooks/{id}/deliveries/{delivery}/redeliver")
            .route(web::post().to(redeliver))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Body of `POST /instances/{domain}/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where deliveries are POSTed: http(s), reachable under the remote fetch rules.
    #[schema(format = "uri", max_length = 2048)]
    url: String,
    /// The signing secret, no control characters; made (`whsec_...`) when left out, and shown
    /// only in this answer.
    #[schema(min_length = 16, max_length = 256)]
    secret: Option<String>,
    /// The events delivered.
    #[schema(value_type = Vec<EventName>, min_items = 1)]
    events: Vec<String>,
}

/// An event a webhook subscribes to (schema only: `meta::webhooks::WebhookEvent` parses them;
/// a unit test below keeps the two lists equal).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum EventName {
    #[serde(rename = "file.created")]
    FileCreated,
    #[serde(rename = "file.updated")]
    FileUpdated,
    #[serde(rename = "file.deleted")]
    FileDeleted,
    #[serde(rename = "access.granted")]
    AccessGranted,
    #[serde(rename = "access.revoked")]
    AccessRevoked,
    #[serde(rename = "upload.failed")]
    UploadFailed,
}

/// The JSON body of a delivery: the event, when, where, by whom, and what it is about in its
/// Hypi shape (`file`, `accessRight`, or `upload` for `upload.failed`).
pub fn event_body(w: &Webhook, d: &Delivery) -> Value {
    let mut v = json!({
        "id": d.event_id.to_string(),
        "event": d.event.name(),
        "time": rfc3339(d.time),
        "instance": {"id": w.instance.to_string(), "domain": w.domain},
        "actor": {"hypi": {"id": d.actor.0}},
    });
    match &d.subject {
        Subject::File(f) => {
            v["file"] = views::file(f);
            // The REST views leave `trashed` out (their listings never show trashed files);
            // a receiver needs it to tell a trash from an untrash.
            v["file"]["hypi"]["trashed"] = f.trashed.map(rfc3339).into();
        }
        Subject::Right(r) => v["accessRight"] = views::access_right(r),
        Subject::Upload {
            session,
            kind,
            name,
            error,
        } => {
            v["upload"] =
                json!({"id": session.to_string(), "kind": kind, "name": name, "error": error})
        }
        // Filled by the store when the change was written; never stored so.
        Subject::Written => {}
    }
    v
}

fn webhook_id(raw: &str) -> Result<WebhookId> {
    raw.parse()
        .map_err(|_| Error::NotFound("no such webhook".into()))
}

/// Creates a webhook (admins of the instance); the answer is the only one holding its secret.
#[utoipa::path(
    post, path = "/instances/{domain}/webhooks", tag = "webhooks",
    params(super::openapi::DomainParam),
    request_body = WebhookBody,
    responses(
        (status = 201, description = "The webhook, with its secret", body = crate::graphql::webhooks::Webhook),
        (status = 400, description = "Bad body, URL, events or secret (`INVALID_WEBHOOK`)"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 429, description = "The instance has as many webhooks as allowed, or too many requests"),
    ),
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    // Admins only: others are refused before their body is read.
    if !p.admin {
        return Err(Error::Forbidden(
            "only an admin of the instance may manage its webhooks".into(),
        ));
    }
    let body = limits::read_body(payload, state.service.config.max_body_bytes).await?;
    let body: WebhookBody = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidWebhook(format!("invalid webhook: {e}")))?;
    let hook = state
        .service
        .create_webhook(
            p,
            domain.into_inner(),
            WebhookInput {
                url: body.url,
                secret: body.secret,
                events: body.events,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(webhook_view(&hook, true)))
}

/// The instance's webhooks (admins), without their secrets.
#[utoipa::path(
    get, path = "/instances/{domain}/webhooks", tag = "webhooks",
    params(super::openapi::DomainParam),
    responses(
        (status = 200, description = "The webhooks, in creation order", body = Vec<crate::graphql::webhooks::Webhook>),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
    ),
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let hooks = state.service.webhooks(p, domain.into_inner()).await?;
    Ok(HttpResponse::Ok().json(
        hooks
            .iter()
            .map(|w| webhook_view(w, false))
            .collect::<Vec<_>>(),
    ))
}

/// One webhook (admins), without its secret.
#[utoipa::path(
    get, path = "/instances/{domain}/webhooks/{id}", tag = "webhooks",
    params(
        super::openapi::DomainParam,
        ("id" = String, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 200, description = "The webhook", body = crate::graphql::webhooks::Webhook),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "No such webhook"),
    ),
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let (domain, id) = path.into_inner();
    let hook = state.service.webhook(p, domain, webhook_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(webhook_view(&hook, false)))
}

/// Deletes a webhook with its pending deliveries and its log (admins).
#[utoipa::path(
    delete, path = "/instances/{domain}/webhooks/{id}", tag = "webhooks",
    params(
        super::openapi::DomainParam,
        ("id" = String, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "No such webhook"),
    ),
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let (domain, id) = path.into_inner();
    state
        .service
        .delete_webhook(p, domain, webhook_id(&id)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of the delivery log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// How many deliveries, newest first (1 to 100; more are cut to 100).
    first: Option<usize>,
}

/// A webhook's deliveries, newest first, with their last attempts (admins).
#[utoipa::path(
    get, path = "/instances/{domain}/webhooks/{id}/deliveries", tag = "webhooks",
    params(
        super::openapi::DomainParam,
        ("id" = String, Path, description = "The webhook's id"),
        LogQuery,
    ),
    responses(
        (status = 200, description = "The deliveries, newest first", body = Vec<crate::graphql::webhooks::WebhookDelivery>),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "No such webhook"),
    ),
)]
pub async fn deliveries(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    q: web::Query<LogQuery>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let (domain, id) = path.into_inner();
    let log = state
        .service
        .webhook_deliveries(p, domain, webhook_id(&id)?, q.first.unwrap_or(MAX_LISTED))
        .await?;
    Ok(HttpResponse::Ok().json(log.iter().map(delivery_view).collect::<Vec<_>>()))
}

/// Queues a delivery's event again, as a new delivery with the same event id (admins).
#[utoipa::path(
    post, path = "/instances/{domain}/webhooks/{id}/deliveries/{delivery}/redeliver", tag = "webhooks",
    params(
        super::openapi::DomainParam,
        ("id" = String, Path, description = "The webhook's id"),
        ("delivery" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "The new delivery, pending", body = crate::graphql::webhooks::WebhookDelivery),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "No such webhook or delivery"),
    ),
)]
pub async fn redeliver(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let (domain, id, delivery) = path.into_inner();
    let delivery: DeliveryId = delivery
        .parse()
        .map_err(|_| Error::NotFound("no such delivery".into()))?;
    let again = state
        .service
        .redeliver(p, domain, webhook_id(&id)?, delivery)
        .await?;
    Ok(HttpResponse::Accepted().json(delivery_view(&again)))
}

#[cfg(test)]
mod tests {
    use crate::meta::webhooks::WebhookEvent;

    /// The documented event names are the ones the service parses.
    #[test]
    fn documented_events_are_the_known_ones() {
        let schema = <super::EventName as utoipa::PartialSchema>::schema();
        let json = serde_json::to_value(&schema).unwrap_or_default();
        let documented: Vec<&str> = json["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let known: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(documented, known);
    }
}
