//! Field mapping: the one table of a File's fields (its name in JSON, GraphQL and ArcQL, and how
//! to read it from a [`FileRecord`]), and the ArcQL view of every record type.
//!
//! The REST views render a File from [`FILE_FIELDS`], ArcQL filters and sorts on it, and the
//! GraphQL `File` type is checked against it by a test, so a field added here shows up (or is
//! missed loudly) everywhere.

use super::arcql::{self, Field, Record};
use super::{Kind, Node};
use crate::error::{Error, Result};
use crate::meta::FileRecord;
use crate::types::rfc3339;

/// A field's value, typed closely enough for JSON (sizes stay integers).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Str(String),
    Int(u64),
    Bool(bool),
    Null,
}

impl Cell {
    /// The value ArcQL compares, or `None` where the record has no value.
    pub fn arcql(self) -> Option<Field> {
        match self {
            Cell::Str(s) => Some(Field::Str(s)),
            // Exact up to 2^53; file sizes and pixel counts stay far below.
            Cell::Int(n) => Some(Field::Num(n as f64)),
            Cell::Bool(b) => Some(Field::Bool(b)),
            Cell::Null => None,
        }
    }

    /// The value in Hypi's JSON shape.
    pub fn json(self) -> serde_json::Value {
        match self {
            Cell::Str(s) => s.into(),
            Cell::Int(n) => n.into(),
            Cell::Bool(b) => b.into(),
            Cell::Null => serde_json::Value::Null,
        }
    }
}

/// One field of a File.
pub struct FileField {
    /// Dotted path: the ArcQL path and where the value sits in the JSON and GraphQL shape.
    pub path: &'static str,
    /// Whether ArcQL may filter and sort on it.
    pub query: bool,
    /// Whether the REST view shows it.
    pub view: bool,
    /// How to read it.
    pub read: fn(&FileRecord) -> Cell,
}

fn opt_str(s: &Option<String>) -> Cell {
    s.clone().map_or(Cell::Null, Cell::Str)
}

fn opt_int(n: Option<u32>) -> Cell {
    n.map_or(Cell::Null, |n| Cell::Int(n.into()))
}

fn opt_bool(b: Option<bool>) -> Cell {
    b.map_or(Cell::Null, Cell::Bool)
}

/// Every field of a File, in Hypi's order.
#[rustfmt::skip]
pub const FILE_FIELDS: &[FileField] = &[
    FileField { path: "hypi.id", query: true, view: true, read: |f| Cell::Str(f.id.to_string()) },
    FileField { path: "hypi.created", query: true, view: true, read: |f| Cell::Str(rfc3339(f.created)) },
    FileField { path: "hypi.updated", query: true, view: true, read: |f| Cell::Str(rfc3339(f.updated)) },
    FileField { path: "hypi.createdBy", query: true, view: true, read: |f| Cell::Str(f.created_by.0.clone()) },
    FileField { path: "hypi.instanceId", query: true, view: true, read: |f| Cell::Str(f.instance.to_string()) },
    // The REST listings never show trashed files, so their views leave it out.
    FileField { path: "hypi.trashed", query: true, view: false, read: |f| f.trashed.map_or(Cell::Null, |t| Cell::Str(rfc3339(t))) },
    FileField { path: "name", query: true, view: true, read: |f| Cell::Str(f.name.clone()) },
    FileField { path: "directory", query: true, view: true, read: |f| Cell::Str(f.directory.clone()) },
    FileField { path: "path", query: true, view: true, read: |f| Cell::Str(f.path()) },
    FileField { path: "isDirectory", query: true, view: true, read: |f| Cell::Bool(f.is_directory()) },
    FileField { path: "status", query: true, view: true, read: |_| Cell::Str("UPLOADED".into()) },
    FileField { path: "url.path", query: true, view: true, read: |f| Cell::Str(f.url_path()) },
    FileField { path: "type", query: true, view: true, read: |f| Cell::Str(f.mime.clone()) },
    FileField { path: "size", query: true, view: true, read: |f| Cell::Int(f.size) },
    FileField { path: "extension", query: true, view: true, read: |f| opt_str(&f.extension) },
    FileField { path: "isStared", query: true, view: true, read: |f| opt_bool(f.is_stared) },
    FileField { path: "isSharable", query: true, view: true, read: |f| opt_bool(f.is_sharable) },
    // Filled where a view is made (`content` needs the blob: Service::text_content;
    // `children` needs paging arguments): null in the plain row.
    FileField { path: "content", query: true, view: true, read: |_| Cell::Null },
    FileField { path: "children", query: false, view: true, read: |_| Cell::Null },
    FileField { path: "sha256", query: true, view: true, read: |f| Cell::Str(f.sha256.to_hex()) },
    FileField { path: "width", query: true, view: true, read: |f| opt_int(f.width) },
    FileField { path: "height", query: true, view: true, read: |f| opt_int(f.height) },
];

/// The table entry for an ArcQL path of a File.
fn file_field(path: &str) -> Option<&'static FileField> {
    FILE_FIELDS.iter().find(|f| f.query && f.path == path)
}

/// The REST rendering of a File's fields: nested objects for dotted paths.
pub fn file_json(f: &FileRecord) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for field in FILE_FIELDS.iter().filter(|x| x.view) {
        let mut at = &mut out;
        let mut parts = field.path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                at.insert(part.to_string(), (field.read)(f).json());
                break;
            }
            let slot = at
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !slot.is_object() {
                *slot = serde_json::Value::Object(Default::default());
            }
            match slot {
                serde_json::Value::Object(m) => at = m,
                _ => break,
            }
        }
    }
    out
}

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
/// Hypi's metadata paths, on every record type.
const HYPI_PATHS: &[&str] = &[
    "hypi.id",
    "hypi.created",
    "hypi.updated",
    "hypi.createdBy",
    "hypi.instanceId",
    "hypi.trashed",
];

fn opt_field(s: &Option<String>) -> Option<Field> {
    s.as_ref().map(|s| Field::Str(s.clone()))
}

impl Record for FileRecord {
    fn field(&self, path: &str) -> Option<Field> {
        file_field(path).and_then(|f| (f.read)(self).arcql())
    }
}

impl Record for Node {
    fn field(&self, path: &str) -> Option<Field> {
        match self {
            Node::File(f) => f.field(path),
            Node::Image(i, f) => match path {
                "name" => Some(Field::Str(i.name.clone())),
                "description" => opt_field(&i.description),
                "width" => Some(Field::Num(f64::from(i.width))),
                "height" => Some(Field::Num(f64::from(i.height))),
                "file.hypi.id" => Some(Field::Str(f.id.to_string())),
                p => f.field(p).filter(|_| p.starts_with("hypi.")),
            },
            Node::AccessRight(r) => Some(Field::Str(match path {
                "resource" => r.resource.clone(),
                "resourceType" => r.resource_type.clone(),
                "fields" => return opt_field(&r.fields),
                "operationType" => r.operation_type.clone(),
                "operation" => r.operation.clone(),
                "startDate" => rfc3339(r.start_date?),
                "endDate" => rfc3339(r.end_date?),
                "permissionType" => format!("{:?}", r.permission_type),
                "approved" => return Some(Field::Bool(r.approved)),
                "hypi.id" => r.id.to_string(),
                "hypi.created" => rfc3339(r.created),
                "hypi.updated" => rfc3339(r.updated),
                "hypi.createdBy" => r.created_by.0.clone(),
                "hypi.instanceId" => r.instance.to_string(),
                _ => return None,
            })),
        }
    }
}

/// Parses ArcQL and checks every path it names exists on `kind`.
pub fn parse_query(kind: Kind, text: &str) -> Result<arcql::Query> {
    let q = arcql::parse(text).map_err(|e| Error::Query(e.message.clone(), e.position))?;
    let known = |p: &str| match kind {
        Kind::File => file_field(p).is_some(),
        Kind::Image => IMAGE_PATHS.contains(&p) || HYPI_PATHS.contains(&p),
        Kind::AccessRight => RIGHT_PATHS.contains(&p) || HYPI_PATHS.contains(&p),
    };
    if let Some(p) = q.paths().into_iter().find(|p| !known(p)) {
        return Err(Error::BadRequest(format!(
            "unknown field {p:?} for {kind:?}"
        )));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hypi_path_is_a_file_field() {
        for p in HYPI_PATHS {
            assert!(file_field(p).is_some(), "{p}");
        }
    }

    #[test]
    fn unknown_paths_are_refused_per_kind() {
        assert!(parse_query(Kind::File, "url.path = 'x'").is_ok());
        assert!(parse_query(Kind::File, "children = 'x'").is_err());
        assert!(parse_query(Kind::Image, "sha256 = 'x'").is_err());
        assert!(parse_query(Kind::AccessRight, "resource = 'x' AND hypi.id = 'y'").is_ok());
    }
}
