//! Files created from text through the API (Hypi's `content`): stored as a normal blob
//! (hashed, deduplicated, downloadable by `url.path`), and read back into `content` for text
//! types up to `max_content_bytes`.

use super::{blocking, names, Service};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::media;
use crate::meta::FileRecord;
use crate::types::{now_millis, FileId};
use std::sync::Arc;

/// Whether `mime` is text a client can read as a string.
fn is_text(mime: &str) -> bool {
    let base = mime.split(';').next().unwrap_or("").trim();
    base.starts_with("text/")
        || matches!(
            base,
            "application/json" | "application/xml" | "application/javascript"
        )
}

impl Service {
    /// Creates a file named `name` in `directory` (decoded) from `content`; the directory and
    /// its ancestors are created as for an upload.
    pub async fn create_text_file(
        self: &Arc<Self>,
        principal: &Principal,
        directory: String,
        name: String,
        content: String,
    ) -> Result<FileRecord> {
        let directory = names::normalize_decoded_directory(&directory)?;
        let clean = names::sanitize_filename(&name);
        if name.is_empty() || clean != name {
            return Err(Error::InvalidPath(format!(
                "invalid name {name:?}: a name is one path segment without control characters"
            )));
        }
        if content.len() as u64 > self.config.max_file_size {
            return Err(Error::FileTooLarge(format!(
                "the content is larger than the limit of {} bytes",
                self.config.max_file_size
            )));
        }
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let bytes = bytes::Bytes::from(content.into_bytes());
            let head = &bytes[..bytes.len().min(media::PROBE_LEN)];
            let mime = media::sniff(head, &name);
            let mut writer = svc.blobs.writer()?;
            writer.write(&mut std::iter::once(bytes.clone()))?;
            let staged = writer.finish()?;
            let (sha, size) = (staged.sha(), staged.size());
            svc.within_directory(instance.id, &p.account, &directory, &[sha], |blobs| {
                // Stored before the quotas are asked, as an upload's (see `commit_upload`).
                staged.commit()?;
                svc.write_or_take_back(blobs, &[sha], || {
                    let _room =
                        svc.admit(instance.id, &p.account, super::quota::Incoming::file(size))?;
                    let now = now_millis();
                    let file = FileRecord {
                        id: FileId::new(),
                        instance: instance.id,
                        created_by: p.account.clone(),
                        created: now,
                        updated: now,
                        trashed: None,
                        extension: names::extension(&name),
                        name: name.clone(),
                        directory: directory.clone(),
                        mime,
                        size,
                        sha256: sha,
                        width: None,
                        height: None,
                        is_stared: None,
                        is_sharable: None,
                    };
                    let _events = svc.file_events(
                        &p.account,
                        crate::meta::webhooks::WebhookEvent::FileCreated,
                        [&file],
                    )?;
                    svc.meta.insert_files(&[(file.clone(), None)])?;
                    Ok(file)
                })
            })
        })
        .await
    }

    /// A readable file's text, for `content`: text types up to `max_content_bytes` that are
    /// valid UTF-8; `None` for anything else (directories, binaries, larger files).
    pub async fn text_content(self: &Arc<Self>, file: &FileRecord) -> Result<Option<String>> {
        if file.is_directory() || !is_text(&file.mime) || file.size > self.config.max_content_bytes
        {
            return Ok(None);
        }
        let svc = self.clone();
        let (sha, size) = (file.sha256, file.size);
        blocking(move || {
            let Some(mut blob) = svc.blobs.open(&sha)? else {
                return Ok(None);
            };
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match blob.read_at(got as u64, &mut buf[got..])? {
                    0 => break,
                    n => got += n,
                }
            }
            buf.truncate(got);
            Ok(String::from_utf8(buf).ok())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_types() {
        assert!(super::is_text("text/plain"));
        assert!(super::is_text("text/markdown; charset=utf-8"));
        assert!(super::is_text("application/json"));
        assert!(!super::is_text("image/png"));
        assert!(!super::is_text("inode/directory"));
    }
}
