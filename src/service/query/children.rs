//! `children(arcql, first, after)` of a directory: its direct entries from the directory
//! index (no scan of the instance), filtered and sorted with ArcQL and paged by the one paging
//! rule, exactly as `find`, with the caller's access applied to every entry.

use super::arcql::Query;
use super::fields::parse_query;
use super::view::View;
use super::{paging, Ctx, Found, Kind, Node};
use crate::error::{Error, Result};
use crate::meta::{FileRecord, FileScope};
use crate::service::dirs::DirStats;
use crate::service::{blocking, Service};
use crate::types::FileId;
use std::sync::Arc;

impl Service {
    /// The entries of directory `dir` the caller may see (trashed ones left out), a page at a
    /// time. A directory the caller may not read is `NotFound`; a file (not a directory) has
    /// no children: `Ok(None)`.
    pub async fn children(
        self: &Arc<Self>,
        ctx: Ctx,
        dir: FileId,
        arcql: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Found<FileRecord>>> {
        let (q, first, after) = self.children_args(arcql, first, after)?;
        let svc = self.clone();
        blocking(move || {
            let Some(view) = svc.view(&ctx)? else {
                return Err(Error::not_found());
            };
            // Listings never interleave with a move: a page shows the tree before or after it.
            let tree = svc.tree.of(view.instance.id);
            let _tree = tree.read()?;
            svc.children_of(&ctx, &view, dir, &q, first, after)
        })
        .await
    }

    /// [`Service::children`] once parsed, with the tree lock held by the caller.
    fn children_of(
        &self,
        ctx: &Ctx,
        view: &View,
        dir: FileId,
        q: &Query,
        first: usize,
        after: Option<FileId>,
    ) -> Result<Option<Found<FileRecord>>> {
        let svc = self;
        let Some(dir) = svc.meta.file(dir)?.filter(|d| view.shows(d)) else {
            return Err(Error::not_found());
        };
        if !dir.is_directory() {
            return Ok(None);
        }
        let m = q.matcher();
        let path = dir.path();
        let walk = svc
            .meta
            .scan_files(view.instance.id, FileScope::Directory(&path), after)
            .filter_map(|f| {
                let f = match f {
                    Ok(f) => f,
                    Err(e) => return Some(Err(e)),
                };
                // The root is its own parent in the index.
                if f.id == dir.id || f.trashed.is_some() || !view.shows(&f) {
                    return None;
                }
                let check = ctx
                    .check_time()
                    .and_then(|()| svc.for_caller(&ctx.caller, f));
                match check {
                    Ok(f) => {
                        let node = Node::File(f);
                        m.matches(&node).then_some(Ok(node))
                    }
                    Err(e) => Some(Err(e)),
                }
            });
        let found = if q.sort.is_empty() {
            let (nodes, has_next) = paging::take_page(walk, first)?;
            Found {
                nodes,
                has_next,
                has_previous: after.is_some(),
            }
        } else {
            // Sorted: the whole directory, then the page (as `find` does).
            let nodes = walk.collect::<Result<Vec<_>>>()?;
            let mut keyed: Vec<_> = nodes.into_iter().map(|n| (q.sort_key(&n), n)).collect();
            keyed.sort_by(|(a, _), (b, _)| q.compare_keys(a, b));
            let nodes = keyed.into_iter().map(|(_, n)| n).collect();
            let cursor = after.map(|a| a.to_string());
            paging::paginate(
                nodes,
                Node::id,
                Some(first),
                cursor.as_deref(),
                None,
                None,
                first,
                false,
            )?
        };
        Ok(Some(Found {
            nodes: found
                .nodes
                .into_iter()
                .filter_map(|n| match n {
                    Node::File(f) => Some(f),
                    _ => None,
                })
                .collect(),
            has_next: found.has_next,
            has_previous: found.has_previous,
        }))
    }

    /// `GET /dirs/**`: the directory at `path`, its totals and a page of its entries, all
    /// read under one hold of the tree lock (so the three agree even while the tree moves).
    pub async fn directory_listing(
        self: &Arc<Self>,
        ctx: Ctx,
        path: String,
        arcql: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<(FileRecord, DirStats, Found<FileRecord>)> {
        let (q, first, after) = self.children_args(arcql, first, after)?;
        let svc = self.clone();
        blocking(move || {
            let missing = || Error::NotFound(format!("no directory {path}"));
            let Some(view) = svc.view(&ctx)? else {
                return Err(missing());
            };
            let tree = svc.tree.of(view.instance.id);
            let _tree = tree.read()?;
            let dir = svc
                .directory_at(view.instance.id, &path)?
                .filter(|d| d.trashed.is_none() && view.shows(d))
                .ok_or_else(missing)?;
            let page = svc
                .children_of(&ctx, &view, dir.id, &q, first, after)?
                .ok_or_else(missing)?;
            let stats = svc.stats_of(&dir, |f| view.shows(f))?;
            Ok((dir, stats, page))
        })
        .await
    }

    /// Parses `children`' arguments.
    fn children_args(
        &self,
        arcql: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<(Query, usize, Option<FileId>)> {
        let q = parse_query(Kind::File, arcql.as_deref().unwrap_or("*"))?;
        let first = paging::page_size(first.map(i64::from), self.config.max_page_size, "first")?;
        let after = after
            .map(|a| {
                a.parse::<FileId>()
                    .map_err(|_| Error::BadRequest(format!("{a:?} is not a cursor")))
            })
            .transpose()?;
        Ok((q, first, after))
    }
}
