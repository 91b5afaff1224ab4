//! Metadata persistence behind a trait, so sled can later give way to PostgreSQL.

pub mod model;
mod sled_store;

pub use model::{AccessRight, FileRecord, ImageRecord, Instance, PermissionType};
pub use sled_store::SledMeta;

use crate::error::Result;
use crate::types::{AccountId, FileId, InstanceId, RightId, Sha256};

/// A page of results plus whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// What the service needs from a metadata store. Every call blocks: call it off the async
/// executor. Writes are durable when they return.
pub trait MetaStore: Send + Sync + 'static {
    /// The instance for `domain`, created (with anonymous requests off) if new.
    fn ensure_instance(&self, domain: &str) -> Result<Instance>;
    /// The instance for `domain`, if known.
    fn instance_by_domain(&self, domain: &str) -> Result<Option<Instance>>;
    /// The instance with this id, if known.
    fn instance(&self, id: InstanceId) -> Result<Option<Instance>>;
    /// Stores an instance record (replacing the one with the same domain).
    fn put_instance(&self, instance: &Instance) -> Result<()>;

    /// Records files (and their images) and counts one more reference on each blob, atomically.
    fn insert_files(&self, files: &[(FileRecord, Option<ImageRecord>)]) -> Result<()>;
    fn file(&self, id: FileId) -> Result<Option<FileRecord>>;
    fn image(&self, id: FileId) -> Result<Option<ImageRecord>>;
    /// The owner's files in id (upload) order, optionally in one directory, after a cursor.
    fn files_of(
        &self,
        instance: InstanceId,
        owner: &AccountId,
        directory: Option<&str>,
        after: Option<FileId>,
        limit: usize,
    ) -> Result<Page<FileRecord>>;
    /// Removes a file record, its image and its grants; returns it with the references its blob
    /// still has afterwards.
    fn delete_file(&self, id: FileId) -> Result<Option<(FileRecord, u64)>>;
    /// References recorded for a blob.
    fn blob_refs(&self, sha: &Sha256) -> Result<u64>;

    fn put_rights(&self, rights: &[AccessRight]) -> Result<()>;
    fn right(&self, id: RightId) -> Result<Option<AccessRight>>;
    /// Grants whose `resource` is exactly `resource` in this instance.
    fn rights_on(&self, instance: InstanceId, resource: &str) -> Result<Vec<AccessRight>>;
    fn delete_right(&self, id: RightId) -> Result<bool>;
}
