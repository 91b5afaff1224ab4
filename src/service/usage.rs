//! The usage report and the quota settings an admin reads and writes (issue 15); the rules
//! that enforce the limits are in `quota`.

use super::{blocking, Service};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::meta::usage::Counters;
use crate::meta::usage::{parse_limit, QuotaLimits, QuotaScope, Usage, UtcDay};
use crate::types::{now_millis, AccountId, InstanceId};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most accounts one usage page lists.
pub const MAX_USAGE_PAGE: usize = 1000;
/// Accounts a usage page lists when the caller does not say.
pub const DEFAULT_USAGE_PAGE: usize = 100;
/// Longest account id accepted in a path or cursor (JWT subjects are far shorter).
const MAX_ACCOUNT_LEN: usize = 512;

/// Which usage a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// One account's (admins only, unless it is the caller's own).
    pub account: Option<String>,
    /// Page cursor: list accounts after this one.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
}

/// Usage as the API shows it.
fn usage_json(u: &Usage) -> Value {
    json!({
        "bytes": u.counters.bytes,
        "files": u.counters.files,
        "variantBytes": u.counters.variant_bytes,
        "storedBytes": u.counters.stored(),
        "uploadBytesToday": u.uploaded_today,
    })
}

/// Limits as the API shows them: every field, `null` for none.
pub fn limits_json(l: &QuotaLimits) -> Value {
    json!({
        "maxBytes": l.max_bytes,
        "maxFiles": l.max_files,
        "maxUploadBytesPerDay": l.max_upload_bytes_per_day,
    })
}

/// Limits from a JSON object of `maxBytes`, `maxFiles`, `maxUploadBytesPerDay` (each a
/// non-negative whole number or `null`; absent is `null`). Anything else is 400.
pub fn parse_limits(what: &str, v: &Value) -> Result<QuotaLimits> {
    let Value::Object(m) = v else {
        return Err(Error::BadRequest(format!("{what} must be a JSON object")));
    };
    let mut out = QuotaLimits::default();
    for (k, v) in m {
        let field = format!("{what}.{k}");
        match k.as_str() {
            "maxBytes" => out.max_bytes = parse_limit(&field, v)?,
            "maxFiles" => out.max_files = parse_limit(&field, v)?,
            "maxUploadBytesPerDay" => out.max_upload_bytes_per_day = parse_limit(&field, v)?,
            _ => {
                return Err(Error::BadRequest(format!(
                    "unknown field {field} (maxBytes, maxFiles, maxUploadBytesPerDay)"
                )))
            }
        }
    }
    Ok(out)
}

fn account_id(raw: &str) -> Result<AccountId> {
    if raw.is_empty() || raw.len() > MAX_ACCOUNT_LEN {
        return Err(Error::BadRequest(format!(
            "an account id is 1 to {MAX_ACCOUNT_LEN} bytes"
        )));
    }
    Ok(AccountId(raw.to_string()))
}

/// The domain a principal may act on: its own (another instance is not found).
fn own_domain(p: &Principal, domain: &str) -> Result<String> {
    let domain = domain.to_ascii_lowercase();
    if p.instance != domain {
        return Err(Error::NotFound(format!("no instance {domain}")));
    }
    Ok(domain)
}

fn require_admin(p: &Principal, what: &str) -> Result<()> {
    if !p.admin {
        return Err(Error::Forbidden(format!(
            "only an admin of {} may {what}",
            p.instance
        )));
    }
    Ok(())
}

impl Service {
    fn instance_id(&self, domain: &str) -> Result<InstanceId> {
        Ok(self.meta.ensure_instance(domain)?.id)
    }

    /// The quota settings of an instance (admins): what is stored, and what applies.
    pub async fn quota_settings(self: &Arc<Self>, p: &Principal, domain: &str) -> Result<Value> {
        let domain = own_domain(p, domain)?;
        require_admin(p, "read its quotas")?;
        let svc = self.clone();
        blocking(move || {
            let id = svc.instance_id(&domain)?;
            svc.settings_json(id)
        })
        .await
    }

    fn settings_json(&self, id: InstanceId) -> Result<Value> {
        let cfg = &self.config.quotas;
        let instance = self
            .meta
            .quota_limits(id, &QuotaScope::Instance)?
            .unwrap_or_default();
        let default = self
            .meta
            .quota_limits(id, &QuotaScope::AccountDefault)?
            .unwrap_or_default();
        Ok(json!({
            "instance": limits_json(&instance),
            "accountDefault": limits_json(&default),
            "effective": {
                "instance": limits_json(&instance.or(cfg.instance_limits())),
                "accountDefault": limits_json(&default.or(cfg.account_limits())),
            },
        }))
    }

    /// Sets an instance's limits and account defaults (admins). The body holds `instance`
    /// and/or `accountDefault`, each replacing that scope's stored limits (a field absent or
    /// `null` falls back to the config); a scope left out is unchanged.
    pub async fn set_quota_settings(
        self: &Arc<Self>,
        p: &Principal,
        domain: &str,
        body: Value,
    ) -> Result<Value> {
        let domain = own_domain(p, domain)?;
        require_admin(p, "set its quotas")?;
        let Value::Object(m) = body else {
            return Err(Error::BadRequest("the body must be a JSON object".into()));
        };
        let mut scopes = Vec::new();
        for (k, v) in &m {
            let scope = match k.as_str() {
                "instance" => QuotaScope::Instance,
                "accountDefault" => QuotaScope::AccountDefault,
                _ => {
                    return Err(Error::BadRequest(format!(
                        "unknown field {k} (instance, accountDefault)"
                    )))
                }
            };
            scopes.push((scope, parse_limits(k, v)?));
        }
        let svc = self.clone();
        blocking(move || {
            let id = svc.instance_id(&domain)?;
            for (scope, limits) in &scopes {
                svc.meta.put_quota_limits(id, scope, limits)?;
            }
            svc.settings_json(id)
        })
        .await
    }

    /// One account's quota: its own limits, and what applies to it (admins, or the account
    /// itself reading).
    pub async fn account_quota(
        self: &Arc<Self>,
        p: &Principal,
        domain: &str,
        account: &str,
    ) -> Result<Value> {
        let domain = own_domain(p, domain)?;
        let account = account_id(account)?;
        if account != p.account {
            require_admin(p, "read another account's quota")?;
        }
        let svc = self.clone();
        blocking(move || {
            let id = svc.instance_id(&domain)?;
            svc.account_quota_json(id, &account)
        })
        .await
    }

    fn account_quota_json(&self, id: InstanceId, account: &AccountId) -> Result<Value> {
        let own = self
            .meta
            .quota_limits(id, &QuotaScope::Account(account.clone()))?
            .unwrap_or_default();
        let applicable = self.applicable_limits(id, account)?;
        Ok(json!({
            "account": account.0,
            "limits": limits_json(&own),
            "effective": limits_json(&applicable.account),
        }))
    }

    /// Sets one account's own limits (admins): the body's fields replace what is stored (a
    /// field absent or `null` falls back to the instance's account defaults).
    pub async fn set_account_quota(
        self: &Arc<Self>,
        p: &Principal,
        domain: &str,
        account: &str,
        body: Value,
    ) -> Result<Value> {
        let domain = own_domain(p, domain)?;
        require_admin(p, "set an account's quota")?;
        let account = account_id(account)?;
        let limits = parse_limits("quota", &body)?;
        let svc = self.clone();
        blocking(move || {
            let id = svc.instance_id(&domain)?;
            svc.meta
                .put_quota_limits(id, &QuotaScope::Account(account.clone()), &limits)?;
            svc.account_quota_json(id, &account)
        })
        .await
    }

    /// Usage: an admin gets the instance's totals and a page of its accounts (or one account
    /// with `account`); anyone else their own.
    pub async fn usage_report(
        self: &Arc<Self>,
        p: &Principal,
        domain: &str,
        q: UsageQuery,
    ) -> Result<Value> {
        let domain = own_domain(p, domain)?;
        let limit = q.limit.unwrap_or(DEFAULT_USAGE_PAGE);
        if limit == 0 || limit > MAX_USAGE_PAGE {
            return Err(Error::BadRequest(format!(
                "limit must be 1 to {MAX_USAGE_PAGE}"
            )));
        }
        let one = match (&q.account, p.admin) {
            (Some(a), _) => Some(account_id(a)?),
            (None, false) => Some(p.account.clone()),
            (None, true) => None,
        };
        if let Some(a) = &one {
            if *a != p.account {
                require_admin(p, "read another account's usage")?;
            }
        }
        let after = q.after.as_deref().map(account_id).transpose()?;
        let svc = self.clone();
        blocking(move || {
            let id = svc.instance_id(&domain)?;
            let day = UtcDay::of(now_millis());
            if let Some(a) = one {
                let u = svc.meta.usage(id, Some(&a), day)?;
                let limits = svc.applicable_limits(id, &a)?;
                return Ok(json!({
                    "account": a.0,
                    "usage": usage_json(&u),
                    "limits": limits_json(&limits.account),
                }));
            }
            let total = svc.meta.usage(id, None, day)?;
            let page = svc.meta.usage_page(id, after.as_ref(), limit, day)?;
            // The defaults once; each account adds one read (its own limits).
            let defaults = svc
                .meta
                .quota_limits(id, &QuotaScope::AccountDefault)?
                .unwrap_or_default()
                .or(svc.config.quotas.account_limits());
            let mut accounts = Vec::with_capacity(page.items.len());
            for (a, u) in &page.items {
                let limits = svc
                    .meta
                    .quota_limits(id, &QuotaScope::Account(a.clone()))?
                    .unwrap_or_default()
                    .or(defaults);
                let mut row = Map::new();
                row.insert("account".into(), a.0.clone().into());
                row.insert("usage".into(), usage_json(u));
                row.insert("limits".into(), limits_json(&limits));
                accounts.push(Value::Object(row));
            }
            let next = match (page.has_more, page.items.last()) {
                (true, Some((a, _))) => Value::from(a.0.clone()),
                _ => Value::Null,
            };
            let cfg = svc.config.quotas.instance_limits();
            let instance_limits = svc
                .meta
                .quota_limits(id, &QuotaScope::Instance)?
                .unwrap_or_default()
                .or(cfg);
            Ok(json!({
                "instance": {
                    "domain": domain,
                    "usage": usage_json(&total),
                    "limits": limits_json(&instance_limits),
                },
                "accounts": accounts,
                "hasMore": page.has_more,
                "next": next,
            }))
        })
        .await
    }
}

impl Service {
    /// fsck: the usage counters against the file and variant records; one line per counter
    /// that differs, rewritten with `repair` (each rewrite is also added to `repaired`). On a
    /// store other nodes write meanwhile the walk meets counters mid-change, so nothing is
    /// checked there: run it with the nodes stopped.
    pub(crate) fn check_usage_counters(
        &self,
        repair: bool,
        repaired: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        if self.meta.shared() {
            return Ok(Vec::new());
        }
        type Key = (InstanceId, Option<AccountId>);
        let mut want: HashMap<Key, Counters> = HashMap::new();
        for f in self.meta.all_files() {
            let f = f?;
            if f.is_directory() {
                continue;
            }
            for who in [Some(f.created_by.clone()), None] {
                let c = want.entry((f.instance, who)).or_default();
                c.bytes += f.size;
                c.files += 1;
            }
        }
        for v in self.meta.all_variants() {
            let v = v?;
            if let Some((instance, account)) = v.charged_to {
                for who in [Some(account.clone()), None] {
                    want.entry((instance, who)).or_default().variant_bytes += v.size;
                }
            }
        }
        let mut have: HashMap<Key, Counters> = HashMap::new();
        for (instance, account, c) in self.meta.all_counters()? {
            have.insert((instance, account), c);
        }
        let keys: HashSet<Key> = want.keys().chain(have.keys()).cloned().collect();
        let mut drift = Vec::new();
        for key in keys {
            let w = want.get(&key).copied().unwrap_or_default();
            let h = have.get(&key).copied().unwrap_or_default();
            if w == h {
                continue;
            }
            let whose = match &key.1 {
                Some(a) => format!("account {a} of instance {}", key.0),
                None => format!("instance {}", key.0),
            };
            let line = format!(
                "usage of {whose}: counted {} bytes, {} files, {} variant bytes; records make {} bytes, {} files, {} variant bytes",
                h.bytes, h.files, h.variant_bytes, w.bytes, w.files, w.variant_bytes
            );
            if repair {
                self.meta.set_counters(key.0, key.1.as_ref(), &w)?;
                repaired.push(format!("rewrote the {line}"));
            }
            drift.push(line);
        }
        Ok(drift)
    }
}
