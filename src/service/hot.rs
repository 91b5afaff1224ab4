//! Small files recently downloaded by their owner or an admin, kept in memory with their records.
//!
//! A repeat download of such a file is answered on the request's own thread: no trip to the
//! blocking pool, no sled read, no file opened. Anything that touches storage (a miss, a caller
//! who needs a grant, a large file) still goes through the blocking pool.
//!
//! Staleness: every change that could alter a cached answer (a file trashed, updated or deleted,
//! an instance changed, a blob removed) calls [`HotFiles::invalidate`], which empties the cache and
//! bumps a generation. An entry is only stored if the generation did not move between the start
//! of the storage reads it came from and its insertion, so a read racing a change cannot put the
//! old answer back.

use crate::meta::FileRecord;
use crate::types::FileId;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Bookkeeping charged per entry on top of its bytes (record strings, map slot).
const ENTRY_OVERHEAD: usize = 512;

/// A cached download: the file's record, its instance's domain and its bytes.
pub struct HotFile {
    pub file: FileRecord,
    pub domain: String,
    pub bytes: Bytes,
}

impl HotFile {
    fn cost(&self) -> usize {
        self.bytes.len() + self.file.name.len() + self.file.directory.len() + ENTRY_OVERHEAD
    }
}

/// The cache, bounded to a number of bytes (0 turns it off).
pub struct HotFiles {
    budget: usize,
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<FileId, Arc<HotFile>>,
    used: usize,
}

impl HotFiles {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            generation: AtomicU64::new(0),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// Read before the storage reads whose result may be passed to [`HotFiles::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, id: FileId) -> Option<Arc<HotFile>> {
        if self.budget == 0 {
            return None;
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.map.get(&id).cloned()
    }

    /// Stores an entry read from storage since `generation`; dropped if anything changed since,
    /// or if it alone would take more than an eighth of the budget. Evicts arbitrary entries to
    /// make room.
    pub fn insert(&self, generation: u64, entry: HotFile) {
        let cost = entry.cost();
        if cost > self.budget / 8 {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let id = entry.file.id;
        if let Some(old) = inner.map.remove(&id) {
            inner.used -= old.cost();
        }
        while inner.used + cost > self.budget {
            let Some(victim) = inner.map.keys().next().copied() else {
                break;
            };
            if let Some(old) = inner.map.remove(&victim) {
                inner.used -= old.cost();
            }
        }
        inner.used += cost;
        inner.map.insert(id, Arc::new(entry));
    }

    /// Forgets everything: call after any change to files, instances or blobs.
    pub fn invalidate(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        inner.map.clear();
        inner.used = 0;
    }
}
