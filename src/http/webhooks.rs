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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    secret: Option<String>,
    events: Vec<String>,
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

async fn create(
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

async fn list(
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

async fn get(
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

async fn delete(
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    first: Option<usize>,
}

async fn deliveries(
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

async fn redeliver(
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
