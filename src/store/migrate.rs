//! Copying every blob from one store to another (`depot migrate-store`), through the
//! [`BlobStore`] seam only, so any pair of backends works.
//!
//! Resumable: a blob the target already holds at the same length is skipped, so a run that was
//! interrupted is simply run again. Verified: each blob is re-hashed while it is copied (the
//! target's writer hashes what it receives) and committed only when the hash is its name; a
//! damaged source blob is reported and not copied.

use super::BlobStore;
use crate::error::{Error, Result};
use bytes::Bytes;

/// Bytes read from the source per write.
const CHUNK: usize = 1 << 20;

/// What a migration did.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub total: usize,
    pub copied: usize,
    pub bytes_copied: u64,
    /// Already in the target (an earlier, interrupted run, or shared content).
    pub present: usize,
    /// Source blobs whose bytes no longer hash to their name: not copied.
    pub corrupt: Vec<crate::types::Sha256>,
}

/// Copies every blob of `from` that `to` lacks; `progress` gets one line per blob.
pub fn migrate(
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    mut progress: impl FnMut(&str),
) -> Result<MigrateReport> {
    let listing = from
        .maintenance()
        .ok_or_else(|| Error::Internal("the source store cannot list its blobs".into()))?
        .list()?;
    let mut report = MigrateReport {
        total: listing.len(),
        ..Default::default()
    };
    for (i, blob) in listing.iter().enumerate() {
        let n = i + 1;
        if let Some(h) = to.open(&blob.sha)? {
            if h.len() == blob.len {
                report.present += 1;
                progress(&format!("[{n}/{}] {} present", report.total, blob.sha));
                continue;
            }
        }
        let Some(mut src) = from.open(&blob.sha)? else {
            // Removed since the listing: nothing to copy.
            continue;
        };
        let mut w = to.writer()?;
        let mut pos = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let got = src.read_at(pos, &mut buf)?;
            if got == 0 {
                break;
            }
            pos += got as u64;
            w.write(&mut std::iter::once(Bytes::copy_from_slice(&buf[..got])))?;
        }
        let staged = w.finish()?;
        if staged.sha() != blob.sha {
            report.corrupt.push(blob.sha);
            progress(&format!(
                "[{n}/{}] {} CORRUPT (hashes to {}): not copied",
                report.total,
                blob.sha,
                staged.sha()
            ));
            continue; // dropping `staged` removes what was sent
        }
        let size = staged.size();
        staged.commit()?;
        report.copied += 1;
        report.bytes_copied += size;
        progress(&format!(
            "[{n}/{}] {} copied ({size} bytes)",
            report.total, blob.sha
        ));
    }
    Ok(report)
}
