//! Store maintenance: `fsck` re-hashes blobs and checks records and reference counts; `gc`
//! removes blobs nothing references. On the embedded store both run with the data dir locked
//! (server stopped).
//!
//! On a shared metadata store (PostgreSQL, issue 13) other nodes keep serving meanwhile, so a
//! whole-store walk sees a moving picture: a blob listed before its upload's record was written,
//! a count read a moment before or after the records it counts. Nothing is reported or changed
//! on that picture alone. Each finding is checked again on its own, under the blob's cross-node
//! lock (which every reference change and every blob removal takes): a count is compared with
//! the records from one snapshot ([`crate::meta::MaintenanceStore::blob_references`]) and only
//! then reported, or with `--repair` rewritten while no node can change it; a missing blob is
//! reported only if its record still holds it after the blob was looked for again; gc removes
//! an unreferenced blob only if its count is still zero under the lock and it is older than the
//! grace period (an upload stores the bytes, then counts them, under that lock).

use super::Service;
use crate::error::{Error, Result};
use crate::meta::BlobReferences;
use crate::store::BlobMaintenance;
use crate::types::{FileId, Sha256};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// What fsck found (and, with repair, fixed).
#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub records_checked: usize,
    /// Blobs whose bytes no longer hash to their name.
    pub corrupt_blobs: Vec<Sha256>,
    /// Records whose blob is missing (or was quarantined as corrupt).
    pub missing_blobs: Vec<(FileId, Sha256)>,
    /// Records whose size differs from their blob's.
    pub size_mismatches: Vec<(FileId, u64, u64)>,
    /// Blobs whose recorded reference count differs from the records: (blob, recorded, actual).
    pub refcount_mismatches: Vec<(Sha256, u64, u64)>,
    /// Blobs no record references (left by a crash between rename and metadata; `gc` removes them).
    pub unreferenced_blobs: Vec<Sha256>,
    /// Metadata index entries that disagree with the records (missing, stale or out of date):
    /// queries would miss or misorder those files. `--repair` rebuilds them.
    pub index_drift: Vec<String>,
    /// Usage counters that disagree with the records (see `meta::usage`); `--repair` rewrites
    /// them.
    pub usage_drift: Vec<String>,
    /// What `--repair` changed.
    pub repaired: Vec<String>,
}

impl FsckReport {
    /// No damage: every record has its intact blob and every count is exact.
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.missing_blobs.is_empty()
            && self.size_mismatches.is_empty()
            && self.refcount_mismatches.is_empty()
            && self.index_drift.is_empty()
            && self.usage_drift.is_empty()
    }
}

/// What gc removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<Sha256>,
    pub bytes: u64,
    /// Unreferenced but younger than the grace period: kept (an upload may be committing them).
    pub kept_young: usize,
    /// Expired upload sessions removed (with the bytes only they held).
    pub sessions_swept: usize,
}

fn hash_blob(svc: &Service, sha: &Sha256) -> Result<Option<Sha256>> {
    // With nodes serving, a blob can be removed while it is read (a node deleted its last
    // file) and even stored again just after (an upload of the same bytes): then it is read
    // again from the start, a few times at most.
    let mut tries = 0;
    'blob: loop {
        let Some(mut blob) = svc.blobs.open(sha)? else {
            return Ok(None);
        };
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        loop {
            let n = match blob.read_at(pos, &mut buf) {
                Ok(n) => n,
                Err(_) if svc.meta.shared() && tries < 3 => {
                    tries += 1;
                    continue 'blob;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        return Ok(Some(Sha256(h.finalize().into())));
    }
}

/// The store's maintenance operations; fsck and gc need them.
fn maintenance(svc: &Service) -> Result<&dyn BlobMaintenance> {
    svc.blobs.maintenance().ok_or_else(|| {
        Error::Internal("this blob store has no maintenance operations (fsck, gc)".into())
    })
}

impl Service {
    /// Checks every blob and record. With `repair`: corrupt blobs are quarantined and reference
    /// counts are rewritten from the records (records themselves are never deleted: a missing
    /// blob stays reported until restored from a backup).
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let live = self.meta.shared();
        let mut report = FsckReport::default();
        let store = maintenance(self)?;
        let blobs = store.list()?;
        let mut lens: HashMap<Sha256, u64> = HashMap::new();
        for b in &blobs {
            report.blobs_checked += 1;
            match hash_blob(self, &b.sha)? {
                Some(actual) if actual == b.sha => {
                    lens.insert(b.sha, b.len);
                }
                Some(_) => {
                    report.corrupt_blobs.push(b.sha);
                    if repair {
                        // No node adds a reference to these bytes meanwhile (one that did
                        // would count on bytes about to go).
                        let _guard = self.lock_blobs([&b.sha])?;
                        store.quarantine(&b.sha)?;
                        report
                            .repaired
                            .push(format!("quarantined corrupt blob {}", b.sha));
                    }
                }
                None => {}
            }
        }
        let mut refs: HashMap<Sha256, u64> = HashMap::new();
        for f in self.meta.all_files() {
            let f = f?;
            *refs.entry(f.sha256).or_default() += 1;
            if f.is_directory() {
                // A directory counts a reference on the empty content but needs no bytes.
                continue;
            }
            report.records_checked += 1;
            match lens.get(&f.sha256) {
                None => report.missing_blobs.push((f.id, f.sha256)),
                Some(&len) if len != f.size => report.size_mismatches.push((f.id, f.size, len)),
                Some(_) => {}
            }
        }
        // An uploaded, unconfirmed session holds a reference on its blob too.
        for s in self.meta.all_sessions() {
            let s = s?;
            if let (crate::meta::SessionState::Uploaded, Some(b)) = (s.state, &s.bytes) {
                *refs.entry(b.sha).or_default() += 1;
            }
        }
        // So does each image variant on its own blob.
        for v in self.meta.all_variants() {
            *refs.entry(v?.sha).or_default() += 1;
        }
        let recorded: HashMap<Sha256, u64> = self.meta.all_blob_refs()?.into_iter().collect();
        let shas: HashSet<Sha256> = recorded.keys().chain(refs.keys()).copied().collect();
        for sha in shas {
            let (mut want, mut have) = (
                refs.get(&sha).copied().unwrap_or(0),
                recorded.get(&sha).copied().unwrap_or(0),
            );
            if want == have {
                continue;
            }
            // Nodes serving: the walk may have met this blob mid-change. Counted again under
            // its lock, from one snapshot; repaired (if asked) before the lock goes.
            let _guard = if live {
                let guard = self.lock_blobs([&sha])?;
                let now = self.meta.blob_references(&sha)?;
                (want, have) = (now.actual, now.recorded);
                if want == have {
                    continue;
                }
                Some(guard)
            } else {
                None
            };
            report.refcount_mismatches.push((sha, have, want));
            if repair {
                self.meta.set_blob_refs(&sha, want)?;
                report
                    .repaired
                    .push(format!("reference count of {sha}: {have} -> {want}"));
            }
        }
        report.usage_drift = self.check_usage_counters(repair, &mut report.repaired)?;
        report.index_drift = self.meta.check_file_indexes(repair)?;
        if repair {
            let fixed = report.index_drift.iter().map(|d| format!("rebuilt: {d}"));
            report.repaired.extend(fixed);
        }
        if live {
            // A record read after its blob was listed (an upload in between): missing only if
            // the blob is still absent and the record still holds it.
            let mut still = Vec::new();
            for (id, sha) in std::mem::take(&mut report.missing_blobs) {
                if self.blobs.open(&sha)?.is_none()
                    && self.meta.file(id)?.is_some_and(|f| f.sha256 == sha)
                {
                    still.push((id, sha));
                }
            }
            report.missing_blobs = still;
        }
        for sha in lens.keys().filter(|s| !refs.contains_key(s)) {
            // Listed, then referenced by a record the walk had passed (or removed by the node
            // that deleted its last file): not an unreferenced blob.
            if live
                && (self.meta.blob_references(sha)? != BlobReferences::default()
                    || self.blobs.open(sha)?.is_none())
            {
                continue;
            }
            report.unreferenced_blobs.push(*sha);
        }
        Ok(report)
    }

    /// Removes blobs that no record references and that are older than `grace`, so a blob an
    /// upload has just renamed into place (its metadata not yet written) is never collected.
    pub fn gc(&self, grace: Duration) -> Result<GcReport> {
        let mut report = GcReport {
            sessions_swept: self.sweep_sessions()?,
            ..GcReport::default()
        };
        let now = SystemTime::now();
        for b in maintenance(self)?.list()? {
            // Cheap look first (most blobs are referenced), then again under the lock, which a
            // node's upload holds from storing the bytes until it has counted them.
            if self.meta.blob_refs(&b.sha)? > 0 {
                continue;
            }
            let guard = self.lock_blobs([&b.sha])?;
            if self.meta.blob_refs(&b.sha)? > 0 {
                continue;
            }
            let age = now.duration_since(b.modified).unwrap_or_default();
            if age < grace {
                report.kept_young += 1;
                continue;
            }
            self.remove_blob(&guard, &b.sha)?;
            report.bytes += b.len;
            report.removed.push(b.sha);
        }
        Ok(report)
    }
}
