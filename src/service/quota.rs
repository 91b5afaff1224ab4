//! Quotas (issue 15): limits on the bytes and files an account and an instance store and on
//! the bytes they upload per UTC day, and the usage report.
//!
//! Limits come, per scope, from what an admin stored (`PUT /instances/{domain}/quotas`, `PUT
//! /instances/{domain}/accounts/{account}/quota`), else from `[quotas]` in the config;
//! unlimited by default. An account's limits are its own, else the instance's account
//! defaults, else the config's.
//!
//! Every flow that creates bytes asks [`Service::admit`] right before it writes the record (a
//! file inserted, a session confirmed, a file's bytes replaced) and holds the [`Permit`] until
//! the record is written: permits of one instance are taken one at a time (in this process), so
//! two uploads racing for the last bytes cannot both get in. Flows that know a size before the
//! bytes arrive (tus `Upload-Length`, a presigned or multipart upload's declared size) also ask
//! [`Service::precheck`] first, so a client is refused before it sends anything.
//!
//! A single upload larger than a limit itself can never fit: 413 `FILE_TOO_LARGE`. One that
//! fits the limit but not what is left of it: 429 `QUOTA_EXCEEDED`. Both carry the
//! [`Allowance`] left.

use super::{blocking, Service};
use crate::auth::Principal;
use crate::error::{Allowance, Error, Result};
use crate::meta::usage::{QuotaLimits, QuotaScope, Usage, UtcDay};
use crate::meta::FileRecord;
use crate::types::{now_millis, AccountId, InstanceId};
use std::sync::{Arc, Mutex, MutexGuard};

/// Lock stripes over instances for [`Service::admit`].
const STRIPES: usize = 16;

/// The quota state the service keeps in memory: the admission locks.
pub(crate) struct Runtime {
    locks: Vec<Mutex<()>>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

/// What an upload adds, as quotas count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Incoming {
    /// Change in stored bytes (negative when a re-upload is smaller).
    pub bytes: i128,
    /// New files.
    pub files: u64,
    /// Bytes uploaded (charged to today's upload counter).
    pub uploaded: u64,
}

impl Incoming {
    /// New files of these sizes.
    pub fn new_files(sizes: impl IntoIterator<Item = u64>) -> Self {
        let mut me = Self::default();
        for s in sizes {
            me.bytes += i128::from(s);
            me.files += 1;
            me.uploaded = me.uploaded.saturating_add(s);
        }
        me
    }

    /// One new file of `size` bytes.
    pub fn file(size: u64) -> Self {
        Self::new_files([size])
    }

    /// `old`'s bytes replaced by `new_size` bytes.
    pub fn replacing(old: &FileRecord, new_size: u64) -> Self {
        Self {
            bytes: i128::from(new_size) - i128::from(old.size),
            files: 0,
            uploaded: new_size,
        }
    }
}

/// The limits that apply to one upload: the instance's and the account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applicable {
    pub instance: QuotaLimits,
    pub account: QuotaLimits,
}

impl Applicable {
    fn is_unlimited(&self) -> bool {
        self.instance.is_unlimited() && self.account.is_unlimited()
    }
}

/// Room granted to one upload: held until its record is written.
pub struct Permit<'a> {
    _lock: Option<MutexGuard<'a, ()>>,
}

/// One limit checked against what is used.
struct Check {
    what: &'static str,
    whose: &'static str,
    limit: u64,
    used: u64,
    add: i128,
    daily: bool,
    /// Whether this counts bytes (files otherwise): only bytes make an upload "too large".
    bytes: bool,
}

impl Check {
    fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

impl Service {
    /// The limits of `instance` and of `account` in it (stored, else defaults, else config).
    pub(crate) fn applicable_limits(
        &self,
        instance: InstanceId,
        account: &AccountId,
    ) -> Result<Applicable> {
        let cfg = &self.config.quotas;
        let stored_instance = self
            .meta
            .quota_limits(instance, &QuotaScope::Instance)?
            .unwrap_or_default();
        let stored_default = self
            .meta
            .quota_limits(instance, &QuotaScope::AccountDefault)?
            .unwrap_or_default();
        let own = self
            .meta
            .quota_limits(instance, &QuotaScope::Account(account.clone()))?
            .unwrap_or_default();
        Ok(Applicable {
            instance: stored_instance.or(cfg.instance_limits()),
            account: own.or(stored_default).or(cfg.account_limits()),
        })
    }

    /// Admits an upload of `incoming` by `account` into `instance`, or refuses it (413 / 429,
    /// with what is left). Call it right before the record is written and keep the permit
    /// until it is: permits of an instance are granted one at a time. Blocks.
    pub(crate) fn admit(
        &self,
        instance: InstanceId,
        account: &AccountId,
        incoming: Incoming,
    ) -> Result<Permit<'_>> {
        let limits = self.applicable_limits(instance, account)?;
        if limits.is_unlimited() {
            return Ok(Permit { _lock: None });
        }
        let stripe = usize::from(instance.to_bytes()[15]) % self.quotas.locks.len();
        let lock = self.quotas.locks[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.check(instance, account, &limits, incoming)?;
        Ok(Permit { _lock: Some(lock) })
    }

    /// Refuses, before any byte is sent, an upload of `size` bytes (unknown: `None`) that
    /// cannot fit now. The authoritative check is [`Service::admit`]'s, when the record is
    /// written.
    pub async fn precheck(self: &Arc<Self>, p: &Principal, size: Option<u64>) -> Result<()> {
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            let Some(instance) = svc.meta.instance_by_domain(&p.instance)? else {
                // No instance yet: nothing is stored, only the limits themselves can refuse.
                let limits = Applicable {
                    instance: svc.config.quotas.instance_limits(),
                    account: svc.config.quotas.account_limits(),
                };
                return precheck_empty(&limits, size);
            };
            svc.precheck_in(instance.id, &p.account, size)
        })
        .await
    }

    /// [`Service::precheck`] for a known instance. Blocks.
    pub(crate) fn precheck_in(
        &self,
        instance: InstanceId,
        account: &AccountId,
        size: Option<u64>,
    ) -> Result<()> {
        let limits = self.applicable_limits(instance, account)?;
        if limits.is_unlimited() {
            return Ok(());
        }
        let incoming = match size {
            Some(s) => Incoming::file(s),
            // Unknown size: only a full quota refuses it now.
            None => Incoming {
                bytes: 0,
                files: 1,
                uploaded: 0,
            },
        };
        self.check(instance, account, &limits, incoming)
    }

    /// What `p`'s quota leaves now (the tightest limit), `None` when no limit applies: for the
    /// headers of a successful upload.
    pub async fn allowance(self: &Arc<Self>, p: &Principal) -> Result<Option<Allowance>> {
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            let Some(instance) = svc.meta.instance_by_domain(&p.instance)? else {
                return Ok(None);
            };
            let limits = svc.applicable_limits(instance.id, &p.account)?;
            if limits.is_unlimited() {
                return Ok(None);
            }
            let checks = svc.checks(instance.id, &p.account, &limits, Incoming::default())?;
            Ok(tightest(&checks))
        })
        .await
    }

    /// Every limit that applies, with what is used.
    fn checks(
        &self,
        instance: InstanceId,
        account: &AccountId,
        limits: &Applicable,
        incoming: Incoming,
    ) -> Result<Vec<Check>> {
        let day = UtcDay::of(now_millis());
        let mine = self.meta.usage(instance, Some(account), day)?;
        let all = self.meta.usage(instance, None, day)?;
        let mut checks = Vec::new();
        for (whose, l, u) in [
            ("the account", &limits.account, &mine),
            ("the instance", &limits.instance, &all),
        ] {
            let u: &Usage = u;
            if let Some(limit) = l.max_bytes {
                checks.push(Check {
                    what: "stored bytes",
                    whose,
                    limit,
                    used: u.counters.stored(),
                    add: incoming.bytes,
                    daily: false,
                    bytes: true,
                });
            }
            if let Some(limit) = l.max_upload_bytes_per_day {
                checks.push(Check {
                    what: "upload bytes today",
                    whose,
                    limit,
                    used: u.uploaded_today,
                    add: i128::from(incoming.uploaded),
                    daily: true,
                    bytes: true,
                });
            }
            if let Some(limit) = l.max_files {
                checks.push(Check {
                    what: "files",
                    whose,
                    limit,
                    used: u.counters.files,
                    add: i128::from(incoming.files),
                    daily: false,
                    bytes: false,
                });
            }
        }
        Ok(checks)
    }

    fn check(
        &self,
        instance: InstanceId,
        account: &AccountId,
        limits: &Applicable,
        incoming: Incoming,
    ) -> Result<()> {
        let checks = self.checks(instance, account, limits, incoming)?;
        refuse(&checks)
    }
}

/// The first limit the checks break, as the error to answer with.
fn refuse(checks: &[Check]) -> Result<()> {
    let now = now_millis();
    let allowance = |c: &Check| Allowance {
        limit: c.limit,
        remaining: c.remaining(),
        reset_secs: c.daily.then(|| UtcDay::of(now).seconds_left(now)),
    };
    // "Can never fit" first: no waiting or deleting makes room for it.
    for c in checks {
        if c.bytes && c.add > i128::from(c.limit) {
            return Err(Error::OverQuota {
                message: format!(
                    "this upload ({} bytes) is larger than {} limit of {} {}",
                    c.add, c.whose, c.limit, c.what
                ),
                never_fits: true,
                allowance: allowance(c),
            });
        }
    }
    for c in checks {
        if c.add > 0 && i128::from(c.used) + c.add > i128::from(c.limit) {
            return Err(Error::OverQuota {
                message: format!(
                    "over quota: {} has {} of its {} {} left, this upload needs {}",
                    c.whose,
                    c.remaining(),
                    c.limit,
                    c.what,
                    c.add
                ),
                never_fits: false,
                allowance: allowance(c),
            });
        }
    }
    Ok(())
}

/// The check leaving the least room, as headers describe it.
fn tightest(checks: &[Check]) -> Option<Allowance> {
    let now = now_millis();
    checks
        .iter()
        .filter(|c| c.bytes)
        .min_by_key(|c| c.remaining())
        .map(|c| Allowance {
            limit: c.limit,
            remaining: c.remaining(),
            reset_secs: c.daily.then(|| UtcDay::of(now).seconds_left(now)),
        })
}

/// [`Service::precheck`] for an instance that stores nothing yet.
fn precheck_empty(limits: &Applicable, size: Option<u64>) -> Result<()> {
    let size = size.unwrap_or(0);
    let mut checks = Vec::new();
    for (whose, l) in [
        ("the account", &limits.account),
        ("the instance", &limits.instance),
    ] {
        for (what, limit, daily) in [
            ("stored bytes", l.max_bytes, false),
            ("upload bytes today", l.max_upload_bytes_per_day, true),
        ] {
            if let Some(limit) = limit {
                checks.push(Check {
                    what,
                    whose,
                    limit,
                    used: 0,
                    add: i128::from(size),
                    daily,
                    bytes: true,
                });
            }
        }
        if let Some(limit) = l.max_files {
            checks.push(Check {
                what: "files",
                whose,
                limit,
                used: 0,
                add: 1,
                daily: false,
                bytes: false,
            });
        }
    }
    refuse(&checks)
}
