//! Foir's File fields (`id filename mimeType size url width height blurhash alt createdAt
//! metadata`), computed by one function for every surface that shows them: GraphQL's `file(id:)`
//! and `confirmFileUpload`, and REST's `GET /files/{id}` and `POST /uploads/{id}/confirm`.

use super::sessions::FoirFile;
use super::{blocking, Service};
use crate::auth::Caller;
use crate::error::Result;
use crate::meta::ImageRecord;
use crate::types::{rfc3339, FileId};
use serde::Serialize;
use std::sync::Arc;

/// Foir's fields of a File.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoirFields {
    pub id: String,
    pub filename: String,
    pub mime_type: String,
    pub size: u64,
    /// The absolute download URL (`base` + Hypi's `url.path`).
    pub url: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub blurhash: Option<String>,
    pub alt: Option<String>,
    pub created_at: String,
    pub metadata: Option<serde_json::Value>,
}

/// The one view: Foir's fields of `f`, its `url` under `base` (scheme and host).
pub fn foir_fields(f: &FoirFile, base: &str) -> FoirFields {
    let file = &f.file;
    FoirFields {
        id: file.id.to_string(),
        filename: file.name.clone(),
        mime_type: file.mime.clone(),
        size: file.size,
        url: format!("{base}{}", file.url_path()),
        width: file.width,
        height: file.height,
        blurhash: f.extras.blurhash.clone(),
        alt: f.extras.alt.clone(),
        created_at: rfc3339(file.created),
        metadata: f.extras.metadata.clone(),
    }
}

impl Service {
    /// A file the caller may read as they see it (their own star), its Image (for images) and
    /// Foir's extra fields.
    pub async fn get_file_view(
        self: &Arc<Self>,
        caller: Caller,
        id: FileId,
    ) -> Result<(FoirFile, Option<ImageRecord>)> {
        let svc = self.clone();
        blocking(move || {
            let file = svc.readable(&caller, id)?;
            let image = svc.meta.image(id)?;
            let extras = svc.meta.file_extras(id)?.unwrap_or_default();
            let file = svc.for_caller(&caller, file)?;
            Ok((FoirFile { file, extras }, image))
        })
        .await
    }
}
