//! The HTTP edge of the error catalogue: an [`Error`] becomes its status and the JSON body
//! `{"error":{"code":"...","message":"..."}}`. The table itself lives in `crate::error`.

use crate::error::Error;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let message = self.client_message();
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            Error::Unauthenticated(_) => {
                builder.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Error::RangeNotSatisfiable(_, len) => {
                builder.insert_header(("Content-Range", format!("bytes */{len}")));
            }
            _ => {}
        }
        builder.json(json!({"error": {"code": self.code(), "message": message}}))
    }
}
