//! Turning rows back into values, and the SQL shared by several queries:
//! column lists and the `FROM … WHERE` of a [`Target`].

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use tocsin_protocol::subscription::{KeysJson, SubscriptionJson};
use tocsin_protocol::Subscription;

use super::R;
use crate::{
    AppId, Counts, Message, MessageFormat, MessageState, NewMessage, StoreError, StoredSubscription, Target,
    VapidKeyRow, DAY_MS,
};

/// A query of the `Any` driver.
pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

pub(crate) const SUB_COLUMNS: &str =
    "s.id, s.endpoint, s.p256dh, s.auth, s.expiration_time, s.user_id, s.topics, s.vapid_key_id, s.created_at, s.updated_at, s.app_id";
/// [`SUB_COLUMNS`] for a `RETURNING` clause, which takes no table alias.
pub(crate) const SUB_RETURNING: &str =
    "id, endpoint, p256dh, auth, expiration_time, user_id, topics, vapid_key_id, created_at, updated_at, app_id";
pub(crate) const MSG_COLUMNS: &str =
    "id, payload, format, apple_payload, target, ttl, urgency, topic, send_at, state, created_at, updated_at, cursor, cursor_end, \
     targeted, delivered, failed, gone, expired, pending_retry, shown, clicked, app_id, idempotency_key";

/// A page of subscriptions as one row holding a JSON array, on SQLite.
///
/// sqlx's SQLite driver runs each connection on a thread of its own and
/// hands every result row over a channel, waking the reading task once per
/// row. A broadcast reads every subscription, so that was a thread switch
/// or two per delivery (about 0.8 per delivery measured, 5–8 % of the
/// CPU of a broadcast); one row per page makes it two per page.
pub(crate) const PAGE_SQLITE: &str = "json_group_array(json_array(id, endpoint, p256dh, auth, expiration_time, \
     user_id, topics, vapid_key_id, created_at, updated_at, app_id))";

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn sub_from_row(row: &AnyRow) -> R<StoredSubscription> {
    SubRow(
        row.try_get("id")?,
        row.try_get("endpoint")?,
        row.try_get("p256dh")?,
        row.try_get("auth")?,
        row.try_get("expiration_time")?,
        row.try_get("user_id")?,
        row.try_get("topics")?,
        row.try_get("vapid_key_id")?,
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
        row.try_get("app_id")?,
    )
    .into_stored()
}

/// A subscription row's [`SUB_COLUMNS`], in order: read from a row, or
/// from one element of a page aggregated as JSON ([`PAGE_SQLITE`]).
#[derive(serde::Deserialize)]
pub(crate) struct SubRow(
    pub(crate) i64,
    String,
    String,
    String,
    Option<i64>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    i64,
);

impl SubRow {
    pub(crate) fn into_stored(self) -> R<StoredSubscription> {
        let SubRow(
            id,
            endpoint,
            p256dh,
            auth,
            expiration_time,
            user_id,
            topics,
            vapid_key_id,
            created_at,
            updated_at,
            app_id,
        ) = self;
        let raw = SubscriptionJson {
            endpoint: Some(endpoint),
            expiration_time: expiration_time.map(Into::into),
            keys: Some(KeysJson { p256dh: Some(p256dh), auth: Some(auth) }),
        };
        Ok(StoredSubscription {
            id,
            subscription: Subscription::try_from(raw).map_err(corrupt)?,
            user_id,
            topics: serde_json::from_str(&topics).map_err(corrupt)?,
            vapid_key_id,
            app_id: AppId(app_id),
            created_at,
            updated_at,
        })
    }
}

pub(crate) fn msg_from_row(row: &AnyRow) -> R<Message> {
    let target: String = row.try_get("target")?;
    let app = AppId(row.try_get("app_id")?);
    // Stored with its app's id in front (`messages::scoped_key`).
    let scoped: Option<String> = row.try_get("idempotency_key")?;
    let prefix = format!("{}:", app.0);
    let accepted = NewMessage {
        id: row.try_get("id")?,
        app,
        payload: row.try_get("payload")?,
        format: {
            let f: String = row.try_get("format")?;
            MessageFormat::parse(&f).ok_or_else(|| corrupt(format!("message format {f:?}")))?
        },
        apple_payload: row.try_get("apple_payload")?,
        target: serde_json::from_str(&target).map_err(corrupt)?,
        ttl: u32::try_from(row.try_get::<i64, _>("ttl")?).map_err(corrupt)?,
        urgency: row.try_get("urgency")?,
        topic: row.try_get("topic")?,
        send_at: row.try_get("send_at")?,
        idempotency_key: scoped.map(|k| k.strip_prefix(&prefix).map(str::to_owned).unwrap_or(k)),
        created_at: row.try_get("created_at")?,
    };
    Ok(Message {
        accepted,
        state: message_state(row)?,
        updated_at: row.try_get("updated_at")?,
        cursor: row.try_get("cursor")?,
        cursor_end: row.try_get("cursor_end")?,
        counts: Counts {
            targeted: row.try_get("targeted")?,
            delivered: row.try_get("delivered")?,
            failed: row.try_get("failed")?,
            gone: row.try_get("gone")?,
            expired: row.try_get("expired")?,
            pending_retry: row.try_get("pending_retry")?,
            shown: row.try_get("shown")?,
            clicked: row.try_get("clicked")?,
        },
    })
}

/// The `state` column of a row.
pub(crate) fn message_state(row: &AnyRow) -> R<MessageState> {
    let state: String = row.try_get("state")?;
    Ok(MessageState::parse(&state).ok_or_else(|| corrupt(format!("message state {state:?}")))?)
}

/// The columns [`key_from_row`] reads, from `vapid_keys k JOIN apps a`.
pub(crate) const KEY_COLUMNS: &str = "k.id, k.app_id, k.public_key, k.private_key, a.vapid_subject";

pub(crate) fn key_from_row(row: &AnyRow) -> R<VapidKeyRow> {
    Ok(VapidKeyRow {
        id: row.try_get("id")?,
        app_id: AppId(row.try_get("app_id")?),
        public_key: row.try_get("public_key")?,
        private_key: row.try_get("private_key")?,
        subject: row.try_get("vapid_subject")?,
    })
}

/// The `FROM … WHERE` of a target within an app, with its parameters
/// starting at `$1` (the app's id) and how many there are.
pub(crate) fn target_sql(target: &Target) -> (String, usize) {
    match target {
        Target::All(_) => ("FROM subscriptions s WHERE s.app_id = $1".into(), 1),
        Target::Topic(_) => (
            "FROM subscriptions s JOIN subscription_topics t ON t.subscription_id = s.id \
             WHERE s.app_id = $1 AND t.topic = $2"
                .into(),
            2,
        ),
        Target::UserIds(ids) => (
            format!(
                "FROM subscriptions s WHERE s.app_id = $1 AND s.user_id IN ({})",
                super::placeholders(2, ids.len().max(1))
            ),
            1 + ids.len().max(1),
        ),
        Target::SubscriptionIds(ids) => (
            format!(
                "FROM subscriptions s WHERE s.app_id = $1 AND s.id IN ({})",
                super::placeholders(2, ids.len().max(1))
            ),
            1 + ids.len().max(1),
        ),
    }
}

/// Binds the parameters of [`target_sql`].
pub(crate) fn bind_target<'q>(mut q: AnyQuery<'q>, app: AppId, target: &'q Target) -> AnyQuery<'q> {
    q = q.bind(app.0);
    match target {
        Target::All(_) => {}
        Target::Topic(t) => q = q.bind(t.as_str()),
        Target::UserIds(ids) if ids.is_empty() => q = q.bind(""),
        Target::UserIds(ids) => {
            for id in ids {
                q = q.bind(id.as_str());
            }
        }
        Target::SubscriptionIds(ids) if ids.is_empty() => q = q.bind(-1i64),
        Target::SubscriptionIds(ids) => {
            for id in ids {
                q = q.bind(*id);
            }
        }
    }
    q
}

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
