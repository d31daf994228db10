//! Writing events into the outbox, inside the transaction of what caused
//! them, and queueing each for the webhooks of its app that want its type.

use sqlx::{Any, Row, Transaction};

use super::R;
use crate::NewEvent;

/// Rows per statement (four parameters a row).
const CHUNK: usize = 500;

/// Numbered placeholders `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Writes `events` and queues each for the webhooks that want it, in `tx`.
pub(crate) async fn emit(tx: &mut Transaction<'_, Any>, events: &[NewEvent], now: i64) -> R<()> {
    for chunk in events.chunks(CHUNK) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(4 * r + 1, 4))).collect();
        let sql =
            format!("INSERT INTO events (app_id, type, data, created_at) VALUES {} RETURNING id", values.join(", "));
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q.bind(e.app.0).bind(e.kind.as_str()).bind(e.data.to_string()).bind(now);
        }
        let ids: Vec<i64> = q.fetch_all(&mut **tx).await?.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
        // Exactly these ids: a range could take in another transaction's
        // events, already delivered and dequeued.
        let sql = format!(
            "INSERT INTO webhook_queue (webhook_id, event_id) \
             SELECT w.id, e.id FROM events e JOIN webhooks w ON w.app_id = e.app_id \
               AND w.events LIKE '%,' || e.type || ',%' \
             WHERE e.id IN ({}) ON CONFLICT DO NOTHING",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
