//! The composition root's store: the binary is where a backend is chosen
//! (`SqlStore`, SQLite or PostgreSQL, by URL); the server and the
//! operations see only the traits of `tocsin-store-api`.

use std::sync::Arc;

use tocsin_store::SqlStore;

use crate::serve::DbArgs;

/// Opens the database a command names, migrating it if needed, with the
/// default app's VAPID key set up (the stored one, else a new one).
pub async fn open(db: &DbArgs) -> anyhow::Result<SqlStore> {
    open_with(&db.database, db.timeout()?, None).await
}

/// Opens the database at `url` with calls bounded by `timeout`, and makes
/// the default app's key `configured` (or the stored one, or a new one).
pub async fn open_with(
    url: &str,
    timeout: std::time::Duration,
    configured: Option<&tocsin_ops::apps::ConfiguredKey>,
) -> anyhow::Result<SqlStore> {
    let store = SqlStore::connect_with(url, timeout).await?;
    tocsin_ops::apps::ensure_default_key(&store, configured, tocsin_ops::now_ms()).await?;
    Ok(store)
}

/// The stores `tocsin serve` runs on: one `SqlStore` behind both traits.
pub fn for_server(store: SqlStore) -> tocsin_server::Stores {
    let store = Arc::new(store);
    tocsin_server::Stores { store: store.clone(), outbox: store }
}

fn owner(lock_path: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot own the database ({lock_path}): {why}")
}

/// SQLite belongs to one process: a second `tocsin serve` on the same file
/// is refused with a clear message. The lock is released when the process
/// ends, however it ends.
pub fn sqlite_owner_lock(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else { return Ok(None) };
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(None);
    }
    let lock_path = format!("{path}.lock");
    if let Some(dir) = std::path::Path::new(&lock_path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| owner(&lock_path, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| owner(&lock_path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(owner(
            &lock_path,
            "another tocsin serve owns this SQLite database; stop it, or use PostgreSQL to run several",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(owner(&lock_path, e)),
    }
}
