//! The access view: what one caller may see in one instance, computed once per query from the
//! grants that name the caller, so its cost grows with what the caller may see, not with the
//! grants other accounts hold.

use super::Ctx;
use crate::auth::{access, Caller};
use crate::error::Result;
use crate::meta::{AccessRight, FileRecord, Instance};
use crate::service::Service;
use crate::types::now_millis;
use std::collections::HashMap;

/// What one caller may see in one instance.
pub(super) struct View {
    pub caller: Caller,
    pub instance: Instance,
    /// Grants of the instance that name the caller, by resource.
    pub rights: HashMap<String, Vec<AccessRight>>,
    /// Of those, the grants on directories, with the directory's current path: they reach
    /// what is below it (see [`crate::service::dirs`]).
    pub dir_rights: Vec<(String, AccessRight)>,
}

impl View {
    /// The read rule of `auth::access`, over the grants that name the caller.
    pub fn may_read(&self, f: &FileRecord) -> bool {
        // The read rule's first answer (owners and admins need no grant), before the id string,
        // the path and the grant lists are built: a scan by an admin checks every record.
        if self.manages(f) {
            return true;
        }
        let own = self.rights.get(&f.id.to_string()).into_iter().flatten();
        let wildcard = self.rights.get("*").into_iter().flatten();
        let path = f.path();
        let through: Vec<AccessRight> = self
            .dir_rights
            .iter()
            .filter(|(dir, _)| crate::service::dirs::is_below(&path, dir))
            .filter_map(|(_, r)| crate::service::dirs::reaching(r, f))
            .collect();
        access::may_read(
            &self.caller,
            f,
            &self.instance,
            own.chain(wildcard).chain(&through),
            now_millis(),
        )
    }

    /// Whether the caller owns `f` or administers its instance.
    pub fn manages(&self, f: &FileRecord) -> bool {
        f.instance == self.instance.id
            && matches!(&self.caller, Caller::User(p)
                if p.instance.eq_ignore_ascii_case(&self.instance.domain)
                    && access::manages(p, &f.created_by))
    }

    /// Whether `f` is in this view: readable, and when trashed only for its owner and admins
    /// (a grant shares a file, not its trash).
    pub fn shows(&self, f: &FileRecord) -> bool {
        f.instance == self.instance.id
            && (f.trashed.is_none() || self.manages(f))
            && self.may_read(f)
    }

    /// Every grant naming the caller.
    pub fn grants(&self) -> impl Iterator<Item = &AccessRight> {
        self.rights.values().flatten()
    }
}

impl Service {
    /// The view of `ctx`'s caller: a user in its token's instance; an anonymous caller in the
    /// instance its `hypi-domain` header names, else the configured default instance (as for
    /// downloads, which find the instance from the file). `None` when there is no instance.
    pub(super) fn view(&self, ctx: &Ctx) -> Result<Option<View>> {
        let domain = match &ctx.caller {
            Caller::User(p) => p.instance.clone(),
            Caller::Anonymous => match ctx
                .domain
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .or(self.config.default_instance.as_deref())
            {
                Some(d) => d.to_ascii_lowercase(),
                None => return Ok(None),
            },
        };
        let Some(instance) = self.meta.instance_by_domain(&domain)? else {
            return Ok(None);
        };
        let account;
        let members: &[&str] = match &ctx.caller {
            // Grants to `anonymous` count only while the instance allows anonymous requests.
            Caller::Anonymous if !instance.anonymous_requests => &[],
            Caller::Anonymous => &[access::ANONYMOUS],
            Caller::User(p) => {
                account = p.account.0.clone();
                &[account.as_str(), access::EVERYONE, access::ANONYMOUS]
            }
        };
        let mut rights: HashMap<String, Vec<AccessRight>> = HashMap::new();
        if !members.is_empty() {
            for r in self.meta.rights_naming(instance.id, members)? {
                if access::names_caller(&ctx.caller, &r, &instance) {
                    rights.entry(r.resource.clone()).or_default().push(r);
                }
            }
        }
        let mut dir_rights = Vec::new();
        for (resource, grants) in &rights {
            let Ok(id) = resource.parse() else { continue };
            if let Some(d) = self.meta.file(id)?.filter(|d| d.is_directory()) {
                dir_rights.extend(grants.iter().map(|r| (d.path(), r.clone())));
            }
        }
        Ok(Some(View {
            caller: ctx.caller.clone(),
            instance,
            rights,
            dir_rights,
        }))
    }
}
