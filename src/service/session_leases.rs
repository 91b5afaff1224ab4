//! Leases on temp files being downloaded, so the session sweep never removes bytes under a
//! download in flight (on S3 a ranged GET of a deleted object fails mid-stream), and a download
//! never starts on a session the sweep has already chosen to remove.
//!
//! The protocol: a download takes a lease, then re-reads the session (it must still exist);
//! the sweep dooms a session only when it has no lease, and a doomed session refuses leases
//! until the sweep is done with it. Either the download holds a lease before the sweep looks
//! (the sweep skips it, and takes it on a later pass once the download ends), or the sweep
//! doomed it first (the download finds it gone: 404, never a missing-content error).

use crate::types::SessionId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The lease table.
#[derive(Default)]
pub struct Leases {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    readers: HashMap<SessionId, u32>,
    doomed: HashSet<SessionId>,
}

/// A download's hold on a session's bytes; released on drop (when the body is sent or dropped).
pub struct Lease {
    table: Arc<Leases>,
    id: SessionId,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if let Some(n) = inner.readers.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                inner.readers.remove(&self.id);
            }
        }
    }
}

/// The sweep's hold on a session it removes; the session takes leases again once dropped (by
/// then it is gone, so none is taken in practice).
pub struct Doom {
    table: Arc<Leases>,
    id: SessionId,
}

impl Drop for Doom {
    fn drop(&mut self) {
        self.table.lock().doomed.remove(&self.id);
    }
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease for a download, unless the sweep is removing the session.
    pub fn lease(self: &Arc<Self>, id: SessionId) -> Option<Lease> {
        let mut inner = self.lock();
        if inner.doomed.contains(&id) {
            return None;
        }
        *inner.readers.entry(id).or_insert(0) += 1;
        Some(Lease {
            table: self.clone(),
            id,
        })
    }

    /// Marks a session as being removed by the sweep, unless a download holds a lease on it.
    pub fn doom(self: &Arc<Self>, id: SessionId) -> Option<Doom> {
        let mut inner = self.lock();
        if inner.readers.contains_key(&id) || !inner.doomed.insert(id) {
            return None;
        }
        Some(Doom {
            table: self.clone(),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_and_the_sweep_exclude_each_other() {
        let t = Arc::new(Leases::default());
        let (a, b) = (SessionId::new(), SessionId::new());
        let l1 = t.lease(a).unwrap();
        let l2 = t.lease(a).unwrap();
        assert!(t.doom(a).is_none(), "a leased session is not swept");
        drop(l1);
        assert!(t.doom(a).is_none(), "still one download");
        drop(l2);
        let d = t.doom(a).unwrap();
        assert!(t.lease(a).is_none(), "a doomed session takes no download");
        assert!(t.doom(a).is_none(), "doomed once");
        assert!(t.lease(b).is_some(), "others are unaffected");
        drop(d);
        assert!(t.lease(a).is_some());
    }
}
