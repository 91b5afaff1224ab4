//! The one error type of the service and its mapping onto HTTP answers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Every failure a request can end in. Each variant maps to one status and one stable `code`
/// that clients (and the GraphQL layer) can match on.
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
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The machine-readable code sent in `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::Query(..) => "BAD_REQUEST",
            Error::InvalidPath(_) => "INVALID_PATH",
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Conflict(_) => "CONFLICT",
            Error::FileTooLarge(_) => "FILE_TOO_LARGE",
            Error::RangeNotSatisfiable(..) => "RANGE_NOT_SATISFIABLE",
            Error::InsufficientStorage(_) => "INSUFFICIENT_STORAGE",
            Error::Timeout(_) => "REQUEST_TIMEOUT",
            Error::TooManyRequests(_) => "TOO_MANY_REQUESTS",
            Error::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Error::ContentMissing(_) => "CONTENT_MISSING",
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// The answer every caller gets for a file that is missing or that it may not see.
    pub fn not_found() -> Self {
        Error::NotFound("no such file".into())
    }

    /// Classifies an I/O failure: a full disk is the client's 507, anything else is ours.
    pub fn from_io(context: &str, e: std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122) mean the store is full, not that we are broken.
        match e.raw_os_error() {
            Some(28) | Some(122) => {
                Error::InsufficientStorage("not enough storage for this upload".into())
            }
            _ => Error::Internal(format!("{context}: {e}")),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => Error::from_io("metadata store", io),
            other => Error::Internal(format!("metadata store: {other}")),
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
        Error::Internal(format!("corrupt metadata record: {e}"))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::InvalidPath(_) | Error::Query(..) => {
                StatusCode::BAD_REQUEST
            }
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::FileTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RangeNotSatisfiable(..) => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ContentMissing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Error::Internal(detail) = self {
            // Internals go to the log, not to the client.
            tracing::error!(%detail, "internal error");
        }
        let message = match self {
            Error::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut builder = HttpResponse::build(self.status_code());
        if let Error::Unauthenticated(_) = self {
            builder.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Error::RangeNotSatisfiable(_, len) = self {
            builder.insert_header(("Content-Range", format!("bytes */{len}")));
        }
        builder.json(json!({"error": {"code": self.code(), "message": message}}))
    }
}
