//! Turning rows back into values: the column lists each query selects, and
//! the functions that read them (a row that cannot be read is
//! [`StoreError::Corrupt`]).

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use tocsin_protocol::subscription::{KeysJson, SubscriptionJson};
use tocsin_protocol::Subscription;

use super::R;
use crate::{
    AppId, Counts, Message, MessageFormat, MessageState, NewMessage, StoreError, StoredSubscription, VapidKeyRow,
};

/// A query of the `Any` driver.
pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

pub(crate) const SUB_COLUMNS: &str = "s.id, s.endpoint, s.p256dh, s.auth, s.expiration_time, s.user_id, s.topics, \
     s.vapid_key_id, s.created_at, s.updated_at, s.app_id, s.tags, s.language, s.time_zone, s.last_seen_at, s.send_history";
/// [`SUB_COLUMNS`] for a `RETURNING` clause, which takes no table alias.
pub(crate) const SUB_RETURNING: &str = "id, endpoint, p256dh, auth, expiration_time, user_id, topics, vapid_key_id, \
     created_at, updated_at, app_id, tags, language, time_zone, last_seen_at, send_history";
pub(crate) const MSG_COLUMNS: &str =
    "id, payload, format, apple_payload, target, ttl, urgency, topic, send_at, state, created_at, updated_at, cursor, cursor_end, \
     targeted, delivered, failed, gone, expired, pending_retry, shown, clicked, app_id, idempotency_key, personal, \
     rules, held, capped";

/// A page of subscriptions as one row holding a JSON array, on SQLite.
///
/// sqlx's SQLite driver runs each connection on a thread of its own and
/// hands every result row over a channel, waking the reading task once per
/// row. A broadcast reads every subscription, so that was a thread switch
/// or two per delivery (about 0.8 per delivery measured, 5–8 % of the
/// CPU of a broadcast); one row per page makes it two per page.
pub(crate) const PAGE_SQLITE: &str = "json_group_array(json_array(id, endpoint, p256dh, auth, expiration_time, \
     user_id, topics, vapid_key_id, created_at, updated_at, app_id, tags, language, time_zone, last_seen_at, \
     send_history))";

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
        row.try_get("tags")?,
        row.try_get("language")?,
        row.try_get("time_zone")?,
        row.try_get("last_seen_at")?,
        row.try_get("send_history")?,
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
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
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
            tags,
            language,
            time_zone,
            last_seen_at,
            send_history,
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
            tags: tocsin_audience::Tags::from_stored(tags.as_deref()).map_err(corrupt)?,
            language,
            time_zone,
            vapid_key_id,
            app_id: AppId(app_id),
            created_at,
            updated_at,
            last_seen_at,
            send_history,
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
        personal: row.try_get::<i64, _>("personal")? != 0,
        target: serde_json::from_str(&target).map_err(corrupt)?,
        ttl: u32::try_from(row.try_get::<i64, _>("ttl")?).map_err(corrupt)?,
        urgency: row.try_get("urgency")?,
        topic: row.try_get("topic")?,
        send_at: row.try_get("send_at")?,
        idempotency_key: scoped.map(|k| k.strip_prefix(&prefix).map(str::to_owned).unwrap_or(k)),
        rules: {
            let rules: Option<String> = row.try_get("rules")?;
            crate::MessageRules::from_stored(rules.as_deref()).map_err(corrupt)?
        },
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
            held: row.try_get("held")?,
            capped: row.try_get("capped")?,
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
