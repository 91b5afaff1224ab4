//! The virtual file system's storage: directories are File records (see
//! `service::dirs`), so they live in the [`super::FileStore`]; what a tree needs beyond it is a
//! walk of a whole subtree, an all-or-nothing rewrite of many records (move, rename, trash of
//! a directory) and each account's stars.

use super::{FileRecord, Records};
use crate::error::Result;
use crate::types::{AccountId, FileId, InstanceId};

/// Subtrees, atomic rewrites and stars. Backend-neutral: a PostgreSQL backend implements it with
/// a path prefix query, one transaction and a `(instance, account, file)` table.
pub trait DirectoryStore {
    /// Every record of `instance` whose path lies strictly below `path` (a directory's path,
    /// `/` for the whole instance), from the path index: the cost follows the subtree, not the
    /// instance. Order: by path, then id.
    fn scan_subtree<'a>(&'a self, instance: InstanceId, path: &'a str) -> Records<'a, FileRecord>;

    /// Replaces records all at once: for each `(old, new)`, `old` must still be the stored
    /// record (else `Conflict`, and nothing is written); `new` keeps the id, instance, owner and
    /// blob of `old` and may change anything else (directory, name, trash, flags). Every index
    /// entry follows. Readers see every change or none.
    fn replace_files(&self, changes: &[(FileRecord, FileRecord)]) -> Result<()>;

    /// Sets (`on`) or clears `account`'s star on `file`.
    fn set_star(
        &self,
        instance: InstanceId,
        account: &AccountId,
        file: FileId,
        on: bool,
    ) -> Result<()>;

    /// Whether `account` starred `file`.
    fn starred(&self, instance: InstanceId, account: &AccountId, file: FileId) -> Result<bool>;
}
