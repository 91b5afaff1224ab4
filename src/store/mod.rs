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

/// Large files bypass the page cache (O_DIRECT) in blocks of this size.
const DIRECT_BLOCK: usize = 1024 * 1024;
/// Alignment O_DIRECT asks of memory, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;

/// A temp file being written; removed on drop unless it was committed.
pub struct TempBlob {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<std::fs::File>,
    /// Bytes written so far.
    written: u64,
    /// Bytes whose writeback has been started.
    writeback: u64,
    /// Bytes not yet written: an over-allocated buffer whose aligned window is used.
    pending: Vec<u8>,
    start: usize,
    filled: usize,
    /// Whether the file is (still) written with O_DIRECT.
    direct: bool,
}

impl TempBlob {
    pub(crate) fn new(path: PathBuf, file: std::fs::File) -> Self {
        Self {
            path,
            file: Some(file),
            written: 0,
            writeback: 0,
            pending: Vec::new(),
            start: 0,
            filled: 0,
            direct: cfg!(target_os = "linux"),
        }
    }

    fn file(&mut self) -> &mut std::fs::File {
        self.file
            .as_mut()
            .expect("temp blob file is present until commit")
    }

    /// Appends `buf`. The first [`DIRECT_BLOCK`] bytes go through the page cache (small files
    /// need no buffer of their own); after that, whole aligned blocks go straight to the disk
    /// (O_DIRECT): the page cache's per-page bookkeeping was about a quarter of a large upload's
    /// CPU time, and the final fsync then has little left to write.
    pub fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        if !self.direct || self.written < DIRECT_BLOCK as u64 {
            let head = if self.direct {
                (DIRECT_BLOCK - self.written as usize).min(buf.len())
            } else {
                buf.len()
            };
            self.write_buffered(&buf[..head])?;
            buf = &buf[head..];
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.pending.is_empty() {
            self.pending = vec![0; DIRECT_BLOCK + DIRECT_ALIGN];
            self.start = self.pending.as_ptr().align_offset(DIRECT_ALIGN);
        }
        while !buf.is_empty() {
            let take = (DIRECT_BLOCK - self.filled).min(buf.len());
            let at = self.start + self.filled;
            self.pending[at..at + take].copy_from_slice(&buf[..take]);
            self.filled += take;
            buf = &buf[take..];
            if self.filled == DIRECT_BLOCK {
                self.flush_block()?;
                if !self.direct {
                    return self.write_buffered(buf);
                }
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (start, end, at) = (self.start, self.start + self.filled, self.written);
        let block = std::mem::take(&mut self.pending);
        let file = self
            .file
            .as_mut()
            .expect("temp blob file is present until commit");
        // O_DIRECT is switched on with the first block and stays on after.
        let first = at == DIRECT_BLOCK as u64;
        let res = if !first || set_direct(file, true) {
            file.write_all_at(&block[start..end], at)
        } else {
            Err(std::io::Error::from_raw_os_error(22))
        };
        self.pending = block;
        match res {
            Ok(()) => {
                self.written += self.filled as u64;
                self.filled = 0;
                Ok(())
            }
            // The filesystem does not do O_DIRECT (tmpfs): the page cache it is.
            Err(e) if e.raw_os_error() == Some(22) => {
                self.direct = false;
                self.drain_buffered()
            }
            Err(e) => Err(e),
        }
    }

    /// Writes what is pending through the page cache.
    fn drain_buffered(&mut self) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .expect("temp blob file is present until commit");
        set_direct(file, false);
        let pending = std::mem::take(&mut self.pending);
        let res = self.write_buffered(&pending[self.start..self.start + self.filled]);
        self.filled = 0;
        res
    }

    fn write_buffered(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.written;
        self.file().write_all_at(buf, at)?;
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
        if self.filled > 0 {
            self.drain_buffered()?;
        }
        self.file().sync_all()
    }
}

/// Turns O_DIRECT on or off for an open file; false when that is not possible.
#[cfg(target_os = "linux")]
fn set_direct(file: &std::fs::File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let want = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        want == flags || libc::fcntl(fd, libc::F_SETFL, want) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &std::fs::File, on: bool) -> bool {
    !on
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
