//! [`DirectoryStore`] on sled: subtrees from the path index, rewrites in one transaction over
//! the record and index trees, stars in a tree of their own.

use super::{abort, owner_key, FileIndexTx, SledMeta};
use crate::error::{Error, Result};
use crate::meta::dirs::DirectoryStore;
use crate::meta::{FileRecord, Records};
use crate::types::{AccountId, FileId, InstanceId};
use sled::Transactional;

/// `instance ++ account ++ 0 ++ file id` -> empty.
const STARS: &str = "stars";

impl SledMeta {
    pub(super) fn stars(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree(STARS)?)
    }
}

fn star_key(instance: InstanceId, account: &AccountId, file: FileId) -> Vec<u8> {
    let mut k = owner_key(instance, account);
    k.extend_from_slice(&file.to_bytes());
    k
}

impl DirectoryStore for SledMeta {
    fn scan_subtree<'a>(&'a self, instance: InstanceId, path: &'a str) -> Records<'a, FileRecord> {
        // Path keys are `instance ++ path ++ 0 ++ id`: every path below `/a` starts `/a/`.
        let mut prefix = instance.to_bytes().to_vec();
        prefix.extend_from_slice(path.trim_end_matches('/').as_bytes());
        prefix.push(b'/');
        Box::new(
            self.by_path
                .scan_prefix(prefix)
                .keys()
                .filter_map(move |k| {
                    let k = match k {
                        Ok(k) => k,
                        Err(e) => return Some(Err(e.into())),
                    };
                    let id = <[u8; 16]>::try_from(&k[k.len().saturating_sub(16)..]).ok()?;
                    match self.files.get(id) {
                        Ok(Some(v)) => Some(serde_json::from_slice(&v).map_err(Error::from)),
                        // Deleted between the index read and the record read.
                        Ok(None) => None,
                        Err(e) => Some(Err(e.into())),
                    }
                }),
        )
    }

    fn replace_files(&self, changes: &[(FileRecord, FileRecord)]) -> Result<()> {
        for (old, new) in changes {
            if old.id != new.id
                || old.instance != new.instance
                || old.created_by != new.created_by
                || old.sha256 != new.sha256
            {
                return Err(Error::Internal(format!(
                    "a rewrite of file {} may not change its identity, owner or content",
                    old.id
                )));
            }
        }
        let encoded = changes
            .iter()
            .map(|(_, new)| serde_json::to_vec(new).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        (
            &self.files,
            &self.by_owner,
            &self.by_instance,
            &self.by_dir,
            &self.by_path,
            &self.files_sorted,
            &self.webhook_outbox,
        )
            .transaction(|(tf, o, i, d, p, s, out)| {
                super::webhooks::write_staged(out, None)?;
                let index = FileIndexTx([o, i, d, p, s]);
                for ((old, new), json) in changes.iter().zip(&encoded) {
                    let id = old.id.to_bytes();
                    let current: Option<FileRecord> = tf
                        .get(id)?
                        .map(|v| serde_json::from_slice(&v))
                        .transpose()
                        .map_err(abort)?;
                    if current.as_ref() != Some(old) {
                        return Err(abort(Error::Conflict(format!(
                            "file {} changed meanwhile; try again",
                            old.id
                        ))));
                    }
                    index.replace(old, new)?;
                    tf.insert(&id, json.as_slice())?;
                }
                Ok(())
            })?;
        self.flush()
    }

    fn set_star(
        &self,
        instance: InstanceId,
        account: &AccountId,
        file: FileId,
        on: bool,
    ) -> Result<()> {
        let key = star_key(instance, account, file);
        let stars = self.stars()?;
        if on {
            stars.insert(key, &[])?;
        } else {
            stars.remove(key)?;
        }
        self.flush()
    }

    fn starred(&self, instance: InstanceId, account: &AccountId, file: FileId) -> Result<bool> {
        Ok(self
            .stars()?
            .contains_key(star_key(instance, account, file))?)
    }
}
