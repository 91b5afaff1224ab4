//! Download redirects (`[store] redirect_downloads`): with blobs on S3, a download the caller may
//! read can be answered with `303 See Other` to a short-lived presigned GET on the bucket, so
//! the bytes go from the bucket to the client without passing through the node.

use super::{blocking, Service};
use crate::error::Result;
use crate::meta::FileRecord;
use crate::store::ResponseHeaders;
use std::sync::Arc;

impl Service {
    /// Whether downloads may be redirected to the bucket at all.
    pub fn redirects_downloads(&self) -> bool {
        self.config.store.redirect_downloads
    }

    /// A presigned GET of `file`'s bytes that answers with `headers`, valid for the configured
    /// lifetime; `None` when redirects are off or the store cannot sign. The caller has already
    /// been allowed to read the file: the URL is a capability to its bytes.
    pub async fn download_redirect(
        self: &Arc<Self>,
        file: &FileRecord,
        headers: ResponseHeaders,
    ) -> Result<Option<String>> {
        if !self.redirects_downloads() {
            return Ok(None);
        }
        let (svc, sha) = (self.clone(), file.sha256);
        let ttl = self.config.store.redirect_ttl();
        let url = blocking(move || svc.blobs.presigned_get(&sha, ttl, &headers)).await?;
        if url.is_some() {
            metrics::counter!("depot_download_redirects_total").increment(1);
        }
        Ok(url)
    }
}
