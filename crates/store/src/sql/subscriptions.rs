//! Subscriptions: upserts (through the group-commit writer), lookups,
//! deletions and the keyset pages a broadcast walks.

use sqlx::Row;

use super::rows::{bind_target, corrupt, sub_from_row, target_sql, SubRow, PAGE_SQLITE, SUB_COLUMNS};
use super::{Backend, SqlStore, R};
use crate::{AppId, NewSubscription, StoreError, StoredSubscription, Target};

pub(super) async fn upsert(store: &SqlStore, new: &NewSubscription, now: i64) -> R<StoredSubscription> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    store.upserts.send(crate::batch::Upsert { new: new.clone(), now, reply }).await.map_err(|_| StoreError::Closed)?;
    Ok(answer.await.map_err(|_| StoreError::Closed)??)
}

pub(super) async fn upsert_all(store: &SqlStore, new: &[NewSubscription], now: i64) -> R<Vec<StoredSubscription>> {
    let items: Vec<(&NewSubscription, i64)> = new.iter().map(|n| (n, now)).collect();
    crate::batch::write_all(&store.pool, &items).await
}

/// Runs a `DELETE … RETURNING id, endpoint, app_id, created_at`, counts
/// what it removed in `daily_counts` and writes its events (with
/// `reason`), in one transaction; true when a row went.
async fn delete_counted(store: &SqlStore, q: super::rows::AnyQuery<'_>, reason: &str, now: i64) -> R<bool> {
    let mut tx = store.pool.begin().await?;
    let removed = q.fetch_all(&mut *tx).await?;
    super::rows::count_removed(&mut tx, &removed, reason, now).await?;
    tx.commit().await?;
    Ok(!removed.is_empty())
}

pub(super) async fn delete_by_endpoint(store: &SqlStore, app: AppId, endpoint: &str, auth: &str, now: i64) -> R<bool> {
    // The stored auth is normalised base64url, and so is what the caller passes.
    let q = sqlx::query(
        "DELETE FROM subscriptions WHERE endpoint = $1 AND auth = $2 AND app_id = $3 \
         RETURNING id, endpoint, app_id, created_at",
    )
    .bind(endpoint)
    .bind(auth)
    .bind(app.0);
    delete_counted(store, q, "unsubscribed", now).await
}

/// The browser's new subscription `new_id` takes the place of `old_id`
/// (`oldEndpoint`): it keeps the old one's creation time, and the old one
/// goes without counting as an unsubscription.
pub(super) async fn replace(store: &SqlStore, app: AppId, old_id: i64, new_id: i64, now: i64) -> R<bool> {
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "UPDATE subscriptions SET created_at = \
           (SELECT o.created_at FROM subscriptions o WHERE o.id = $1 AND o.app_id = $3) \
         WHERE id = $2 AND app_id = $3 AND EXISTS (SELECT 1 FROM subscriptions o WHERE o.id = $1 AND o.app_id = $3)",
    )
    .bind(old_id)
    .bind(new_id)
    .bind(app.0)
    .execute(&mut *tx)
    .await?;
    let old = sqlx::query("DELETE FROM subscriptions WHERE id = $1 AND app_id = $2 AND id <> $3 RETURNING endpoint")
        .bind(old_id)
        .bind(app.0)
        .bind(new_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(old) = old else { return Ok(false) };
    let new =
        sqlx::query("SELECT endpoint FROM subscriptions WHERE id = $1").bind(new_id).fetch_optional(&mut *tx).await?;
    let event = crate::NewEvent {
        app,
        kind: crate::EventType::SubscriptionUpdated,
        data: serde_json::json!({"subscriptionId": new_id, "endpoint": new.map(|r| r.try_get::<String, _>("endpoint")).transpose()?,
            "oldSubscriptionId": old_id, "oldEndpoint": old.try_get::<String, _>("endpoint")?}),
    };
    super::events::emit(&mut tx, &[event], now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn by_endpoint(store: &SqlStore, app: AppId, endpoint: &str) -> R<Option<StoredSubscription>> {
    let row =
        sqlx::query(&format!("SELECT {SUB_COLUMNS} FROM subscriptions s WHERE s.endpoint = $1 AND s.app_id = $2"))
            .bind(endpoint)
            .bind(app.0)
            .fetch_optional(&store.pool)
            .await?;
    row.as_ref().map(sub_from_row).transpose()
}

pub(super) async fn delete(store: &SqlStore, app: AppId, id: i64, now: i64) -> R<bool> {
    let q = sqlx::query(
        "DELETE FROM subscriptions WHERE id = $1 AND app_id = $2 RETURNING id, endpoint, app_id, created_at",
    )
    .bind(id)
    .bind(app.0);
    delete_counted(store, q, "deleted", now).await
}

/// One subscription by id: of `app` when given, else of any app (the engine).
pub(super) async fn get(store: &SqlStore, app: Option<AppId>, id: i64) -> R<Option<StoredSubscription>> {
    let row = sqlx::query(&format!(
        "SELECT {SUB_COLUMNS} FROM subscriptions s WHERE s.id = $1 AND ($2 = 0 OR s.app_id = $2)"
    ))
    .bind(id)
    .bind(app.map_or(0, |a| a.0))
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(sub_from_row).transpose()
}

pub(super) async fn page(
    store: &SqlStore,
    app: AppId,
    target: &Target,
    after: i64,
    upto: Option<i64>,
    limit: i64,
) -> R<Vec<StoredSubscription>> {
    let (from, n) = target_sql(target);
    let page = format!(
        "SELECT {SUB_COLUMNS} {from} AND s.id > ${} AND s.id <= ${} ORDER BY s.id LIMIT ${}",
        n + 1,
        n + 2,
        n + 3
    );
    let sql = match store.backend {
        Backend::Sqlite => format!("SELECT {PAGE_SQLITE} AS page FROM ({page}) p"),
        Backend::Postgres => page,
    };
    let q = bind_target(sqlx::query(&sql), app, target).bind(after).bind(upto.unwrap_or(i64::MAX)).bind(limit);
    if store.backend == Backend::Postgres {
        let rows = q.fetch_all(&store.pool).await?;
        return rows.iter().map(sub_from_row).collect();
    }
    let json: String = q.fetch_one(&store.pool).await?.try_get("page")?;
    let rows: Vec<SubRow> = serde_json::from_str(&json).map_err(corrupt)?;
    let mut subs = rows.into_iter().map(SubRow::into_stored).collect::<R<Vec<_>>>()?;
    // An aggregate's input order is not promised; the cursor needs id order.
    subs.sort_unstable_by_key(|s| s.id);
    Ok(subs)
}

pub(super) async fn count(store: &SqlStore, app: AppId, target: &Target) -> R<i64> {
    let (from, _) = target_sql(target);
    let sql = format!("SELECT COUNT(*) AS n {from}");
    let row = bind_target(sqlx::query(&sql), app, target).fetch_one(&store.pool).await?;
    Ok(row.try_get("n")?)
}
