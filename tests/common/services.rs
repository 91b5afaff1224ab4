//! The real backing services `scripts/services start` runs (moto_server for S3, PostgreSQL),
//! found through its env lines. A test that needs one and finds it unset prints `SKIPPED: ...`
//! to stderr and returns, unless `DEPOT_REQUIRE_SERVICES=1` (set by `.ci/run`): then it fails.

use super::server::client;
use std::sync::atomic::{AtomicU32, Ordering};

/// An S3-wire server and a fresh, empty bucket on it for one test.
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
}

/// The services' S3 endpoint with a new bucket, or `None` (after saying so) when not running.
pub fn s3_or_skip(test: &str) -> Option<S3Env> {
    let endpoint = match std::env::var("DEPOT_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => {
            let msg = format!(
                "{test}: DEPOT_TEST_S3_ENDPOINT is unset (start the services: eval \"$(scripts/services start)\")"
            );
            if std::env::var("DEPOT_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("DEPOT_REQUIRE_SERVICES=1 but {msg}");
            }
            // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
            return None;
        }
    };
    let bucket = new_bucket(&endpoint);
    Some(S3Env { endpoint, bucket })
}

/// Creates a bucket no other test uses (moto accepts unsigned requests).
pub fn new_bucket(endpoint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "depot-t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let r = client()
        .put(format!("{endpoint}/{name}"))
        .send()
        .expect("create bucket");
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    name
}

/// A secret the tests check never shows in a log.
pub const S3_SECRET: &str = "s3-secret-never-logged-7f3a";

impl S3Env {
    /// `DEPOT_STORE_*` variables for a server on this bucket, through `endpoint` (the S3 server
    /// itself, or a proxy in front of it).
    pub fn server_env_via(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("DEPOT_STORE_KIND", "s3"),
            ("DEPOT_STORE_BUCKET", self.bucket.as_str()),
            ("DEPOT_STORE_ENDPOINT", endpoint),
            ("DEPOT_STORE_REGION", "us-east-1"),
            ("DEPOT_STORE_ACCESS_KEY_ID", "depot-test"),
            ("DEPOT_STORE_SECRET_ACCESS_KEY", S3_SECRET),
            ("DEPOT_STORE_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn server_env(&self) -> Vec<(String, String)> {
        self.server_env_via(&self.endpoint)
    }

    /// The same settings as a `[store]` table, for opening the store in the test process.
    pub fn store_config(&self) -> depot::config::StoreConfig {
        let mut cfg = depot::config::Config::default();
        let env = self.server_env();
        cfg.apply_env(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect("store env");
        cfg.store
    }

    /// The bucket through our own S3 store (to look at what a server left there).
    pub fn store(&self) -> depot::store::S3Store {
        depot::store::S3Store::open(&self.store_config()).expect("open S3 store")
    }
}

/// `(k, v)` pairs as the harness takes them.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Content keys (hex SHA-256) in a bucket, sorted.
pub fn blobs_in(store: &depot::store::S3Store) -> Vec<String> {
    use depot::store::BlobStore;
    let mut v: Vec<String> = store
        .maintenance()
        .expect("S3 has maintenance operations")
        .list()
        .expect("list the bucket")
        .iter()
        .map(|b| b.sha.to_hex())
        .collect();
    v.sort();
    v
}
