//! Directories of the virtual file system: `POST /dirs/**` (create), `GET /dirs/**` (the
//! directory, its totals and a page of its entries), `POST /files/{id}/move` (move and/or
//! rename a file or a whole directory), `PUT`/`DELETE /files/{id}/star` (the caller's star).

use super::{caller, views, AppState};
use crate::error::{Error, Result};
use crate::service::dirs::OnConflict;
use crate::service::names;
use crate::service::query::Ctx;
use crate::types::FileId;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

/// The directory a `/dirs/**` request names (still percent-encoded in the request path).
fn dir_path(req: &HttpRequest) -> Result<String> {
    let raw = req.path().strip_prefix("/dirs").unwrap_or("");
    names::normalize_directory(raw)
}

fn file_id(raw: &str) -> Result<FileId> {
    raw.parse().map_err(|_| Error::not_found())
}

/// Creates a directory and its missing ancestors: 201, or 200 when it existed.
#[utoipa::path(
    post, path = "/dirs/{path}", tag = "directories",
    params(("path" = String, Path, description = "The directory (slashes allowed)")),
    responses(
        (status = 200, description = "It existed", body = super::openapi::File),
        (status = 201, description = "Created", body = super::openapi::File),
        (status = 400, description = "Bad path"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 409, description = "A file has that name"),
    ),
)]
pub async fn create(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let path = dir_path(&req)?;
    let (dir, created) = state.service.make_directory(p, path).await?;
    let mut res = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(res.json(views::file(&dir)))
}

/// Query of a directory listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    arcql: Option<String>,
    first: Option<i32>,
    after: Option<String>,
}

/// The directory, its totals (computed from its subtree) and a page of its entries.
#[utoipa::path(
    get, path = "/dirs/{path}", tag = "directories",
    params(("path" = String, Path, description = "The directory (slashes allowed)"), ListQuery),
    security((), ("bearer" = [], "hypiDomain" = [])),
    responses(
        (status = 200, description = "The directory, totals, a page of entries", body = super::openapi::DirListing),
        (status = 400, description = "Bad path or query"),
        (status = 401, description = "Bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such directory"),
    ),
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let path = dir_path(&req)?;
    let q = q.into_inner();
    let mut ctx = Ctx::new(caller);
    ctx.domain = crate::graphql::RequestDomain::of(req.headers()).0;
    let (dir, stats, page) = state
        .service
        .directory_listing(ctx, path, q.arcql, q.first, q.after)
        .await?;
    let mut edges = Vec::with_capacity(page.nodes.len());
    for f in &page.nodes {
        let node = views::file_with_content(&state.service, f).await?;
        edges.push(json!({"node": node, "cursor": f.id.to_string()}));
    }
    Ok(HttpResponse::Ok().json(json!({
        "directory": views::file(&dir),
        "stats": {"files": stats.files, "directories": stats.directories, "bytes": stats.bytes},
        "children": {
            "edges": edges,
            "pageInfo": {
                "hasNextPage": page.has_next,
                "endCursor": page.nodes.last().map(|f| f.id.to_string()),
            }
        }
    })))
}

/// Body of a move.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveBody {
    directory: Option<String>,
    name: Option<String>,
    /// `fail` (the default), `rename` or `replace`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    on_conflict: OnConflict,
}

/// Moves and/or renames a file or a directory with its subtree.
#[utoipa::path(
    post, path = "/files/{id}/move", tag = "directories",
    params(("id" = String, Path, description = "A file's or directory's id")),
    request_body = MoveBody,
    responses(
        (status = 200, description = "Moved", body = super::openapi::File),
        (status = 400, description = "Bad body or target"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such file"),
        (status = 409, description = "The target name is taken"),
        (status = 422, description = "The subtree is too large to move at once"),
    ),
)]
pub async fn move_entry(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<MoveBody>,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let b = body.into_inner();
    if b.directory.is_none() && b.name.is_none() {
        return Err(Error::BadRequest("give a directory, a name or both".into()));
    }
    let moved = state
        .service
        .move_entry(p, file_id(&id)?, b.directory, b.name, b.on_conflict)
        .await?;
    Ok(HttpResponse::Ok().json(views::file_with_content(&state.service, &moved).await?))
}

/// Stars a file for the caller.
#[utoipa::path(
    put, path = "/files/{id}/star", tag = "directories",
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "Starred", body = super::openapi::File),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such file"),
    ),
)]
pub async fn star(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    set_star(req, state, id, true).await
}

/// Takes the caller's star off a file.
#[utoipa::path(
    delete, path = "/files/{id}/star", tag = "directories",
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "Unstarred", body = super::openapi::File),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not allowed"),
        (status = 404, description = "No such file"),
    ),
)]
pub async fn unstar(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    set_star(req, state, id, false).await
}

async fn set_star(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    on: bool,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let p = caller.require()?;
    let f = state.service.set_star(p, file_id(&id)?, on).await?;
    Ok(HttpResponse::Ok().json(views::file_with_content(&state.service, &f).await?))
}
