//! The PostgreSQL server `scripts/services start` runs (`DEPOT_TEST_PG_URL`), one fresh schema
//! per store or server, so tests run side by side on one database. Skips or fails as
//! [`super::services`] does.

use depot::meta::{PgMeta, PgOptions};
use std::sync::atomic::{AtomicU32, Ordering};

/// The services' PostgreSQL URL, or `None` (after saying so) when it is not running.
pub fn pg_or_skip(test: &str) -> Option<String> {
    match std::env::var("DEPOT_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let msg = format!(
                "{test}: DEPOT_TEST_PG_URL is unset (start the services: eval \"$(scripts/services start)\")"
            );
            if std::env::var("DEPOT_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("DEPOT_REQUIRE_SERVICES=1 but {msg}");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
            None
        }
    }
}

/// A schema name no other test uses.
pub fn new_schema(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "t_{tag}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// A migrated store in a new schema of the database at `url`.
pub fn pg_store(url: &str, schema: &str, pool_size: usize) -> PgMeta {
    PgMeta::open(&PgOptions {
        url: url.to_string(),
        pool_size,
        schema: Some(schema.to_string()),
    })
    .expect("open PostgreSQL metadata")
}

/// `url` with `search_path` set to `schema` (created first, empty), for a server's
/// `DEPOT_META_URL`.
pub fn url_in_new_schema(url: &str, tag: &str) -> String {
    let schema = new_schema(tag);
    drop(
        PgMeta::connect(&PgOptions {
            url: url.to_string(),
            pool_size: 1,
            schema: Some(schema.clone()),
        })
        .expect("create schema"),
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}
