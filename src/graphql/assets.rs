//! Hygraph's assets in GraphQL: `createAsset(data: {fileName | uploadUrl})` and
//! `asset(where: {id})`, with Hygraph's names (`fileName`, `mimeType`, `handle`, `upload {
//! status expiresAt error requestPostData { url date key signature algorithm policy
//! credential securityToken } }`). The same shapes serialise as the REST answers
//! (`http/assets.rs`). Merged into the root types beside Hypi's fields.

use super::direct::PublicBase;
use super::{gql, parts};
use crate::error::{Error, Result};
use crate::service::assets::Asset as ServiceAsset;
use crate::service::Service;
use crate::types::rfc3339;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use serde::Serialize;
use std::sync::Arc;

/// The presigned POST form of a pending asset: POST `multipart/form-data` to `url` with the
/// other fields first and `file` last.
#[derive(SimpleObject, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct AssetUploadRequestPostData {
    pub url: String,
    pub date: String,
    pub key: String,
    pub signature: String,
    pub algorithm: String,
    pub policy: String,
    pub credential: String,
    pub security_token: String,
}

/// Where an asset's upload is.
#[derive(SimpleObject, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct AssetUpload {
    /// `ASSET_CREATE_PENDING`, `ASSET_UPLOAD_COMPLETE` or `ASSET_ERROR_UPLOAD`.
    pub status: String,
    /// When the upload form stops being accepted, while pending.
    pub expires_at: Option<String>,
    /// Why the upload failed.
    pub error: Option<String>,
    /// The form to POST the file with (assets created with `fileName`, while pending).
    pub request_post_data: Option<AssetUploadRequestPostData>,
}

/// A Hygraph asset.
#[derive(SimpleObject, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub id: ID,
    pub file_name: String,
    /// Absolute URL the bytes are served at (the same before and after the upload).
    pub url: String,
    pub mime_type: Option<String>,
    pub size: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The content's SHA-256 once uploaded.
    pub handle: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub upload: AssetUpload,
}

/// An asset in its answer shape, with URLs under `base`.
pub fn view(svc: &Service, a: &ServiceAsset, base: &str) -> Result<Asset> {
    let post = match &a.session {
        Some(s) => svc.asset_post_data(s)?,
        None => None,
    };
    let f = a.file.as_ref();
    Ok(Asset {
        id: ID(a.id.to_string()),
        file_name: a.file_name().to_string(),
        url: format!("{base}{}", a.url_path()),
        mime_type: f.map(|f| f.mime.clone()),
        size: f.map(|f| f.size),
        width: f.and_then(|f| f.width),
        height: f.and_then(|f| f.height),
        handle: f.map(|f| f.sha256.to_hex()),
        created_at: rfc3339(a.created()),
        updated_at: rfc3339(a.updated()),
        upload: AssetUpload {
            status: a.status().to_string(),
            expires_at: a.expires_at().map(rfc3339),
            error: a.error().map(str::to_string),
            request_post_data: post.map(|p| AssetUploadRequestPostData {
                url: format!("{base}{}", p.path),
                date: p.date,
                key: p.key,
                signature: p.signature,
                algorithm: p.algorithm,
                policy: p.policy,
                credential: p.credential,
                security_token: p.security_token,
            }),
        },
    })
}

/// `createAsset`'s `data`: exactly one of `fileName` (upload by file) and `uploadUrl` (by URL).
#[derive(InputObject, Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssetCreateInput {
    pub file_name: Option<String>,
    pub upload_url: Option<String>,
}

/// `updateAsset`'s `data`: `reUpload: true` (a new upload form) or `uploadUrl` (fetched).
#[derive(InputObject, Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssetUpdateInput {
    pub re_upload: Option<bool>,
    pub upload_url: Option<String>,
}

/// Re-uploads an asset's content the way `data` asks (shared by GraphQL and REST).
pub async fn reupload(
    svc: &Arc<Service>,
    p: &crate::auth::Principal,
    id: &str,
    data: &AssetUpdateInput,
    base: &str,
) -> Result<Asset> {
    let a = match (data.re_upload, &data.upload_url) {
        (Some(true), None) => svc.reupload_asset(p, id, None, base).await?,
        (None | Some(false), Some(url)) => svc.reupload_asset(p, id, Some(url), base).await?,
        _ => {
            return Err(Error::BadRequest(
                "give exactly one of data.reUpload: true (a new upload form) and \
                 data.uploadUrl (fetch the new content)"
                    .into(),
            ))
        }
    };
    view(svc, &a, base)
}

/// `asset(where:)`.
#[derive(InputObject, Debug, Clone)]
pub struct AssetWhereUniqueInput {
    pub id: ID,
}

/// Creates an asset the way `data` asks (shared by GraphQL and REST).
pub async fn create(
    svc: &Arc<Service>,
    p: &crate::auth::Principal,
    data: &AssetCreateInput,
    base: &str,
) -> Result<Asset> {
    let a = match (&data.file_name, &data.upload_url) {
        (Some(name), None) => svc.create_asset_upload(p, name).await?,
        (None, Some(url)) => svc.create_asset_from_url(p, url, base).await?,
        _ => {
            return Err(Error::BadRequest(
                "give exactly one of data.fileName (upload by file) and data.uploadUrl \
                 (upload by URL)"
                    .into(),
            ))
        }
    };
    view(svc, &a, base)
}

fn base(ctx: &Context<'_>) -> String {
    ctx.data_opt::<PublicBase>()
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

/// Hygraph's asset queries.
#[derive(Default)]
pub struct AssetQuery;

#[Object]
impl AssetQuery {
    /// One asset: complete ones by the file's read rules, pending and failed ones by their
    /// creator.
    async fn asset(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "where")] by: AssetWhereUniqueInput,
    ) -> async_graphql::Result<Asset> {
        let (svc, q) = parts(ctx)?;
        let a = svc.asset(q.caller, &by.id).await.map_err(gql)?;
        view(svc, &a, &base(ctx)).map_err(gql)
    }
}

/// Hygraph's asset mutations.
#[derive(Default)]
pub struct AssetMutation;

#[Object]
impl AssetMutation {
    /// Hygraph: creates an asset, pending until its file is POSTed to
    /// `upload.requestPostData.url` (`fileName`) or fetched from `uploadUrl`.
    async fn create_asset(
        &self,
        ctx: &Context<'_>,
        data: AssetCreateInput,
    ) -> async_graphql::Result<Asset> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        create(svc, &p, &data, &base(ctx)).await.map_err(gql)
    }

    /// Hygraph's re-upload: new content for an existing asset (same id and url), by a new
    /// upload form (`reUpload: true`) or from `uploadUrl`. Only its owner or an admin may.
    async fn update_asset(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "where")] by: AssetWhereUniqueInput,
        data: AssetUpdateInput,
    ) -> async_graphql::Result<Asset> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        reupload(svc, &p, &by.id, &data, &base(ctx))
            .await
            .map_err(gql)
    }
}
