//! Whole-store reads the [`crate::meta::MetaStore`] traits have no call for, used only by the
//! sled -> PostgreSQL migration (`depot migrate-store --from sled:DIR`): every instance, every
//! star and every File's extra fields. Never on a request path.

use super::{decode, SledMeta};
use crate::error::{Error, Result};
use crate::meta::{FileExtras, Instance};
use crate::types::{AccountId, FileId, InstanceId};

/// One account's star on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Star {
    pub instance: InstanceId,
    pub account: AccountId,
    pub file: FileId,
}

impl SledMeta {
    /// Every instance record, in domain order.
    pub fn all_instances(&self) -> Result<Vec<Instance>> {
        self.instances
            .iter()
            .values()
            .map(|v| {
                decode(Some(v?))?.ok_or_else(|| Error::Internal("empty instance record".into()))
            })
            .collect()
    }

    /// Every star, in key order. A key is `instance ++ account ++ 0 ++ file id`.
    pub fn all_stars(&self) -> Result<Vec<Star>> {
        let mut out = Vec::new();
        for k in self.stars()?.iter().keys() {
            let k = k?;
            let bad = || Error::Internal("malformed star key in the sled store".into());
            if k.len() < 16 + 1 + 16 || k[k.len() - 17] != 0 {
                return Err(bad());
            }
            let instance = InstanceId::from_bytes(k[..16].try_into().map_err(|_| bad())?);
            let file = FileId::from_bytes(k[k.len() - 16..].try_into().map_err(|_| bad())?);
            let account = std::str::from_utf8(&k[16..k.len() - 17]).map_err(|_| bad())?;
            out.push(Star {
                instance,
                account: AccountId(account.to_string()),
                file,
            });
        }
        Ok(out)
    }

    /// Every File's extra fields (files made by a session), by file id.
    pub fn all_file_extras(&self) -> Result<Vec<(FileId, FileExtras)>> {
        let mut out = Vec::new();
        for kv in self.file_extras.iter() {
            let (k, v) = kv?;
            let id: [u8; 16] = k
                .as_ref()
                .try_into()
                .map_err(|_| Error::Internal("malformed file extras key".into()))?;
            let extras = decode(Some(v))?
                .ok_or_else(|| Error::Internal("empty file extras record".into()))?;
            out.push((FileId::from_bytes(id), extras));
        }
        Ok(out)
    }
}
