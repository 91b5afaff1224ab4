//! Metadata persistence behind a trait, so sled can later give way to PostgreSQL.

pub mod contract;
pub mod dirs;
pub mod model;
mod sled_store;

pub use dirs::DirectoryStore;
pub use model::{AccessRight, FileRecord, ImageRecord, Instance, PermissionType, DIRECTORY_MIME};
pub use sled_store::SledMeta;

use crate::error::Result;
use crate::types::{AccountId, FileId, InstanceId, RightId, Sha256};

/// A page of results plus whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// Which files a scan walks, each answered from its own index.
#[derive(Debug, Clone, Copy)]
pub enum FileScope<'a> {
    /// Every file of the instance.
    All,
    /// The files one account uploaded.
    Owner(&'a AccountId),
    /// The files in exactly this directory.
    Directory(&'a str),
    /// The files at exactly this path.
    Path(&'a str),
}

/// A lazily read run of records.
pub type Records<'a, T> = Box<dyn Iterator<Item = Result<T>> + Send + 'a>;

/// Instances (tenants), addressed by domain or id.
pub trait InstanceStore {
    /// The instance for `domain`, created (with anonymous requests off) if new.
    fn ensure_instance(&self, domain: &str) -> Result<Instance>;
    /// The instance for `domain`, if known.
    fn instance_by_domain(&self, domain: &str) -> Result<Option<Instance>>;
    /// The instance with this id, if known.
    fn instance(&self, id: InstanceId) -> Result<Option<Instance>>;
    /// Stores an instance record (replacing the one with the same domain).
    fn put_instance(&self, instance: &Instance) -> Result<()>;
}

/// File records, their images, their indexes and the blob reference counts they hold.
pub trait FileStore {
    /// Records files (and their images) and counts one more reference on each blob, atomically.
    fn insert_files(&self, files: &[(FileRecord, Option<ImageRecord>)]) -> Result<()>;
    fn file(&self, id: FileId) -> Result<Option<FileRecord>>;
    fn image(&self, id: FileId) -> Result<Option<ImageRecord>>;
    /// Files of one instance within `scope`, in id (upload) order, strictly after `after`.
    fn scan_files<'a>(
        &'a self,
        instance: InstanceId,
        scope: FileScope<'a>,
        after: Option<FileId>,
    ) -> Records<'a, FileRecord>;
    /// Replaces a file record whose identity, owner, directory and name are unchanged
    /// (trash, untrash).
    fn update_file(&self, file: &FileRecord) -> Result<()>;
    /// Removes a file record, its image and its grants in one atomic step (a grant committed
    /// concurrently is either removed with the file or refused); returns the file with the
    /// references its blob still has afterwards.
    fn delete_file(&self, id: FileId) -> Result<Option<(FileRecord, u64)>>;
    /// References recorded for a blob.
    fn blob_refs(&self, sha: &Sha256) -> Result<u64>;
}

/// Grants (AccessRights), indexed by resource, by member and (for `*` grants) by grantor, so
/// that every lookup costs what the caller or file has, not what the instance has.
pub trait GrantStore {
    /// Stores grants, all or nothing, replacing records with the same id (and every index entry
    /// of the replaced record). A grant on a file id needs that file to exist in the grant's
    /// instance (else `NotFound`: a grant never outlives, or predates, its file). After the
    /// write no grantor may own more than `max_per_grantor` grants in an instance (else
    /// `TooManyRequests`, nothing written); `u64::MAX` means no cap.
    fn put_rights(&self, rights: &[AccessRight], max_per_grantor: u64) -> Result<()>;
    fn right(&self, id: RightId) -> Result<Option<AccessRight>>;
    /// Grants whose `resource` is exactly `resource` in this instance.
    fn rights_on(&self, instance: InstanceId, resource: &str) -> Result<Vec<AccessRight>>;
    /// Grants of an instance whose members include any of `members` (an account id, `*`,
    /// `anonymous`), in right-id order.
    fn rights_naming(&self, instance: InstanceId, members: &[&str]) -> Result<Vec<AccessRight>>;
    /// The grants that can reach `file`: those on its id, plus `*` grants created by its owner
    /// or by an admin of its instance (see `auth::access::may_read`), in right-id order.
    fn rights_reaching(&self, file: &FileRecord) -> Result<Vec<AccessRight>>;
    /// The `*` grants `grantor` created in `instance` (as an owner or as an admin), in right-id
    /// order.
    fn wildcards_by(&self, instance: InstanceId, grantor: &AccountId) -> Result<Vec<AccessRight>>;
    /// How many grants `grantor` created in `instance`.
    fn grant_count(&self, instance: InstanceId, grantor: &AccountId) -> Result<u64>;
    fn delete_right(&self, id: RightId) -> Result<bool>;
}

/// Upload sessions (presigned PUT/POST, multipart parts, tus): one record per session with
/// its owner, target name and directory, expected size, the parts received (number, size,
/// ETag) and an expiry, so an interrupted upload can resume and an abandoned one be swept.
/// Declared now so backends are planned around it; the upload-sessions issue fills it, and
/// `MetaStore` gains it as a supertrait then.
pub trait UploadSessionStore {}

/// Whole-store walks and repairs for fsck and gc. Never on a request path: their cost grows
/// with the store.
pub trait MaintenanceStore {
    /// Every file record of every instance (for fsck).
    fn all_files(&self) -> Records<'_, FileRecord>;
    /// Every recorded blob reference count (for fsck).
    fn all_blob_refs(&self) -> Result<Vec<(Sha256, u64)>>;
    /// Overwrites a blob's reference count; 0 removes the entry (fsck --repair).
    fn set_blob_refs(&self, sha: &Sha256, refs: u64) -> Result<()>;
    /// Every grant of an instance (maintenance and admin listings only: request paths use
    /// [`GrantStore::rights_naming`], [`GrantStore::rights_reaching`] and
    /// [`GrantStore::rights_on`], whose cost does not grow with the instance's grant count).
    fn rights_in(&self, instance: InstanceId) -> Result<Vec<AccessRight>>;
}

/// What the service holds: every narrow trait at once. Every call blocks: call it off the
/// async executor. Writes are durable when they return. Implemented for any type that
/// implements the parts.
pub trait MetaStore:
    InstanceStore + FileStore + GrantStore + MaintenanceStore + DirectoryStore + Send + Sync + 'static
{
}

impl<T> MetaStore for T where
    T: InstanceStore
        + FileStore
        + GrantStore
        + MaintenanceStore
        + DirectoryStore
        + Send
        + Sync
        + 'static
{
}
