//! A TCP proxy in front of a backing service (the S3 server), cut on demand: what a network
//! fault or a service outage looks like to depot. It can also hold S3 copy requests
//! (`CopyObject`, a blob commit of a large upload) for as long as a test wants.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP proxy in front of the S3 server that can be cut: after `budget` bytes from depot to the
/// server, or when `down` is set, every connection is closed and new ones are dropped.
pub struct Proxy {
    pub addr: String,
    pub down: Arc<AtomicBool>,
    pub budget: Arc<AtomicI64>,
    /// While set, a request carrying `x-amz-copy-source` waits before it is passed on.
    pub hold_copies: Arc<AtomicBool>,
    /// Copy requests that have been held so far.
    pub held: Arc<AtomicUsize>,
}

/// What the depot-to-server direction of a connection checks.
struct Upstream {
    down: Arc<AtomicBool>,
    budget: Arc<AtomicI64>,
    hold_copies: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let proxy = Proxy {
            addr,
            down: Arc::new(AtomicBool::new(false)),
            budget: Arc::new(AtomicI64::new(i64::MAX)),
            hold_copies: Arc::new(AtomicBool::new(false)),
            held: Arc::new(AtomicUsize::new(0)),
        };
        let up_side = Arc::new(Upstream {
            down: proxy.down.clone(),
            budget: proxy.budget.clone(),
            hold_copies: proxy.hold_copies.clone(),
            held: proxy.held.clone(),
        });
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                if up_side.down.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees a reset
                }
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (u1, d2) = (up_side.clone(), up_side.down.clone());
                let (c2, u2) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || pipe(conn, up, &u1.down, Some(&u1)));
                std::thread::spawn(move || pipe(u2, c2, &d2, None));
            }
        });
        proxy
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, down: &AtomicBool, upstream: Option<&Upstream>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if down.load(Ordering::SeqCst) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => break,
        };
        if let Some(u) = upstream {
            if u.budget.fetch_sub(n as i64, Ordering::SeqCst) < n as i64 {
                down.store(true, Ordering::SeqCst);
                break;
            }
            if u.hold_copies.load(Ordering::SeqCst)
                && buf[..n]
                    .windows(17)
                    .any(|w| w.eq_ignore_ascii_case(b"x-amz-copy-source"))
            {
                u.held.fetch_add(1, Ordering::SeqCst);
                while u.hold_copies.load(Ordering::SeqCst) && !down.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
