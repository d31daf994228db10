//! [`SqlStore`]: the store on SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! One room per concern: [`rows`] (rows to values, shared SQL),
//! `subscriptions`, `messages`, `work` (claims, heartbeats, checkpoints,
//! retries) and `admin` (VAPID keys, tokens, totals). This file opens the
//! database and maps the [`Store`] trait onto those rooms.

mod admin;
mod events;
mod messages;
mod outbox;
pub(crate) mod rows;
mod subscriptions;
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
    /// The group-commit writer of subscription upserts ([`crate::batch`]).
    upserts: tokio::sync::mpsc::Sender<crate::batch::Upsert>,
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
            SqlError::Sqlx(e) => StoreError::Database(Box::new(e)),
            SqlError::Store(e) => e,
        }
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
    /// applies the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::open(url).await?)
    }

    async fn open(url: &str) -> R<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()).into());
        };
        let mut url = url.to_owned();
        let mut options = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_path(&url) {
                if let Some(dir) = std::path::Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
            }
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let upserts = crate::batch::spawn_writer(pool.clone());
        Ok(Self { pool, backend, upserts })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
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
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(SqlError::from)?;
        Ok(())
    }

    async fn apps(&self) -> Result<Vec<AppRow>> {
        Ok(admin::apps(self).await?)
    }

    async fn app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(admin::app(self, name).await?)
    }

    async fn create_app(&self, new: &NewApp, public_key: &str, private_key: &str, now: i64) -> Result<Option<AppRow>> {
        Ok(admin::create_app(self, new, public_key, private_key, now).await?)
    }

    async fn current_vapid_key(&self, app: AppId) -> Result<Option<VapidKeyRow>> {
        Ok(admin::current_vapid_key(self, app).await?)
    }

    async fn make_vapid_key_current(
        &self,
        app: AppId,
        public_key: &str,
        private_key: &str,
        now: i64,
    ) -> Result<VapidKeyRow> {
        Ok(admin::make_vapid_key_current(self, app, public_key, private_key, now).await?)
    }

    async fn add_vapid_key(&self, app: AppId, public_key: &str, private_key: &str, now: i64) -> Result<VapidKeyRow> {
        Ok(admin::add_vapid_key(self, app, public_key, private_key, now).await?)
    }

    async fn vapid_key(&self, id: i64) -> Result<Option<VapidKeyRow>> {
        Ok(admin::vapid_key(self, id).await?)
    }

    async fn vapid_key_id(&self, app: AppId, public_key: &str) -> Result<Option<i64>> {
        Ok(admin::vapid_key_id(self, app, public_key).await?)
    }

    async fn vapid_keys(&self, app: AppId) -> Result<Vec<VapidKeyInfo>> {
        Ok(admin::vapid_keys(self, app).await?)
    }

    async fn retire_vapid_key(&self, app: AppId, id: i64, force: bool, now: i64) -> Result<RetireKey> {
        Ok(admin::retire_vapid_key(self, app, id, force, now).await?)
    }

    async fn upsert_subscription(&self, new: &NewSubscription, now: i64) -> Result<StoredSubscription> {
        Ok(subscriptions::upsert(self, new, now).await?)
    }

    async fn upsert_subscriptions(&self, new: &[NewSubscription], now: i64) -> Result<Vec<StoredSubscription>> {
        Ok(subscriptions::upsert_all(self, new, now).await?)
    }

    async fn delete_subscription_by_endpoint(&self, app: AppId, endpoint: &str, auth: &str, now: i64) -> Result<bool> {
        Ok(subscriptions::delete_by_endpoint(self, app, endpoint, auth, now).await?)
    }

    async fn subscription_by_endpoint(&self, app: AppId, endpoint: &str) -> Result<Option<StoredSubscription>> {
        Ok(subscriptions::by_endpoint(self, app, endpoint).await?)
    }

    async fn add_event(
        &self,
        app: AppId,
        message_id: &str,
        recipient: &str,
        event: Event,
        action: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        Ok(messages::add_event(self, app, message_id, recipient, event, action, now).await?)
    }

    async fn delete_subscription(&self, app: AppId, id: i64, now: i64) -> Result<bool> {
        Ok(subscriptions::delete(self, app, id, now).await?)
    }

    async fn replace_subscription(&self, app: AppId, old_id: i64, new_id: i64, now: i64) -> Result<bool> {
        Ok(subscriptions::replace(self, app, old_id, new_id, now).await?)
    }

    async fn count_by_host(&self, app: AppId) -> Result<Vec<(String, i64)>> {
        Ok(admin::count_by_host(self, app).await?)
    }

    async fn daily_stats(&self, app: AppId, first_day: i64, last_day: i64) -> Result<Vec<DailyStats>> {
        Ok(admin::daily(self, app, first_day, last_day).await?)
    }

    async fn app_subscription(&self, app: AppId, id: i64) -> Result<Option<StoredSubscription>> {
        Ok(subscriptions::get(self, Some(app), id).await?)
    }

    async fn subscription(&self, id: i64) -> Result<Option<StoredSubscription>> {
        Ok(subscriptions::get(self, None, id).await?)
    }

    async fn page_subscriptions(
        &self,
        app: AppId,
        target: &Target,
        after: i64,
        upto: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PageRow>> {
        Ok(subscriptions::page(self, app, target, after, upto, limit).await?)
    }

    async fn count_subscriptions(&self, app: AppId, target: &Target) -> Result<i64> {
        Ok(subscriptions::count(self, app, target).await?)
    }

    async fn insert_message(&self, new: &NewMessage) -> Result<(Message, bool)> {
        Ok(messages::insert(self, new).await?)
    }

    async fn app_message(&self, app: AppId, id: &str) -> Result<Option<Message>> {
        Ok(messages::get(self, Some(app), id).await?)
    }

    async fn message(&self, id: &str) -> Result<Option<Message>> {
        Ok(messages::get(self, None, id).await?)
    }

    async fn list_messages(&self, app: AppId, before: Option<&str>, limit: i64) -> Result<Vec<Message>> {
        Ok(messages::list(self, app, before, limit).await?)
    }

    async fn cancel_message(&self, app: AppId, id: &str, now: i64) -> Result<Option<Message>> {
        Ok(messages::cancel(self, app, id, now).await?)
    }

    async fn start_message(&self, id: &str, target: &Target, shard_size: i64, now: i64) -> Result<bool> {
        Ok(messages::start(self, id, target, shard_size, now).await?)
    }

    async fn next_startable_message(&self, now: i64) -> Result<Option<Message>> {
        Ok(messages::next_startable(self, now).await?)
    }

    async fn claim_shard(&self, claim: &Claim, now: i64, lease_ms: i64) -> Result<Option<Shard>> {
        Ok(work::claim_shard(self, claim, now, lease_ms).await?)
    }

    async fn renew_shard(&self, shard: &Shard, now: i64, lease_ms: i64) -> Result<bool> {
        Ok(work::renew_shard(self, shard, now, lease_ms).await?)
    }

    async fn checkpoint_shard(
        &self,
        shard: &Shard,
        progress: &ShardProgress,
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<Option<MessageState>> {
        Ok(work::checkpoint_shard(self, shard, progress, outcome, now).await?)
    }

    async fn claim_retries(&self, claim: &Claim, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<RetryItem>> {
        Ok(work::claim_retries(self, claim, now, lease_ms, limit).await?)
    }

    async fn renew_retries(&self, token: &str, now: i64, lease_ms: i64) -> Result<bool> {
        Ok(work::renew_retries(self, token, now, lease_ms).await?)
    }

    async fn record_retries(
        &self,
        message_id: &str,
        token: &str,
        items: &[RetryItem],
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<bool> {
        Ok(work::record_retries(self, message_id, token, items, outcome, now).await?)
    }

    async fn try_finish_message(&self, id: &str, now: i64) -> Result<bool> {
        Ok(messages::try_finish(self, id, now).await?)
    }

    async fn sending_message_ids(&self) -> Result<Vec<String>> {
        Ok(messages::sending_ids(self).await?)
    }

    async fn message_failure_examples(&self, id: &str) -> Result<Vec<(String, String)>> {
        Ok(messages::failure_examples(self, id).await?)
    }

    async fn message_failures(&self, id: &str) -> Result<Vec<(String, i64)>> {
        Ok(messages::failures(self, id).await?)
    }

    async fn insert_token(
        &self,
        name: &str,
        hash: &str,
        scope: TokenScope,
        app: Option<AppId>,
        now: i64,
    ) -> Result<()> {
        Ok(admin::insert_token(self, name, hash, scope, app, now).await?)
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(admin::token(self, hash).await?)
    }

    async fn touch_token(&self, hash: &str, now: i64) -> Result<()> {
        Ok(admin::touch_token(self, hash, now).await?)
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        Ok(admin::tokens(self).await?)
    }

    async fn revoke_token(&self, name: &str) -> Result<u64> {
        Ok(admin::revoke_token(self, name).await?)
    }

    async fn server_secret(&self, name: &str, candidate: &str) -> Result<String> {
        Ok(admin::server_secret(self, name, candidate).await?)
    }

    async fn purge_messages(&self, before: i64, limit: i64) -> Result<u64> {
        Ok(messages::purge(self, before, limit).await?)
    }

    async fn stats(&self, app: AppId) -> Result<Stats> {
        Ok(admin::stats(self, app).await?)
    }
}
