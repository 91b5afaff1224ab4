//! Graceful shutdown. On SIGTERM or SIGINT every server stops accepting connections and gives
//! the requests in flight (uploads) up to `shutdown_grace_secs` to finish; whatever is still
//! running then is dropped, which aborts its upload: the temp file is removed and no record is
//! written (metadata is written only for a committed blob). A second signal stops at once, with
//! the same clean abort.
//!
//! actix's own handling treats SIGINT as an immediate stop; depot treats both alike, so `^C` on
//! a terminal and `docker stop` behave the same.

use crate::service::Service;
use actix_web::dev::ServerHandle;
use std::time::{Duration, Instant};

/// How long, after the servers stopped, aborted uploads get to remove their temp files.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// Waits for SIGTERM or SIGINT, then stops `servers` gracefully (their shutdown timeout is the
/// grace period); a second signal stops them at once. Runs on the server's runtime.
pub async fn on_signal(servers: Vec<ServerHandle>, grace_secs: u64) {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM/SIGINT: {e}");
            return;
        }
    };
    signals.next().await;
    tracing::info!(
        grace_secs,
        "shutting down: no new connections; requests in flight get the grace period"
    );
    for s in &servers {
        let s = s.clone();
        actix_web::rt::spawn(async move { s.stop(true).await });
    }
    signals.next().await;
    tracing::warn!("second signal: stopping now, aborting requests in flight");
    for s in &servers {
        s.stop(false).await;
    }
}

/// SIGTERM and SIGINT, listened to from start-up on (so none is missed between two waits).
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// After the servers stopped: the requests cut at the end of the grace period are dropped on
/// their worker threads, which remove their temp files as they go. Waits (bounded) for those
/// writes to end, then sweeps whatever is left, so the process never exits with a temp file.
pub fn finish(service: &Service) {
    let end = Instant::now() + CLEANUP_WAIT;
    while crate::store::metered::writes_in_flight() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = crate::store::metered::writes_in_flight();
    if left > 0 {
        tracing::warn!(
            left,
            "uploads still writing at exit; their temp files are swept"
        );
    }
    if let Some(m) = service.blobs.maintenance() {
        match m.sweep_temp() {
            Ok(0) => {}
            Ok(n) => tracing::info!(swept = n, "removed temp files of aborted uploads"),
            Err(e) => tracing::warn!(error = %e.chain(), "cannot sweep temp files at exit"),
        }
    }
}
