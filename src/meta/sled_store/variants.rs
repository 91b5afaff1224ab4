//! Image variant records on sled: one tree by key, one index by source blob; each record's
//! blob reference is counted in `blob_refs` in the same transaction.

use super::{abort, read_count, SledMeta};
use crate::error::{Error, Result};
use crate::meta::usage::UsageDelta;
use crate::meta::{Records, VariantKey, VariantRecord, VariantStore};
use crate::types::Sha256;
use sled::Transactional;

/// `source ++ key`: the index entry of a variant.
fn source_key(v: &VariantRecord) -> Vec<u8> {
    let mut k = v.source.0.to_vec();
    k.extend_from_slice(v.key.0.as_bytes());
    k
}

impl VariantStore for SledMeta {
    fn variant(&self, key: &VariantKey) -> Result<Option<VariantRecord>> {
        super::decode(self.variants.get(key.0.as_bytes())?)
    }

    fn put_variant(&self, v: &VariantRecord) -> Result<VariantRecord> {
        let json = serde_json::to_vec(v)?;
        let out = (&self.variants, &self.variants_by_source, &self.blob_refs).transaction(
            |(tv, ts, tr)| {
                if let Some(old) = tv.get(v.key.0.as_bytes())? {
                    let old: VariantRecord = serde_json::from_slice(&old).map_err(abort)?;
                    return Ok((old, false));
                }
                tv.insert(v.key.0.as_bytes(), json.as_slice())?;
                ts.insert(source_key(v), &[])?;
                let n = read_count(tr.get(v.sha.0)?);
                tr.insert(&v.sha.0, &(n + 1).to_be_bytes())?;
                if let Some((instance, account)) = &v.charged_to {
                    super::usage::apply_tx(
                        tr,
                        *instance,
                        account,
                        &UsageDelta::variant(v.size, true),
                    )?;
                }
                Ok((v.clone(), true))
            },
        )?;
        if out.1 {
            self.flush()?;
        }
        Ok(out.0)
    }

    fn variants_of(&self, source: &Sha256) -> Result<Vec<VariantRecord>> {
        let mut out = Vec::new();
        for k in self.variants_by_source.scan_prefix(source.0).keys() {
            let k = k?;
            if let Some(v) = super::decode::<VariantRecord>(self.variants.get(&k[32..])?)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn delete_variants_of(&self, source: &Sha256) -> Result<Vec<(VariantRecord, u64)>> {
        // sled transactions cannot scan: list the keys first; a variant recorded after the
        // scan is found by the next call (the service removes a source's variants when the
        // source blob goes, under its lock, and computes new ones only from a live source).
        let keys: Vec<Vec<u8>> = self
            .variants_by_source
            .scan_prefix(source.0)
            .keys()
            .map(|k| k.map(|k| k[32..].to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let gone = (&self.variants, &self.variants_by_source, &self.blob_refs).transaction(
            |(tv, ts, tr)| {
                let mut gone = Vec::new();
                for key in &keys {
                    let Some(raw) = tv.remove(key.as_slice())? else {
                        continue;
                    };
                    let v: VariantRecord = serde_json::from_slice(&raw).map_err(abort)?;
                    ts.remove(source_key(&v))?;
                    // Two variants may share one blob (equal output): count each drop.
                    let left = read_count(tr.get(v.sha.0)?).saturating_sub(1);
                    if left == 0 {
                        tr.remove(&v.sha.0)?;
                    } else {
                        tr.insert(&v.sha.0, &left.to_be_bytes())?;
                    }
                    if let Some((instance, account)) = &v.charged_to {
                        let delta = UsageDelta::variant(v.size, false);
                        super::usage::apply_tx(tr, *instance, account, &delta)?;
                    }
                    gone.push((v, left));
                }
                Ok(gone)
            },
        )?;
        // Two variants sharing a blob report its count after each drop: only the last can be 0.
        self.flush()?;
        Ok(gone)
    }

    fn all_variants(&self) -> Records<'_, VariantRecord> {
        Box::new(self.variants.iter().values().map(|v| {
            let v = v?;
            serde_json::from_slice(&v).map_err(Error::from)
        }))
    }
}
