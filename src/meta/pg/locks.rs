//! Cross-node locks on PostgreSQL: session-level advisory locks, each held on a pooled
//! connection of its own for as long as the service holds the lock (see the DESIGN notes in
//! `mod.rs` for why these and not row locks).

use super::{db_err, lock_key, pool_err, PgMeta};
use crate::error::{Error, Result};
use crate::meta::{HeldLock, NodeLocks};
use crate::types::{InstanceId, Sha256};
use deadpool_postgres::{Object, Pool};
use std::sync::Arc;
use tokio_postgres::error::SqlState;

/// The `application_name` of the lock connections (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "depot-locks";

/// How long a lock request waits for another node before the request fails with 503: a node
/// that hangs while holding a lock must not stall every other node's uploads for ever.
pub(crate) const LOCK_TIMEOUT: &str = "60s";

/// Advisory locks held by one session (one pooled connection), released when dropped.
struct PgLock {
    client: Option<Arc<Object>>,
    rt: tokio::runtime::Handle,
}

impl HeldLock for PgLock {
    fn check(&self) -> Result<()> {
        let Some(client) = self.client.clone() else {
            return Err(Error::Unavailable("the lock was released".into()));
        };
        // A session that answers still holds its session-level locks; one that is gone (the
        // database restarted, the connection was cut) released them.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let answer = client.simple_query("SELECT 1").await.map(|_| ());
            // Dropped before answering, so the guard's release owns the connection alone.
            drop(client);
            let _ = tx.send(answer);
        });
        rx.recv()
            .map_err(|_| Error::Internal("the metadata runtime stopped".into()))?
            .map_err(|e| {
                tracing::warn!(error = %e, "a cross-node lock was lost");
                Error::Unavailable(
                    "the metadata database connection holding a lock was lost; try again".into(),
                )
            })
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Released on the store's runtime, not waited for: letting go late is always safe.
        self.rt.spawn(async move {
            let released = client
                .simple_query("SELECT pg_advisory_unlock_all()")
                .await
                .is_ok();
            if let Ok(client) = Arc::try_unwrap(client) {
                if !released {
                    // Never back into the pool with a lock maybe still held: closing the
                    // session releases whatever it holds.
                    drop(Object::take(client));
                }
            }
        });
    }
}

/// Takes `keys` (sorted, so two holders never wait on each other in a cycle) on one connection
/// of `pool`, shared or exclusive.
async fn acquire(pool: Pool, keys: Vec<i64>, shared: bool) -> Result<Object> {
    let client = pool.get().await.map_err(pool_err)?;
    let sql = if shared {
        "SELECT pg_advisory_lock_shared($1)"
    } else {
        "SELECT pg_advisory_lock($1)"
    };
    for k in &keys {
        if let Err(e) = client.execute(sql, &[k]).await {
            // Whatever was taken goes with the session.
            drop(Object::take(client));
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                return Err(Error::Unavailable(
                    "another node holds this lock too long; try again later".into(),
                ));
            }
            return Err(db_err(e));
        }
    }
    Ok(client)
}

impl PgMeta {
    fn hold(&self, pool: &Pool, keys: Vec<i64>, shared: bool) -> Result<Box<dyn HeldLock>> {
        let Some(rt) = &self.rt else {
            return Err(Error::Unavailable("the metadata store is closed".into()));
        };
        let rt = rt.handle().clone();
        let pool = pool.clone();
        let client = self.run(move |_| acquire(pool, keys, shared))?;
        Ok(Box::new(PgLock {
            client: Some(Arc::new(client)),
            rt,
        }))
    }
}

impl NodeLocks for PgMeta {
    fn shared(&self) -> bool {
        true
    }

    fn lock_blobs(&self, shas: &[Sha256]) -> Result<Option<Box<dyn HeldLock>>> {
        let mut keys: Vec<i64> = shas
            .iter()
            .map(|s| lock_key(&[self.namespace.as_bytes(), b"blob", &s.0]))
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        keys.sort_unstable();
        keys.dedup();
        self.hold(&self.blob_locks, keys, false).map(Some)
    }

    fn lock_tree(
        &self,
        instance: InstanceId,
        exclusive: bool,
    ) -> Result<Option<Box<dyn HeldLock>>> {
        let key = lock_key(&[
            self.namespace.as_bytes(),
            b"tree",
            instance.to_bytes().as_slice(),
        ]);
        self.hold(&self.tree_locks, vec![key], !exclusive).map(Some)
    }

    fn lock_quota(&self, instance: InstanceId) -> Result<Option<Box<dyn HeldLock>>> {
        let key = lock_key(&[
            self.namespace.as_bytes(),
            b"quota",
            instance.to_bytes().as_slice(),
        ]);
        self.hold(&self.quota_locks, vec![key], false).map(Some)
    }
}
