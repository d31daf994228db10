//! Messages: storing (idempotently), reading, listing, cancelling, starting
//! (audience counted and split into shards) and finishing.

use sqlx::Row;

use super::mapping::{msg_from_row, MSG_COLUMNS};
use super::target::target_sql;
use super::{SqlStore, R};
use crate::{event, shard_ranges, AppId, Event, Interaction, Message, MessageState, NewEvent, NewMessage, Target};

/// The stored form of an idempotency key: its app's id and the key, so
/// that the same key in two apps makes two messages.
fn scoped_key(new: &NewMessage) -> Option<String> {
    new.idempotency_key.as_ref().map(|k| format!("{}:{k}", new.app.0))
}

pub(super) async fn insert(store: &SqlStore, new: &NewMessage) -> R<(Message, bool)> {
    let idempotency_key = scoped_key(new);
    if let Some(key) = &idempotency_key {
        let row = sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE idempotency_key = $1"))
            .bind(key.as_str())
            .fetch_optional(&store.pool)
            .await?;
        if let Some(row) = row {
            return Ok((msg_from_row(&row)?, false));
        }
    }
    let mut tx = store.write_tx().await?;
    let created = insert_row(&mut tx, new, idempotency_key.as_deref()).await?;
    tx.commit().await?;
    // A concurrent request with the same idempotency key may have won.
    let row = match (&idempotency_key, created) {
        (Some(key), false) => {
            sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE idempotency_key = $1"))
                .bind(key.as_str())
                .fetch_one(&store.pool)
                .await?
        }
        _ => {
            sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE id = $1"))
                .bind(new.id.as_str())
                .fetch_one(&store.pool)
                .await?
        }
    };
    Ok((msg_from_row(&row)?, created))
}

/// Inserts a message (and its `message.created`) in `tx` unless its id or
/// idempotency key is taken; true when it did.
async fn insert_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &NewMessage,
    idempotency_key: Option<&str>,
) -> R<bool> {
    let state =
        if new.send_at.is_some_and(|t| t > new.created_at) { MessageState::Scheduled } else { MessageState::Queued };
    let target = serde_json::to_string(&new.target).map_err(super::mapping::corrupt)?;
    let inserted = sqlx::query(
        "INSERT INTO messages (id, payload, target, ttl, urgency, topic, send_at, state, idempotency_key, created_at, updated_at, app_id, \
         format, apple_payload, personal, rules, parent_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT DO NOTHING",
    )
    .bind(new.id.as_str())
    .bind(new.payload.clone())
    .bind(target)
    .bind(i64::from(new.ttl))
    .bind(new.urgency.as_deref())
    .bind(new.topic.as_deref())
    .bind(new.send_at)
    .bind(state.as_str())
    .bind(idempotency_key)
    .bind(new.created_at)
    .bind(new.app.0)
    .bind(new.format.as_str())
    .bind(new.apple_payload.clone())
    .bind(i64::from(new.personal))
    .bind(new.rules.to_stored())
    .bind(new.rules.ab_part.as_ref().map(|p| p.parent.as_str()))
    .execute(&mut **tx)
    .await?;
    let created = inserted.rows_affected() > 0;
    if created {
        let event = NewEvent::new(
            new.app,
            Event::MessageCreated(event::MessageCreated {
                message_id: new.id.clone(),
                state: state.as_str().to_owned(),
                format: new.format.as_str().to_owned(),
                target: new.target.clone(),
                send_at: new.send_at.map(crate::rfc3339_ms),
                created_at: crate::rfc3339_ms(new.created_at),
            }),
        );
        super::events::emit(tx, &[event], new.created_at).await?;
    }
    Ok(created)
}

/// Moves an A/B test's message on under its state and `send_at`, storing
/// the messages the step makes ([`crate::WorkStore::advance_ab_test`]).
pub(super) async fn advance_ab_test(store: &SqlStore, id: &str, step: &crate::AbStep, now: i64) -> R<bool> {
    let mut tx = store.write_tx().await?;
    let (from_state, from_send_at) = step.from;
    let moved = sqlx::query(
        "UPDATE messages SET rules = $1, state = $2, send_at = $3, updated_at = $4 \
         WHERE id = $5 AND state = $6 AND COALESCE(send_at, -1) = $7",
    )
    .bind(step.rules.to_stored())
    .bind(step.state.as_str())
    .bind(step.send_at)
    .bind(now)
    .bind(id)
    .bind(from_state.as_str())
    // A test's message always has one; a row without would otherwise be
    // due for ever and never move on.
    .bind(from_send_at.unwrap_or(-1))
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    for child in &step.children {
        insert_row(&mut tx, child, None).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// One message by id: of `app` when given, else of any app (the engine).
pub(super) async fn get(store: &SqlStore, app: Option<AppId>, id: &str) -> R<Option<Message>> {
    let row = sqlx::query(&format!("SELECT {MSG_COLUMNS} FROM messages WHERE id = $1 AND ($2 = 0 OR app_id = $2)"))
        .bind(id)
        .bind(app.map_or(0, |a| a.0))
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(msg_from_row).transpose()
}

pub(super) async fn list(store: &SqlStore, app: AppId, before: Option<&str>, limit: i64) -> R<Vec<Message>> {
    let rows = match before {
        None => {
            sqlx::query(&format!(
                "SELECT {MSG_COLUMNS} FROM messages WHERE app_id = $2 AND parent_id IS NULL \
                 ORDER BY created_at DESC, id DESC LIMIT $1"
            ))
            .bind(limit)
            .bind(app.0)
            .fetch_all(&store.pool)
            .await?
        }
        Some(before) => {
            sqlx::query(&format!(
                "SELECT {MSG_COLUMNS} FROM messages m WHERE m.app_id = $3 AND m.parent_id IS NULL AND (m.created_at, m.id) < \
                 (SELECT created_at, id FROM messages WHERE id = $1 AND app_id = $3) \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(before)
            .bind(limit)
            .bind(app.0)
            .fetch_all(&store.pool)
            .await?
        }
    };
    rows.iter().map(msg_from_row).collect()
}

pub(super) async fn cancel(store: &SqlStore, app: AppId, id: &str, now: i64) -> R<Option<Message>> {
    let mut tx = store.write_tx().await?;
    // The message first, then an A/B test's parts: its row's lock orders
    // this against the engine storing parts (`advance_ab_test`), so that
    // parts stored before are read here, and none are stored after.
    let mut open = vec![id.to_owned()];
    for i in 0.. {
        let Some(mid) = open.get(i).cloned() else { break };
        let r = sqlx::query(
            "UPDATE messages SET state = 'cancelled', pending_retry = 0, held = 0, updated_at = $1 \
             WHERE id = $2 AND app_id = $3 AND state IN ('scheduled', 'queued', 'sending')",
        )
        .bind(now)
        .bind(mid.as_str())
        .bind(app.0)
        .execute(&mut *tx)
        .await?;
        if mid == id {
            let parts: Vec<String> = sqlx::query(
                "SELECT id FROM messages WHERE parent_id = $1 AND app_id = $2 \
                 AND state IN ('scheduled', 'queued', 'sending')",
            )
            .bind(id)
            .bind(app.0)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
            open.extend(parts);
        }
        if r.rows_affected() == 0 {
            continue;
        }
        let event = NewEvent::new(
            app,
            Event::MessageCancelled(event::MessageCancelled {
                message_id: mid.clone(),
                cancelled_at: crate::rfc3339_ms(now),
            }),
        );
        super::events::emit(&mut tx, &[event], now).await?;
        // Release the work: nothing of it is claimed again. A page in flight
        // keeps its token, so what it already sent is still counted.
        sqlx::query("UPDATE message_shards SET done = 1, lease_until = 0 WHERE message_id = $1 AND done = 0")
            .bind(mid.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM retries WHERE message_id = $1").bind(mid.as_str()).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    get(store, Some(app), id).await
}

pub(super) async fn start(store: &SqlStore, id: &str, target: &Target, shard_size: i64, now: i64) -> R<bool> {
    // The audience is the message's own app's subscriptions, counted before
    // the write transaction: an expression's count reads every row of the
    // app, and SQLite's one writer (every subscribe) must not wait for it.
    // The shards then cover ids up to the highest counted, as always.
    let Some(row) =
        sqlx::query("SELECT app_id, rules FROM messages WHERE id = $1 AND state IN ('scheduled', 'queued')")
            .bind(id)
            .fetch_optional(&store.pool)
            .await?
    else {
        return Ok(false);
    };
    let app = AppId(row.try_get("app_id")?);
    let rules: Option<String> = row.try_get("rules")?;
    let local = crate::MessageRules::from_stored(rules.as_deref()).map_err(super::mapping::corrupt)?.local;
    let mut zones_present: Vec<Option<String>> = Vec::new();
    let (targeted, last): (i64, i64) = {
        let mut conn = store.pool.acquire().await?;
        let mut t = target_sql(&mut conn, store.backend, app, target, crate::now_ms()).await?;
        // With zones skipped, only the others' subscriptions are its audience.
        if let Some(reached) = local.as_ref().and_then(|l| l.reached()) {
            t.and_zones(&reached);
        }
        let sql = format!("SELECT COUNT(*) AS n, CAST(COALESCE(MAX(s.id), 0) AS BIGINT) AS last {}", t.from);
        let row = t.bind(sqlx::query(&sql)).fetch_one(&mut *conn).await?;
        let counted = (row.try_get("n")?, row.try_get("last")?);
        // The zones its audience has: waves that reach none get no shards
        // (the message is done after the last wave that has someone).
        if local.is_some() {
            let sql = format!("SELECT DISTINCT s.time_zone AS zone {}", t.from);
            for row in t.bind(sqlx::query(&sql)).fetch_all(&mut *conn).await? {
                zones_present.push(row.try_get::<Option<String>, _>("zone")?);
            }
        }
        counted
    };
    // Shards of each wave (one set, claimable at once, without a local time).
    let waves: Vec<(Option<i64>, i64)> = match &local {
        None => vec![(None, 0)],
        Some(l) => l.waves_for(&zones_present).into_iter().map(|(i, at)| (Some(i), at)).collect(),
    };
    let mut tx = store.write_tx().await?;
    // The write comes first, so SQLite takes its write lock at once; it
    // names the states again, so that of two nodes starting the message
    // one does.
    let started = sqlx::query(
        "UPDATE messages SET state = 'sending', updated_at = $1 WHERE id = $2 AND state IN ('scheduled', 'queued') \
         RETURNING app_id",
    )
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if started.is_none() {
        return Ok(false);
    }
    sqlx::query("UPDATE messages SET targeted = $1, cursor_end = $2 WHERE id = $3")
        .bind(targeted)
        .bind(last)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let ranges = shard_ranges(targeted, last, shard_size);
    let mut n: i64 = 0;
    for (wave, not_before) in waves {
        for (start_after, end_at) in &ranges {
            sqlx::query(
                "INSERT INTO message_shards (message_id, shard, start_after, end_at, cursor, wave, not_before) \
                 VALUES ($1, $2, $3, $4, $3, $5, $6)",
            )
            .bind(id)
            .bind(n)
            .bind(*start_after)
            .bind(*end_at)
            .bind(wave)
            .bind(not_before)
            .execute(&mut *tx)
            .await?;
            n += 1;
        }
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn next_startable(store: &SqlStore, now: i64) -> R<Option<Message>> {
    let row = sqlx::query(&format!(
        "SELECT {MSG_COLUMNS} FROM messages WHERE state = 'queued' \
         OR (state = 'scheduled' AND send_at <= $1) ORDER BY created_at, id LIMIT 1"
    ))
    .bind(now)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(msg_from_row).transpose()
}

pub(super) async fn try_finish(store: &SqlStore, id: &str, now: i64) -> R<bool> {
    let mut tx = store.write_tx().await?;
    let row = sqlx::query(&format!(
        "UPDATE messages SET state = 'done', updated_at = $1 WHERE id = $2 AND state = 'sending' \
         AND NOT EXISTS (SELECT 1 FROM message_shards WHERE message_id = $2 AND done = 0) \
         AND NOT EXISTS (SELECT 1 FROM retries WHERE message_id = $2) RETURNING {MSG_COLUMNS}"
    ))
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let m = msg_from_row(&row)?;
    let event = NewEvent::new(
        m.app_id(),
        Event::MessageDone(event::MessageDone { message_id: m.id().to_owned(), counts: m.counts.into() }),
    );
    super::events::emit(&mut tx, &[event], now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn wave_progress(store: &SqlStore, id: &str) -> R<Vec<crate::WaveProgress>> {
    let rows = sqlx::query(
        "SELECT wave, COUNT(*) AS shards, CAST(SUM(done) AS BIGINT) AS finished, CAST(SUM(delivered) AS BIGINT) AS delivered \
         FROM message_shards WHERE message_id = $1 AND wave IS NOT NULL GROUP BY wave ORDER BY wave",
    )
    .bind(id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(crate::WaveProgress {
                wave: r.try_get("wave")?,
                shards: r.try_get("shards")?,
                done: r.try_get("finished")?,
                delivered: r.try_get("delivered")?,
            })
        })
        .collect()
}

pub(super) async fn sending_ids(store: &SqlStore) -> R<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM messages WHERE state = 'sending' ORDER BY created_at")
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

pub(super) async fn failure_examples(store: &SqlStore, id: &str) -> R<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT reason, example FROM message_failures WHERE message_id = $1 AND example IS NOT NULL ORDER BY reason",
    )
    .bind(id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("reason")?, r.try_get("example")?))).collect()
}

pub(super) async fn failures(store: &SqlStore, id: &str) -> R<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT reason, count FROM message_failures WHERE message_id = $1 ORDER BY reason")
        .bind(id)
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("reason")?, r.try_get("count")?))).collect()
}

pub(super) async fn record_interaction(
    store: &SqlStore,
    app: AppId,
    message_id: &str,
    recipient: &str,
    interaction: Interaction,
    action: Option<&str>,
    now: i64,
) -> R<bool> {
    let (sql, label) = match interaction {
        Interaction::Shown => ("UPDATE messages SET shown = shown + 1 WHERE id = $1 AND app_id = $2", "shown"),
        Interaction::Clicked => ("UPDATE messages SET clicked = clicked + 1 WHERE id = $1 AND app_id = $2", "clicked"),
    };
    let mut tx = store.write_tx().await?;
    // The receipt first: a replay of the same delivery's report finds it
    // and counts nothing.
    let receipt = sqlx::query(
        "INSERT INTO event_receipts (message_id, recipient, kind) SELECT $1, $2, $3 \
         WHERE EXISTS (SELECT 1 FROM messages WHERE id = $1 AND app_id = $4) ON CONFLICT DO NOTHING",
    )
    .bind(message_id)
    .bind(recipient)
    .bind(label)
    .bind(app.0)
    .execute(&mut *tx)
    .await?;
    if receipt.rows_affected() == 0 {
        let found = sqlx::query("SELECT 1 AS one FROM messages WHERE id = $1 AND app_id = $2")
            .bind(message_id)
            .bind(app.0)
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(found.is_some());
    }
    sqlx::query(sql).bind(message_id).bind(app.0).execute(&mut *tx).await?;
    let message_id = message_id.to_owned();
    let event = match interaction {
        Interaction::Shown => Event::NotificationShown(event::NotificationShown { message_id }),
        Interaction::Clicked => {
            Event::NotificationClicked(event::NotificationClicked { message_id, action: action.map(str::to_owned) })
        }
    };
    super::events::emit(&mut tx, &[NewEvent::new(app, event)], now).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn purge(store: &SqlStore, before: i64, limit: i64) -> R<u64> {
    let mut tx = store.write_tx().await?;
    // DELETE … RETURNING: what this transaction deleted is what it counts,
    // even when another node purges at the same time. Shards, retries and
    // failures go with their message (ON DELETE CASCADE).
    let rows = sqlx::query(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state IN ('done', 'cancelled') \
         AND updated_at < $1 ORDER BY updated_at LIMIT $2) RETURNING app_id, delivered, failed, gone, expired",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    // Totals per app: (messages, delivered, failed, removed). The row of
    // `purged_totals` whose id is the app's id.
    let mut totals: std::collections::BTreeMap<i64, [i64; 4]> = std::collections::BTreeMap::new();
    for r in &rows {
        let t = totals.entry(r.try_get::<i64, _>("app_id")?).or_default();
        t[0] += 1;
        t[1] += r.try_get::<i64, _>("delivered")?;
        t[2] += r.try_get::<i64, _>("failed")?;
        t[3] += r.try_get::<i64, _>("gone")? + r.try_get::<i64, _>("expired")?;
    }
    for (app, [messages, delivered, failed, removed]) in totals {
        sqlx::query(
            "INSERT INTO purged_totals (id, messages, delivered, failed, removed) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET messages = purged_totals.messages + excluded.messages, \
             delivered = purged_totals.delivered + excluded.delivered, failed = purged_totals.failed + excluded.failed, \
             removed = purged_totals.removed + excluded.removed",
        )
        .bind(app)
        .bind(messages)
        .bind(delivered)
        .bind(failed)
        .bind(removed)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}
