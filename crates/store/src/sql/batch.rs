//! Group commit for subscription upserts.
//!
//! `POST /api/subscription` is the one write that arrives by the thousand per
//! second, and every answer must wait until its row is committed. One
//! transaction per request caps the rate at what the database can commit
//! (and, on SQLite, at its single writer). Instead every upsert is handed to
//! one writer task, which takes everything that queued up while it was busy,
//! writes it with one multi-row statement per chunk inside one transaction,
//! commits once, and only then answers each caller. A caller still learns of
//! its row only after the commit that holds it; under light load a batch is
//! one row and nothing waits.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tocsin_protocol::b64;
use tocsin_protocol::subscription::SubscriptionJson;
use tokio::sync::{mpsc, oneshot};

use super::mapping::SUB_RETURNING;
use super::placeholders;
use super::R as Result;
use crate::{NewSubscription, StoredSubscription};
use tocsin_audience::Tags;

/// The most upserts one transaction takes.
const MAX_BATCH: usize = 512;
/// Rows per statement (9 parameters each). Small on purpose: SQLite looks a
/// parameter up by walking a list, so binding costs grow with the square of
/// the parameters in one statement (`sqlite3_bind_parameter_name` took 3.7 %
/// of the server's CPU samples at 64 rows, 1.1 % at 16); 16 rows already
/// share one round trip.
const CHUNK: usize = 16;

pub(crate) struct Upsert {
    pub new: NewSubscription,
    pub now: i64,
    pub reply: oneshot::Sender<crate::Result<StoredSubscription>>,
}

/// Starts the writer task; upserts go into the returned sender.
pub(crate) fn spawn_writer(pool: AnyPool) -> mpsc::Sender<Upsert> {
    let (tx, mut rx) = mpsc::channel::<Upsert>(4 * MAX_BATCH);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let items = std::mem::take(&mut batch);
            write_batch(&pool, items).await;
        }
    });
    tx
}

async fn write_batch(pool: &AnyPool, mut items: Vec<Upsert>) {
    // A caller that stopped waiting (its store call timed out while the
    // database was away) has been answered 503: its row is not written
    // late, and a backlog built up during an outage drains at once.
    items.retain(|u| !u.reply.is_closed());
    if items.is_empty() {
        return;
    }
    let refs: Vec<(&NewSubscription, i64)> = items.iter().map(|u| (&u.new, u.now)).collect();
    match write_all(pool, &refs).await {
        Ok(rows) => {
            for (item, row) in items.into_iter().zip(rows) {
                let _ = item.reply.send(row);
            }
        }
        // A failed batch is written again one row at a time, so that a row
        // that cannot be stored fails alone, with its own error; unless the
        // database itself failed (away, or its disk full), which every row
        // would meet again.
        Err(e) => {
            let e: crate::StoreError = e.into();
            if e.is_transient() {
                for item in items {
                    let again = match &e {
                        crate::StoreError::StorageFull => crate::StoreError::StorageFull,
                        other => crate::StoreError::Unavailable(other.to_string()),
                    };
                    let _ = item.reply.send(Err(again));
                }
            } else if items.len() == 1 {
                if let Some(item) = items.into_iter().next() {
                    let _ = item.reply.send(Err(e));
                }
            } else {
                write_one_by_one(pool, items).await;
            }
        }
    }
}

async fn write_one_by_one(pool: &AnyPool, items: Vec<Upsert>) {
    for item in items {
        let result = write_all(pool, &[(&item.new, item.now)]).await.map_err(Into::into).and_then(|mut rows| {
            rows.pop().unwrap_or_else(|| Err(crate::StoreError::Corrupt("upsert returned no row".into())))
        });
        let _ = item.reply.send(result);
    }
}

/// Writes the items in one transaction and returns each one's row, in
/// order, or why it was refused (another app's endpoint, or a stored
/// endpoint posted with other keys: [`StoreError::NotProven`]); a refused
/// item changes nothing. The outer error is the database's, and fails the
/// whole batch.
///
/// A new endpoint costs one statement per chunk, as a plain upsert would:
/// the insert's conflict clause touches nothing and hands back the stored
/// row, whose keys are then compared with the posted ones here, in constant
/// time, not by SQL's `=` (the auth secret is what proves the caller holds
/// the subscription). Only the stored rows that passed are then updated, in
/// one more statement per chunk.
pub(crate) async fn write_all(
    pool: &AnyPool,
    items: &[(&NewSubscription, i64)],
) -> Result<Vec<crate::Result<StoredSubscription>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // Its first statement writes (the insert), so even a plain deferred
    // transaction takes SQLite's write lock at once, with no lock upgrade
    // to fail later; `sql::begin_write` would cost a round trip to the
    // connection's thread per batch.
    let mut tx = pool.begin().await?;
    // An endpoint may come twice in one batch (a browser re-subscribing):
    // one statement cannot touch a row twice, so later copies go in a later
    // round, which keeps "last request wins" (a later copy is judged
    // against the row the earlier one stored).
    let mut rounds: Vec<(HashSet<&str>, Vec<usize>)> = Vec::new();
    let mut rows: Vec<Option<crate::Result<StoredSubscription>>> = (0..items.len()).map(|_| None).collect();
    for (i, item) in items.iter().enumerate() {
        // Tags that would be too many even on a new row are refused here
        // (on a stored row, once its tags are read).
        if item.0.tags.as_ref().is_some_and(|p| p.apply(&Tags::default()).is_err()) {
            rows[i] = Some(Err(crate::StoreError::TooManyTags));
            continue;
        }
        let endpoint = item.0.subscription.endpoint().as_str();
        match rounds.iter_mut().find(|(seen, _)| !seen.contains(endpoint)) {
            Some((seen, members)) => {
                seen.insert(endpoint);
                members.push(i);
            }
            None => rounds.push((HashSet::from([endpoint]), vec![i])),
        }
    }
    // Each stored row's tags once the post's change is merged in, by item.
    let mut merged: Vec<Option<String>> = vec![None; items.len()];
    let mut events = Vec::new();
    for (_, members) in &rounds {
        for chunk in members.chunks(CHUNK) {
            let returned = insert_chunk(&mut tx, items, chunk).await?;
            let mut by_endpoint: HashMap<String, AnyRow> = HashMap::with_capacity(returned.len());
            for row in returned {
                by_endpoint.insert(row.try_get("endpoint")?, row);
            }
            let (mut inserted, mut stored) = (Vec::new(), Vec::new());
            for &i in chunk {
                let new = items[i].0;
                // No row back: the endpoint is another app's, and the
                // conflict clause's `WHERE` left it alone.
                let Some(row) = by_endpoint.get(new.subscription.endpoint().as_str()) else {
                    rows[i] =
                        Some(Err(crate::StoreError::Conflict("this endpoint is subscribed in another app".into())));
                    continue;
                };
                let (p256dh, auth): (String, String) = (row.try_get("p256dh")?, row.try_get("auth")?);
                let proven = same_keys(new, &p256dh, &auth);
                if !proven {
                    rows[i] = Some(Err(crate::StoreError::NotProven));
                    continue;
                }
                let id: i64 = row.try_get("id")?;
                let stored_tags: Option<String> = row.try_get("tags")?;
                merged[i] = match &new.tags {
                    None => stored_tags.clone(),
                    Some(patch) => {
                        let current = Tags::from_stored(stored_tags.as_deref())
                            .map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
                        match patch.apply(&current) {
                            Ok(tags) => tags.to_stored(),
                            Err(_) => {
                                rows[i] = Some(Err(crate::StoreError::TooManyTags));
                                continue;
                            }
                        }
                    }
                };
                // Inserted now, the row is what was posted; a stored row,
                // proven, takes the post's changes.
                if is_as_posted(row, new, items[i].1, &merged[i])? {
                    inserted.push((id, i));
                    rows[i] = Some(Ok(returned_row(row, new)?));
                } else {
                    stored.push((id, i));
                }
            }
            let before: HashMap<i64, Attributes> = stored
                .iter()
                .filter_map(|&(id, i)| by_endpoint.get(items[i].0.subscription.endpoint().as_str()).map(|r| (id, r)))
                .map(|(id, r)| Ok((id, attributes(r)?)))
                .collect::<Result<_>>()?;
            let updated = update_chunk(&mut tx, items, &stored, &merged).await?;
            if updated.len() != stored.len() {
                // A proven row changed between the insert and the update
                // (another node re-keyed it): nothing of this batch is
                // committed; written again row by row, it is judged afresh.
                return Err(crate::StoreError::Conflict("the endpoint was changed by another writer".into()).into());
            }
            for row in updated {
                let id: i64 = row.try_get("id")?;
                if let Some(&(_, i)) = stored.iter().find(|(s, _)| *s == id) {
                    let sub = returned_row(&row, items[i].0)?;
                    if before.get(&id) != Some(&attributes(&row)?) {
                        events.push(crate::NewEvent::new(
                            sub.app_id,
                            crate::Event::SubscriptionUpdated(crate::event::SubscriptionUpdated::attributes_of(&sub)),
                        ));
                    }
                    rows[i] = Some(Ok(sub));
                }
            }
            let with_topics: Vec<(i64, usize)> =
                inserted.into_iter().chain(stored).filter(|&(_, i)| items[i].0.topics.is_some()).collect();
            replace_topics(&mut tx, items, &with_topics).await?;
        }
    }
    // Their `subscription.created` events are written by the database (the
    // trigger `subscriptions_created`, migration 0011), in this transaction;
    // `subscription.updated` for stored rows whose attributes changed.
    super::events::emit(&mut tx, &events, items[0].1).await?;
    tx.commit().await?;
    // Every item has its row or its refusal by now.
    rows.into_iter()
        .map(|row| row.ok_or_else(|| crate::StoreError::Corrupt("upsert lost a row".into()).into()))
        .collect()
}

/// The stored row of an upsert. Endpoint and keys are the ones just written,
/// so the subscription already validated is reused instead of parsing the
/// row's copy again (which would repeat the P-256 point check per row).
fn returned_row(row: &AnyRow, new: &NewSubscription) -> Result<StoredSubscription> {
    let topics: String = row.try_get("topics")?;
    Ok(StoredSubscription {
        id: row.try_get("id")?,
        subscription: new.subscription.clone(),
        user_id: row.try_get("user_id")?,
        topics: serde_json::from_str(&topics).map_err(|e| crate::StoreError::Corrupt(e.to_string()))?,
        tags: Tags::from_stored(row.try_get::<Option<String>, _>("tags")?.as_deref())
            .map_err(|e| crate::StoreError::Corrupt(e.to_string()))?,
        language: row.try_get("language")?,
        time_zone: row.try_get("time_zone")?,
        vapid_key_id: row.try_get("vapid_key_id")?,
        app_id: crate::AppId(row.try_get("app_id")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        // Only the engine reads it, from its pages.
        send_history: None,
    })
}

/// What a `subscription.updated` event tells of a row: its tags (as
/// stored), language and time zone.
type Attributes = (Option<String>, Option<String>, Option<String>);

fn attributes(row: &AnyRow) -> Result<Attributes> {
    Ok((row.try_get("tags")?, row.try_get("language")?, row.try_get("time_zone")?))
}

/// Inserts a chunk of items; an endpoint already stored in the same app is
/// left as it is (`updated_at = updated_at` only makes `RETURNING` hand it
/// back). Returns the rows, inserted or stored, by endpoint.
async fn insert_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    items: &[(&NewSubscription, i64)],
    chunk: &[usize],
) -> Result<Vec<AnyRow>> {
    // Thirteen parameters a row; created_at, updated_at and last_seen_at
    // share the eighth.
    let values: Vec<String> = (0..chunk.len())
        .map(|r| {
            let b = r * 13;
            format!("({}, ${}, ${}, {})", placeholders(b + 1, 8), b + 8, b + 8, placeholders(b + 9, 5))
        })
        .collect();
    let sql = format!(
        "INSERT INTO subscriptions \
           (endpoint, p256dh, auth, expiration_time, user_id, topics, vapid_key_id, created_at, updated_at, \
            last_seen_at, app_id, tags, language, time_zone, push_service) \
         VALUES {} \
         ON CONFLICT (endpoint) DO UPDATE SET updated_at = subscriptions.updated_at \
         WHERE subscriptions.app_id = excluded.app_id \
         RETURNING {SUB_RETURNING}",
        values.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for &i in chunk {
        let (new, now) = items[i];
        let json: SubscriptionJson = new.subscription.clone().into();
        let keys = json.keys.unwrap_or_default();
        q = q
            .bind(new.subscription.endpoint().as_str().to_owned())
            .bind(keys.p256dh.unwrap_or_default())
            .bind(keys.auth.unwrap_or_default())
            .bind(new.subscription.expiration_time().map(|t| t as i64))
            .bind(new.user_id.clone())
            .bind(topics_json(new))
            .bind(new.vapid_key_id)
            .bind(now)
            .bind(new.app.0)
            .bind(new.tags.as_ref().and_then(|p| p.apply(&Tags::default()).ok()).and_then(|t| t.to_stored()))
            .bind(new.language.as_ref().map(|l| l.as_str().to_owned()))
            .bind(new.time_zone.as_ref().map(|z| z.as_str().to_owned()))
            .bind(crate::push_service_of(new.subscription.endpoint()));
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

/// Whether a returned row already is what `new`, posted at `now`, makes of
/// it (a row just inserted is): then no update is needed.
fn is_as_posted(row: &AnyRow, new: &NewSubscription, now: i64, tags: &Option<String>) -> Result<bool> {
    // Cheapest first, and nothing read that the post leaves as it is.
    Ok(row.try_get::<i64, _>("updated_at")? == now
        && row.try_get::<i64, _>("last_seen_at")? == now
        && row.try_get::<Option<i64>, _>("expiration_time")? == new.subscription.expiration_time().map(|t| t as i64)
        && (new.keep_stored_key || row.try_get::<i64, _>("vapid_key_id")? == new.vapid_key_id)
        && (new.user_id.is_none() || row.try_get::<Option<String>, _>("user_id")? == new.user_id)
        && (new.topics.is_none() || row.try_get::<String, _>("topics")? == topics_json(new))
        && (new.tags.is_none() || row.try_get::<Option<String>, _>("tags")? == *tags)
        && new
            .language
            .as_ref()
            .is_none_or(|l| row.try_get::<Option<String>, _>("language").ok().flatten().as_deref() == Some(l.as_str()))
        && new.time_zone.as_ref().is_none_or(|z| {
            row.try_get::<Option<String>, _>("time_zone").ok().flatten().as_deref() == Some(z.as_str())
        }))
}

/// Whether the stored keys (base64url text) are the posted subscription's,
/// the auth secret compared in constant time. The store writes keys in
/// one canonical form, so the text is compared first; any other form is
/// decoded and compared as bytes.
fn same_keys(new: &NewSubscription, p256dh: &str, auth: &str) -> bool {
    let sub = &new.subscription;
    let (want_p256dh, want_auth) = (b64::encode(sub.p256dh().as_bytes()), b64::encode(sub.auth().as_bytes()));
    if p256dh == want_p256dh && tocsin_protocol::subscription::same_secret(auth.as_bytes(), want_auth.as_bytes()) {
        return true;
    }
    sub.auth().matches_base64(auth) && b64::decode(p256dh).is_ok_and(|p| p == sub.p256dh().as_bytes())
}

/// A subscription's topics as stored: a JSON array, each once (empty when
/// not given).
fn topics_json(new: &NewSubscription) -> String {
    serde_json::to_string(&new.topics_once().unwrap_or_default()).unwrap_or_else(|_| "[]".into())
}

/// Applies proven re-posts (`(row id, item)`) to their stored rows in one
/// statement: expiration time, user (if given), topics (if given), VAPID
/// key (unless `keep_stored_key`), `updated_at`. The stored keys are named
/// again in its `WHERE`, so a row re-keyed meanwhile by another node is not
/// changed (it comes back missing). Returns the updated rows.
async fn update_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    items: &[(&NewSubscription, i64)],
    stored: &[(i64, usize)],
    merged: &[Option<String>],
) -> Result<Vec<AnyRow>> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    // Thirteen parameters a row: id, p256dh, auth, expiration, user,
    // whether topics were given, topics, key, whether to keep the stored
    // key, now, tags (merged: the stored ones when the post changed none),
    // language, time zone. (`VALUES` columns are `column1`… on both
    // backends.)
    let values: Vec<String> = (0..stored.len()).map(|r| format!("({})", placeholders(r * 13 + 1, 13))).collect();
    let sql = format!(
        "UPDATE subscriptions SET \
           expiration_time = v.column4, \
           user_id = COALESCE(v.column5, subscriptions.user_id), \
           topics = CASE WHEN v.column6 = 1 THEN v.column7 ELSE subscriptions.topics END, \
           vapid_key_id = CASE WHEN v.column9 = 1 THEN subscriptions.vapid_key_id ELSE v.column8 END, \
           updated_at = v.column10, \
           last_seen_at = v.column10, \
           tags = v.column11, \
           language = COALESCE(v.column12, subscriptions.language), \
           time_zone = COALESCE(v.column13, subscriptions.time_zone) \
         FROM (VALUES {}) AS v \
         WHERE subscriptions.id = v.column1 AND subscriptions.p256dh = v.column2 AND subscriptions.auth = v.column3 \
         RETURNING {}",
        values.join(", "),
        SUB_RETURNING.split(", ").map(|c| format!("subscriptions.{c}")).collect::<Vec<_>>().join(", ")
    );
    let mut q = sqlx::query(&sql);
    for &(id, i) in stored {
        let (new, now) = items[i];
        let json: SubscriptionJson = new.subscription.clone().into();
        let keys = json.keys.unwrap_or_default();
        q = q
            .bind(id)
            .bind(keys.p256dh.unwrap_or_default())
            .bind(keys.auth.unwrap_or_default())
            .bind(new.subscription.expiration_time().map(|t| t as i64))
            .bind(new.user_id.clone())
            .bind(i64::from(new.topics.is_some()))
            .bind(topics_json(new))
            .bind(new.vapid_key_id)
            .bind(i64::from(new.keep_stored_key))
            .bind(now)
            .bind(merged[i].clone())
            .bind(new.language.as_ref().map(|l| l.as_str().to_owned()))
            .bind(new.time_zone.as_ref().map(|z| z.as_str().to_owned()));
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

async fn replace_topics(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    items: &[(&NewSubscription, i64)],
    ids: &[(i64, usize)],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let delete = format!("DELETE FROM subscription_topics WHERE subscription_id IN ({})", placeholders(1, ids.len()));
    let mut q = sqlx::query(&delete);
    for (id, _) in ids {
        q = q.bind(*id);
    }
    q.execute(&mut **tx).await?;
    let pairs: Vec<(i64, &str)> =
        ids.iter().flat_map(|&(id, i)| items[i].0.topics.iter().flatten().map(move |t| (id, t.as_str()))).collect();
    for chunk in pairs.chunks(CHUNK * 4) {
        let values =
            (0..chunk.len()).map(|r| format!("({})", placeholders(2 * r + 1, 2))).collect::<Vec<_>>().join(", ");
        let sql =
            format!("INSERT INTO subscription_topics (subscription_id, topic) VALUES {values} ON CONFLICT DO NOTHING");
        let mut q = sqlx::query(&sql);
        for (id, topic) in chunk {
            q = q.bind(*id).bind(topic.to_string());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{new, on_both_backends, TestResult};
    use crate::Target;
    use tocsin_store_api::SubscriptionStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_upserts_are_grouped_and_each_caller_gets_its_row() -> TestResult {
        on_both_backends(async |store, key| {
            let mut calls = Vec::with_capacity(600);
            for i in 0..600 {
                let store = store.clone();
                let n = new(&format!("https://push.example.net/s/{i}"), Some(&format!("u{i}")), None, key)?;
                calls.push(tokio::spawn(async move { store.upsert_subscription(&n, 10).await }));
            }
            let mut rows: Vec<StoredSubscription> = Vec::with_capacity(600);
            for joined in futures_util::future::join_all(calls).await {
                rows.push(joined??);
            }
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row.subscription.endpoint().as_str(), format!("https://push.example.net/s/{i}"));
                assert_eq!(row.user_id.as_deref(), Some(format!("u{i}").as_str()));
            }
            let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
            assert_eq!(ids.len(), 600);
            assert_eq!(store.count_subscriptions(crate::AppId::DEFAULT, &Target::All(true)).await?, 600);
            Ok(())
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_keeps_request_order_topics_and_users() -> TestResult {
        on_both_backends(async |store, key| {
            let e = "https://push.example.net/same";
            // Queued in this order into one batch: the same endpoint three
            // times; the later copies must win, and a copy without user or
            // topics keeps what the earlier one set.
            let a = new(e, Some("alice"), Some(&["news", "sport"]), key)?;
            let b = new(e, None, None, key)?;
            let c = new("https://push.example.net/other", None, Some(&["x"]), key)?;
            let d = new(e, Some("bob"), Some(&["weather"]), key)?;
            let (ra, rb, rc, rd) = tokio::join!(
                store.upsert_subscription(&a, 1),
                store.upsert_subscription(&b, 2),
                store.upsert_subscription(&c, 3),
                store.upsert_subscription(&d, 4)
            );
            let (ra, rb, _, rd) = (ra?, rb?, rc?, rd?);
            assert_eq!((ra.id, rb.id), (rd.id, rd.id));
            assert_eq!(rb.user_id.as_deref(), Some("alice"));
            assert_eq!(rb.topics, vec!["news", "sport"]);
            let stored =
                store.subscription_by_endpoint(crate::AppId::DEFAULT, e).await?.ok_or("the endpoint is not stored")?;
            assert_eq!(stored.user_id.as_deref(), Some("bob"));
            assert_eq!(stored.topics, vec!["weather"]);
            assert_eq!(stored.created_at, 1);
            assert_eq!(stored.updated_at, 4);
            assert_eq!(store.count_subscriptions(crate::AppId::DEFAULT, &Target::Topic("weather".into())).await?, 1);
            assert_eq!(store.count_subscriptions(crate::AppId::DEFAULT, &Target::Topic("news".into())).await?, 0);
            assert_eq!(store.count_subscriptions(crate::AppId::DEFAULT, &Target::Topic("x".into())).await?, 1);
            Ok(())
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_that_cannot_be_stored_fails_alone() -> TestResult {
        on_both_backends(async |store, key| {
            // A VAPID key id that does not exist breaks the foreign key.
            let bad = new("https://push.example.net/bad", None, None, 9999)?;
            let good = new("https://push.example.net/good", None, None, key)?;
            let (rb, rg) = tokio::join!(store.upsert_subscription(&bad, 1), store.upsert_subscription(&good, 1));
            assert!(rb.is_err());
            assert_eq!(rg?.subscription.endpoint().as_str(), "https://push.example.net/good");
            assert_eq!(store.count_subscriptions(crate::AppId::DEFAULT, &Target::All(true)).await?, 1);
            Ok(())
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_upsert_is_ordered() -> TestResult {
        on_both_backends(async |store, key| {
            let mut many: Vec<NewSubscription> = (0..150)
                .map(|i| new(&format!("https://push.example.net/b/{i}"), None, None, key))
                .collect::<std::result::Result<_, _>>()?;
            many.push(new("https://push.example.net/b/7", Some("late"), None, key)?);
            let rows = store.upsert_subscriptions(&many, 5).await?;
            assert_eq!(rows.len(), 151);
            assert_eq!(rows[7].id, rows[150].id);
            assert_eq!(store.count_subscriptions(crate::AppId::DEFAULT, &Target::All(true)).await?, 150);
            let late = store
                .subscription_by_endpoint(crate::AppId::DEFAULT, "https://push.example.net/b/7")
                .await?
                .ok_or("b/7 is not stored")?;
            assert_eq!(late.user_id.as_deref(), Some("late"));
            Ok(())
        })
        .await
    }
}
