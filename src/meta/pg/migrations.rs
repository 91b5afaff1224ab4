//! Versioned schema migrations, applied in order at start-up and by `depot migrate`.
//!
//! Each migration runs once, in one transaction with its `depot_migrations` row, under a
//! transaction advisory lock per schema, so nodes starting together apply it exactly once (the
//! others wait, then find it applied). A migration is never edited once released: add one.
//! A hand-written runner (about 40 lines) instead of a crate: refinery or sqlx's migrator would
//! bring a second SQL stack for what one `CREATE TABLE` and a loop do.

use super::{db_err, pool_err, PgMeta};
use crate::error::Result;

/// `(version, name, SQL)`, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial schema", V1),
    (2, "session creation rate", V2),
    (3, "change notifications", V3),
    (4, "image variants", V4),
    (5, "webhooks", V5),
    (6, "usage counters and quotas", V6),
];

/// Text columns that are compared or range-scanned use the "C" collation: byte order, like the
/// sled keys, whatever the database's locale (a path prefix scan is then a plain index range).
const V1: &str = r#"
CREATE TABLE instances (
    id bytea PRIMARY KEY,
    domain text COLLATE "C" NOT NULL UNIQUE,
    record jsonb NOT NULL
);

CREATE TABLE files (
    id bytea PRIMARY KEY,
    instance bytea NOT NULL,
    owner text COLLATE "C" NOT NULL,
    directory text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL,
    sha256 bytea NOT NULL,
    record jsonb NOT NULL
);
-- The sled indexes: instance, owner, directory, path (each then id, the upload order).
CREATE INDEX files_by_instance ON files (instance, id);
CREATE INDEX files_by_owner ON files (instance, owner, id);
CREATE INDEX files_by_dir ON files (instance, directory, id);
CREATE INDEX files_by_path ON files (instance, path, id);

CREATE TABLE images (
    file bytea PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    record jsonb NOT NULL
);

CREATE TABLE file_extras (
    file bytea PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    record jsonb NOT NULL
);

CREATE TABLE blob_refs (
    sha256 bytea PRIMARY KEY,
    refs bigint NOT NULL CHECK (refs > 0)
);

CREATE TABLE rights (
    id bytea PRIMARY KEY,
    instance bytea NOT NULL,
    created_by text COLLATE "C" NOT NULL,
    resource text COLLATE "C" NOT NULL,
    -- Set for a grant on a file: the grant goes with the file.
    file bytea REFERENCES files (id) ON DELETE CASCADE,
    granted_by_admin boolean NOT NULL,
    members text[] COLLATE "C" NOT NULL,
    record jsonb NOT NULL
);
-- Grants by resource; `*` grants by grantor; grantor counts; members.
CREATE INDEX rights_by_resource ON rights (instance, resource, id);
CREATE INDEX rights_by_grantor ON rights (instance, created_by, id);
CREATE INDEX rights_admin_wildcards ON rights (instance, id)
    WHERE resource = '*' AND granted_by_admin;
CREATE INDEX rights_by_member ON rights USING gin (members);
CREATE INDEX rights_by_file ON rights (file) WHERE file IS NOT NULL;

CREATE TABLE sessions (
    id bytea PRIMARY KEY,
    instance bytea NOT NULL,
    account text COLLATE "C" NOT NULL,
    kind text NOT NULL,
    open boolean NOT NULL,
    expires bigint NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires, id);
CREATE INDEX sessions_open ON sessions (kind, instance, account) WHERE open;

CREATE TABLE stars (
    instance bytea NOT NULL,
    account text COLLATE "C" NOT NULL,
    file bytea NOT NULL,
    PRIMARY KEY (instance, account, file)
);
"#;

/// Session creations per account in the current minute (the persisted rate counter).
const V2: &str = r#"
CREATE TABLE session_rates (
    instance bytea NOT NULL,
    account text COLLATE "C" NOT NULL,
    minute bigint NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (instance, account)
);
"#;

/// Every write that can change what a node's download cache holds (`service/hot.rs`) sends
/// `NOTIFY depot_changes` from a trigger, so no write path can forget it and the notification
/// is transactional: delivered at commit, never for a rolled-back write (see `notify.rs`).
/// Payloads: `f<hex id>` a file row updated or deleted (trash, move, re-upload, delete; a new
/// file cannot be cached yet), `g` any grant change, `a` an instance changed (everything).
const V3: &str = r#"
CREATE FUNCTION depot_notify_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('depot_changes', 'f' || encode(OLD.id, 'hex'));
    RETURN NULL;
END $$;
CREATE TRIGGER files_changed AFTER UPDATE OR DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION depot_notify_file();

CREATE FUNCTION depot_notify_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('depot_changes', 'g');
    RETURN NULL;
END $$;
CREATE TRIGGER rights_changed AFTER INSERT OR UPDATE OR DELETE ON rights
    FOR EACH STATEMENT EXECUTE FUNCTION depot_notify_grants();

CREATE FUNCTION depot_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('depot_changes', 'a');
    RETURN NULL;
END $$;
CREATE TRIGGER instances_changed AFTER UPDATE OR DELETE ON instances
    FOR EACH STATEMENT EXECUTE FUNCTION depot_notify_all();
"#;

/// Image variants (issue 16): one row per computed transform of a source blob, holding one
/// reference on its own blob (counted in `blob_refs`).
const V4: &str = r#"
CREATE TABLE variants (
    key text COLLATE "C" PRIMARY KEY,
    source bytea NOT NULL,
    sha256 bytea NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX variants_by_source ON variants (source, key);
CREATE INDEX variants_by_sha ON variants (sha256);
"#;

/// Webhooks (issue 15) and their outbox: one row per delivery of an event to a webhook, written
/// in the transaction of the change it describes; `seq` is the commit order deliveries go in;
/// `lease_until` is the claim of the node delivering it (see `webhooks.rs`). No foreign key
/// to `webhooks`: a change must not fail because a webhook was deleted meanwhile (its orphan
/// deliveries are never claimed).
const V5: &str = r#"
CREATE TABLE webhooks (
    id bytea PRIMARY KEY,
    instance bytea NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX webhooks_by_instance ON webhooks (instance, id);

CREATE TABLE webhook_deliveries (
    seq bigserial PRIMARY KEY,
    id bytea NOT NULL UNIQUE,
    webhook bytea NOT NULL,
    pending boolean NOT NULL,
    next_attempt bigint NOT NULL,
    lease_until bigint NOT NULL DEFAULT 0,
    record jsonb NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, seq);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook, seq) WHERE pending;
-- The log to trim, apart from a backlog of pending deliveries.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (webhook, seq) WHERE NOT pending;
"#;

/// Usage counters and quota limits (issue 15): totals per account (the empty account is the
/// instance's), upload bytes per UTC day, and the limits an admin set. Existing records are
/// counted once here, so an upgraded database starts exact.
const V6: &str = r#"
CREATE TABLE usage_totals (
    instance bytea NOT NULL,
    account text COLLATE "C" NOT NULL,
    bytes bigint NOT NULL DEFAULT 0,
    files bigint NOT NULL DEFAULT 0,
    variant_bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (instance, account)
);
CREATE TABLE usage_daily (
    instance bytea NOT NULL,
    account text COLLATE "C" NOT NULL,
    day bigint NOT NULL,
    bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (instance, account, day)
);
CREATE TABLE quota_limits (
    instance bytea NOT NULL,
    kind text NOT NULL,
    account text COLLATE "C" NOT NULL,
    limits jsonb NOT NULL,
    PRIMARY KEY (instance, kind, account)
);
INSERT INTO usage_totals (instance, account, bytes, files)
    SELECT instance, owner, sum((record->>'size')::bigint), count(*) FROM files
    WHERE record->>'mime' <> 'inode/directory' GROUP BY instance, owner;
INSERT INTO usage_totals (instance, account, bytes, files)
    SELECT instance, '', sum((record->>'size')::bigint), count(*) FROM files
    WHERE record->>'mime' <> 'inode/directory' GROUP BY instance;
"#;

impl PgMeta {
    /// Applies the migrations this database lacks; returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<i32>> {
        self.run(|pool| async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(db_err)?;
            tx.batch_execute(
                "SELECT pg_advisory_xact_lock(hashtext('depot-migrate:' || current_schema()));
                 CREATE TABLE IF NOT EXISTS depot_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );",
            )
            .await
            .map_err(db_err)?;
            let row = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM depot_migrations",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let have: i32 = row.get(0);
            let mut applied = Vec::new();
            for (version, name, sql) in MIGRATIONS {
                if *version <= have {
                    continue;
                }
                tx.batch_execute(sql).await.map_err(db_err)?;
                tx.execute(
                    "INSERT INTO depot_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await
                .map_err(db_err)?;
                applied.push(*version);
            }
            tx.commit().await.map_err(db_err)?;
            if !applied.is_empty() {
                tracing::info!(?applied, "applied metadata migrations");
            }
            Ok(applied)
        })
    }
}
