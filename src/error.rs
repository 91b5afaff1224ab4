//! The one error catalogue of the service: every failure a request can end in, with its stable
//! code and status in one table ([`Error::class`]). The core knows nothing of HTTP beyond the
//! status number; `http/error.rs` turns an [`Error`] into an HTTP answer and GraphQL into a
//! GraphQL error, both through [`Error::client_message`], which hides internal details and logs
//! them (with their causes) once.
//!
//! Start-up and command failures are not request errors: they are [`StartError`], printed by
//! `depot` with a non-zero exit, never an HTTP code.

use std::error::Error as StdError;
use std::path::PathBuf;

/// A cause kept for the log.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Every failure a request can end in. Each variant maps to one [`Class`] (status and stable
/// `code`) that clients (and the GraphQL layer) can match on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidPath(String),
    /// A query that does not parse, with the byte offset where it went wrong.
    #[error("{0}")]
    Query(String, usize),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    FileTooLarge(String),
    #[error("{0}")]
    RangeNotSatisfiable(String, u64),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    Timeout(String),
    /// A limit on concurrent work or stored counts was reached (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// A request body larger than the route accepts (413, not a file size).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A file record whose bytes are missing or quarantined: the operator's problem, not the
    /// caller's; the file id is logged.
    #[error("{0}")]
    ContentMissing(String),
    /// The object store (S3) failed or did not answer; the cause is kept for the log.
    #[error("object storage is unavailable; try again later")]
    StorageUnavailable(#[source] BoxError),
    /// Upload sessions and signed URLs (presigned PUT, temp files, download links).
    #[error("{1}")]
    Session(SessionFault, String),
    /// A multipart upload's part or complete request broke one of S3's rules; answered with
    /// S3's error name on the multipart routes.
    #[error("{1}")]
    S3(S3Fault, String),
    /// A move, trash or delete of a directory whose subtree is larger than a non-admin may
    /// change in one call (`max_tree_entries`): 422.
    #[error("{0}")]
    TreeTooLarge(String),
    /// A webhook whose URL, events or secret are not acceptable: 400 `INVALID_WEBHOOK`.
    #[error("{0}")]
    InvalidWebhook(String),
    /// An image transform (`GET /file/...?w=320&format=webp`) that cannot be made; each fault
    /// has its own code.
    #[error("{1}")]
    Transform(TransformFault, String),
    /// An upload over a quota (see `service::quota`): 413 `FILE_TOO_LARGE` when the upload can
    /// never fit (larger than the limit itself), else 429 `QUOTA_EXCEEDED`. Carries what is
    /// left, for the `RateLimit-*` headers.
    #[error("{message}")]
    OverQuota {
        message: String,
        never_fits: bool,
        allowance: Allowance,
    },
    /// The service cannot take work now (a readiness check failed): 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An internal failure whose cause (I/O, sled, serde, a task) is kept for the log.
    #[error("{context}")]
    Failed {
        context: String,
        #[source]
        source: BoxError,
    },
}

/// What an account's quotas leave, one entry per limit that applies (the one that refused an
/// upload first), sent as the IETF RateLimit draft's `RateLimit-Policy` and `RateLimit`
/// headers (see `http::quota`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowance(pub Vec<Remaining>);

/// One limit and what is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    /// The policy's name: `account-bytes`, `account-files`, `account-upload-day`, and the
    /// same with `instance-`.
    pub policy: &'static str,
    /// The limit (bytes, or files).
    pub limit: u64,
    /// What is left of it.
    pub remaining: u64,
    /// For a daily limit: seconds until the UTC day ends and the limit starts over.
    pub reset_secs: Option<u64>,
}

/// Why a signed URL or an upload session refused a request; each has its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFault {
    /// The URL's signature does not verify (tampered, or made with a retired key).
    BadSignature,
    /// The URL or session ran out.
    Expired,
    /// Confirmed before its bytes arrived.
    Incomplete,
    /// The body's length differs from the declared size.
    LengthMismatch,
    /// The request's Content-Type differs from the declared type.
    TypeMismatch,
    /// The bytes are not of the declared type.
    ContentMismatch,
    /// A presigned POST form's fields differ from its signed policy (Hygraph's `key`, ...).
    PolicyMismatch,
    /// tus: a PATCH's `Upload-Offset` is not where the upload stands (409).
    OffsetMismatch,
    /// tus: the body does not match its `Upload-Checksum` (460, tus's own status).
    ChecksumMismatch,
    /// tus: no `Tus-Resumable: 1.0.0` on the request (412).
    ProtocolVersion,
    /// tus: a PATCH whose Content-Type is not `application/offset+octet-stream` (415).
    MediaType,
}

/// S3's multipart errors (Amplience's multipart temp files speak S3): each keeps S3's name and
/// status, so S3 clients and SDKs recognise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Fault {
    /// A listed part was not uploaded, or its ETag/checksum is not the stored part's.
    InvalidPart,
    /// The listed part numbers are not in ascending order.
    InvalidPartOrder,
    /// A part other than the last is smaller than the minimum part size.
    EntityTooSmall,
    /// A part is larger than the maximum part size, or the parts exceed the declared size.
    EntityTooLarge,
    /// The parts listed add up to less than the declared file size.
    IncompleteBody,
    /// No such upload (unknown, expired, or already completed with other parts).
    NoSuchUpload,
    /// The complete request's body is not the expected XML (or is too large).
    MalformedXml,
    /// A part number outside the upload's parts, or another malformed argument.
    InvalidArgument,
}

impl S3Fault {
    /// S3's error code, as sent in `<Error><Code>`.
    pub fn name(self) -> &'static str {
        match self {
            S3Fault::InvalidPart => "InvalidPart",
            S3Fault::InvalidPartOrder => "InvalidPartOrder",
            S3Fault::EntityTooSmall => "EntityTooSmall",
            S3Fault::EntityTooLarge => "EntityTooLarge",
            S3Fault::IncompleteBody => "IncompleteBody",
            S3Fault::NoSuchUpload => "NoSuchUpload",
            S3Fault::MalformedXml => "MalformedXML",
            S3Fault::InvalidArgument => "InvalidArgument",
        }
    }
}

/// Why an image transform was refused; each has its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformFault {
    /// A parameter that does not parse or is out of range (unknown fit, `w=0`, `q=101`).
    InvalidParameter,
    /// A width, height or quality outside the configured lists (`[transforms] widths`,
    /// `heights`, `qualities`): each allowed value is a variant that may be stored.
    SizeNotAllowed,
    /// An output format not allowed (or not built in, as AVIF).
    FormatNotAllowed,
    /// The file is not a raster image this server decodes (text, SVG and other active content,
    /// TIFF...).
    NotAnImage,
    /// The image (or the result asked for) is over the size caps: a decode bomb, or too big.
    ImageTooLarge,
    /// The bytes do not decode as the image type they were stored as.
    Undecodable,
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a kind of failure is to a client: the HTTP status (a plain number: the core does not
/// depend on an HTTP library), the stable `code`, and whether the message may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub status: u16,
    pub code: &'static str,
    /// False for our own failures: the client gets "internal error", the log gets the rest.
    pub public: bool,
}

const fn class(status: u16, code: &'static str) -> Class {
    Class {
        status,
        code,
        public: true,
    }
}

/// The catalogue. Codes are part of the API: never change one, add a new one.
pub const BAD_REQUEST: Class = class(400, "BAD_REQUEST");
pub const INVALID_PATH: Class = class(400, "INVALID_PATH");
pub const UNAUTHENTICATED: Class = class(401, "UNAUTHENTICATED");
pub const FORBIDDEN: Class = class(403, "FORBIDDEN");
pub const NOT_FOUND: Class = class(404, "NOT_FOUND");
pub const METHOD_NOT_ALLOWED: Class = class(405, "METHOD_NOT_ALLOWED");
pub const REQUEST_TIMEOUT: Class = class(408, "REQUEST_TIMEOUT");
pub const CONFLICT: Class = class(409, "CONFLICT");
pub const FILE_TOO_LARGE: Class = class(413, "FILE_TOO_LARGE");
pub const PAYLOAD_TOO_LARGE: Class = class(413, "PAYLOAD_TOO_LARGE");
pub const RANGE_NOT_SATISFIABLE: Class = class(416, "RANGE_NOT_SATISFIABLE");
pub const TOO_MANY_REQUESTS: Class = class(429, "TOO_MANY_REQUESTS");
/// An account's or instance's quota (bytes, files, upload bytes today) has no room left.
pub const QUOTA_EXCEEDED: Class = class(429, "QUOTA_EXCEEDED");
/// A record without its bytes: the message (which names no internals) is shown, so a client
/// can report it; the operator finds the file id in the log.
pub const CONTENT_MISSING: Class = class(500, "CONTENT_MISSING");
pub const INTERNAL: Class = Class {
    status: 500,
    code: "INTERNAL",
    public: false,
};
pub const INSUFFICIENT_STORAGE: Class = class(507, "INSUFFICIENT_STORAGE");
/// The object store failed or is unreachable: retrying later may work.
pub const STORAGE_UNAVAILABLE: Class = class(503, "STORAGE_UNAVAILABLE");
pub const INVALID_SIGNATURE: Class = class(403, "INVALID_SIGNATURE");
pub const EXPIRED: Class = class(410, "EXPIRED");
pub const UPLOAD_INCOMPLETE: Class = class(409, "UPLOAD_INCOMPLETE");
pub const LENGTH_MISMATCH: Class = class(400, "LENGTH_MISMATCH");
pub const CONTENT_TYPE_MISMATCH: Class = class(400, "CONTENT_TYPE_MISMATCH");
pub const CONTENT_MISMATCH: Class = class(400, "CONTENT_MISMATCH");
pub const POLICY_MISMATCH: Class = class(403, "POLICY_MISMATCH");
pub const OFFSET_MISMATCH: Class = class(409, "OFFSET_MISMATCH");
pub const CHECKSUM_MISMATCH: Class = class(460, "CHECKSUM_MISMATCH");
pub const UNSUPPORTED_VERSION: Class = class(412, "UNSUPPORTED_VERSION");
pub const UNSUPPORTED_MEDIA_TYPE: Class = class(415, "UNSUPPORTED_MEDIA_TYPE");
pub const UNAVAILABLE: Class = class(503, "UNAVAILABLE");
pub const TREE_TOO_LARGE: Class = class(422, "TREE_TOO_LARGE");
pub const INVALID_WEBHOOK: Class = class(400, "INVALID_WEBHOOK");
// S3's multipart errors, under the catalogue's spelling (the multipart routes answer S3's).
pub const INVALID_PART: Class = class(400, "INVALID_PART");
pub const INVALID_PART_ORDER: Class = class(400, "INVALID_PART_ORDER");
pub const ENTITY_TOO_SMALL: Class = class(400, "ENTITY_TOO_SMALL");
pub const ENTITY_TOO_LARGE: Class = class(400, "ENTITY_TOO_LARGE");
pub const INCOMPLETE_BODY: Class = class(400, "INCOMPLETE_BODY");
pub const NO_SUCH_UPLOAD: Class = class(404, "NO_SUCH_UPLOAD");
pub const MALFORMED_XML: Class = class(400, "MALFORMED_XML");
pub const INVALID_ARGUMENT: Class = class(400, "INVALID_ARGUMENT");
pub const INVALID_TRANSFORM: Class = class(400, "INVALID_TRANSFORM");
pub const SIZE_NOT_ALLOWED: Class = class(400, "SIZE_NOT_ALLOWED");
pub const FORMAT_NOT_ALLOWED: Class = class(400, "FORMAT_NOT_ALLOWED");
pub const NOT_AN_IMAGE: Class = class(400, "NOT_AN_IMAGE");
pub const IMAGE_TOO_LARGE: Class = class(422, "IMAGE_TOO_LARGE");
pub const UNDECODABLE_IMAGE: Class = class(422, "UNDECODABLE_IMAGE");

impl Error {
    /// The one table from variant to status and code.
    pub fn class(&self) -> Class {
        match self {
            Error::BadRequest(_) | Error::Query(..) => BAD_REQUEST,
            Error::InvalidPath(_) => INVALID_PATH,
            Error::Unauthenticated(_) => UNAUTHENTICATED,
            Error::Forbidden(_) => FORBIDDEN,
            Error::NotFound(_) => NOT_FOUND,
            Error::MethodNotAllowed(_) => METHOD_NOT_ALLOWED,
            Error::Conflict(_) => CONFLICT,
            Error::FileTooLarge(_) => FILE_TOO_LARGE,
            Error::RangeNotSatisfiable(..) => RANGE_NOT_SATISFIABLE,
            Error::InsufficientStorage(_) => INSUFFICIENT_STORAGE,
            Error::Timeout(_) => REQUEST_TIMEOUT,
            Error::TooManyRequests(_) => TOO_MANY_REQUESTS,
            Error::PayloadTooLarge(_) => PAYLOAD_TOO_LARGE,
            Error::ContentMissing(_) => CONTENT_MISSING,
            Error::StorageUnavailable(_) => STORAGE_UNAVAILABLE,
            Error::Session(f, _) => match f {
                SessionFault::BadSignature => INVALID_SIGNATURE,
                SessionFault::Expired => EXPIRED,
                SessionFault::Incomplete => UPLOAD_INCOMPLETE,
                SessionFault::LengthMismatch => LENGTH_MISMATCH,
                SessionFault::TypeMismatch => CONTENT_TYPE_MISMATCH,
                SessionFault::ContentMismatch => CONTENT_MISMATCH,
                SessionFault::PolicyMismatch => POLICY_MISMATCH,
                SessionFault::OffsetMismatch => OFFSET_MISMATCH,
                SessionFault::ChecksumMismatch => CHECKSUM_MISMATCH,
                SessionFault::ProtocolVersion => UNSUPPORTED_VERSION,
                SessionFault::MediaType => UNSUPPORTED_MEDIA_TYPE,
            },
            Error::S3(f, _) => match f {
                S3Fault::InvalidPart => INVALID_PART,
                S3Fault::InvalidPartOrder => INVALID_PART_ORDER,
                S3Fault::EntityTooSmall => ENTITY_TOO_SMALL,
                S3Fault::EntityTooLarge => ENTITY_TOO_LARGE,
                S3Fault::IncompleteBody => INCOMPLETE_BODY,
                S3Fault::NoSuchUpload => NO_SUCH_UPLOAD,
                S3Fault::MalformedXml => MALFORMED_XML,
                S3Fault::InvalidArgument => INVALID_ARGUMENT,
            },
            Error::OverQuota { never_fits, .. } => {
                if *never_fits {
                    FILE_TOO_LARGE
                } else {
                    QUOTA_EXCEEDED
                }
            }
            Error::Unavailable(_) => UNAVAILABLE,
            Error::TreeTooLarge(_) => TREE_TOO_LARGE,
            Error::InvalidWebhook(_) => INVALID_WEBHOOK,
            Error::Transform(f, _) => match f {
                TransformFault::InvalidParameter => INVALID_TRANSFORM,
                TransformFault::SizeNotAllowed => SIZE_NOT_ALLOWED,
                TransformFault::FormatNotAllowed => FORMAT_NOT_ALLOWED,
                TransformFault::NotAnImage => NOT_AN_IMAGE,
                TransformFault::ImageTooLarge => IMAGE_TOO_LARGE,
                TransformFault::Undecodable => UNDECODABLE_IMAGE,
            },
            Error::Internal(_) | Error::Failed { .. } => INTERNAL,
        }
    }

    /// The machine-readable code sent in `error.code`.
    pub fn code(&self) -> &'static str {
        self.class().code
    }

    /// The status number an HTTP edge answers with.
    pub fn status(&self) -> u16 {
        self.class().status
    }

    /// The message a client may see. Internal failures are logged here, with their whole
    /// cause chain, and answered with a fixed text. Both edges (HTTP and GraphQL) call this
    /// exactly once per failed request, so each failure is logged once.
    pub fn client_message(&self) -> String {
        let class = self.class();
        if class.status >= 500 {
            // Ours (or the operator's) to fix: the log gets everything.
            tracing::error!(code = class.code, error = %self.chain(), "request failed");
        }
        if class.public {
            self.to_string()
        } else {
            "internal error".to_string()
        }
    }

    /// This error and its causes, `: `-separated, for the log.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = self.source();
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }

    /// The answer every caller gets for a file that is missing or that it may not see.
    pub fn not_found() -> Self {
        Error::NotFound("no such file".into())
    }

    /// The answer for a known path asked with a method it does not serve.
    pub fn method_not_allowed() -> Self {
        Error::MethodNotAllowed("method not allowed on this path".into())
    }

    /// An internal failure with its cause kept (for the log, never for the client).
    pub fn failed(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Failed {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Classifies an I/O failure: a full disk is the client's 507, anything else is ours.
    pub fn from_io(context: &str, e: std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122) mean the store is full, not that we are broken.
        match e.raw_os_error() {
            Some(28) | Some(122) => {
                Error::InsufficientStorage("not enough storage for this upload".into())
            }
            _ => Error::failed(context, e),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        metrics::counter!("depot_metadata_errors_total").increment(1);
        match e {
            sled::Error::Io(io) => Error::from_io("metadata store", io),
            other => Error::failed("metadata store", other),
        }
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::failed("corrupt metadata record", e)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::failed("background task failed", e)
    }
}

/// Why `depot` could not start (or an offline command could not run): printed with its causes
/// and a non-zero exit by the `depot` command. Never an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value that is missing, malformed or out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot read config {}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {}", path.display())]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir {} is in use by another depot process{hint}", path.display())]
    DataDirBusy { path: PathBuf, hint: &'static str },
    #[error("cannot use data dir {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A signing secret or public key that cannot be read or parsed.
    #[error("{what} {}", path.display())]
    Key {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    /// A `depot token` request that would issue a token the server must refuse.
    #[error("{0}")]
    Token(String),
    /// The HTTP server stopped with an error.
    #[error("server failed")]
    Server(#[source] std::io::Error),
    /// Opening the stores, or an offline command, failed.
    #[error(transparent)]
    Service(#[from] Error),
}

/// Why `depot upload` / `depot download` failed: one line for the user (server errors show the
/// server's own code and message) and an exit code per kind ([`ClientError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A command line that cannot work (a bad URL, a missing option).
    #[error("{0}")]
    Usage(String),
    /// A local file that cannot be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {message}")]
    Network { url: String, message: String },
    /// The server answered an error (its JSON `error.code` and `error.message` when it sent
    /// them).
    #[error("{status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer that does not follow the protocol (a missing header, a wrong offset).
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Bytes that arrived do not match what the server said they are (length or SHA-256).
    #[error("{0}")]
    Mismatch(String),
}

impl ClientError {
    /// A `map_err` for an I/O failure on `path` ("cannot read", "cannot write", ...).
    pub fn io<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ClientError + 'a {
        move |source| ClientError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The process exit code: 2 usage, 3 unreachable, 4 not authorised (401/403), 5 not found
    /// (404/410), 6 too large (413), 7 rate limited (429), 8 a verification failure, 1 any
    /// other failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Network { .. } => 3,
            Self::Server { status, .. } => match status {
                401 | 403 => 4,
                404 | 410 => 5,
                413 => 6,
                429 => 7,
                _ => 1,
            },
            Self::Mismatch(_) => 8,
            Self::Io { .. } | Self::Protocol(_) => 1,
        }
    }
}

impl StartError {
    /// This error and its causes, `: `-separated, as `depot` prints it.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = self.source();
        // `transparent` shows the inner error's text already: skip its duplicate.
        if let StartError::Service(inner) = self {
            next = inner.source();
        }
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_out_of_the_message_and_causes_are_kept() {
        let e = Error::from_io("reading blob", std::io::Error::other("disk on fire"));
        assert_eq!(e.class(), INTERNAL);
        assert_eq!(e.client_message(), "internal error");
        assert_eq!(e.chain(), "reading blob: disk on fire");
        let full = Error::from_io("x", std::io::Error::from_raw_os_error(28));
        assert_eq!(full.status(), 507);
        assert_eq!(
            Error::Internal("x".into()).client_message(),
            "internal error"
        );
        assert_eq!(Error::not_found().client_message(), "no such file");
        assert_eq!(Error::method_not_allowed().status(), 405);
        assert_eq!(
            Error::ContentMissing("gone".into()).client_message(),
            "gone"
        );
    }

    #[test]
    fn start_errors_print_their_causes_once() {
        let e = StartError::Bind {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(e.chain().starts_with("cannot listen on 127.0.0.1:1: "));
        let e = StartError::from(Error::failed(
            "opening metadata",
            std::io::Error::other("locked"),
        ));
        assert_eq!(e.chain(), "opening metadata: locked");
    }
}
