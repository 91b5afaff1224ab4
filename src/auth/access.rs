//! AccessRight evaluation: may this caller read this file?

use super::{Caller, Principal};
use crate::meta::{AccessRight, FileRecord, Instance, PermissionType};
use crate::types::{AccountId, Millis};

/// Member id for callers without a token.
pub const ANONYMOUS: &str = "anonymous";
/// Member id for every account of the instance.
pub const EVERYONE: &str = "*";

/// Operations that amount to reading a file.
const READ_OPERATIONS: &[&str] = &["*", "get", "find", "read", "download"];

/// The one "owner or admin" rule: `p` manages what `owner` created in `p`'s instance. Callers
/// check the instance separately (records carry an instance id, principals a domain).
pub fn manages(p: &Principal, owner: &AccountId) -> bool {
    p.admin || p.account == *owner
}

/// The one member-matching rule: whether a grant member `member` names `caller` in `instance`
/// (the caller's account, `*` for every account, `anonymous` while the instance allows
/// anonymous requests).
pub fn member_names(caller: &Caller, member: &str, instance: &Instance) -> bool {
    let anonymous_ok = member == ANONYMOUS && instance.anonymous_requests;
    match caller {
        Caller::Anonymous => anonymous_ok,
        Caller::User(p) => member == p.account.0 || member == EVERYONE || anonymous_ok,
    }
}

/// Whether a grant names `caller` among its members.
pub fn names_caller(caller: &Caller, right: &AccessRight, instance: &Instance) -> bool {
    right
        .members
        .iter()
        .any(|m| member_names(caller, m, instance))
}

/// Whether `right` grants a read of `file` at time `now` (members aside).
fn grants_read(right: &AccessRight, file: &FileRecord, now: Millis) -> bool {
    let covers = right.resource == file.id.to_string()
        || (right.resource == "*"
            // An admin's instance-wide grant stays off files their owners made unsharable.
            && ((right.granted_by_admin && file.is_sharable != Some(false))
                || right.created_by == file.created_by));
    covers
        && right.approved
        && right.permission_type == PermissionType::RBP
        && (right.resource_type == "*" || right.resource_type.eq_ignore_ascii_case("File"))
        && (right.operation_type == "*" || right.operation_type.eq_ignore_ascii_case("Query"))
        && READ_OPERATIONS
            .iter()
            .any(|op| right.operation.eq_ignore_ascii_case(op))
        && right.start_date.is_none_or(|s| now >= s)
        && right.end_date.is_none_or(|e| now < e)
}

/// The read decision. Owners and admins of the file's instance read everything of theirs;
/// nobody reads across instances; anyone else needs an applicable grant naming them, `*`, or
/// (while the instance allows anonymous requests) `anonymous`.
pub fn may_read<'a>(
    caller: &Caller,
    file: &FileRecord,
    instance: &Instance,
    rights: impl IntoIterator<Item = &'a AccessRight>,
    now: Millis,
) -> bool {
    granted_until(caller, file, instance, rights, now).is_some()
}

/// Until when `caller` may read `file` (the read rule of [`may_read`], with its horizon), or
/// `None` when the caller may not read it now. Owners, admins and the instance root need no
/// grant (`Millis::MAX`). Otherwise the answer is the latest end date among the grants that
/// allow the read (`Millis::MAX` for a grant without one): until then the read stays allowed as
/// long as the grants, the file and the instance do not change (a start date only ever widens
/// access, so a later start date cannot end an allowed read).
pub fn granted_until<'a>(
    caller: &Caller,
    file: &FileRecord,
    instance: &Instance,
    rights: impl IntoIterator<Item = &'a AccessRight>,
    now: Millis,
) -> Option<Millis> {
    if file.instance != instance.id {
        return None;
    }
    if let Caller::User(p) = caller {
        if !p.instance.eq_ignore_ascii_case(&instance.domain) {
            return None;
        }
        // Every account of an instance sees its root directory (not what is in it).
        if manages(p, &file.created_by) || file.is_root() {
            return Some(Millis::MAX);
        }
    }
    rights
        .into_iter()
        .filter(|r| {
            r.instance == instance.id
                && grants_read(r, file, now)
                && names_caller(caller, r, instance)
        })
        .map(|r| r.end_date.unwrap_or(Millis::MAX))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::contract;
    use crate::types::InstanceId;

    const NOW: Millis = 1_000_000;

    fn user(account: &str, domain: &str, admin: bool) -> Caller {
        Caller::User(Principal {
            account: AccountId(account.into()),
            instance: domain.into(),
            admin,
        })
    }

    /// Changes the default grant (alice's, on the file, naming bob, readable) for one row.
    type Edit = fn(&mut AccessRight);

    #[test]
    fn may_read_table() {
        let inst = Instance {
            id: InstanceId::new(),
            domain: "a.test".into(),
            anonymous_requests: false,
            created: 0,
            updated: 0,
        };
        let file = contract::file(inst.id, "alice", "/", "a.txt", 1);
        let other_file = contract::file(inst.id, "alice", "/", "b.txt", 2);
        let bob = || user("bob", "a.test", false);
        // (case, caller, grant edit (none: no grant), anonymous requests on, may read)
        #[rustfmt::skip]
        let rows: [(&str, Caller, Option<Edit>, bool, bool); 29] = [
            ("owner", user("alice", "a.test", false), None, false, true),
            ("owner, domain case", user("alice", "A.Test", false), None, false, true),
            ("admin", user("root", "a.test", true), None, false, true),
            ("admin of another instance", user("root", "b.test", true), None, false, false),
            ("owner's name in another instance", user("alice", "b.test", false), None, false, false),
            ("stranger, no grant", bob(), None, false, false),
            ("anonymous, no grant", Caller::Anonymous, None, true, false),
            ("grant naming bob", bob(), Some(|_| {}), false, true),
            ("grant naming carol", bob(), Some(|r| r.members = vec!["carol".into()]), false, false),
            ("grant naming everyone", bob(), Some(|r| r.members = vec!["*".into()]), false, true),
            ("everyone excludes tokenless", Caller::Anonymous, Some(|r| r.members = vec!["*".into()]), true, false),
            ("anonymous grant, switch on", Caller::Anonymous, Some(|r| r.members = vec![ANONYMOUS.into()]), true, true),
            ("anonymous grant, switch off", Caller::Anonymous, Some(|r| r.members = vec![ANONYMOUS.into()]), false, false),
            ("anonymous grant reaches users too", bob(), Some(|r| r.members = vec![ANONYMOUS.into()]), true, true),
            ("not approved", bob(), Some(|r| r.approved = false), false, false),
            ("scope-based", bob(), Some(|r| r.permission_type = PermissionType::SBP), false, false),
            ("mutation only", bob(), Some(|r| r.operation_type = "Mutation".into()), false, false),
            ("any operation type", bob(), Some(|r| r.operation_type = "*".into()), false, true),
            ("operation download", bob(), Some(|r| r.operation = "DOWNLOAD".into()), false, true),
            ("operation delete", bob(), Some(|r| r.operation = "delete".into()), false, false),
            ("resource type Image", bob(), Some(|r| r.resource_type = "Image".into()), false, false),
            ("not started", bob(), Some(|r| r.start_date = Some(NOW + 1)), false, false),
            ("started", bob(), Some(|r| r.start_date = Some(NOW)), false, true),
            ("ended", bob(), Some(|r| r.end_date = Some(NOW)), false, false),
            ("another file's grant", bob(), Some(|r| r.resource = "01HX5V3N0000000000000000AB".into()), false, false),
            ("owner's wildcard", bob(), Some(|r| r.resource = "*".into()), false, true),
            ("another account's wildcard", bob(), Some(|r| { r.resource = "*".into(); r.created_by = AccountId("mallory".into()) }), false, false),
            ("an admin's wildcard", bob(), Some(|r| { r.resource = "*".into(); r.created_by = AccountId("root".into()); r.granted_by_admin = true }), false, true),
            ("another instance's grant", bob(), Some(|r| r.instance = InstanceId::new()), false, false),
        ];
        for (what, caller, grant, anonymous_on, want) in rows {
            let mut instance = inst.clone();
            instance.anonymous_requests = anonymous_on;
            let grants: Vec<AccessRight> = grant
                .map(|edit| {
                    let mut r =
                        contract::right(inst.id, "alice", false, &file.id.to_string(), &["bob"]);
                    edit(&mut r);
                    r
                })
                .into_iter()
                .collect();
            assert_eq!(
                may_read(&caller, &file, &instance, &grants, NOW),
                want,
                "{what}"
            );
            let managed = matches!(&caller, Caller::User(p)
                if p.instance.eq_ignore_ascii_case(&instance.domain) && manages(p, &file.created_by));
            if !managed {
                let until = granted_until(&caller, &file, &instance, &grants, NOW);
                assert_eq!(until.is_some(), want, "{what}: granted_until");
                if let Some(until) = until {
                    assert!(until > NOW, "{what}: a granted read ends after now");
                }
            }
        }
        // A file of another instance is never readable through this instance, even by its admin.
        let mut elsewhere = other_file;
        elsewhere.instance = InstanceId::new();
        assert!(!may_read(
            &user("root", "a.test", true),
            &elsewhere,
            &inst,
            &[],
            NOW
        ));
    }
}
