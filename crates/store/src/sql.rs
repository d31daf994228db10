//! [`SqlStore`]: the store on SQLite or PostgreSQL through sqlx's `Any` driver.

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tocsin_protocol::subscription::{KeysJson, SubscriptionJson};
use tocsin_protocol::Subscription;

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

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const SUB_COLUMNS: &str =
    "s.id, s.endpoint, s.p256dh, s.auth, s.expiration_time, s.user_id, s.topics, s.vapid_key_id, s.created_at, s.updated_at";
/// [`SUB_COLUMNS`] for a `RETURNING` clause, which takes no table alias.
pub(crate) const SUB_RETURNING: &str =
    "id, endpoint, p256dh, auth, expiration_time, user_id, topics, vapid_key_id, created_at, updated_at";
const MSG_COLUMNS: &str =
    "id, payload, target, ttl, urgency, topic, send_at, state, created_at, updated_at, cursor, cursor_end, \
     targeted, delivered, failed, gone, expired, pending_retry, shown, clicked";

impl SqlStore {
    /// Connects (creating a SQLite file and its folder if needed) and
    /// applies the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let mut url = url.to_owned();
        let mut options = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_path(&url) {
                if let Some(dir) = std::path::Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
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

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn sub_from_row(row: &AnyRow) -> Result<StoredSubscription> {
    SubRow(
        row.try_get("id")?,
        row.try_get("endpoint")?,
        row.try_get("p256dh")?,
        row.try_get("auth")?,
        row.try_get("expiration_time")?,
        row.try_get("user_id")?,
        row.try_get("topics")?,
        row.try_get("vapid_key_id")?,
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
    )
    .into_stored()
}

/// A subscription row's [`SUB_COLUMNS`], in order: read from a row, or
/// from one element of a page aggregated as JSON ([`PAGE_SQLITE`]).
#[derive(serde::Deserialize)]
struct SubRow(i64, String, String, String, Option<i64>, Option<String>, String, i64, i64, i64);

impl SubRow {
    fn into_stored(self) -> Result<StoredSubscription> {
        let SubRow(id, endpoint, p256dh, auth, expiration_time, user_id, topics, vapid_key_id, created_at, updated_at) =
            self;
        let raw = SubscriptionJson {
            endpoint: Some(endpoint),
            expiration_time: expiration_time.map(Into::into),
            keys: Some(KeysJson { p256dh: Some(p256dh), auth: Some(auth) }),
        };
        Ok(StoredSubscription {
            id,
            subscription: Subscription::try_from(raw).map_err(corrupt)?,
            user_id,
            topics: serde_json::from_str(&topics).map_err(corrupt)?,
            vapid_key_id,
            created_at,
            updated_at,
        })
    }
}

/// A page of subscriptions as one row holding a JSON array, on SQLite.
///
/// sqlx's SQLite driver runs each connection on a thread of its own and
/// hands every result row over a channel, waking the reading task once per
/// row. A broadcast reads every subscription, so that was a thread switch
/// or two per delivery (about 0.8 per delivery measured, 5–8 % of the
/// CPU of a broadcast); one row per page makes it two per page.
const PAGE_SQLITE: &str = "json_group_array(json_array(id, endpoint, p256dh, auth, expiration_time, user_id, \
     topics, vapid_key_id, created_at, updated_at))";

fn msg_from_row(row: &AnyRow) -> Result<Message> {
    let target: String = row.try_get("target")?;
    let state: String = row.try_get("state")?;
    Ok(Message {
        id: row.try_get("id")?,
        payload: row.try_get("payload")?,
        target: serde_json::from_str(&target).map_err(corrupt)?,
        ttl: u32::try_from(row.try_get::<i64, _>("ttl")?).map_err(corrupt)?,
        urgency: row.try_get("urgency")?,
        topic: row.try_get("topic")?,
        send_at: row.try_get("send_at")?,
        state: MessageState::parse(&state).ok_or_else(|| corrupt(format!("message state {state:?}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        cursor: row.try_get("cursor")?,
        cursor_end: row.try_get("cursor_end")?,
        counts: Counts {
            targeted: row.try_get("targeted")?,
            delivered: row.try_get("delivered")?,
            failed: row.try_get("failed")?,
            gone: row.try_get("gone")?,
            expired: row.try_get("expired")?,
            pending_retry: row.try_get("pending_retry")?,
            shown: row.try_get("shown")?,
            clicked: row.try_get("clicked")?,
        },
    })
}

fn key_from_row(row: &AnyRow) -> Result<VapidKeyRow> {
    Ok(VapidKeyRow {
        id: row.try_get("id")?,
        public_key: row.try_get("public_key")?,
        private_key: row.try_get("private_key")?,
    })
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The `FROM … WHERE` of a target, with its parameters starting at `$1`.
fn target_sql(target: &Target) -> (String, usize) {
    match target {
        Target::All(_) => ("FROM subscriptions s WHERE 1 = 1".into(), 0),
        Target::Topic(_) => {
            ("FROM subscriptions s JOIN subscription_topics t ON t.subscription_id = s.id WHERE t.topic = $1".into(), 1)
        }
        Target::UserIds(ids) => (
            format!("FROM subscriptions s WHERE s.user_id IN ({})", placeholders(1, ids.len().max(1))),
            ids.len().max(1),
        ),
        Target::SubscriptionIds(ids) => {
            (format!("FROM subscriptions s WHERE s.id IN ({})", placeholders(1, ids.len().max(1))), ids.len().max(1))
        }
    }
}

fn bind_target<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    target: &'q Target,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    match target {
        Target::All(_) => {}
        Target::Topic(t) => q = q.bind(t.as_str()),
        Target::UserIds(ids) if ids.is_empty() => q = q.bind(""),
        Target::UserIds(ids) => {
            for id in ids {
                q = q.bind(id.as_str());
            }
        }
        Target::SubscriptionIds(ids) if ids.is_empty() => q = q.bind(-1i64),
        Target::SubscriptionIds(ids) => {
            for id in ids {
                q = q.bind(*id);
            }
        }
    }
    q
}

#[async_trait]
impl Store for SqlStore {
    fn bound_to_runtime(&self) -> bool {
        self.backend == Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn current_vapid_key(&self) -> Result<Option<VapidKeyRow>> {
        let row = sqlx::query(
            "SELECT id, public_key, private_key FROM vapid_keys WHERE is_current = 1 ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn make_vapid_key_current(&self, public_key: &str, private_key: &str, now: i64) -> Result<VapidKeyRow> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE vapid_keys SET is_current = 0 WHERE is_current = 1").execute(&mut *tx).await?;
        let row = sqlx::query(
            "INSERT INTO vapid_keys (public_key, private_key, is_current, created_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (public_key) DO UPDATE SET is_current = 1, private_key = excluded.private_key \
             RETURNING id, public_key, private_key",
        )
        .bind(public_key)
        .bind(private_key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        key_from_row(&row)
    }

    async fn vapid_key(&self, id: i64) -> Result<Option<VapidKeyRow>> {
        let row = sqlx::query("SELECT id, public_key, private_key FROM vapid_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn upsert_subscription(&self, new: &NewSubscription, now: i64) -> Result<StoredSubscription> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.upserts
            .send(crate::batch::Upsert { new: new.clone(), now, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn upsert_subscriptions(&self, new: &[NewSubscription], now: i64) -> Result<Vec<StoredSubscription>> {
        let items: Vec<(&NewSubscription, i64)> = new.iter().map(|n| (n, now)).collect();
        crate::batch::write_all(&self.pool, &items).await
    }

    async fn delete_subscription_by_endpoint(&self, endpoint: &str, auth: &str) -> Result<bool> {
        // The stored auth is normalised base64url; compare decoded bytes via
        // the normalised form the caller passes.
        let r = sqlx::query("DELETE FROM subscriptions WHERE endpoint = $1 AND auth = $2")
            .bind(endpoint)
            .bind(auth)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn subscription_by_endpoint(&self, endpoint: &str) -> Result<Option<StoredSubscription>> {
        let row = sqlx::query(&format!("SELECT {SUB_COLUMNS} FROM subscriptions s WHERE s.endpoint = $1"))
            .bind(endpoint)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sub_from_row).transpose()
    }

    async fn add_event(&self, message_id: &str, event: Event) -> Result<bool> {
        let sql = match event {
            Event::Shown => "UPDATE messages SET shown = shown + 1 WHERE id = $1",
            Event::Clicked => "UPDATE messages SET clicked = clicked + 1 WHERE id = $1",
        };
        Ok(sqlx::query(sql).bind(message_id).execute(&self.pool).await?.rows_affected() > 0)
    }

    async fn delete_subscription(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM subscriptions WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    async fn subscription(&self, id: i64) -> Result<Option<StoredSubscription>> {
        let row = sqlx::query(&format!("SELECT {SUB_COLUMNS} FROM subscriptions s WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sub_from_row).transpose()
    }

    async fn page_subscriptions(
        &self,
        target: &Target,
        after: i64,
        upto: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredSubscription>> {
        let (from, n) = target_sql(target);
        let page = format!(
            "SELECT {SUB_COLUMNS} {from} AND s.id > ${} AND s.id <= ${} ORDER BY s.id LIMIT ${}",
            n + 1,
            n + 2,
            n + 3
        );
        let sql = match self.backend {
            Backend::Sqlite => format!("SELECT {PAGE_SQLITE} AS page FROM ({page}) p"),
            Backend::Postgres => page,
        };
        let q = bind_target(sqlx::query(&sql), target).bind(after).bind(upto.unwrap_or(i64::MAX)).bind(limit);
        if self.backend == Backend::Postgres {
            let rows = q.fetch_all(&self.pool).await?;
            return rows.iter().map(sub_from_row).collect();
        }
        let json: String = q.fetch_one(&self.pool).await?.try_get("page")?;
        let rows: Vec<SubRow> = serde_json::from_str(&json).map_err(corrupt)?;
        let mut subs = rows.into_iter().map(SubRow::into_stored).collect::<Result<Vec<_>>>()?;
        // An aggregate's input order is not promised; the cursor needs id order.
        subs.sort_unstable_by_key(|s| s.id);
        Ok(subs)
    }

    async fn count_subscriptions(&self, target: &Target) -> Result<i64> {
        let (from, _) = target_sql(target);
        let sql = format!("SELECT COUNT(*) AS n {from}");
        let row = bind_target(sqlx::query(&sql), target).fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    async fn insert_message(&self, new: &NewMessage) -> Result<(Message, bool)> {
        if let Some(key) = &new.idempotency_key {
            let row = sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE idempotency_key = $1"))
                .bind(key.as_str())
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                return Ok((msg_from_row(&row)?, false));
            }
        }
        let state = if new.send_at.is_some_and(|t| t > new.created_at) {
            MessageState::Scheduled
        } else {
            MessageState::Queued
        };
        let target = serde_json::to_string(&new.target).map_err(corrupt)?;
        let inserted = sqlx::query(
            "INSERT INTO messages (id, payload, target, ttl, urgency, topic, send_at, state, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT DO NOTHING",
        )
        .bind(new.id.as_str())
        .bind(new.payload.clone())
        .bind(target)
        .bind(i64::from(new.ttl))
        .bind(new.urgency.as_deref())
        .bind(new.topic.as_deref())
        .bind(new.send_at)
        .bind(state.as_str())
        .bind(new.idempotency_key.as_deref())
        .bind(new.created_at)
        .execute(&self.pool)
        .await?;
        let created = inserted.rows_affected() > 0;
        // A concurrent request with the same idempotency key may have won.
        let row = match (&new.idempotency_key, created) {
            (Some(key), false) => {
                sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE idempotency_key = $1"))
                    .bind(key.as_str())
                    .fetch_one(&self.pool)
                    .await?
            }
            _ => {
                sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE id = $1"))
                    .bind(new.id.as_str())
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok((msg_from_row(&row)?, created))
    }

    async fn message(&self, id: &str) -> Result<Option<Message>> {
        let row = sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(msg_from_row).transpose()
    }

    async fn list_messages(&self, before: Option<&str>, limit: i64) -> Result<Vec<Message>> {
        let rows = match before {
            None => {
                sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages ORDER BY created_at DESC, id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(before) => {
                sqlx::query(&format!(
                    "SELECT {MSG_COLUMNS} FROM messages m WHERE (m.created_at, m.id) < \
                     (SELECT created_at, id FROM messages WHERE id = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(msg_from_row).collect()
    }

    async fn cancel_message(&self, id: &str, now: i64) -> Result<Option<Message>> {
        sqlx::query(
            "UPDATE messages SET state = 'cancelled', updated_at = $1 \
             WHERE id = $2 AND state IN ('scheduled', 'queued', 'sending')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.message(id).await
    }

    async fn start_message(&self, id: &str, target: &Target, shard_size: i64, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The write comes first, so SQLite takes its write lock at once.
        let r = sqlx::query(
            "UPDATE messages SET state = 'sending', updated_at = $1 WHERE id = $2 AND state IN ('scheduled', 'queued')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        let (from, _) = target_sql(target);
        let sql = format!("SELECT COUNT(*) AS n, CAST(COALESCE(MAX(s.id), 0) AS BIGINT) AS last {from}");
        let row = bind_target(sqlx::query(&sql), target).fetch_one(&mut *tx).await?;
        let (targeted, last): (i64, i64) = (row.try_get("n")?, row.try_get("last")?);
        sqlx::query("UPDATE messages SET targeted = $1, cursor_end = $2 WHERE id = $3")
            .bind(targeted)
            .bind(last)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if targeted > 0 {
            let shards = (targeted + shard_size.max(1) - 1) / shard_size.max(1);
            let width = (last + shards - 1) / shards;
            for i in 0..shards {
                let start_after = i * width;
                if start_after >= last {
                    break;
                }
                sqlx::query(
                    "INSERT INTO message_shards (message_id, shard, start_after, end_at, cursor) VALUES ($1, $2, $3, $4, $3)",
                )
                .bind(id)
                .bind(i)
                .bind(start_after)
                .bind(((i + 1) * width).min(last))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn next_startable_message(&self, now: i64) -> Result<Option<Message>> {
        let row = sqlx::query(&format!(
            "SELECT {MSG_COLUMNS} FROM messages WHERE state = 'queued' \
             OR (state = 'scheduled' AND send_at <= $1) ORDER BY created_at, id LIMIT 1"
        ))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(msg_from_row).transpose()
    }

    async fn claim_shard(&self, node: &str, now: i64, lease_ms: i64) -> Result<Option<Shard>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE OF s SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE message_shards SET lease_owner = $1, lease_until = $2 WHERE (message_id, shard) = ( \
               SELECT s.message_id, s.shard FROM message_shards s JOIN messages m ON m.id = s.message_id \
               WHERE s.done = 0 AND s.lease_until < $3 AND m.state = 'sending' \
               ORDER BY m.created_at, s.shard LIMIT 1 {lock}) \
             RETURNING message_id, shard, start_after, end_at, cursor"
        );
        let row = sqlx::query(&sql).bind(node).bind(now + lease_ms).bind(now).fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(Shard {
                message_id: r.try_get("message_id")?,
                shard: r.try_get("shard")?,
                start_after: r.try_get("start_after")?,
                end_at: r.try_get("end_at")?,
                cursor: r.try_get("cursor")?,
            })
        })
        .transpose()
    }

    async fn checkpoint_shard(
        &self,
        shard: &Shard,
        node: &str,
        progress: &ShardProgress,
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<Option<MessageState>> {
        let lease_until = if progress.done { 0 } else { now + progress.lease_ms };
        let only_delivered = outcome.failed.is_empty()
            && outcome.gone.is_empty()
            && outcome.expired.is_empty()
            && outcome.retries.is_empty();
        if self.backend == Backend::Postgres && only_delivered {
            // The usual page (everything delivered) in one statement, atomic on
            // its own: one round trip instead of four (BEGIN, two UPDATEs,
            // COMMIT). No row back means the lease was lost. SQLite has no
            // UPDATE inside WITH; its round trips stay in-process.
            let sql = format!(
                "WITH held AS ({SHARD_CHECKPOINT} RETURNING message_id) \
                 UPDATE messages SET delivered = delivered + $4, updated_at = $8 \
                 WHERE id = (SELECT message_id FROM held) RETURNING state"
            );
            let q = sqlx::query(&sql);
            let row = bind_checkpoint(q, shard, node, progress, lease_until, outcome).bind(now);
            let row = row.fetch_optional(&self.pool).await?;
            return row.map(|r| message_state(&r)).transpose();
        }
        let mut tx = self.pool.begin().await?;
        let q = bind_checkpoint(sqlx::query(SHARD_CHECKPOINT), shard, node, progress, lease_until, outcome);
        let held = q.execute(&mut *tx).await?;
        if held.rows_affected() == 0 {
            return Ok(None);
        }
        let state = apply_outcome(&mut tx, &shard.message_id, outcome, outcome.retries.len() as i64, now).await?;
        insert_retries(&mut tx, &shard.message_id, &outcome.retries).await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    async fn claim_retries(&self, node: &str, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<RetryItem>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE OF r SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE retries SET lease_owner = $1, lease_until = $2 WHERE (message_id, subscription_id) IN ( \
               SELECT r.message_id, r.subscription_id FROM retries r JOIN messages m ON m.id = r.message_id \
               WHERE r.due_at <= $3 AND r.lease_until < $3 AND m.state = 'sending' \
               ORDER BY r.due_at LIMIT $4 {lock}) \
             RETURNING message_id, subscription_id, attempt, reason"
        );
        let rows =
            sqlx::query(&sql).bind(node).bind(now + lease_ms).bind(now).bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(RetryItem {
                    message_id: r.try_get("message_id")?,
                    subscription_id: r.try_get("subscription_id")?,
                    attempt: r.try_get("attempt")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    async fn record_retries(
        &self,
        message_id: &str,
        items: &[RetryItem],
        outcome: &PageOutcome,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for item in items {
            sqlx::query("DELETE FROM retries WHERE message_id = $1 AND subscription_id = $2")
                .bind(message_id)
                .bind(item.subscription_id)
                .execute(&mut *tx)
                .await?;
        }
        insert_retries(&mut tx, message_id, &outcome.retries).await?;
        let pending_delta = outcome.retries.len() as i64 - items.len() as i64;
        apply_outcome(&mut tx, message_id, outcome, pending_delta, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn try_finish_message(&self, id: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE messages SET state = 'done', updated_at = $1 WHERE id = $2 AND state = 'sending' \
             AND NOT EXISTS (SELECT 1 FROM message_shards WHERE message_id = $2 AND done = 0) \
             AND NOT EXISTS (SELECT 1 FROM retries WHERE message_id = $2)",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn sending_message_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM messages WHERE state = 'sending' ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    async fn message_failures(&self, id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT reason, count FROM message_failures WHERE message_id = $1 ORDER BY reason")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("reason")?, r.try_get("count")?))).collect()
    }

    async fn insert_token(&self, name: &str, hash: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO admin_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_exists(&self, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM admin_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    async fn stats(&self) -> Result<Stats> {
        let subs = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions").fetch_one(&self.pool).await?;
        let msgs = sqlx::query(
            "SELECT COUNT(*) AS n, \
               CAST(COALESCE(SUM(CASE WHEN state IN ('scheduled', 'queued', 'sending') THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
               CAST(COALESCE(SUM(delivered), 0) AS BIGINT) AS delivered, CAST(COALESCE(SUM(failed), 0) AS BIGINT) AS failed, \
               CAST(COALESCE(SUM(gone + expired), 0) AS BIGINT) AS removed FROM messages",
        )
        .fetch_one(&self.pool)
        .await?;
        let get = |name: &str| -> Result<i64> { Ok(msgs.try_get::<i64, _>(name)?) };
        Ok(Stats {
            subscriptions: subs.try_get("n")?,
            messages: get("n")?,
            messages_pending: get("pending")?,
            delivered: get("delivered")?,
            failed: get("failed")?,
            removed: get("removed")?,
        })
    }
}

/// Schedules retries inside `tx` (a row already there is kept).
async fn insert_retries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    message_id: &str,
    retries: &[NewRetry],
) -> Result<()> {
    for r in retries {
        sqlx::query(
            "INSERT INTO retries (message_id, subscription_id, attempt, due_at, reason) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(message_id)
        .bind(r.subscription_id)
        .bind(r.attempt)
        .bind(r.due_at)
        .bind(r.reason.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Adds a page's outcome to a message inside `tx`: counters, failures by
/// reason, deleted subscriptions. Returns the message's state.
async fn apply_outcome(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    message_id: &str,
    outcome: &PageOutcome,
    pending_delta: i64,
    now: i64,
) -> Result<MessageState> {
    let row = sqlx::query(
        "UPDATE messages SET delivered = delivered + $1, failed = failed + $2, gone = gone + $3, \
         expired = expired + $4, pending_retry = pending_retry + $5, updated_at = $6 WHERE id = $7 RETURNING state",
    )
    .bind(outcome.delivered)
    .bind(outcome.failed_total())
    .bind(outcome.gone.len() as i64)
    .bind(outcome.expired.len() as i64)
    .bind(pending_delta)
    .bind(now)
    .bind(message_id)
    .fetch_one(&mut **tx)
    .await?;
    for (reason, n) in &outcome.failed {
        sqlx::query(
            "INSERT INTO message_failures (message_id, reason, count) VALUES ($1, $2, $3) \
             ON CONFLICT (message_id, reason) DO UPDATE SET count = message_failures.count + excluded.count",
        )
        .bind(message_id)
        .bind(reason.as_str())
        .bind(*n)
        .execute(&mut **tx)
        .await?;
    }
    for id in outcome.gone.iter().chain(&outcome.expired) {
        sqlx::query("DELETE FROM subscriptions WHERE id = $1").bind(*id).execute(&mut **tx).await?;
    }
    message_state(&row)
}

/// The `state` column of a row.
fn message_state(row: &AnyRow) -> Result<MessageState> {
    let state: String = row.try_get("state")?;
    MessageState::parse(&state).ok_or_else(|| corrupt(format!("message state {state:?}")))
}

/// A page's checkpoint of its shard: cursor, done, lease and delivered
/// count, only while `lease_owner` is still the node.
const SHARD_CHECKPOINT: &str =
    "UPDATE message_shards SET cursor = $1, done = $2, lease_until = $3, delivered = delivered + $4 \
     WHERE message_id = $5 AND shard = $6 AND lease_owner = $7";

/// Binds [`SHARD_CHECKPOINT`]'s `$1`…`$7`.
fn bind_checkpoint<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    shard: &'q Shard,
    node: &'q str,
    progress: &ShardProgress,
    lease_until: i64,
    outcome: &PageOutcome,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(progress.cursor)
        .bind(i64::from(progress.done))
        .bind(lease_until)
        .bind(outcome.delivered)
        .bind(shard.message_id.as_str())
        .bind(shard.shard)
        .bind(node)
}

#[cfg(test)]
mod tests {
    use crate::testutil::{new, on_both_backends, TestResult};
    use crate::*;

    type Broadcast = (Target, Shard, Vec<i64>);

    /// A started broadcast to `n` fresh subscriptions, one shard, claimed by node `a`.
    async fn claimed_broadcast(
        store: &SqlStore,
        key: i64,
        n: usize,
    ) -> std::result::Result<Broadcast, Box<dyn std::error::Error>> {
        let subs: Vec<NewSubscription> = (0..n)
            .map(|i| new(&format!("https://push.example.net/s/{i}"), None, None, key))
            .collect::<std::result::Result<_, _>>()?;
        let ids = store.upsert_subscriptions(&subs, 1).await?.into_iter().map(|s| s.id).collect();
        let target = Target::All(true);
        let message = NewMessage {
            id: "m1".into(),
            payload: None,
            target: target.clone(),
            ttl: 60,
            urgency: None,
            topic: None,
            send_at: None,
            idempotency_key: None,
            created_at: 1,
        };
        store.insert_message(&message).await?;
        assert!(store.start_message("m1", &target, 1000, 2).await?);
        let shard = store.claim_shard("a", 3, 60_000).await?.ok_or("no shard to claim")?;
        Ok((target, shard, ids))
    }

    #[tokio::test]
    async fn pages_come_in_id_order_and_end_empty() -> TestResult {
        on_both_backends(async |store, key| {
            let (target, shard, ids) = claimed_broadcast(store, key, 7).await?;
            let first = store.page_subscriptions(&target, shard.cursor, Some(shard.end_at), 4).await?;
            assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..4]);
            assert_eq!(first[0].subscription.endpoint().as_str(), "https://push.example.net/s/0");
            assert_eq!(first[0].vapid_key_id, key);
            let second = store.page_subscriptions(&target, ids[3], Some(shard.end_at), 4).await?;
            assert_eq!(second.iter().map(|s| s.id).collect::<Vec<_>>(), ids[4..]);
            let none = store.page_subscriptions(&target, ids[6], Some(shard.end_at), 4).await?;
            assert!(none.is_empty());
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn a_checkpoint_counts_only_while_the_lease_is_held() -> TestResult {
        on_both_backends(async |store, key| {
            let (_, shard, ids) = claimed_broadcast(store, key, 4).await?;
            let counts = async || -> std::result::Result<Counts, Box<dyn std::error::Error>> {
                Ok(store.message("m1").await?.ok_or("message m1 is missing")?.counts)
            };
            let delivered = PageOutcome { delivered: 2, ..PageOutcome::default() };
            let progress = ShardProgress { cursor: ids[1], done: false, lease_ms: 60_000 };
            // Another node's checkpoint: refused, nothing counted.
            assert_eq!(store.checkpoint_shard(&shard, "b", &progress, &delivered, 4).await?, None);
            assert_eq!(counts().await?.delivered, 0);
            // The owner's, everything delivered (one statement on PostgreSQL).
            let state = store.checkpoint_shard(&shard, "a", &progress, &delivered, 4).await?;
            assert_eq!(state, Some(MessageState::Sending));
            // The owner's, with a failure, a gone subscription and a retry (a transaction).
            let mut mixed = PageOutcome { gone: vec![ids[2]], ..PageOutcome::default() };
            mixed.fail("http-400".into());
            mixed.retries.push(NewRetry { subscription_id: ids[3], attempt: 1, due_at: 10, reason: "http-503".into() });
            let done = ShardProgress { cursor: shard.end_at, done: true, lease_ms: 60_000 };
            let state = store.checkpoint_shard(&shard, "a", &done, &mixed, 5).await?;
            assert_eq!(state, Some(MessageState::Sending));
            let c = counts().await?;
            assert_eq!((c.delivered, c.failed, c.gone, c.pending_retry), (2, 1, 1, 1));
            assert!(store.subscription(ids[2]).await?.is_none(), "gone is deleted");
            // The shard is done: nobody can claim it again.
            assert!(store.claim_shard("b", 6, 60_000).await?.is_none());
            Ok(())
        })
        .await
    }
}
