//! Small files recently downloaded, kept in memory with their records and with the grant
//! decisions that let other callers (grantees, anonymous callers) read them.
//!
//! A repeat download of such a file is answered on the request's own thread: no trip to the
//! blocking pool, no sled read, no file opened. The owner and admins need no decision; anyone
//! else is served from memory only when a cached "allowed until" decision names that caller.
//! Anything that touches storage (a miss, a caller without a cached decision, a large file)
//! still goes through the blocking pool. Denials are never cached.
//!
//! Staleness: every change that could alter a cached answer (a file trashed, updated or deleted,
//! an instance changed) drops the affected entries through a [`Change`] guard, which acts when it
//! goes out of scope, so it runs after the change was stored, failed or not. Each drop bumps a
//! generation; an entry is only stored if the generation did not move between the start of the
//! storage reads it came from and its insertion, so a read racing a change cannot put the old
//! answer back.
//!
//! Grant decisions follow the same rule with their own scope: every grant, revocation or
//! instance change drops them all ([`Scope::Grants`], [`Scope::All`]) by moving the grants
//! epoch, in O(1), before the call that made the change returns; a decision stored under an
//! older epoch is never used again. A decision also ends by itself at the end date of the
//! grants that allowed it (checked against the clock on every use).
//!
//! Several nodes on one PostgreSQL store: other nodes' changes arrive through a
//! [`ChangeFeed`] (see `meta/pg/notify.rs`), which drops entries as this node's own guards
//! do; [`HotFiles::get_fresh`] serves a hit only once the feed confirms that every change
//! committed before the request has been applied, so a call that returned on another node is
//! never contradicted here. Without a feed (sled: one node) a hit costs one extra atomic load.

use crate::auth::Caller;
use crate::meta::{ChangeFeed, ChangeSink, Changed, FileRecord};
use crate::types::{FileId, Millis};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockWriteGuard};

/// Bookkeeping charged per entry on top of its bytes (record strings, map slot).
const ENTRY_OVERHEAD: usize = 512;
/// Bookkeeping charged per cached grant decision on top of its account name.
const READER_OVERHEAD: usize = 64;
/// Grant decisions kept per file; the oldest goes first (a widely shared file is usually read
/// anonymously or through `*`, which few distinct callers share).
const MAX_READERS: usize = 32;

/// A caller a grant decision was made for: anonymous, or an account of a domain (as the
/// principal named it; admins never need a decision).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reader {
    Anonymous,
    User { account: String, domain: String },
}

impl Reader {
    fn of(caller: &Caller) -> Option<Self> {
        match caller {
            Caller::Anonymous => Some(Reader::Anonymous),
            Caller::User(p) if p.admin => None,
            Caller::User(p) => Some(Reader::User {
                account: p.account.0.clone(),
                domain: p.instance.clone(),
            }),
        }
    }

    fn is(&self, caller: &Caller) -> bool {
        match (self, caller) {
            (Reader::Anonymous, Caller::Anonymous) => true,
            (Reader::User { account, domain }, Caller::User(p)) => {
                !p.admin && p.account.0 == *account && p.instance == *domain
            }
            _ => false,
        }
    }

    fn cost(&self) -> usize {
        READER_OVERHEAD
            + match self {
                Reader::Anonymous => 0,
                Reader::User { account, domain } => account.len() + domain.len(),
            }
    }
}

/// A cached decision: `reader` may read the file until `until`, as long as the grants epoch is
/// still `epoch`.
struct Decision {
    reader: Reader,
    until: Millis,
    epoch: u64,
}

/// A cache entry: the insertion number that put it there, the file, its grant decisions.
struct Entry {
    n: u64,
    file: Arc<HotFile>,
    readers: Vec<Decision>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.file.cost() + self.readers.iter().map(|d| d.reader.cost()).sum::<usize>()
    }
}

/// What [`HotFiles::get`] found: the file, and whether the caller holds a live grant decision.
pub struct Hit {
    pub file: Arc<HotFile>,
    pub granted: bool,
}

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
    /// Moves on every change to grants or instances; decisions from older epochs are dead.
    /// Only written under the write lock, with `generation`.
    grants_epoch: AtomicU64,
    inner: RwLock<Inner>,
    /// Other nodes' changes, when the store is shared.
    feed: OnceLock<Arc<dyn ChangeFeed>>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<FileId, Entry>,
    /// Insertion order, for eviction; may name entries since removed or replaced.
    order: VecDeque<(FileId, u64)>,
    inserted: u64,
    used: usize,
}

impl Inner {
    fn remove(&mut self, id: &FileId) -> Option<Arc<HotFile>> {
        let old = self.map.remove(id)?;
        self.used -= old.cost();
        Some(old.file)
    }

    /// Evicts the oldest entries until `cost` more bytes fit in `budget`.
    fn make_room(&mut self, cost: usize, budget: usize, evicted: &mut Vec<Arc<HotFile>>) {
        while self.used + cost > budget {
            let Some((victim, n)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&victim).is_some_and(|e| e.n == n) {
                evicted.extend(self.remove(&victim));
            }
        }
    }
}

/// What a change may have made stale.
pub enum Scope {
    /// One file's answers.
    File(FileId),
    /// Every grant decision (a grant was made, replaced or revoked); the files stay.
    Grants,
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
        self.cache.drop_scope(&self.scope);
    }
}

impl ChangeSink for HotFiles {
    fn changed(&self, what: Changed) {
        self.drop_scope(&match what {
            Changed::File(id) => Scope::File(id),
            Changed::Grants => Scope::Grants,
            Changed::All => Scope::All,
        });
    }
}

impl HotFiles {
    /// Drops what `scope` covers and moves the generation.
    fn drop_scope(&self, scope: &Scope) {
        let dropped = {
            let mut inner = self.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
            match *scope {
                Scope::File(id) => inner.remove(&id).into_iter().collect::<Vec<_>>(),
                Scope::Grants => {
                    self.grants_epoch.fetch_add(1, Ordering::AcqRel);
                    Vec::new()
                }
                Scope::All => {
                    self.grants_epoch.fetch_add(1, Ordering::AcqRel);
                    let old = std::mem::take(&mut *inner);
                    old.map.into_values().map(|e| e.file).collect()
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
            grants_epoch: AtomicU64::new(0),
            inner: RwLock::new(Inner::default()),
            feed: OnceLock::new(),
        }
    }

    /// Follows other nodes' changes (once; a second feed is ignored).
    pub fn follow(&self, feed: Arc<dyn ChangeFeed>) {
        let _ = self.feed.set(feed);
    }

    /// Whether other nodes' changes must be followed (a shared store, a cache that is on).
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// [`HotFiles::get`], but with a feed, only after it has applied every change committed
    /// before this call (the entry is read again then). A feed that cannot confirm: `None`.
    pub async fn get_fresh(&self, id: FileId, caller: &Caller, now: Millis) -> Option<Hit> {
        let Some(feed) = self.feed.get() else {
            return self.get(id, caller, now);
        };
        let held = self.budget > 0
            && self
                .inner
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .map
                .contains_key(&id);
        if !held {
            // Counted as a miss; nothing to confirm.
            return self.get(id, caller, now);
        }
        if !feed.caught_up().await {
            metrics::counter!("depot_download_cache_unconfirmed_total").increment(1);
            return None;
        }
        self.get(id, caller, now)
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Read before the storage reads whose result may be passed to [`HotFiles::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached file, and whether `caller` holds a grant decision for it that is alive at
    /// `now` (same grants epoch, before its end date).
    pub fn get(&self, id: FileId, caller: &Caller, now: Millis) -> Option<Hit> {
        if self.budget == 0 {
            return None;
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(e) = inner.map.get(&id) else {
            metrics::counter!("depot_download_cache_misses_total").increment(1);
            return None;
        };
        metrics::counter!("depot_download_cache_hits_total").increment(1);
        // Read under the lock: epochs only move under the write lock.
        let epoch = self.grants_epoch.load(Ordering::Acquire);
        let granted = e
            .readers
            .iter()
            .any(|d| d.epoch == epoch && now < d.until && d.reader.is(caller));
        Some(Hit {
            file: e.file.clone(),
            granted,
        })
    }

    /// Stores an entry read from storage since `generation`; dropped if anything changed since.
    /// Evicts the oldest entries to make room. With `grant`, also records that `caller` may
    /// read the file until the given time (a decision made from the same reads).
    pub fn insert(&self, generation: u64, entry: HotFile, grant: Option<(&Caller, Millis)>) {
        let decision = grant.and_then(|(caller, until)| {
            Some(Decision {
                reader: Reader::of(caller)?,
                until,
                epoch: 0,
            })
        });
        let mut evicted = Vec::new();
        {
            let mut inner = self.lock();
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            let epoch = self.grants_epoch.load(Ordering::Acquire);
            let id = entry.file.id;
            // An entry already there came from storage as current as ours (any change since
            // its reads would have removed it or moved the generation): keep it, add to it.
            let present = inner.map.get(&id).is_some_and(|e| {
                e.file.file.sha256 == entry.file.sha256 && e.file.file.updated == entry.file.updated
            });
            if !present {
                let cost = entry.cost();
                if cost > self.budget {
                    return;
                }
                evicted.extend(inner.remove(&id));
                inner.make_room(cost, self.budget, &mut evicted);
                inner.inserted += 1;
                let n = inner.inserted;
                inner.used += cost;
                inner.map.insert(
                    id,
                    Entry {
                        n,
                        file: Arc::new(entry),
                        readers: Vec::new(),
                    },
                );
                inner.order.push_back((id, n));
                // Removals leave stale names in `order`; keep it proportional to the map.
                if inner.order.len() > 2 * inner.map.len() + 64 {
                    let Inner { map, order, .. } = &mut *inner;
                    order.retain(|(id, n)| map.get(id).is_some_and(|e| e.n == *n));
                }
            }
            if let Some(mut d) = decision {
                d.epoch = epoch;
                let cost = d.reader.cost();
                inner.make_room(cost, self.budget, &mut evicted);
                let Inner { map, used, .. } = &mut *inner;
                if let Some(e) = map.get_mut(&id) {
                    // Dead decisions (older epochs, or this caller's earlier one) go first.
                    let before: usize = e.readers.iter().map(|d| d.reader.cost()).sum();
                    e.readers
                        .retain(|old| old.epoch == epoch && old.reader != d.reader);
                    if e.readers.len() >= MAX_READERS {
                        e.readers.remove(0);
                    }
                    e.readers.push(d);
                    let after: usize = e.readers.iter().map(|d| d.reader.cost()).sum();
                    *used = *used + after - before;
                }
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
                cache.insert(cache.generation(), e, None);
                let (_, used) = cache.used();
                assert!(used <= 10_000, "{used}");
                id
            })
            .collect();
        assert!(
            cache.get(ids[0], &Caller::Anonymous, 0).is_none(),
            "oldest evicted"
        );
        assert!(
            cache.get(ids[9], &Caller::Anonymous, 0).is_some(),
            "newest kept"
        );
        let (n, used) = cache.used();
        assert_eq!(used, n * (2_000 + 1 + 1 + ENTRY_OVERHEAD));
        // Larger than the whole budget: never stored.
        let big = entry(20_000);
        let big_id = big.file.id;
        cache.insert(cache.generation(), big, None);
        assert!(cache.get(big_id, &Caller::Anonymous, 0).is_none());
    }

    #[test]
    fn a_change_drops_its_file_and_rejects_reads_that_started_before_it() {
        let cache = HotFiles::new(1 << 20);
        let (a, b) = (entry(10), entry(10));
        let (ida, idb) = (a.file.id, b.file.id);
        cache.insert(cache.generation(), a, None);
        cache.insert(cache.generation(), b, None);
        let before = cache.generation();
        drop(cache.change(Scope::File(ida)));
        assert!(cache.get(ida, &Caller::Anonymous, 0).is_none());
        assert!(
            cache.get(idb, &Caller::Anonymous, 0).is_some(),
            "other files stay"
        );
        // A read that began before the change must not store what it saw.
        let stale = entry(10);
        let stale_id = stale.file.id;
        cache.insert(before, stale, None);
        assert!(cache.get(stale_id, &Caller::Anonymous, 0).is_none());
        drop(cache.change(Scope::All));
        assert_eq!(cache.used(), (0, 0));
    }

    #[test]
    fn replacing_and_churning_keeps_the_accounting_exact() {
        let cache = HotFiles::new(50_000);
        let e = entry(1_000);
        let id = e.file.id;
        cache.insert(cache.generation(), e, None);
        let mut again = entry(3_000);
        again.file.id = id;
        again.file.sha256 = Sha256([1; 32]);
        cache.insert(cache.generation(), again, None);
        assert_eq!(cache.used().0, 1);
        assert_eq!(
            cache
                .get(id, &Caller::Anonymous, 0)
                .unwrap()
                .file
                .bytes
                .len(),
            3_000
        );
        for _ in 0..1_000 {
            let e = entry(500);
            let id = e.file.id;
            cache.insert(cache.generation(), e, None);
            drop(cache.change(Scope::File(id)));
        }
        assert_eq!(cache.used(), (1, 3_000 + 2 + ENTRY_OVERHEAD));
        let inner = cache.inner.read().unwrap();
        assert!(inner.order.len() <= 2 * inner.map.len() + 65);
    }

    fn user(account: &str, admin: bool) -> Caller {
        Caller::User(crate::auth::Principal {
            account: crate::types::AccountId(account.into()),
            instance: "example.test".into(),
            admin,
        })
    }

    #[test]
    fn grant_decisions_name_their_caller_end_on_time_and_die_with_any_grant_change() {
        let cache = HotFiles::new(1 << 20);
        let e = entry(10);
        let id = e.file.id;
        let bob = user("bob", false);
        cache.insert(cache.generation(), e, Some((&bob, 100)));
        let hit = |c: &Caller, now| cache.get(id, c, now).map(|h| h.granted);
        assert_eq!(hit(&bob, 99), Some(true));
        assert_eq!(hit(&bob, 100), Some(false), "ends at the grant's end date");
        assert_eq!(
            hit(&user("carol", false), 0),
            Some(false),
            "another account"
        );
        assert_eq!(
            hit(&user("bob", true), 0),
            Some(false),
            "an admin is not bob"
        );
        assert_eq!(hit(&Caller::Anonymous, 0), Some(false));
        // A second caller's decision joins the entry; the accounting follows.
        cache.insert(
            cache.generation(),
            entry_with_id(id),
            Some((&Caller::Anonymous, Millis::MAX)),
        );
        assert_eq!(hit(&Caller::Anonymous, 5), Some(true));
        assert_eq!(hit(&bob, 5), Some(true));
        let (n, used) = cache.used();
        assert_eq!(n, 1);
        let both =
            10 + 2 + ENTRY_OVERHEAD + 2 * READER_OVERHEAD + "bob".len() + "example.test".len();
        assert_eq!(used, both);
        // Any grant change kills every decision at once, but keeps the bytes.
        let before = cache.generation();
        drop(cache.change(Scope::Grants));
        assert_eq!(hit(&bob, 5), Some(false));
        assert_eq!(hit(&Caller::Anonymous, 5), Some(false));
        // A decision made from reads that began before the change is not stored.
        cache.insert(before, entry_with_id(id), Some((&bob, Millis::MAX)));
        assert_eq!(hit(&bob, 5), Some(false));
        // A fresh one is, and replaces the dead ones in the accounting.
        cache.insert(
            cache.generation(),
            entry_with_id(id),
            Some((&bob, Millis::MAX)),
        );
        assert_eq!(hit(&bob, 5), Some(true));
        assert_eq!(
            cache.used().1,
            10 + 2 + ENTRY_OVERHEAD + READER_OVERHEAD + 15
        );
        // Many callers: at most MAX_READERS decisions per file.
        for i in 0..100 {
            let c = user(&format!("u{i:03}"), false);
            cache.insert(
                cache.generation(),
                entry_with_id(id),
                Some((&c, Millis::MAX)),
            );
        }
        let inner = cache.inner.read().unwrap();
        assert_eq!(inner.map[&id].readers.len(), MAX_READERS);
        assert_eq!(inner.used, inner.map[&id].cost());
        drop(inner);
        // A file change drops the file with its decisions.
        drop(cache.change(Scope::File(id)));
        assert_eq!(cache.used(), (0, 0));
    }

    /// A feed whose round trip delivers the changes "committed" so far, as PostgreSQL does.
    struct Remote {
        cache: std::sync::Weak<HotFiles>,
        pending: std::sync::Mutex<Vec<Changed>>,
        up: std::sync::atomic::AtomicBool,
    }

    impl ChangeFeed for Remote {
        fn caught_up(
            &self,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
            Box::pin(async move {
                if !self.up.load(Ordering::Acquire) {
                    return false;
                }
                let pending = std::mem::take(&mut *self.pending.lock().unwrap());
                if let Some(cache) = self.cache.upgrade() {
                    pending.into_iter().for_each(|c| cache.changed(c));
                }
                true
            })
        }
    }

    #[test]
    fn with_a_feed_a_hit_waits_for_other_nodes_changes_and_a_feed_that_is_down_serves_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cache = Arc::new(HotFiles::new(1 << 20));
        let remote = Arc::new(Remote {
            cache: Arc::downgrade(&cache),
            pending: Default::default(),
            up: true.into(),
        });
        cache.follow(remote.clone());
        let bob = user("bob", false);
        let fresh = |c: &Caller, id| rt.block_on(cache.get_fresh(id, c, 5)).map(|h| h.granted);
        let e = entry(10);
        let id = e.file.id;
        cache.insert(cache.generation(), e, Some((&bob, Millis::MAX)));
        assert_eq!(fresh(&bob, id), Some(true));
        // Another node revoked: the round trip delivers it before the hit is answered.
        remote.pending.lock().unwrap().push(Changed::Grants);
        assert_eq!(fresh(&bob, id), Some(false));
        remote.pending.lock().unwrap().push(Changed::File(id));
        assert_eq!(fresh(&bob, id), None);
        // The feed is down: nothing is served from memory.
        cache.insert(cache.generation(), entry_with_id(id), None);
        remote.up.store(false, Ordering::Release);
        assert!(fresh(&Caller::Anonymous, id).is_none());
        remote.up.store(true, Ordering::Release);
        assert!(fresh(&Caller::Anonymous, id).is_some());
        remote.pending.lock().unwrap().push(Changed::All);
        assert!(fresh(&Caller::Anonymous, id).is_none());
        assert_eq!(cache.used(), (0, 0));
    }

    fn entry_with_id(id: FileId) -> HotFile {
        let mut e = entry(10);
        e.file.id = id;
        e
    }
}
