//! `/access-rights` and `/instances/{domain}`.

use super::{caller, json_body, views, AppState};
use crate::error::{Error, Result};
use crate::service::access::{AccessRightInput, OneOrMany};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

/// Creates one grant (object body) or several (array body).
#[utoipa::path(
    post, path = "/access-rights", tag = "access",
    request_body = super::openapi::AccessRightsInput,
    responses(
        (status = 201, description = "The grant (object body) or grants (array body)", body = super::openapi::AccessRightsCreated),
        (status = 400, description = "Bad body"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not the owner or an admin"),
        (status = 404, description = "No such file"),
        (status = 409, description = "Too many grants, or the id is taken"),
    ),
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let input: OneOrMany<AccessRightInput> = json_body(&state, payload, "access right").await?;
    let single = matches!(input, OneOrMany::One(_));
    let rights = state.service.grant(p, input.into_vec()).await?;
    let mut out: Vec<Value> = rights.iter().map(views::access_right).collect();
    let body = if single {
        out.remove(0)
    } else {
        Value::Array(out)
    };
    Ok(HttpResponse::Created().json(body))
}

/// Query of a grant listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RightsQuery {
    resource: String,
}

/// Grants on one resource.
#[utoipa::path(
    get, path = "/access-rights", tag = "access",
    params(RightsQuery),
    responses(
        (status = 200, description = "Grants on the resource", body = Vec<super::openapi::AccessRight>),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such resource"),
    ),
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<RightsQuery>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let rights = state.service.rights_on(p, q.into_inner().resource).await?;
    Ok(HttpResponse::Ok().json(rights.iter().map(views::access_right).collect::<Vec<_>>()))
}

/// Revokes a grant.
#[utoipa::path(
    delete, path = "/access-rights/{id}", tag = "access",
    params(("id" = String, Path, description = "The grant's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such grant"),
    ),
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let id = id
        .parse()
        .map_err(|_| Error::NotFound("no such access right".into()))?;
    state.service.revoke(p, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Body of `PUT /instances/{domain}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSettings {
    anonymous_requests: bool,
}

/// Changes an instance's settings (admins of that instance).
#[utoipa::path(
    put, path = "/instances/{domain}", tag = "access",
    params(("domain" = String, Path, description = "The instance's domain")),
    request_body = InstanceSettings,
    responses(
        (status = 200, description = "The instance's settings", body = super::openapi::Instance),
        (status = 400, description = "Bad body"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "No such instance"),
    ),
)]
pub async fn put_instance(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let body: InstanceSettings = json_body(&state, payload, "JSON body").await?;
    let i = state
        .service
        .set_anonymous(p, domain.into_inner(), body.anonymous_requests)
        .await?;
    Ok(HttpResponse::Ok().json(views::instance(&i)))
}

/// An instance's settings (members of that instance).
#[utoipa::path(
    get, path = "/instances/{domain}", tag = "access",
    params(("domain" = String, Path, description = "The instance's domain")),
    responses(
        (status = 200, description = "The instance's settings", body = super::openapi::Instance),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not a member of that instance"),
        (status = 404, description = "No such instance"),
    ),
)]
pub async fn get_instance(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let i = state.service.instance(p, domain.into_inner()).await?;
    Ok(HttpResponse::Ok().json(views::instance(&i)))
}
