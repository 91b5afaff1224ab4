//! Content-addressed blob storage behind a trait, so local disk can later give way to S3.

mod local;

pub use local::LocalStore;

use crate::error::Result;
use crate::types::Sha256;
use std::io::{Read, Seek};
use std::path::PathBuf;

/// A readable blob.
pub trait BlobReader: Read + Seek + Send {}
impl<T: Read + Seek + Send> BlobReader for T {}

/// A blob as found on storage.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub sha: Sha256,
    pub len: u64,
    pub modified: std::time::SystemTime,
}

/// A temp file being written; removed on drop unless it was committed.
pub struct TempBlob {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<std::fs::File>,
}

impl TempBlob {
    /// The open file to write into.
    pub fn file(&mut self) -> &mut std::fs::File {
        self.file
            .as_mut()
            .expect("temp blob file is present until commit")
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        // Whatever happened (abort, client gone, panic), an uncommitted temp file goes.
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What the service needs from blob storage. Calls block: run them off the async executor.
pub trait BlobStore: Send + Sync + 'static {
    /// A fresh temp file on the same filesystem as the blobs.
    fn create_temp(&self) -> Result<TempBlob>;
    /// Makes a fully written, fsynced temp file the blob `sha`: renames it into place and
    /// fsyncs the directory. If the blob exists already, the temp file is dropped (same bytes).
    fn commit(&self, temp: TempBlob, sha: &Sha256) -> Result<()>;
    /// Opens a blob for reading; `None` when it does not exist.
    fn open(&self, sha: &Sha256) -> Result<Option<(Box<dyn BlobReader>, u64)>>;
    /// Removes a blob; a missing blob is not an error.
    fn remove(&self, sha: &Sha256) -> Result<()>;
    /// Every blob: its name, length and last modification (for fsck and gc).
    fn list(&self) -> Result<Vec<BlobInfo>>;
    /// Moves a damaged blob aside (to `quarantine/`), so it is neither served nor deduplicated
    /// against.
    fn quarantine(&self, sha: &Sha256) -> Result<()>;
    /// Removes temp files left by a previous run. Call before serving.
    fn sweep_temp(&self) -> Result<usize>;
}
