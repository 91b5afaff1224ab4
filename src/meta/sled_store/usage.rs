//! Usage counters and quota limits on sled.
//!
//! The counters live in the `blob_refs` tree, under keys longer than a blob key (a SHA-256,
//! 32 bytes): every transaction that changes a file record already spans that tree, and sled's
//! transactions take at most 14 trees (`delete_file` spans 14). [`super::SledMeta`]'s walks of
//! the reference counts skip these keys ([`is_counter_key`]). Limits, written outside record
//! transactions, have a tree of their own.

use super::{SledMeta, TxResult};
use crate::error::{Error, Result};
use crate::meta::usage::{
    Counters, QuotaLimits, QuotaScope, Usage, UsageDelta, UsageStore, UtcDay,
};
use crate::meta::{FileRecord, Page, VariantRecord};
use crate::types::{AccountId, InstanceId};
use sled::transaction::TransactionalTree;
use std::collections::HashMap;

/// The first bytes of every counter key: 17 bytes, so that with an instance id a key is always
/// longer than a blob key.
const PREFIX: &[u8; 17] = b"\xffusage-counters\x00\x00";
/// Running totals: `PREFIX ++ instance ++ 't' ++ account` (empty account: the instance).
const TOTAL: u8 = b't';
/// Upload bytes of a day: `PREFIX ++ instance ++ 'd' ++ day ++ account`.
const DAY: u8 = b'd';
/// Tree of limits: `instance ++ kind ++ account` -> JSON [`QuotaLimits`].
const QUOTAS: &str = "quotas";

/// Whether a key of the `blob_refs` tree is a usage counter rather than a blob's count.
pub(super) fn is_counter_key(k: &[u8]) -> bool {
    k.len() != 32
}

fn base(instance: InstanceId, kind: u8) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&instance.to_bytes());
    k.push(kind);
    k
}

fn total_key(instance: InstanceId, account: Option<&AccountId>) -> Vec<u8> {
    let mut k = base(instance, TOTAL);
    if let Some(a) = account {
        k.extend_from_slice(a.0.as_bytes());
    }
    k
}

fn day_key(instance: InstanceId, day: UtcDay, account: Option<&AccountId>) -> Vec<u8> {
    let mut k = base(instance, DAY);
    k.extend_from_slice(&day.0.to_be_bytes());
    if let Some(a) = account {
        k.extend_from_slice(a.0.as_bytes());
    }
    k
}

fn decode_counters(v: &[u8]) -> Counters {
    let n = |i: usize| {
        v.get(i * 8..i * 8 + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    };
    Counters {
        bytes: n(0),
        files: n(1),
        variant_bytes: n(2),
    }
}

fn encode_counters(c: &Counters) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&c.bytes.to_be_bytes());
    v.extend_from_slice(&c.files.to_be_bytes());
    v.extend_from_slice(&c.variant_bytes.to_be_bytes());
    v
}

/// Applies `delta` to the counters of `account` and of its instance, inside a transaction over
/// the `blob_refs` tree (the caller's record change commits with it or not at all).
pub(super) fn apply_tx(
    tr: &TransactionalTree,
    instance: InstanceId,
    account: &AccountId,
    delta: &UsageDelta,
) -> TxResult<()> {
    if delta.is_empty() {
        return Ok(());
    }
    for who in [Some(account), None] {
        let key = total_key(instance, who);
        let old = tr
            .get(&key)?
            .map(|v| decode_counters(&v))
            .unwrap_or_default();
        let new = delta.apply(old);
        if new == Counters::default() {
            tr.remove(key)?;
        } else {
            tr.insert(key, encode_counters(&new))?;
        }
        if let (Some(day), true) = (delta.day, delta.uploaded > 0) {
            let key = day_key(instance, day, who);
            let n = super::read_count(tr.get(&key)?).saturating_add(delta.uploaded);
            tr.insert(key, &n.to_be_bytes())?;
        }
    }
    Ok(())
}

fn scope_key(instance: InstanceId, scope: &QuotaScope) -> Vec<u8> {
    let mut k = instance.to_bytes().to_vec();
    match scope {
        QuotaScope::Instance => k.push(b'i'),
        QuotaScope::AccountDefault => k.push(b'd'),
        QuotaScope::Account(a) => {
            k.push(b'a');
            k.extend_from_slice(a.0.as_bytes());
        }
    }
    k
}

impl SledMeta {
    /// Counts every file and variant record into the running totals, replacing what they
    /// held: a store written before the counters were kept gets them on its first open (before
    /// anything is served; a crash midway redoes it all on the next open). The daily upload
    /// counters start at zero: the past days' uploads are not known.
    pub(super) fn rebuild_usage_counters(&self) -> Result<usize> {
        let mut want: HashMap<(InstanceId, Option<AccountId>), Counters> = HashMap::new();
        for v in self.files.iter().values() {
            let f: FileRecord = serde_json::from_slice(&v?)?;
            if f.is_directory() {
                continue;
            }
            for who in [Some(f.created_by.clone()), None] {
                let c = want.entry((f.instance, who)).or_default();
                c.bytes += f.size;
                c.files += 1;
            }
        }
        for v in self.variants.iter().values() {
            let v: VariantRecord = serde_json::from_slice(&v?)?;
            if let Some((instance, account)) = v.charged_to {
                for who in [Some(account.clone()), None] {
                    want.entry((instance, who)).or_default().variant_bytes += v.size;
                }
            }
        }
        for k in self.blob_refs.scan_prefix(PREFIX).keys() {
            let k = k?;
            if k.get(PREFIX.len() + 16) == Some(&TOTAL) {
                self.blob_refs.remove(k)?;
            }
        }
        for ((instance, account), c) in &want {
            self.blob_refs
                .insert(total_key(*instance, account.as_ref()), encode_counters(c))?;
        }
        Ok(want.len())
    }

    fn read_usage(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        day: UtcDay,
    ) -> Result<Usage> {
        let counters = self
            .blob_refs
            .get(total_key(instance, account))?
            .map(|v| decode_counters(&v))
            .unwrap_or_default();
        let uploaded_today =
            super::read_count(self.blob_refs.get(day_key(instance, day, account))?);
        Ok(Usage {
            counters,
            uploaded_today,
        })
    }
}

impl UsageStore for SledMeta {
    fn usage(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        day: UtcDay,
    ) -> Result<Usage> {
        self.read_usage(instance, account, day)
    }

    fn usage_page(
        &self,
        instance: InstanceId,
        after: Option<&AccountId>,
        limit: usize,
        day: UtcDay,
    ) -> Result<Page<(AccountId, Usage)>> {
        let prefix = base(instance, TOTAL);
        let start = match after {
            Some(a) => {
                // Strictly after the cursor's own key.
                let mut k = total_key(instance, Some(a));
                k.push(0);
                k
            }
            // The instance's own total (empty account) is not an account.
            None => {
                let mut k = prefix.clone();
                k.push(0);
                k
            }
        };
        let mut items = Vec::new();
        let mut has_more = false;
        for kv in self.blob_refs.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            if items.len() == limit {
                has_more = true;
                break;
            }
            let account = AccountId(
                String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| Error::Internal("malformed usage counter key".into()))?,
            );
            let uploaded_today =
                super::read_count(self.blob_refs.get(day_key(instance, day, Some(&account)))?);
            items.push((
                account,
                Usage {
                    counters: decode_counters(&v),
                    uploaded_today,
                },
            ));
        }
        Ok(Page { items, has_more })
    }

    fn quota_limits(
        &self,
        instance: InstanceId,
        scope: &QuotaScope,
    ) -> Result<Option<QuotaLimits>> {
        super::decode(self.db.open_tree(QUOTAS)?.get(scope_key(instance, scope))?)
    }

    fn put_quota_limits(
        &self,
        instance: InstanceId,
        scope: &QuotaScope,
        limits: &QuotaLimits,
    ) -> Result<()> {
        let tree = self.db.open_tree(QUOTAS)?;
        let key = scope_key(instance, scope);
        if limits.is_unlimited() {
            tree.remove(key)?;
        } else {
            tree.insert(key, serde_json::to_vec(limits)?)?;
        }
        self.flush()
    }

    fn all_counters(&self) -> Result<Vec<(InstanceId, Option<AccountId>, Counters)>> {
        let mut out = Vec::new();
        for kv in self.blob_refs.scan_prefix(PREFIX) {
            let (k, v) = kv?;
            let rest = &k[PREFIX.len()..];
            let (Some(id), Some(&TOTAL)) = (rest.get(..16), rest.get(16)) else {
                continue;
            };
            let id = <[u8; 16]>::try_from(id)
                .map_err(|_| Error::Internal("malformed usage counter key".into()))?;
            let account = &rest[17..];
            let account = if account.is_empty() {
                None
            } else {
                Some(AccountId(String::from_utf8(account.to_vec()).map_err(
                    |_| Error::Internal("malformed usage counter key".into()),
                )?))
            };
            out.push((InstanceId::from_bytes(id), account, decode_counters(&v)));
        }
        Ok(out)
    }

    fn set_counters(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        counters: &Counters,
    ) -> Result<()> {
        let key = total_key(instance, account);
        if *counters == Counters::default() {
            self.blob_refs.remove(key)?;
        } else {
            self.blob_refs.insert(key, encode_counters(counters))?;
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::contract::file;
    use crate::meta::{FileStore, InstanceStore, MaintenanceStore};

    /// A store from before the counters (schema 3, none kept) gets them, exact, on open.
    #[test]
    fn an_older_store_gets_its_counters_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let instance = {
            let m = SledMeta::open(dir.path()).unwrap();
            let i = m.ensure_instance("a.test").unwrap().id;
            m.insert_files(&[
                (file(i, "alice", "/", "a.txt", 1), None),
                (file(i, "bob", "/", "b.txt", 1), None),
            ])
            .unwrap();
            let keys: Vec<_> = m.blob_refs.scan_prefix(PREFIX).keys().collect();
            for k in keys {
                m.blob_refs.remove(k.unwrap()).unwrap();
            }
            m.schema
                .insert(super::super::SCHEMA_KEY, &3u64.to_be_bytes())
                .unwrap();
            m.flush().unwrap();
            assert_eq!(m.usage(i, None, UtcDay(0)).unwrap().counters.files, 0);
            i
        };
        let m = SledMeta::open(dir.path()).unwrap();
        let alice = AccountId("alice".into());
        let u = m.usage(instance, Some(&alice), UtcDay(0)).unwrap();
        assert_eq!((u.counters.bytes, u.counters.files), (3, 1));
        let all = m.usage(instance, None, UtcDay(0)).unwrap();
        assert_eq!((all.counters.bytes, all.counters.files), (6, 2));
        assert_eq!(
            m.all_blob_refs().unwrap().len(),
            1,
            "one blob, no counter among them"
        );
    }
}
