//! Metadata persistence behind a trait, so sled can later give way to PostgreSQL.

pub mod contract;
pub mod dirs;
pub mod migrate;
pub mod model;
pub mod pg;
pub mod session;
mod sled_store;
pub mod usage;
pub mod variants;
pub mod webhooks;

pub use dirs::DirectoryStore;
pub use model::{AccessRight, FileRecord, ImageRecord, Instance, PermissionType, DIRECTORY_MIME};
pub use pg::{PgMeta, PgOptions};
pub use session::{
    CompletedParts, FileExtras, SessionKind, SessionState, StoredBytes, UploadSession,
};
/// Durable, group-committed flushes of a sled database (the local blob store keeps its small
/// blobs in one too).
pub(crate) use sled_store::log_sync::LogSync;
pub use sled_store::{SledMeta, Star};
pub use usage::{QuotaLimits, QuotaScope, UsageStore};
pub use variants::{VariantKey, VariantRecord, VariantStore};
pub use webhooks::WebhookStore;

use crate::error::Result;
use crate::types::{AccountId, FileId, InstanceId, Millis, RightId, SessionId, Sha256};

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

/// A field files can be walked in the order of, from an index ([`FileStore::scan_sorted`]).
/// Each order is the one ArcQL's `SORT` gives that field (see `service::query::fields`):
/// `size` numerically, `hypi.created` and `hypi.updated` by their RFC 3339 text (whole
/// seconds), `name` by its text; ties in id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortField {
    Size,
    Created,
    Updated,
    Name,
}

impl SortField {
    /// Every indexed field.
    pub const ALL: [SortField; 4] = [
        SortField::Size,
        SortField::Created,
        SortField::Updated,
        SortField::Name,
    ];

    /// The field of an ArcQL path, if it has an index.
    pub fn of_path(path: &str) -> Option<SortField> {
        Some(match path {
            "size" => SortField::Size,
            "hypi.created" => SortField::Created,
            "hypi.updated" => SortField::Updated,
            "name" => SortField::Name,
            _ => return None,
        })
    }
}

/// An order to walk files in: a field, ascending or descending (ties in id order either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOrder {
    pub field: SortField,
    pub descending: bool,
}

/// A lazily read run of records.
pub type Records<'a, T> = Box<dyn Iterator<Item = Result<T>> + Send + 'a>;

/// A test of a file's size, applied by [`FileStore::scan_files_sized`].
pub type SizeFilter<'a> = Box<dyn Fn(u64) -> bool + Send + Sync + 'a>;

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
    /// As [`FileStore::scan_files`], without the records whose size `keep` refuses. A store
    /// that can read a record's size before decoding the rest skips those records cheaply
    /// (sled's compact records); the default filters decoded records.
    fn scan_files_sized<'a>(
        &'a self,
        instance: InstanceId,
        scope: FileScope<'a>,
        after: Option<FileId>,
        keep: SizeFilter<'a>,
    ) -> Records<'a, FileRecord> {
        Box::new(
            self.scan_files(instance, scope, after)
                .filter(move |f| f.as_ref().map_or(true, |f| keep(f.size))),
        )
    }
    /// Files of one instance in `order`, strictly after `from`'s place in it (`from` is a
    /// record of that instance), read from an index so a walk that stops early costs what it
    /// read. `None` when this store keeps no such index: the caller sorts by itself.
    fn scan_sorted<'a>(
        &'a self,
        instance: InstanceId,
        order: FileOrder,
        from: Option<&FileRecord>,
    ) -> Option<Records<'a, FileRecord>> {
        let _ = (instance, order, from);
        None
    }
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

/// Upload sessions (presigned PUT, temp files, signed download links; later presigned POST,
/// multipart parts, tus): one record per session with its owner, declared name, type, size and
/// directory, its state and expiry, so an interrupted flow survives a restart and an abandoned
/// one is swept. A session in state `Uploaded` holds one reference on its blob (counted with
/// the files' in the blob reference counts); confirming hands it to the File.
pub trait UploadSessionStore {
    /// Stores a new session, unless its account already has `max_open` sessions of that kind
    /// counting as open (then `TooManyRequests`, nothing written).
    fn create_session(&self, session: &UploadSession, max_open: u64) -> Result<()>;
    /// Counts one session creation by `account` in the minute of `now`: `TooManyRequests`
    /// (nothing counted) when it already created `per_minute`. Persisted, so a restart does
    /// not reset it; need not be flushed (a crash forgets at most the last moments' counts).
    fn charge_session_creation(
        &self,
        instance: InstanceId,
        account: &AccountId,
        now: Millis,
        per_minute: u32,
    ) -> Result<()>;
    fn session(&self, id: SessionId) -> Result<Option<UploadSession>>;
    /// `Open` -> `Uploaded` with `bytes`, counting one reference on their blob; the session then
    /// lives at least until `keep_until` (a presigned upload's confirm window opens when its
    /// bytes arrive, however long the PUT took). `Conflict` when the session is not `Open` (used
    /// already), `NotFound` when it is gone.
    fn complete_session(
        &self,
        id: SessionId,
        bytes: &StoredBytes,
        keep_until: Millis,
    ) -> Result<UploadSession>;
    /// `Uploaded` -> `Confirmed`, in one step with inserting `file` (with its image and extras),
    /// which takes over the session's blob reference. A session already `Confirmed` is left as
    /// it is; either way the answer is the id of the session's File. `UploadIncomplete` when no
    /// bytes arrived yet, `NotFound` when the session is gone.
    fn confirm_session(
        &self,
        id: SessionId,
        file: &FileRecord,
        image: Option<&ImageRecord>,
        extras: &FileExtras,
    ) -> Result<FileId>;
    /// Removes a session. Returns it, with the references left on its blob when it held one
    /// (the caller removes the blob at 0).
    fn delete_session(&self, id: SessionId) -> Result<Option<(UploadSession, Option<u64>)>>;
    /// Up to `limit` sessions whose expiry is at or before `now`, soonest first.
    fn expired_sessions(&self, now: Millis, limit: usize) -> Result<Vec<UploadSession>>;
    /// Foir's extra fields of a File made by a session.
    fn file_extras(&self, id: FileId) -> Result<Option<FileExtras>>;
    /// Every session (fsck counts the blob references they hold).
    fn all_sessions(&self) -> Records<'_, UploadSession>;
    /// Records why an upload to a session failed (`None` clears it); the session keeps its
    /// state. Not found: `NotFound`.
    fn set_session_error(&self, id: SessionId, error: Option<&str>) -> Result<()>;
    /// Sets the declared size of a session that has none yet (tus's deferred `Upload-Length`);
    /// setting the size it already has is a no-op. `Conflict` when it has another size,
    /// `NotFound` when the session is gone. Returns the session as stored.
    fn set_session_size(&self, id: SessionId, size: u64) -> Result<UploadSession>;
    /// Replaces the bytes of an existing file (a re-upload), atomically: the record keeps its
    /// id, owner, place and name and takes `content`'s hash, size, type and dimensions (and
    /// `updated`); its image record follows (`image`: whether it is one); the new blob gains a
    /// reference and the old one loses one. Returns the new record, the old one and the
    /// references the old blob has left; `None` when the file is gone or trashed.
    fn replace_content(
        &self,
        id: FileId,
        content: &StoredBytes,
        image: bool,
        updated: Millis,
    ) -> Result<Option<(FileRecord, FileRecord, u64)>>;
}

/// Whole-store walks and repairs for fsck and gc. Never on a request path: their cost grows
/// with the store.
pub trait MaintenanceStore: FileStore + UploadSessionStore + VariantStore {
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
    /// One blob's recorded reference count and the references that exist (file records with
    /// its hash, uploaded, unconfirmed sessions and image variants holding it), read together. fsck re-checks
    /// what a whole-store walk found odd with it, under the blob's lock, while nodes serve.
    /// The default walks every record (an offline store: nothing changes meanwhile); a shared
    /// store answers from one snapshot.
    fn blob_references(&self, sha: &Sha256) -> Result<BlobReferences> {
        let mut actual = 0u64;
        for f in self.all_files() {
            if f?.sha256 == *sha {
                actual += 1;
            }
        }
        for s in self.all_sessions() {
            let s = s?;
            if s.state == SessionState::Uploaded && s.bytes.as_ref().is_some_and(|b| b.sha == *sha)
            {
                actual += 1;
            }
        }
        for v in self.all_variants() {
            if v?.sha == *sha {
                actual += 1;
            }
        }
        Ok(BlobReferences {
            recorded: self.blob_refs(sha)?,
            actual,
        })
    }
    /// Checks the file indexes kept beside the records against them (entries missing, stale
    /// or out of date) and, with `repair`, rebuilds what differs. One line per finding. Stores
    /// whose indexes the database itself maintains have nothing to check.
    fn check_file_indexes(&self, repair: bool) -> Result<Vec<String>> {
        let _ = repair;
        Ok(vec![])
    }
}

/// A blob's reference count as recorded and as the records make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobReferences {
    /// The count kept beside the blob (what decides when the blob goes).
    pub recorded: u64,
    /// File records, uploaded sessions and image variants referencing the blob.
    pub actual: u64,
}

/// A lock that every node sharing the store honours, held until dropped (see [`NodeLocks`]).
pub trait HeldLock: Send {
    /// `Ok` while the lock is certainly still held (its holder, a database session, is alive).
    /// Checked right before a step that must never run unlocked: removing a blob.
    fn check(&self) -> Result<()>;
}

/// Locks across every process that writes this store (issue 13: several nodes on one shared
/// database). The service keeps its in-process locks either way (they order one node's threads
/// cheaply); these extend the same order to the other nodes. A store that is one process's own
/// (sled, in a locked data dir) has no other writers: its answers are `None`.
pub trait NodeLocks {
    /// Whether other processes may write this store while this one does (so maintenance must
    /// take the same locks as requests, and may never act on a walk's stale picture).
    fn shared(&self) -> bool {
        false
    }
    /// Orders reference changes of these blobs, and the removal of a blob whose count reached
    /// zero, against every other node's: held across "count changed" and "blob removed", and
    /// across "blob found or stored" and "reference counted". Keys are taken in one order, so
    /// two holders never wait on each other in a cycle.
    fn lock_blobs(&self, shas: &[Sha256]) -> Result<Option<Box<dyn HeldLock>>> {
        let _ = shas;
        Ok(None)
    }
    /// One instance's directory tree: shared for uploads and listings, exclusive for creating
    /// directories, moves and subtree trash/delete (see `service::dirs`).
    fn lock_tree(
        &self,
        instance: InstanceId,
        exclusive: bool,
    ) -> Result<Option<Box<dyn HeldLock>>> {
        let _ = (instance, exclusive);
        Ok(None)
    }
    /// One instance's quota: held from a quota check to the write of the records it admitted,
    /// so uploads on two nodes never both fit in the same remaining bytes. Taken last, after
    /// any tree and blob locks, and nothing is taken while it is held.
    fn lock_quota(&self, instance: InstanceId) -> Result<Option<Box<dyn HeldLock>>> {
        let _ = instance;
        Ok(None)
    }
}

/// What the service holds: every narrow trait at once. Every call blocks: call it off the
/// async executor. Writes are durable when they return. Implemented for any type that
/// implements the parts.
pub trait MetaStore:
    InstanceStore
    + FileStore
    + GrantStore
    + UploadSessionStore
    + MaintenanceStore
    + VariantStore
    + DirectoryStore
    + NodeLocks
    + WebhookStore
    + UsageStore
    + Send
    + Sync
    + 'static
{
}

impl<T> MetaStore for T where
    T: InstanceStore
        + FileStore
        + GrantStore
        + UploadSessionStore
        + MaintenanceStore
        + VariantStore
        + DirectoryStore
        + NodeLocks
        + WebhookStore
        + UsageStore
        + Send
        + Sync
        + 'static
{
}

/// What a change committed by any node may have made stale in a node's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// One file's record or bytes (updated, trashed, moved, replaced or deleted).
    File(FileId),
    /// Some grant (made, replaced or revoked).
    Grants,
    /// Anything (an instance changed, or changes may have been missed).
    All,
}

/// Where a [`ChangeFeed`] delivers changes: the node's caches. Called on the feed's own thread;
/// must not block.
pub trait ChangeSink: Send + Sync + 'static {
    fn changed(&self, what: Changed);
}

/// The changes every node commits to a shared store, for the caches of one node (issue 13).
/// The sled store is one node's own and has none.
pub trait ChangeFeed: Send + Sync + 'static {
    /// Resolves `true` once every change committed before this call has been delivered to the
    /// sink; `false` when the feed cannot tell (its connection is down or slow): then nothing
    /// cached may be trusted.
    fn caught_up(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}
