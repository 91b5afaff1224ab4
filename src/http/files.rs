//! `GET /files`, `GET /files/{id}`, `DELETE /files/{id}`.

use super::{caller, direct, views, AppState};
use crate::error::{Error, Result};
use crate::types::FileId;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

/// Query of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    directory: Option<String>,
    first: Option<i64>,
    after: Option<String>,
}

fn file_id(raw: &str) -> Result<FileId> {
    raw.parse().map_err(|_| Error::not_found())
}

/// The caller's files, a page at a time.
#[utoipa::path(
    get, path = "/files", tag = "files",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's files", body = super::openapi::FilePage),
        (status = 400, description = "Bad query"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
    ),
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let q = q.into_inner();
    let after = q
        .after
        .map(|a| {
            a.parse()
                .map_err(|_| Error::BadRequest(format!("after {a:?} is not a cursor")))
        })
        .transpose()?;
    let page = state
        .service
        .list_files(p, q.directory, q.first, after)
        .await?;
    Ok(HttpResponse::Ok().json(views::file_page(&state.service, &page).await?))
}

/// Query of `GET /files/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// `foir`: exactly Foir's File (`url` the absolute URL, Hypi's path as `urlPath`).
    #[param(pattern = "^(hypi|foir)$")]
    shape: Option<String>,
}

/// One file record, for whoever may read the file (anonymous callers through a grant): Hypi's
/// fields (with the Image) and Foir's beside them, or Foir's shape with `?shape=foir`.
#[utoipa::path(
    get, path = "/files/{id}", tag = "files",
    params(("id" = String, Path, description = "The file's id"), GetQuery),
    security((), ("bearer" = [], "hypiDomain" = [])),
    responses(
        (status = 200, description = "The file: Hypi's fields with Foir's beside them, or Foir's shape with `shape=foir`", body = super::openapi::FileRecordView),
        (status = 400, description = "Bad shape"),
        (status = 401, description = "Bad token"),
        (status = 404, description = "No such file, or not visible to the caller"),
    ),
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<GetQuery>,
) -> Result<HttpResponse> {
    let foir = match q.shape.as_deref() {
        None | Some("hypi") => false,
        Some("foir") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "shape {other:?} is not one of hypi, foir"
            )))
        }
    };
    let caller = caller(&req, &state)?;
    let (f, image) = state.service.get_file_view(caller, file_id(&id)?).await?;
    let base = direct::public_base(&req, &state);
    // Foir's shape is exactly confirm's answer; Hypi's carries the text `content`.
    if foir {
        return Ok(HttpResponse::Ok().json(direct::foir_json(&f, &base)));
    }
    let mut v = direct::hypi_and_foir_json(&f, image.as_ref(), &base);
    v["content"] = views::content(&state.service, &f.file).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Deletes a file.
#[utoipa::path(
    delete, path = "/files/{id}", tag = "files",
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The root directory cannot be deleted"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such file, or not visible to the caller"),
        (status = 409, description = "A directory that is not empty"),
    ),
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    state.service.delete_file(p, file_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
