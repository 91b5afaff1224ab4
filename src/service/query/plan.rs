//! Index planning: which records to walk for a query, narrowest index first, and the walk
//! itself, which checks access, trash, the filter and the request's time budget per record.

use super::arcql::{self, Query};
use super::view::View;
use super::{Ctx, Kind, Node};
use crate::auth::Caller;
use crate::error::Error;
use crate::error::Result;
use crate::meta::{AccessRight, FileOrder, FileRecord, FileScope, SizeFilter, SortField};
use crate::service::Service;
use crate::types::{FileId, RightId};
use std::collections::BTreeMap;

/// A cursor: where a walk starts (strictly after). Files and AccessRights have ids of their
/// own types; a cursor of one kind never reads as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cursor {
    File(FileId),
    Right(RightId),
}

impl Cursor {
    /// Parses a client's cursor for `kind`; `None` when it is not an id.
    pub fn parse(kind: Kind, raw: &str) -> Option<Cursor> {
        match kind {
            Kind::File | Kind::Image => raw.parse().ok().map(Cursor::File),
            Kind::AccessRight => raw.parse().ok().map(Cursor::Right),
        }
    }

    fn file(c: Option<Cursor>) -> Option<FileId> {
        match c {
            Some(Cursor::File(id)) => Some(id),
            _ => None,
        }
    }

    fn right(c: Option<Cursor>) -> Option<RightId> {
        match c {
            Some(Cursor::Right(id)) => Some(id),
            _ => None,
        }
    }
}

/// Where a walk over matching records starts and when it may stop.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Walk {
    pub after: Option<Cursor>,
    pub limit: Option<usize>,
}

impl Service {
    /// Candidate files, in id order, from the narrowest index the query allows.
    fn file_candidates<'a>(
        &'a self,
        view: &'a View,
        q: &'a Query,
        after: Option<FileId>,
    ) -> Result<Box<dyn Iterator<Item = Result<FileRecord>> + 'a>> {
        let inst = view.instance.id;
        if let Some(id) = q.equality_on("hypi.id") {
            let file = match id.parse::<FileId>() {
                Ok(id) if after.is_none_or(|a| id > a) => self.meta.file(id)?,
                _ => None,
            };
            return Ok(Box::new(file.into_iter().map(Ok)));
        }
        if let Some(p) = q.equality_on("path") {
            return Ok(self.meta.scan_files(inst, FileScope::Path(p), after));
        }
        if let Some(d) = q.equality_on("directory") {
            return Ok(self.meta.scan_files(inst, FileScope::Directory(d), after));
        }
        // Size terms are tested on each record's size before the record is decoded, where
        // the store can (a selective `size > n` then skips most of a scan's work).
        let keep = size_filter(q);
        if whole_instance(view) {
            return Ok(match keep {
                Some(keep) => self
                    .meta
                    .scan_files_sized(inst, FileScope::All, after, keep),
                None => self.meta.scan_files(inst, FileScope::All, after),
            });
        }
        // Everyone else: their own files plus what grants naming them reach.
        let mut owners = Vec::new();
        let mut ids = Vec::new();
        if let Caller::User(p) = &view.caller {
            owners.push(p.account.clone());
        }
        for r in view.grants() {
            if r.resource == "*" {
                owners.push(r.created_by.clone());
            } else if let Ok(id) = r.resource.parse::<FileId>() {
                ids.push(id);
            }
        }
        if ids.is_empty() && owners.len() == 1 {
            if let Caller::User(p) = &view.caller {
                // Only the caller's own files: walk its owner index lazily.
                if owners[0] == p.account {
                    let scope = FileScope::Owner(&p.account);
                    return Ok(match keep {
                        Some(keep) => self.meta.scan_files_sized(inst, scope, after, keep),
                        None => self.meta.scan_files(inst, scope, after),
                    });
                }
            }
        }
        owners.sort_by(|a, b| a.0.cmp(&b.0));
        owners.dedup();
        let mut granted = Vec::new();
        for id in ids {
            granted.extend(self.meta.file(id)?);
        }
        Ok(Box::new(Merged {
            svc: self,
            inst,
            owners,
            granted,
            after,
            ready: BTreeMap::new().into_values(),
            done: false,
        }))
    }

    /// The index order a sorted `find` can walk instead of sorting: Files (not Images, whose
    /// sort fields are the Image's) sorted by one indexed field, over a caller who sees the
    /// whole instance (an admin, or through an admin's `*` grant) without an equality that
    /// names a narrower index. Everyone else's candidates are their own and granted files,
    /// whose sort costs what they may see; `None` for them.
    pub(super) fn index_order(&self, view: &View, kind: Kind, q: &Query) -> Option<FileOrder> {
        let [key] = q.sort.as_slice() else {
            return None;
        };
        let narrower = ["hypi.id", "path", "directory"]
            .iter()
            .any(|p| q.equality_on(p).is_some());
        if kind != Kind::File || narrower || !whole_instance(view) {
            return None;
        }
        Some(FileOrder {
            field: SortField::of_path(&key.path)?,
            descending: key.dir == arcql::Direction::Desc,
        })
    }

    /// The first records of a Files `find` sorted in `order` (see [`Service::index_order`]):
    /// walks the sort index from the cursor's place (the cursor must be in the result, as for
    /// any sorted result) and stops once `limit` are found. `None` when the store keeps no
    /// sort index: the caller sorts the whole result instead.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sorted_matching(
        &self,
        ctx: &Ctx,
        view: &View,
        q: &Query,
        trashed: Option<bool>,
        order: FileOrder,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Node>>> {
        let keep_file = file_filter(view, q, trashed);
        let m = q.matcher();
        let from = match after {
            Some(raw) => {
                let f = raw.parse::<FileId>().ok().map(|id| self.meta.file(id));
                let f = f.transpose()?.flatten().filter(|f| {
                    f.id.to_string() == raw && keep_file(f) && m.matches(&Node::File(f.clone()))
                });
                let Some(f) = f else {
                    return Err(Error::BadRequest(format!(
                        "cursor {raw:?} is not in this result"
                    )));
                };
                Some(f)
            }
            None => None,
        };
        let Some(walk) = self
            .meta
            .scan_sorted(view.instance.id, order, from.as_ref())
        else {
            return Ok(None);
        };
        self.keep_matching(ctx, view, Kind::File, q, trashed, Some(limit), walk)
            .map(Some)
    }

    /// Records of `kind` the caller may see that match `q` (trashed ones only when asked), in
    /// id order, strictly after `walk.after`, stopping once `walk.limit` are found. Fails with
    /// a timeout once `ctx`'s deadline passes.
    pub(super) fn matching(
        &self,
        ctx: &Ctx,
        view: &View,
        kind: Kind,
        q: &Query,
        trashed: Option<bool>,
        walk: Walk,
    ) -> Result<Vec<Node>> {
        let m = q.matcher();
        let full = |out: &Vec<Node>| walk.limit.is_some_and(|l| out.len() >= l);
        let mut out = Vec::new();
        match kind {
            Kind::File | Kind::Image => {
                // Images share their File's id: walk the files, keep those with an Image.
                let any = arcql::Query {
                    filter: None,
                    sort: vec![],
                };
                let files_q = if kind == Kind::File || q.equality_on("hypi.id").is_some() {
                    q
                } else {
                    &any
                };
                let candidates = self.file_candidates(view, files_q, Cursor::file(walk.after))?;
                return self.keep_matching(ctx, view, kind, q, trashed, walk.limit, candidates);
            }
            Kind::AccessRight => {
                let after = Cursor::right(walk.after);
                for r in self.visible_rights(view)? {
                    if after.is_some_and(|a| r.id <= a) {
                        continue;
                    }
                    if full(&out) {
                        break;
                    }
                    ctx.check_time()?;
                    let node = Node::AccessRight(r);
                    if m.matches(&node) {
                        out.push(node);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The Files (or their Images) among `candidates`, in their order, that the caller may
    /// see and `q` matches, stopping once `limit` are found; checks the time budget per record.
    #[allow(clippy::too_many_arguments)]
    fn keep_matching(
        &self,
        ctx: &Ctx,
        view: &View,
        kind: Kind,
        q: &Query,
        trashed: Option<bool>,
        limit: Option<usize>,
        candidates: impl Iterator<Item = Result<FileRecord>>,
    ) -> Result<Vec<Node>> {
        let m = q.matcher();
        let keep_file = file_filter(view, q, trashed);
        let mut out = Vec::new();
        for f in candidates {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            ctx.check_time()?;
            let f = f?;
            if !keep_file(&f) {
                continue;
            }
            let node = match kind {
                Kind::File => Node::File(f),
                _ => match self.meta.image(f.id)? {
                    Some(img) => Node::Image(img, f),
                    None => continue,
                },
            };
            if m.matches(&node) {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// The AccessRights the caller may list, in id order: an admin every grant of the
    /// instance; an account the grants on its own files and the `*` grants it made. Only
    /// accounts: grants are never listed to anonymous callers.
    fn visible_rights(&self, view: &View) -> Result<Vec<AccessRight>> {
        let Caller::User(p) = &view.caller else {
            return Ok(vec![]);
        };
        if !p.instance.eq_ignore_ascii_case(&view.instance.domain) {
            return Ok(vec![]);
        }
        let inst = view.instance.id;
        let mut out = BTreeMap::new();
        if p.admin {
            for r in self.meta.rights_in(inst)? {
                out.insert(r.id, r);
            }
        } else {
            // Cost follows the caller's own files, not the instance's grants.
            for f in self
                .meta
                .scan_files(inst, FileScope::Owner(&p.account), None)
            {
                for r in self.meta.rights_on(inst, &f?.id.to_string())? {
                    out.insert(r.id, r);
                }
            }
            // The caller's own `*` grants through the grantor index, not every `*` grant.
            for r in self.meta.wildcards_by(inst, &p.account)? {
                out.insert(r.id, r);
            }
        }
        Ok(out.into_values().collect())
    }
}

/// A test of a file's size that every File `q` matches passes (its `size` terms AND-ed at the
/// top), for the scan to apply before decoding a record; `None` when `q` has no such terms.
fn size_filter(q: &Query) -> Option<SizeFilter<'static>> {
    let terms = q.terms_on("size")?;
    // A File's `size` reads as this field (see `FILE_FIELDS`): the same value the filter
    // itself compares, so a record refused here is one the filter refuses.
    Some(Box::new(move |size| {
        terms.admits(super::fields::Cell::Int(size).arcql())
    }))
}

/// Whether the caller's candidates are every file of the instance: an admin, or a holder of
/// an admin's `*` grant.
fn whole_instance(view: &View) -> bool {
    matches!(&view.caller, Caller::User(p) if p.admin)
        || view
            .grants()
            .any(|r| r.resource == "*" && r.granted_by_admin)
}

/// Which candidate files a query keeps before its filter: those the caller may see, trashed
/// ones only when asked, directories only when the query names `isDirectory` or addresses one
/// record (`hypi.id` or `path` equality), so queries written before directories existed keep
/// their answers.
fn file_filter<'a>(
    view: &'a View,
    q: &Query,
    trashed: Option<bool>,
) -> impl Fn(&FileRecord) -> bool + 'a {
    let dirs = q.paths().contains(&"isDirectory")
        || q.equality_on("hypi.id").is_some()
        || q.equality_on("path").is_some();
    move |f: &FileRecord| {
        trashed.is_none_or(|t| t == f.trashed.is_some())
            && (dirs || !f.is_directory())
            && view.shows(f)
    }
}

/// Most candidates [`Merged`] holds at once.
const CHUNK: usize = 1000;

/// The files of some owners (their indexes, in id order) and granted files with, for
/// directories, everything below them (a grant on a directory reaches it, see
/// `View::may_read`; the path index is in path order), handed out in id order without
/// duplicates. Memory is bounded: each round keeps the [`CHUNK`] smallest ids past the last
/// one handed out, reading at most that many per owner and the granted subtrees again; a
/// large granted tree costs time per round (under the request's time budget), not memory.
struct Merged<'a> {
    svc: &'a Service,
    inst: crate::types::InstanceId,
    owners: Vec<crate::types::AccountId>,
    granted: Vec<FileRecord>,
    /// The last id handed out (or the client's cursor).
    after: Option<FileId>,
    ready: std::collections::btree_map::IntoValues<FileId, FileRecord>,
    /// The last round found everything there was.
    done: bool,
}

impl Merged<'_> {
    fn round(&self) -> Result<BTreeMap<FileId, FileRecord>> {
        let after = self.after;
        let mut out = BTreeMap::new();
        let mut keep = |f: FileRecord| {
            if after.is_some_and(|a| f.id <= a)
                || (out.len() >= CHUNK && out.last_key_value().is_some_and(|(k, _)| f.id > *k))
            {
                return;
            }
            out.insert(f.id, f);
            if out.len() > CHUNK {
                out.pop_last();
            }
        };
        for owner in &self.owners {
            for f in self
                .svc
                .meta
                .scan_files(self.inst, FileScope::Owner(owner), after)
                .take(CHUNK)
            {
                keep(f?);
            }
        }
        for g in &self.granted {
            if g.is_directory() {
                for f in self.svc.meta.scan_subtree(self.inst, &g.path()) {
                    keep(f?);
                }
            }
            keep(g.clone());
        }
        Ok(out)
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<FileRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(f) = self.ready.next() {
                self.after = Some(f.id);
                return Some(Ok(f));
            }
            if self.done {
                return None;
            }
            match self.round() {
                Ok(found) => {
                    // Fewer than a chunk: nothing past them is left anywhere.
                    self.done = found.len() < CHUNK;
                    self.ready = found.into_values();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
