//! Work claiming: shards and retries taken under a lease and a claim token,
//! heartbeats, and the checkpoints that record a page only while its claim
//! still holds (see the crate `tocsin_store_api`'s "Claims").

use sqlx::{Any, Row, Transaction};

use super::mapping::{message_state, AnyQuery};
use super::{Backend, SqlStore, R};
use crate::{
    AppId, Claim, Event, MessageState, NewEvent, NewRetry, PageOutcome, Pending, RetryItem, Shard, ShardProgress,
};

pub(super) async fn claim_shard(store: &SqlStore, claim: &Claim, now: i64, lease_ms: i64) -> R<Option<Shard>> {
    let lock = match store.backend {
        Backend::Postgres => "FOR UPDATE OF s SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE message_shards SET lease_owner = $1, lease_token = $2, lease_until = $3 WHERE (message_id, shard) = ( \
           SELECT s.message_id, s.shard FROM message_shards s JOIN messages m ON m.id = s.message_id \
           WHERE s.done = 0 AND s.lease_until < $4 AND s.not_before <= $4 AND m.state = 'sending' \
           ORDER BY m.created_at, s.shard LIMIT 1 {lock}) \
         RETURNING message_id, shard, start_after, end_at, cursor, wave"
    );
    let row = sqlx::query(&sql)
        .bind(claim.node.as_str())
        .bind(claim.token.as_str())
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&store.pool)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let message_id: String = r.try_get("message_id")?;
    let wave: Option<i64> = r.try_get("wave")?;
    // A wave's zones are in the message's schedule.
    let zones = match wave {
        None => None,
        Some(w) => {
            let rules: Option<String> = sqlx::query("SELECT rules FROM messages WHERE id = $1")
                .bind(message_id.as_str())
                .fetch_one(&store.pool)
                .await?
                .try_get("rules")?;
            let local = crate::MessageRules::from_stored(rules.as_deref()).map_err(super::mapping::corrupt)?.local;
            let wave = local.and_then(|l| l.waves.into_iter().nth(usize::try_from(w).ok()?));
            Some(wave.ok_or_else(|| super::mapping::corrupt(format!("message {message_id} has no wave {w}")))?.filter)
        }
    };
    Ok(Some(Shard {
        token: claim.token.clone(),
        message_id,
        shard: r.try_get("shard")?,
        start_after: r.try_get("start_after")?,
        end_at: r.try_get("end_at")?,
        cursor: r.try_get("cursor")?,
        zones,
    }))
}

pub(super) async fn reserve_sends(store: &SqlStore, message_id: &str, span_ms: i64, now: i64) -> R<i64> {
    // One statement: the row's lock orders the nodes' reservations.
    let row = sqlx::query(
        "UPDATE messages SET throttle_next = CASE WHEN throttle_next > $1 THEN throttle_next ELSE $1 END + $2 \
         WHERE id = $3 RETURNING throttle_next",
    )
    .bind(now)
    .bind(span_ms)
    .bind(message_id)
    .fetch_optional(&store.pool)
    .await?;
    let end: i64 = match row {
        Some(r) => r.try_get("throttle_next")?,
        None => return Ok(now),
    };
    Ok(end - span_ms)
}

pub(super) async fn defer_shard(store: &SqlStore, shard: &Shard, until: i64) -> R<bool> {
    update_held_shard(store, shard, "not_before = $1, lease_until = 0", until).await
}

pub(super) async fn throttle_next(store: &SqlStore, message_id: &str) -> R<i64> {
    let row = sqlx::query("SELECT throttle_next FROM messages WHERE id = $1")
        .bind(message_id)
        .fetch_optional(&store.pool)
        .await?;
    Ok(match row {
        Some(r) => r.try_get("throttle_next")?,
        None => 0,
    })
}

pub(super) async fn renew_shard(store: &SqlStore, shard: &Shard, now: i64, lease_ms: i64) -> R<bool> {
    update_held_shard(store, shard, "lease_until = $1", now + lease_ms).await
}

/// Sets `set` (whose one value is `$1`) on a shard still open and held
/// under its claim's token; false when the claim is lost.
async fn update_held_shard(store: &SqlStore, shard: &Shard, set: &str, value: i64) -> R<bool> {
    let sql = format!(
        "UPDATE message_shards SET {set} WHERE message_id = $2 AND shard = $3 AND lease_token = $4 AND done = 0"
    );
    let r = sqlx::query(&sql)
        .bind(value)
        .bind(shard.message_id.as_str())
        .bind(shard.shard)
        .bind(shard.token.as_str())
        .execute(&store.pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn checkpoint_shard(
    store: &SqlStore,
    shard: &Shard,
    progress: &ShardProgress,
    outcome: &PageOutcome,
    now: i64,
) -> R<Option<MessageState>> {
    let lease_until = if progress.done { 0 } else { now + progress.lease_ms };
    let only_delivered = outcome.failed.is_empty()
        && outcome.gone.is_empty()
        && outcome.expired.is_empty()
        && outcome.retries.is_empty()
        && outcome.held.is_empty()
        && outcome.capped == 0
        && outcome.histories.is_empty();
    if store.backend == Backend::Postgres && only_delivered {
        // The usual page (everything delivered) in one statement, atomic on
        // its own: one round trip instead of four (BEGIN, two UPDATEs,
        // COMMIT). No row back means the claim was lost. SQLite has no
        // UPDATE inside WITH; its round trips stay in-process.
        let sql = format!(
            "WITH held AS ({SHARD_CHECKPOINT} RETURNING message_id) \
             UPDATE messages SET delivered = delivered + $4, updated_at = $9 \
             WHERE id = (SELECT message_id FROM held) RETURNING state"
        );
        let q = bind_checkpoint(sqlx::query(&sql), shard, progress, lease_until, outcome).bind(now);
        return match q.fetch_optional(&store.pool).await? {
            Some(row) => message_state(&row).map(Some),
            None => written_before(store, shard, progress).await,
        };
    }
    let mut tx = store.write_tx().await?;
    let q = bind_checkpoint(sqlx::query(SHARD_CHECKPOINT), shard, progress, lease_until, outcome);
    if q.execute(&mut *tx).await?.rows_affected() == 0 {
        drop(tx);
        return written_before(store, shard, progress).await;
    }
    let state = apply_outcome(&mut tx, &shard.message_id, outcome, Pending::after(outcome, &[]), now).await?;
    tx.commit().await?;
    Ok(Some(state))
}

/// A checkpoint that found its shard elsewhere than its page began: if the
/// shard is still under this claim and at the page's end, this very
/// checkpoint was committed before (its answer lost with the connection)
/// and is not counted again; the message's state is answered as if it had
/// just been written. Otherwise the claim was lost.
async fn written_before(store: &SqlStore, shard: &Shard, progress: &ShardProgress) -> R<Option<MessageState>> {
    let row = sqlx::query(
        "SELECT m.state FROM message_shards s JOIN messages m ON m.id = s.message_id \
         WHERE s.message_id = $1 AND s.shard = $2 AND s.lease_token = $3 AND s.cursor = $4 AND s.cursor <> $5",
    )
    .bind(shard.message_id.as_str())
    .bind(shard.shard)
    .bind(shard.token.as_str())
    .bind(progress.cursor)
    .bind(progress.from)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(message_state).transpose()
}

pub(super) async fn claim_retries(
    store: &SqlStore,
    claim: &Claim,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> R<Vec<RetryItem>> {
    let lock = match store.backend {
        Backend::Postgres => "FOR UPDATE OF r SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE retries SET lease_owner = $1, lease_token = $2, lease_until = $3 \
         WHERE (message_id, subscription_id) IN ( \
           SELECT r.message_id, r.subscription_id FROM retries r JOIN messages m ON m.id = r.message_id \
           WHERE r.due_at <= $4 AND r.lease_until < $4 AND m.state = 'sending' \
           ORDER BY r.due_at LIMIT $5 {lock}) \
         RETURNING message_id, subscription_id, attempt, reason"
    );
    let rows = sqlx::query(&sql)
        .bind(claim.node.as_str())
        .bind(claim.token.as_str())
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(&store.pool)
        .await?;
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

pub(super) async fn defer_retries(store: &SqlStore, message_id: &str, token: &str, until: i64) -> R<bool> {
    let r = sqlx::query(
        "UPDATE retries SET due_at = $1, lease_until = 0, lease_token = NULL WHERE message_id = $2 AND lease_token = $3",
    )
    .bind(until)
    .bind(message_id)
    .bind(token)
    .execute(&store.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn renew_retries(store: &SqlStore, token: &str, now: i64, lease_ms: i64) -> R<bool> {
    let r = sqlx::query("UPDATE retries SET lease_until = $1 WHERE lease_token = $2")
        .bind(now + lease_ms)
        .bind(token)
        .execute(&store.pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub(super) async fn record_retries(
    store: &SqlStore,
    message_id: &str,
    token: &str,
    items: &[RetryItem],
    outcome: &PageOutcome,
    now: i64,
) -> R<bool> {
    let mut tx = store.write_tx().await?;
    let mut held = 0;
    for item in items {
        held += sqlx::query("DELETE FROM retries WHERE message_id = $1 AND subscription_id = $2 AND lease_token = $3")
            .bind(message_id)
            .bind(item.subscription_id)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    if held != items.len() as u64 {
        // Some were claimed again by another worker (or the message was
        // cancelled): record nothing; the transaction rolls back on drop.
        return Ok(false);
    }
    apply_outcome(&mut tx, message_id, outcome, Pending::after(outcome, items), now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Adds a page's outcome to a message inside `tx`: counters, failures by
/// reason, deleted subscriptions, retries to schedule (none for a message
/// cancelled meanwhile). Returns the message's state.
async fn apply_outcome(
    tx: &mut Transaction<'_, Any>,
    message_id: &str,
    outcome: &PageOutcome,
    pending: Pending,
    now: i64,
) -> R<MessageState> {
    let row = sqlx::query(
        "UPDATE messages SET delivered = delivered + $1, failed = failed + $2, gone = gone + $3, \
         expired = expired + $4, pending_retry = CASE WHEN state = 'cancelled' THEN 0 ELSE pending_retry + $5 END, \
         held = CASE WHEN state = 'cancelled' THEN 0 ELSE held + $8 END, capped = capped + $9, \
         updated_at = $6 WHERE id = $7 RETURNING state",
    )
    .bind(outcome.delivered)
    .bind(outcome.failed_total())
    .bind(outcome.gone.len() as i64)
    .bind(outcome.expired.len() as i64)
    .bind(pending.retry)
    .bind(now)
    .bind(message_id)
    .bind(pending.held)
    .bind(outcome.capped)
    .fetch_one(&mut **tx)
    .await?;
    let state = message_state(&row)?;
    // Each subscription's deliveries as the caps count them: a statement
    // per 400 rows, not per row (a row each held SQLite's one writer for a
    // page's worth of statements: 0.58x of the uncapped broadcast).
    for chunk in outcome.histories.chunks(400) {
        let rows = (0..chunk.len())
            .map(|i| format!("(CAST(${} AS BIGINT), CAST(${} AS TEXT))", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        // VALUES names its columns column1, column2 on both backends.
        let sql = format!(
            "UPDATE subscriptions SET send_history = v.column2 FROM (VALUES {rows}) AS v \
             WHERE subscriptions.id = v.column1"
        );
        let mut q = sqlx::query(&sql);
        for (id, history) in chunk {
            q = q.bind(*id).bind(history.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    let capped = (outcome.capped > 0).then(|| (crate::CAPPED_REASON.to_owned(), outcome.capped));
    for (reason, n) in outcome.failed.iter().chain(capped.as_ref()) {
        let example = outcome.examples.iter().find(|(r, _)| r == reason).map(|(_, e)| e.as_str());
        sqlx::query(
            "INSERT INTO message_failures (message_id, reason, count, example) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (message_id, reason) DO UPDATE SET count = message_failures.count + excluded.count, \
             example = COALESCE(message_failures.example, excluded.example)",
        )
        .bind(message_id)
        .bind(reason.as_str())
        .bind(*n)
        .bind(example)
        .execute(&mut **tx)
        .await?;
    }
    for (ids, reason) in [(&outcome.gone, "gone"), (&outcome.expired, "expired")] {
        let mut removed = Vec::new();
        for id in ids {
            let row = sqlx::query("DELETE FROM subscriptions WHERE id = $1 RETURNING id, endpoint, app_id, created_at")
                .bind(*id)
                .fetch_optional(&mut **tx)
                .await?;
            removed.extend(row);
        }
        super::removals::count_removed(tx, &removed, reason, now).await?;
    }
    if !outcome.failures.is_empty() {
        let app: i64 = sqlx::query("SELECT app_id FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("app_id")?;
        let events: Vec<NewEvent> = outcome
            .failures
            .iter()
            .map(|f| {
                NewEvent::new(
                    AppId(app),
                    Event::DeliveryFailed(crate::event::DeliveryFailed {
                        message_id: message_id.to_owned(),
                        subscription_id: f.subscription_id,
                        endpoint: f.endpoint.clone(),
                        reason: f.reason.clone(),
                        status: f.status,
                    }),
                )
            })
            .collect();
        super::events::emit(tx, &events, now).await?;
    }
    if state != MessageState::Cancelled {
        insert_retries(tx, message_id, &outcome.retries).await?;
        insert_retries(tx, message_id, &outcome.held).await?;
    }
    Ok(state)
}

/// Schedules retries inside `tx` (a row already there is kept).
async fn insert_retries(tx: &mut Transaction<'_, Any>, message_id: &str, retries: &[NewRetry]) -> R<()> {
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

/// A page's checkpoint of its shard: cursor, done (a shard closed by a
/// cancel stays closed), lease and delivered count, only while the claim
/// token is still the shard's.
const SHARD_CHECKPOINT: &str = "UPDATE message_shards SET cursor = $1, done = CASE WHEN $2 = 1 THEN 1 ELSE done END, \
     lease_until = $3, delivered = delivered + $4 WHERE message_id = $5 AND shard = $6 AND lease_token = $7 \
     AND cursor = $8";

/// Binds [`SHARD_CHECKPOINT`]'s `$1`…`$8`.
fn bind_checkpoint<'q>(
    q: AnyQuery<'q>,
    shard: &'q Shard,
    progress: &ShardProgress,
    lease_until: i64,
    outcome: &PageOutcome,
) -> AnyQuery<'q> {
    q.bind(progress.cursor)
        .bind(i64::from(progress.done))
        .bind(lease_until)
        .bind(outcome.delivered)
        .bind(shard.message_id.as_str())
        .bind(shard.shard)
        .bind(shard.token.as_str())
        .bind(progress.from)
}
