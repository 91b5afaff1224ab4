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
            && (right.granted_by_admin || right.created_by == file.created_by));
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
    if file.instance != instance.id {
        return false;
    }
    if let Caller::User(p) = caller {
        if !p.instance.eq_ignore_ascii_case(&instance.domain) {
            return false;
        }
        if manages(p, &file.created_by) {
            return true;
        }
    }
    rights.into_iter().any(|r| {
        r.instance == instance.id && grants_read(r, file, now) && names_caller(caller, r, instance)
    })
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

    /// One row: who asks, which grant exists (if any), whether anonymous requests are on, and
    /// the expected decision. The file is alice's, in `a.test`.
    struct Row {
        what: &'static str,
        caller: Caller,
        grant: Option<fn(&mut AccessRight)>,
        anonymous_on: bool,
        want: bool,
    }

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
        let rows = [
            Row {
                what: "owner",
                caller: user("alice", "a.test", false),
                grant: None,
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "owner, domain case",
                caller: user("alice", "A.Test", false),
                grant: None,
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "admin",
                caller: user("root", "a.test", true),
                grant: None,
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "admin of another instance",
                caller: user("root", "b.test", true),
                grant: None,
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "owner's name in another instance",
                caller: user("alice", "b.test", false),
                grant: None,
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "stranger, no grant",
                caller: bob(),
                grant: None,
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "anonymous, no grant",
                caller: Caller::Anonymous,
                grant: None,
                anonymous_on: true,
                want: false,
            },
            Row {
                what: "grant naming bob",
                caller: bob(),
                grant: Some(|_| {}),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "grant naming carol",
                caller: bob(),
                grant: Some(|r| r.members = vec!["carol".into()]),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "grant naming everyone",
                caller: bob(),
                grant: Some(|r| r.members = vec!["*".into()]),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "everyone excludes tokenless",
                caller: Caller::Anonymous,
                grant: Some(|r| r.members = vec!["*".into()]),
                anonymous_on: true,
                want: false,
            },
            Row {
                what: "anonymous grant, switch on",
                caller: Caller::Anonymous,
                grant: Some(|r| r.members = vec![ANONYMOUS.into()]),
                anonymous_on: true,
                want: true,
            },
            Row {
                what: "anonymous grant, switch off",
                caller: Caller::Anonymous,
                grant: Some(|r| r.members = vec![ANONYMOUS.into()]),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "anonymous grant reaches users too",
                caller: bob(),
                grant: Some(|r| r.members = vec![ANONYMOUS.into()]),
                anonymous_on: true,
                want: true,
            },
            Row {
                what: "not approved",
                caller: bob(),
                grant: Some(|r| r.approved = false),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "scope-based",
                caller: bob(),
                grant: Some(|r| r.permission_type = PermissionType::SBP),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "mutation only",
                caller: bob(),
                grant: Some(|r| r.operation_type = "Mutation".into()),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "any operation type",
                caller: bob(),
                grant: Some(|r| r.operation_type = "*".into()),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "operation download",
                caller: bob(),
                grant: Some(|r| r.operation = "DOWNLOAD".into()),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "operation delete",
                caller: bob(),
                grant: Some(|r| r.operation = "delete".into()),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "resource type Image",
                caller: bob(),
                grant: Some(|r| r.resource_type = "Image".into()),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "not started",
                caller: bob(),
                grant: Some(|r| r.start_date = Some(NOW + 1)),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "started",
                caller: bob(),
                grant: Some(|r| r.start_date = Some(NOW)),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "ended",
                caller: bob(),
                grant: Some(|r| r.end_date = Some(NOW)),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "another file's grant",
                caller: bob(),
                grant: Some(|r| r.resource = "01HX5V3N0000000000000000AB".into()),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "owner's wildcard",
                caller: bob(),
                grant: Some(|r| r.resource = "*".into()),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "another account's wildcard",
                caller: bob(),
                grant: Some(|r| {
                    r.resource = "*".into();
                    r.created_by = AccountId("mallory".into())
                }),
                anonymous_on: false,
                want: false,
            },
            Row {
                what: "an admin's wildcard",
                caller: bob(),
                grant: Some(|r| {
                    r.resource = "*".into();
                    r.created_by = AccountId("root".into());
                    r.granted_by_admin = true
                }),
                anonymous_on: false,
                want: true,
            },
            Row {
                what: "another instance's grant",
                caller: bob(),
                grant: Some(|r| r.instance = InstanceId::new()),
                anonymous_on: false,
                want: false,
            },
        ];
        for row in rows {
            let mut instance = inst.clone();
            instance.anonymous_requests = row.anonymous_on;
            let grants: Vec<AccessRight> = row
                .grant
                .map(|edit| {
                    let mut r =
                        contract::right(inst.id, "alice", false, &file.id.to_string(), &["bob"]);
                    edit(&mut r);
                    r
                })
                .into_iter()
                .collect();
            assert_eq!(
                may_read(&row.caller, &file, &instance, &grants, NOW),
                row.want,
                "{}",
                row.what
            );
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
