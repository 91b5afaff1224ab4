//! The direct upload flows in GraphQL, with the platforms' own names: Foir's
//! `createFileUpload`, `confirmFileUpload` and `file(id:)`; Amplience's
//! `createTempFileUploadUrl`; signed download links (`createFileLink`, `deleteFileLink`).
//! Merged into the root types beside Hypi's fields.

use super::{gql, parts};
use crate::auth::sign::Purpose;
use crate::error::Error;
use crate::service::foir_view::{foir_fields, FoirFields};
use crate::service::sessions::{FoirFile, NewUpload};
use crate::types::{rfc3339, FileId};
use async_graphql::{Context, Json, Object, SimpleObject, ID};

/// The base of URLs handed out in this request (see `http::direct::public_base`).
#[derive(Debug, Clone)]
pub struct PublicBase(pub String);

fn base(ctx: &Context<'_>) -> String {
    ctx.data_opt::<PublicBase>()
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

/// Foir's `createFileUpload` answer.
#[derive(SimpleObject)]
pub struct FileUpload {
    pub upload_id: String,
    pub upload_url: String,
}

/// Amplience's `createTempFileUploadUrl` answer.
#[derive(SimpleObject)]
pub struct TempFileUploadUrl {
    pub upload_url: String,
    pub download_url: String,
}

/// Amplience's `createTempFileMultipartUploadUrl` answer (sizes in bytes, 64-bit `Int`s as
/// elsewhere in this schema: `maxPartSize` is 2147483648 by default, as in Amplience's answer).
#[derive(SimpleObject)]
pub struct TempFileMultipartUploadUrl {
    pub upload_part_urls: Vec<String>,
    pub complete_url: String,
    pub download_url: String,
    pub min_part_size: i64,
    pub max_part_size: i64,
}

/// `createTempFileMultipartUploadUrl`'s input.
#[derive(async_graphql::InputObject)]
pub struct TempFileMultipartUploadInput {
    /// The size of the file to upload, in bytes (up to `sessions.multipart_max_size`).
    pub filesize: i64,
}

/// A signed download link.
#[derive(SimpleObject)]
pub struct FileLink {
    pub id: ID,
    pub file_id: ID,
    pub url: String,
    pub expires_at: String,
}

/// A File in Foir's shape (the one view, [`foir_fields`]), with Hypi's fields beside (`url` is
/// Foir's: the absolute download URL; Hypi's path is `urlPath`).
pub struct MediaFile {
    f: FoirFile,
    v: FoirFields,
}

impl MediaFile {
    fn new(f: FoirFile, base: &str) -> Self {
        let v = foir_fields(&f, base);
        Self { f, v }
    }
}

#[Object]
impl MediaFile {
    async fn id(&self) -> &str {
        &self.v.id
    }
    async fn filename(&self) -> &str {
        &self.v.filename
    }
    async fn mime_type(&self) -> &str {
        &self.v.mime_type
    }
    /// Bytes.
    async fn size(&self) -> i64 {
        i64::try_from(self.v.size).unwrap_or(i64::MAX)
    }
    async fn url(&self) -> &str {
        &self.v.url
    }
    async fn width(&self) -> Option<u32> {
        self.v.width
    }
    async fn height(&self) -> Option<u32> {
        self.v.height
    }
    async fn blurhash(&self) -> Option<&str> {
        self.v.blurhash.as_deref()
    }
    async fn alt(&self) -> Option<&str> {
        self.v.alt.as_deref()
    }
    async fn created_at(&self) -> &str {
        &self.v.created_at
    }
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.v.metadata.clone().map(Json)
    }
    /// Hypi's metadata block.
    async fn hypi(&self) -> super::types::Hypi {
        super::types::Hypi {
            id: ID(self.f.file.id.to_string()),
            implementation: None,
            created: Some(rfc3339(self.f.file.created)),
            updated: Some(rfc3339(self.f.file.updated)),
            trashed: self.f.file.trashed.map(rfc3339),
            created_by: Some(ID(self.f.file.created_by.0.clone())),
            instance_id: Some(self.f.file.instance.to_string()),
        }
    }
    async fn name(&self) -> &str {
        &self.f.file.name
    }
    async fn directory(&self) -> &str {
        &self.f.file.directory
    }
    async fn path(&self) -> String {
        self.f.file.path()
    }
    async fn url_path(&self) -> String {
        self.f.file.url_path()
    }
    #[graphql(name = "type")]
    async fn media_type(&self) -> &str {
        &self.f.file.mime
    }
    async fn extension(&self) -> Option<&str> {
        self.f.file.extension.as_deref()
    }
    async fn sha256(&self) -> String {
        self.f.file.sha256.to_hex()
    }
}

fn file_id(id: &ID) -> async_graphql::Result<FileId> {
    id.parse().map_err(|_| gql(Error::not_found()))
}

/// Queries of the direct flows.
#[derive(Default)]
pub struct DirectQuery;

#[Object]
impl DirectQuery {
    /// Foir's `file(id:)`: a File the caller may read.
    async fn file(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<MediaFile> {
        let (svc, q) = parts(ctx)?;
        let f = svc.foir_file(q.caller, file_id(&id)?).await.map_err(gql)?;
        Ok(MediaFile::new(f, &base(ctx)))
    }
}

/// Mutations of the direct flows.
#[derive(Default)]
pub struct DirectMutation;

#[Object]
impl DirectMutation {
    /// Foir: reserves an upload; PUT the bytes to `uploadUrl`, then `confirmFileUpload`.
    async fn create_file_upload(
        &self,
        ctx: &Context<'_>,
        filename: String,
        mime_type: String,
        size: i64,
        folder: Option<String>,
        metadata: Option<Json<serde_json::Value>>,
    ) -> async_graphql::Result<FileUpload> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let s = svc
            .create_file_upload(
                &p,
                NewUpload {
                    filename,
                    mime_type,
                    size,
                    folder,
                    metadata: metadata.map(|m| m.0),
                },
            )
            .await
            .map_err(gql)?;
        let url = svc.signed_path(Purpose::Put, &s).map_err(gql)?;
        Ok(FileUpload {
            upload_id: s.id.to_string(),
            upload_url: format!("{}{url}", base(ctx)),
        })
    }

    /// Foir: makes the File of an uploaded session (idempotent).
    async fn confirm_file_upload(
        &self,
        ctx: &Context<'_>,
        upload_id: String,
    ) -> async_graphql::Result<MediaFile> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let f = svc.confirm_file_upload(&p, &upload_id).await.map_err(gql)?;
        Ok(MediaFile::new(f, &base(ctx)))
    }

    /// Amplience: a temp file's upload and download URLs.
    async fn create_temp_file_upload_url(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<TempFileUploadUrl> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let s = svc.create_temp_file(&p).await.map_err(gql)?;
        let b = base(ctx);
        Ok(TempFileUploadUrl {
            upload_url: format!("{b}{}", svc.signed_path(Purpose::TempPut, &s).map_err(gql)?),
            download_url: format!("{b}{}", svc.signed_path(Purpose::TempGet, &s).map_err(gql)?),
        })
    }

    /// Amplience: a multipart temp file's part URLs, complete URL and download URL.
    async fn create_temp_file_multipart_upload_url(
        &self,
        ctx: &Context<'_>,
        input: TempFileMultipartUploadInput,
    ) -> async_graphql::Result<TempFileMultipartUploadUrl> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let s = svc
            .create_multipart_temp_file(&p, input.filesize)
            .await
            .map_err(gql)?;
        let u = svc.multipart_urls(&s, &base(ctx)).map_err(gql)?;
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(TempFileMultipartUploadUrl {
            upload_part_urls: u.upload_part_urls,
            complete_url: u.complete_url,
            download_url: u.download_url,
            min_part_size: int(u.min_part_size),
            max_part_size: int(u.max_part_size),
        })
    }

    /// A signed download link to a file the caller may read (`expiresIn`: `1h`, `30m`, ...).
    async fn create_file_link(
        &self,
        ctx: &Context<'_>,
        file_id: ID,
        expires_in: String,
    ) -> async_graphql::Result<FileLink> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        let ttl = crate::service::sessions::parse_expires_in(&expires_in).map_err(gql)?;
        let s = svc
            .create_link(&p, self::file_id(&file_id)?, ttl)
            .await
            .map_err(gql)?;
        let url = svc.signed_path(Purpose::Link, &s).map_err(gql)?;
        Ok(FileLink {
            id: ID(s.id.to_string()),
            file_id,
            url: format!("{}{url}", base(ctx)),
            expires_at: rfc3339(s.expires),
        })
    }

    /// Revokes a signed download link.
    async fn delete_file_link(
        &self,
        ctx: &Context<'_>,
        file_id: ID,
        link_id: ID,
    ) -> async_graphql::Result<bool> {
        let (svc, q) = parts(ctx)?;
        let p = q.caller.require().map_err(gql)?.clone();
        svc.delete_link(&p, self::file_id(&file_id)?, &link_id)
            .await
            .map_err(gql)?;
        Ok(true)
    }
}
