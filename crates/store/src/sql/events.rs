//! Writing events into the outbox, inside the transaction of what caused
//! them (the database queues each for the webhooks of its app that want
//! its type).

use sqlx::{Any, Transaction};

use super::placeholders;
use super::R;
use crate::NewEvent;

/// Rows per statement (four parameters a row).
const CHUNK: usize = 500;

/// Writes `events` in `tx`; the database queues each for the webhooks that
/// want it (the trigger `events_queue`, migration 0011), in the same
/// transaction. One statement per 500 events.
pub(crate) async fn emit(tx: &mut Transaction<'_, Any>, events: &[NewEvent], now: i64) -> R<()> {
    for chunk in events.chunks(CHUNK) {
        let values: Vec<String> = (0..chunk.len()).map(|r| format!("({})", placeholders(4 * r + 1, 4))).collect();
        let sql = format!("INSERT INTO events (app_id, type, data, created_at) VALUES {}", values.join(", "));
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q.bind(e.app.0).bind(e.kind.as_str()).bind(e.data.to_string()).bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
