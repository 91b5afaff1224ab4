//! The shared metadata store: PostgreSQL through tokio-postgres and a deadpool pool, for depot
//! nodes that run side by side on one database (see issue 13).
//!
//! DESIGN notes (read before changing a query):
//! - The [`super::MetaStore`] traits block; tokio-postgres is async. The store owns a small
//!   tokio runtime of its own and every call runs there while the caller waits on a channel,
//!   so a call works from any thread (a plain thread, `spawn_blocking`, even an executor thread
//!   by mistake, where the sled store also blocks) and never nests a runtime.
//! - Records are stored whole as `jsonb` (the same serde form sled keeps), beside the columns
//!   the indexes need. A read returns exactly what was written; the columns exist for lookups.
//! - Concurrency across nodes comes from PostgreSQL, never from an in-process lock, at READ
//!   COMMITTED:
//!   - blob reference counts are single-row upserts (`refs = refs + 1`) and decrements under the
//!     row's lock (`UPDATE ... RETURNING`), taken in sha order inside one transaction so two
//!     multi-file inserts cannot deadlock;
//!   - a grant on a file takes `FOR KEY SHARE` on the file's row, which `DELETE` of the file
//!     conflicts with: the grant either commits first (and the delete, whose later statement
//!     sees it, removes it) or waits and then finds the file gone (`NotFound`); a foreign key
//!     with `ON DELETE CASCADE` backs this up;
//!   - counted caps (grants per grantor, open sessions per account and kind) take a transaction
//!     advisory lock on the counted key before counting: a row lock cannot guard rows that do
//!     not exist yet, and SERIALIZABLE would turn every cap race into retries. The lock is held
//!     only until commit and only serialises writers of that one key;
//!   - state machines (sessions) and rewrites (moves) lock the rows they read (`FOR UPDATE`,
//!     in id order) and compare before writing;
//!   - deadlocks and serialization failures (40P01, 40001) are retried a few times.
//! - What spans more than one transaction, or a transaction and the blob store, is ordered by
//!   session-level advisory locks ([`super::NodeLocks`], `locks.rs`), taken by the service
//!   after its in-process locks (so one node's threads queue in process first, and at most one
//!   of them per stripe waits on the database):
//!   - a blob's lock (`pg_advisory_lock(k)`, `k` from schema and sha) is held from "bytes
//!     stored or found" to "reference counted" (uploads, sessions, re-uploads) and from
//!     "count dropped to 0" to "blob removed from S3" (deletes, the session sweep, gc). Why
//!     not row locks: the removal is an S3 call after the transaction, and a `FOR UPDATE` on
//!     `blob_refs` cannot be held past commit, nor taken on a row that does not exist yet (the
//!     first reference); keeping a "dying" row at 0 would make every insert revive rows and
//!     re-check the object, and gc would still need a lock. Why session-level, not
//!     `pg_advisory_xact_lock`: the critical section spans a blob commit, one or two
//!     transactions on other pooled connections and an S3 delete, so no one transaction
//!     covers it. Per sha, not per stripe: two nodes only wait on each other for one content.
//!     Before removing a blob the holder checks its session still answers (a restarted
//!     database or a cut connection drops the lock silently); if not, the blob stays and gc
//!     collects it later.
//!   - an instance's tree lock (`pg_advisory_lock_shared(k)` for uploads and listings,
//!     `pg_advisory_lock(k)` for directory creation, moves, subtree trash/delete) mirrors
//!     `dirs::TreeLock`, so two nodes never both create a missing directory and no upload on B
//!     lands in a directory A is moving. Lock order: tree, then blobs, on every node.
//!   - an instance's quota lock (`pg_advisory_lock(k)`) is held from a quota check to the
//!     write of the records it admitted (`Service::admit`'s permit), only when a limit applies:
//!     the in-process stripe lock alone let two nodes both admit uploads into the same remaining
//!     bytes. It is the innermost lock: taken after tree and blob locks, nothing after it. The
//!     blobs are committed before it is taken (an S3 copy can be long); a refused write takes
//!     back what it committed that nothing references.
//!   - each held lock keeps one connection of its own pool (`blob_locks`, `tree_locks`,
//!     `quota_locks`, each `pool_size`): apart from the query pool and from each other, so a
//!     holder never waits for a connection only another holder (of the same or an outer lock)
//!     can give back. Lock connections set `lock_timeout` (`locks::LOCK_TIMEOUT`): a node hung
//!     while holding a lock costs the others 503s, not a stall. Releasing is
//!     `pg_advisory_unlock_all()`; a session that fails it is closed, never pooled with a lock
//!     held.
//!   - `gc` and `fsck` take the same blob locks: gc removes an unreferenced blob only when its
//!     count is still 0 under the lock and it is older than the grace period; fsck re-checks
//!     each finding under the lock from one snapshot before reporting or repairing it (see
//!     `service::maintenance`), so both run while nodes serve.
//! - What the service still orders in process only:
//!   - `InstanceTree::consistent` (a download's grant check through directories, lock-free)
//!     watches this node's moves only: a download on B racing a move on A is judged by the
//!     tree just before or just after the move's transaction.
//!   - the session `claims` set only de-duplicates concurrent PUTs on one node; across nodes
//!     `complete_session` (`FOR UPDATE`, state must be `Open`) already refuses the second.
//!   - `hot.rs` (the download cache) is per node; it hears of every node's changes through
//!     triggers that `NOTIFY depot_changes` and one `LISTEN` connection per node, and serves a
//!     hit only after a round trip on that connection (see `notify.rs`).
//! - ArcQL `find` runs over [`super::FileStore::scan_files`] (the instance, owner, directory
//!   or path index, then a filter in Rust). A later step can push `path`/`directory` equality
//!   and prefixes into SQL (the `files_by_path`/`files_by_dir` indexes with the "C" collation
//!   serve `LIKE 'p%'`-style ranges) and add expression indexes on `record->>'name'`, `mime`,
//!   `created` for the common filters and sort orders.
//! - Lost connections are 503 (`Unavailable`) and the pool reconnects on the next call, so a
//!   database restart fails requests cleanly and recovers without restarting depot.

mod files;
mod grants;
mod import;
mod locks;
pub use import::RecordCounts;
mod migrations;
mod notify;
mod sessions;
mod usage;
mod variants;
mod webhooks;

use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

pub use migrations::MIGRATIONS;

/// PostgreSQL-backed [`super::MetaStore`].
pub struct PgMeta {
    pool: Pool,
    /// Connections that hold blob locks (advisory, session-level) while the service works; a
    /// pool of their own, so lock holders never wait for a connection that only another lock
    /// holder can give back (see `locks.rs`).
    blob_locks: Pool,
    /// Connections that hold tree locks; apart from `blob_locks` because a tree lock's holder
    /// takes blob locks too (tree first, then blobs, never the other way).
    tree_locks: Pool,
    /// Connections that hold quota locks; apart from the others because a quota lock is
    /// taken while tree and blob locks are held (always last).
    quota_locks: Pool,
    /// What tells this deployment's lock keys from those of another schema on the same
    /// database (advisory locks are per database).
    namespace: String,
    /// How to open a connection of our own (the change feed's `LISTEN`).
    cfg: tokio_postgres::Config,
    rt: Option<tokio::runtime::Runtime>,
}

/// How the store connects.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db` (or key=value form). Never logged.
    pub url: String,
    /// Most connections this node holds.
    pub pool_size: usize,
    /// A schema to use instead of `public` (created when missing); tests give each case its own.
    pub schema: Option<String>,
}

/// The attempts a transaction gets when PostgreSQL reports a deadlock or serialization failure.
pub(crate) const TX_ATTEMPTS: usize = 8;

/// Why a transaction body stopped: a database error (maybe worth a retry) or the store's own.
pub(crate) enum Fail {
    Db(tokio_postgres::Error),
    App(Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::App(e)
    }
}

impl From<serde_json::Error> for Fail {
    fn from(e: serde_json::Error) -> Self {
        Fail::App(e.into())
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Db(e) => db_err(e),
            Fail::App(e) => e,
        }
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, Fail>;

pub(crate) fn retryable(f: &Fail) -> bool {
    matches!(f, Fail::Db(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
}

/// A database error as the service sees it: a lost or refused connection is 503 (the cause is
/// logged; a tokio-postgres error never shows the password), anything else a logged 500.
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    metrics::counter!("depot_metadata_errors_total").increment(1);
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let gone = e.code().is_some_and(|c| {
        c.code().starts_with("08") || c.code().starts_with("57P") || c.code() == "53300"
    });
    if e.is_closed() || io || gone {
        tracing::warn!(error = %e, "metadata database unavailable");
        return Error::Unavailable("the metadata database is unavailable; try again later".into());
    }
    Error::failed("metadata database", e)
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    metrics::counter!("depot_metadata_errors_total").increment(1);
    tracing::warn!(error = %e, "metadata database unavailable");
    Error::Unavailable("the metadata database is unavailable; try again later".into())
}

/// Runs `$body` in a transaction on a pooled connection bound to `$tx`, committing on `Ok`,
/// rolling back on `Err`, and starting over on a deadlock or serialization failure. `$body`
/// yields a [`TxResult`].
macro_rules! in_tx {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let mut client = $pool.get().await.map_err($crate::meta::pg::pool_err)?;
            let $tx = client
                .transaction()
                .await
                .map_err($crate::meta::pg::db_err)?;
            let out: $crate::meta::pg::TxResult<_> = async {
                let r: $crate::meta::pg::TxResult<_> = { $body };
                r
            }
            .await;
            let out = match out {
                Ok(v) => $tx
                    .commit()
                    .await
                    .map(|()| v)
                    .map_err($crate::meta::pg::Fail::Db),
                Err(e) => Err(e),
            };
            match out {
                Ok(v) => break Ok::<_, $crate::error::Error>(v),
                Err(e)
                    if attempt < $crate::meta::pg::TX_ATTEMPTS
                        && $crate::meta::pg::retryable(&e) =>
                {
                    continue
                }
                Err(e) => break Err($crate::error::Error::from(e)),
            }
        }
    }};
}
pub(crate) use in_tx;

impl PgMeta {
    /// Connects (checking the database answers) and brings the schema up to date.
    pub fn open(opts: &PgOptions) -> Result<Self> {
        let m = Self::connect(opts)?;
        m.migrate()?;
        Ok(m)
    }

    /// Connects without migrating (for `depot migrate`, which reports what it applied).
    pub fn connect(opts: &PgOptions) -> Result<Self> {
        let mut cfg: tokio_postgres::Config = opts.url.parse().map_err(|e| {
            // The parse error never quotes the URL (it may hold a password).
            Error::BadRequest(format!("[meta] url is not a PostgreSQL URL: {e}"))
        })?;
        if let Some(schema) = &opts.schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::BadRequest(
                    "a metadata schema name is letters, digits and _".into(),
                ));
            }
            cfg.options(format!("-c search_path={schema}"));
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("depot-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::failed("cannot start the metadata runtime", e))?;
        let mgr = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let build = |mgr: Manager| {
            let _guard = rt.enter();
            Pool::builder(mgr)
                .max_size(opts.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| Error::failed("cannot build the metadata pool", e))
        };
        let pool = build(mgr)?;
        let lock_mgr = || {
            let mut c = cfg.clone();
            c.application_name(locks::APPLICATION_NAME);
            // Appended to what the URL set (a search_path, say), not replacing it.
            let options = format!(
                "{} -c lock_timeout={}",
                c.get_options().unwrap_or_default(),
                locks::LOCK_TIMEOUT
            );
            c.options(options.trim_start());
            Manager::from_config(
                c,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            )
        };
        let (blob_locks, tree_locks) = (build(lock_mgr())?, build(lock_mgr())?);
        let quota_locks = build(lock_mgr())?;
        let mut m = Self {
            pool,
            blob_locks,
            tree_locks,
            quota_locks,
            namespace: String::new(),
            cfg,
            rt: Some(rt),
        };
        if let Some(schema) = opts.schema.clone() {
            m.run(move |pool| async move {
                let client = pool.get().await.map_err(pool_err)?;
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .await
                    .map_err(db_err)?;
                Ok(())
            })?;
        }
        // Also the check that the database answers.
        m.namespace = m.run(|pool| async move {
            let client = pool.get().await.map_err(pool_err)?;
            let row = client
                .query_one("SELECT coalesce(current_schema(), '')", &[])
                .await
                .map_err(db_err)?;
            row.try_get::<_, String>(0).map_err(db_err)
        })?;
        Ok(m)
    }

    /// Runs `f` on the store's runtime and waits for its answer.
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(rt) = &self.rt else {
            return Err(Error::Unavailable("the metadata store is closed".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.pool.clone());
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Internal("the metadata runtime stopped".into()))?
    }
}

impl Drop for PgMeta {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; letting it go in the background does not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A row's `jsonb` record column decoded.
pub(crate) fn record<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    col: &str,
) -> TxResult<T> {
    let v: serde_json::Value = row.try_get(col)?;
    Ok(serde_json::from_value(v)?)
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(v)?)
}

/// An advisory-lock key for a counted thing (a grantor, an account's sessions of a kind).
pub(crate) fn lock_key(parts: &[&[u8]]) -> i64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// Reads a `bigint` count as the traits' `u64`.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A `u64` as PostgreSQL's `bigint` (limits and caps past `i64::MAX` mean "no cap").
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl crate::config::MetaConfig {
    /// How to connect, from the `[meta]` table.
    pub fn pg_options(&self) -> PgOptions {
        PgOptions {
            url: self.url.clone().unwrap_or_default(),
            pool_size: self.pool_size,
            schema: None,
        }
    }
}
