//! Copying every metadata record from a node's sled store to PostgreSQL (`depot migrate-store
//! --from sled:DIR --to postgres:URL`), so a single node can become the first of several.
//!
//! Every record goes through the [`super::MetaStore`] traits where they have a call for it
//! (instances, files with their images, directories, grants, sessions, stars, blob reference
//! counts); the few things no request path needs to list or write on its own (all instances,
//! all stars, a File's extra fields) use the stores' own export/import calls.
//!
//! Resumable and idempotent: a record the target already holds, equal to the source's, is
//! skipped, and each batch of files is one transaction, so an interrupted run is simply run
//! again. The reference counts are written last, as the source has them (inserting a file
//! counts one reference, a session's held reference has no trait call of its own). Verified:
//! at the end every source record is read back from the target and compared, and the record
//! counts of both sides must agree. The target must not be serving meanwhile.

use super::pg::RecordCounts;
use super::{
    FileStore, GrantStore, InstanceStore, MaintenanceStore, PgMeta, SledMeta, UploadSessionStore,
};
use crate::error::{Error, Result};
use crate::meta::DirectoryStore;
use std::collections::BTreeMap;

/// Files inserted per transaction.
const FILE_BATCH: usize = 200;

/// Differences listed in the report (the count says how many there were).
const SHOWN: usize = 20;

/// What happened to one kind of record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Records in the source.
    pub total: u64,
    /// Written to the target by this run.
    pub copied: u64,
    /// Already in the target, equal (an earlier run).
    pub present: u64,
    /// Not copied: they point at a file the source no longer has (reported, not fatal).
    pub orphaned: u64,
}

/// What a metadata migration did and found.
#[derive(Debug, Default)]
pub struct MetaMigrateReport {
    pub instances: Tally,
    pub files: Tally,
    pub file_extras: Tally,
    pub stars: Tally,
    pub grants: Tally,
    pub sessions: Tally,
    pub blob_refs: Tally,
    /// The records the target ends up holding.
    pub target: RecordCounts,
    /// Differences the final comparison found (the first [`SHOWN`]); empty when verified.
    pub differences: Vec<String>,
    /// How many differences there were.
    pub difference_count: u64,
}

impl MetaMigrateReport {
    /// Whether the target now holds exactly what the source does.
    pub fn verified(&self) -> bool {
        self.difference_count == 0
    }

    fn differ(&mut self, what: String) {
        self.difference_count += 1;
        if self.differences.len() < SHOWN {
            self.differences.push(what);
        }
    }

    /// One summary line per record kind.
    pub fn lines(&self) -> Vec<String> {
        [
            ("instances", self.instances),
            ("files", self.files),
            ("file extras", self.file_extras),
            ("stars", self.stars),
            ("grants", self.grants),
            ("sessions", self.sessions),
            ("blob reference counts", self.blob_refs),
        ]
        .iter()
        .map(|(name, t)| {
            let mut l = format!(
                "{name}: {} in the source, {} copied, {} already present",
                t.total, t.copied, t.present
            );
            if t.orphaned > 0 {
                l.push_str(&format!(", {} orphaned (not copied)", t.orphaned));
            }
            l
        })
        .collect()
    }
}

/// Copies every record of `from` that `to` lacks, then compares both sides; `progress` gets a
/// line per phase and per batch. An `Err` is a store failure (the run can be repeated); what
/// differs after the copy is in the report.
pub fn migrate_meta(
    from: &SledMeta,
    to: &PgMeta,
    mut progress: impl FnMut(&str),
) -> Result<MetaMigrateReport> {
    let mut r = MetaMigrateReport::default();

    // Instances first: everything else names one.
    let instances = from.all_instances()?;
    r.instances.total = instances.len() as u64;
    for inst in &instances {
        match to.instance_by_domain(&inst.domain)? {
            Some(t) if t == *inst => r.instances.present += 1,
            Some(t) if t.id != inst.id => {
                return Err(Error::Conflict(format!(
                    "the target already has instance {} with another id ({} here, {} there): \
                     migrate into an empty database",
                    inst.domain, inst.id, t.id
                )))
            }
            _ => {
                to.put_instance(inst)?;
                r.instances.copied += 1;
            }
        }
    }
    progress(&format!("instances: {} done", instances.len()));

    // Files (directories are files too) with their images, a batch per transaction.
    let mut batch = Vec::with_capacity(FILE_BATCH);
    let mut seen = 0u64;
    for f in from.all_files() {
        let f = f?;
        seen += 1;
        match to.file(f.id)? {
            Some(t) if t == f => r.files.present += 1,
            Some(_) => {} // differs: the comparison below reports it
            None => {
                let image = from.image(f.id)?;
                batch.push((f, image));
            }
        }
        if batch.len() >= FILE_BATCH {
            to.insert_files(&batch)?;
            r.files.copied += batch.len() as u64;
            batch.clear();
            progress(&format!(
                "files: {seen} read, {} copied, {} present",
                r.files.copied, r.files.present
            ));
        }
    }
    if !batch.is_empty() {
        to.insert_files(&batch)?;
        r.files.copied += batch.len() as u64;
    }
    r.files.total = seen;
    progress(&format!(
        "files: {seen} done, {} copied, {} present",
        r.files.copied, r.files.present
    ));

    // Foir's extra fields of files made by sessions.
    let extras = from.all_file_extras()?;
    r.file_extras.total = extras.len() as u64;
    for (id, e) in &extras {
        if to.file_extras(*id)?.as_ref() == Some(e) {
            r.file_extras.present += 1;
        } else if to.file(*id)?.is_none() {
            r.file_extras.orphaned += 1;
        } else {
            to.import_file_extras(*id, e)?;
            r.file_extras.copied += 1;
        }
    }
    progress(&format!("file extras: {} done", extras.len()));

    // Stars (sled keeps a star when its file goes, and so does PostgreSQL).
    let stars = from.all_stars()?;
    r.stars.total = stars.len() as u64;
    for s in &stars {
        if to.starred(s.instance, &s.account, s.file)? {
            r.stars.present += 1;
        } else {
            to.set_star(s.instance, &s.account, s.file, true)?;
            r.stars.copied += 1;
        }
    }
    progress(&format!("stars: {} done", stars.len()));

    // Grants, after the files they name. One per call: a grant on a file the source no
    // longer has is refused (`NotFound`) and reported, not the whole lot.
    for inst in &instances {
        for g in from.rights_in(inst.id)? {
            r.grants.total += 1;
            if to.right(g.id)?.as_ref() == Some(&g) {
                r.grants.present += 1;
                continue;
            }
            match to.put_rights(std::slice::from_ref(&g), u64::MAX) {
                Ok(()) => r.grants.copied += 1,
                Err(Error::NotFound(_)) => r.grants.orphaned += 1,
                Err(e) => return Err(e),
            }
        }
    }
    progress(&format!("grants: {} done", r.grants.total));

    // Upload sessions in whatever state they are (no cap: the source already applied it).
    for s in from.all_sessions() {
        let s = s?;
        r.sessions.total += 1;
        match to.session(s.id)? {
            Some(t) if t == s => r.sessions.present += 1,
            Some(_) => {}
            None => {
                to.create_session(&s, u64::MAX)?;
                r.sessions.copied += 1;
            }
        }
    }
    progress(&format!("sessions: {} done", r.sessions.total));

    // Reference counts last, exactly as the source has them.
    let source_refs: BTreeMap<_, _> = from.all_blob_refs()?.into_iter().collect();
    r.blob_refs.total = source_refs.len() as u64;
    for (sha, _) in to.all_blob_refs()? {
        if !source_refs.contains_key(&sha) {
            to.set_blob_refs(&sha, 0)?;
        }
    }
    for (sha, n) in &source_refs {
        if to.blob_refs(sha)? == *n {
            r.blob_refs.present += 1;
        } else {
            to.set_blob_refs(sha, *n)?;
            r.blob_refs.copied += 1;
        }
    }
    progress(&format!(
        "blob reference counts: {} done",
        source_refs.len()
    ));

    progress("verifying: comparing every record");
    verify(from, to, &instances, &source_refs, &mut r)?;
    Ok(r)
}

/// Reads every source record back from the target and compares; then the counts.
fn verify(
    from: &SledMeta,
    to: &PgMeta,
    instances: &[super::Instance],
    source_refs: &BTreeMap<crate::types::Sha256, u64>,
    r: &mut MetaMigrateReport,
) -> Result<()> {
    let mut want = RecordCounts {
        instances: instances.len() as u64,
        ..Default::default()
    };
    for inst in instances {
        if to.instance(inst.id)?.as_ref() != Some(inst) {
            r.differ(format!("instance {} ({})", inst.domain, inst.id));
        }
    }
    for f in from.all_files() {
        let f = f?;
        want.files += 1;
        if to.file(f.id)?.as_ref() != Some(&f) {
            r.differ(format!("file {} ({})", f.id, f.path()));
        }
        let image = from.image(f.id)?;
        want.images += u64::from(image.is_some());
        if to.image(f.id)? != image {
            r.differ(format!("image of file {}", f.id));
        }
    }
    for (id, e) in from.all_file_extras()? {
        if to.file(id)?.is_none() {
            continue; // orphaned in the source, counted above
        }
        want.file_extras += 1;
        if to.file_extras(id)?.as_ref() != Some(&e) {
            r.differ(format!("extra fields of file {id}"));
        }
    }
    for s in from.all_stars()? {
        want.stars += 1;
        if !to.starred(s.instance, &s.account, s.file)? {
            r.differ(format!("star of {} on file {}", s.account, s.file));
        }
    }
    for inst in instances {
        for g in from.rights_in(inst.id)? {
            let on_file = g.resource != "*";
            let file_kept = !on_file
                || g.resource
                    .parse::<crate::types::FileId>()
                    .ok()
                    .map(|id| to.file(id))
                    .transpose()?
                    .flatten()
                    .is_some();
            if !file_kept {
                continue; // orphaned in the source, counted above
            }
            want.grants += 1;
            if to.right(g.id)?.as_ref() != Some(&g) {
                r.differ(format!("grant {}", g.id));
            }
        }
    }
    for s in from.all_sessions() {
        let s = s?;
        want.sessions += 1;
        if to.session(s.id)?.as_ref() != Some(&s) {
            r.differ(format!("upload session {}", s.id));
        }
    }
    want.blob_refs = source_refs.len() as u64;
    for (sha, n) in source_refs {
        let got = to.blob_refs(sha)?;
        if got != *n {
            r.differ(format!("blob {sha}: {got} references, the source has {n}"));
        }
    }
    r.target = to.record_counts()?;
    if r.target != want {
        r.differ(format!(
            "record counts differ: the source has {want:?}, the target {:?}",
            r.target
        ));
    }
    Ok(())
}
