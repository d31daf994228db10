//! [`SqlStore`]: the store on SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! One room per concern: [`rows`] (rows to values, shared SQL),
//! `subscriptions`, `messages`, `work` (claims, heartbeats, checkpoints,
//! retries) and `admin` (VAPID keys, tokens, totals). This file opens the
//! database and maps the [`Store`] trait onto those rooms.

mod admin;
pub(crate) mod batch;
mod condition;
mod events;
pub(crate) mod mapping;
mod messages;
mod outbox;
mod removals;
mod segments;
mod subscriptions;
mod target;
#[cfg(test)]
mod tests;
mod work;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use crate::*;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (WAL mode), one process at a time.
    Sqlite,
    /// PostgreSQL, shared by any number of processes.
    Postgres,
}

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// The group-commit writer of subscription upserts ([`batch`]).
    upserts: tokio::sync::mpsc::Sender<batch::Upsert>,
    /// The longest a call may take, waiting for a connection included;
    /// then it fails with [`StoreError::Unavailable`].
    timeout: std::time::Duration,
}

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// PostgreSQL is backed up with `pg_dump`, not by Tocsin.
    #[error("this is a PostgreSQL database: back it up with pg_dump (see README, Running in production)")]
    Postgres,
    /// The file is there already: a backup never overwrites one.
    #[error("{0} exists: a backup is written to a new file")]
    Exists(std::path::PathBuf),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
}

/// An error inside this crate: sqlx's own, or one of the interface's.
/// [`StoreError`] lives in a crate without sqlx, so it cannot have a
/// `From<sqlx::Error>`; this type gives `?` that conversion here.
#[derive(Debug)]
pub(crate) enum SqlError {
    Sqlx(sqlx::Error),
    Store(StoreError),
}

/// Result inside this crate.
pub(crate) type R<T> = std::result::Result<T, SqlError>;

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sqlx(e)
    }
}

impl From<StoreError> for SqlError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<sqlx::migrate::MigrateError> for SqlError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Store(StoreError::Migrate(Box::new(e)))
    }
}

impl From<SqlError> for StoreError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Sqlx(e) => classify(e),
            SqlError::Store(e) => e,
        }
    }
}

/// Sorts sqlx's errors into what callers act on: the database not
/// answering (no connection, a broken one, a server shutting down, a lock
/// held past the busy timeout) and a full disk are transient
/// ([`StoreError::is_transient`]); the rest is a database error.
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut => StoreError::Unavailable("no connection to the database".into()),
        sqlx::Error::PoolClosed => StoreError::Closed,
        sqlx::Error::Io(io) if io.raw_os_error() == Some(28) => StoreError::StorageFull,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: SQLITE_FULL (13), SQLITE_IOERR_WRITE (778) from a
            // full disk, SQLITE_BUSY (5) past the busy timeout.
            // PostgreSQL: class 08 (connection exception), 53100
            // (disk_full), 57P01..57P03 (the server shutting down or
            // starting).
            match code.as_ref() {
                "13" | "53100" => StoreError::StorageFull,
                "778" if db.message().contains("full") => StoreError::StorageFull,
                "5" | "57P01" | "57P02" | "57P03" => StoreError::Unavailable(db.message().to_owned()),
                c if c.starts_with("08") => StoreError::Unavailable(db.message().to_owned()),
                _ if db.message().contains("database or disk is full") => StoreError::StorageFull,
                _ => StoreError::Database(Box::new(e)),
            }
        }
        _ => StoreError::Database(Box::new(e)),
    }
}

/// Begins a transaction that writes. On SQLite it takes the write lock at
/// once: a transaction that reads first and writes later must upgrade its
/// lock, and an upgrade under another writer fails at once ("database is
/// locked") instead of waiting out the busy timeout. Every transaction of
/// the store writes, so every one begins here.
pub(crate) async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
}

impl SqlStore {
    /// [`begin_write`] on this store.
    pub(crate) async fn write_tx(&self) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        begin_write(&self.pool, self.backend).await
    }
}

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl SqlStore {
    /// Connects (creating a SQLite file and its folder if needed) and
    /// applies the migrations, with calls bounded by [`DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_TIMEOUT).await
    }

    /// The same with every call bounded by `timeout`, waiting for a
    /// connection included: past it a call fails with
    /// [`StoreError::Unavailable`] instead of waiting for the database.
    pub async fn connect_with(url: &str, timeout: std::time::Duration) -> Result<Self> {
        Ok(Self::open(url, timeout, true).await?)
    }

    /// Opens a database as it is: no file is created and no migration is
    /// run, whatever release's schema it has. For tools that only copy it
    /// (`tocsin backup`), which must not migrate a database that a running
    /// server of another release is using.
    pub async fn connect_as_is(url: &str, timeout: std::time::Duration) -> Result<Self> {
        Ok(Self::open(url, timeout, false).await?)
    }

    /// Runs one call of the store's, bounded by its timeout. A call cut
    /// short is dropped: its transaction, if any, rolls back.
    async fn bounded<T>(&self, call: impl std::future::Future<Output = R<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(done) => Ok(done?),
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn open(url: &str, timeout: std::time::Duration, migrate: bool) -> R<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()).into());
        };
        let mut url = url.to_owned();
        let mut options = AnyPoolOptions::new().acquire_timeout(timeout).after_release(|conn, _| {
            // A transaction whose COMMIT failed (SQLite's full disk rolls it
            // back by itself) leaves sqlx's count of open transactions at 1
            // and its ROLLBACK fails, so every later BEGIN on the connection
            // would fail ("non-zero transaction depth"). The rollback queued
            // by a dropped transaction is done after a ping; a connection
            // still "in a transaction" then is closed, not reused.
            Box::pin(async move {
                use sqlx::Connection as _;
                if !conn.is_in_transaction() {
                    return Ok(true);
                }
                conn.ping().await?;
                Ok(!conn.is_in_transaction())
            })
        });
        if backend == Backend::Sqlite && migrate {
            if let Some(path) = sqlite_path(&url) {
                if let Some(dir) = std::path::Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
        }
        if backend == Backend::Sqlite {
            if !url.contains("mode=") {
                let mode = if migrate { "mode=rwc" } else { "mode=rw" };
                url.push_str(if url.contains('?') { "&" } else { "?" });
                url.push_str(mode);
            }
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    // Reads through a memory map of the file (the OS's page
                    // cache) instead of a read call per page missed by
                    // SQLite's own 2 MB cache. A segment's rows are spread
                    // over the whole table, so its broadcast reads nearly
                    // every page for a tenth of the deliveries: measured at
                    // 0.86x of an all-broadcast's rate without, 0.92x with
                    // (bench/README.md, issue 24). It is address space, not
                    // memory: the pages are the OS's to evict. Writes still
                    // go through write(), so a full disk is an error, not a
                    // signal.
                    conn.execute("PRAGMA mmap_size = 1073741824").await?; // 1 GiB
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        if migrate {
            refuse_newer(&pool, migrator).await?;
            migrator.run(&pool).await?;
        }
        let upserts = batch::spawn_writer(pool.clone());
        Ok(Self { pool, backend, upserts, timeout })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Writes a consistent copy of a SQLite database to `path` while it is
    /// in use (`VACUUM INTO`: one read transaction, so the copy is the
    /// database as of one moment; writers go on meanwhile). `path` must
    /// not exist. PostgreSQL is backed up with its own tools (`pg_dump`):
    /// [`StoreError::Url`]-like refusal as [`BackupError::Postgres`].
    pub async fn backup_to(&self, path: &std::path::Path) -> std::result::Result<(), BackupError> {
        if self.backend != Backend::Sqlite {
            return Err(BackupError::Postgres);
        }
        if path.exists() {
            return Err(BackupError::Exists(path.to_owned()));
        }
        let target = path.to_str().ok_or_else(|| BackupError::Exists(path.to_owned()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(|e| BackupError::Store(StoreError::from(SqlError::from(e))))?;
        Ok(())
    }

    /// Makes sure SQLite has an index for each of these tag keys, so that
    /// an expression's equality on one (`plan == "pro"`, `bucket in [1,
    /// 2]`) reads the matching rows only, in counts and in a segment's
    /// pages (`tocsin serve --indexed-tags`). Indexes of keys no longer
    /// named are left in place. On PostgreSQL the index is on the jsonb
    /// value (`condition::jsonb_item`), which equality compares.
    pub async fn index_tags(&self, keys: &[tocsin_audience::TagKey]) -> Result<()> {
        for key in keys {
            // A tag key is 1 to 64 of [a-z0-9_.:-]: nothing to escape in a
            // quoted identifier, and `condition::json_path` (`jsonb_item`)
            // writes the same expression the index is on.
            let sql = match self.backend {
                Backend::Sqlite => format!(
                    "CREATE INDEX IF NOT EXISTS \"subscriptions_tag_{key}\" ON subscriptions (app_id, json_extract(tags, {}))",
                    condition::json_path(key.as_str())
                ),
                // The index names the column bare; the query's `s.tags_j`
                // is the same expression to the planner.
                Backend::Postgres => format!(
                    "CREATE INDEX IF NOT EXISTS \"subscriptions_tag_{key}\" ON subscriptions (app_id, {}, id)",
                    condition::jsonb_item(key.as_str()).replace("s.tags_j", "tags_j")
                ),
            };
            let q = sqlx::query(&sql).execute(&self.pool);
            tokio::time::timeout(std::time::Duration::from_secs(600), q)
                .await
                .map_err(|_| StoreError::Unavailable("building a tag index took over 10 minutes".into()))?
                .map_err(SqlError::from)?;
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Refuses a database that a newer release has migrated: one applied
/// migration this binary does not have. sqlx would refuse it too, but
/// only as "migration N was previously applied but is missing"; this says
/// what to do. A database without the migrations table is new.
async fn refuse_newer(pool: &AnyPool, migrator: &sqlx::migrate::Migrator) -> R<()> {
    let applied: Vec<i64> = match sqlx::query_scalar("SELECT version FROM _sqlx_migrations").fetch_all(pool).await {
        Ok(v) => v,
        Err(sqlx::Error::Database(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let known: std::collections::HashSet<i64> = migrator.iter().map(|m| m.version).collect();
    match applied.into_iter().filter(|v| !known.contains(v)).max() {
        Some(v) => Err(StoreError::TooNew(v).into()),
        None => Ok(()),
    }
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Each method hands over to the room that holds its SQL.
#[async_trait]
impl Store for SqlStore {
    fn bound_to_runtime(&self) -> bool {
        self.backend == Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AppStore for SqlStore {
    async fn apps(&self) -> Result<Vec<AppRow>> {
        self.bounded(admin::apps(self)).await
    }

    async fn app(&self, name: &str) -> Result<Option<AppRow>> {
        self.bounded(admin::app(self, name)).await
    }

    async fn app_rules(&self, app: AppId) -> Result<tocsin_audience::rules::DeliveryRules> {
        self.bounded(admin::app_rules(self, app)).await
    }

    async fn set_app_rules(&self, app: AppId, rules: &tocsin_audience::rules::DeliveryRules) -> Result<bool> {
        self.bounded(admin::set_app_rules(self, app, rules)).await
    }

    async fn create_app(&self, new: &NewApp, public_key: &str, private_key: &str, now: i64) -> Result<Option<AppRow>> {
        self.bounded(admin::create_app(self, new, public_key, private_key, now)).await
    }

    async fn current_vapid_key(&self, app: AppId) -> Result<Option<VapidKeyRow>> {
        self.bounded(admin::current_vapid_key(self, app)).await
    }

    async fn make_vapid_key_current(
        &self,
        app: AppId,
        public_key: &str,
        private_key: &str,
        now: i64,
    ) -> Result<VapidKeyRow> {
        self.bounded(admin::make_vapid_key_current(self, app, public_key, private_key, now)).await
    }

    async fn add_vapid_key(&self, app: AppId, public_key: &str, private_key: &str, now: i64) -> Result<VapidKeyRow> {
        self.bounded(admin::add_vapid_key(self, app, public_key, private_key, now)).await
    }

    async fn vapid_key(&self, id: i64) -> Result<Option<VapidKeyRow>> {
        self.bounded(admin::vapid_key(self, id)).await
    }

    async fn vapid_key_id(&self, app: AppId, public_key: &str) -> Result<Option<i64>> {
        self.bounded(admin::vapid_key_id(self, app, public_key)).await
    }

    async fn vapid_keys(&self, app: AppId) -> Result<Vec<VapidKeyInfo>> {
        self.bounded(admin::vapid_keys(self, app)).await
    }

    async fn retire_vapid_key(&self, app: AppId, id: i64, force: bool, now: i64) -> Result<RetireKey> {
        self.bounded(admin::retire_vapid_key(self, app, id, force, now)).await
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String> {
        self.bounded(admin::server_secret(self, name, candidate)).await
    }
}

#[async_trait]
impl SubscriptionStore for SqlStore {
    async fn upsert_subscription(&self, new: &NewSubscription, now: i64) -> Result<StoredSubscription> {
        self.bounded(subscriptions::upsert(self, new, now)).await
    }

    async fn upsert_subscriptions(&self, new: &[NewSubscription], now: i64) -> Result<Vec<StoredSubscription>> {
        self.bounded(subscriptions::upsert_all(self, new, now)).await
    }

    async fn delete_subscription_by_endpoint(&self, app: AppId, endpoint: &str, auth: &str, now: i64) -> Result<bool> {
        self.bounded(subscriptions::delete_by_endpoint(self, app, endpoint, auth, now)).await
    }

    async fn subscription_by_endpoint(&self, app: AppId, endpoint: &str) -> Result<Option<StoredSubscription>> {
        self.bounded(subscriptions::by_endpoint(self, app, endpoint)).await
    }

    async fn delete_subscription(&self, app: AppId, id: i64, now: i64) -> Result<bool> {
        self.bounded(subscriptions::delete(self, app, id, now)).await
    }

    async fn replace_subscription(&self, app: AppId, old_id: i64, new_id: i64, now: i64) -> Result<bool> {
        self.bounded(subscriptions::replace(self, app, old_id, new_id, now)).await
    }

    async fn app_subscription(&self, app: AppId, id: i64) -> Result<Option<StoredSubscription>> {
        self.bounded(subscriptions::get(self, Some(app), id)).await
    }

    async fn subscription(&self, id: i64) -> Result<Option<StoredSubscription>> {
        self.bounded(subscriptions::get(self, None, id)).await
    }

    async fn page_subscriptions(
        &self,
        app: AppId,
        target: &Target,
        zones: Option<&tocsin_audience::rules::ZoneFilter>,
        after: i64,
        upto: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PageRow>> {
        self.bounded(subscriptions::page(self, app, target, zones, after, upto, limit)).await
    }

    async fn count_subscriptions(&self, app: AppId, target: &Target) -> Result<i64> {
        self.bounded(subscriptions::count(self, app, target)).await
    }

    async fn patch_tags(
        &self,
        app: AppId,
        of: &TagsOf,
        patch: &tocsin_audience::TagPatch,
        now: i64,
    ) -> Result<TagsPatched> {
        self.bounded(subscriptions::patch_tags(self, app, of, patch, now)).await
    }
}

#[async_trait]
impl SegmentStore for SqlStore {
    async fn create_segment(&self, app: AppId, segment: &SegmentRow) -> Result<bool> {
        self.bounded(segments::create(self, app, segment)).await
    }

    async fn segments(&self, app: AppId) -> Result<Vec<SegmentRow>> {
        self.bounded(segments::list(self, app)).await
    }

    async fn segment(&self, app: AppId, name: &str) -> Result<Option<SegmentRow>> {
        self.bounded(segments::get(self, app, name)).await
    }

    async fn delete_segment(&self, app: AppId, name: &str) -> Result<bool> {
        self.bounded(segments::delete(self, app, name)).await
    }
}

#[async_trait]
impl MessageStore for SqlStore {
    async fn record_interaction(
        &self,
        app: AppId,
        message_id: &str,
        recipient: &str,
        interaction: Interaction,
        action: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        self.bounded(messages::record_interaction(self, app, message_id, recipient, interaction, action, now)).await
    }

    async fn insert_message(&self, new: &NewMessage) -> Result<(Message, bool)> {
        self.bounded(messages::insert(self, new)).await
    }

    async fn app_message(&self, app: AppId, id: &str) -> Result<Option<Message>> {
        self.bounded(messages::get(self, Some(app), id)).await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>> {
        self.bounded(messages::get(self, None, id)).await
    }

    async fn list_messages(&self, app: AppId, before: Option<&str>, limit: i64) -> Result<Vec<Message>> {
        self.bounded(messages::list(self, app, before, limit)).await
    }

    async fn cancel_message(&self, app: AppId, id: &str, now: i64) -> Result<Option<Message>> {
        self.bounded(messages::cancel(self, app, id, now)).await
    }

    async fn message_failure_examples(&self, id: &str) -> Result<Vec<(String, String)>> {
        self.bounded(messages::failure_examples(self, id)).await
    }

    async fn wave_progress(&self, id: &str) -> Result<Vec<WaveProgress>> {
        self.bounded(messages::wave_progress(self, id)).await
    }

    async fn message_failures(&self, id: &str) -> Result<Vec<(String, i64)>> {
        self.bounded(messages::failures(self, id)).await
    }

    async fn purge_messages(&self, before: i64, limit: i64) -> Result<u64> {
        self.bounded(messages::purge(self, before, limit)).await
    }
}

#[async_trait]
impl WorkStore for SqlStore {
    async fn start_message(&self, id: &str, target: &Target, shard_size: i64, now: i64) -> Result<bool> {
        self.bounded(messages::start(self, id, target, shard_size, now)).await
    }

    async fn next_startable_message(&self, now: i64) -> Result<Option<Message>> {
        self.bounded(messages::next_startable(self, now)).await
    }

    async fn claim_shard(&self, claim: &Claim, now: i64, lease_ms: i64) -> Result<Option<Shard>> {
        self.bounded(work::claim_shard(self, claim, now, lease_ms)).await
    }

    async fn defer_shard(&self, shard: &Shard, until: i64) -> Result<bool> {
        self.bounded(work::defer_shard(self, shard, until)).await
    }

    async fn throttle_next(&self, message_id: &str) -> Result<i64> {
        self.bounded(work::throttle_next(self, message_id)).await
    }

    async fn renew_shard(&self, shard: &Shard, now: i64, lease_ms: i64) -> Result<bool> {
        self.bounded(work::renew_shard(self, shard, now, lease_ms)).await
    }

    async fn checkpoint_shard(
        &self,
        shard: &Shard,
        progress: &ShardProgress,
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<Option<MessageState>> {
        self.bounded(work::checkpoint_shard(self, shard, progress, outcome, now)).await
    }

    async fn claim_retries(&self, claim: &Claim, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<RetryItem>> {
        self.bounded(work::claim_retries(self, claim, now, lease_ms, limit)).await
    }

    async fn defer_retries(&self, message_id: &str, token: &str, until: i64) -> Result<bool> {
        self.bounded(work::defer_retries(self, message_id, token, until)).await
    }

    async fn renew_retries(&self, token: &str, now: i64, lease_ms: i64) -> Result<bool> {
        self.bounded(work::renew_retries(self, token, now, lease_ms)).await
    }

    async fn record_retries(
        &self,
        message_id: &str,
        token: &str,
        items: &[RetryItem],
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<bool> {
        self.bounded(work::record_retries(self, message_id, token, items, outcome, now)).await
    }

    async fn reserve_sends(&self, message_id: &str, span_ms: i64, now: i64) -> Result<i64> {
        self.bounded(work::reserve_sends(self, message_id, span_ms, now)).await
    }

    async fn try_finish_message(&self, id: &str, now: i64) -> Result<bool> {
        self.bounded(messages::try_finish(self, id, now)).await
    }

    async fn sending_message_ids(&self) -> Result<Vec<String>> {
        self.bounded(messages::sending_ids(self)).await
    }

    async fn advance_ab_test(&self, id: &str, step: &crate::AbStep, now: i64) -> Result<bool> {
        self.bounded(messages::advance_ab_test(self, id, step, now)).await
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn insert_token(
        &self,
        name: &str,
        hash: &str,
        scope: TokenScope,
        app: Option<AppId>,
        now: i64,
    ) -> Result<()> {
        self.bounded(admin::insert_token(self, name, hash, scope, app, now)).await
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        self.bounded(admin::token(self, hash)).await
    }

    async fn touch_token(&self, hash: &str, now: i64) -> Result<()> {
        self.bounded(admin::touch_token(self, hash, now)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.bounded(admin::tokens(self)).await
    }

    async fn revoke_token(&self, name: &str) -> Result<u64> {
        self.bounded(admin::revoke_token(self, name)).await
    }
}

#[async_trait]
impl StatsStore for SqlStore {
    async fn count_by_host(&self, app: AppId) -> Result<Vec<(String, i64)>> {
        self.bounded(admin::count_by_host(self, app)).await
    }

    async fn daily_stats(&self, app: AppId, first_day: i64, last_day: i64) -> Result<Vec<DailyStats>> {
        self.bounded(admin::daily(self, app, first_day, last_day)).await
    }

    async fn stats(&self, app: AppId) -> Result<Stats> {
        self.bounded(admin::stats(self, app)).await
    }
}
