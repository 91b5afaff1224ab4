//! The virtual file system: directories are File records with `isDirectory: true` (media type
//! [`DIRECTORY_MIME`], size 0, the empty content's hash), so they have ids, grants, trash and
//! `get` like any file. A directory counts a reference on the empty content like an empty
//! file would, but needs no bytes: no blob is written for it (fsck knows), and the reference
//! changes take the empty content's lock stripe like any other.
//!
//! - Every directory a file sits in exists, each once: an upload (or `POST /dirs/**`) creates
//!   the missing ancestors. The root `/` of an instance is one such record, owned by nobody
//!   (only admins manage it) and readable by every account of the instance.
//! - One lock per instance orders its tree ([`TreeLock`]): uploads and listings hold it
//!   shared; creating directories, moves and subtree trash/delete hold it exclusively, so no
//!   request sees a half-moved tree and no upload lands in a directory that is moving. The
//!   moves themselves are single metadata transactions
//!   ([`crate::meta::DirectoryStore::replace_files`]). Per instance, so a slow blob commit
//!   (S3) plus a waiting move stalls that instance alone. In process, and on a shared metadata
//!   store for every node too ([`crate::meta::NodeLocks::lock_tree`], taken after the
//!   process's own lock, so one node's threads queue here first). Non-admins change at most
//!   `max_tree_entries` entries per call, which bounds how long one call holds it.
//! - Downloads check grants through directories without the lock ([`InstanceTree::consistent`]
//!   watches this process's moves only): on several nodes a download racing a move on another
//!   node may be judged by the tree just before or just after the move's transaction, as any
//!   read racing a committed write is.
//! - Move and rename never change `url.path` (it is the id and the extension, both kept).

use super::{blocking, hot, names, BlobGuard, Service};
use crate::auth::{access, Caller, Principal};
use crate::error::{Error, Result};
use crate::meta::{AccessRight, FileRecord, FileScope, HeldLock, MetaStore, DIRECTORY_MIME};
use crate::types::{now_millis, AccountId, FileId, InstanceId, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The owner of every instance's root: no token has an empty `sub`, so only admins manage it.
pub const ROOT_OWNER: &str = "";

/// SHA-256 of no bytes: the content of every directory record.
pub const EMPTY_SHA: Sha256 = Sha256([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// Most names tried by `onConflict: rename` before giving up with a conflict.
const RENAME_TRIES: u32 = 1000;

/// The trees' locks, one per instance (see the module docs): what one instance's uploads,
/// listings and moves wait for never stalls another instance.
#[derive(Default)]
pub struct TreeLock {
    trees: Mutex<HashMap<InstanceId, Arc<InstanceTree>>>,
    /// The metadata store whose cross-node tree locks back this process's (none: in process
    /// only).
    meta: Option<Arc<dyn MetaStore>>,
}

impl TreeLock {
    /// Tree locks that also take `meta`'s cross-node lock of each tree.
    pub(crate) fn new(meta: Arc<dyn MetaStore>) -> Self {
        Self {
            trees: Mutex::default(),
            meta: Some(meta),
        }
    }

    /// The lock of `inst`'s tree (made on first use; one per instance the process served).
    pub(crate) fn of(&self, inst: InstanceId) -> Arc<InstanceTree> {
        self.trees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(inst)
            .or_insert_with(|| {
                Arc::new(InstanceTree {
                    nodes: self.meta.clone().map(|m| (m, inst)),
                    ..InstanceTree::default()
                })
            })
            .clone()
    }
}

/// One instance's tree lock, with a move counter for readers that do not take the lock
/// (downloads checking grants through directories, see [`InstanceTree::consistent`]).
#[derive(Default)]
pub struct InstanceTree {
    lock: RwLock<()>,
    /// Odd while a move's transaction is being written, bumped to even after it.
    moves: AtomicU64,
    /// Where the other nodes' side of this lock is taken.
    nodes: Option<(Arc<dyn MetaStore>, InstanceId)>,
}

/// A held tree lock: this process's side, then the other nodes'.
pub(crate) struct TreeGuard<G> {
    _nodes: Option<Box<dyn HeldLock>>,
    _local: G,
}

impl InstanceTree {
    /// Shared: uploads and listings. Fails (503) only when a shared store cannot be reached.
    pub(crate) fn read(&self) -> Result<TreeGuard<RwLockReadGuard<'_, ()>>> {
        let local = self.lock.read().unwrap_or_else(|p| p.into_inner());
        Ok(TreeGuard {
            _nodes: self.nodes(false)?,
            _local: local,
        })
    }
    /// Exclusive: directory creation, moves, subtree trash and delete.
    pub(crate) fn write(&self) -> Result<TreeGuard<RwLockWriteGuard<'_, ()>>> {
        let local = self.lock.write().unwrap_or_else(|p| p.into_inner());
        Ok(TreeGuard {
            _nodes: self.nodes(true)?,
            _local: local,
        })
    }
    fn nodes(&self, exclusive: bool) -> Result<Option<Box<dyn HeldLock>>> {
        match &self.nodes {
            Some((meta, inst)) => meta.lock_tree(*inst, exclusive),
            None => Ok(None),
        }
    }

    /// Runs `write` (a metadata write that changes paths), marked for [`InstanceTree::consistent`]
    /// readers. The caller holds the write lock.
    pub(crate) fn moving<T>(&self, write: impl FnOnce() -> T) -> T {
        self.moves.fetch_add(1, Ordering::SeqCst);
        let out = write();
        self.moves.fetch_add(1, Ordering::SeqCst);
        out
    }

    /// Runs `read` (reads of a record and of the directories above it) until no move ran
    /// while it did, so its answer comes from one tree: before a move or after it, never a
    /// record read before and its ancestors after. Costs two atomic loads when no move runs;
    /// a read that raced a move waits for the move's write to end (polling: it takes no lock,
    /// so it may run where the caller holds one) and reads again.
    pub(crate) fn consistent<T>(&self, mut read: impl FnMut() -> Result<T>) -> Result<T> {
        loop {
            let before = self.moves.load(Ordering::SeqCst);
            if before.is_multiple_of(2) {
                let out = read()?;
                std::sync::atomic::fence(Ordering::SeqCst);
                if self.moves.load(Ordering::SeqCst) == before {
                    return Ok(out);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// What a move does when the target path is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// 409, nothing changes (the default).
    #[default]
    Fail,
    /// Take the first free `name (n).ext`.
    Rename,
    /// Delete the files at the target path first (never a directory).
    Replace,
}

/// A File to create or change (GraphQL `upsert(values: {File: [...]})`).
#[derive(Debug, Clone, Default)]
pub struct FileChange {
    /// An existing file's id; none to create.
    pub id: Option<String>,
    pub name: Option<String>,
    pub directory: Option<String>,
    pub is_directory: Option<bool>,
    pub is_stared: Option<bool>,
    pub is_sharable: Option<bool>,
    pub content: Option<String>,
}

/// A directory's totals, computed from its subtree when asked (not maintained).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Files (not directories) anywhere below it, trashed ones excluded.
    pub files: u64,
    /// Directories anywhere below it.
    pub directories: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// Whether `path` lies strictly below the directory `dir`.
pub(crate) fn is_below(path: &str, dir: &str) -> bool {
    path != dir && (dir == "/" || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
}

/// A grant on a directory as it applies to `f` below it: the same grant on `f`, when it
/// reaches `f` at all. It reaches the files of its grantor (an owner shares what is theirs,
/// not what other accounts put in their directory), and everything when an admin granted it,
/// except files their owners made unsharable (`isSharable: false`).
pub(crate) fn reaching(r: &AccessRight, f: &FileRecord) -> Option<AccessRight> {
    // An owner who made the file unsharable keeps admins' directory grants off it too.
    let admin_may = r.granted_by_admin && f.is_sharable != Some(false);
    (admin_may || r.created_by == f.created_by).then(|| AccessRight {
        resource: f.id.to_string(),
        ..r.clone()
    })
}

/// Every directory from the root down to `dir` (a normalised directory), root first.
fn chain(dir: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut at = String::new();
    for seg in dir.split('/').filter(|s| !s.is_empty()) {
        at.push('/');
        at.push_str(seg);
        out.push(at.clone());
    }
    out
}

/// Splits a normalised path into (parent directory, last segment); the root has an empty name.
fn split(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/".into(), name.into()),
        Some((parent, name)) => (parent.into(), name.into()),
        None => ("/".into(), String::new()),
    }
}

/// `dir` joined with `name`.
fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `name (n).ext` for the n-th rename of `name`.
fn numbered(name: &str, n: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

impl Service {
    /// The directory record at `path`, if there is one.
    pub(crate) fn directory_at(&self, inst: InstanceId, path: &str) -> Result<Option<FileRecord>> {
        for f in self.meta.scan_files(inst, FileScope::Path(path), None) {
            let f = f?;
            if f.is_directory() {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    /// Whether any record (file or directory) other than `except` sits at `path`.
    fn taken(
        &self,
        inst: InstanceId,
        path: &str,
        except: Option<FileId>,
    ) -> Result<Vec<FileRecord>> {
        let mut out = Vec::new();
        for f in self.meta.scan_files(inst, FileScope::Path(path), None) {
            let f = f?;
            if Some(f.id) != except {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// The directories of `dir`'s chain that have no record yet, root first.
    fn missing_directories(&self, inst: InstanceId, dir: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        // Once one is missing, all below it are too (nothing is created without its parent).
        for path in chain(dir) {
            if !out.is_empty() || self.directory_at(inst, &path)?.is_none() {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// Writes the records of `paths` and returns them. The caller holds the tree's write lock
    /// and the empty content's lock stripe (its reference count changes).
    fn create_directories(
        &self,
        inst: InstanceId,
        owner: &AccountId,
        paths: &[String],
    ) -> Result<Vec<FileRecord>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_millis();
        let records: Vec<_> = paths
            .iter()
            .map(|path| {
                let (directory, name) = split(path);
                let created_by = if path == "/" {
                    AccountId(ROOT_OWNER.into())
                } else {
                    owner.clone()
                };
                let record = FileRecord {
                    id: FileId::new(),
                    instance: inst,
                    created_by,
                    created: now,
                    updated: now,
                    trashed: None,
                    name,
                    directory,
                    extension: None,
                    mime: DIRECTORY_MIME.into(),
                    size: 0,
                    sha256: EMPTY_SHA,
                    width: None,
                    height: None,
                    is_stared: None,
                    is_sharable: None,
                };
                (record, None)
            })
            .collect();
        self.meta.insert_files(&records)?;
        Ok(records.into_iter().map(|(f, _)| f).collect())
    }

    /// Runs `then` with every directory of `dir`'s chain existing (created for `owner` where
    /// missing) and no move of the tree in between; the lock stripes of `shas` are held too
    /// (`then` is given them, for [`Service::drop_unreferenced`]).
    pub(crate) fn within_directory<T>(
        &self,
        inst: InstanceId,
        owner: &AccountId,
        dir: &str,
        shas: &[Sha256],
        then: impl FnOnce(&BlobGuard<'_>) -> Result<T>,
    ) -> Result<T> {
        let tree = self.tree.of(inst);
        {
            let _read = tree.read()?;
            if self.missing_directories(inst, dir)?.is_empty() {
                let blobs = self.lock_blobs(shas)?;
                return then(&blobs);
            }
        }
        let _write = tree.write()?;
        // Looked at again: another request may have created them meanwhile.
        let missing = self.missing_directories(inst, dir)?;
        let (created, out) = {
            let mut all = shas.to_vec();
            all.push(EMPTY_SHA);
            let blobs = self.lock_blobs(&all)?;
            let created = self.create_directories(inst, owner, &missing)?;
            (created, then(&blobs))
        };
        if out.is_err() {
            // What was made for this write alone goes with it: the write lock was held
            // throughout, so nothing else can be in them (checked anyway).
            self.remove_empty_directories(created);
        }
        out
    }

    /// Removes `dirs` (records this call created), deepest first, each only while it is empty.
    /// Best effort: the caller is already failing; what stays is an empty directory.
    fn remove_empty_directories(&self, mut dirs: Vec<FileRecord>) {
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path().len()));
        for d in dirs {
            let path = d.path();
            let empty = self
                .meta
                .scan_files(d.instance, FileScope::Directory(&path), None)
                .all(|f| f.is_ok_and(|f| f.id == d.id));
            if !empty {
                return;
            }
            if let Err(e) = self.remove_file(&d.created_by, &d) {
                tracing::warn!(directory = %path, error = %e, "could not remove a directory made for a failed write");
                return;
            }
        }
    }

    /// `POST /dirs/**` and GraphQL upsert of a File with `isDirectory: true`: the directory
    /// at `path` (and its ancestors), created if missing. True when it was created. A file at
    /// the same path is a conflict.
    pub async fn make_directory(
        self: &Arc<Self>,
        principal: &Principal,
        path: String,
    ) -> Result<(FileRecord, bool)> {
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let inst = svc.meta.ensure_instance(&p.instance)?.id;
            if let Some(d) = svc.directory_at(inst, &path)? {
                // Another account's directory is shown only to those who may read it.
                let d = svc.readable(&Caller::User(p.clone()), d.id)?;
                return Ok((d, false));
            }
            if !svc.taken(inst, &path, None)?.is_empty() {
                return Err(Error::Conflict(format!(
                    "{path} is a file; a directory cannot take its path"
                )));
            }
            svc.within_directory(inst, &p.account, &path, &[], |_| {
                svc.directory_at(inst, &path)?
                    .map(|d| (d, true))
                    .ok_or_else(|| Error::Internal(format!("directory {path} was not created")))
            })
        })
        .await
    }

    /// Totals of a directory's subtree as the caller sees it (`shows`: only entries the caller
    /// may read count), computed from the path index (the caller holds the tree lock).
    pub(crate) fn stats_of(
        &self,
        dir: &FileRecord,
        shows: impl Fn(&FileRecord) -> bool,
    ) -> Result<DirStats> {
        let mut stats = DirStats::default();
        for f in self.meta.scan_subtree(dir.instance, &dir.path()) {
            let f = f?;
            if f.id == dir.id || !shows(&f) {
                continue;
            }
            if f.is_directory() {
                stats.directories += 1;
            } else if f.trashed.is_none() {
                stats.files += 1;
                stats.bytes += f.size;
            }
        }
        Ok(stats)
    }

    /// Moves and/or renames a file or a directory with everything below it, in one metadata
    /// transaction. `directory` (decoded) must exist; `name` must be a plain name. The caller
    /// manages the entry and may read the target directory.
    pub async fn move_entry(
        self: &Arc<Self>,
        principal: &Principal,
        id: FileId,
        directory: Option<String>,
        name: Option<String>,
        on_conflict: OnConflict,
    ) -> Result<FileRecord> {
        let target_dir = directory
            .map(|d| names::normalize_decoded_directory(&d))
            .transpose()?;
        if let Some(n) = &name {
            if n.is_empty() || names::sanitize_filename(n) != *n {
                return Err(Error::InvalidPath(format!(
                    "invalid name {n:?}: a name is one path segment without control characters"
                )));
            }
        }
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let caller = Caller::User(p.clone());
            let tree = svc.tree.of(svc.readable(&caller, id)?.instance);
            let _write = tree.write()?;
            // Read again under the lock: it may have moved meanwhile.
            let entry = svc.readable(&caller, id)?;
            if !access::manages(&p, &entry.created_by) {
                return Err(Error::Forbidden(
                    "only the owner or an admin may move this file".into(),
                ));
            }
            if entry.is_root() {
                return Err(Error::BadRequest("the root directory cannot move".into()));
            }
            let inst = entry.instance;
            let to_dir = target_dir.unwrap_or_else(|| entry.directory.clone());
            let mut to_name = name.unwrap_or_else(|| entry.name.clone());
            let old_path = entry.path();
            if entry.is_directory()
                && (to_dir == old_path || to_dir.starts_with(&format!("{old_path}/")))
            {
                return Err(Error::BadRequest(format!(
                    "cannot move directory {old_path} into itself ({to_dir})"
                )));
            }
            if to_dir == entry.directory && to_name == entry.name {
                return Ok(entry);
            }
            let Some(parent) = svc.directory_at(inst, &to_dir)? else {
                return Err(Error::NotFound(format!("no directory {to_dir}")));
            };
            svc.readable(&caller, parent.id)
                .map_err(|_| Error::NotFound(format!("no directory {to_dir}")))?;
            let mut clash = svc.taken(inst, &join(&to_dir, &to_name), Some(id))?;
            if !clash.is_empty() {
                match on_conflict {
                    OnConflict::Fail => {
                        return Err(Error::Conflict(format!(
                            "{} exists; pass onConflict rename or replace",
                            join(&to_dir, &to_name)
                        )))
                    }
                    OnConflict::Rename => {
                        let base = to_name.clone();
                        let mut n = 1;
                        while !clash.is_empty() {
                            if n > RENAME_TRIES {
                                return Err(Error::Conflict(format!(
                                    "no free name for {base} in {to_dir}"
                                )));
                            }
                            to_name = numbered(&base, n);
                            clash = svc.taken(inst, &join(&to_dir, &to_name), Some(id))?;
                            n += 1;
                        }
                    }
                    OnConflict::Replace => {
                        if entry.is_directory() || clash.iter().any(FileRecord::is_directory) {
                            return Err(Error::Conflict(format!(
                                "{} exists and replace applies to files only",
                                join(&to_dir, &to_name)
                            )));
                        }
                        if clash.iter().any(|f| !access::manages(&p, &f.created_by)) {
                            return Err(Error::Forbidden(format!(
                                "{} belongs to another account",
                                join(&to_dir, &to_name)
                            )));
                        }
                    }
                }
            }
            let new_path = join(&to_dir, &to_name);
            let now = now_millis();
            let mut moved = entry.clone();
            moved.directory = to_dir;
            moved.name = to_name;
            moved.updated = now;
            let mut changes = vec![(entry.clone(), moved.clone())];
            if entry.is_directory() {
                for f in svc.meta.scan_subtree(inst, &old_path) {
                    svc.within_tree_cap(&p, &old_path, changes.len())?;
                    let f = f?;
                    // Moving a tree moves what is in it: only an admin may carry other
                    // accounts' files (into another directory's grants), as for delete.
                    if !access::manages(&p, &f.created_by) {
                        return Err(Error::Forbidden(
                            "the directory holds files of other accounts: only an admin may move it"
                                .into(),
                        ));
                    }
                    // A record whose directory is not below the moved path (its index entry
                    // is stale) is refused rather than sliced.
                    let Some(rest) = f.directory.strip_prefix(old_path.as_str()) else {
                        return Err(Error::Conflict(format!(
                            "{} changed while {old_path} was being moved; try again",
                            f.path()
                        )));
                    };
                    let mut g = f.clone();
                    g.directory = format!("{new_path}{rest}");
                    if g.directory.len() > names::MAX_DIRECTORY_LEN {
                        return Err(Error::InvalidPath(format!(
                            "moving {old_path} to {new_path} makes {} longer than {} bytes",
                            g.path(),
                            names::MAX_DIRECTORY_LEN
                        )));
                    }
                    changes.push((f, g));
                }
            } else if new_path.len() > names::MAX_DIRECTORY_LEN + names::MAX_NAME_CHARS * 4 {
                return Err(Error::InvalidPath(format!("{new_path} is too long")));
            }
            let _stale = svc.hot.change(hot::Scope::All);
            tree.moving(|| {
                super::failpoint_error("tree-move")?;
                let _events = svc.file_events(
                    &p.account,
                    crate::meta::webhooks::WebhookEvent::FileUpdated,
                    changes.iter().map(|(_, g)| g).filter(|g| !g.is_directory()),
                )?;
                svc.meta.replace_files(&changes)
            })?;
            // The replaced files go once the move is stored (a failed move leaves both; a
            // failed delete leaves both at one path, which uploads of one name make too).
            if on_conflict == OnConflict::Replace {
                for f in &clash {
                    svc.remove_file(&p.account, f)?;
                }
            }
            Ok(moved)
        })
        .await
    }

    /// Fails with TREE_TOO_LARGE when a non-admin's call on the tree at `path` is about to
    /// take its entry past `seen` entries below it and that is more than `max_tree_entries`.
    fn within_tree_cap(&self, p: &Principal, path: &str, seen: usize) -> Result<()> {
        let cap = self.config.max_tree_entries;
        if !p.admin && seen > cap {
            return Err(Error::TreeTooLarge(format!(
                "{path} holds more than {cap} entries: only an admin may move, trash or delete \
                 it in one call (move or delete its subdirectories first)"
            )));
        }
        Ok(())
    }

    /// Deletes a directory and everything below it (owner or admin of every entry, else
    /// nothing goes). Entries go deepest first, each in its own transaction: a crash midway
    /// leaves a smaller tree, never an entry without its directory.
    pub(crate) fn remove_tree(&self, p: &Principal, dir: &FileRecord) -> Result<u64> {
        if dir.is_root() {
            return Err(Error::BadRequest(
                "the root directory cannot be deleted".into(),
            ));
        }
        let tree = self.tree.of(dir.instance);
        let _write = tree.write()?;
        // The directory as it is now (a move may have run since the caller read it).
        let Some(dir) = self.meta.file(dir.id)? else {
            return Ok(0);
        };
        let dir = &dir;
        let path = dir.path();
        let mut all = Vec::new();
        for f in self.meta.scan_subtree(dir.instance, &path) {
            self.within_tree_cap(p, &path, all.len() + 1)?;
            all.push(f?);
        }
        if all.iter().any(|f| !access::manages(p, &f.created_by)) {
            return Err(Error::Forbidden(
                "the directory holds files of other accounts: only an admin may delete it".into(),
            ));
        }
        all.sort_by_key(|f| std::cmp::Reverse(f.path().len()));
        all.push(dir.clone());
        let mut n = 0;
        for f in &all {
            if self.remove_file(&p.account, f)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Trashes (`on`) or restores a directory with its subtree, in one transaction. Restoring
    /// brings back exactly what the directory's trash took (entries trashed at the same time),
    /// not what was trashed separately before. False when an entry is not the caller's to
    /// change (then nothing changes).
    pub(crate) fn trash_tree(
        &self,
        caller: &Caller,
        manages: impl Fn(&FileRecord) -> bool,
        dir: &FileRecord,
        on: bool,
    ) -> Result<bool> {
        let Caller::User(p) = caller else {
            return Ok(false);
        };
        if dir.is_root() {
            return Ok(false);
        }
        let tree = self.tree.of(dir.instance);
        let _write = tree.write()?;
        let Some(current) = self.meta.file(dir.id)? else {
            return Ok(false);
        };
        let stamp = current.trashed;
        let mut changes = Vec::new();
        // The directory's path as it is now (a move may have run since the caller read it).
        let path = current.path();
        let mut all = vec![current];
        for f in self.meta.scan_subtree(dir.instance, &path) {
            self.within_tree_cap(p, &path, all.len())?;
            all.push(f?);
        }
        // The trash's stamp is what untrash matches on, so it must differ from every stamp of
        // an entry trashed on its own before (in the same millisecond, they would be restored
        // with the tree): later than all of them.
        let now = all
            .iter()
            .filter_map(|f| f.trashed)
            .max()
            .map_or(now_millis(), |last| now_millis().max(last + 1));
        for f in all {
            if !manages(&f) {
                return Ok(false);
            }
            let change = if on {
                f.trashed.is_none()
            } else {
                f.trashed.is_some() && f.trashed == stamp
            };
            if change {
                let mut g = f.clone();
                g.trashed = on.then_some(now);
                g.updated = now;
                changes.push((f, g));
            }
        }
        let _stale = self.hot.change(hot::Scope::All);
        let _events = self.file_events(
            &p.account,
            crate::meta::webhooks::WebhookEvent::FileUpdated,
            changes.iter().map(|(_, g)| g).filter(|g| !g.is_directory()),
        )?;
        self.meta.replace_files(&changes)?;
        Ok(true)
    }

    /// Stars (`on`) or unstars a file for the caller alone.
    pub async fn set_star(
        self: &Arc<Self>,
        principal: &Principal,
        id: FileId,
        on: bool,
    ) -> Result<FileRecord> {
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let mut f = svc.readable(&Caller::User(p.clone()), id)?;
            svc.meta.set_star(f.instance, &p.account, id, on)?;
            f.is_stared = Some(on);
            Ok(f)
        })
        .await
    }

    /// Creates or changes one File (see [`FileChange`]).
    pub async fn upsert_file(
        self: &Arc<Self>,
        p: &Principal,
        change: FileChange,
    ) -> Result<FileRecord> {
        let mut file = match &change.id {
            Some(raw) => {
                let id: FileId = raw.parse().map_err(|_| Error::not_found())?;
                let (file, _) = self.get_file(Caller::User(p.clone()), id).await?;
                if change
                    .is_directory
                    .is_some_and(|d| d != file.is_directory())
                {
                    return Err(Error::BadRequest(
                        "isDirectory of a File cannot change".into(),
                    ));
                }
                if change.content.is_some() {
                    return Err(Error::BadRequest(
                        "the content of a stored file cannot change: create a new file".into(),
                    ));
                }
                if change.name.is_some() || change.directory.is_some() {
                    self.move_entry(
                        p,
                        id,
                        change.directory.clone(),
                        change.name.clone(),
                        OnConflict::Fail,
                    )
                    .await?
                } else {
                    file
                }
            }
            None => {
                let dir = change.directory.clone().unwrap_or_else(|| "/".into());
                if change.is_directory == Some(true) {
                    if change.content.is_some() {
                        return Err(Error::BadRequest("a directory has no content".into()));
                    }
                    let path = match &change.name {
                        Some(n) if n.is_empty() || names::sanitize_filename(n) != *n => {
                            return Err(Error::InvalidPath(format!("invalid name {n:?}")))
                        }
                        Some(n) => join(&names::normalize_decoded_directory(&dir)?, n),
                        None => dir,
                    };
                    let path = names::normalize_decoded_directory(&path)?;
                    self.make_directory(p, path).await?.0
                } else if let Some(content) = change.content.clone() {
                    let Some(name) = change.name.clone() else {
                        return Err(Error::BadRequest("a new file needs a name".into()));
                    };
                    self.create_text_file(p, dir, name, content).await?
                } else {
                    return Err(Error::BadRequest(
                        "a new File needs isDirectory: true or content (upload other files with \
                         POST /upload)"
                            .into(),
                    ));
                }
            }
        };
        if let Some(on) = change.is_sharable {
            file = self.set_sharable(p, file.id, on).await?;
        }
        if let Some(on) = change.is_stared {
            file = self.set_star(p, file.id, on).await?;
        }
        Ok(file)
    }

    /// Lets (`on`) or stops admins granting on a file; the owner's call alone.
    pub async fn set_sharable(
        self: &Arc<Self>,
        p: &Principal,
        id: FileId,
        on: bool,
    ) -> Result<FileRecord> {
        let svc = self.clone();
        let p = p.clone();
        blocking(move || {
            // Exclusive: a trash or untrash rewriting the same record meanwhile would be undone
            // by writing back this copy.
            let caller = Caller::User(p.clone());
            let tree = svc.tree.of(svc.readable(&caller, id)?.instance);
            let _tree = tree.write()?;
            let mut f = svc.readable(&caller, id)?;
            if f.created_by != p.account {
                return Err(Error::Forbidden(
                    "only the owner decides whether a file is sharable".into(),
                ));
            }
            f.is_sharable = Some(on);
            f.updated = now_millis();
            let _stale = svc.hot.change(hot::Scope::File(id));
            let _events = svc.file_events(
                &p.account,
                crate::meta::webhooks::WebhookEvent::FileUpdated,
                [&f],
            )?;
            svc.meta.update_file(&f)?;
            Ok(f)
        })
        .await
    }

    /// The grants on the directories above `f` that reach it, as grants on `f` (for the read
    /// rule). One lookup per level: the cost follows the file's depth.
    pub(crate) fn rights_through_directories(&self, f: &FileRecord) -> Result<Vec<AccessRight>> {
        let mut out = Vec::new();
        for path in chain(&f.directory) {
            let Some(dir) = self.directory_at(f.instance, &path)? else {
                continue;
            };
            if dir.id == f.id {
                continue;
            }
            for r in self.meta.rights_on(f.instance, &dir.id.to_string())? {
                out.extend(reaching(&r, f));
            }
        }
        Ok(out)
    }

    /// The record as `caller` sees it: `isStared` is the caller's own mark.
    pub(crate) fn for_caller(&self, caller: &Caller, mut f: FileRecord) -> Result<FileRecord> {
        f.is_stared = match caller {
            Caller::User(p) => Some(self.meta.starred(f.instance, &p.account, f.id)?),
            Caller::Anonymous => None,
        };
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sha_is_the_hash_of_nothing() {
        use sha2::Digest;
        let h: [u8; 32] = sha2::Sha256::digest([]).into();
        assert_eq!(EMPTY_SHA.0, h);
    }

    /// One instance's held lock (a move waiting behind a slow S3 commit) leaves the others
    /// free: under one lock for all, the read below would wait forever.
    #[test]
    fn tree_locks_are_per_instance() {
        let locks = TreeLock::default();
        let a = InstanceId(ulid::Ulid::from_parts(1, 1));
        let b = InstanceId(ulid::Ulid::from_parts(1, 2));
        let tree_a = locks.of(a);
        let _held = tree_a.write().unwrap();
        drop(locks.of(b).read().unwrap());
        drop(locks.of(b).write().unwrap());
        assert!(Arc::ptr_eq(&locks.of(a), &tree_a));
        assert!(tree_a.lock.try_read().is_err(), "a's lock is still held");
    }

    /// A read that overlaps a move is read again after it, never answered from both sides.
    #[test]
    fn consistent_reads_never_straddle_a_move() {
        let tree = Arc::new(InstanceTree::default());
        let state = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let (tree, state) = (tree.clone(), state.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let _w = tree.write().unwrap();
                    tree.moving(|| {
                        // Two halves of one change, visible apart to a lock-free reader.
                        state.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                        state.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
        };
        for _ in 0..2000 {
            let (x, y) = tree
                .consistent(|| {
                    let x = state.load(Ordering::SeqCst);
                    std::thread::yield_now();
                    Ok((x, state.load(Ordering::SeqCst)))
                })
                .unwrap();
            assert!(x.is_multiple_of(2), "read mid-move");
            assert_eq!(x, y, "read across a move");
        }
        writer.join().unwrap();
    }

    #[test]
    fn paths() {
        assert_eq!(chain("/"), ["/"]);
        assert_eq!(chain("/a/b"), ["/", "/a", "/a/b"]);
        assert_eq!(split("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split("/a"), ("/".into(), "a".into()));
        assert_eq!(split("/"), ("/".into(), "".into()));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(numbered("a.txt", 2), "a (2).txt");
        assert_eq!(numbered("dir", 1), "dir (1)");
        assert_eq!(numbered(".env", 1), ".env (1)");
    }
}
