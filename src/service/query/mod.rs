//! Finding records with ArcQL, filtered by the same access rules as REST; trash, untrash and
//! delete by query. Used by the GraphQL API.

pub mod arcql;

use super::{blocking, Service};
use arcql::{Field, Record};
use crate::auth::{access, Caller, Principal};
use crate::error::{Error, Result};
use crate::meta::{AccessRight, FileRecord, FileScope, ImageRecord, Instance};
use crate::types::{now_millis, rfc3339, FileId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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

/// Where a walk over matching records starts and when it may stop.
#[derive(Debug, Clone, Copy, Default)]
struct Walk {
    after: Option<FileId>,
    limit: Option<usize>,
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
pub struct Found {
    pub nodes: Vec<Node>,
    pub has_next: bool,
    pub has_previous: bool,
}

const FILE_PATHS: &[&str] = &[
    "name",
    "directory",
    "path",
    "isDirectory",
    "status",
    "type",
    "size",
    "extension",
    "isStared",
    "isSharable",
    "content",
    "sha256",
    "width",
    "height",
    "url.path",
];
const IMAGE_PATHS: &[&str] = &["name", "description", "width", "height", "file.hypi.id"];
const RIGHT_PATHS: &[&str] = &[
    "resource",
    "resourceType",
    "fields",
    "operationType",
    "operation",
    "startDate",
    "endDate",
    "permissionType",
    "approved",
];
const HYPI_PATHS: &[&str] = &[
    "hypi.id",
    "hypi.created",
    "hypi.updated",
    "hypi.createdBy",
    "hypi.instanceId",
    "hypi.trashed",
];

fn opt_str(s: &Option<String>) -> Option<Field> {
    s.as_ref().map(|s| Field::Str(s.clone()))
}

fn hypi_field(
    path: &str,
    id: String,
    created: u64,
    updated: u64,
    by: &str,
    inst: String,
    trashed: Option<u64>,
) -> Option<Field> {
    Some(Field::Str(match path {
        "hypi.id" => id,
        "hypi.created" => rfc3339(created),
        "hypi.updated" => rfc3339(updated),
        "hypi.createdBy" => by.to_string(),
        "hypi.instanceId" => inst,
        "hypi.trashed" => rfc3339(trashed?),
        _ => return None,
    }))
}

impl Record for FileRecord {
    fn field(&self, path: &str) -> Option<Field> {
        let num = |n: Option<u32>| n.map(|n| Field::Num(f64::from(n)));
        match path {
            "name" => Some(Field::Str(self.name.clone())),
            "directory" => Some(Field::Str(self.directory.clone())),
            "path" => Some(Field::Str(self.path())),
            "isDirectory" => Some(Field::Bool(false)),
            "status" => Some(Field::Str("UPLOADED".into())),
            "type" => Some(Field::Str(self.mime.clone())),
            "size" => Some(Field::Num(self.size as f64)),
            "extension" => opt_str(&self.extension),
            "isStared" => self.is_stared.map(Field::Bool),
            "isSharable" => self.is_sharable.map(Field::Bool),
            "sha256" => Some(Field::Str(self.sha256.to_hex())),
            "width" => num(self.width),
            "height" => num(self.height),
            "url.path" => Some(Field::Str(self.url_path())),
            p => hypi_field(
                p,
                self.id.to_string(),
                self.created,
                self.updated,
                &self.created_by.0,
                self.instance.to_string(),
                self.trashed,
            ),
        }
    }
}

impl Record for Node {
    fn field(&self, path: &str) -> Option<Field> {
        match self {
            Node::File(f) => f.field(path),
            Node::Image(i, f) => match path {
                "name" => Some(Field::Str(i.name.clone())),
                "description" => opt_str(&i.description),
                "width" => Some(Field::Num(f64::from(i.width))),
                "height" => Some(Field::Num(f64::from(i.height))),
                "file.hypi.id" => Some(Field::Str(f.id.to_string())),
                p => f.field(p).filter(|_| p.starts_with("hypi.")),
            },
            Node::AccessRight(r) => match path {
                "resource" => Some(Field::Str(r.resource.clone())),
                "resourceType" => Some(Field::Str(r.resource_type.clone())),
                "fields" => opt_str(&r.fields),
                "operationType" => Some(Field::Str(r.operation_type.clone())),
                "operation" => Some(Field::Str(r.operation.clone())),
                "startDate" => r.start_date.map(|d| Field::Str(rfc3339(d))),
                "endDate" => r.end_date.map(|d| Field::Str(rfc3339(d))),
                "permissionType" => Some(Field::Str(format!("{:?}", r.permission_type))),
                "approved" => Some(Field::Bool(r.approved)),
                p => hypi_field(
                    p,
                    r.id.to_string(),
                    r.created,
                    r.updated,
                    &r.created_by.0,
                    r.instance.to_string(),
                    None,
                ),
            },
        }
    }
}

/// Parses ArcQL and checks every path it names exists on `kind`.
pub fn parse_query(kind: Kind, text: &str) -> Result<arcql::Query> {
    let q = arcql::parse(text).map_err(|e| Error::Query(e.message.clone(), e.position))?;
    let known = match kind {
        Kind::File => FILE_PATHS,
        Kind::Image => IMAGE_PATHS,
        Kind::AccessRight => RIGHT_PATHS,
    };
    if let Some(p) = q
        .paths()
        .into_iter()
        .find(|p| !known.contains(p) && !HYPI_PATHS.contains(p))
    {
        return Err(Error::BadRequest(format!(
            "unknown field {p:?} for {kind:?}"
        )));
    }
    Ok(q)
}

/// What one caller may see in one instance, computed once per query.
struct View {
    caller: Caller,
    instance: Instance,
    /// Grants of the instance by resource.
    rights: HashMap<String, Vec<AccessRight>>,
}

impl View {
    fn may_read(&self, f: &FileRecord) -> bool {
        let own = self.rights.get(&f.id.to_string()).into_iter().flatten();
        let wildcard = self.rights.get("*").into_iter().flatten();
        access::may_read(
            &self.caller,
            f,
            &self.instance,
            own.chain(wildcard),
            now_millis(),
        )
    }

    fn is_manager_of(&self, f: &FileRecord) -> bool {
        matches!(&self.caller, Caller::User(p) if p.admin || p.account == f.created_by)
    }

    /// Whether a grant names this caller (account, `*`, or `anonymous` when allowed).
    fn names_caller(&self, r: &AccessRight) -> bool {
        r.members.iter().any(|m| match &self.caller {
            Caller::Anonymous => m == access::ANONYMOUS && self.instance.anonymous_requests,
            Caller::User(p) => {
                m == &p.account.0
                    || m == access::EVERYONE
                    || (m == access::ANONYMOUS && self.instance.anonymous_requests)
            }
        })
    }
}

impl Service {
    fn view(&self, caller: &Caller) -> Result<Option<View>> {
        let domain = match caller {
            Caller::User(p) => p.instance.clone(),
            Caller::Anonymous => match &self.config.default_instance {
                Some(d) => d.to_ascii_lowercase(),
                None => return Ok(None),
            },
        };
        let Some(instance) = self.meta.instance_by_domain(&domain)? else {
            return Ok(None);
        };
        let mut rights: HashMap<String, Vec<AccessRight>> = HashMap::new();
        for r in self.meta.rights_in(instance.id)? {
            rights.entry(r.resource.clone()).or_default().push(r);
        }
        Ok(Some(View {
            caller: caller.clone(),
            instance,
            rights,
        }))
    }

    /// Candidate files, in id order, from the narrowest index the query allows.
    fn file_candidates<'a>(
        &'a self,
        view: &'a View,
        q: &'a arcql::Query,
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
        if matches!(&view.caller, Caller::User(p) if p.admin) {
            return Ok(self.meta.scan_files(inst, FileScope::All, after));
        }
        // Everyone else: their own files plus what grants naming them reach.
        let mut owners = Vec::new();
        let mut ids = Vec::new();
        if let Caller::User(p) = &view.caller {
            owners.push(p.account.clone());
        }
        for r in view
            .rights
            .values()
            .flatten()
            .filter(|r| view.names_caller(r))
        {
            if r.resource == "*" {
                if r.granted_by_admin {
                    return Ok(self.meta.scan_files(inst, FileScope::All, after));
                }
                owners.push(r.created_by.clone());
            } else if let Ok(id) = r.resource.parse::<FileId>() {
                ids.push(id);
            }
        }
        if ids.is_empty() && owners.len() == 1 {
            if let Caller::User(p) = &view.caller {
                // Only the caller's own files: walk its owner index lazily.
                if owners[0] == p.account {
                    return Ok(self
                        .meta
                        .scan_files(inst, FileScope::Owner(&p.account), after));
                }
            }
        }
        let mut merged = BTreeMap::new();
        owners.sort_by(|a, b| a.0.cmp(&b.0));
        owners.dedup();
        for owner in &owners {
            for f in self.meta.scan_files(inst, FileScope::Owner(owner), after) {
                let f = f?;
                merged.insert(f.id, f);
            }
        }
        for id in ids.into_iter().filter(|id| after.is_none_or(|a| *id > a)) {
            if let Some(f) = self.meta.file(id)? {
                merged.insert(f.id, f);
            }
        }
        Ok(Box::new(merged.into_values().map(Ok)))
    }

    /// Every record of `kind` the caller may see that matches `q` (trashed ones only when asked).
    /// Records of `kind` the caller may see that match `q` (trashed ones only when asked), in
    /// id order, strictly after `walk.after`, stopping once `walk.limit` are found.
    fn matching(
        &self,
        view: &View,
        kind: Kind,
        q: &arcql::Query,
        trashed: Option<bool>,
        walk: Walk,
    ) -> Result<Vec<Node>> {
        let keep_file = |f: &FileRecord| {
            f.instance == view.instance.id
                && trashed.is_none_or(|t| t == f.trashed.is_some())
                && view.may_read(f)
        };
        let full = |out: &Vec<Node>| walk.limit.is_some_and(|l| out.len() >= l);
        let mut out = Vec::new();
        match kind {
            Kind::File | Kind::Image => {
                // Images share their File's id: walk the files, keep those with an Image.
                let any = arcql::parse("*").map_err(|e| Error::Internal(e.message))?;
                let files_q = if kind == Kind::File || q.equality_on("hypi.id").is_some() {
                    q
                } else {
                    &any
                };
                for f in self.file_candidates(view, files_q, walk.after)? {
                    if full(&out) {
                        break;
                    }
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
                    if q.matches(&node) {
                        out.push(node);
                    }
                }
            }
            Kind::AccessRight => {
                let Caller::User(p) = &view.caller else {
                    return Ok(out);
                };
                let mut rights: Vec<&AccessRight> = view.rights.values().flatten().collect();
                rights.sort_by_key(|r| r.id);
                let after = walk.after.map(|a| a.0);
                for r in rights
                    .into_iter()
                    .filter(|r| after.is_none_or(|a| r.id.0 > a))
                {
                    if full(&out) {
                        break;
                    }
                    if p.admin || r.created_by == p.account || self.owns_resource(p, &r.resource)? {
                        let node = Node::AccessRight(r.clone());
                        if q.matches(&node) {
                            out.push(node);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn owns_resource(&self, p: &Principal, resource: &str) -> Result<bool> {
        let Ok(id) = resource.parse::<FileId>() else {
            return Ok(false);
        };
        Ok(self
            .meta
            .file(id)?
            .is_some_and(|f| f.created_by == p.account))
    }

    /// `find(type, arcql, first, after, last, before, includeTrashed)`.
    pub async fn find(
        self: &Arc<Self>,
        caller: Caller,
        kind: Kind,
        arcql: String,
        args: PageArgs,
    ) -> Result<Found> {
        let q = parse_query(kind, &arcql)?;
        let cap = self.config.max_page_size;
        let limit = |n: Option<i32>, name: &str| -> Result<Option<usize>> {
            match n {
                Some(n) if n < 0 => Err(Error::BadRequest(format!("{name} must not be negative"))),
                Some(n) => Ok(Some((n as usize).min(cap))),
                None => Ok(None),
            }
        };
        let first = limit(args.first, "first")?;
        let last = limit(args.last, "last")?;
        for c in [&args.after, &args.before].into_iter().flatten() {
            if c.parse::<ulid::Ulid>().is_err() {
                return Err(Error::BadRequest(format!("{c:?} is not a cursor")));
            }
        }
        let svc = self.clone();
        blocking(move || {
            let Some(view) = svc.view(&caller)? else {
                return Ok(Found {
                    nodes: vec![],
                    has_next: false,
                    has_previous: false,
                });
            };
            let trashed = if args.include_trashed {
                None
            } else {
                Some(false)
            };
            if q.sort.is_empty() && last.is_none() && args.before.is_none() {
                // Id order, forwards: walk the index from the cursor and stop one past the page,
                // so a page costs the same however many records the instance holds.
                let first = first.unwrap_or(cap);
                let after = args
                    .after
                    .as_deref()
                    .map(|c| c.parse::<ulid::Ulid>().map(FileId))
                    .transpose();
                let after = after.map_err(|_| Error::BadRequest("invalid cursor".into()))?;
                let walk = Walk {
                    after,
                    limit: Some(first + 1),
                };
                let mut nodes = svc.matching(&view, kind, &q, trashed, walk)?;
                let has_next = nodes.len() > first;
                nodes.truncate(first);
                return Ok(Found {
                    nodes,
                    has_next,
                    has_previous: after.is_some(),
                });
            }
            let mut nodes = svc.matching(&view, kind, &q, trashed, Walk::default())?;
            if !q.sort.is_empty() {
                // Ties keep id order (the scan order), so paging over a sorted result is stable.
                let mut keyed: Vec<_> = nodes.into_iter().map(|n| (q.sort_key(&n), n)).collect();
                keyed.sort_by(|(a, _), (b, _)| q.compare_keys(a, b));
                nodes = keyed.into_iter().map(|(_, n)| n).collect();
            }
            paginate(
                nodes,
                first,
                args.after.as_deref(),
                last,
                args.before.as_deref(),
                cap,
                q.sort.is_empty(),
            )
        })
        .await
    }

    /// `get(type, id)`: one record the caller may see, or None.
    pub async fn get_node(
        self: &Arc<Self>,
        caller: Caller,
        kind: Kind,
        id: String,
    ) -> Result<Option<Node>> {
        let text = format!(
            "hypi.id = '{}'",
            id.replace('\\', "\\\\").replace('\'', "\\'")
        );
        let found = self
            .find(
                caller,
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

    /// `trash` (on = true) or `untrash` files matching `arcql`; returns how many changed.
    pub async fn set_trashed(
        self: &Arc<Self>,
        principal: &Principal,
        kind: Kind,
        arcql: String,
        on: bool,
    ) -> Result<i32> {
        if kind != Kind::File {
            return Err(Error::BadRequest("only File records can be trashed".into()));
        }
        let q = parse_query(kind, &arcql)?;
        let svc = self.clone();
        let caller = Caller::User(principal.clone());
        blocking(move || {
            let Some(view) = svc.view(&caller)? else {
                return Ok(0);
            };
            let mut n = 0;
            for node in svc.matching(&view, kind, &q, Some(!on), Walk::default())? {
                let Node::File(mut f) = node else { continue };
                if !view.is_manager_of(&f) {
                    continue;
                }
                f.trashed = on.then(now_millis);
                f.updated = now_millis();
                let _stale = svc.hot.change(super::hot::Scope::File(f.id));
                svc.meta.update_file(&f)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    /// `delete(type, arcql)`: Files (with their blobs when unreferenced) or AccessRights.
    pub async fn delete_matching(
        self: &Arc<Self>,
        principal: &Principal,
        kind: Kind,
        arcql: String,
    ) -> Result<i32> {
        let q = parse_query(kind, &arcql)?;
        let svc = self.clone();
        let p = principal.clone();
        blocking(move || {
            let caller = Caller::User(p.clone());
            let Some(view) = svc.view(&caller)? else {
                return Ok(0);
            };
            let mut n = 0;
            match kind {
                Kind::Image => {
                    return Err(Error::BadRequest("delete the Image's File instead".into()))
                }
                Kind::File => {
                    for node in svc.matching(&view, kind, &q, None, Walk::default())? {
                        if let Node::File(f) = node {
                            if view.is_manager_of(&f) && svc.remove_file(&f)? {
                                n += 1;
                            }
                        }
                    }
                }
                Kind::AccessRight => {
                    for node in svc.matching(&view, kind, &q, None, Walk::default())? {
                        if let Node::AccessRight(r) = node {
                            if svc.meta.delete_right(r.id)? {
                                n += 1;
                            }
                        }
                    }
                }
            }
            Ok(n)
        })
        .await
    }
}

/// Applies cursors and limits to an ordered result. In id order a cursor whose record has
/// gone since (deleted between pages) still marks its place; in a sorted result it must exist.
fn paginate(
    nodes: Vec<Node>,
    first: Option<usize>,
    after: Option<&str>,
    last: Option<usize>,
    before: Option<&str>,
    cap: usize,
    id_order: bool,
) -> Result<Found> {
    let position = |cursor: &str| match nodes.iter().position(|n| n.id() == cursor) {
        Some(i) => Ok((i, true)),
        None if id_order => Ok((nodes.partition_point(|n| n.id().as_str() < cursor), false)),
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
        Some(cap)
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
