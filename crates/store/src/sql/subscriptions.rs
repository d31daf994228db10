//! Subscriptions: upserts (through the group-commit writer), lookups,
//! deletions and the keyset pages a broadcast walks.

use sqlx::Row;

use super::mapping::{corrupt, sub_from_row, SubRow, PAGE_SQLITE, SUB_COLUMNS};
use super::target::target_sql;
use super::{Backend, SqlStore, R};
use crate::{AppId, NewSubscription, PageRow, StoreError, StoredSubscription, TagsOf, TagsPatched, Target};
use tocsin_audience::TagPatch;

pub(super) async fn upsert(store: &SqlStore, new: &NewSubscription, now: i64) -> R<StoredSubscription> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    store.upserts.send(super::batch::Upsert { new: new.clone(), now, reply }).await.map_err(|_| StoreError::Closed)?;
    Ok(answer.await.map_err(|_| StoreError::Closed)??)
}

pub(super) async fn upsert_all(store: &SqlStore, new: &[NewSubscription], now: i64) -> R<Vec<StoredSubscription>> {
    let items: Vec<(&NewSubscription, i64)> = new.iter().map(|n| (n, now)).collect();
    // A refused row fails the call; the rows accepted beside it are stored
    // (the CLI's import then writes row by row, which stores those again
    // unchanged and skips the refused ones).
    Ok(super::batch::write_all(&store.pool, &items).await?.into_iter().collect::<crate::Result<Vec<_>>>()?)
}

/// Runs a `DELETE … RETURNING id, endpoint, app_id, created_at`, counts
/// what it removed in `daily_counts` and writes its events (with
/// `reason`), in one transaction; true when a row went.
async fn delete_counted(store: &SqlStore, q: super::mapping::AnyQuery<'_>, reason: &str, now: i64) -> R<bool> {
    let mut tx = store.write_tx().await?;
    let removed = q.fetch_all(&mut *tx).await?;
    super::removals::count_removed(&mut tx, &removed, reason, now).await?;
    tx.commit().await?;
    Ok(!removed.is_empty())
}

pub(super) async fn delete_by_endpoint(store: &SqlStore, app: AppId, endpoint: &str, auth: &str, now: i64) -> R<bool> {
    // The secret is compared here, in constant time, not in SQL's `=`; the
    // `DELETE` then names the keys it saw, so a row re-keyed in between
    // (it cannot be, but a future path might) is not deleted on old proof.
    let Some(row) = sqlx::query("SELECT id, p256dh, auth FROM subscriptions WHERE endpoint = $1 AND app_id = $2")
        .bind(endpoint)
        .bind(app.0)
        .fetch_optional(&store.pool)
        .await?
    else {
        return Ok(false);
    };
    let (id, p256dh, stored): (i64, String, String) =
        (row.try_get("id")?, row.try_get("p256dh")?, row.try_get("auth")?);
    let proven = tocsin_protocol::b64::decode(&stored)
        .ok()
        .and_then(|s| <[u8; 16]>::try_from(s.as_slice()).ok())
        .is_some_and(|s| tocsin_protocol::AuthSecret::new(s).matches_base64(auth));
    if !proven {
        return Ok(false);
    }
    let q = sqlx::query(
        "DELETE FROM subscriptions WHERE id = $1 AND app_id = $2 AND p256dh = $3 AND auth = $4 \
         RETURNING id, endpoint, app_id, created_at",
    )
    .bind(id)
    .bind(app.0)
    .bind(p256dh)
    .bind(stored);
    delete_counted(store, q, "unsubscribed", now).await
}

/// The browser's new subscription `new_id` takes the place of `old_id`
/// (`oldEndpoint`): it keeps the old one's creation time, and the old one
/// goes without counting as an unsubscription.
pub(super) async fn replace(store: &SqlStore, app: AppId, old_id: i64, new_id: i64, now: i64) -> R<bool> {
    let mut tx = store.write_tx().await?;
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
    let new = sqlx::query(&format!("SELECT {SUB_COLUMNS} FROM subscriptions s WHERE s.id = $1"))
        .bind(new_id)
        .fetch_optional(&mut *tx)
        .await?;
    let new = new.as_ref().map(sub_from_row).transpose()?;
    let event = crate::NewEvent::new(
        app,
        crate::Event::SubscriptionUpdated(crate::event::SubscriptionUpdated {
            old_subscription_id: Some(old_id),
            old_endpoint: Some(old.try_get::<String, _>("endpoint")?),
            ..match &new {
                Some(new) => crate::event::SubscriptionUpdated::attributes_of(new),
                None => crate::event::SubscriptionUpdated {
                    subscription_id: new_id,
                    endpoint: None,
                    old_subscription_id: None,
                    old_endpoint: None,
                    tags: Default::default(),
                    language: None,
                    time_zone: None,
                },
            }
        }),
    );
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
    zones: Option<&crate::tocsin_audience::rules::ZoneFilter>,
    after: i64,
    upto: Option<i64>,
    limit: i64,
) -> R<Vec<PageRow>> {
    let mut conn = store.pool.acquire().await?;
    let mut t = target_sql(&mut conn, store.backend, app, target, crate::now_ms()).await?;
    if let Some(zones) = zones {
        t.and_zones(zones);
    }
    let n = t.next();
    let page = format!(
        "SELECT {SUB_COLUMNS} {} AND s.id > ${n} AND s.id <= ${} ORDER BY s.id LIMIT ${}",
        t.from,
        n + 1,
        n + 2
    );
    let sql = match store.backend {
        Backend::Sqlite => format!("SELECT {PAGE_SQLITE} AS page FROM ({page}) p"),
        Backend::Postgres => page,
    };
    let q = t.bind(sqlx::query(&sql)).bind(after).bind(upto.unwrap_or(i64::MAX)).bind(limit);
    if store.backend == Backend::Postgres {
        let rows = q.fetch_all(&mut *conn).await?;
        return rows.iter().map(|row| Ok(page_row(row.try_get("id")?, sub_from_row(row)))).collect();
    }
    let json: String = q.fetch_one(&mut *conn).await?.try_get("page")?;
    let mut subs: Vec<PageRow> = match serde_json::from_str::<Vec<SubRow>>(&json) {
        Ok(rows) => rows.into_iter().map(|r| page_row(r.0, r.into_stored())).collect(),
        // Some element is not even of the row's shape: read them one by
        // one (the usual page never comes here).
        Err(_) => serde_json::from_str::<Vec<serde_json::Value>>(&json)
            .map_err(corrupt)?
            .into_iter()
            .map(|v| {
                let id = v.get(0).and_then(serde_json::Value::as_i64).ok_or_else(|| corrupt("a row without an id"))?;
                let row =
                    serde_json::from_value::<SubRow>(v).map_err(|e| corrupt(e).into()).and_then(SubRow::into_stored);
                Ok(page_row(id, row))
            })
            .collect::<R<_>>()?,
    };
    // An aggregate's input order is not promised; the cursor needs id order.
    subs.sort_unstable_by_key(PageRow::id);
    Ok(subs)
}

/// A page's row: the subscription, or why the row with this id could not
/// be read.
fn page_row(id: i64, read: R<StoredSubscription>) -> PageRow {
    match read {
        Ok(sub) => PageRow::Sub(sub),
        Err(e) => PageRow::Unreadable { id, error: StoreError::from(e).to_string() },
    }
}

pub(super) async fn count(store: &SqlStore, app: AppId, target: &Target) -> R<i64> {
    let mut conn = store.pool.acquire().await?;
    let t = target_sql(&mut conn, store.backend, app, target, crate::now_ms()).await?;
    let sql = format!("SELECT COUNT(*) AS n {}", t.from);
    let row = t.bind(sqlx::query(&sql)).fetch_one(&mut *conn).await?;
    Ok(row.try_get("n")?)
}

/// A backend's change of tags: read the rows, merge in Rust (the 50-tag
/// bound is checked on the result), write each changed row back naming
/// the tags it read, so that a change another writer made meanwhile is
/// not overwritten (then the whole change is tried again, up to three
/// times), and write their `subscription.updated` events, in one
/// transaction.
pub(super) async fn patch_tags(
    store: &SqlStore,
    app: AppId,
    of: &TagsOf,
    patch: &TagPatch,
    now: i64,
) -> R<TagsPatched> {
    for _ in 0..3 {
        if let Some(done) = try_patch_tags(store, app, of, patch, now).await? {
            return Ok(done);
        }
    }
    Err(StoreError::Conflict("the tags were changed by another writer meanwhile; try again".into()).into())
}

async fn try_patch_tags(
    store: &SqlStore,
    app: AppId,
    of: &TagsOf,
    patch: &TagPatch,
    now: i64,
) -> R<Option<TagsPatched>> {
    let mut tx = store.write_tx().await?;
    let sql = |filter: &str| {
        format!("SELECT {SUB_COLUMNS} FROM subscriptions s WHERE s.app_id = $1 AND {filter} ORDER BY s.id")
    };
    let rows = match of {
        TagsOf::Subscription(id) => sqlx::query(&sql("s.id = $2")).bind(app.0).bind(*id).fetch_all(&mut *tx).await?,
        TagsOf::User(user) => {
            sqlx::query(&sql("s.user_id = $2")).bind(app.0).bind(user.as_str()).fetch_all(&mut *tx).await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut events = Vec::new();
    for row in &rows {
        let mut sub = sub_from_row(row)?;
        let stored: Option<String> = row.try_get("tags")?;
        let tags = match patch.apply(&sub.tags) {
            Ok(tags) => tags,
            Err(e) => {
                let tags = e.would_carry().unwrap_or(tocsin_audience::tags::MAX_TAGS + 1);
                return Ok(Some(TagsPatched::TooMany { subscription_id: sub.id, tags }));
            }
        };
        if tags != sub.tags {
            let written = sqlx::query(
                "UPDATE subscriptions SET tags = $1, updated_at = $2 WHERE id = $3 AND tags IS NOT DISTINCT FROM $4",
            )
            .bind(tags.to_stored())
            .bind(now)
            .bind(sub.id)
            .bind(stored)
            .execute(&mut *tx)
            .await?;
            if written.rows_affected() != 1 {
                return Ok(None);
            }
            sub.tags = tags;
            sub.updated_at = now;
            events.push(crate::NewEvent::new(
                app,
                crate::Event::SubscriptionUpdated(crate::event::SubscriptionUpdated::attributes_of(&sub)),
            ));
        }
        out.push(sub);
    }
    super::events::emit(&mut tx, &events, now).await?;
    tx.commit().await?;
    Ok(Some(TagsPatched::Done(out)))
}
