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

/// Written bytes after which [`TempBlob::write_all`] asks the kernel to start writing them back,
/// so the fsync at the end of an upload finds little left to do (it overlaps the transfer).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// A temp file being written; removed on drop unless it was committed.
pub struct TempBlob {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<std::fs::File>,
    /// Bytes written so far.
    written: u64,
    /// Bytes whose writeback has been started.
    writeback: u64,
}

impl TempBlob {
    pub(crate) fn new(path: PathBuf, file: std::fs::File) -> Self {
        Self {
            path,
            file: Some(file),
            written: 0,
            writeback: 0,
        }
    }

    fn file(&mut self) -> &mut std::fs::File {
        self.file
            .as_mut()
            .expect("temp blob file is present until commit")
    }

    /// Appends `buf`; every few MiB the kernel is asked to start writing the new bytes to disk.
    pub fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file().write_all(buf)?;
        self.written += buf.len() as u64;
        if self.written - self.writeback >= WRITEBACK_STEP {
            let (from, len) = (self.writeback, self.written - self.writeback);
            start_writeback(self.file(), from, len);
            self.writeback = self.written;
        }
        Ok(())
    }

    /// Makes everything written durable (fsync).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file().sync_all()
    }
}

/// Starts (does not wait for) writeback of a byte range: a hint, so its failure is ignored; the
/// fsync that follows is what counts.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

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
