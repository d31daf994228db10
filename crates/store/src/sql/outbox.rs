//! The outbox's reading side and the webhooks: registering them, claiming
//! each one's next delivery under a lease, recording what became of it,
//! and the events for the SSE stream.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::mapping::corrupt;
use super::{Backend, SqlStore, R};
use crate::{
    delivery_body, next_delivery, AppId, DeliveryResult, EventType, NewWebhook, Outbox, Result, StoredEvent,
    WebhookDelivery, WebhookRow,
};

const WEBHOOK_COLUMNS: &str = "w.id, w.app_id, w.url, w.events, w.description, w.secret, w.created_at, \
     w.failing_since, w.last_error, w.delivery_id, w.delivery_body, w.attempts, w.first_attempt_at, \
     (SELECT COUNT(*) FROM webhook_queue q WHERE q.webhook_id = w.id) AS pending";

fn types_column(events: &[EventType]) -> String {
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    format!(",{},", names.join(","))
}

fn webhook_from_row(row: &AnyRow) -> R<WebhookRow> {
    let events: String = row.try_get("events")?;
    Ok(WebhookRow {
        registered: NewWebhook {
            id: row.try_get("id")?,
            app: AppId(row.try_get("app_id")?),
            url: row.try_get("url")?,
            events: events.split(',').filter(|s| !s.is_empty()).filter_map(EventType::parse).collect(),
            description: row.try_get("description")?,
            secret: row.try_get("secret")?,
            created_at: row.try_get("created_at")?,
        },
        failing_since: row.try_get("failing_since")?,
        last_error: row.try_get("last_error")?,
        pending: row.try_get("pending")?,
    })
}

fn event_from_row(row: &AnyRow) -> R<StoredEvent> {
    let kind: String = row.try_get("type")?;
    let data: String = row.try_get("data")?;
    Ok(StoredEvent {
        id: row.try_get("id")?,
        app: AppId(row.try_get("app_id")?),
        kind: EventType::parse(&kind).ok_or_else(|| corrupt(format!("event type {kind:?}")))?,
        data: serde_json::from_str(&data).map_err(corrupt)?,
        created_at: row.try_get("created_at")?,
    })
}

async fn webhook(store: &SqlStore, id: &str) -> R<Option<WebhookRow>> {
    let row = sqlx::query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = $1"))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(webhook_from_row).transpose()
}

/// Claims a webhook whose next delivery is due; its row, with the delivery
/// in progress if one is formed.
async fn claim_webhook(store: &SqlStore, node: &str, token: &str, now: i64, lease_ms: i64) -> R<Option<String>> {
    let lock = match store.backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    // Idle workers poll: ask with a read first, so that finding nothing
    // takes no write lock (SQLite has one writer, shared with every upsert).
    // Of the due webhooks, the least recently claimed goes first: round
    // robin, so no webhook's backlog or slow receiver starves the others.
    let due = sqlx::query(
        "SELECT 1 AS due FROM webhooks w WHERE w.lease_until < $1 AND w.next_at <= $1 \
         AND (w.delivery_id IS NOT NULL OR EXISTS (SELECT 1 FROM webhook_queue q WHERE q.webhook_id = w.id)) LIMIT 1",
    )
    .bind(now)
    .fetch_optional(&store.pool)
    .await?;
    if due.is_none() {
        return Ok(None);
    }
    let sql = format!(
        "UPDATE webhooks SET lease_owner = $1, lease_token = $2, lease_until = $3, claimed_at = $4 \
         WHERE id = (SELECT w.id FROM webhooks w WHERE w.lease_until < $4 AND w.next_at <= $4 \
             AND (w.delivery_id IS NOT NULL OR EXISTS (SELECT 1 FROM webhook_queue q WHERE q.webhook_id = w.id)) \
           ORDER BY w.claimed_at, w.next_at LIMIT 1 {lock}) \
         AND lease_until < $4 RETURNING id"
    );
    let row =
        sqlx::query(&sql).bind(node).bind(token).bind(now + lease_ms).bind(now).fetch_optional(&store.pool).await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}

/// Forms the webhook's next delivery from the head of its queue and fixes
/// it on its row; false when the queue is empty or the claim was lost.
async fn form_delivery(store: &SqlStore, id: &str, token: &str, batch: i64) -> R<bool> {
    let rows = sqlx::query(
        "SELECT e.id, e.app_id, e.type, e.data, e.created_at FROM webhook_queue q JOIN events e ON e.id = q.event_id \
         WHERE q.webhook_id = $1 ORDER BY q.event_id LIMIT $2",
    )
    .bind(id)
    .bind(batch.max(1))
    .fetch_all(&store.pool)
    .await?;
    let queue = rows.iter().map(event_from_row).collect::<R<Vec<_>>>()?;
    let events = next_delivery(&queue, usize::try_from(batch).unwrap_or(1));
    let (Some(first), Some(body)) = (events.first(), delivery_body(events)) else { return Ok(false) };
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let delivery_id = format!("msg_{}_{}", first.id, id.trim_start_matches("wh_"));
    let r = sqlx::query(
        "UPDATE webhooks SET delivery_id = $1, delivery_body = $2, delivery_events = $3, attempts = 0, \
         first_attempt_at = NULL WHERE id = $4 AND lease_token = $5 AND delivery_id IS NULL",
    )
    .bind(delivery_id)
    .bind(body)
    .bind(serde_json::to_string(&ids).map_err(corrupt)?)
    .bind(id)
    .bind(token)
    .execute(&store.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

async fn create_webhook(store: &SqlStore, new: &NewWebhook) -> R<WebhookRow> {
    sqlx::query(
        "INSERT INTO webhooks (id, app_id, url, events, description, secret, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new.id.as_str())
    .bind(new.app.0)
    .bind(new.url.as_str())
    .bind(types_column(&new.events))
    .bind(new.description.as_deref())
    .bind(new.secret.as_str())
    .bind(new.created_at)
    .execute(&store.pool)
    .await?;
    Ok(webhook(store, &new.id).await?.ok_or_else(|| corrupt("the webhook just created is gone"))?)
}

async fn webhooks(store: &SqlStore, app: AppId) -> R<Vec<WebhookRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.app_id = $1 ORDER BY w.created_at, w.id"
    ))
    .bind(app.0)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(webhook_from_row).collect::<R<Vec<_>>>()
}

async fn delete_webhook(store: &SqlStore, app: AppId, id: &str) -> R<bool> {
    let r = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND app_id = $2")
        .bind(id)
        .bind(app.0)
        .execute(&store.pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

async fn test_webhook(store: &SqlStore, app: AppId, id: &str, now: i64) -> R<Option<i64>> {
    let mut tx = store.write_tx().await?;
    // The event is written only if the app has the webhook (a write first:
    // SQLite takes its write lock at once).
    let data = crate::Event::WebhookTest(crate::event::WebhookTested {
        webhook_id: id.to_owned(),
        message: "a test event, sent by POST /v1/webhooks/{id}/test".to_owned(),
    })
    .data();
    let event = sqlx::query(
        "INSERT INTO events (app_id, type, data, created_at) SELECT $1, $2, $3, $4 \
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $5 AND app_id = $1) RETURNING id",
    )
    .bind(app.0)
    .bind(EventType::WebhookTest.as_str())
    .bind(data.to_string())
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(event) = event else { return Ok(None) };
    let event: i64 = event.try_get("id")?;
    sqlx::query("INSERT INTO webhook_queue (webhook_id, event_id) VALUES ($1, $2)")
        .bind(id)
        .bind(event)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(event))
}

async fn claim_delivery(
    store: &SqlStore,
    node: &str,
    token: &str,
    now: i64,
    lease_ms: i64,
    batch: i64,
) -> R<Option<WebhookDelivery>> {
    let Some(id) = claim_webhook(store, node, token, now, lease_ms).await? else { return Ok(None) };
    let row = sqlx::query("SELECT delivery_id FROM webhooks WHERE id = $1 AND lease_token = $2")
        .bind(id.as_str())
        .bind(token)
        .fetch_optional(&store.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let formed: Option<String> = row.try_get("delivery_id")?;
    if formed.is_none() && !form_delivery(store, &id, token, batch).await? {
        // Nothing queued after all (a delete raced the claim): let go.
        sqlx::query("UPDATE webhooks SET lease_until = 0 WHERE id = $1 AND lease_token = $2")
            .bind(id.as_str())
            .bind(token)
            .execute(&store.pool)
            .await?;
        return Ok(None);
    }
    let row = sqlx::query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = $1 AND w.lease_token = $2"))
        .bind(id.as_str())
        .bind(token)
        .fetch_optional(&store.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(WebhookDelivery {
        webhook: webhook_from_row(&row)?,
        id: row.try_get::<Option<String>, _>("delivery_id")?.unwrap_or_default(),
        body: row.try_get::<Option<String>, _>("delivery_body")?.unwrap_or_default(),
        attempts: row.try_get("attempts")?,
        first_attempt_at: row.try_get("first_attempt_at")?,
        token: token.to_owned(),
    }))
}

async fn finish_delivery(store: &SqlStore, webhook: &str, token: &str, result: &DeliveryResult, now: i64) -> R<bool> {
    let mut tx = store.write_tx().await?;
    // A write first, so that SQLite takes its write lock at once (a read
    // first would have to upgrade, which can fail under another writer),
    // and the claim's token is checked with it.
    let row = sqlx::query(
        "UPDATE webhooks SET lease_until = lease_until WHERE id = $1 AND lease_token = $2 RETURNING delivery_events",
    )
    .bind(webhook)
    .bind(token)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let events: Option<String> = row.try_get("delivery_events")?;
    let events: Vec<i64> = serde_json::from_str(events.as_deref().unwrap_or("[]")).map_err(corrupt)?;
    let (sql, error) = match result {
        DeliveryResult::Delivered => (
            "UPDATE webhooks SET delivery_id = NULL, delivery_body = NULL, delivery_events = NULL, attempts = 0, \
             first_attempt_at = NULL, next_at = 0, failing_since = NULL, last_error = $4, lease_until = 0 \
             WHERE id = $1 AND lease_token = $2 AND $3 = $3",
            None,
        ),
        DeliveryResult::Retry { error, .. } => (
            "UPDATE webhooks SET attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, $5), \
             next_at = $3, last_error = $4, lease_until = 0 WHERE id = $1 AND lease_token = $2",
            Some(error.as_str()),
        ),
        DeliveryResult::GaveUp { error } => (
            "UPDATE webhooks SET delivery_id = NULL, delivery_body = NULL, delivery_events = NULL, attempts = 0, \
             first_attempt_at = NULL, next_at = 0, failing_since = COALESCE(failing_since, $5), last_error = $4, \
             lease_until = 0 WHERE id = $1 AND lease_token = $2 AND $3 = $3",
            Some(error.as_str()),
        ),
    };
    let next_at = match result {
        DeliveryResult::Retry { next_at, .. } => *next_at,
        _ => 0,
    };
    let mut q = sqlx::query(sql).bind(webhook).bind(token).bind(next_at).bind(error);
    if !matches!(result, DeliveryResult::Delivered) {
        q = q.bind(now);
    }
    q.execute(&mut *tx).await?;
    if !matches!(result, DeliveryResult::Retry { .. }) {
        for id in events {
            sqlx::query("DELETE FROM webhook_queue WHERE webhook_id = $1 AND event_id = $2")
                .bind(webhook)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

async fn events_after(store: &SqlStore, app: AppId, after_id: i64, until: i64, limit: i64) -> R<Vec<StoredEvent>> {
    let rows = sqlx::query(
        "SELECT id, app_id, type, data, created_at FROM events \
         WHERE app_id = $1 AND id > $2 AND created_at <= $3 AND type <> 'webhook.test' ORDER BY id LIMIT $4",
    )
    .bind(app.0)
    .bind(after_id)
    .bind(until)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(event_from_row).collect::<R<Vec<_>>>()
}

async fn last_event_id(store: &SqlStore, app: AppId) -> R<i64> {
    let row = sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) AS id FROM events WHERE app_id = $1")
        .bind(app.0)
        .fetch_one(&store.pool)
        .await?;
    Ok(row.try_get("id")?)
}

async fn purge_events(store: &SqlStore, before: i64) -> R<u64> {
    let r = sqlx::query("DELETE FROM events WHERE created_at < $1").bind(before).execute(&store.pool).await?;
    Ok(r.rows_affected())
}

async fn webhook_totals(store: &SqlStore) -> R<(i64, i64)> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM webhooks WHERE failing_since IS NOT NULL) AS failing, \
         (SELECT COUNT(*) FROM webhook_queue) AS waiting",
    )
    .fetch_one(&store.pool)
    .await?;
    Ok((row.try_get("failing")?, row.try_get("waiting")?))
}

#[async_trait]
impl Outbox for SqlStore {
    async fn create_webhook(&self, new: &NewWebhook) -> Result<WebhookRow> {
        self.bounded(create_webhook(self, new)).await
    }

    async fn webhooks(&self, app: AppId) -> Result<Vec<WebhookRow>> {
        self.bounded(webhooks(self, app)).await
    }

    async fn delete_webhook(&self, app: AppId, id: &str) -> Result<bool> {
        self.bounded(delete_webhook(self, app, id)).await
    }

    async fn test_webhook(&self, app: AppId, id: &str, now: i64) -> Result<Option<i64>> {
        self.bounded(test_webhook(self, app, id, now)).await
    }

    async fn claim_delivery(
        &self,
        node: &str,
        token: &str,
        now: i64,
        lease_ms: i64,
        batch: i64,
    ) -> Result<Option<WebhookDelivery>> {
        self.bounded(claim_delivery(self, node, token, now, lease_ms, batch)).await
    }

    async fn finish_delivery(&self, webhook: &str, token: &str, result: &DeliveryResult, now: i64) -> Result<bool> {
        self.bounded(finish_delivery(self, webhook, token, result, now)).await
    }

    async fn events_after(&self, app: AppId, after_id: i64, until: i64, limit: i64) -> Result<Vec<StoredEvent>> {
        self.bounded(events_after(self, app, after_id, until, limit)).await
    }

    async fn last_event_id(&self, app: AppId) -> Result<i64> {
        self.bounded(last_event_id(self, app)).await
    }

    async fn purge_events(&self, before: i64) -> Result<u64> {
        self.bounded(purge_events(self, before)).await
    }

    async fn webhook_totals(&self) -> Result<(i64, i64)> {
        self.bounded(webhook_totals(self)).await
    }
}
