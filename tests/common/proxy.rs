//! A TCP proxy in front of a backing service (the S3 server), cut on demand: what a network
//! fault or a service outage looks like to depot.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP proxy in front of the S3 server that can be cut: after `budget` bytes from depot to the
/// server, or when `down` is set, every connection is closed and new ones are dropped.
pub struct Proxy {
    pub addr: String,
    pub down: Arc<AtomicBool>,
    pub budget: Arc<AtomicI64>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let (d, b) = (down.clone(), budget.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees a reset
                }
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (d1, d2, b1) = (d.clone(), d.clone(), b.clone());
                let (c2, u2) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || pipe(conn, up, &d1, Some(&b1)));
                std::thread::spawn(move || pipe(u2, c2, &d2, None));
            }
        });
        Proxy { addr, down, budget }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, down: &AtomicBool, budget: Option<&AtomicI64>) {
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
        if let Some(b) = budget {
            if b.fetch_sub(n as i64, Ordering::SeqCst) < n as i64 {
                down.store(true, Ordering::SeqCst);
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
