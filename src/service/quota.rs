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
//! two uploads racing for the last bytes cannot both get in. Several nodes sharing a PostgreSQL
//! store each admit on their own: together they can overshoot a limit by at most one upload per
//! node in flight at that moment. (Taking a cross-node lock here, through the blob-lock pool,
//! while callers already hold blob locks from that pool could exhaust it; the exact multi-node
//! check belongs inside the record's SQL transaction, and is not done yet.) Flows that know a size before the
//! bytes arrive (tus `Upload-Length`, a presigned or multipart upload's declared size) also ask
//! [`Service::precheck`] first, so a client is refused before it sends anything.
//!
//! A single upload larger than a limit itself can never fit: 413 `FILE_TOO_LARGE`. One that
//! fits the limit but not what is left of it: 429 `QUOTA_EXCEEDED`. Both carry the
//! [`Allowance`] left.

use super::{blocking, Service};
use crate::auth::Principal;
use crate::error::{Allowance, Error, Remaining, Result};
use crate::meta::usage::{QuotaLimits, QuotaScope, Usage, UtcDay};
use crate::meta::FileRecord;
use crate::types::{now_millis, AccountId, InstanceId};
use std::sync::{Arc, Mutex, MutexGuard};

/// Policy names (bytes, files, upload bytes per day) in the `RateLimit-*` headers.
const ACCOUNT: [&str; 3] = ["account-bytes", "account-files", "account-upload-day"];
const INSTANCE: [&str; 3] = ["instance-bytes", "instance-files", "instance-upload-day"];

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

    /// One new file whose size is not known yet: only a full quota refuses it.
    pub fn unknown_size() -> Self {
        Self {
            bytes: 0,
            files: 1,
            uploaded: 0,
        }
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

/// What the byte limits leave one request, for stopping a part as soon as it crosses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// The least any byte limit leaves.
    left: u64,
    /// The smallest byte limit: a part larger can never fit.
    cap: u64,
    /// The limits as the request found them, for the refusal's headers.
    allowance: Allowance,
}

impl Room {
    /// What is left once `used` more bytes are taken.
    pub fn after(self, used: u64) -> Room {
        Room {
            left: self.left.saturating_sub(used),
            ..self
        }
    }

    /// The answer for a part that reached `size` bytes, if it no longer fits.
    pub fn refuse(&self, size: u64) -> Option<Error> {
        if size > self.cap {
            return Some(Error::OverQuota {
                message: format!(
                    "this upload is larger than a quota's limit of {} bytes",
                    self.cap
                ),
                never_fits: true,
                allowance: self.allowance.clone(),
            });
        }
        (size > self.left).then(|| Error::OverQuota {
            message: format!(
                "over quota: this upload is larger than the {} bytes the quotas leave",
                self.left
            ),
            never_fits: false,
            allowance: self.allowance.clone(),
        })
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
    /// Other nodes' permits for the instance wait for this one (on a shared metadata store).
    _node: Option<Box<dyn crate::meta::HeldLock>>,
    _lock: Option<MutexGuard<'a, ()>>,
    /// The limits it was granted under.
    limits: Applicable,
}

/// One limit checked against what is used.
struct Check {
    policy: &'static str,
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
            return Ok(Permit {
                _node: None,
                _lock: None,
                limits,
            });
        }
        // This node's threads queue in process first; then at most one of them per stripe
        // waits for the other nodes' (the usage read below must see their records).
        let stripe = usize::from(instance.to_bytes()[15]) % self.quotas.locks.len();
        let lock = self.quotas.locks[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let node = self.meta.lock_quota(instance)?;
        self.check(instance, account, &limits, incoming)?;
        Ok(Permit {
            _node: node,
            _lock: Some(lock),
            limits,
        })
    }

    /// What the quotas leave `account` now, `None` when no limit applies, given the limits a
    /// [`Permit`] was granted under: for the headers of a successful upload, read in the same
    /// blocking call that wrote its record. Blocks.
    pub(crate) fn allowance_after(
        &self,
        instance: InstanceId,
        account: &AccountId,
        permit: &Permit<'_>,
    ) -> Result<Option<Allowance>> {
        if permit.limits.is_unlimited() {
            return Ok(None);
        }
        let checks = self.checks(instance, account, &permit.limits, Incoming::default())?;
        Ok(Some(allowance(&checks, None)))
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
        // Unknown size: only a full quota refuses it now.
        let incoming = size.map_or_else(Incoming::unknown_size, Incoming::file);
        self.check(instance, account, &limits, incoming)
    }

    /// Refuses, before any byte is read, an upload of unknown size when a quota is full (as
    /// [`Service::precheck`] with no size), and else returns what `p`'s byte limits leave now,
    /// `None` when none applies: a bound for the parts of an upload on their way in. One trip
    /// to the blocking pool and one read of the limits for both answers (profiled: a 4 KiB
    /// upload spent about a fifth of its time in such trips and reads).
    pub async fn upload_room(self: &Arc<Self>, p: &Principal) -> Result<Option<Room>> {
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            let Some(instance) = svc.meta.instance_by_domain(&p.instance)? else {
                let limits = Applicable {
                    instance: svc.config.quotas.instance_limits(),
                    account: svc.config.quotas.account_limits(),
                };
                precheck_empty(&limits, None)?;
                return Ok(None);
            };
            let limits = svc.applicable_limits(instance.id, &p.account)?;
            if limits.is_unlimited() {
                return Ok(None);
            }
            // Unknown size: only a full quota refuses now (the authoritative check is at
            // commit). What is left does not depend on what is incoming.
            let checks = svc.checks(instance.id, &p.account, &limits, Incoming::unknown_size())?;
            refuse(&checks)?;
            let bytes = || checks.iter().enumerate().filter(|(_, c)| c.bytes);
            let Some((tightest, left)) = bytes()
                .map(|(i, c)| (i, c.remaining()))
                .min_by_key(|&(_, left)| left)
            else {
                return Ok(None);
            };
            Ok(Some(Room {
                left,
                cap: bytes().map(|(_, c)| c.limit).min().unwrap_or(left),
                allowance: allowance(&checks, Some(tightest)),
            }))
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
        for (whose, names, l, u) in [
            ("the account", ACCOUNT, &limits.account, &mine),
            ("the instance", INSTANCE, &limits.instance, &all),
        ] {
            let u: &Usage = u;
            if let Some(limit) = l.max_bytes {
                checks.push(Check {
                    policy: names[0],
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
                    policy: names[2],
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
                    policy: names[1],
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

/// Every limit as headers describe it, `first` (the one that refused) leading.
fn allowance(checks: &[Check], first: Option<usize>) -> Allowance {
    let now = now_millis();
    let mut order: Vec<usize> = (0..checks.len()).collect();
    if let Some(f) = first {
        order.retain(|&i| i != f);
        order.insert(0, f);
    }
    Allowance(
        order
            .into_iter()
            .map(|i| {
                let c = &checks[i];
                Remaining {
                    policy: c.policy,
                    limit: c.limit,
                    remaining: c.remaining(),
                    reset_secs: c.daily.then(|| UtcDay::of(now).seconds_left(now)),
                }
            })
            .collect(),
    )
}

/// The first limit the checks break, as the error to answer with.
fn refuse(checks: &[Check]) -> Result<()> {
    // "Can never fit" first: no waiting or deleting makes room for it.
    for (i, c) in checks.iter().enumerate() {
        if c.bytes && c.add > i128::from(c.limit) {
            return Err(Error::OverQuota {
                message: format!(
                    "this upload ({} bytes) is larger than {} limit of {} {}",
                    c.add, c.whose, c.limit, c.what
                ),
                never_fits: true,
                allowance: allowance(checks, Some(i)),
            });
        }
    }
    for (i, c) in checks.iter().enumerate() {
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
                allowance: allowance(checks, Some(i)),
            });
        }
    }
    Ok(())
}

/// [`Service::precheck`] for an instance that stores nothing yet.
fn precheck_empty(limits: &Applicable, size: Option<u64>) -> Result<()> {
    let size = size.unwrap_or(0);
    let mut checks = Vec::new();
    for (whose, names, l) in [
        ("the account", ACCOUNT, &limits.account),
        ("the instance", INSTANCE, &limits.instance),
    ] {
        for (policy, what, limit, daily) in [
            (names[0], "stored bytes", l.max_bytes, false),
            (
                names[2],
                "upload bytes today",
                l.max_upload_bytes_per_day,
                true,
            ),
        ] {
            if let Some(limit) = limit {
                checks.push(Check {
                    policy,
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
                policy: names[1],
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
