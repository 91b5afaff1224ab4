//! The metadata records, as persisted. The HTTP and GraphQL layers render them in Hypi's shapes.

use crate::types::{AccountId, FileId, InstanceId, Millis, RightId, Sha256};
use serde::{Deserialize, Serialize};

/// The media type that marks a directory record (freedesktop's name for a directory). Uploads
/// never carry it: types are sniffed from bytes and extensions, and none maps to it.
pub const DIRECTORY_MIME: &str = "inode/directory";

/// One uploaded file, or a directory (see [`FileRecord::is_directory`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: FileId,
    pub instance: InstanceId,
    pub created_by: AccountId,
    pub created: Millis,
    pub updated: Millis,
    #[serde(default)]
    pub trashed: Option<Millis>,
    /// The original file name, made safe (no path, no control characters).
    pub name: String,
    /// Virtual directory, `/` or `/a/b`.
    pub directory: String,
    /// Lower-case extension without the dot, when the name has a usable one.
    pub extension: Option<String>,
    /// Media type, sniffed from the bytes first.
    pub mime: String,
    pub size: u64,
    pub sha256: Sha256,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub is_stared: Option<bool>,
    #[serde(default)]
    pub is_sharable: Option<bool>,
}

impl FileRecord {
    /// The virtual path: directory joined with the name.
    pub fn path(&self) -> String {
        if self.directory == "/" {
            format!("/{}", self.name)
        } else {
            format!("{}/{}", self.directory, self.name)
        }
    }

    /// Whether this record is a directory of the virtual file system (see `service::dirs`).
    pub fn is_directory(&self) -> bool {
        self.mime == DIRECTORY_MIME
    }

    /// Whether this record is the root directory `/` of its instance.
    pub fn is_root(&self) -> bool {
        self.is_directory() && self.name.is_empty() && self.directory == "/"
    }

    /// The download path, `/file/<instanceId>-<fileId>.<ext>`.
    pub fn url_path(&self) -> String {
        match &self.extension {
            Some(ext) => format!("/file/{}-{}.{}", self.instance, self.id, ext),
            None => format!("/file/{}-{}", self.instance, self.id),
        }
    }
}

/// The Image record kept beside an image's File.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub file: FileId,
    pub name: String,
    pub description: Option<String>,
    pub location: Option<serde_json::Value>,
    pub width: u32,
    pub height: u32,
}

/// A tenant, addressed by its domain (`hypi-domain`), identified in paths by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub domain: String,
    /// Whether callers without a token may use anonymous grants.
    pub anonymous_requests: bool,
    pub created: Millis,
    pub updated: Millis,
}

/// Hypi's permission types: role-based or scope-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermissionType {
    RBP,
    SBP,
}

/// A grant in Hypi's AccessRight shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRight {
    pub id: RightId,
    pub instance: InstanceId,
    pub created_by: AccountId,
    pub created: Millis,
    pub updated: Millis,
    /// A File id, or `*` for every file of the grantor (the whole instance when an admin grants).
    pub resource: String,
    pub resource_type: String,
    pub fields: Option<String>,
    pub operation_type: String,
    pub operation: String,
    pub start_date: Option<Millis>,
    pub end_date: Option<Millis>,
    pub permission_type: PermissionType,
    pub approved: bool,
    /// Account ids; `anonymous` for callers without a token, `*` for every account.
    pub members: Vec<String>,
    /// Set when an admin granted it: then `resource: "*"` covers the whole instance.
    #[serde(default)]
    pub granted_by_admin: bool,
}
