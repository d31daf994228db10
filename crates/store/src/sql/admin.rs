//! What the operator's side keeps: VAPID keys, admin token hashes, totals.

use sqlx::Row;

use super::rows::key_from_row;
use super::{SqlStore, R};
use crate::{Stats, TokenRow, TokenScope, VapidKeyRow};

pub(super) async fn current_vapid_key(store: &SqlStore) -> R<Option<VapidKeyRow>> {
    let row =
        sqlx::query("SELECT id, public_key, private_key FROM vapid_keys WHERE is_current = 1 ORDER BY id DESC LIMIT 1")
            .fetch_optional(&store.pool)
            .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn make_vapid_key_current(
    store: &SqlStore,
    public_key: &str,
    private_key: &str,
    now: i64,
) -> R<VapidKeyRow> {
    let mut tx = store.pool.begin().await?;
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

pub(super) async fn vapid_key(store: &SqlStore, id: i64) -> R<Option<VapidKeyRow>> {
    let row = sqlx::query("SELECT id, public_key, private_key FROM vapid_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn insert_token(store: &SqlStore, name: &str, hash: &str, scope: TokenScope, now: i64) -> R<()> {
    sqlx::query("INSERT INTO admin_tokens (name, token_hash, scope, created_at) VALUES ($1, $2, $3, $4)")
        .bind(name)
        .bind(hash)
        .bind(scope.as_str())
        .bind(now)
        .execute(&store.pool)
        .await?;
    Ok(())
}

fn token_from_row(row: &sqlx::any::AnyRow) -> R<TokenRow> {
    let scope: String = row.try_get("scope")?;
    Ok(TokenRow {
        name: row.try_get("name")?,
        scope: TokenScope::parse(&scope).ok_or_else(|| super::rows::corrupt(format!("token scope {scope:?}")))?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

pub(super) async fn token(store: &SqlStore, hash: &str) -> R<Option<TokenRow>> {
    let row = sqlx::query("SELECT name, scope, created_at, last_used_at FROM admin_tokens WHERE token_hash = $1")
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
    let rows = sqlx::query("SELECT name, scope, created_at, last_used_at FROM admin_tokens ORDER BY created_at, id")
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

pub(super) async fn stats(store: &SqlStore) -> R<Stats> {
    let subs = sqlx::query("SELECT COUNT(*) AS n FROM subscriptions").fetch_one(&store.pool).await?;
    let msgs = sqlx::query(
        "SELECT COUNT(*) AS n, \
           CAST(COALESCE(SUM(CASE WHEN state IN ('scheduled', 'queued', 'sending') THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
           CAST(COALESCE(SUM(delivered), 0) AS BIGINT) AS delivered, CAST(COALESCE(SUM(failed), 0) AS BIGINT) AS failed, \
           CAST(COALESCE(SUM(gone + expired), 0) AS BIGINT) AS removed FROM messages",
    )
    .fetch_one(&store.pool)
    .await?;
    let purged = sqlx::query("SELECT messages, delivered, failed, removed FROM purged_totals WHERE id = 1")
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
