//! What the operator's side keeps: apps, their VAPID keys, token hashes, totals.

use sqlx::Row;

use super::mapping::{key_from_row, KEY_COLUMNS};
use super::{SqlStore, R};
use crate::tocsin_audience::rules::DeliveryRules;
use crate::{
    AppId, AppRow, DailyStats, NewApp, RetireKey, Stats, StoreError, TokenRow, TokenScope, VapidKeyInfo, VapidKeyRow,
};

fn app_from_row(row: &sqlx::any::AnyRow) -> R<AppRow> {
    let origins: Option<String> = row.try_get("cors_origins")?;
    Ok(AppRow {
        id: AppId(row.try_get("id")?),
        name: row.try_get("name")?,
        vapid_subject: row.try_get("vapid_subject")?,
        user_signing_secret: row.try_get("user_signing_secret")?,
        cors_origins: origins.map(|o| serde_json::from_str(&o)).transpose().map_err(super::mapping::corrupt)?,
        client_tags: row.try_get::<Option<i64>, _>("client_tags")?.map(|v| v != 0),
        rules: DeliveryRules::from_stored(row.try_get::<Option<String>, _>("delivery_rules")?.as_deref()),
        created_at: row.try_get("created_at")?,
    })
}

const APP_COLUMNS: &str =
    "id, name, vapid_subject, user_signing_secret, cors_origins, client_tags, delivery_rules, created_at";

pub(super) async fn apps(store: &SqlStore) -> R<Vec<AppRow>> {
    let rows = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY id")).fetch_all(&store.pool).await?;
    rows.iter().map(app_from_row).collect()
}

pub(super) async fn app(store: &SqlStore, name: &str) -> R<Option<AppRow>> {
    let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1"))
        .bind(name)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(app_from_row).transpose()
}

pub(super) async fn app_rules(store: &SqlStore, app: AppId) -> R<DeliveryRules> {
    let row =
        sqlx::query("SELECT delivery_rules FROM apps WHERE id = $1").bind(app.0).fetch_optional(&store.pool).await?;
    let text: Option<String> = match row {
        Some(r) => r.try_get("delivery_rules")?,
        None => None,
    };
    Ok(DeliveryRules::from_stored(text.as_deref()))
}

pub(super) async fn set_app_rules(store: &SqlStore, app: AppId, rules: &DeliveryRules) -> R<bool> {
    let r = sqlx::query("UPDATE apps SET delivery_rules = $1 WHERE id = $2")
        .bind(rules.to_stored())
        .bind(app.0)
        .execute(&store.pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn create_app(
    store: &SqlStore,
    new: &NewApp,
    public_key: &str,
    private_key: &str,
    now: i64,
) -> R<Option<AppRow>> {
    let origins = new.cors_origins.as_ref().map(serde_json::to_string).transpose().map_err(super::mapping::corrupt)?;
    let mut tx = store.write_tx().await?;
    let row = sqlx::query(&format!(
        "INSERT INTO apps (name, vapid_subject, user_signing_secret, cors_origins, created_at, client_tags) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING {APP_COLUMNS}"
    ))
    .bind(new.name.as_str())
    .bind(new.vapid_subject.as_deref())
    .bind(new.user_signing_secret.as_deref())
    .bind(origins)
    .bind(now)
    .bind(new.client_tags.map(i64::from))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let app = app_from_row(&row)?;
    sqlx::query(
        "INSERT INTO vapid_keys (public_key, private_key, is_current, created_at, app_id) VALUES ($1, $2, 1, $3, $4)",
    )
    .bind(public_key)
    .bind(private_key)
    .bind(now)
    .bind(app.id.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(app))
}

pub(super) async fn current_vapid_key(store: &SqlStore, app: AppId) -> R<Option<VapidKeyRow>> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM vapid_keys k JOIN apps a ON a.id = k.app_id \
         WHERE k.app_id = $1 AND k.is_current = 1 ORDER BY k.id DESC LIMIT 1"
    ))
    .bind(app.0)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

/// Stores a key of `app` (current or not), or finds it by its public key.
async fn put_vapid_key(
    store: &SqlStore,
    app: AppId,
    public_key: &str,
    private_key: &str,
    current: bool,
    now: i64,
) -> R<VapidKeyRow> {
    let mut tx = store.write_tx().await?;
    let owner = sqlx::query("SELECT app_id FROM vapid_keys WHERE public_key = $1")
        .bind(public_key)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(owner) = owner {
        if owner.try_get::<i64, _>("app_id")? != app.0 {
            return Err(StoreError::Conflict("this VAPID key belongs to another app".into()).into());
        }
    }
    if current {
        sqlx::query("UPDATE vapid_keys SET is_current = 0 WHERE app_id = $1 AND is_current = 1")
            .bind(app.0)
            .execute(&mut *tx)
            .await?;
    }
    let (flag, update) = match current {
        true => (1, "is_current = 1, private_key = excluded.private_key"),
        false => (0, "private_key = excluded.private_key"),
    };
    let row = sqlx::query(&format!(
        "INSERT INTO vapid_keys (public_key, private_key, is_current, created_at, app_id) \
         VALUES ($1, $2, {flag}, $3, $4) ON CONFLICT (public_key) DO UPDATE SET {update} RETURNING id"
    ))
    .bind(public_key)
    .bind(private_key)
    .bind(now)
    .bind(app.0)
    .fetch_one(&mut *tx)
    .await?;
    let id: i64 = row.try_get("id")?;
    tx.commit().await?;
    vapid_key(store, id).await?.ok_or_else(|| StoreError::Corrupt("a key just stored is missing".into()).into())
}

pub(super) async fn make_vapid_key_current(
    store: &SqlStore,
    app: AppId,
    public_key: &str,
    private_key: &str,
    now: i64,
) -> R<VapidKeyRow> {
    put_vapid_key(store, app, public_key, private_key, true, now).await
}

pub(super) async fn add_vapid_key(
    store: &SqlStore,
    app: AppId,
    public_key: &str,
    private_key: &str,
    now: i64,
) -> R<VapidKeyRow> {
    put_vapid_key(store, app, public_key, private_key, false, now).await
}

pub(super) async fn vapid_key(store: &SqlStore, id: i64) -> R<Option<VapidKeyRow>> {
    let row =
        sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM vapid_keys k JOIN apps a ON a.id = k.app_id WHERE k.id = $1"))
            .bind(id)
            .fetch_optional(&store.pool)
            .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn vapid_key_id(store: &SqlStore, app: AppId, public_key: &str) -> R<Option<i64>> {
    let row = sqlx::query("SELECT id FROM vapid_keys WHERE public_key = $1 AND app_id = $2")
        .bind(public_key)
        .bind(app.0)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}

pub(super) async fn vapid_keys(store: &SqlStore, app: AppId) -> R<Vec<VapidKeyInfo>> {
    let rows = sqlx::query(
        "SELECT k.id, k.public_key, CAST(k.is_current AS BIGINT) AS is_current, k.created_at, \
           (SELECT COUNT(*) FROM subscriptions s WHERE s.vapid_key_id = k.id) AS n \
         FROM vapid_keys k WHERE k.app_id = $1 ORDER BY k.id",
    )
    .bind(app.0)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(VapidKeyInfo {
                id: r.try_get("id")?,
                public_key: r.try_get("public_key")?,
                current: r.try_get::<i64, _>("is_current")? != 0,
                created_at: r.try_get("created_at")?,
                subscriptions: r.try_get("n")?,
            })
        })
        .collect()
}

pub(super) async fn retire_vapid_key(store: &SqlStore, app: AppId, id: i64, force: bool, now: i64) -> R<RetireKey> {
    let mut tx = store.write_tx().await?;
    // The write first: SQLite takes its write lock at once, and a
    // subscription made with the key meanwhile waits for this transaction.
    sqlx::query("UPDATE vapid_keys SET created_at = created_at WHERE id = $1 AND app_id = $2")
        .bind(id)
        .bind(app.0)
        .execute(&mut *tx)
        .await?;
    let key =
        sqlx::query("SELECT CAST(is_current AS BIGINT) AS is_current FROM vapid_keys WHERE id = $1 AND app_id = $2")
            .bind(id)
            .bind(app.0)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(key) = key else { return Ok(RetireKey::NotFound) };
    if key.try_get::<i64, _>("is_current")? != 0 {
        return Ok(RetireKey::Current);
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions WHERE vapid_key_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    if n > 0 && !force {
        return Ok(RetireKey::InUse(n));
    }
    let removed =
        sqlx::query("DELETE FROM subscriptions WHERE vapid_key_id = $1 RETURNING id, endpoint, app_id, created_at")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    super::removals::count_removed(&mut tx, &removed, "key-retired", now).await?;
    sqlx::query("DELETE FROM vapid_keys WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(RetireKey::Retired { removed: n })
}

pub(super) async fn insert_token(
    store: &SqlStore,
    name: &str,
    hash: &str,
    scope: TokenScope,
    app: Option<AppId>,
    now: i64,
) -> R<()> {
    // The app is checked in the statement: PostgreSQL's foreign key would
    // refuse an unknown one, but SQLite's column (added by migration 0007)
    // has none, and both must answer the same.
    let inserted = sqlx::query(
        "INSERT INTO admin_tokens (name, token_hash, scope, created_at, app_id) SELECT $1, $2, $3, $4, $5 \
         WHERE CAST($5 AS BIGINT) IS NULL OR EXISTS (SELECT 1 FROM apps WHERE id = $5)",
    )
    .bind(name)
    .bind(hash)
    .bind(scope.as_str())
    .bind(now)
    .bind(app.map(|a| a.0))
    .execute(&store.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!("there is no app {}", app.map_or(0, |a| a.0))).into());
    }
    Ok(())
}

fn token_from_row(row: &sqlx::any::AnyRow) -> R<TokenRow> {
    let scope: String = row.try_get("scope")?;
    Ok(TokenRow {
        name: row.try_get("name")?,
        scope: TokenScope::parse(&scope).ok_or_else(|| super::mapping::corrupt(format!("token scope {scope:?}")))?,
        app: row.try_get::<Option<i64>, _>("app_id")?.map(AppId),
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

pub(super) async fn token(store: &SqlStore, hash: &str) -> R<Option<TokenRow>> {
    let row =
        sqlx::query("SELECT name, scope, created_at, last_used_at, app_id FROM admin_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&store.pool)
            .await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn touch_token(store: &SqlStore, hash: &str, now: i64) -> R<()> {
    sqlx::query("UPDATE admin_tokens SET last_used_at = $1 WHERE token_hash = $2")
        .bind(now)
        .bind(hash)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn tokens(store: &SqlStore) -> R<Vec<TokenRow>> {
    let rows =
        sqlx::query("SELECT name, scope, created_at, last_used_at, app_id FROM admin_tokens ORDER BY created_at, id")
            .fetch_all(&store.pool)
            .await?;
    rows.iter().map(token_from_row).collect()
}

pub(super) async fn revoke_token(store: &SqlStore, name: &str) -> R<u64> {
    let r = sqlx::query("DELETE FROM admin_tokens WHERE name = $1").bind(name).execute(&store.pool).await?;
    Ok(r.rows_affected())
}

pub(super) async fn server_secret(store: &SqlStore, name: &str, candidate: &str) -> R<String> {
    sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(candidate)
        .execute(&store.pool)
        .await?;
    let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_one(&store.pool).await?;
    Ok(row.try_get("value")?)
}

pub(super) async fn stats(store: &SqlStore, app: AppId) -> R<Stats> {
    let subs = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions WHERE app_id = $1")
        .bind(app.0)
        .fetch_one(&store.pool)
        .await?;
    let msgs = sqlx::query(
        "SELECT COUNT(*) AS n, \
           CAST(COALESCE(SUM(CASE WHEN state IN ('scheduled', 'queued', 'sending') THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
           CAST(COALESCE(SUM(delivered), 0) AS BIGINT) AS delivered, CAST(COALESCE(SUM(failed), 0) AS BIGINT) AS failed, \
           CAST(COALESCE(SUM(gone + expired), 0) AS BIGINT) AS removed FROM messages WHERE app_id = $1",
    )
    .bind(app.0)
    .fetch_one(&store.pool)
    .await?;
    let purged = sqlx::query("SELECT messages, delivered, failed, removed FROM purged_totals WHERE id = $1")
        .bind(app.0)
        .fetch_optional(&store.pool)
        .await?;
    let get = |name: &str| -> R<i64> { Ok(msgs.try_get::<i64, _>(name)?) };
    let stored = Stats {
        subscriptions: subs.try_get("n")?,
        messages: get("n")?,
        messages_pending: get("pending")?,
        delivered: get("delivered")?,
        failed: get("failed")?,
        removed: get("removed")?,
    };
    let purged = match purged {
        Some(p) => Stats {
            messages: p.try_get("messages")?,
            delivered: p.try_get("delivered")?,
            failed: p.try_get("failed")?,
            removed: p.try_get("removed")?,
            ..Stats::default()
        },
        None => Stats::default(),
    };
    Ok(stored.plus_purged(&purged))
}

/// Per UTC day from `first_day` to `last_day` (days since the epoch) of
/// `app`: subscriptions created (live ones, and those removed since) and
/// removed, and messages created with their counts.
pub(super) async fn daily(store: &SqlStore, app: AppId, first_day: i64, last_day: i64) -> R<Vec<DailyStats>> {
    use crate::DAY_MS;
    let (from, to) = (first_day * DAY_MS, (last_day + 1) * DAY_MS);
    let mut days: std::collections::BTreeMap<i64, DailyStats> =
        (first_day..=last_day).map(|day| (day, DailyStats { day, ..DailyStats::default() })).collect();
    let live = sqlx::query(&format!(
        "SELECT CAST(created_at / {DAY_MS} AS BIGINT) AS day, COUNT(*) AS n FROM subscriptions \
         WHERE app_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY created_at / {DAY_MS}"
    ))
    .bind(app.0)
    .bind(from)
    .bind(to)
    .fetch_all(&store.pool)
    .await?;
    for r in &live {
        if let Some(d) = days.get_mut(&r.try_get::<i64, _>("day")?) {
            d.subscribed += r.try_get::<i64, _>("n")?;
        }
    }
    let counted = sqlx::query(
        "SELECT day, unsubscribed, removed_created FROM daily_counts WHERE app_id = $1 AND day >= $2 AND day <= $3",
    )
    .bind(app.0)
    .bind(first_day)
    .bind(last_day)
    .fetch_all(&store.pool)
    .await?;
    for r in &counted {
        if let Some(d) = days.get_mut(&r.try_get::<i64, _>("day")?) {
            d.subscribed += r.try_get::<i64, _>("removed_created")?;
            d.unsubscribed += r.try_get::<i64, _>("unsubscribed")?;
        }
    }
    let sent = sqlx::query(&format!(
        "SELECT CAST(created_at / {DAY_MS} AS BIGINT) AS day, COUNT(*) AS n, \
           CAST(COALESCE(SUM(delivered), 0) AS BIGINT) AS delivered, CAST(COALESCE(SUM(shown), 0) AS BIGINT) AS shown, \
           CAST(COALESCE(SUM(clicked), 0) AS BIGINT) AS clicked \
         FROM messages WHERE app_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY created_at / {DAY_MS}"
    ))
    .bind(app.0)
    .bind(from)
    .bind(to)
    .fetch_all(&store.pool)
    .await?;
    for r in &sent {
        if let Some(d) = days.get_mut(&r.try_get::<i64, _>("day")?) {
            d.sent += r.try_get::<i64, _>("n")?;
            d.delivered += r.try_get::<i64, _>("delivered")?;
            d.shown += r.try_get::<i64, _>("shown")?;
            d.clicked += r.try_get::<i64, _>("clicked")?;
        }
    }
    Ok(days.into_values().collect())
}

pub(super) async fn count_by_host(store: &SqlStore, app: AppId) -> R<Vec<(String, i64)>> {
    // The endpoint's authority: what follows "://" up to the next "/".
    let host = match store.backend {
        super::Backend::Sqlite => {
            "substr(substr(endpoint, instr(endpoint, '://') + 3), 1, \
               instr(substr(endpoint, instr(endpoint, '://') + 3) || '/', '/') - 1)"
        }
        super::Backend::Postgres => "split_part(substr(endpoint, strpos(endpoint, '://') + 3), '/', 1)",
    };
    let rows = sqlx::query(&format!(
        "SELECT {host} AS host, COUNT(*) AS n FROM subscriptions WHERE app_id = $1 GROUP BY {host} ORDER BY 1"
    ))
    .bind(app.0)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("host")?, r.try_get("n")?))).collect()
}
