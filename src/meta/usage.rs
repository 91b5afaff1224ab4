//! Usage counters and quota limits (issue 15).
//!
//! Each backend keeps, per instance and per account, the bytes and the number of files its
//! records hold, the bytes of the image variants charged to the account, and the bytes accepted
//! per UTC day. The counters change in the same transaction as the record that changes them
//! (a file inserted, confirmed, re-uploaded or deleted; a variant recorded or dropped), so they
//! stay exact under concurrency and crashes; `depot fsck` checks them against the records.
//!
//! Rules every backend follows (the contract suite checks them):
//! - A file counts its own `size`, even when its bytes are shared with other files (dedup):
//!   usage is what the owner sees, not what the disk holds.
//! - Directories count nothing. Trashed files count until they are deleted (a trashed file
//!   still holds its bytes and can be restored).
//! - A re-upload counts the new size in place of the old and charges the new size to the day
//!   of the re-upload.
//! - A variant counts against the account it was charged to ([`VariantRecord::charged_to`]),
//!   until it is dropped with its source.
//!
//! [`VariantRecord::charged_to`]: super::VariantRecord

use super::{FileRecord, Page};
use crate::error::{Error, Result};
use crate::types::{AccountId, InstanceId, Millis};
use serde::{Deserialize, Serialize};

/// Milliseconds in a UTC day.
const DAY_MS: u64 = 86_400_000;

/// A UTC day, counted from the Unix epoch (the key of the daily upload counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDay(pub u32);

impl UtcDay {
    /// The UTC day a moment falls in.
    pub fn of(at: Millis) -> Self {
        Self(u32::try_from(at / DAY_MS).unwrap_or(u32::MAX))
    }

    /// Whole seconds from `now` until this day ends (when its daily counter no longer applies).
    pub fn seconds_left(self, now: Millis) -> u64 {
        let end = (u64::from(self.0) + 1) * DAY_MS;
        end.saturating_sub(now).div_ceil(1000)
    }
}

/// What one account (or a whole instance) holds: the running totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// The sum of the sizes of its files (each file counts its own size, shared bytes or not).
    pub bytes: u64,
    /// How many files (directories excluded).
    pub files: u64,
    /// The bytes of the image variants charged to it.
    pub variant_bytes: u64,
}

impl Counters {
    /// The bytes its stored-bytes quota is measured against: files and variants.
    pub fn stored(&self) -> u64 {
        self.bytes.saturating_add(self.variant_bytes)
    }
}

/// A change to [`Counters`] (and to the day's upload counter), applied in a record's
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageDelta {
    pub bytes: i128,
    pub files: i128,
    pub variant_bytes: i128,
    /// Bytes accepted for upload on `day`.
    pub uploaded: u64,
    pub day: Option<UtcDay>,
}

impl UsageDelta {
    /// A new file record: its size and one file; its bytes are that day's upload.
    pub fn added(f: &FileRecord) -> Self {
        if f.is_directory() {
            return Self::default();
        }
        Self {
            bytes: i128::from(f.size),
            files: 1,
            variant_bytes: 0,
            uploaded: f.size,
            day: Some(UtcDay::of(f.created)),
        }
    }

    /// A file record removed for good.
    pub fn removed(f: &FileRecord) -> Self {
        if f.is_directory() {
            return Self::default();
        }
        Self {
            bytes: -i128::from(f.size),
            files: -1,
            ..Self::default()
        }
    }

    /// A file's bytes replaced (a re-upload): the size changes, the new bytes are that day's
    /// upload.
    pub fn replaced(old: &FileRecord, new: &FileRecord) -> Self {
        Self {
            bytes: i128::from(new.size) - i128::from(old.size),
            files: 0,
            variant_bytes: 0,
            uploaded: new.size,
            day: Some(UtcDay::of(new.updated)),
        }
    }

    /// A variant of `size` bytes recorded (`up`) or dropped.
    pub fn variant(size: u64, up: bool) -> Self {
        let n = i128::from(size);
        Self {
            variant_bytes: if up { n } else { -n },
            ..Self::default()
        }
    }

    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && self.files == 0 && self.variant_bytes == 0 && self.uploaded == 0
    }

    /// `c` with this change applied (never below zero).
    pub fn apply(&self, c: Counters) -> Counters {
        fn add(n: u64, d: i128) -> u64 {
            u64::try_from((i128::from(n) + d).max(0)).unwrap_or(u64::MAX)
        }
        Counters {
            bytes: add(c.bytes, self.bytes),
            files: add(c.files, self.files),
            variant_bytes: add(c.variant_bytes, self.variant_bytes),
        }
    }
}

/// What one account (or an instance) uses now, as reported and as quotas measure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub counters: Counters,
    /// Bytes accepted for upload on the day asked about.
    pub uploaded_today: u64,
}

/// Limits of one scope; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaLimits {
    /// Bytes stored (files and the variants charged to the scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Files stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    /// Upload bytes accepted per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes_per_day: Option<u64>,
}

impl QuotaLimits {
    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none()
            && self.max_files.is_none()
            && self.max_upload_bytes_per_day.is_none()
    }

    /// Each limit of `self`, else `fallback`'s.
    pub fn or(self, fallback: QuotaLimits) -> QuotaLimits {
        QuotaLimits {
            max_bytes: self.max_bytes.or(fallback.max_bytes),
            max_files: self.max_files.or(fallback.max_files),
            max_upload_bytes_per_day: self
                .max_upload_bytes_per_day
                .or(fallback.max_upload_bytes_per_day),
        }
    }
}

/// Whose limits a stored [`QuotaLimits`] are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    /// The instance as a whole (all its accounts together).
    Instance,
    /// Every account of the instance without limits of its own.
    AccountDefault,
    /// One account.
    Account(AccountId),
}

/// Usage counters and quota limits. Counters are written only by the record-changing calls of
/// the other traits (in their transactions); these read them, and let fsck rewrite them.
pub trait UsageStore {
    /// The counters of one account (`Some`) or of the whole instance (`None`), with the upload
    /// bytes of `day`.
    fn usage(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        day: UtcDay,
    ) -> Result<Usage>;
    /// Accounts of an instance with counters, in account order, strictly after `after`, at
    /// most `limit` of them.
    fn usage_page(
        &self,
        instance: InstanceId,
        after: Option<&AccountId>,
        limit: usize,
        day: UtcDay,
    ) -> Result<Page<(AccountId, Usage)>>;
    /// The limits stored for a scope, if any.
    fn quota_limits(&self, instance: InstanceId, scope: &QuotaScope)
        -> Result<Option<QuotaLimits>>;
    /// Stores the limits of a scope (all unlimited removes them).
    fn put_quota_limits(
        &self,
        instance: InstanceId,
        scope: &QuotaScope,
        limits: &QuotaLimits,
    ) -> Result<()>;
    /// Every stored counter: `(instance, account or None for the instance total, counters)`
    /// (fsck).
    fn all_counters(&self) -> Result<Vec<(InstanceId, Option<AccountId>, Counters)>>;
    /// Overwrites one counter (fsck --repair); all zero removes it.
    fn set_counters(
        &self,
        instance: InstanceId,
        account: Option<&AccountId>,
        counters: &Counters,
    ) -> Result<()>;
}

/// A limit value from text or JSON: a non-negative whole number, or `null` for none.
pub fn parse_limit(field: &str, v: &serde_json::Value) -> Result<Option<u64>> {
    match v {
        serde_json::Value::Null => Ok(None),
        // A whole number written as a float (`5.0`, `1e9`) is one too (JSON Schema's
        // `integer` admits it, and some encoders write numbers so); below 2^64, where `as`
        // cannot saturate.
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f))
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "{field} must be a non-negative whole number (or null for no limit), not {n}"
                ))
            }),
        other => Err(Error::BadRequest(format!(
            "{field} must be a non-negative whole number (or null for no limit), not {other}"
        ))),
    }
}
