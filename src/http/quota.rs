//! `/instances/{domain}/quotas`, `/instances/{domain}/accounts/{account}/quota` and
//! `/instances/{domain}/usage` (issue 15), and the `RateLimit-*` headers of quota answers.

use super::{caller, json_body, AppState};
use crate::error::{Allowance, Result};
use crate::service::usage::UsageQuery;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Deserialize;
use serde_json::Value;

/// Adds what the quotas leave as the IETF RateLimit draft's structured headers (not the
/// `RateLimit-Limit`/`-Remaining` pair, which the request rate limits use):
/// `RateLimit-Policy: "account-bytes";q=1000, "account-upload-day";q=500;w=86400` and
/// `RateLimit: "account-bytes";r=400, "account-upload-day";r=100;t=3600`.
pub fn allowance_headers(b: &mut HttpResponseBuilder, a: &Allowance) {
    if a.0.is_empty() {
        return;
    }
    let policy: Vec<String> =
        a.0.iter()
            .map(|r| match r.reset_secs {
                Some(_) => format!("\"{}\";q={};w=86400", r.policy, r.limit),
                None => format!("\"{}\";q={}", r.policy, r.limit),
            })
            .collect();
    let left: Vec<String> =
        a.0.iter()
            .map(|r| match r.reset_secs {
                Some(t) => format!("\"{}\";r={};t={t}", r.policy, r.remaining),
                None => format!("\"{}\";r={}", r.policy, r.remaining),
            })
            .collect();
    b.insert_header(("RateLimit-Policy", policy.join(", ")));
    b.insert_header(("RateLimit", left.join(", ")));
}

/// `GET /instances/{domain}/quotas` (admins).
#[utoipa::path(
    get, path = "/instances/{domain}/quotas", tag = "quotas",
    params(super::openapi::DomainParam),
    responses(
        (status = 200, description = "The stored limits and those that apply", body = super::openapi::QuotaSettings),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "Not the caller's instance"),
    ),
)]
pub async fn get_quotas(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let v = state.service.quota_settings(p, &domain).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// `PUT /instances/{domain}/quotas` (admins): `instance` and/or `accountDefault`, each
/// replacing that scope's stored limits; a scope left out is unchanged.
#[utoipa::path(
    put, path = "/instances/{domain}/quotas", tag = "quotas",
    params(super::openapi::DomainParam),
    request_body = super::openapi::QuotaSettingsInput,
    responses(
        (status = 200, description = "The stored limits and those that apply", body = super::openapi::QuotaSettings),
        (status = 400, description = "Bad body: not an object, an unknown field, a limit not a whole number"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "Not the caller's instance"),
    ),
)]
pub async fn put_quotas(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let body = json_body::<Value>(&state, payload, "JSON body").await?;
    let v = state.service.set_quota_settings(p, &domain, body).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// `GET /instances/{domain}/accounts/{account}/quota` (admins, or the account itself).
#[utoipa::path(
    get, path = "/instances/{domain}/accounts/{account}/quota", tag = "quotas",
    params(super::openapi::DomainParam, super::openapi::AccountParam),
    responses(
        (status = 200, description = "The account's own limits and those that apply", body = super::openapi::AccountQuota),
        (status = 400, description = "A bad account id"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Another account's, and not an admin"),
        (status = 404, description = "Not the caller's instance"),
    ),
)]
pub async fn get_account_quota(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let (domain, account) = path.into_inner();
    let v = state.service.account_quota(p, &domain, &account).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// `PUT /instances/{domain}/accounts/{account}/quota` (admins): the body's fields replace
/// the account's stored limits (absent or `null`: the instance's account defaults apply).
#[utoipa::path(
    put, path = "/instances/{domain}/accounts/{account}/quota", tag = "quotas",
    params(super::openapi::DomainParam, super::openapi::AccountParam),
    request_body = super::openapi::QuotaLimits,
    responses(
        (status = 200, description = "The account's own limits and those that apply", body = super::openapi::AccountQuota),
        (status = 400, description = "Bad body or account id"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin of that instance"),
        (status = 404, description = "Not the caller's instance"),
    ),
)]
pub async fn put_account_quota(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let (domain, account) = path.into_inner();
    let body = json_body::<Value>(&state, payload, "JSON body").await?;
    let v = state
        .service
        .set_account_quota(p, &domain, &account, body)
        .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// The query of `GET /instances/{domain}/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// One account's usage (another's than the caller's: admins only).
    #[param(min_length = 1, max_length = 512)]
    account: Option<String>,
    /// Page cursor: the `next` of the previous page.
    #[param(min_length = 1, max_length = 512)]
    after: Option<String>,
    /// Accounts per page (default 100; at most `service::usage::MAX_USAGE_PAGE`).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /instances/{domain}/usage`: an admin gets the instance's totals and a page of its
/// accounts (or one account with `account`); anyone else their own.
#[utoipa::path(
    get, path = "/instances/{domain}/usage", tag = "quotas",
    params(super::openapi::DomainParam, UsageParams),
    responses(
        (status = 200, description = "One account's usage, or the instance's with a page of accounts", body = super::openapi::UsageReport),
        (status = 400, description = "Bad query (limit out of range, bad account id or cursor)"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Another account's usage, and not an admin"),
        (status = 404, description = "Not the caller's instance"),
    ),
)]
pub async fn get_usage(
    req: HttpRequest,
    state: web::Data<AppState>,
    domain: web::Path<String>,
    q: web::Query<UsageParams>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let q = q.into_inner();
    let v = state
        .service
        .usage_report(
            p,
            &domain,
            UsageQuery {
                account: q.account,
                after: q.after,
                limit: q.limit,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(v))
}
