//! Seeding a data dir with many metadata records straight through the service (no uploads),
//! and timing GraphQL queries: what the benchmarks under tests/bench_*.rs share.

use super::{Server, INSTANCE};
use depot::config::Config;
use depot::meta::FileRecord;
use depot::service::dirs::EMPTY_SHA;
use depot::types::{now_millis, AccountId, FileId, InstanceId, Sha256};
use std::path::Path;
use std::time::Instant;

/// Records written by [`Seeder`] per metadata transaction.
const BATCH: usize = 1000;

/// The service over a data dir (the server is not running yet) and the test instance's id.
pub struct Seeder {
    pub svc: depot::service::Service,
    pub instance: InstanceId,
    batch: Vec<(FileRecord, Option<depot::meta::ImageRecord>)>,
}

impl Seeder {
    /// Opens `data` with the default config and makes sure [`INSTANCE`] exists.
    pub fn open(data: &Path) -> Self {
        let svc = depot::open_service(Config {
            data_dir: data.to_path_buf(),
            ..Config::default()
        })
        .expect("open the service");
        let instance = svc.meta.ensure_instance(INSTANCE).expect("instance").id;
        Seeder {
            svc,
            instance,
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// A record of `owner` at `dir`/`name`: a 3-byte text file, or a directory when
    /// `directory` is true. Drop the seeder before starting a server on the same data dir.
    pub fn record(&self, owner: &str, dir: &str, name: &str, directory: bool) -> FileRecord {
        let now = now_millis();
        FileRecord {
            id: FileId::new(),
            instance: self.instance,
            created_by: AccountId(owner.into()),
            created: now,
            updated: now,
            trashed: None,
            name: name.into(),
            directory: dir.into(),
            extension: (!directory).then(|| "txt".into()),
            mime: if directory {
                depot::meta::DIRECTORY_MIME.into()
            } else {
                "text/plain".into()
            },
            size: if directory { 0 } else { 3 },
            sha256: if directory {
                EMPTY_SHA
            } else {
                Sha256([7; 32])
            },
            width: None,
            height: None,
            is_stared: None,
            is_sharable: None,
        }
    }

    /// Queues `f`, writing a batch when it is full.
    pub fn add(&mut self, f: FileRecord) {
        self.batch.push((f, None));
        if self.batch.len() == BATCH {
            self.flush();
        }
    }

    /// Writes what is queued.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.svc.meta.insert_files(&self.batch).expect("insert");
            self.batch.clear();
        }
    }
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The median of `runs` timings of `query` in milliseconds; every answer must be error-free.
pub fn median_ms(s: &Server, token: &str, query: &str, runs: usize) -> f64 {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let res = s.graphql(Some(token), query);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(res["errors"].is_null(), "{query}: {res}");
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[runs / 2]
}

/// A positive count from the environment variable `var`, else `default`.
pub fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
