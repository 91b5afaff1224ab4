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
            Error::OverQuota { allowance, .. } => {
                super::quota::allowance_headers(&mut builder, allowance);
            }
            _ => {}
        }
        let mut error = json!({"code": self.code(), "message": message});
        // Under the server's middleware every answer names its request (see request_id.rs).
        if let Some(id) = super::request_id::current() {
            error["requestId"] = id.into();
        }
        builder.json(json!({ "error": error }))
    }
}

/// Connection-level failures that are the client's doing (bad HTTP, resets, timeouts), which
/// actix-http logs at ERROR as `stream error: ...`. A client must not be able to fill the log
/// at ERROR: [`QuietClientErrors`] counts them instead, and [`report_client_errors`] sums them
/// up at WARN, at most once a minute.
pub mod client_errors {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};

    /// The dispatcher errors that a client causes; anything else stays at ERROR.
    const CLIENT_FAULTS: &[&str] = &[
        "stream error: request parse error",
        "stream error: I/O error",
        "stream error: request did not complete within",
        "stream error: connection shutdown timeout",
        "stream error: handler dropped payload",
    ];

    static COUNT: AtomicU64 = AtomicU64::new(0);
    static SAMPLE: Mutex<String> = Mutex::new(String::new());

    /// A layer that drops actix-http's client-fault errors from the log and counts them.
    pub struct QuietClientErrors;

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S: Subscriber> Layer<S> for QuietClientErrors {
        fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
            let meta = event.metadata();
            if *meta.level() != Level::ERROR || !meta.target().starts_with("actix_http::") {
                return true;
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            if !CLIENT_FAULTS.iter().any(|p| message.0.starts_with(p)) {
                return true;
            }
            COUNT.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut sample) = SAMPLE.lock() {
                *sample = message.0;
            }
            false
        }
    }

    /// Starts a thread that logs, at WARN, how many client-fault errors were dropped: the first
    /// within a second, then at most once per `period`.
    pub fn report_client_errors(period: Duration) {
        let spawned = std::thread::Builder::new()
            .name("client-errors".into())
            .spawn(move || {
                let mut reported = 0;
                let mut last: Option<Instant> = None;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let count = COUNT.load(Ordering::Relaxed);
                    if count == reported || last.is_some_and(|t| t.elapsed() < period) {
                        continue;
                    }
                    let sample = SAMPLE.lock().map(|s| s.clone()).unwrap_or_default();
                    tracing::warn!(
                        count = count - reported,
                        last = %sample,
                        "connections dropped for the client's fault (malformed HTTP, resets, timeouts)"
                    );
                    reported = count;
                    last = Some(Instant::now());
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the client error reporter: {e}");
        }
    }
}
