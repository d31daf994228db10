//! Subscriptions removed, whatever removed them (gone at the push service,
//! expired, unsubscribed, deleted, their key retired): counted per day and
//! told as `subscription.removed` events, in the transaction that removed
//! them.

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::R;
use crate::{AppId, DAY_MS};

/// Counts removed subscriptions in `daily_counts`, inside the transaction
/// that removed them: `removed` holds each one's `(app_id, created_at)`
/// (from `DELETE … RETURNING id, endpoint, app_id, created_at`), `now` is when,
/// and writes their `subscription.removed` events, each with `reason`.
pub(crate) async fn count_removed(
    tx: &mut sqlx::Transaction<'_, Any>,
    removed: &[AnyRow],
    reason: &str,
    now: i64,
) -> R<()> {
    let mut events = Vec::with_capacity(removed.len());
    for row in removed {
        events.push(crate::NewEvent::new(
            AppId(row.try_get("app_id")?),
            crate::Event::SubscriptionRemoved(crate::event::SubscriptionRemoved {
                subscription_id: row.try_get("id")?,
                endpoint: row.try_get("endpoint")?,
                reason: reason.to_owned(),
            }),
        ));
    }
    super::events::emit(tx, &events, now).await?;
    // (app, day) → (unsubscribed, removed_created)
    let mut per_day: std::collections::BTreeMap<(i64, i64), (i64, i64)> = std::collections::BTreeMap::new();
    for row in removed {
        let (app, created): (i64, i64) = (row.try_get("app_id")?, row.try_get("created_at")?);
        per_day.entry((app, now.div_euclid(DAY_MS))).or_default().0 += 1;
        per_day.entry((app, created.div_euclid(DAY_MS))).or_default().1 += 1;
    }
    for ((app, day), (unsubscribed, removed_created)) in per_day {
        sqlx::query(
            "INSERT INTO daily_counts (app_id, day, unsubscribed, removed_created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, day) DO UPDATE SET unsubscribed = daily_counts.unsubscribed + excluded.unsubscribed, \
             removed_created = daily_counts.removed_created + excluded.removed_created",
        )
        .bind(app)
        .bind(day)
        .bind(unsubscribed)
        .bind(removed_created)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
