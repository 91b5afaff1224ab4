//! Graceful shutdown. On SIGTERM or SIGINT every server stops accepting connections and gives
//! the requests in flight (uploads) up to `shutdown_grace_secs` to finish; whatever is still
//! running then is dropped, which aborts its upload: the temp file is removed and no record is
//! written (metadata is written only for a committed blob). A second signal stops at once, with
//! the same clean abort.
//!
//! actix's own handling treats SIGINT as an immediate stop; depot treats both alike, so `^C` on
//! a terminal and `docker stop` behave the same.

use actix_web::dev::ServerHandle;

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
