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
