//! Durable flushes of the sled store, shared by concurrent writers (group commit).
//!
//! What sled 0.34's `Db::flush` guarantees, read from its source (`pagecache/iobuf.rs`,
//! `blob_io.rs`, `flusher.rs`), and why it is not enough on its own:
//!
//! - It writes the log buffers to the `db` file with `pwrite` and, on Linux, waits for them with
//!   `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`. That survives `kill -9` (the bytes are
//!   in the page cache, then on their way to the device), but it is not an fsync: the device's
//!   volatile write cache is not flushed, and the file's size and block allocation (the log grows
//!   as segments are added) are not journalled. A power cut could lose an acknowledged record.
//! - Values too large for a log segment go to files under `<dir>/blobs/`, written without any
//!   sync at all.
//! - sled's own background thread calls `fsync` on `db` every 500 ms, so before this module the
//!   window was "up to half a second of acknowledged writes lost on power loss".
//!
//! So a durable flush here is: `Db::flush` (every write that completed before it is in the
//! file), then `fdatasync` of `db` (the data, the size and allocation needed to read it back,
//! and a device cache flush), then an `fsync` of any new file under `blobs/` and of that
//! directory. Those files are rare (a message over a quarter segment); their names are log
//! sequence numbers, so the ones not yet synced are the names above the last synced one.
//!
//! Group commit: a caller takes a ticket after its writes; whoever holds the lock syncs every
//! ticket issued before its `Db::flush` began, so concurrent uploads share one fdatasync.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Syncs sled's files after `Db::flush`; see the module docs.
pub(crate) struct LogSync {
    /// sled's log file, opened for syncing only.
    log: std::fs::File,
    blobs: PathBuf,
    /// Tickets handed out (one per `sync` call, taken after the caller's writes).
    issued: AtomicU64,
    /// Every ticket up to this one is durable.
    synced: AtomicU64,
    /// Held while a sync runs; the highest sled blob file name already synced.
    lock: Mutex<u64>,
}

impl LogSync {
    /// Opens the sync handle of the sled store in `dir` (after sled has created its files).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let log = std::fs::File::open(dir.join("db"))
            .map_err(|e| Error::from_io("opening the metadata log for syncing", e))?;
        Ok(Self {
            log,
            blobs: dir.join("blobs"),
            issued: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            lock: Mutex::new(0),
        })
    }

    /// Makes every write to `db` that completed before this call durable. Returns how many
    /// fdatasyncs this call ran (0 when another caller's sync covered it), for tests.
    pub(crate) fn sync(&self, db: &sled::Db) -> Result<u32> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last_blob = self
            .lock
            .lock()
            .map_err(|_| Error::Internal("metadata sync lock poisoned".into()))?;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(0);
        }
        // Every ticket issued so far belongs to writes that completed before this point, so
        // before the flush below begins.
        let upto = self.issued.load(Ordering::SeqCst);
        db.flush()?;
        self.log
            .sync_data()
            .map_err(|e| Error::from_io("syncing the metadata log", e))?;
        *last_blob = self.sync_new_blobs(*last_blob)?;
        self.synced.store(upto, Ordering::SeqCst);
        Ok(1)
    }

    /// fsyncs sled's blob files named above `after` (and their directory); returns the highest
    /// name seen.
    fn sync_new_blobs(&self, after: u64) -> Result<u64> {
        let io = |e| Error::from_io("syncing metadata blobs", e);
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(after),
            Err(e) => return Err(io(e)),
        };
        let mut highest = after;
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(io)?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn <= after {
                continue;
            }
            // sled removes blobs it no longer needs; one gone since the listing needs no sync.
            match std::fs::File::open(entry.path()) {
                Ok(f) => f.sync_all().map_err(io)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
            highest = highest.max(lsn);
            any = true;
        }
        if any {
            std::fs::File::open(&self.blobs)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_share_syncs_and_each_write_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let sync = Arc::new(LogSync::open(dir.path()).unwrap());
        // A lone caller always syncs.
        db.insert(b"k", b"v").unwrap();
        assert_eq!(sync.sync(&db).unwrap(), 1);
        let threads: Vec<_> = (0..16u32)
            .map(|i| {
                let (db, sync) = (db.clone(), sync.clone());
                std::thread::spawn(move || {
                    let mut ran = 0;
                    for j in 0..20u32 {
                        db.insert(format!("{i}-{j}"), vec![0u8; 512]).unwrap();
                        ran += sync.sync(&db).unwrap();
                    }
                    ran
                })
            })
            .collect();
        let ran: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(ran >= 1, "no sync ran for 320 calls");
        // Every ticket handed out is covered by a sync that began after it was taken.
        assert_eq!(
            sync.synced.load(Ordering::SeqCst),
            sync.issued.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn large_values_in_sled_blob_files_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let sync = LogSync::open(dir.path()).unwrap();
        // Larger than a quarter segment: sled writes it to a file under blobs/.
        db.insert(b"big", vec![7u8; 1 << 20]).unwrap();
        sync.sync(&db).unwrap();
        let last = *sync.lock.lock().unwrap();
        assert!(last > 0, "the blob file was not seen");
    }
}
