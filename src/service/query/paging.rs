//! Paging: the one rule for REST `GET /files` and GraphQL `find`.
//!
//! - Results come in id (upload) order unless an ArcQL `SORT` orders them; ties keep id order.
//! - `first` (and GraphQL's `last`) defaults to [`DEFAULT_PAGE`] and must be at least 1; a
//!   larger value than the surface's maximum is clamped to that maximum (GraphQL `find`:
//!   `max_page_size`, 25 as on Hypi; REST `/files`: [`REST_MAX_PAGE`]). Whether more follow is
//!   always reported (`hasNextPage`), so a clamped page is never mistaken for the end.
//! - `after` is the cursor (`hypi.id`) of the last record seen. In id order a cursor whose
//!   record was deleted since still marks its place; in a sorted result it must be present.
//! - A page is found by walking from the cursor and stopping one record past the page, so a
//!   page costs the same however many records lie beyond it.

use crate::error::{Error, Result};

/// Page size when the caller names none.
pub const DEFAULT_PAGE: usize = 25;
/// Largest page of the REST listing.
pub const REST_MAX_PAGE: usize = 1000;

/// The page size for a requested `first`/`last` (named `name` in errors) under `max`.
pub fn page_size(requested: Option<i64>, max: usize, name: &str) -> Result<usize> {
    let max = max.max(1);
    match requested {
        None => Ok(DEFAULT_PAGE.min(max)),
        Some(n) if n < 1 => Err(Error::BadRequest(format!(
            "{name} must be at least 1 (got {n})"
        ))),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
    }
}

/// Takes up to `limit` records from an ordered walk and reports whether more follow, reading
/// at most one record past the page.
pub fn take_page<T>(
    walk: impl IntoIterator<Item = Result<T>>,
    limit: usize,
) -> Result<(Vec<T>, bool)> {
    let mut items = Vec::with_capacity(limit.min(DEFAULT_PAGE * 4));
    for item in walk {
        let item = item?;
        if items.len() == limit {
            return Ok((items, true));
        }
        items.push(item);
    }
    Ok((items, false))
}

/// Paging arguments, GraphQL connection style.
#[derive(Debug, Clone, Default)]
pub struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
    pub include_trashed: bool,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Found<T> {
    pub nodes: Vec<T>,
    pub has_next: bool,
    pub has_previous: bool,
}

impl<T> Found<T> {
    /// A page with nothing in it.
    pub fn empty() -> Self {
        Found {
            nodes: vec![],
            has_next: false,
            has_previous: false,
        }
    }
}

/// Applies cursors and sizes to a whole ordered result (sorted results and backward paging,
/// which cannot stop early). `id` gives a node's cursor; `id_order` says whether the result is
/// in cursor order, where a cursor that is gone still marks its place. With neither size
/// given, `first` is `default`.
#[allow(clippy::too_many_arguments)]
pub fn paginate<T>(
    nodes: Vec<T>,
    id: impl Fn(&T) -> String,
    first: Option<usize>,
    after: Option<&str>,
    last: Option<usize>,
    before: Option<&str>,
    default: usize,
    id_order: bool,
) -> Result<Found<T>> {
    let position = |cursor: &str| match nodes.iter().position(|n| id(n) == cursor) {
        Some(i) => Ok((i, true)),
        None if id_order => Ok((nodes.partition_point(|n| id(n).as_str() < cursor), false)),
        None => Err(Error::BadRequest(format!(
            "cursor {cursor:?} is not in this result"
        ))),
    };
    let start = match after {
        Some(c) => match position(c)? {
            (i, true) => i + 1,
            (i, false) => i,
        },
        None => 0,
    };
    let end = match before {
        Some(c) => position(c)?.0,
        None => nodes.len(),
    };
    let (mut start, mut end) = (start, end.max(start));
    let first = if first.is_none() && last.is_none() {
        Some(default)
    } else {
        first
    };
    if let Some(f) = first {
        end = end.min(start + f);
    }
    if let Some(l) = last {
        start = start.max(end.saturating_sub(l));
    }
    let has_next = end < nodes.len();
    let has_previous = start > 0;
    let nodes = nodes.into_iter().skip(start).take(end - start).collect();
    Ok(Found {
        nodes,
        has_next,
        has_previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_rule() {
        assert_eq!(page_size(None, 1000, "first").unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(None, 4, "first").unwrap(), 4);
        assert_eq!(page_size(Some(1), 25, "first").unwrap(), 1);
        assert_eq!(page_size(Some(25), 25, "first").unwrap(), 25);
        // Above the maximum: clamped, on every surface.
        assert_eq!(page_size(Some(26), 25, "first").unwrap(), 25);
        assert_eq!(page_size(Some(5000), REST_MAX_PAGE, "first").unwrap(), 1000);
        assert_eq!(page_size(Some(i64::MAX), 25, "last").unwrap(), 25);
        // Zero and below: refused, naming the argument.
        for bad in [0, -1, i64::MIN] {
            let e = page_size(Some(bad), 25, "last").unwrap_err();
            assert_eq!(e.code(), "BAD_REQUEST");
            assert!(e.to_string().contains("last"), "{e}");
        }
    }

    #[test]
    fn take_page_reads_one_past_the_page() {
        let mut read = 0;
        let walk = (0..100).map(|i| {
            read += 1;
            Ok(i)
        });
        let (items, more) = take_page(walk, 10).unwrap();
        assert_eq!(items, (0..10).collect::<Vec<_>>());
        assert!(more);
        assert_eq!(read, 11);
        let (items, more) = take_page((0..3).map(Ok), 10).unwrap();
        assert_eq!(items.len(), 3);
        assert!(!more);
        let (items, more) = take_page((0..10).map(Ok), 10).unwrap();
        assert_eq!(items.len(), 10);
        assert!(!more);
        let failing = vec![Ok(1), Err(Error::Internal("disk".into()))];
        assert!(take_page(failing, 10).is_err());
    }

    fn ids(f: &Found<String>) -> Vec<&str> {
        f.nodes.iter().map(String::as_str).collect()
    }

    fn nodes() -> Vec<String> {
        ["b", "d", "f", "h"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cursors_forwards_and_backwards() {
        let id = |s: &String| s.clone();
        let p = paginate(nodes(), id, Some(2), None, None, None, 25, true).unwrap();
        assert_eq!(ids(&p), ["b", "d"]);
        assert!(p.has_next && !p.has_previous);
        let p = paginate(nodes(), id, Some(2), Some("d"), None, None, 25, true).unwrap();
        assert_eq!(ids(&p), ["f", "h"]);
        assert!(!p.has_next && p.has_previous);
        let p = paginate(nodes(), id, None, None, Some(2), Some("h"), 25, true).unwrap();
        assert_eq!(ids(&p), ["d", "f"]);
        assert!(p.has_next && p.has_previous);
        // No size: the default applies.
        let p = paginate(nodes(), id, None, None, None, None, 3, true).unwrap();
        assert_eq!(ids(&p), ["b", "d", "f"]);
    }

    #[test]
    fn deleted_cursor_keeps_its_place_in_id_order_only() {
        let id = |s: &String| s.clone();
        // "e" was deleted between pages: the walk resumes after where it was.
        let p = paginate(nodes(), id, Some(10), Some("e"), None, None, 25, true).unwrap();
        assert_eq!(ids(&p), ["f", "h"]);
        // In a sorted result there is no place to keep: refused.
        let e = paginate(nodes(), id, Some(10), Some("e"), None, None, 25, false).unwrap_err();
        assert_eq!(e.code(), "BAD_REQUEST");
    }
}
