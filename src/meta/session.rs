//! Upload sessions: one persisted record per capability handed out in a URL (a presigned PUT,
//! a temp file, a signed download link). Later flows (Hygraph's presigned POST, remote URL
//! ingest, multipart parts) are further [`SessionKind`]s over the same record and store.

use crate::types::{AccountId, FileId, InstanceId, Millis, SessionId, Sha256};
use serde::{Deserialize, Serialize};

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionKind {
    /// Foir: `createFileUpload`, one `PUT uploadUrl`, `confirmFileUpload` makes the File.
    PresignedPut,
    /// Amplience: `createTempFileUploadUrl`, one PUT; the bytes are served at `downloadUrl`
    /// until the session expires, then removed.
    TempFile,
    /// A signed download link to one existing File (`session.file`).
    DownloadLink,
    /// Hygraph: `createAsset(data: {fileName})`, one presigned POST form; the asset's File
    /// (`session.file`, chosen up front: the asset id) is made when the bytes arrive.
    AssetPost,
    /// Hygraph: `createAsset(data: {uploadUrl})`, fetched by a background task (the URL is in
    /// `metadata.uploadUrl`); resumed after a restart.
    RemoteIngest,
    /// Amplience: `createTempFileMultipartUploadUrl`, parts PUT one by one (S3 semantics) into
    /// the part store, assembled by the complete request; then served like a temp file.
    MultipartTempFile,
    /// tus 1.0 (`/tus/`): bytes arrive over many PATCHes, each stored as a numbered part in the
    /// [`crate::store::PartStore`] under the session's id; the offset is what the parts hold.
    /// Once all bytes are there they are assembled and the session made a File (or, for a
    /// partial upload of the concatenation extension, kept `Uploaded` for a final upload).
    Tus,
}

impl SessionKind {
    /// One byte naming the kind in index keys (per-kind counters).
    pub fn tag(self) -> u8 {
        match self {
            SessionKind::PresignedPut => b'p',
            SessionKind::TempFile => b't',
            SessionKind::DownloadLink => b'l',
            SessionKind::AssetPost => b'a',
            SessionKind::RemoteIngest => b'r',
            SessionKind::MultipartTempFile => b'm',
            SessionKind::Tus => b'u',
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Created; no bytes yet (links stay here).
    Open,
    /// The bytes are stored (`bytes`); the session holds one reference on their blob.
    Uploaded,
    /// A File was made (`file`); the blob reference went to it.
    Confirmed,
}

/// Bytes a session received, durable in the blob store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBytes {
    pub sha: Sha256,
    pub size: u64,
    /// Media type: sniffed, else the declared one.
    pub mime: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The parts the bytes were assembled from, when they came in parts (a multipart temp
    /// file): a repeated complete request is compared against them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<CompletedParts>,
}

/// What identifies the parts a multipart upload was completed with: S3's composite digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedParts {
    /// How many parts.
    pub count: u32,
    /// Hex MD5 of the parts' MD5s concatenated: S3's multipart ETag (without `-count`).
    pub md5_of_md5s: String,
    /// Hex SHA-256 of the parts' SHA-256s concatenated: S3's composite checksum.
    pub sha_of_shas: String,
}

/// One upload session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: SessionId,
    pub instance: InstanceId,
    pub account: AccountId,
    pub kind: SessionKind,
    /// The declared file name, sanitised.
    pub name: String,
    /// The declared media type, normalised (lower case, no parameters).
    pub mime: Option<String>,
    /// The declared size in bytes, when the flow declares one.
    pub size: Option<u64>,
    /// Most bytes the upload may have.
    pub max_size: u64,
    /// The File's directory, `/` or `/a/b`.
    pub directory: String,
    /// Caller's metadata (Foir's `metadata`), kept on the File.
    pub metadata: Option<serde_json::Value>,
    pub state: SessionState,
    pub created: Millis,
    pub expires: Millis,
    /// Set once `Uploaded`.
    pub bytes: Option<StoredBytes>,
    /// `Confirmed`: the File made; `DownloadLink`: the File served.
    pub file: Option<FileId>,
    /// Why the last upload to this session failed (Hygraph's `upload.error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl UploadSession {
    /// Whether the session's capability has run out at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        now >= self.expires
    }

    /// Whether it counts against the account's open sessions (a confirmed one no longer does).
    pub fn counts_as_open(&self) -> bool {
        self.state != SessionState::Confirmed
    }
}

/// What Foir's File has beyond Hypi's: kept beside the File record, removed with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileExtras {
    pub blurhash: Option<String>,
    pub alt: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// The answer when a session's declared size is set a second time, to another value.
pub(crate) fn size_conflict(have: u64) -> crate::error::Error {
    crate::error::Error::Conflict(format!("the upload's length is set already ({have} bytes)"))
}
