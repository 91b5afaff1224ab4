//! The one test harness. Every test file does `mod common; use common::*;` and finds here:
//!
//! - [`server`]: the real `depot` binary on an ephemeral port with a fresh temp data dir
//!   (`Server::start()`, `Server::start_with(&[("DEPOT_X", "v")])`, `Server::spawn(dir, ..)`),
//!   and the `depot` command line (`depot(args, data)`).
//! - [`tokens`]: tokens from `depot token`, and tokens signed here with the data dir's secret.
//! - [`upload`]: multipart forms and uploads through a client library.
//! - [`raw`]: requests written byte by byte, for input a client library would fix up.
//! - [`blobs`]: what the store left on disk (blob files, temp files, every path).
//! - [`seed`]: many metadata records written straight to a data dir, and query timings
//!   (the benchmarks).
//! - [`services`]: the S3 (and PostgreSQL) servers `scripts/services` starts; skip or fail without.
//! - [`proxy`]: a TCP proxy in front of one of them, cut on demand (an outage).
//!
//! Tests that need no process use the in-process tier instead (tests/inprocess.rs).
// Each test file uses a different part of the harness; the rest is unused there.
#![allow(dead_code, unused_imports)]

pub mod blobs;
pub mod ops;
pub mod pg;
pub mod proxy;
pub mod raw;
pub mod seed;
pub mod server;
pub mod services;
pub mod sessions;
pub mod tokens;
pub mod upload;

pub use blobs::*;
pub use ops::*;
pub use pg::*;
pub use proxy::*;
pub use raw::*;
pub use seed::*;
pub use server::*;
pub use services::*;
pub use sessions::*;
pub use tokens::*;
pub use upload::*;

pub use reqwest::blocking::Client;
pub use serde_json::Value;

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A 3x2 PNG.
pub fn png_3x2() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend_from_slice(&3u32.to_be_bytes());
    v.extend_from_slice(&2u32.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&[0u8; 64]);
    v
}

/// A path under tests/fixtures/.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether this process runs as root (mounting a small filesystem needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
