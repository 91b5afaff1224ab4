//! Image variants (issue 16): a transform of a source blob (`?w=320&format=webp`) computed once
//! and kept as an ordinary content-addressed blob. A variant record is keyed by the source's
//! SHA-256 and the normalized transform parameters; it holds one reference on the variant's
//! blob (counted with the files' and sessions' in the blob reference counts, so fsck and gc see
//! it) and goes, with that reference, when its source blob goes.

use super::Records;
use crate::error::Result;
use crate::types::{AccountId, InstanceId, Millis, Sha256};
use serde::{Deserialize, Serialize};

/// A variant's identity: `<source sha hex>/<normalized parameters>`, e.g.
/// `ab12...ef/w=320,h=240,fit=cover,format=webp,q=80`. Built by the service from parameters
/// after defaults and clamping, so equal requests name one variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VariantKey(pub String);

impl VariantKey {
    /// The key of the variant of `source` made with these normalized parameters.
    pub fn new(source: &Sha256, params: &str) -> Self {
        Self(format!("{}/{params}", source.to_hex()))
    }
}

impl std::fmt::Display for VariantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One computed variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantRecord {
    pub key: VariantKey,
    /// The blob it was computed from.
    pub source: Sha256,
    /// The variant's own blob (its ETag).
    pub sha: Sha256,
    /// The variant's size in bytes: counted in the usage of [`VariantRecord::charged_to`].
    pub size: u64,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub created: Millis,
    /// The account whose usage this variant counts in (the owner of the file it was first
    /// computed for); `None` for variants recorded before usage was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_to: Option<(InstanceId, AccountId)>,
}

/// Variant records and the blob references they hold. Narrow on purpose: the download path
/// reads one record by key; computing one writes it; removing a source removes its variants.
pub trait VariantStore {
    /// The variant with this key, if computed.
    fn variant(&self, key: &VariantKey) -> Result<Option<VariantRecord>>;
    /// Records a variant and counts one reference on its blob (and its size in the usage of
    /// the account it is charged to), atomically. When a record with
    /// that key exists already, nothing changes and the existing record is the answer (so a
    /// second node computing the same variant adds no reference); else `v` is.
    fn put_variant(&self, v: &VariantRecord) -> Result<VariantRecord>;
    /// Every variant of a source blob, in key order.
    fn variants_of(&self, source: &Sha256) -> Result<Vec<VariantRecord>>;
    /// Removes every variant of `source` and drops the reference each held (and its size from
    /// the usage it counted in), atomically;
    /// returns them with the references their blobs have left (the caller removes a blob at 0).
    fn delete_variants_of(&self, source: &Sha256) -> Result<Vec<(VariantRecord, u64)>>;
    /// Every variant record (fsck counts the references they hold).
    fn all_variants(&self) -> Records<'_, VariantRecord>;
}
