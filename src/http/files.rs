//! `GET /files`, `GET /files/{id}`, `DELETE /files/{id}`.

use super::{caller, views, AppState};
use crate::error::{Error, Result};
use crate::types::FileId;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

/// Query of a listing.
#[derive(Debug, Deserialize)]
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

/// One file record, for whoever may read the file (anonymous callers through a grant).
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let (file, image) = state.service.get_file(caller, file_id(&id)?).await?;
    let mut v = views::file_with_image(&file, image.as_ref());
    v["content"] = views::content(&state.service, &file).await?;
    Ok(HttpResponse::Ok().json(v))
}

/// Deletes a file.
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
