//! The embedded metadata store: sled 0.34, one tree per record kind plus index trees.

use super::{AccessRight, FileRecord, FileScope, ImageRecord, Instance, MetaStore, Records};
use crate::error::{Error, Result};
use crate::types::{now_millis, AccountId, FileId, InstanceId, RightId, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::path::Path;

/// sled-backed [`MetaStore`].
pub struct SledMeta {
    db: sled::Db,
    instances: sled::Tree,
    instance_ids: sled::Tree,
    files: sled::Tree,
    images: sled::Tree,
    /// `instance ++ owner ++ 0 ++ file id` -> empty: the owner's files in upload order.
    by_owner: sled::Tree,
    /// `instance ++ file id` -> empty.
    by_instance: sled::Tree,
    /// `instance ++ directory ++ 0 ++ file id` -> empty.
    by_dir: sled::Tree,
    /// `instance ++ path ++ 0 ++ file id` -> empty.
    by_path: sled::Tree,
    /// `sha256` -> big-endian u64 reference count.
    blob_refs: sled::Tree,
    rights: sled::Tree,
    /// `instance ++ resource ++ 0 ++ right id` -> empty.
    rights_by_resource: sled::Tree,
}

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

fn owner_key(instance: InstanceId, owner: &AccountId) -> Vec<u8> {
    text_key(instance, &owner.0)
}

fn resource_key(instance: InstanceId, resource: &str) -> Vec<u8> {
    text_key(instance, resource)
}

/// Every index entry of a file, as (tree index in [by_owner, by_instance, by_dir, by_path], key).
fn file_index_keys(f: &FileRecord) -> [Vec<u8>; 4] {
    let id = f.id.to_bytes();
    [
        with_id(owner_key(f.instance, &f.created_by), id),
        with_id(f.instance.to_bytes().to_vec(), id),
        with_id(text_key(f.instance, &f.directory), id),
        with_id(text_key(f.instance, &f.path()), id),
    ]
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
        Ok(Self {
            instances: tree("instances")?,
            instance_ids: tree("instance_ids")?,
            files: tree("files")?,
            images: tree("images")?,
            by_owner: tree("files_by_owner")?,
            by_instance: tree("files_by_instance")?,
            by_dir: tree("files_by_dir")?,
            by_path: tree("files_by_path")?,
            blob_refs: tree("blob_refs")?,
            rights: tree("rights")?,
            rights_by_resource: tree("rights_by_resource")?,
            db,
        })
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
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

impl MetaStore for SledMeta {
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
        )
            .transaction(|(tf, ti, tr, o, i, d, p)| {
                for ((f, _), (fjson, ijson)) in files.iter().zip(&encoded) {
                    let id = f.id.to_bytes();
                    tf.insert(&id, fjson.as_slice())?;
                    if let Some(ijson) = ijson {
                        ti.insert(&id, ijson.as_slice())?;
                    }
                    for (tree, key) in [o, i, d, p].into_iter().zip(file_index_keys(f)) {
                        tree.insert(key, &[])?;
                    }
                    let n = read_count(tr.get(f.sha256.0)?);
                    tr.insert(&f.sha256.0, &(n + 1).to_be_bytes())?;
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
                    let (k, _) = match kv {
                        Ok(kv) => kv,
                        Err(e) => return Some(Err(e.into())),
                    };
                    let id = <[u8; 16]>::try_from(&k[plen..]).ok()?;
                    // An index entry whose record is gone (a delete raced the scan) is skipped.
                    self.file(FileId::from_bytes(id)).transpose()
                }),
        )
    }

    fn update_file(&self, file: &FileRecord) -> Result<()> {
        let json = serde_json::to_vec(file)?;
        let id = file.id.to_bytes();
        // Only replace a record that still exists: an update must not resurrect a deleted file.
        self.files.transaction(|tf| {
            if tf.get(id)?.is_none() {
                return Err(abort(Error::not_found()));
            }
            tf.insert(&id, json.as_slice())?;
            Ok(())
        })?;
        self.flush()
    }

    fn delete_file(&self, id: FileId) -> Result<Option<(FileRecord, u64)>> {
        let Some(file) = self.file(id)? else {
            return Ok(None);
        };
        // Grants on the file go with it; collected first because sled transactions cannot scan.
        let prefix = resource_key(file.instance, &id.to_string());
        let grants: Vec<sled::IVec> = self
            .rights_by_resource
            .scan_prefix(&prefix)
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        let outcome = (
            &self.files,
            &self.images,
            &self.blob_refs,
            &self.rights,
            &self.rights_by_resource,
            &self.by_owner,
            &self.by_instance,
            &self.by_dir,
            &self.by_path,
        )
            .transaction(|(tf, ti, tr, trights, tbyres, o, i, d, p)| {
                let Some(v) = tf.remove(&id.to_bytes())? else {
                    return Ok(None);
                };
                let f: FileRecord = serde_json::from_slice(&v).map_err(abort)?;
                ti.remove(&id.to_bytes())?;
                for (tree, key) in [o, i, d, p].into_iter().zip(file_index_keys(&f)) {
                    tree.remove(key)?;
                }
                let left = read_count(tr.get(f.sha256.0)?).saturating_sub(1);
                if left == 0 {
                    tr.remove(&f.sha256.0)?;
                } else {
                    tr.insert(&f.sha256.0, &left.to_be_bytes())?;
                }
                for key in &grants {
                    tbyres.remove(key)?;
                    trights.remove(&key[key.len() - 16..])?;
                }
                Ok(Some((f, left)))
            })?;
        self.flush()?;
        Ok(outcome)
    }

    fn blob_refs(&self, sha: &Sha256) -> Result<u64> {
        Ok(read_count(self.blob_refs.get(sha.0)?))
    }

    fn put_rights(&self, rights: &[AccessRight]) -> Result<()> {
        let encoded = rights
            .iter()
            .map(|r| serde_json::to_vec(r).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        (&self.rights, &self.rights_by_resource).transaction(|(tr, tb)| {
            for (r, json) in rights.iter().zip(&encoded) {
                tr.insert(&r.id.to_bytes(), json.as_slice())?;
                tb.insert(
                    with_id(resource_key(r.instance, &r.resource), r.id.to_bytes()),
                    &[],
                )?;
            }
            Ok(())
        })?;
        self.flush()
    }

    fn right(&self, id: RightId) -> Result<Option<AccessRight>> {
        decode(self.rights.get(id.to_bytes())?)
    }

    fn rights_on(&self, instance: InstanceId, resource: &str) -> Result<Vec<AccessRight>> {
        let prefix = resource_key(instance, resource);
        let mut out = Vec::new();
        for k in self.rights_by_resource.scan_prefix(&prefix).keys() {
            let k = k?;
            if k.len() != prefix.len() + 16 {
                continue;
            }
            if let Some(r) = decode::<AccessRight>(self.rights.get(&k[prefix.len()..])?)? {
                out.push(r);
            }
        }
        Ok(out)
    }

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

    fn rights_naming(&self, instance: InstanceId, members: &[&str]) -> Result<Vec<AccessRight>> {
        // Placeholder until the member index lands: filters the instance's grants.
        let mut out: Vec<AccessRight> = self
            .rights_in(instance)?
            .into_iter()
            .filter(|r| r.members.iter().any(|m| members.contains(&m.as_str())))
            .collect();
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    fn delete_right(&self, id: RightId) -> Result<bool> {
        let removed = (&self.rights, &self.rights_by_resource).transaction(|(tr, tb)| {
            let Some(v) = tr.remove(&id.to_bytes())? else {
                return Ok(false);
            };
            let r: AccessRight = serde_json::from_slice(&v).map_err(abort)?;
            tb.remove(with_id(
                resource_key(r.instance, &r.resource),
                id.to_bytes(),
            ))?;
            Ok(true)
        })?;
        self.flush()?;
        Ok(removed)
    }
}
