//! The outbox: what happened (a message created, done or cancelled; a
//! subscription stored, replaced or removed; a delivery failed for good; a
//! notification shown or clicked), written in the same transaction as what
//! caused it, and the webhooks that are told about it.
//!
//! Each event is also queued, in that transaction, for every webhook of its
//! app that wants its type. A webhook's queue is sent in order, one
//! delivery at a time: the delivery (its id, its body, the events in it) is
//! fixed when it is first claimed, so that every retry carries the same
//! `webhook-id` and the same body. Claims of a webhook's queue are leases
//! with tokens, like a broadcast's shards: several nodes share the work and
//! each delivery is sent by one of them (again only after a node dies
//! holding it).

use crate::{AppId, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A message was created.
    #[serde(rename = "message.created")]
    MessageCreated,
    /// A message is done, with its final counts.
    #[serde(rename = "message.done")]
    MessageDone,
    /// A message was cancelled.
    #[serde(rename = "message.cancelled")]
    MessageCancelled,
    /// A subscription was stored (new).
    #[serde(rename = "subscription.created")]
    SubscriptionCreated,
    /// A subscription was replaced by its browser's new one (`oldEndpoint`).
    #[serde(rename = "subscription.updated")]
    SubscriptionUpdated,
    /// Subscriptions were removed, each with its reason.
    #[serde(rename = "subscription.removed")]
    SubscriptionRemoved,
    /// Deliveries failed for good, each with its reason and status.
    #[serde(rename = "delivery.failed")]
    DeliveryFailed,
    /// Notifications were shown.
    #[serde(rename = "notification.shown")]
    NotificationShown,
    /// Notifications were clicked, each with its action.
    #[serde(rename = "notification.clicked")]
    NotificationClicked,
    /// Sent by `POST /v1/webhooks/{id}/test` to that webhook only.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    /// Every type a webhook may ask for.
    pub const ALL: [EventType; 9] = [
        Self::MessageCreated,
        Self::MessageDone,
        Self::MessageCancelled,
        Self::SubscriptionCreated,
        Self::SubscriptionUpdated,
        Self::SubscriptionRemoved,
        Self::DeliveryFailed,
        Self::NotificationShown,
        Self::NotificationClicked,
    ];

    /// The name in the API and in deliveries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreated => "message.created",
            Self::MessageDone => "message.done",
            Self::MessageCancelled => "message.cancelled",
            Self::SubscriptionCreated => "subscription.created",
            Self::SubscriptionUpdated => "subscription.updated",
            Self::SubscriptionRemoved => "subscription.removed",
            Self::DeliveryFailed => "delivery.failed",
            Self::NotificationShown => "notification.shown",
            Self::NotificationClicked => "notification.clicked",
            Self::WebhookTest => "webhook.test",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().chain([Self::WebhookTest]).find(|t| t.as_str() == s)
    }

    /// Whether events of this type come in bulk (a broadcast's pages) and
    /// so go to webhooks several to a delivery, as `data.items`.
    pub fn batched(self) -> bool {
        matches!(
            self,
            Self::SubscriptionRemoved | Self::DeliveryFailed | Self::NotificationShown | Self::NotificationClicked
        )
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its id: increasing, the SSE stream's `id:`.
    pub id: i64,
    /// The app it belongs to (only that app's webhooks and streams see it).
    pub app: AppId,
    /// What happened.
    pub kind: EventType,
    /// About what.
    pub data: Value,
    /// When, ms since the epoch.
    pub created_at: i64,
}

/// A webhook to register.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Its id (`wh_…`).
    pub id: String,
    /// Whose events it gets.
    pub app: AppId,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The types it gets.
    pub events: Vec<EventType>,
    /// The operator's note.
    pub description: Option<String>,
    /// The Standard Webhooks signing secret (`whsec_` and base64).
    pub secret: String,
    /// When it was registered, ms since the epoch.
    pub created_at: i64,
}

/// A registered webhook, with the state of its deliveries.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    /// What was registered: id, app, URL, event types, note, secret.
    pub registered: NewWebhook,
    /// Since when its deliveries have been failing for good (retried for
    /// about a day without success); `None` while healthy.
    pub failing_since: Option<i64>,
    /// What the last failed attempt got.
    pub last_error: Option<String>,
    /// Events waiting to be delivered to it.
    pub pending: i64,
}

/// A delivery claimed for sending: fixed once, the same on every retry.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// The webhook it is for, with its URL and secret.
    pub webhook: WebhookRow,
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    /// The JSON body: `{"type","timestamp","data"}`.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the first attempt was made (ms), for giving up after a day.
    pub first_attempt_at: Option<i64>,
    /// The claim's token: what it records must name it.
    pub token: String,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryResult {
    /// 2xx: the delivery and its events leave the queue.
    Delivered,
    /// Try again at `next_at` (ms).
    Retry {
        /// When to try it again, ms since the epoch.
        next_at: i64,
        /// What went wrong.
        error: String,
    },
    /// Retried for long enough: the delivery is dropped and the webhook
    /// marked failing.
    GaveUp {
        /// What went wrong last.
        error: String,
    },
}

/// The body of a delivery of `events` (all of one type; several only for
/// a batched type): `{"type","timestamp","data"}` as Standard Webhooks
/// has it, with `data.items` for a batched type.
pub fn delivery_body(events: &[StoredEvent]) -> Option<String> {
    let first = events.first()?;
    let data = if first.kind.batched() {
        serde_json::json!({ "items": events.iter().map(|e| e.data.clone()).collect::<Vec<_>>() })
    } else {
        first.data.clone()
    };
    let body = serde_json::json!({
        "type": first.kind.as_str(),
        "timestamp": crate::rfc3339_ms(first.created_at),
        "data": data,
    });
    Some(body.to_string())
}

/// The head of a webhook's queue that goes in one delivery: the first
/// event alone, or for a batched type the events of that type that follow
/// it, up to `batch`.
pub fn next_delivery(queue: &[StoredEvent], batch: usize) -> &[StoredEvent] {
    let Some(first) = queue.first() else { return queue };
    if !first.kind.batched() {
        return &queue[..1];
    }
    let n = queue.iter().take(batch.max(1)).take_while(|e| e.kind == first.kind).count();
    &queue[..n]
}

/// The outbox and the webhooks (SQL stores implement it).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Registers a webhook; it gets the events from now on.
    async fn create_webhook(&self, new: &NewWebhook) -> Result<WebhookRow>;

    /// The app's webhooks, oldest first.
    async fn webhooks(&self, app: AppId) -> Result<Vec<WebhookRow>>;

    /// Removes one, with its queue; false if the app has no such webhook.
    async fn delete_webhook(&self, app: AppId, id: &str) -> Result<bool>;

    /// Queues a `webhook.test` event for one webhook only; its event id, or
    /// `None` if the app has no such webhook.
    async fn test_webhook(&self, app: AppId, id: &str, now: i64) -> Result<Option<i64>>;

    /// Claims the next delivery of a webhook that has one due (its lease
    /// free or run out): the one already formed and waiting for a retry, or
    /// a new one formed from the head of the queue (one event, or up to
    /// `batch` events of one batched type).
    async fn claim_delivery(
        &self,
        node: &str,
        token: &str,
        now: i64,
        lease_ms: i64,
        batch: i64,
    ) -> Result<Option<WebhookDelivery>>;

    /// Records an attempt's result, if the claim (`token`) still holds.
    async fn finish_delivery(&self, webhook: &str, token: &str, result: &DeliveryResult, now: i64) -> Result<bool>;

    /// The app's events after `after_id`, oldest first, at most `limit`,
    /// created at or before `until` (ms).
    async fn events_after(&self, app: AppId, after_id: i64, until: i64, limit: i64) -> Result<Vec<StoredEvent>>;

    /// The newest event id of the app (0 without any).
    async fn last_event_id(&self, app: AppId) -> Result<i64>;

    /// Deletes events older than `before` (ms), and what is queued of them.
    async fn purge_events(&self, before: i64) -> Result<u64>;

    /// How many webhooks are failing, and how many events wait, server-wide.
    async fn webhook_totals(&self) -> Result<(i64, i64)>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: i64, kind: EventType) -> StoredEvent {
        StoredEvent { id, app: AppId::DEFAULT, kind, data: json!({"n": id}), created_at: 0 }
    }

    #[test]
    fn batched_types_go_several_to_a_delivery_others_alone() {
        use EventType::*;
        let q = [event(1, DeliveryFailed), event(2, DeliveryFailed), event(3, DeliveryFailed), event(4, MessageDone)];
        assert_eq!(next_delivery(&q, 2).len(), 2);
        assert_eq!(next_delivery(&q, 100).len(), 3, "up to another type");
        assert_eq!(next_delivery(&q[3..], 100).len(), 1);
        let done = [event(4, MessageDone), event(5, MessageDone)];
        assert_eq!(next_delivery(&done, 100).len(), 1, "not batched");
        let body: Value = serde_json::from_str(&delivery_body(&q[..2]).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"type": "delivery.failed", "timestamp": "1970-01-01T00:00:00.000Z",
            "data": {"items": [{"n": 1}, {"n": 2}]}})
        );
        let body: Value = serde_json::from_str(&delivery_body(&done[..1]).unwrap()).unwrap();
        assert_eq!(body["data"], json!({"n": 4}));
        assert!(delivery_body(&[]).is_none());
    }

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL.into_iter().chain([EventType::WebhookTest]) {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(EventType::parse("message.sent"), None);
    }
}
