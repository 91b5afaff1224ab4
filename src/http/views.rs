//! Records rendered in Hypi's JSON shapes.

use crate::error::Result;
use crate::meta::{AccessRight, FileRecord, ImageRecord, Instance, Page};
use crate::service::query::fields;
use crate::service::Service;
use crate::types::rfc3339;
use serde_json::{json, Value};
use std::sync::Arc;

/// A File as Hypi returns it, plus our `sha256`, `width` and `height`: every field of the one
/// File field table ([`crate::service::query::fields::FILE_FIELDS`]) the views show.
pub fn file(f: &FileRecord) -> Value {
    let mut v = fields::file_json(f);
    v.insert("__typename".into(), "File".into());
    Value::Object(v)
}

/// A File with its `content` filled as GraphQL fills it (the one rule,
/// [`crate::service::Service::text_content`]: text types up to `max_content_bytes`, else null).
pub async fn file_with_content(svc: &Arc<Service>, f: &FileRecord) -> Result<Value> {
    let mut v = file(f);
    v["content"] = content(svc, f).await?;
    Ok(v)
}

/// A File's `content` field (see [`file_with_content`]).
pub async fn content(svc: &Arc<Service>, f: &FileRecord) -> Result<Value> {
    Ok(svc
        .text_content(f)
        .await?
        .map_or(Value::Null, Value::String))
}

/// A File with its Image (for images) under `image`.
pub fn file_with_image(f: &FileRecord, img: Option<&ImageRecord>) -> Value {
    let mut v = file(f);
    v["image"] = img.map(|i| image(i, f)).unwrap_or(Value::Null);
    v
}

/// An Image as Hypi shapes it (its `file` is the File's id reference).
pub fn image(i: &ImageRecord, f: &FileRecord) -> Value {
    json!({
        "__typename": "Image",
        "name": i.name,
        "file": {"hypi": {"id": f.id.to_string()}},
        "description": i.description,
        "location": i.location,
        "width": i.width,
        "height": i.height,
    })
}

/// A page in the connection shape GraphQL clients know (`edges`, `pageInfo`), `content`
/// filled as for one File.
pub async fn file_page(svc: &Arc<Service>, page: &Page<FileRecord>) -> Result<Value> {
    let mut edges = Vec::with_capacity(page.items.len());
    for f in &page.items {
        edges.push(json!({"node": file_with_content(svc, f).await?, "cursor": f.id.to_string()}));
    }
    Ok(json!({
        "edges": edges,
        "pageInfo": {
            "hasNextPage": page.has_more,
            "endCursor": page.items.last().map(|f| f.id.to_string()),
        }
    }))
}

/// An AccessRight as Hypi shapes it.
pub fn access_right(r: &AccessRight) -> Value {
    json!({
        "__typename": "AccessRight",
        "hypi": {
            "id": r.id.to_string(),
            "created": rfc3339(r.created),
            "updated": rfc3339(r.updated),
            "createdBy": r.created_by.0,
            "instanceId": r.instance.to_string(),
        },
        "resource": r.resource,
        "resourceType": r.resource_type,
        "fields": r.fields,
        "operationType": r.operation_type,
        "operation": r.operation,
        "startDate": r.start_date.map(rfc3339),
        "endDate": r.end_date.map(rfc3339),
        "permissionType": r.permission_type,
        "approved": r.approved,
        "members": r.members.iter().map(|m| json!({"hypi": {"id": m}})).collect::<Vec<_>>(),
    })
}

/// An instance's public settings.
pub fn instance(i: &Instance) -> Value {
    json!({
        "id": i.id.to_string(),
        "domain": i.domain,
        "anonymousRequests": i.anonymous_requests,
        "created": rfc3339(i.created),
        "updated": rfc3339(i.updated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AccountId, FileId, InstanceId, Sha256};

    fn sample(ext: Option<&str>, dims: Option<u32>) -> FileRecord {
        FileRecord {
            id: FileId(ulid::Ulid::from_parts(1, 2)),
            instance: InstanceId(ulid::Ulid::from_parts(3, 4)),
            created_by: AccountId("alice".into()),
            created: 1_700_000_000_000,
            updated: 1_700_000_000_500,
            trashed: None,
            name: "cat.png".into(),
            directory: "/pets".into(),
            extension: ext.map(str::to_string),
            mime: "image/png".into(),
            size: 12_345,
            sha256: Sha256([7; 32]),
            width: dims,
            height: dims,
            is_stared: None,
            is_sharable: Some(true),
        }
    }

    /// The table-driven view renders exactly the shape the hand-written one did.
    #[test]
    fn file_view_keeps_hypis_shape() {
        for f in [sample(Some("png"), Some(640)), sample(None, None)] {
            let want = json!({
                "__typename": "File",
                "hypi": {
                    "id": f.id.to_string(),
                    "created": rfc3339(f.created),
                    "updated": rfc3339(f.updated),
                    "createdBy": f.created_by.0,
                    "instanceId": f.instance.to_string(),
                },
                "name": f.name,
                "directory": f.directory,
                "path": f.path(),
                "isDirectory": false,
                "status": "UPLOADED",
                "url": {"path": f.url_path()},
                "type": f.mime,
                "size": f.size,
                "extension": f.extension,
                "isStared": f.is_stared,
                "isSharable": f.is_sharable,
                "content": null,
                "children": null,
                "sha256": f.sha256.to_hex(),
                "width": f.width,
                "height": f.height,
            });
            assert_eq!(file(&f), want);
        }
    }
}
