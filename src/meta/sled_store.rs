//! The embedded metadata store: sled 0.34, one tree per record kind plus index trees.

use super::usage::UsageDelta;
use super::{
    AccessRight, FileOrder, FileRecord, FileScope, FileStore, GrantStore, ImageRecord, Instance,
    InstanceStore, MaintenanceStore, Records, SizeFilter,
};
use crate::error::{Error, Result};
use crate::types::{now_millis, AccountId, FileId, InstanceId, RightId, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::path::Path;

mod compact;
mod dirs;
mod export;
mod file_index;
pub(crate) mod log_sync;
mod usage;
mod variants;
mod webhooks;

pub use export::Star;

use file_index::FileIndexTx;

/// The layout version this code writes. Opening an older store rebuilds the grant indexes
/// (before 2), the file indexes (before 3: the sort index and the compact records) and the
/// usage counters (before 4).
const SCHEMA_VERSION: u64 = 4;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// sled-backed [`super::MetaStore`].
pub struct SledMeta {
    db: sled::Db,
    /// Makes flushes durable (fdatasync after sled's flush; group commit).
    log: log_sync::LogSync,
    instances: sled::Tree,
    instance_ids: sled::Tree,
    files: sled::Tree,
    images: sled::Tree,
    /// `instance ++ owner ++ 0 ++ file id` -> empty: the owner's files in upload order.
    by_owner: sled::Tree,
    /// `instance ++ file id` -> the record's compact form (see `compact`).
    by_instance: sled::Tree,
    /// `instance ++ directory ++ 0 ++ file id` -> empty.
    by_dir: sled::Tree,
    /// `instance ++ path ++ 0 ++ file id` -> empty.
    by_path: sled::Tree,
    /// `instance ++ field tag ++ value ++ file id` -> empty: the files in each sortable
    /// field's order (see `file_index`).
    files_sorted: sled::Tree,
    /// `sha256` -> big-endian u64 reference count.
    blob_refs: sled::Tree,
    rights: sled::Tree,
    /// `instance ++ resource ++ 0 ++ right id` -> empty.
    rights_by_resource: sled::Tree,
    /// `instance ++ member ++ 0 ++ right id` -> empty: the grants naming a member.
    rights_by_member: sled::Tree,
    /// `*` grants by who granted them: `instance ++ 'a' ++ right id` for an admin's (they cover
    /// the instance), `instance ++ 'o' ++ grantor ++ 0 ++ right id` for an owner's (they cover
    /// the grantor's files).
    rights_wildcard: sled::Tree,
    /// `'c' ++ instance ++ grantor ++ 0` -> grants the grantor holds (big-endian u64);
    /// `'v' ++ instance ++ resource ++ 0` -> a version bumped by every grant change on a file,
    /// so `delete_file` can tell inside its transaction that its scan of the grants is current.
    rights_counters: sled::Tree,
    /// `schema_version` -> big-endian u64.
    schema: sled::Tree,
    /// Upload sessions (see `sessions.rs`): `session id` -> record.
    sessions: sled::Tree,
    /// `expires (big-endian u64) ++ session id` -> empty.
    sessions_by_expiry: sled::Tree,
    /// `kind tag ++ instance ++ account ++ 0` -> open sessions (big-endian u64).
    session_counts: sled::Tree,
    /// `file id` -> Foir's extra fields of a File made by a session.
    file_extras: sled::Tree,
    /// Image variants (see `variants.rs`): `variant key` -> record.
    variants: sled::Tree,
    /// `source sha256 ++ variant key` -> empty: the variants of a source blob.
    variants_by_source: sled::Tree,
    /// Webhooks (see `webhooks.rs`): `webhook id` -> record.
    webhooks: sled::Tree,
    /// `instance ++ webhook id` -> empty.
    webhooks_by_instance: sled::Tree,
    /// The deliveries of webhook events, written with the changes they describe.
    webhook_outbox: sled::Tree,
}

#[path = "sled_sessions.rs"]
mod sessions;

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

fn abort<E: Into<Error>>(e: E) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e.into())
}

/// `instance ++ text ++ 0`: the prefix of an index keyed by a string within an instance.
/// Strings never contain NUL (tokens, paths and ids are validated), so prefixes cannot collide.
fn text_key(instance: InstanceId, text: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + text.len() + 17);
    k.extend_from_slice(&instance.to_bytes());
    k.extend_from_slice(text.as_bytes());
    k.push(0);
    k
}

/// A size filter that keeps every record (a plain scan).
fn any_size(_: u64) -> bool {
    true
}

fn owner_key(instance: InstanceId, owner: &AccountId) -> Vec<u8> {
    text_key(instance, &owner.0)
}

fn resource_key(instance: InstanceId, resource: &str) -> Vec<u8> {
    text_key(instance, resource)
}

const ADMIN_WILDCARD: u8 = b'a';
const OWNER_WILDCARD: u8 = b'o';

/// The prefix of the admins' `*` grants of an instance.
fn admin_wildcards(instance: InstanceId) -> Vec<u8> {
    let mut k = instance.to_bytes().to_vec();
    k.push(ADMIN_WILDCARD);
    k
}

/// The prefix of one owner's (non-admin) `*` grants.
fn owner_wildcards(instance: InstanceId, grantor: &AccountId) -> Vec<u8> {
    let mut k = instance.to_bytes().to_vec();
    k.push(OWNER_WILDCARD);
    k.extend_from_slice(grantor.0.as_bytes());
    k.push(0);
    k
}

fn wildcard_key(r: &AccessRight) -> Vec<u8> {
    let prefix = if r.granted_by_admin {
        admin_wildcards(r.instance)
    } else {
        owner_wildcards(r.instance, &r.created_by)
    };
    with_id(prefix, r.id.to_bytes())
}

fn count_key(instance: InstanceId, grantor: &AccountId) -> Vec<u8> {
    let mut k = vec![b'c'];
    k.extend_from_slice(&owner_key(instance, grantor));
    k
}

fn version_key(instance: InstanceId, resource: &str) -> Vec<u8> {
    let mut k = vec![b'v'];
    k.extend_from_slice(&resource_key(instance, resource));
    k
}

/// The grant trees as seen inside one transaction.
struct GrantTx<'a> {
    rights: &'a TransactionalTree,
    by_resource: &'a TransactionalTree,
    by_member: &'a TransactionalTree,
    wildcard: &'a TransactionalTree,
    counters: &'a TransactionalTree,
}

impl GrantTx<'_> {
    fn add_count(&self, key: &[u8], up: bool) -> TxResult<u64> {
        let n = read_count(self.counters.get(key)?);
        let n = if up { n + 1 } else { n.saturating_sub(1) };
        if n == 0 {
            self.counters.remove(key)?;
        } else {
            self.counters.insert(key, &n.to_be_bytes())?;
        }
        Ok(n)
    }

    /// Adds (`up`) or removes every index entry of `r`, its grantor's count and, for a grant on
    /// a file, the file's grant version.
    fn index(&self, r: &AccessRight, up: bool) -> TxResult<()> {
        let id = r.id.to_bytes();
        let mut keys = vec![(
            self.by_resource,
            with_id(resource_key(r.instance, &r.resource), id),
        )];
        for m in &r.members {
            keys.push((self.by_member, with_id(text_key(r.instance, m), id)));
        }
        if r.resource == "*" {
            keys.push((self.wildcard, wildcard_key(r)));
        }
        for (tree, key) in keys {
            if up {
                tree.insert(key, &[])?;
            } else {
                tree.remove(key)?;
            }
        }
        self.add_count(&count_key(r.instance, &r.created_by), up)?;
        if r.resource != "*" {
            let v = version_key(r.instance, &r.resource);
            let n = read_count(self.counters.get(&v)?).wrapping_add(1);
            self.counters.insert(v, &n.to_be_bytes())?;
        }
        Ok(())
    }

    /// Removes a stored grant and its index entries; false when there was none.
    fn remove(&self, id: &[u8]) -> TxResult<bool> {
        let Some(v) = self.rights.remove(id)? else {
            return Ok(false);
        };
        let r: AccessRight = serde_json::from_slice(&v).map_err(abort)?;
        self.index(&r, false)?;
        Ok(true)
    }
}

/// How often `delete_file` lists a file's grants again before giving up.
const DELETE_ATTEMPTS: usize = 64;

/// What one attempt of `delete_file`'s transaction found.
enum Deleted {
    Gone,
    Done(Box<FileRecord>, u64),
    /// A grant on the file changed after the grants were listed: list them again.
    Retry,
}

fn with_id(mut prefix: Vec<u8>, id: [u8; 16]) -> Vec<u8> {
    prefix.extend_from_slice(&id);
    prefix
}

fn read_count(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn decode<T: serde::de::DeserializeOwned>(v: Option<sled::IVec>) -> Result<Option<T>> {
    v.map(|v| serde_json::from_slice(&v).map_err(Error::from))
        .transpose()
}

impl SledMeta {
    /// The underlying database, for tests that damage records on purpose.
    #[cfg(test)]
    pub(crate) fn raw_db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| {
                Error::Internal(format!("cannot open metadata in {}: {e}", dir.display()))
            })?;
        let tree = |name: &str| db.open_tree(name);
        Self {
            instances: tree("instances")?,
            instance_ids: tree("instance_ids")?,
            files: tree("files")?,
            images: tree("images")?,
            by_owner: tree("files_by_owner")?,
            by_instance: tree("files_by_instance")?,
            by_dir: tree("files_by_dir")?,
            by_path: tree("files_by_path")?,
            files_sorted: tree("files_sorted")?,
            blob_refs: tree("blob_refs")?,
            rights: tree("rights")?,
            rights_by_resource: tree("rights_by_resource")?,
            rights_by_member: tree("rights_by_member")?,
            rights_wildcard: tree("rights_wildcard")?,
            rights_counters: tree("rights_counters")?,
            schema: tree("schema")?,
            sessions: tree("sessions")?,
            sessions_by_expiry: tree("sessions_by_expiry")?,
            session_counts: tree("session_counts")?,
            file_extras: tree("file_extras")?,
            variants: tree("variants")?,
            variants_by_source: tree("variants_by_source")?,
            webhooks: tree("webhooks")?,
            webhooks_by_instance: tree("webhooks_by_instance")?,
            webhook_outbox: tree("webhook_outbox")?,
            log: log_sync::LogSync::open(dir)?,
            db,
        }
        .migrated()
    }

    /// Brings an older layout up to [`SCHEMA_VERSION`]: rebuilds every grant index from the
    /// grant records (which also drops the stale resource entries older versions left behind
    /// when a grant was re-pointed). Idempotent: a crash midway redoes it on the next open.
    fn migrated(self) -> Result<Self> {
        let version = read_count(self.schema.get(SCHEMA_KEY)?);
        if version >= SCHEMA_VERSION {
            return Ok(self);
        }
        if version < 2 {
            self.rebuild_grant_indexes()?;
        }
        // Before 3 there was no sort index and the instance index held no compact records:
        // build what is missing from the records (a crash midway redoes it on the next open).
        let fixed = if version < 3 {
            self.check_indexes(true)?
        } else {
            Vec::new()
        };
        // Before 4 no usage counters were kept (issue 15): count the records once.
        self.rebuild_usage_counters()?;
        self.schema
            .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        self.flush()?;
        if !fixed.is_empty() {
            tracing::info!(entries = fixed.len(), "rebuilt the file indexes");
        }
        Ok(self)
    }

    /// Rebuilds every grant index from the grant records.
    fn rebuild_grant_indexes(&self) -> Result<()> {
        for tree in [
            &self.rights_by_resource,
            &self.rights_by_member,
            &self.rights_wildcard,
            &self.rights_counters,
        ] {
            tree.clear()?;
        }
        let mut n = 0u64;
        for v in self.rights.iter().values() {
            let r: AccessRight = serde_json::from_slice(&v?)?;
            (
                &self.rights,
                &self.rights_by_resource,
                &self.rights_by_member,
                &self.rights_wildcard,
                &self.rights_counters,
            )
                .transaction(
                    |(rights, by_resource, by_member, wildcard, counters)| {
                        GrantTx {
                            rights,
                            by_resource,
                            by_member,
                            wildcard,
                            counters,
                        }
                        .index(&r, true)
                    },
                )?;
            n += 1;
        }
        if n > 0 {
            tracing::info!(grants = n, "rebuilt the grant indexes");
        }
        Ok(())
    }

    /// Makes every write made so far durable, across power loss (see `log_sync.rs`: sled's
    /// own flush alone is not an fsync).
    fn flush(&self) -> Result<()> {
        self.log.sync(&self.db)?;
        Ok(())
    }

    fn put_instance_tx(
        instances: &TransactionalTree,
        ids: &TransactionalTree,
        inst: &Instance,
    ) -> TxResult<()> {
        let json = serde_json::to_vec(inst).map_err(abort)?;
        instances.insert(inst.domain.as_bytes(), json)?;
        ids.insert(&inst.id.to_bytes(), inst.domain.as_bytes())?;
        Ok(())
    }
}

impl InstanceStore for SledMeta {
    fn ensure_instance(&self, domain: &str) -> Result<Instance> {
        if let Some(i) = self.instance_by_domain(domain)? {
            return Ok(i);
        }
        let created = (&self.instances, &self.instance_ids).transaction(|(inst, ids)| {
            if let Some(v) = inst.get(domain.as_bytes())? {
                return serde_json::from_slice::<Instance>(&v).map_err(abort);
            }
            let now = now_millis();
            let i = Instance {
                id: InstanceId::new(),
                domain: domain.to_string(),
                anonymous_requests: false,
                created: now,
                updated: now,
            };
            Self::put_instance_tx(inst, ids, &i)?;
            Ok(i)
        })?;
        self.flush()?;
        Ok(created)
    }

    fn instance_by_domain(&self, domain: &str) -> Result<Option<Instance>> {
        decode(self.instances.get(domain.as_bytes())?)
    }

    fn instance(&self, id: InstanceId) -> Result<Option<Instance>> {
        match self.instance_ids.get(id.to_bytes())? {
            Some(domain) => decode(self.instances.get(domain)?),
            None => Ok(None),
        }
    }

    fn put_instance(&self, instance: &Instance) -> Result<()> {
        (&self.instances, &self.instance_ids)
            .transaction(|(inst, ids)| Self::put_instance_tx(inst, ids, instance))?;
        self.flush()
    }
}

impl FileStore for SledMeta {
    fn insert_files(&self, files: &[(FileRecord, Option<ImageRecord>)]) -> Result<()> {
        let encoded = files
            .iter()
            .map(|(f, img)| {
                Ok((
                    serde_json::to_vec(f)?,
                    img.as_ref().map(serde_json::to_vec).transpose()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        (
            &self.files,
            &self.images,
            &self.blob_refs,
            &self.by_owner,
            &self.by_instance,
            &self.by_dir,
            &self.by_path,
            &self.files_sorted,
            &self.webhook_outbox,
        )
            .transaction(|(tf, ti, tr, o, i, d, p, s, out)| {
                webhooks::write_staged(out, None)?;
                let index = FileIndexTx([o, i, d, p, s]);
                for ((f, _), (fjson, ijson)) in files.iter().zip(&encoded) {
                    let id = f.id.to_bytes();
                    tf.insert(&id, fjson.as_slice())?;
                    if let Some(ijson) = ijson {
                        ti.insert(&id, ijson.as_slice())?;
                    }
                    index.add(f)?;
                    let n = read_count(tr.get(f.sha256.0)?);
                    tr.insert(&f.sha256.0, &(n + 1).to_be_bytes())?;
                    usage::apply_tx(tr, f.instance, &f.created_by, &UsageDelta::added(f))?;
                }
                Ok(())
            })?;
        self.flush()
    }

    fn file(&self, id: FileId) -> Result<Option<FileRecord>> {
        decode(self.files.get(id.to_bytes())?)
    }

    fn image(&self, id: FileId) -> Result<Option<ImageRecord>> {
        decode(self.images.get(id.to_bytes())?)
    }

    fn scan_files<'a>(
        &'a self,
        instance: InstanceId,
        scope: FileScope<'a>,
        after: Option<FileId>,
    ) -> Records<'a, FileRecord> {
        self.scan_files_sized(instance, scope, after, Box::new(any_size))
    }

    fn scan_files_sized<'a>(
        &'a self,
        instance: InstanceId,
        scope: FileScope<'a>,
        after: Option<FileId>,
        keep: SizeFilter<'a>,
    ) -> Records<'a, FileRecord> {
        let (tree, prefix) = match scope {
            FileScope::All => (&self.by_instance, instance.to_bytes().to_vec()),
            FileScope::Owner(o) => (&self.by_owner, owner_key(instance, o)),
            FileScope::Directory(d) => (&self.by_dir, text_key(instance, d)),
            FileScope::Path(p) => (&self.by_path, text_key(instance, p)),
        };
        let start = match after {
            // Strictly after the cursor: one more byte sorts the cursor's own key before it.
            Some(a) => {
                let mut k = with_id(prefix.clone(), a.to_bytes());
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let plen = prefix.len();
        Box::new(
            tree.range(start..)
                .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .filter_map(move |kv| {
                    let (k, v) = match kv {
                        Ok(kv) => kv,
                        Err(e) => return Some(Err(e.into())),
                    };
                    // The instance index holds each record's compact form: no lookup, no JSON.
                    // Its size is read in place first, so most records a selective size filter
                    // refuses are never decoded (profiled: the decode's allocations were most
                    // of such a scan).
                    if let Some(size) = compact::size_of(&v) {
                        if !keep(size) {
                            return None;
                        }
                        if let Some(f) = compact::decode(&v) {
                            return Some(Ok(f));
                        }
                    }
                    let id = <[u8; 16]>::try_from(&k[plen..]).ok()?;
                    // An index entry whose record is gone (a delete raced the scan) is skipped.
                    let f = self.file(FileId::from_bytes(id)).transpose()?;
                    Some(f).filter(|f| f.as_ref().map_or(true, |f| keep(f.size)))
                }),
        )
    }

    fn scan_sorted<'a>(
        &'a self,
        instance: InstanceId,
        order: FileOrder,
        from: Option<&FileRecord>,
    ) -> Option<Records<'a, FileRecord>> {
        Some(self.sorted_walk(instance, order, from))
    }

    fn update_file(&self, file: &FileRecord) -> Result<()> {
        let json = serde_json::to_vec(file)?;
        let id = file.id.to_bytes();
        let [o, i, d, p, s] = self.file_index_trees();
        // Only replace a record that still exists: an update must not resurrect a deleted file.
        let out = &self.webhook_outbox;
        (&self.files, o, i, d, p, s, out).transaction(|(tf, o, i, d, p, s, out)| {
            let Some(v) = tf.get(id)? else {
                return Err(abort(Error::not_found()));
            };
            let old: FileRecord = serde_json::from_slice(&v).map_err(abort)?;
            FileIndexTx([o, i, d, p, s]).replace(&old, file)?;
            tf.insert(&id, json.as_slice())?;
            webhooks::write_staged(out, None)
        })?;
        self.flush()
    }

    fn delete_file(&self, id: FileId) -> Result<Option<(FileRecord, u64)>> {
        // Only the file's managers can change its grants, so a retry is rare; the bound keeps
        // a grant loop on the file from holding its delete forever.
        for _ in 0..DELETE_ATTEMPTS {
            let Some(file) = self.file(id)? else {
                return Ok(None);
            };
            // sled transactions cannot scan: list the file's grants first, and inside the
            // transaction check the file's grant version, which every grant change on the file
            // bumps in its own transaction. A grant committed in between means a fresh list; one
            // committed after finds the file gone and is refused (see `put_rights`).
            let resource = id.to_string();
            let vkey = version_key(file.instance, &resource);
            let version = self.rights_counters.get(&vkey)?;
            let prefix = resource_key(file.instance, &resource);
            let mut grants = Vec::new();
            for k in self.rights_by_resource.scan_prefix(&prefix).keys() {
                let k = k?;
                if k.len() == prefix.len() + 16 {
                    grants.push(k[prefix.len()..].to_vec());
                }
            }
            // Fifteen trees: more than sled's largest tuple, so a slice of them.
            let trees = [
                &self.files,
                &self.images,
                &self.blob_refs,
                &self.by_owner,
                &self.by_instance,
                &self.by_dir,
                &self.by_path,
                &self.files_sorted,
                &self.rights,
                &self.rights_by_resource,
                &self.rights_by_member,
                &self.rights_wildcard,
                &self.rights_counters,
                &self.file_extras,
                &self.webhook_outbox,
            ];
            let outcome = trees[..].transaction(|t| {
                let [tf, ti, tr, o, i, d, p, s, rights, by_res, by_mem, wild, ctr, extras, out] =
                    t.as_slice()
                else {
                    return Err(abort(Error::Internal("delete_file: tree count".into())));
                };
                if ctr.get(&vkey)? != version {
                    return Ok(Deleted::Retry);
                }
                let Some(v) = tf.remove(&id.to_bytes())? else {
                    return Ok(Deleted::Gone);
                };
                let f: FileRecord = serde_json::from_slice(&v).map_err(abort)?;
                ti.remove(&id.to_bytes())?;
                extras.remove(&id.to_bytes())?;
                FileIndexTx([o, i, d, p, s]).remove(&f)?;
                let left = read_count(tr.get(f.sha256.0)?).saturating_sub(1);
                if left == 0 {
                    tr.remove(&f.sha256.0)?;
                } else {
                    tr.insert(&f.sha256.0, &left.to_be_bytes())?;
                }
                usage::apply_tx(tr, f.instance, &f.created_by, &UsageDelta::removed(&f))?;
                let g = GrantTx {
                    rights,
                    by_resource: by_res,
                    by_member: by_mem,
                    wildcard: wild,
                    counters: ctr,
                };
                for gid in &grants {
                    g.remove(gid)?;
                }
                // The file's grants are gone: so is its version key.
                ctr.remove(vkey.as_slice())?;
                webhooks::write_staged(out, None)?;
                Ok(Deleted::Done(Box::new(f), left))
            })?;
            match outcome {
                Deleted::Retry => continue,
                Deleted::Gone => return Ok(None),
                Deleted::Done(f, left) => {
                    self.flush()?;
                    return Ok(Some((*f, left)));
                }
            }
        }
        Err(Error::Conflict(format!(
            "the grants of file {id} kept changing while it was deleted; try again"
        )))
    }

    fn blob_refs(&self, sha: &Sha256) -> Result<u64> {
        Ok(read_count(self.blob_refs.get(sha.0)?))
    }
}

impl SledMeta {
    /// The grants whose ids follow `prefix` in `tree` (each key is `prefix ++ right id`).
    fn rights_under(
        &self,
        tree: &sled::Tree,
        prefix: &[u8],
        ids: &mut Vec<[u8; 16]>,
    ) -> Result<()> {
        for k in tree.scan_prefix(prefix).keys() {
            let k = k?;
            // Longer keys belong to a longer text sharing this prefix's bytes (never with NUL
            // terminated text keys, but the admin wildcard prefix has no terminator).
            if let Ok(id) = <[u8; 16]>::try_from(&k[prefix.len()..]) {
                ids.push(id);
            }
        }
        Ok(())
    }

    /// Loads grants by id, in id order, each once; ids whose record is gone are skipped.
    fn load_rights(&self, mut ids: Vec<[u8; 16]>) -> Result<Vec<AccessRight>> {
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = decode::<AccessRight>(self.rights.get(id)?)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

impl GrantStore for SledMeta {
    fn put_rights(&self, rights: &[AccessRight], max_per_grantor: u64) -> Result<()> {
        let encoded = rights
            .iter()
            .map(|r| serde_json::to_vec(r).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        let mut grantors: Vec<Vec<u8>> = rights
            .iter()
            .map(|r| count_key(r.instance, &r.created_by))
            .collect();
        grantors.sort_unstable();
        grantors.dedup();
        (
            &self.rights,
            &self.rights_by_resource,
            &self.rights_by_member,
            &self.rights_wildcard,
            &self.rights_counters,
            &self.files,
            &self.webhook_outbox,
        )
            .transaction(
                |(rights_t, by_resource, by_member, wildcard, counters, tf, out)| {
                    let g = GrantTx {
                        rights: rights_t,
                        by_resource,
                        by_member,
                        wildcard,
                        counters,
                    };
                    let before = grantors
                        .iter()
                        .map(|k| Ok(read_count(counters.get(k)?)))
                        .collect::<TxResult<Vec<u64>>>()?;
                    for (r, json) in rights.iter().zip(&encoded) {
                        // Checked in this transaction, which `delete_file`'s excludes: a grant on a
                        // file either lands before the delete (and goes with it) or is refused.
                        if let Ok(fid) = r.resource.parse::<FileId>() {
                            let file: Option<FileRecord> = tf
                                .get(fid.to_bytes())?
                                .map(|v| serde_json::from_slice(&v))
                                .transpose()
                                .map_err(abort)?;
                            if file.is_none_or(|f| f.instance != r.instance) {
                                return Err(abort(Error::NotFound(format!(
                                    "no such file {}",
                                    r.resource
                                ))));
                            }
                        }
                        // An upsert may re-point a grant: drop every index entry of the old record.
                        g.remove(&r.id.to_bytes())?;
                        rights_t.insert(&r.id.to_bytes(), json.as_slice())?;
                        g.index(r, true)?;
                    }
                    for (k, before) in grantors.iter().zip(before) {
                        let after = read_count(counters.get(k)?);
                        if after > max_per_grantor && after > before {
                            return Err(abort(Error::TooManyRequests(format!(
                            "an account may hold at most {max_per_grantor} access rights in an \
                             instance ({before} held, {} more asked for): revoke some first",
                            after - before
                        ))));
                        }
                    }
                    webhooks::write_staged(out, None)
                },
            )?;
        self.flush()
    }

    fn right(&self, id: RightId) -> Result<Option<AccessRight>> {
        decode(self.rights.get(id.to_bytes())?)
    }

    fn rights_on(&self, instance: InstanceId, resource: &str) -> Result<Vec<AccessRight>> {
        let mut ids = Vec::new();
        self.rights_under(
            &self.rights_by_resource,
            &resource_key(instance, resource),
            &mut ids,
        )?;
        self.load_rights(ids)
    }

    fn rights_naming(&self, instance: InstanceId, members: &[&str]) -> Result<Vec<AccessRight>> {
        let mut ids = Vec::new();
        for m in members {
            self.rights_under(&self.rights_by_member, &text_key(instance, m), &mut ids)?;
        }
        self.load_rights(ids)
    }

    fn rights_reaching(&self, file: &FileRecord) -> Result<Vec<AccessRight>> {
        let mut ids = Vec::new();
        self.rights_under(
            &self.rights_by_resource,
            &resource_key(file.instance, &file.id.to_string()),
            &mut ids,
        )?;
        self.rights_under(
            &self.rights_wildcard,
            &owner_wildcards(file.instance, &file.created_by),
            &mut ids,
        )?;
        self.rights_under(
            &self.rights_wildcard,
            &admin_wildcards(file.instance),
            &mut ids,
        )?;
        self.load_rights(ids)
    }

    fn wildcards_by(&self, instance: InstanceId, grantor: &AccountId) -> Result<Vec<AccessRight>> {
        let mut ids = Vec::new();
        self.rights_under(
            &self.rights_wildcard,
            &owner_wildcards(instance, grantor),
            &mut ids,
        )?;
        // Admins' grants are few (only admins make them): filtering them costs little.
        self.rights_under(&self.rights_wildcard, &admin_wildcards(instance), &mut ids)?;
        let mut out = self.load_rights(ids)?;
        out.retain(|r| r.created_by == *grantor);
        Ok(out)
    }

    fn grant_count(&self, instance: InstanceId, grantor: &AccountId) -> Result<u64> {
        Ok(read_count(
            self.rights_counters.get(count_key(instance, grantor))?,
        ))
    }

    fn delete_right(&self, id: RightId) -> Result<bool> {
        let removed = (
            &self.rights,
            &self.rights_by_resource,
            &self.rights_by_member,
            &self.rights_wildcard,
            &self.rights_counters,
            &self.webhook_outbox,
        )
            .transaction(
                |(rights, by_resource, by_member, wildcard, counters, out)| {
                    let removed = GrantTx {
                        rights,
                        by_resource,
                        by_member,
                        wildcard,
                        counters,
                    }
                    .remove(&id.to_bytes())?;
                    // Only a revoke that removed a grant is an event.
                    if removed {
                        webhooks::write_staged(out, None)?;
                    }
                    Ok(removed)
                },
            )?;
        self.flush()?;
        Ok(removed)
    }
}

impl MaintenanceStore for SledMeta {
    fn all_files(&self) -> Records<'_, FileRecord> {
        Box::new(self.files.iter().values().map(|v| {
            let v = v?;
            Ok(serde_json::from_slice(&v)?)
        }))
    }

    fn all_blob_refs(&self) -> Result<Vec<(Sha256, u64)>> {
        let mut out = Vec::new();
        for kv in self.blob_refs.iter() {
            let (k, v) = kv?;
            if usage::is_counter_key(&k) {
                continue;
            }
            let sha = <[u8; 32]>::try_from(k.as_ref())
                .map_err(|_| Error::Internal("malformed blob reference key".into()))?;
            out.push((Sha256(sha), read_count(Some(v))));
        }
        Ok(out)
    }

    fn set_blob_refs(&self, sha: &Sha256, refs: u64) -> Result<()> {
        if refs == 0 {
            self.blob_refs.remove(sha.0)?;
        } else {
            self.blob_refs.insert(sha.0, &refs.to_be_bytes())?;
        }
        self.flush()
    }

    fn check_file_indexes(&self, repair: bool) -> Result<Vec<String>> {
        self.check_indexes(repair)
    }

    fn rights_in(&self, instance: InstanceId) -> Result<Vec<AccessRight>> {
        let mut out = Vec::new();
        for k in self
            .rights_by_resource
            .scan_prefix(instance.to_bytes())
            .keys()
        {
            let k = k?;
            if let Some(r) = decode::<AccessRight>(self.rights.get(&k[k.len() - 16..])?)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// One process's own store (its data dir is locked): the service's in-process locks order
/// every writer, so there is nothing to add.
impl super::NodeLocks for SledMeta {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::contract::right;

    /// A store written before the grant indexes (schema 1: rights and resource entries only,
    /// with a stale entry a re-pointed grant left) gets its indexes built on open.
    #[test]
    fn opening_an_older_store_builds_the_grant_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let instance = InstanceId::new();
        let wild = right(instance, "alice", false, "*", &["bob"]);
        let moved = right(instance, "alice", false, "*", &["*"]);
        {
            let db = sled::open(dir.path()).unwrap();
            let rights = db.open_tree("rights").unwrap();
            let by_res = db.open_tree("rights_by_resource").unwrap();
            for r in [&wild, &moved] {
                rights
                    .insert(r.id.to_bytes(), serde_json::to_vec(r).unwrap())
                    .unwrap();
                by_res
                    .insert(with_id(resource_key(instance, "*"), r.id.to_bytes()), &[])
                    .unwrap();
            }
            // `moved` used to be on a file: its old entry was never removed.
            let old = resource_key(instance, &FileId::new().to_string());
            by_res
                .insert(with_id(old, moved.id.to_bytes()), &[])
                .unwrap();
            db.flush().unwrap();
        }
        let m = SledMeta::open(dir.path()).unwrap();
        assert_eq!(
            m.rights_naming(instance, &["bob"]).unwrap(),
            vec![wild.clone()]
        );
        assert_eq!(
            m.rights_in(instance).unwrap().len(),
            2,
            "stale entry dropped"
        );
        let f = crate::meta::contract::file(instance, "alice", "/", "a.txt", 1);
        assert_eq!(m.rights_reaching(&f).unwrap().len(), 2);
        assert_eq!(
            m.grant_count(instance, &AccountId("alice".into())).unwrap(),
            2
        );
        drop(m);
        // Reopening a current store leaves it as it is.
        let m = SledMeta::open(dir.path()).unwrap();
        assert_eq!(m.rights_in(instance).unwrap().len(), 2);
    }
}
