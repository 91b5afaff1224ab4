//! Finding records with ArcQL, filtered by the same access rules as REST; trash, untrash and
//! delete by query. Used by the GraphQL API.
//!
//! - `fields`: the File field table and the ArcQL view of each record type;
//! - `view`: what one caller may see (access);
//! - `plan`: which index to walk, and the walk;
//! - `paging`: the one paging rule, shared with REST `/files`;
//! - `mutate`: trash, untrash and delete by query;
//! - `arcql`: the query language itself.

pub mod arcql;
mod children;
pub mod fields;
mod mutate;
pub mod paging;
mod plan;
mod view;

pub use paging::{Found, PageArgs};

use super::{blocking, Service};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::meta::{AccessRight, FileRecord, ImageRecord};
use fields::parse_query;
use plan::{Cursor, Walk};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The record types `find`, `get` and the mutations address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Image,
    AccessRight,
}

/// One record found.
#[derive(Debug, Clone)]
pub enum Node {
    File(FileRecord),
    Image(ImageRecord, FileRecord),
    AccessRight(AccessRight),
}

impl Node {
    /// `hypi.id`, the cursor. An Image shares its File's id.
    pub fn id(&self) -> String {
        match self {
            Node::File(f) | Node::Image(_, f) => f.id.to_string(),
            Node::AccessRight(r) => r.id.to_string(),
        }
    }
}

/// Who asks, in which instance, and until when: what every query call needs besides its
/// arguments.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    /// The request's `hypi-domain` header: the instance of an anonymous caller (a token names
    /// its own).
    pub domain: Option<String>,
    /// When the request's time budget runs out; walks stop there with a timeout.
    pub deadline: Option<Instant>,
    /// The budget, for the error message.
    pub budget: Duration,
}

impl Ctx {
    /// A context without a domain header or deadline.
    pub fn new(caller: Caller) -> Ctx {
        Ctx {
            caller,
            domain: None,
            deadline: None,
            budget: Duration::ZERO,
        }
    }

    /// Fails once the deadline has passed, so a costly query stops using CPU instead of
    /// finishing for a client that gets a timeout anyway.
    pub fn check_time(&self) -> Result<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(Error::Timeout(format!(
                "the query ran past its time budget of {} ms: narrow it (an equality on \
                 hypi.id, path or directory) or ask for fewer records",
                self.budget.as_millis()
            ))),
            _ => Ok(()),
        }
    }
}

impl Service {
    /// `find(type, arcql, first, after, last, before, includeTrashed)`, paged by the rule in
    /// [`paging`].
    pub async fn find(
        self: &Arc<Self>,
        ctx: Ctx,
        kind: Kind,
        arcql: String,
        args: PageArgs,
    ) -> Result<Found<Node>> {
        let q = parse_query(kind, &arcql)?;
        let cap = self.config.max_page_size;
        let size = |n: Option<i32>, name: &str| {
            n.map(|n| paging::page_size(Some(n.into()), cap, name))
                .transpose()
        };
        let first = size(args.first, "first")?;
        let last = size(args.last, "last")?;
        let default = paging::page_size(None, cap, "first")?;
        let cursor = |c: &Option<String>| -> Result<Option<Cursor>> {
            c.as_deref()
                .map(|raw| {
                    Cursor::parse(kind, raw)
                        .ok_or_else(|| Error::BadRequest(format!("{raw:?} is not a cursor")))
                })
                .transpose()
        };
        let after = cursor(&args.after)?;
        cursor(&args.before)?;
        let svc = self.clone();
        blocking(move || {
            let Some(view) = svc.view(&ctx)? else {
                return Ok(Found::empty());
            };
            // Never interleaved with a move of the tree (see `service::dirs`).
            let tree = svc.tree.of(view.instance.id);
            let _tree = tree.read()?;
            let trashed = if args.include_trashed {
                None
            } else {
                Some(false)
            };
            if q.sort.is_empty() && last.is_none() && args.before.is_none() {
                // Id order, forwards: walk the index from the cursor and stop one past the page,
                // so a page costs the same however many records the instance holds.
                let first = first.unwrap_or(default);
                let walk = Walk {
                    after,
                    limit: Some(first + 1),
                };
                let nodes = svc.matching(&ctx, &view, kind, &q, trashed, walk)?;
                let (nodes, has_next) = paging::take_page(nodes.into_iter().map(Ok), first)?;
                return Ok(Found {
                    nodes,
                    has_next,
                    has_previous: after.is_some(),
                });
            }
            if let (Some(order), None, None) =
                (svc.index_order(&view, kind, &q), last, &args.before)
            {
                // One indexed sort key over the whole instance: walk the sort index from the
                // cursor and stop one past the page instead of sorting every record.
                let first = first.unwrap_or(default);
                let after = args.after.as_deref();
                if let Some(nodes) =
                    svc.sorted_matching(&ctx, &view, &q, trashed, order, after, first + 1)?
                {
                    let (nodes, has_next) = paging::take_page(nodes.into_iter().map(Ok), first)?;
                    return Ok(Found {
                        nodes,
                        has_next,
                        has_previous: after.is_some(),
                    });
                }
            }
            let mut nodes = svc.matching(&ctx, &view, kind, &q, trashed, Walk::default())?;
            if !q.sort.is_empty() {
                // Ties keep id order (the scan order), so paging over a sorted result is stable.
                let mut keyed: Vec<_> = nodes.into_iter().map(|n| (q.sort_key(&n), n)).collect();
                keyed.sort_by(|(a, _), (b, _)| q.compare_keys(a, b));
                nodes = keyed.into_iter().map(|(_, n)| n).collect();
            }
            paging::paginate(
                nodes,
                Node::id,
                first,
                args.after.as_deref(),
                last,
                args.before.as_deref(),
                default,
                q.sort.is_empty(),
            )
        })
        .await
    }

    /// `get(type, id)`: one record the caller may see, or None.
    pub async fn get_node(
        self: &Arc<Self>,
        ctx: Ctx,
        kind: Kind,
        id: String,
    ) -> Result<Option<Node>> {
        let text = format!(
            "hypi.id = '{}'",
            id.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let found = self
            .find(
                ctx,
                kind,
                text,
                PageArgs {
                    first: Some(1),
                    ..Default::default()
                },
            )
            .await?;
        Ok(found.nodes.into_iter().next())
    }
}
