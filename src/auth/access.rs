//! AccessRight evaluation: may this caller read this file?

use super::Caller;
use crate::meta::{AccessRight, FileRecord, Instance, PermissionType};
use crate::types::Millis;

/// Member id for callers without a token.
pub const ANONYMOUS: &str = "anonymous";
/// Member id for every account of the instance.
pub const EVERYONE: &str = "*";

/// Operations that amount to reading a file.
const READ_OPERATIONS: &[&str] = &["*", "get", "find", "read", "download"];

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
    let member_ok = |m: &str| match caller {
        Caller::Anonymous => m == ANONYMOUS && instance.anonymous_requests,
        Caller::User(p) => {
            m == p.account.0 || m == EVERYONE || (m == ANONYMOUS && instance.anonymous_requests)
        }
    };
    if let Caller::User(p) = caller {
        if !p.instance.eq_ignore_ascii_case(&instance.domain) {
            return false;
        }
        if p.admin || p.account == file.created_by {
            return true;
        }
    }
    rights.into_iter().any(|r| {
        r.instance == instance.id
            && grants_read(r, file, now)
            && r.members.iter().any(|m| member_ok(m))
    })
}
