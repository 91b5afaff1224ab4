//! Small files recently downloaded by their owner or an admin, kept in memory with their records.
//!
//! A repeat download of such a file is answered on the request's own thread: no trip to the
//! blocking pool, no sled read, no file opened. Anything that touches storage (a miss, a caller
//! who needs a grant, a large file) still goes through the blocking pool.
//!
//! Staleness: every change that could alter a cached answer (a file trashed, updated or deleted,
//! an instance changed) drops the affected entries through a [`Change`] guard, which acts when it
//! goes out of scope, so it runs after the change was stored, failed or not. Each drop bumps a
//! generation; an entry is only stored if the generation did not move between the start of the
//! storage reads it came from and its insertion, so a read racing a change cannot put the old
//! answer back.

use crate::meta::FileRecord;
use crate::types::FileId;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

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

/// The cache, bounded to a number of bytes (0 turns it off). Evicts oldest insertions first.
pub struct HotFiles {
    budget: usize,
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Entries with the insertion number that put them there.
    map: HashMap<FileId, (u64, Arc<HotFile>)>,
    /// Insertion order, for eviction; may name entries since removed or replaced.
    order: VecDeque<(FileId, u64)>,
    inserted: u64,
    used: usize,
}

impl Inner {
    fn remove(&mut self, id: &FileId) -> Option<Arc<HotFile>> {
        let (_, old) = self.map.remove(id)?;
        self.used -= old.cost();
        Some(old)
    }
}

/// What a change may have made stale.
pub enum Scope {
    /// One file's answers.
    File(FileId),
    /// Everything (e.g. an instance setting changed).
    All,
}

/// Drops the entries a change may have made stale when it goes out of scope. Create it before
/// the change, so the drop happens after it (and also when the change fails half-way).
#[must_use = "the entries are dropped when the guard goes out of scope"]
pub struct Change<'a> {
    cache: &'a HotFiles,
    scope: Scope,
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        let dropped = {
            let mut inner = self.cache.lock();
            self.cache.generation.fetch_add(1, Ordering::AcqRel);
            match self.scope {
                Scope::File(id) => inner.remove(&id).into_iter().collect::<Vec<_>>(),
                Scope::All => {
                    let old = std::mem::take(&mut *inner);
                    old.map.into_values().map(|(_, f)| f).collect()
                }
            }
        };
        // Freed outside the lock: a clear can release megabytes.
        drop(dropped);
    }
}

impl HotFiles {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            generation: AtomicU64::new(0),
            inner: RwLock::new(Inner::default()),
        }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
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
        let found = inner.map.get(&id).map(|(_, f)| f.clone());
        match found {
            Some(_) => metrics::counter!("depot_download_cache_hits_total").increment(1),
            None => metrics::counter!("depot_download_cache_misses_total").increment(1),
        }
        found
    }

    /// Stores an entry read from storage since `generation`; dropped if anything changed since.
    /// Evicts the oldest entries to make room.
    pub fn insert(&self, generation: u64, entry: HotFile) {
        let cost = entry.cost();
        if cost > self.budget {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut inner = self.lock();
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            let id = entry.file.id;
            evicted.extend(inner.remove(&id));
            while inner.used + cost > self.budget {
                let Some((victim, n)) = inner.order.pop_front() else {
                    break;
                };
                if inner.map.get(&victim).is_some_and(|(m, _)| *m == n) {
                    evicted.extend(inner.remove(&victim));
                }
            }
            inner.inserted += 1;
            let n = inner.inserted;
            inner.used += cost;
            inner.map.insert(id, (n, Arc::new(entry)));
            inner.order.push_back((id, n));
            // Removals leave stale names in `order`; keep it proportional to the map.
            if inner.order.len() > 2 * inner.map.len() + 64 {
                let Inner { map, order, .. } = &mut *inner;
                order.retain(|(id, n)| map.get(id).is_some_and(|(m, _)| m == n));
            }
        }
        drop(evicted);
    }

    /// A guard that drops what `scope` covers once the change it brackets is done.
    pub fn change(&self, scope: Scope) -> Change<'_> {
        Change { cache: self, scope }
    }

    #[cfg(test)]
    fn used(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap();
        (inner.map.len(), inner.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{InstanceId, Sha256};

    fn entry(len: usize) -> HotFile {
        HotFile {
            file: FileRecord {
                id: FileId::new(),
                instance: InstanceId::new(),
                created_by: crate::types::AccountId("alice".into()),
                created: 0,
                updated: 0,
                trashed: None,
                extension: None,
                name: "f".into(),
                directory: "/".into(),
                mime: "application/octet-stream".into(),
                size: len as u64,
                sha256: Sha256([0; 32]),
                width: None,
                height: None,
                is_stared: None,
                is_sharable: None,
            },
            domain: "example.test".into(),
            bytes: Bytes::from(vec![7; len]),
        }
    }

    #[test]
    fn stays_within_its_budget_and_evicts_oldest_first() {
        let cache = HotFiles::new(10_000);
        let ids: Vec<FileId> = (0..10)
            .map(|_| {
                let e = entry(2_000);
                let id = e.file.id;
                cache.insert(cache.generation(), e);
                let (_, used) = cache.used();
                assert!(used <= 10_000, "{used}");
                id
            })
            .collect();
        assert!(cache.get(ids[0]).is_none(), "oldest evicted");
        assert!(cache.get(ids[9]).is_some(), "newest kept");
        let (n, used) = cache.used();
        assert_eq!(used, n * (2_000 + 1 + 1 + ENTRY_OVERHEAD));
        // Larger than the whole budget: never stored.
        let big = entry(20_000);
        let big_id = big.file.id;
        cache.insert(cache.generation(), big);
        assert!(cache.get(big_id).is_none());
    }

    #[test]
    fn a_change_drops_its_file_and_rejects_reads_that_started_before_it() {
        let cache = HotFiles::new(1 << 20);
        let (a, b) = (entry(10), entry(10));
        let (ida, idb) = (a.file.id, b.file.id);
        cache.insert(cache.generation(), a);
        cache.insert(cache.generation(), b);
        let before = cache.generation();
        drop(cache.change(Scope::File(ida)));
        assert!(cache.get(ida).is_none());
        assert!(cache.get(idb).is_some(), "other files stay");
        // A read that began before the change must not store what it saw.
        let stale = entry(10);
        let stale_id = stale.file.id;
        cache.insert(before, stale);
        assert!(cache.get(stale_id).is_none());
        drop(cache.change(Scope::All));
        assert_eq!(cache.used(), (0, 0));
    }

    #[test]
    fn replacing_and_churning_keeps_the_accounting_exact() {
        let cache = HotFiles::new(50_000);
        let e = entry(1_000);
        let id = e.file.id;
        cache.insert(cache.generation(), e);
        let mut again = entry(3_000);
        again.file.id = id;
        cache.insert(cache.generation(), again);
        assert_eq!(cache.used().0, 1);
        assert_eq!(cache.get(id).unwrap().bytes.len(), 3_000);
        for _ in 0..1_000 {
            let e = entry(500);
            let id = e.file.id;
            cache.insert(cache.generation(), e);
            drop(cache.change(Scope::File(id)));
        }
        assert_eq!(cache.used(), (1, 3_000 + 2 + ENTRY_OVERHEAD));
        let inner = cache.inner.read().unwrap();
        assert!(inner.order.len() <= 2 * inner.map.len() + 65);
    }
}
